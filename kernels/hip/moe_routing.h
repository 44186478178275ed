/* SPDX-License-Identifier: MIT */
/*
 * Token sorting for the GPU kernels: (token, slot) pairs grouped by expert (a counting
 * sort), each expert's range cut into tiles of at most the kernel's tile size. Shared by
 * the backend and the GPU benchmark. Two steps, since the kernel (and so the tile) is
 * chosen from the counts: moe_route_count(), then moe_route_cut(). The host counts and
 * cuts: the kernel's choice and its grid must be known when it is launched. Placing each
 * pair (pair_of, pos_of) is the host's for small jobs (stable: a pair's place in its
 * expert's range follows its index) and the device's from MOE_ROUTE_DEVICE_PAIRS pairs
 * on (the launch's first kernel, in the order its atomics come in: every pair's result
 * is the same wherever it is placed, each row of a tile being computed on its own).
 */
#ifndef MOED_HIP_MOE_ROUTING_H
#define MOED_HIP_MOE_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* From this many pairs the device places them: at 32768 the host's scatter and the copy
 * of the two [pairs] arrays it fills cost tens of µs more than the kernel (bench/RESULTS.md,
 * version 9); below a few thousand, less than a kernel's launch. The bound between is
 * chosen, not measured. */
#define MOE_ROUTE_DEVICE_PAIRS 4096

/* Whether a job of `pairs` pairs has them placed by the device (moe_route_cut). */
static inline int moe_route_on_device(size_t pairs)
{
	return pairs >= MOE_ROUTE_DEVICE_PAIRS;
}

struct moe_routing {
	uint32_t *pair_of;   /* [pairs] sorted position -> pair (m * K + k), unless on_device */
	uint32_t *pos_of;    /* [pairs] pair -> sorted position, unless on_device */
	int on_device;       /* moe_route_cut() left the placing to the device */
	uint32_t *tiles;     /* [3 * ntiles]: first positions, then counts, then experts */
	uint32_t ntiles;
	uint32_t max_tile; /* the most pairs in one tile */
	uint32_t used_experts;
	uint32_t most_pairs; /* the most pairs of any one expert */
	uint32_t over_16;    /* the experts with more than 16 pairs (moe_gpu_plan) */
	/* capacities, private */
	size_t pairs_cap, experts_cap;
	uint32_t *counts;
	const int32_t *ids;
	size_t pairs;
	uint32_t experts;
};

/*
 * Count the pairs of each expert among `pairs` expert ids (each must lie in
 * [0, experts)); sets most_pairs, used_experts and over_16. `ids` must stay valid until
 * moe_route_cut(). Returns 0, -EINVAL with the offending position in *bad, or -ENOMEM.
 * Buffers grow as needed and are reused.
 */
int moe_route_count(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t experts,
		    size_t *bad);

/* Cut each expert's range of the counted pairs into tiles of `tile`, and place the
 * pairs, unless there are MOE_ROUTE_DEVICE_PAIRS or more (on_device). The tile table
 * lists an expert's tiles in order, expert by expert; `paired` (wgmma128c, whose
 * clusters take tiles 2u and 2u + 1 together and share their weight tiles where both are
 * one expert's) lists them so that as many such pairs as can be are one expert's: each
 * expert's tiles two by two, and an odd expert's last tile paired with the next odd
 * expert's last, placed right after that expert's pairs (near both experts' other tiles,
 * which read the same weights through L2). */
int moe_route_cut(struct moe_routing *r, uint32_t tile, int paired);

/*
 * Everything the kernels read about a job's routing, in one buffer on the device:
 * pair_of, pos_of and the topk weights ([pairs] each), the tile table (first, count,
 * expert: [ntiles] each), and where the device places the pairs, the expert ids
 * ([pairs]) and each expert's first position ([experts], consumed by the placing).
 * moe_route_pack() fills a host copy of it (pinned memory: one asynchronous DMA) from
 * byte moe_route_upload_from() on, all that the copy to the device must carry.
 */
size_t moe_route_packed_bytes(const struct moe_routing *r);
size_t moe_route_upload_from(const struct moe_routing *r);
void moe_route_pack(const struct moe_routing *r, const float *topk_weights, void *dst);

/* The pointers into a packed copy at `dev` (see moe_route_pack). */
#define MOE_ROUTE_PAIR_OF(dev, r) ((uint32_t *)(dev))
#define MOE_ROUTE_POS_OF(dev, r) ((uint32_t *)(dev) + (r)->pairs)
#define MOE_ROUTE_WEIGHTS(dev, r) ((const float *)(dev) + 2 * (r)->pairs)
#define MOE_ROUTE_TILES(dev, r) ((const uint32_t *)(dev) + 3 * (r)->pairs)
#define MOE_ROUTE_IDS(dev, r) ((const uint32_t *)(dev) + 3 * (r)->pairs + 3 * (size_t)(r)->ntiles)
#define MOE_ROUTE_STARTS(dev, r) ((uint32_t *)(dev) + 4 * (r)->pairs + 3 * (size_t)(r)->ntiles)

/* The routing's fields of the kernels' arguments, for a packed copy at `dev` on the device. */
struct moe_gpu_args;
void moe_route_args(const struct moe_routing *r, void *dev, struct moe_gpu_args *a);

void moe_routing_free(struct moe_routing *r);

#ifdef __cplusplus
}
#endif

#endif
