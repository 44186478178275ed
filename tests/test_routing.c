/* SPDX-License-Identifier: MIT */
/*
 * The GPU backend's token sorting (kernels/hip/moe_routing.c, plain C, so it is tested
 * here on every machine): fresh random routings with skewed experts and random tile
 * sizes against a direct recount; expert ids out of range refused with their position;
 * the packed copy laid out as the kernels read it; tables paired by expert for
 * wgmma128c with as many one-expert pairs as can be. Where the device places the pairs
 * (large jobs), the test places them from the packed copy as its kernel does, the
 * pairs taken in a random order as its atomics may come in.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "helpers.h"
#include "moe_kernels.h"
#include "moe_routing.h"

/* qsort's order of tile indices by their first positions in the table sorted_firsts. */
static const uint32_t *sorted_firsts;
static int by_first(const void *a, const void *b)
{
	const uint32_t x = sorted_firsts[*(const uint32_t *)a], y = sorted_firsts[*(const uint32_t *)b];
	return x < y ? -1 : x > y;
}

/* Every property the kernels rely on, checked against the ids themselves; pair_of and
 * pos_of as given (the routing's, or placed from the packed copy). */
static void check_sorted(const struct moe_routing *r, const uint32_t *pair_of, const uint32_t *pos_of,
			 const int32_t *ids, size_t pairs, uint32_t experts, uint32_t tile, int paired)
{
	uint32_t *count = calloc(experts, sizeof(uint32_t)), most = 0, used = 0, over_16 = 0;
	for (size_t p = 0; p < pairs; p++)
		count[ids[p]]++;
	for (uint32_t e = 0; e < experts; e++) {
		most = count[e] > most ? count[e] : most;
		used += count[e] > 0;
		over_16 += count[e] > 16;
	}
	ck_assert_uint_eq(r->most_pairs, most);
	ck_assert_uint_eq(r->used_experts, used);
	ck_assert_uint_eq(r->over_16, over_16);

	/* pair_of is a permutation grouped by expert in ascending order, stable within an
	 * expert where the host placed the pairs, and pos_of its inverse. */
	unsigned char *seen = calloc(pairs + 1, 1);
	for (size_t q = 0; q < pairs; q++) {
		const uint32_t p = pair_of[q];
		ck_assert_uint_lt(p, pairs);
		ck_assert(!seen[p]);
		seen[p] = 1;
		ck_assert_uint_eq(pos_of[p], q);
		if (q) {
			const uint32_t prev = pair_of[q - 1];
			ck_assert(ids[prev] < ids[p] || (ids[prev] == ids[p] && (r->on_device || prev < p)));
		}
	}

	/* Tiles: each of one expert, at most `tile` pairs, together covering every sorted
	 * position once; only the last tile of an expert may be short. In order unless
	 * paired; paired, in the table's order by position (the order the cut makes). */
	const uint32_t n = r->ntiles, *table = r->tiles;
	uint32_t *order = malloc((n + 1) * sizeof(uint32_t));
	for (uint32_t t = 0; t < n; t++)
		order[t] = t;
	if (paired) {
		sorted_firsts = table;
		qsort(order, n, sizeof(*order), by_first);
	}
	uint32_t at = 0, max_tile = 0;
	for (uint32_t i = 0; i < n; i++) {
		const uint32_t t = order[i], first = table[t], cnt = table[n + t], exp = table[2 * n + t];
		ck_assert_uint_eq(first, at);
		ck_assert(cnt >= 1 && cnt <= tile);
		for (uint32_t q = first; q < first + cnt; q++)
			ck_assert_int_eq(ids[pair_of[q]], (int32_t)exp);
		if (cnt < tile && i + 1 < n)
			ck_assert_uint_ne(table[2 * n + order[i + 1]], exp);
		max_tile = cnt > max_tile ? cnt : max_tile;
		at += cnt;
	}
	ck_assert_uint_eq(at, pairs);
	ck_assert_uint_eq(r->max_tile, max_tile);
	if (paired) {
		/* As many pairs of table places (2u, 2u + 1) one expert's as there can be: the
		 * sum over experts of half their tiles, rounded down. */
		uint32_t best = 0, shared = 0;
		for (uint32_t e = 0; e < experts; e++)
			best += (count[e] + tile - 1) / tile / 2;
		for (uint32_t t = 0; t + 1 < n; t += 2)
			shared += table[2 * n + t] == table[2 * n + t + 1];
		ck_assert_uint_eq(shared, best);
	}
	free(order);
	free(seen);
	free(count);
}

