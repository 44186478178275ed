/* SPDX-License-Identifier: MIT */
/*
 * moed control protocol: the messages on the client's Unix SOCK_SEQPACKET connection.
 *
 * Jobs travel through the shared rings (moed/abi.h); this socket carries everything
 * else: the handshake that hands the client its region and eventfds, the backend's
 * signature, and weight-set management. Each message is one packet: a struct
 * moed_msg_hdr and a body whose size `len` states. Every request gets exactly one
 * reply, in order, of type MOED_MSG_REPLY, whose body is a struct moed_reply and then
 * the request's reply body (if the status is 0). The connection's hang-up is how each
 * side learns that the other has gone.
 *
 * Handshake:
 *   client -> HELLO (struct moed_hello)
 *   daemon -> REPLY (struct moed_reply, struct moed_hello_reply) with three fds in
 *             SCM_RIGHTS, in this order: the region memfd (sealed against resizing),
 *             the doorbell eventfd (client writes it when the SQ says NEED_WAKEUP),
 *             the completion eventfd (daemon signals it when the CQ says WAITING;
 *             non-blocking: poll it before reading).
 *   A HELLO whose abi_version differs from the daemon's is refused with
 *   -EPROTONOSUPPORT and a message naming both versions.
 *
 * Weight sets: REGISTER creates a named set (the creator then UPLOADs both tensors
 * through its arena in chunks and COMMITs) or, if a committed set of that name and
 * shape exists, attaches to it. ATTACH attaches by name alone. Either gives the client
 * a handle (weights_id) that is valid only on this connection. RELEASE drops it; the
 * set is freed when its last holder releases it or disconnects.
 */
#ifndef MOED_PROTO_H
#define MOED_PROTO_H

#include <stdint.h>

#include "moed/abi.h"
#include "moed/kwargs_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MOED_MSG_MAX 16384u        /* largest packet either side sends */
#define MOED_NAME_MAX 64u          /* weight-set names, NUL-terminated within this */
#define MOED_BACKEND_NAME_MAX 32u

enum moed_msg_type {
	MOED_MSG_HELLO = 1,
	MOED_MSG_SIGNATURE = 2,
	MOED_MSG_WEIGHTS_REGISTER = 3,
	MOED_MSG_WEIGHTS_ATTACH = 4,
	MOED_MSG_WEIGHTS_UPLOAD = 5,
	MOED_MSG_WEIGHTS_COMMIT = 6,
	MOED_MSG_WEIGHTS_RELEASE = 7,
	/* operator requests (moedctl); allowed without HELLO */
	MOED_MSG_ADMIN_STATUS = 20,
	MOED_MSG_ADMIN_CLIENTS = 21,
	MOED_MSG_ADMIN_WEIGHTS = 22,
	MOED_MSG_ADMIN_STATS = 23,
	MOED_MSG_ADMIN_DRAIN = 24,
	MOED_MSG_REPLY = 100,
};

struct moed_msg_hdr {
	uint32_t type; /* enum moed_msg_type */
	uint32_t len;  /* body bytes after this header */
};

struct moed_reply {
	int32_t status; /* 0 or a negative errno */
	uint32_t reserved;
	char message[MOED_MSG_SIZE]; /* why, when status < 0 */
};

/* HELLO: sizes of 0 ask for the daemon's defaults; larger ones are capped by its limits. */
struct moed_hello {
	uint32_t abi_version;
	uint32_t sq_entries;
	uint32_t cq_entries;
	uint32_t reserved;
	uint64_t arena_size;
	char name[MOED_NAME_MAX]; /* for logs and status; may be empty */
};

struct moed_hello_reply {
	uint64_t region_size;
	uint32_t max_inflight; /* SQ entries: jobs a client may have outstanding */
	uint32_t reserved;
	char backend[MOED_BACKEND_NAME_MAX];
};

/* Backend capabilities, published in the signature. */
#define MOED_CAP_NO_COMBINE (1u << 0)
#define MOED_CAP_ROUTER_WEIGHT_ON_INPUT (1u << 1)
#define MOED_CAP_GATED (1u << 2)
#define MOED_CAP_NOT_GATED (1u << 3)

/* SIGNATURE: empty request; the reply is a struct moed_signature_wire then
 * kwarg_count struct moed_kwarg_spec_wire. */
struct moed_signature_wire {
	char backend[MOED_BACKEND_NAME_MAX];
	uint32_t caps;        /* MOED_CAP_* */
	uint32_t dtypes;      /* bit per enum moed_dtype accepted for I/O and weights */
	uint32_t activations; /* bit per enum moed_activation */
	uint32_t kwarg_count;
};

#define MOED_SIG_MAX_KWARGS 32u
#define MOED_SIG_CHOICES_MAX 160u

struct moed_kwarg_spec_wire {
	char name[MOED_KWARG_KEY_MAX + 8]; /* NUL-terminated */
	uint8_t type; /* enum moed_kwarg_type */
	uint8_t reserved[7];
	int64_t min, max;   /* INT64, or each INT64_ARRAY element */
	double dmin, dmax;  /* DOUBLE */
	uint32_t max_len;   /* STRING bytes / INT64_ARRAY elements; 0 = the wire limit */
	uint32_t reserved2;
	char choices[MOED_SIG_CHOICES_MAX]; /* STRING: comma-separated allowed values, or "" */
	char help[96];
};

