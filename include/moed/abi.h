/* SPDX-License-Identifier: MIT */
/*
 * moed shared-memory ABI.
 *
 * This header is the contract between the moed daemon and its clients: the layout of
 * the per-client shared region, the two rings inside it and the fixed-size entries that
 * travel through them. Nothing here is a function; the ring protocol that uses these
 * structs is specified at the top of common/ring.h.
 *
 * Every struct has a fixed size and fixed offsets, pinned by _Static_assert below and
 * printed by tests/test_abi. All integers are little-endian host order (client and
 * daemon share one host). Fields named reserved* must be written as zero and are
 * rejected when not zero, so that later versions can give them a meaning.
 *
 * Region layout (offsets are from the start of the region, each 64-byte aligned;
 * the daemon chooses them and writes them into the header, the client only reads):
 *
 *     +----------------------------+  0
 *     | struct moed_region_header  |
 *     +----------------------------+  sq.ctl_offset
 *     | struct moed_ring_ctl (SQ)  |
 *     +----------------------------+  sq.slots_offset
 *     | struct moed_sqe [sq.entries]
 *     +----------------------------+  cq.ctl_offset
 *     | struct moed_ring_ctl (CQ)  |
 *     +----------------------------+  cq.slots_offset
 *     | struct moed_cqe [cq.entries]
 *     +----------------------------+  msgs_offset
 *     | struct moed_msg [cq.entries]   error text for the CQE in the same slot index
 *     +----------------------------+  arena_offset
 *     | data arena [arena_size]    |  tensors: inputs written by the client,
 *     +----------------------------+  outputs written by the daemon
 *
 * Buffers are named by (arena, offset, length). Arena 0 is the host arena above; other
 * arena ids are reserved for device-resident arenas and rejected today.
 */
#ifndef MOED_ABI_H
#define MOED_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOED_REGION_MAGIC 0x44454f4du /* "MOED" read as little-endian bytes */
#define MOED_ABI_VERSION 1u

#define MOED_CACHELINE 64u

/* Sizes the daemon may choose; the client accepts any power of two in range. */
#define MOED_RING_MIN_ENTRIES 2u
#define MOED_RING_MAX_ENTRIES 65536u

/* ---------------------------------------------------------------------------------- */
/* Region header                                                                        */
/* ---------------------------------------------------------------------------------- */

/* Where one ring lives inside the region. */
struct moed_ring_layout {
	uint64_t ctl_offset;   /* struct moed_ring_ctl */
	uint64_t slots_offset; /* entries * slot_size bytes */
	uint32_t entries;      /* power of two */
	uint32_t slot_size;    /* sizeof(struct moed_sqe) or sizeof(struct moed_cqe) */
};

/* Written once by the daemon before the region's fd is passed; read-only thereafter. */
struct moed_region_header {
	uint32_t magic;       /* MOED_REGION_MAGIC */
	uint32_t abi_version; /* MOED_ABI_VERSION */
	uint32_t header_size; /* sizeof(struct moed_region_header) */
	uint32_t reserved0;
	uint64_t region_size; /* bytes, the whole mapping */
	struct moed_ring_layout sq;
	struct moed_ring_layout cq;
	uint64_t msgs_offset; /* struct moed_msg [cq.entries] */
	uint32_t msg_size;    /* sizeof(struct moed_msg) */
	uint32_t reserved1;
	uint64_t arena_offset;
	uint64_t arena_size;
	uint64_t reserved2[3];
};

/* ---------------------------------------------------------------------------------- */
/* Ring control block                                                                   */
/* ---------------------------------------------------------------------------------- */

/*
 * Consumer-owned words of a ring. Only the consumer writes them; the producer reads
 * them. The producer's own position is private (the consumer learns of new entries from
 * the sequence word inside each slot), so there is no producer-written word here.
 */
struct moed_ring_ctl {
	uint32_t head;  /* consumer position: entries before it are free for reuse */
	uint32_t flags; /* MOED_RING_F_* wake-up flags, consumer-set */
	uint32_t reserved[14];
};

/*
 * SQ: the daemon (consumer) is about to sleep on the doorbell eventfd; the client must
 * write the doorbell after publishing. CQ: the client (consumer) is about to block on
 * its completion eventfd; the daemon must signal it after publishing.
 */
#define MOED_RING_F_NEED_WAKEUP (1u << 0)
#define MOED_RING_F_WAITING MOED_RING_F_NEED_WAKEUP /* the CQ's name for the same bit */

/* ---------------------------------------------------------------------------------- */
/* Submission queue entry                                                               */
/* ---------------------------------------------------------------------------------- */

