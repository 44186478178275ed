/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "moe_kernels.h"
#include "moe_routing.h"

static int grow(uint32_t **p, size_t n)
{
	uint32_t *q = (uint32_t *)realloc(*p, n * sizeof(**p) + 1); /* C and C++ */
	if (!q)
		return -ENOMEM;
	*p = q;
	return 0;
}

/* The plan's figures (moe_gpu_plan) from each expert's count among `sampled` of the job's
 * `pairs` pairs, scaled up to the whole job (rounded up: an expert seen stays used). The
 * scaled count ceil(c * pairs / sampled) exceeds 16 where c * pairs > 16 * sampled, and
 * grows with c: one division for the largest, none an expert (a 64-bit division each took
 * most of a large job's sample). */
static void plan_figures(struct moe_routing *r, const uint32_t *counts, uint32_t experts, size_t pairs,
			 size_t sampled)
{
	uint32_t used = 0, most = 0, over_16 = 0;
	const uint64_t over = 16 * (uint64_t)sampled;
	for (uint32_t e = 0; e < experts; e++) {
		const uint32_t c = counts[e];
		used += c > 0;
		over_16 += (uint64_t)c * pairs > over;
		most = c > most ? c : most;
	}
	if (sampled != pairs)
		most = sampled ? (uint32_t)(((uint64_t)most * pairs + sampled - 1) / sampled) : 0;
	r->used_experts = used;
	r->most_pairs = most;
	r->over_16 = over_16;
	r->pairs = pairs;
	r->experts = experts;
}

int moe_route_count(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t experts,
		    size_t *bad)
{
	if (pairs > r->pairs_cap || experts + 1 > r->experts_cap) {
		const size_t p = pairs > r->pairs_cap ? pairs : r->pairs_cap;
		const size_t e = experts + 1 > r->experts_cap ? experts + 1 : r->experts_cap;
		if (grow(&r->pair_of, p) || grow(&r->pos_of, p) ||
		    grow(&r->counts, e) || grow(&r->tiles, 3 * (p + e + 1)))
			return -ENOMEM;
		r->pairs_cap = p;
		r->experts_cap = e;
	}
	memset(r->counts, 0, ((size_t)experts + 1) * sizeof(uint32_t));
	for (size_t p = 0; p < pairs; p++) {
		if (ids[p] < 0 || (uint32_t)ids[p] >= experts) {
			*bad = p;
			return -EINVAL;
		}
		r->counts[ids[p] + 1]++;
	}
	plan_figures(r, r->counts + 1, experts, pairs, pairs);
	r->ids = ids;
	return 0;
}

/* The tile table as moe_route_cut() builds it. */
struct tile_table {
	uint32_t *first, *count, *expert;
	uint32_t n, max_tile;
};

/* Append tile j of expert e (whose positions start at starts[e]) to the table: at most
 * `most` pairs (tile, or more where an extended cut adds an expert's last few). */
static void put_tile(struct tile_table *t, const uint32_t *starts, uint32_t tile, uint32_t e, uint32_t j,
		     uint32_t most)
{
	const uint32_t at = starts[e] + j * tile, left = starts[e + 1] - at;
	t->first[t->n] = at;
	t->count[t->n] = left < most ? left : most;
	t->max_tile = t->count[t->n] > t->max_tile ? t->count[t->n] : t->max_tile;
	t->expert[t->n++] = e;
}

int moe_route_cut(struct moe_routing *r, uint32_t tile, int paired)
{
	const uint32_t experts = r->experts;
	if (tile == 0)
		return -EINVAL;
	for (uint32_t e = 0; e < experts; e++) /* counts become start positions */
		r->counts[e + 1] += r->counts[e];

	/* Tiles: at most pairs / tile full ones plus one partial per expert. */
	const size_t tiles_cap = r->pairs / tile + experts + 1;
	struct tile_table t = { r->tiles, r->tiles + tiles_cap, r->tiles + 2 * tiles_cap, 0, 0 };
	/* An odd expert's last tile, unpaired, and its most pairs. */
	uint32_t pending = UINT32_MAX, pending_tile = 0, pending_most = 0;
	for (uint32_t e = 0; e < experts; e++) {
		const uint32_t n = r->counts[e + 1] - r->counts[e];
		if (!n) /* most experts of a decode job: no division for them */
			continue;
		const uint32_t extra = moe_route_extra(n, tile, paired), tiles = moe_route_tiles(n, tile, paired);
		/* Paired: the expert's tiles two by two, which keeps the table's length even
		 * between experts; an odd expert's last tile goes with the next odd expert's
		 * last, right after that expert's pairs. */
		const uint32_t in_order = paired ? tiles & ~1u : tiles;
		for (uint32_t j = 0; j < in_order; j++)
			put_tile(&t, r->counts, tile, e, j, j + 1 == tiles ? tile + extra : tile);
		if (in_order == tiles)
			continue;
		if (pending == UINT32_MAX) {
			pending = e, pending_tile = tiles - 1, pending_most = tile + extra;
			continue;
		}
		put_tile(&t, r->counts, tile, pending, pending_tile, pending_most);
		put_tile(&t, r->counts, tile, e, tiles - 1, tile + extra);
		pending = UINT32_MAX;
	}
	if (pending != UINT32_MAX)
		put_tile(&t, r->counts, tile, pending, pending_tile, pending_most);
	/* Pack the three arrays back to back for one copy to the device. */
	memmove(r->tiles + t.n, t.count, t.n * sizeof(uint32_t));
	memmove(r->tiles + 2 * (size_t)t.n, t.expert, t.n * sizeof(uint32_t));
	r->ntiles = t.n;
	r->max_tile = t.max_tile;

	/* counts[e] is now expert e's first position: the cursors of the stable placing. */
	r->on_device = 0;
	for (size_t p = 0; p < r->pairs; p++) {
		const uint32_t pos = r->counts[r->ids[p]]++;
		r->pair_of[pos] = (uint32_t)p;
		r->pos_of[p] = pos;
	}
	return 0;
}

