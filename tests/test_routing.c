/* SPDX-License-Identifier: MIT */
/*
 * The GPU backend's token sorting (kernels/hip/moe_routing.c, plain C, so it is tested
 * here on every machine): fresh random routings with skewed experts and random tile
 * sizes against a direct recount; expert ids out of range refused with their position;
 * the packed copy laid out as the kernels read it; tables paired by expert for
 * wgmma128c with as many one-expert pairs as can be. Where the device sorts (large
 * jobs), the host's part: the ids copied and checked, the kernel's counts estimated from
 * a sample (exact where the sample is the whole job), the most tiles there can be (never
 * fewer than the host's cut makes), and the layout the device's sort fills.
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
 * pos_of as given (the routing's, or read back from the packed copy). */
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
	 * expert, and pos_of its inverse. */
	unsigned char *seen = calloc(pairs + 1, 1);
	for (size_t q = 0; q < pairs; q++) {
		const uint32_t p = pair_of[q];
		ck_assert_uint_lt(p, pairs);
		ck_assert(!seen[p]);
		seen[p] = 1;
		ck_assert_uint_eq(pos_of[p], q);
		if (q) {
			const uint32_t prev = pair_of[q - 1];
			ck_assert(ids[prev] < ids[p] || (ids[prev] == ids[p] && prev < p));
		}
	}

	/* Tiles: each of one expert, at most `tile` pairs, together covering every sorted
	 * position once; only the last tile of an expert may be short. In order unless
	 * paired; paired, in the table's order by position (the order the cut makes).
	 * Extended, an expert's last tile holds its pairs past its last whole tile where they
	 * are at most MOE_ROUTE_EXTRA_ROWS. */
	const uint32_t n = r->ntiles, *table = r->tiles;
	/* Each expert's tiles, reckoned here from the counts, not by the cut's helpers:
	 * extended, an expert 1 to MOE_ROUTE_EXTRA_ROWS pairs past a whole number of tiles
	 * has no tile of its own for them. */
	uint32_t *tiles_of = calloc(experts, sizeof(uint32_t)), *tiles_seen = calloc(experts, sizeof(uint32_t));
	for (uint32_t e = 0; e < experts; e++) {
		const uint32_t rest = count[e] % tile;
		const int joined = paired == MOE_ROUTE_PAIRED_EXTENDED && count[e] > tile && rest >= 1 &&
				   rest <= MOE_ROUTE_EXTRA_ROWS;
		tiles_of[e] = joined ? (count[e] - rest) / tile : (count[e] + tile - 1) / tile;
	}
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
		ck_assert(cnt >= 1 && cnt <= tile + (paired == MOE_ROUTE_PAIRED_EXTENDED ? MOE_ROUTE_EXTRA_ROWS : 0));
		if (cnt > tile) { /* the expert's last, where it has a whole tile before */
			ck_assert_uint_eq(cnt - tile, count[exp] % tile);
			ck_assert_uint_gt(count[exp], tile);
			ck_assert(i + 1 == n || table[2 * n + order[i + 1]] != exp);
			/* wgmma128e shares such a tile's rows with its pair's other block only where
			 * that is the same expert's, which it then is as the pair's second. */
			if ((t ^ 1u) < n && table[2 * n + (t ^ 1u)] == exp)
				ck_assert_uint_eq(t % 2, 1);
		}
		tiles_seen[exp]++;
		for (uint32_t q = first; q < first + cnt; q++)
			ck_assert_int_eq(ids[pair_of[q]], (int32_t)exp);
		if (cnt < tile && i + 1 < n)
			ck_assert_uint_ne(table[2 * n + order[i + 1]], exp);
		max_tile = cnt > max_tile ? cnt : max_tile;
		at += cnt;
	}
	ck_assert_uint_eq(at, pairs);
	ck_assert_uint_eq(r->max_tile, max_tile);
	for (uint32_t e = 0; e < experts; e++)
		ck_assert_uint_eq(tiles_seen[e], tiles_of[e]);
	if (paired) {
		/* As many pairs of table places (2u, 2u + 1) one expert's as there can be: the
		 * sum over experts of half their tiles, rounded down. */
		uint32_t best = 0, shared = 0;
		for (uint32_t e = 0; e < experts; e++)
			best += tiles_of[e] / 2;
		for (uint32_t t = 0; t + 1 < n; t += 2)
			shared += table[2 * n + t] == table[2 * n + t + 1];
		ck_assert_uint_eq(shared, best);
	}
	free(order);
	free(tiles_of);
	free(tiles_seen);
	free(seen);
	free(count);
}