/* A span of an arena. length 0 means "absent" where a buffer is optional. */
struct moed_buf {
	uint64_t offset;
	uint64_t length;
};

enum moed_opcode {
	MOED_OP_NOP = 0, /* completes at once with status 0; for latency measurement */
	MOED_OP_MOE = 1, /* fused MoE layer, see DESIGN.md */
	MOED_OP__COUNT
};

enum moed_dtype {
	MOED_DTYPE_F32 = 0,
	MOED_DTYPE_BF16 = 1,
	MOED_DTYPE_F16 = 2,
	MOED_DTYPE__COUNT
};

enum moed_activation {
	MOED_ACT_SILU = 0,
	MOED_ACT_GELU = 1,
	MOED_ACT__COUNT
};

enum moed_arena_id {
	MOED_ARENA_HOST = 0, /* the region's own data arena */
	MOED_ARENA__COUNT
};

/* moed_sqe.flags */
#define MOED_SQE_F_NO_COMBINE (1u << 0)          /* output [M, K, H], unweighted, unscaled */
#define MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT (1u << 1) /* top-k must be 1 */
#define MOED_SQE_F_NOT_GATED (1u << 2)            /* w13 is [E, I, H]: act(x @ w1^T) */
#define MOED_SQE_F__KNOWN                                                                 \
	(MOED_SQE_F_NO_COMBINE | MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT | MOED_SQE_F_NOT_GATED)

/*
 * One job. The producer fills every field except seq, then publishes the slot through
 * the ring protocol (which writes seq). The daemon copies the entry out of shared memory
 * once and validates only the copy.
 *
 * Shapes: M = num_tokens, K = topk, H = hidden_size. The weight set (E, I, gated or not,
 * weight dtype) is named by weights_id and must agree with H.
 *   hidden        [M, H]    dtype
 *   topk_ids      [M, K]    int32
 *   topk_weights  [M, K]    float32
 *   output        [M, H]    dtype, or [M, K, H] with MOED_SQE_F_NO_COMBINE
 *   kwargs        encoded blob (include/moed/kwargs_abi.h), length 0 = none
 * Every buffer's length must be exactly what its shape needs (kwargs: the blob's size).
 */
struct moed_sqe {
	uint32_t seq; /* ring sequence word; owned by the ring protocol */
	uint8_t opcode;     /* enum moed_opcode */
	uint8_t dtype;      /* enum moed_dtype: hidden and output */
	uint8_t activation; /* enum moed_activation */
	uint8_t arena;      /* enum moed_arena_id: where every buffer below lives */
	uint64_t user_data; /* returned unchanged in the completion */
	uint32_t flags;     /* MOED_SQE_F_* */
	uint32_t weights_id;
	uint32_t num_tokens;
	uint32_t topk;
	uint32_t hidden_size;
	float routed_scaling_factor; /* applied to the combined output; 1.0 for none */
	struct moed_buf hidden;
	struct moed_buf topk_ids;
	struct moed_buf topk_weights;
	struct moed_buf output;
	struct moed_buf kwargs;
	uint64_t reserved;
};

/* ---------------------------------------------------------------------------------- */
/* Completion queue entry and its message slot                                           */
/* ---------------------------------------------------------------------------------- */

/* moed_cqe.flags */
#define MOED_CQE_F_MESSAGE (1u << 0) /* text in the moed_msg with the same slot index */

struct moed_cqe {
	uint32_t seq;       /* ring sequence word; owned by the ring protocol */
	int32_t status;     /* 0, or a negative errno */
	uint64_t user_data; /* from the sqe */
	uint32_t flags;     /* MOED_CQE_F_* */
	uint32_t out_rank;  /* 2 ([M, H]) or 3 ([M, K, H]); 0 when status < 0 */
	uint32_t out_shape[3];
	uint32_t reserved0;
	uint64_t queue_ns; /* from the daemon reading the sqe to the job starting */
	uint64_t run_ns;   /* job execution */
	uint64_t reserved1;
};

#define MOED_MSG_SIZE 256u

/*
 * Message for the completion at ring position p, stored at index (p & mask) of the
 * message array: written before the CQE is published, valid until the client releases
 * that CQE. NUL-terminated UTF-8.
 */
struct moed_msg {
	char text[MOED_MSG_SIZE];
};

/* ---------------------------------------------------------------------------------- */
/* Layout pins                                                                          */
/* ---------------------------------------------------------------------------------- */

