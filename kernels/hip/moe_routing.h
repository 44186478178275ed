/* SPDX-License-Identifier: MIT */
/*
 * Token sorting for the GPU kernels, on the host: (token, slot) pairs grouped by expert
 * (a stable counting sort), each expert's range cut into tiles of at most the kernel's
 * tile size. Shared by the backend and the GPU benchmark. Two steps, since the kernel
 * (and so the tile) is chosen from the counts: moe_route_count(), then moe_route_cut().
 */
#ifndef MOED_HIP_MOE_ROUTING_H
#define MOED_HIP_MOE_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct moe_routing {
	uint32_t *pair_of;   /* [pairs] sorted position -> pair (m * K + k) */
	uint32_t *pos_of;    /* [pairs] pair -> sorted position */
	uint32_t *tiles;     /* [3 * ntiles]: first positions, then counts, then experts */
	uint32_t ntiles;
	uint32_t max_tile; /* the most pairs in one tile */
	uint32_t used_experts;
	uint32_t most_pairs; /* the most pairs of any one expert */
	/* capacities, private */
	size_t pairs_cap, experts_cap;
	uint32_t *counts;
	const int32_t *ids;
	size_t pairs;
	uint32_t experts;
};

/*
 * Count the pairs of each expert among `pairs` expert ids (each must lie in
 * [0, experts)); sets most_pairs and used_experts. `ids` must stay valid until
 * moe_route_cut(). Returns 0, -EINVAL with the offending position in *bad, or -ENOMEM.
 * Buffers grow as needed and are reused.
 */
int moe_route_count(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t experts,
		    size_t *bad);

/* Sort the counted pairs by expert and cut each expert's range into tiles of `tile`. */
int moe_route_cut(struct moe_routing *r, uint32_t tile);

/*
 * Everything the kernels read about a job's routing, in one buffer for one copy to the
 * device (from pinned memory, an asynchronous DMA): pair_of, pos_of and the topk
 * weights ([pairs] each), then the tile table (first, count, expert: [ntiles] each).
 */
size_t moe_route_packed_bytes(const struct moe_routing *r);
void moe_route_pack(const struct moe_routing *r, const float *topk_weights, void *dst);

/* The kernels' pointers into a packed copy at `dev` (see moe_route_pack). */
#define MOE_ROUTE_PAIR_OF(dev, r) ((const uint32_t *)(dev))
#define MOE_ROUTE_POS_OF(dev, r) ((const uint32_t *)(dev) + (r)->pairs)
#define MOE_ROUTE_WEIGHTS(dev, r) ((const float *)(dev) + 2 * (r)->pairs)
#define MOE_ROUTE_TILES(dev, r) ((const uint32_t *)(dev) + 3 * (r)->pairs)

void moe_routing_free(struct moe_routing *r);

#ifdef __cplusplus
}
#endif

#endif