/* `pairs` expert ids below `experts`, skewed: half the pairs on a few hot experts, as
 * real routers do. */
static int32_t *skewed_ids(uint64_t *rng, size_t pairs, uint32_t experts)
{
	const uint32_t hot = (uint32_t)test_rand_range(rng, 1, experts < 4 ? experts : 4);
	int32_t *ids = malloc(pairs * sizeof(int32_t));
	for (size_t p = 0; p < pairs; p++)
		ids[p] = (int32_t)(test_rand(rng) & 1 ? test_rand_range(rng, 0, hot - 1)
						      : test_rand_range(rng, 0, experts - 1));
	return ids;
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
		int32_t *ids = skewed_ids(&rng, pairs, experts);
		size_t bad = 0;
		ck_assert_int_eq(moe_route_count(&r, ids, pairs, experts, &bad), 0);
		const int paired = round % 3 ? MOE_ROUTE_IN_ORDER : round % 2 ? MOE_ROUTE_PAIRED_EXTENDED : MOE_ROUTE_PAIRED;
		ck_assert_int_eq(moe_route_cut(&r, tile, paired), 0);
		ck_assert_int_eq(r.on_device, 0);

		/* The packed copy, through the kernels' accessors. */
		float *tw = malloc(pairs * sizeof(float));
		for (size_t p = 0; p < pairs; p++)
			tw[p] = (float)test_rand_double(&rng);
		const size_t bytes = moe_route_packed_bytes(&r);
		unsigned char *packed = malloc(bytes);
		memset(packed, 0xa5, bytes);
		moe_route_pack(&r, tw, packed);
		ck_assert_uint_eq(bytes, (3 * pairs + 3 * (size_t)r.ntiles) * 4);
		ck_assert_mem_eq(MOE_ROUTE_WEIGHTS(packed, &r), tw, pairs * 4);
		ck_assert_mem_eq(MOE_ROUTE_TILES(packed, &r), r.tiles, 3 * (size_t)r.ntiles * 4);
		ck_assert_mem_eq(MOE_ROUTE_PAIR_OF(packed, &r), r.pair_of, pairs * 4);
		ck_assert_mem_eq(MOE_ROUTE_POS_OF(packed, &r), r.pos_of, pairs * 4);
		check_sorted(&r, r.pair_of, r.pos_of, ids, pairs, experts, tile, paired);

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
		ck_assert(!a.tile_total && !a.sort.ids && !a.sort.words);
		free(packed);
		free(tw);
		free(ids);
	}
	moe_routing_free(&r);
}
END_TEST

/* What moe_route_sample() should estimate, worked out the plain way: the whole tokens it
 * reads (about MOE_ROUTE_SAMPLE_PAIRS pairs' worth, evenly spread: every stride-th
 * token), each expert's count among them scaled up to the job and rounded up. */
static void sample_figures(const int32_t *ids, size_t tokens, uint32_t topk, uint32_t experts, uint32_t *most,
			   uint32_t *used, uint32_t *over_16)
{
	size_t stride = MOE_ROUTE_SAMPLE_PAIRS / topk;
	stride = stride && tokens > stride ? tokens / stride : 1;
	uint32_t *count = calloc(experts, sizeof(uint32_t));
	size_t sampled = 0;
	for (size_t t = 0; t < tokens; t += stride, sampled += topk)
		for (uint32_t k = 0; k < topk; k++)
			count[ids[t * topk + k]]++;
	*most = *used = *over_16 = 0;
	for (uint32_t e = 0; e < experts; e++) {
		const uint32_t n = (uint32_t)(((uint64_t)count[e] * tokens * topk + sampled - 1) / sampled);
		*most = n > *most ? n : *most;
		*used += n > 0;
		*over_16 += n > 16;
	}
	free(count);
}

