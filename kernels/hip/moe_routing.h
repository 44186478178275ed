/* SPDX-License-Identifier: MIT */
/*
 * Token sorting for the GPU kernels: (token, slot) pairs grouped by expert (a counting
 * sort), each expert's range cut into tiles of at most the kernel's tile size. Shared by
 * the backend and the GPU benchmark. Two ways:
 * - The host sorts (moe_route_count, then moe_route_cut: the kernel, and so the tile, is
 *   chosen from the counts), placing each pair stably (a pair's place in its expert's
 *   range follows its index) and copying the result up.
 * - The device sorts a large job (moe_route_on_device, moe_route_sample, then
 *   moe_route_defer): the host only chooses the kernel from a sample of the tokens; the
 *   launch's first two kernels read the ids where the client wrote them (once each:
 *   another process may be writing them), check them, count, cut into the same table as
 *   the host's cut would, and place (in the order its atomics come in: every pair's
 *   result is the same wherever it is placed, each row of a tile being computed on its
 *   own). The grids are sized for the most tiles the pairs can make; the kernels read
 *   the real count from the device. An id out of range is counted as expert 0's, so
 *   that nothing reads outside the weights, and the first such pair is reported to the
 *   host (moe_gpu_sort.report), which fails the job once it is done.
 */
#ifndef MOED_HIP_MOE_ROUTING_H
#define MOED_HIP_MOE_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* From this many pairs the device sorts them, where the job's kernel reads its tile count
 * from the device (moe_gpu_sorts_on_device). At 32768 pairs the host's count, cut and
 * pack took 40-78 µs on the GPU machine's processor, its sample 6-8, and the device's
 * sort about as long as the copy and placing it replaced (bench/RESULTS.md, versions 20
 * and 21); the device's two kernels take about 10 µs even at 8192 pairs (version 31),
 * while below a few thousand pairs the host's sorting costs less. The bound between is
 * chosen, not measured. */
#define MOE_ROUTE_DEVICE_PAIRS 4096
/* The device's sort keeps an expert id (12 bits) and a rank among one block's pairs of
 * that expert (20 bits) in one word: at most this many experts, and pairs enough for
 * MOE_ROUTE_SORT_BLOCKS blocks of at most 2^20 pairs. */
#define MOE_ROUTE_DEVICE_MAX_EXPERTS 4096u
#define MOE_ROUTE_SORT_BLOCKS 128u
#define MOE_ROUTE_SORT_THREADS 1024u
#define MOE_ROUTE_DEVICE_MAX_PAIRS ((size_t)MOE_ROUTE_SORT_BLOCKS << 20)
/* The kernel for a device-sorted job is chosen from the pairs of about this many pairs'
 * worth of whole tokens, spread over the job. */
#define MOE_ROUTE_SAMPLE_PAIRS 4096

/* Whether a job of `pairs` pairs over `experts` experts may be sorted by the device. */
static inline int moe_route_on_device(size_t pairs, uint32_t experts)
{
	return pairs >= MOE_ROUTE_DEVICE_PAIRS && pairs <= MOE_ROUTE_DEVICE_MAX_PAIRS &&
	       experts <= MOE_ROUTE_DEVICE_MAX_EXPERTS;
}

/* The device sort's pairs a block (a multiple of its threads) and blocks. */
static inline uint32_t moe_route_sort_chunk(size_t pairs)
{
	const size_t per_thread = (pairs + (size_t)MOE_ROUTE_SORT_BLOCKS * MOE_ROUTE_SORT_THREADS - 1) /
				  ((size_t)MOE_ROUTE_SORT_BLOCKS * MOE_ROUTE_SORT_THREADS);
	return (uint32_t)((per_thread ? per_thread : 1) * MOE_ROUTE_SORT_THREADS);
}

static inline uint32_t moe_route_sort_blocks(size_t pairs)
{
	const uint32_t chunk = moe_route_sort_chunk(pairs);
	return (uint32_t)((pairs + chunk - 1) / chunk);
}