int moe_route_sample(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t topk, uint32_t experts,
		     size_t *bad, int32_t *bad_id)
{
	if (experts + 1 > r->experts_cap) {
		if (grow(&r->counts, experts + 1))
			return -ENOMEM;
		r->experts_cap = experts + 1;
	}
	/* Whole tokens (each slot's experts differ: the first slot is the router's
	 * favourite) evenly spread, each standing for `stride` tokens. */
	const size_t tokens = topk ? pairs / topk : 0;
	size_t stride = topk ? (size_t)MOE_ROUTE_SAMPLE_PAIRS / topk : 0;
	stride = stride && tokens > stride ? tokens / stride : 1;
	memset(r->counts, 0, ((size_t)experts + 1) * sizeof(uint32_t));
	size_t sampled = 0;
	for (size_t t = 0; t < tokens; t += stride, sampled += topk)
		for (uint32_t k = 0; k < topk; k++) {
			/* One load, which the compiler may not repeat: the id indexes counts. */
			const int32_t id = __atomic_load_n(&ids[t * topk + k], __ATOMIC_RELAXED);
			if (id < 0 || (uint32_t)id >= experts) {
				*bad = t * topk + k, *bad_id = id;
				return -EINVAL;
			}
			r->counts[id]++;
		}
	plan_figures(r, r->counts, experts, pairs, sampled);
	r->ids = NULL; /* the device reads them */
	return 0;
}

void moe_route_defer(struct moe_routing *r, uint32_t tile, int paired)
{
	/* Each expert's tiles are ceil(n_e / tile): at most (pairs + used * (tile - 1)) / tile
	 * over the used experts, at most min(experts, pairs) of them. */
	const size_t used = r->experts < r->pairs ? r->experts : r->pairs;
	r->on_device = 1;
	r->tile = tile ? tile : 1;
	r->paired = paired;
	r->ntiles = (uint32_t)((r->pairs + used * (r->tile - 1)) / r->tile);
	r->max_tile = r->tile;
}

size_t moe_route_packed_bytes(const struct moe_routing *r)
{
	const size_t sorting = r->on_device ? 1 + r->pairs +
						      (size_t)moe_route_sort_blocks(r->pairs) * r->experts
					    : 0;
	return (3 * r->pairs + 3 * (size_t)r->ntiles + sorting) * sizeof(uint32_t);
}

void moe_route_pack(const struct moe_routing *r, const float *topk_weights, void *dst)
{
	unsigned char *d = (unsigned char *)dst;
	const size_t p = r->pairs * sizeof(uint32_t), t = 3 * (size_t)r->ntiles * sizeof(uint32_t);
	memcpy(d, r->pair_of, p);
	memcpy(d + p, r->pos_of, p);
	memcpy(d + 2 * p, topk_weights, p);
	memcpy(d + 3 * p, r->tiles, t);
}

void moe_route_args(const struct moe_routing *r, void *dev, struct moe_gpu_args *a)
{
	a->topk_weights = MOE_ROUTE_WEIGHTS(dev, r);
	a->pair_of = MOE_ROUTE_PAIR_OF(dev, r);
	a->pos_of = MOE_ROUTE_POS_OF(dev, r);
	a->tiles = r->ntiles;
	a->max_tile = r->max_tile;
	a->tile_first = MOE_ROUTE_TILES(dev, r);
	a->tile_count = a->tile_first + r->ntiles;
	a->tile_expert = a->tile_count + r->ntiles;
	memset(&a->sort, 0, sizeof(a->sort));
	a->tile_total = NULL;
	if (!r->on_device)
		return;
	a->tile_total = MOE_ROUTE_TILE_TOTAL(dev, r);
	a->sort.words = MOE_ROUTE_WORDS(dev, r);
	a->sort.block_counts = MOE_ROUTE_BLOCK_COUNTS(dev, r);
	a->sort.tile = r->tile;
	a->sort.paired = r->paired;
	a->sort.chunk = moe_route_sort_chunk(r->pairs);
	a->sort.blocks = moe_route_sort_blocks(r->pairs);
}

void moe_routing_free(struct moe_routing *r)
{
	free(r->pair_of);
	free(r->pos_of);
	free(r->tiles);
	free(r->counts);
	memset(r, 0, sizeof(*r));
}