/* The extended cut at its bounds: an expert's pairs past its last whole tile join that
 * tile from 1 to MOE_ROUTE_EXTRA_ROWS of them, not beyond, and not for an expert of less
 * than a tile; the tile is the second of the expert's last pair of tiles, or (an odd
 * number of tiles) its tile paired with another expert's. */
START_TEST(extended_cut)
{
	static const uint32_t counts[] = { 270, 300, 256, 20, 288, 513, 289, 200, 150, 161, 160, 398, 128, 129 };
	/* tile 128: 256 + 14, 256 + 32 and 512 + 1 extended, the second of a pair; 128 + 22,
	 * 128 + 32, 384 + 14 and 128 + 1 extended, paired with another expert's; 300, 289, 200
	 * and 161 are 256 + 44, 256 + 33, 128 + 72 and 128 + 33, past the bound; 256, 20 and
	 * 128 have no pairs past a whole tile. */
	static const uint32_t extended_last[] = { 142, 0, 0, 0, 160, 129, 0, 0, 150, 0, 160, 142, 0, 129 };
	const uint32_t experts = sizeof(counts) / sizeof(counts[0]), tile = 128;
	size_t pairs = 0;
	for (uint32_t e = 0; e < experts; e++)
		pairs += counts[e];
	int32_t *ids = malloc(pairs * sizeof(int32_t));
	uint64_t rng = test_seed();
	size_t p = 0;
	for (uint32_t e = 0; e < experts; e++)
		for (uint32_t i = 0; i < counts[e]; i++)
			ids[p++] = (int32_t)e;
	for (size_t i = pairs - 1; i > 0; i--) { /* shuffled */
		const size_t j = (size_t)test_rand_range(&rng, 0, i);
		const int32_t v = ids[i];
		ids[i] = ids[j], ids[j] = v;
	}
	struct moe_routing r;
	memset(&r, 0, sizeof(r));
	size_t bad = 0;
	ck_assert_int_eq(moe_route_count(&r, ids, pairs, experts, &bad), 0);
	ck_assert_int_eq(moe_route_cut(&r, tile, MOE_ROUTE_PAIRED_EXTENDED), 0);
	check_sorted(&r, r.pair_of, r.pos_of, ids, pairs, experts, tile, MOE_ROUTE_PAIRED_EXTENDED);
	ck_assert_uint_eq(r.max_tile, 160);
	for (uint32_t e = 0; e < experts; e++) {
		ck_assert_uint_eq(moe_route_extra(counts[e], tile, MOE_ROUTE_PAIRED_EXTENDED),
				  extended_last[e] ? extended_last[e] - tile : 0);
		ck_assert_uint_eq(moe_route_extra(counts[e], tile, MOE_ROUTE_PAIRED), 0);
		uint32_t tiles = 0, longest = 0;
		for (uint32_t t = 0; t < r.ntiles; t++)
			if (r.tiles[2 * r.ntiles + t] == e) {
				tiles++;
				longest = r.tiles[r.ntiles + t] > longest ? r.tiles[r.ntiles + t] : longest;
			}
		ck_assert_uint_eq(longest, extended_last[e] ? extended_last[e] : counts[e] < tile ? counts[e] : tile);
		ck_assert_uint_eq(tiles, (counts[e] - (extended_last[e] ? extended_last[e] - tile : 0) + tile - 1) / tile);
		/* The kernel tells the two ways apart by the tile's partner in its pair of places. */
		for (uint32_t t = 0; t < r.ntiles; t++)
			if (r.tiles[2 * r.ntiles + t] == e && r.tiles[r.ntiles + t] > tile) {
				const uint32_t partner = t ^ 1u;
				const int same = partner < r.ntiles && r.tiles[2 * r.ntiles + partner] == e;
				ck_assert_int_eq(same, tiles % 2 == 0);
				ck_assert(!same || t % 2 == 1);
			}
	}
	moe_routing_free(&r);
	free(ids);
}
END_TEST