START_TEST(random_routings)
{
	uint64_t rng = test_seed() + (uint64_t)_i;
	struct moe_routing r;
	memset(&r, 0, sizeof(r));
	for (int round = 0; round < 200; round++) { /* buffers reused, growing and shrinking */
		const uint32_t experts = (uint32_t)test_rand_range(&rng, 1, 300);
		const size_t pairs = (size_t)test_rand_range(&rng, 1, round % 10 ? 500 : 40000);
		const uint32_t tile = (uint32_t)test_rand_range(&rng, 1, 140);
		/* Skewed: half the pairs on a few hot experts, as real routers do. */
		const uint32_t hot = (uint32_t)test_rand_range(&rng, 1, experts < 4 ? experts : 4);
		int32_t *ids = malloc(pairs * sizeof(int32_t));
		for (size_t p = 0; p < pairs; p++)
			ids[p] = (int32_t)(test_rand(&rng) & 1 ? test_rand_range(&rng, 0, hot - 1)
							       : test_rand_range(&rng, 0, experts - 1));
		size_t bad = 0;
		ck_assert_int_eq(moe_route_count(&r, ids, pairs, experts, &bad), 0);
		const int paired = round % 3 == 0;
		ck_assert_int_eq(moe_route_cut(&r, tile, paired), 0);
		ck_assert_int_eq(r.on_device, pairs >= MOE_ROUTE_DEVICE_PAIRS);

		/* The packed copy, through the kernels' accessors; what lies before
		 * upload_from is not the host's to fill. */
		float *tw = malloc(pairs * sizeof(float));
		for (size_t p = 0; p < pairs; p++)
			tw[p] = (float)test_rand_double(&rng);
		const size_t bytes = moe_route_packed_bytes(&r);
		unsigned char *packed = malloc(bytes);
		memset(packed, 0xa5, bytes);
		moe_route_pack(&r, tw, packed);
		const size_t placing = r.on_device ? pairs + experts : 0;
		ck_assert_uint_eq(bytes, (3 * pairs + 3 * (size_t)r.ntiles + placing) * 4);
		ck_assert_uint_eq(moe_route_upload_from(&r), r.on_device ? 2 * pairs * 4 : 0);
		ck_assert_mem_eq(MOE_ROUTE_WEIGHTS(packed, &r), tw, pairs * 4);
		ck_assert_mem_eq(MOE_ROUTE_TILES(packed, &r), r.tiles, 3 * (size_t)r.ntiles * 4);
		if (!r.on_device) {
			ck_assert_mem_eq(MOE_ROUTE_PAIR_OF(packed, &r), r.pair_of, pairs * 4);
			ck_assert_mem_eq(MOE_ROUTE_POS_OF(packed, &r), r.pos_of, pairs * 4);
			check_sorted(&r, r.pair_of, r.pos_of, ids, pairs, experts, tile, paired);
		} else {
			/* As place_pairs_kernel, the pairs in a random order (Fisher-Yates). */
			uint32_t *order = malloc(pairs * sizeof(uint32_t));
			for (size_t p = 0; p < pairs; p++)
				order[p] = (uint32_t)p;
			for (size_t p = pairs - 1; p > 0; p--) {
				const size_t j = (size_t)test_rand_range(&rng, 0, p);
				const uint32_t t = order[p];
				order[p] = order[j], order[j] = t;
			}
			const uint32_t *dev_ids = MOE_ROUTE_IDS(packed, &r);
			uint32_t *next = MOE_ROUTE_STARTS(packed, &r);
			uint32_t *pair_of = MOE_ROUTE_PAIR_OF(packed, &r), *pos_of = MOE_ROUTE_POS_OF(packed, &r);
			for (size_t i = 0; i < pairs; i++) {
				const uint32_t p = order[i];
				ck_assert_int_eq((int32_t)dev_ids[p], ids[p]);
				const uint32_t pos = next[dev_ids[p]]++;
				ck_assert_uint_lt(pos, pairs);
				pair_of[pos] = p, pos_of[p] = pos;
			}
			check_sorted(&r, pair_of, pos_of, ids, pairs, experts, tile, paired);
			free(order);
		}

		/* The kernels' arguments point into the copy. */
		struct moe_gpu_args a;
		memset(&a, 0, sizeof(a));
		moe_route_args(&r, packed, &a);
		ck_assert_ptr_eq(a.topk_weights, MOE_ROUTE_WEIGHTS(packed, &r));
		ck_assert_ptr_eq(a.pair_of, MOE_ROUTE_PAIR_OF(packed, &r));
		ck_assert_ptr_eq(a.pos_of, MOE_ROUTE_POS_OF(packed, &r));
		ck_assert_ptr_eq(a.tile_first, MOE_ROUTE_TILES(packed, &r));
		ck_assert_ptr_eq(a.tile_expert, MOE_ROUTE_TILES(packed, &r) + 2 * (size_t)r.ntiles);
		ck_assert_uint_eq(a.tiles, r.ntiles);
		ck_assert_uint_eq(a.max_tile, r.max_tile);
		ck_assert(r.on_device ? a.place_ids == MOE_ROUTE_IDS(packed, &r) : !a.place_ids);
		ck_assert(r.on_device ? a.place_next == MOE_ROUTE_STARTS(packed, &r) : !a.place_next);
		free(packed);
		free(tw);
		free(ids);
	}
	moe_routing_free(&r);
}
END_TEST

START_TEST(ids_out_of_range)
{
	struct moe_routing r;
	memset(&r, 0, sizeof(r));
	const int32_t ids[] = { 0, 3, 1, 4, 2 }, negative[] = { 1, -1 };
	size_t bad = 99;
	ck_assert_int_eq(moe_route_count(&r, ids, 5, 4, &bad), -EINVAL);
	ck_assert_uint_eq(bad, 3);
	ck_assert_int_eq(moe_route_count(&r, negative, 2, 4, &bad), -EINVAL);
	ck_assert_uint_eq(bad, 1);
	ck_assert_int_eq(moe_route_count(&r, ids, 5, 5, &bad), 0);
	ck_assert_int_eq(moe_route_cut(&r, 0, 0), -EINVAL);
	moe_routing_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("routing");
	TCase *tc = tcase_create("routing");
	tcase_add_loop_test(tc, random_routings, 0, 3);
	tcase_add_test(tc, ids_out_of_range);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return test_run_suite(s);
}