struct moe_routing {
	uint32_t *pair_of;   /* [pairs] sorted position -> pair (m * K + k), unless on_device */
	uint32_t *pos_of;    /* [pairs] pair -> sorted position, unless on_device */
	int on_device;       /* moe_route_defer(): the device sorts */
	uint32_t *tiles;     /* [3 * ntiles]: first positions, then counts, then experts;
				on_device, the device's (ntiles is then the most there can be) */
	uint32_t ntiles;
	uint32_t max_tile; /* the most pairs in one tile (on_device: the tile size) */
	/* From moe_route_count(), or estimated by moe_route_sample(): */
	uint32_t used_experts;
	uint32_t most_pairs; /* the most pairs of any one expert */
	uint32_t over_16;    /* the experts with more than 16 pairs (moe_gpu_plan) */
	uint32_t tile;       /* on_device: the tile size, and whether paired (moe_route_cut) */
	int paired;
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
 * pairs. The tile table lists an expert's tiles in order, expert by expert; `paired`
 * (wgmma128c, whose
 * clusters take tiles 2u and 2u + 1 together and share their weight tiles where both are
 * one expert's) lists them so that as many such pairs as can be are one expert's: each
 * expert's tiles two by two, and an odd expert's last tile paired with the next odd
 * expert's last, placed right after that expert's pairs (near both experts' other tiles,
 * which read the same weights through L2). MOE_ROUTE_PAIRED_EXTENDED (wgmma128e, whose
 * items then also multiply such rows): an expert whose pairs run at most
 * MOE_ROUTE_EXTRA_ROWS past a whole number of tiles, one or more, has them added to its
 * last tile (tile + extra pairs) instead of a short tile of their own: the second of its
 * last pair where it has an even number of tiles, else its tile paired with another
 * expert's. */
int moe_route_cut(struct moe_routing *r, uint32_t tile, int paired);

/* moe_route_cut's `paired`. */
enum { MOE_ROUTE_IN_ORDER, MOE_ROUTE_PAIRED, MOE_ROUTE_PAIRED_EXTENDED };
#define MOE_ROUTE_EXTRA_ROWS 32u

/* The pairs that an extended cut adds to the last tile of an expert of n pairs, or 0 (the
 * host's cut and the device's): those past its last whole tile, where it has one. */
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MOE_ROUTE_HOST_DEVICE __host__ __device__
#else
#define MOE_ROUTE_HOST_DEVICE
#endif
static inline MOE_ROUTE_HOST_DEVICE uint32_t moe_route_extra(uint32_t n, uint32_t tile, int paired)
{
	const uint32_t rest = paired == MOE_ROUTE_PAIRED_EXTENDED && n > tile ? n % tile : 0;
	return rest <= MOE_ROUTE_EXTRA_ROWS ? rest : 0;
}

/* The tiles the cut gives an expert of n pairs (the host's and the device's). */
static inline MOE_ROUTE_HOST_DEVICE uint32_t moe_route_tiles(uint32_t n, uint32_t tile, int paired)
{
	return (n - moe_route_extra(n, tile, paired) + tile - 1) / tile;
}

/*
 * For a job the device may sort (moe_route_on_device): estimate most_pairs, used_experts
 * and over_16 for moe_gpu_plan() from the tokens of a sample of about
 * MOE_ROUTE_SAMPLE_PAIRS pairs spread over the job, `topk` a token, reading each sampled
 * id once (another process may be writing them). Then moe_route_defer() where the plan's
 * kernel sorts on the device (moe_gpu_sorts_on_device); else the ids are copied and go
 * through moe_route_count() and moe_route_cut(). Returns 0, or -EINVAL with the first
 * sampled pair whose id is out of range in *bad and that id in *bad_id (the device finds
 * any others), or -ENOMEM.
 */
int moe_route_sample(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t topk, uint32_t experts,
		     size_t *bad, int32_t *bad_id);

/* Leave the sorting to the device, into tiles of `tile` (paired as moe_route_cut's):
 * ntiles becomes the most tiles the pairs can make. */
void moe_route_defer(struct moe_routing *r, uint32_t tile, int paired);

/*
 * Everything the kernels read about a job's routing, in one buffer on the device:
 * pair_of, pos_of and the topk weights ([pairs] each), the tile table (first, count,
 * expert: [ntiles] each), and where the device sorts, the tile count it found, each
 * pair's expert and rank ([pairs]) and each sort block's count of each expert's pairs
 * ([blocks * experts]). Where the host sorts,
 * moe_route_pack() fills a host copy of it (pinned memory: one asynchronous DMA); where
 * the device does, the launch fills it from the client's ids and weights.
 */
size_t moe_route_packed_bytes(const struct moe_routing *r);
void moe_route_pack(const struct moe_routing *r, const float *topk_weights, void *dst);

/* The pointers into a packed copy at `dev` (see moe_route_pack). */
#define MOE_ROUTE_PAIR_OF(dev, r) ((uint32_t *)(dev))
#define MOE_ROUTE_POS_OF(dev, r) ((uint32_t *)(dev) + (r)->pairs)
#define MOE_ROUTE_WEIGHTS(dev, r) ((float *)(dev) + 2 * (r)->pairs)
#define MOE_ROUTE_TILES(dev, r) ((uint32_t *)(dev) + 3 * (r)->pairs)
#define MOE_ROUTE_TILE_TOTAL(dev, r) (MOE_ROUTE_TILES(dev, r) + 3 * (size_t)(r)->ntiles)
#define MOE_ROUTE_WORDS(dev, r) (MOE_ROUTE_TILE_TOTAL(dev, r) + 1)
#define MOE_ROUTE_BLOCK_COUNTS(dev, r) (MOE_ROUTE_WORDS(dev, r) + (r)->pairs)

/* The routing's fields of the kernels' arguments, for a packed copy at `dev` on the
 * device; where the device sorts, all but the sort's ids and weights (the caller's). */
struct moe_gpu_args;
void moe_route_args(const struct moe_routing *r, void *dev, struct moe_gpu_args *a);

void moe_routing_free(struct moe_routing *r);

#ifdef __cplusplus
}
#endif

#endif