/* The host's part of a device sort, on routings of every size around the sample's. */
START_TEST(device_sort_host_part)
{
	uint64_t rng = test_seed() + 100 + (uint64_t)_i;
	struct moe_routing r, ref;
	memset(&r, 0, sizeof(r));
	memset(&ref, 0, sizeof(ref));
	for (int round = 0; round < 60; round++) {
		const uint32_t experts = (uint32_t)test_rand_range(&rng, 1, 300);
		const uint32_t topk = (uint32_t)test_rand_range(&rng, 1, 9);
		const size_t tokens = (size_t)test_rand_range(&rng, 1, round % 2 ? MOE_ROUTE_SAMPLE_PAIRS / topk : 9000);
		const size_t pairs = tokens * topk;
		const uint32_t tile = (uint32_t)test_rand_range(&rng, 1, 140);
		const int paired = round % 3 ? MOE_ROUTE_IN_ORDER : round % 2 ? MOE_ROUTE_PAIRED_EXTENDED : MOE_ROUTE_PAIRED;
		int32_t *ids = skewed_ids(&rng, pairs, experts);
		size_t bad = 0;
		int32_t bad_id = 0;
		ck_assert_int_eq(moe_route_sample(&r, ids, pairs, topk, experts, &bad, &bad_id), 0);
		ck_assert_int_eq(moe_route_count(&ref, ids, pairs, experts, &bad), 0);
		if (pairs <= MOE_ROUTE_SAMPLE_PAIRS) { /* the sample is the whole job */
			ck_assert_uint_eq(r.most_pairs, ref.most_pairs);
			ck_assert_uint_eq(r.used_experts, ref.used_experts);
			ck_assert_uint_eq(r.over_16, ref.over_16);
		} else { /* an estimate: at most as many experts used, the most pairs in range */
			ck_assert_uint_le(r.used_experts, ref.used_experts);
			ck_assert_uint_ge(r.most_pairs, 1);
			ck_assert_uint_le(r.most_pairs, pairs);
			uint32_t most, used, over_16;
			sample_figures(ids, tokens, topk, experts, &most, &used, &over_16);
			ck_assert_uint_eq(r.most_pairs, most);
			ck_assert_uint_eq(r.used_experts, used);
			ck_assert_uint_eq(r.over_16, over_16);
		}
		moe_route_defer(&r, tile, paired);
		ck_assert_int_eq(moe_route_cut(&ref, tile, paired), 0);
		ck_assert(r.on_device);
		ck_assert_uint_ge(r.ntiles, ref.ntiles);
		ck_assert_uint_eq(r.max_tile, tile);

		/* The device's buffer: the kernels' routing, the tile count, the sort's scratch. */
		const uint32_t blocks = moe_route_sort_blocks(pairs), chunk = moe_route_sort_chunk(pairs);
		ck_assert_uint_le(blocks, MOE_ROUTE_SORT_BLOCKS);
		ck_assert_uint_ge((size_t)blocks * chunk, pairs);
		ck_assert_uint_lt((size_t)(blocks - 1) * chunk, pairs);
		ck_assert_uint_le(chunk, 1u << 20);
		const size_t bytes = moe_route_packed_bytes(&r);
		ck_assert_uint_eq(bytes, (4 * pairs + 3 * (size_t)r.ntiles + 1 + (size_t)blocks * experts) * 4);
		unsigned char *dev = malloc(bytes);
		struct moe_gpu_args a;
		memset(&a, 0, sizeof(a));
		moe_route_args(&r, dev, &a);
		ck_assert_ptr_eq(a.tile_total, a.tile_first + 3 * (size_t)r.ntiles);
		ck_assert_ptr_eq(a.sort.words, a.tile_total + 1);
		ck_assert_ptr_eq(a.sort.block_counts, a.sort.words + pairs);
		ck_assert((unsigned char *)(a.sort.block_counts + (size_t)blocks * experts) == dev + bytes);
		ck_assert_uint_eq(a.sort.blocks, blocks);
		ck_assert_uint_eq(a.sort.chunk, chunk);
		ck_assert_uint_eq(a.sort.tile, tile);
		ck_assert_int_eq(a.sort.paired, paired);
		ck_assert(!a.sort.ids); /* the caller's */
		free(dev);
		free(ids);
	}
	moe_routing_free(&r);
	moe_routing_free(&ref);
}
END_TEST