/* A weight set's shape. w13 is [E, 2I, H] when gated, else [E, I, H]; w2 is [E, H, I]. */
struct moed_weights_shape {
	uint32_t num_experts;  /* E */
	uint32_t hidden_size;  /* H */
	uint32_t inter_size;   /* I */
	uint8_t dtype;         /* enum moed_dtype */
	uint8_t gated;         /* 1 or 0 */
	uint8_t reserved[2];
};

struct moed_weights_register {
	char name[MOED_NAME_MAX];
	struct moed_weights_shape shape;
};

struct moed_weights_attach {
	char name[MOED_NAME_MAX];
};

/* Reply of REGISTER and ATTACH. */
struct moed_weights_reply {
	uint32_t weights_id;
	uint32_t must_upload; /* REGISTER: 1 when this client created the set */
	struct moed_weights_shape shape;
};

enum moed_weights_tensor {
	MOED_TENSOR_W13 = 0,
	MOED_TENSOR_W2 = 1,
};

/* UPLOAD: copy arena[arena_offset, +length) to the tensor at byte `tensor_offset`. */
struct moed_weights_upload {
	uint32_t weights_id;
	uint32_t tensor; /* enum moed_weights_tensor */
	uint64_t tensor_offset;
	uint64_t arena_offset;
	uint64_t length;
};

/* COMMIT and RELEASE. */
struct moed_weights_ref {
	uint32_t weights_id;
	uint32_t reserved;
};

/* ---- operator requests ------------------------------------------------------------ */

/* ADMIN_STATUS (empty request) */
struct moed_admin_status {
	char version[16];
	char backend[MOED_BACKEND_NAME_MAX];
	uint32_t abi_version;
	uint32_t pid;
	uint64_t uptime_ns;
	uint32_t clients;      /* connections with a region */
	uint32_t queued;       /* entries waiting or running, all clients */
	uint32_t weight_sets;
	uint32_t draining;     /* 1 after ADMIN_DRAIN */
	uint64_t weight_bytes, weights_max;
	uint64_t jobs, job_errors;
	uint32_t spin_us, threads;
};

/* ADMIN_CLIENTS and ADMIN_WEIGHTS take a struct moed_admin_page and reply with a
 * struct moed_admin_list then `count` entries, from entry `first` of `total`. */
struct moed_admin_page {
	uint32_t first;
	uint32_t reserved;
};

struct moed_admin_list {
	uint32_t total;
	uint32_t count;
};

struct moed_admin_client {
	uint64_t id;
	uint32_t pid, uid;
	char name[MOED_NAME_MAX];
	uint64_t jobs, job_errors;
	uint64_t arena_size;
	uint32_t max_inflight;
	uint32_t weight_handles;
};

struct moed_admin_weights {
	char name[MOED_NAME_MAX];
	struct moed_weights_shape shape;
	uint64_t bytes;
	uint32_t holders;   /* references: clients' handles and jobs running */
	uint32_t committed;
};

/* ADMIN_STATS (empty request) */
struct moed_admin_stats {
	uint64_t jobs, job_errors, moe_jobs;
	uint32_t samples; /* the last MoE jobs the percentiles come from */
	uint32_t reserved;
	uint64_t queue_ns[3]; /* p50, p99, p99.9 */
	uint64_t run_ns[3];
};

/* ADMIN_DRAIN (empty request): accept no new clients; jobs submitted from now on fail
 * with -ESHUTDOWN; those already submitted are served. */

MOED__PIN_SIZE(struct moed_msg_hdr, 8);
MOED__PIN_SIZE(struct moed_reply, 264);
MOED__PIN_SIZE(struct moed_hello, 88);
MOED__PIN_SIZE(struct moed_hello_reply, 48);
MOED__PIN_SIZE(struct moed_signature_wire, 48);
MOED__PIN_SIZE(struct moed_kwarg_spec_wire, 376);
MOED__PIN_SIZE(struct moed_weights_shape, 16);
MOED__PIN_SIZE(struct moed_weights_register, 80);
MOED__PIN_SIZE(struct moed_weights_attach, 64);
MOED__PIN_SIZE(struct moed_weights_reply, 24);
MOED__PIN_SIZE(struct moed_weights_upload, 32);
MOED__PIN_SIZE(struct moed_weights_ref, 8);
MOED__PIN_SIZE(struct moed_admin_status, 120);
MOED__PIN_SIZE(struct moed_admin_page, 8);
MOED__PIN_SIZE(struct moed_admin_list, 8);
MOED__PIN_SIZE(struct moed_admin_client, 112);
MOED__PIN_SIZE(struct moed_admin_weights, 96);
MOED__PIN_SIZE(struct moed_admin_stats, 80);
MOED__STATIC_ASSERT(sizeof(struct moed_msg_hdr) + sizeof(struct moed_reply) +
			    sizeof(struct moed_signature_wire) +
			    MOED_SIG_MAX_KWARGS * sizeof(struct moed_kwarg_spec_wire) <=
		    MOED_MSG_MAX,
		    "a full signature fits one packet");

#ifdef __cplusplus
}
#endif

#endif /* MOED_PROTO_H */