#ifdef __cplusplus
#define MOED__STATIC_ASSERT static_assert
#else
#define MOED__STATIC_ASSERT _Static_assert
#endif
#define MOED__PIN_SIZE(type, size) MOED__STATIC_ASSERT(sizeof(type) == (size), #type " size")
#define MOED__PIN_OFF(type, field, off)                                                 \
	MOED__STATIC_ASSERT(offsetof(type, field) == (off), #type "." #field " offset")

MOED__PIN_SIZE(struct moed_ring_layout, 24);
MOED__PIN_OFF(struct moed_ring_layout, ctl_offset, 0);
MOED__PIN_OFF(struct moed_ring_layout, slots_offset, 8);
MOED__PIN_OFF(struct moed_ring_layout, entries, 16);
MOED__PIN_OFF(struct moed_ring_layout, slot_size, 20);

MOED__PIN_SIZE(struct moed_region_header, 128);
MOED__PIN_OFF(struct moed_region_header, magic, 0);
MOED__PIN_OFF(struct moed_region_header, abi_version, 4);
MOED__PIN_OFF(struct moed_region_header, header_size, 8);
MOED__PIN_OFF(struct moed_region_header, reserved0, 12);
MOED__PIN_OFF(struct moed_region_header, region_size, 16);
MOED__PIN_OFF(struct moed_region_header, sq, 24);
MOED__PIN_OFF(struct moed_region_header, cq, 48);
MOED__PIN_OFF(struct moed_region_header, msgs_offset, 72);
MOED__PIN_OFF(struct moed_region_header, msg_size, 80);
MOED__PIN_OFF(struct moed_region_header, reserved1, 84);
MOED__PIN_OFF(struct moed_region_header, arena_offset, 88);
MOED__PIN_OFF(struct moed_region_header, arena_size, 96);
MOED__PIN_OFF(struct moed_region_header, reserved2, 104);

MOED__PIN_SIZE(struct moed_ring_ctl, MOED_CACHELINE);
MOED__PIN_OFF(struct moed_ring_ctl, head, 0);
MOED__PIN_OFF(struct moed_ring_ctl, flags, 4);

MOED__PIN_SIZE(struct moed_buf, 16);
MOED__PIN_OFF(struct moed_buf, offset, 0);
MOED__PIN_OFF(struct moed_buf, length, 8);

MOED__PIN_SIZE(struct moed_sqe, 128);
MOED__PIN_OFF(struct moed_sqe, seq, 0);
MOED__PIN_OFF(struct moed_sqe, opcode, 4);
MOED__PIN_OFF(struct moed_sqe, dtype, 5);
MOED__PIN_OFF(struct moed_sqe, activation, 6);
MOED__PIN_OFF(struct moed_sqe, arena, 7);
MOED__PIN_OFF(struct moed_sqe, user_data, 8);
MOED__PIN_OFF(struct moed_sqe, flags, 16);
MOED__PIN_OFF(struct moed_sqe, weights_id, 20);
MOED__PIN_OFF(struct moed_sqe, num_tokens, 24);
MOED__PIN_OFF(struct moed_sqe, topk, 28);
MOED__PIN_OFF(struct moed_sqe, hidden_size, 32);
MOED__PIN_OFF(struct moed_sqe, routed_scaling_factor, 36);
MOED__PIN_OFF(struct moed_sqe, hidden, 40);
MOED__PIN_OFF(struct moed_sqe, topk_ids, 56);
MOED__PIN_OFF(struct moed_sqe, topk_weights, 72);
MOED__PIN_OFF(struct moed_sqe, output, 88);
MOED__PIN_OFF(struct moed_sqe, kwargs, 104);
MOED__PIN_OFF(struct moed_sqe, reserved, 120);

MOED__PIN_SIZE(struct moed_cqe, MOED_CACHELINE);
MOED__PIN_OFF(struct moed_cqe, seq, 0);
MOED__PIN_OFF(struct moed_cqe, status, 4);
MOED__PIN_OFF(struct moed_cqe, user_data, 8);
MOED__PIN_OFF(struct moed_cqe, flags, 16);
MOED__PIN_OFF(struct moed_cqe, out_rank, 20);
MOED__PIN_OFF(struct moed_cqe, out_shape, 24);
MOED__PIN_OFF(struct moed_cqe, reserved0, 36);
MOED__PIN_OFF(struct moed_cqe, queue_ns, 40);
MOED__PIN_OFF(struct moed_cqe, run_ns, 48);
MOED__PIN_OFF(struct moed_cqe, reserved1, 56);

MOED__PIN_SIZE(struct moed_msg, MOED_MSG_SIZE);

/* The ring protocol requires the sequence word first in every slot. */
MOED__STATIC_ASSERT(offsetof(struct moed_sqe, seq) == 0, "sqe seq first");
MOED__STATIC_ASSERT(offsetof(struct moed_cqe, seq) == 0, "cqe seq first");

#ifdef __cplusplus
}
#endif

#endif /* MOED_ABI_H */