START_TEST(device_sort_bounds)
{
	ck_assert(!moe_route_on_device(MOE_ROUTE_DEVICE_PAIRS - 1, 8));
	ck_assert(moe_route_on_device(MOE_ROUTE_DEVICE_PAIRS, 8));
	ck_assert(moe_route_on_device(MOE_ROUTE_DEVICE_MAX_PAIRS, MOE_ROUTE_DEVICE_MAX_EXPERTS));
	ck_assert(!moe_route_on_device(MOE_ROUTE_DEVICE_MAX_PAIRS + 1, 8));
	ck_assert(!moe_route_on_device(MOE_ROUTE_DEVICE_PAIRS, MOE_ROUTE_DEVICE_MAX_EXPERTS + 1));
	ck_assert_uint_eq(moe_route_sort_blocks(MOE_ROUTE_DEVICE_MAX_PAIRS), MOE_ROUTE_SORT_BLOCKS);
	ck_assert_uint_eq(moe_route_sort_chunk(MOE_ROUTE_DEVICE_MAX_PAIRS), 1u << 20);
	ck_assert_uint_eq(moe_route_sort_blocks(32768), 32);
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
	/* Sampled for the device's sort: the sample's first one out of range, with its id;
	 * a small job is sampled whole. */
	int32_t bad_id = 0;
	bad = 99;
	ck_assert_int_eq(moe_route_sample(&r, ids, 5, 1, 4, &bad, &bad_id), -EINVAL);
	ck_assert_uint_eq(bad, 3);
	ck_assert_int_eq(bad_id, 4);
	ck_assert_int_eq(moe_route_sample(&r, negative, 2, 2, 4, &bad, &bad_id), -EINVAL);
	ck_assert_uint_eq(bad, 1);
	ck_assert_int_eq(bad_id, -1);
	ck_assert_int_eq(moe_route_sample(&r, ids, 5, 5, 5, &bad, &bad_id), 0);
	/* A larger job is sampled one token in `stride`: a bad id elsewhere is the device's
	 * to find. */
	const size_t tokens = 8 * MOE_ROUTE_SAMPLE_PAIRS, stride = 8;
	int32_t *many = calloc(tokens, sizeof(int32_t));
	many[100 * stride + 3] = 7;
	ck_assert_int_eq(moe_route_sample(&r, many, tokens, 1, 4, &bad, &bad_id), 0);
	many[100 * stride] = -5;
	ck_assert_int_eq(moe_route_sample(&r, many, tokens, 1, 4, &bad, &bad_id), -EINVAL);
	ck_assert_uint_eq(bad, 100 * stride);
	ck_assert_int_eq(bad_id, -5);
	free(many);
	/* The device's report of the first pair out of range, read back; 0 reports none. */
	size_t pair = 0;
	int32_t id = 0;
	ck_assert(!moe_gpu_sort_report(0, &pair, &id));
	ck_assert(moe_gpu_sort_report((unsigned long long)(UINT32_MAX - 123456u) << 32 | (uint32_t)-7, &pair, &id));
	ck_assert_uint_eq(pair, 123456);
	ck_assert_int_eq(id, -7);
	ck_assert(moe_gpu_sort_report((unsigned long long)(UINT32_MAX - 0u) << 32 | 4096u, &pair, &id));
	ck_assert_uint_eq(pair, 0);
	ck_assert_int_eq(id, 4096);
	/* Its word on the device: 8-byte aligned, after the one-kernel decode's tile counters. */
	ck_assert_uint_eq(MOE_GPU_COUNTER_SORT_BAD % 2, 0);
	ck_assert_uint_ge(MOE_GPU_COUNTER_SORT_BAD, MOE_GPU_COUNTER_TILES + MOE_GPU_FUSED_MAX_TILES);
	ck_assert_uint_le(MOE_GPU_COUNTER_SORT_BAD + 2, MOE_GPU_COUNTERS);
	moe_routing_free(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("routing");
	TCase *tc = tcase_create("routing");
	tcase_add_loop_test(tc, random_routings, 0, 3);
	tcase_add_test(tc, extended_cut);
	tcase_add_loop_test(tc, device_sort_host_part, 0, 3);
	tcase_add_test(tc, device_sort_bounds);
	tcase_add_test(tc, ids_out_of_range);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return test_run_suite(s);
}
