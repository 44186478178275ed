/* SPDX-License-Identifier: MIT */
/* What the host side of the GPU backend hands the kernels: device pointers and shapes. */
#ifndef MOED_HIP_MOE_KERNELS_H
#define MOED_HIP_MOE_KERNELS_H

#include <stdint.h>

#include "moe_routing.h" /* MOE_ROUTE_DEVICE_MAX_EXPERTS */

#ifdef __cplusplus
extern "C" {
#endif

enum { MOED_GPU_F32 = 0, MOED_GPU_BF16 = 1, MOED_GPU_F16 = 2 };  /* = enum moed_dtype */
enum { MOED_GPU_SILU = 0, MOED_GPU_GELU = 1 };                    /* = enum moed_activation */

/* The kernels that can run a job, chosen per job by moe_gpu_plan(). */
enum moe_gpu_kernel {
	MOE_GPU_WARP,   /* a warp per (tile, weight row), CUDA cores: f32, rows that are not
			   multiples of 8, and AMD builds unless MFMA is forced */
	MOE_GPU_MMA16,  /* matrix units (NVIDIA mma.sync), tiles of 16 pairs: weight streaming */
	MOE_GPU_MMA32,  /* matrix units, tiles of 32 pairs */
	MOE_GPU_MMA64,  /* matrix units, tiles of 64 pairs */
	MOE_GPU_MMA128, /* matrix units, tiles of 128 pairs: prefill */
	MOE_GPU_WGMMA128,  /* Hopper's wgmma (sm_90a builds on an sm_90 card), tiles of 128
			      pairs by 128 weight rows: prefill there */
	MOE_GPU_WGMMA128W, /* the same, tiles of 128 pairs by 256 weight rows (forced only
			      since wgmma128p) */
	MOE_GPU_WGMMA128P, /* the same tiles in a persistent, warp-specialised kernel whose
			      weight tiles the TMA fetches: prefill on Hopper */
	MOE_GPU_WGMMA128WN, /* wgmma128w's gate/up GEMM, wgmma128's down GEMM (forced only
			       since wgmma128p) */
	MOE_GPU_WGMMA128C, /* wgmma128p in clusters of two blocks, which take tiles in pairs
			      and share the weight tiles of pairs of one expert (TMA
			      multicast): prefill on Hopper where an expert has several tiles */
	MOE_GPU_WGMMA128S, /* wgmma128p whose two computing warpgroups take items of 128 pairs
			      by 128 weight rows in turns (ping-pong), one's epilogue during
			      the other's math (forced only: faster where tiles are part
			      full, slower where they are full, bench/RESULTS.md version 13) */
	MOE_GPU_WGMMA128D, /* wgmma128s in clusters of two blocks, as wgmma128c: withdrawn
			      (moe_gpu_kernel_withdrawn), kept so that the names and
			      numbers of the others stay */
	MOE_GPU_MFMA64,    /* AMD's matrix units (MFMA, AMD builds), tiles of 64 pairs (forced
			      only, until run on AMD hardware: MOED_GPU_KERNEL=mfma64) */
	MOE_GPU_WGMMA128E, /* wgmma128c whose tiles also take an expert's few pairs past its
			      last whole tile (MOE_ROUTE_PAIRED_EXTENDED): where experts hold
			      about a whole number of tiles */
};
#define MOE_GPU_KERNELS 14

/* Pairs of one expert per tile for the warp kernels: each weight row is read once per tile. */
#define MOE_GPU_TILE 16

struct moe_gpu_plan {
	enum moe_gpu_kernel kernel;
	uint32_t tile; /* pairs per tile the routing must cut */
	int paired;    /* the routing pairs the tiles by expert (moe_route_cut) */
};

/*
 * Pick the kernel for a job of `pairs` pairs from its routing's counts (the most pairs
 * any one expert has, the experts used, those with more than 16 pairs: moe_routing's
 * most_pairs, used_experts and over_16) and the dtypes and shapes (the matrix-unit kernels need I/O
 * and weights of one 16-bit dtype, and hidden and intermediate sizes that are multiples
 * of 8, for 16-byte copies). `forced`, a kernel this build has (or -1 for none), is
 * taken wherever the job allows it: for tests, benchmarks and diagnosis (the backend
 * reads it from MOED_GPU_KERNEL).
 */
struct moe_gpu_plan moe_gpu_plan(size_t pairs, uint32_t most_pairs, uint32_t used_experts, uint32_t over_16,
				 int io_dtype, int w_dtype, uint32_t hidden, uint32_t inter, int forced);

/*
 * Sort a job's `pairs` expert ids (`topk` a token) for the kernels, as the backend does
 * (moe_routing.h), and pick its kernel (*plan, as moe_gpu_plan() with the same shapes and
 * `forced`). Where the device may sort (moe_route_on_device), the kernel is chosen from a
 * sample of `ids`, and where it lets the device sort (r->on_device), the launch reads
 * and checks `ids` itself (moe_gpu_sort.ids); else they are first copied to `copy`
 * ([pairs] words) and the host sorts from the copy. Elsewhere the host sorts from `ids`,
 * which must not change meanwhile. Returns 0, -EINVAL with the first id out of range
 * that the host saw at *bad and its value in *bad_id, or -ENOMEM.
 */
struct moe_routing;
int moe_gpu_route(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t topk, uint32_t experts,
		  uint32_t *copy, int io_dtype, int w_dtype, uint32_t hidden, uint32_t inter, int forced,
		  struct moe_gpu_plan *plan, size_t *bad, int32_t *bad_id);

/* How many tiles the matrix-unit kernels' blocks take in a group (all column blocks of
 * a group before the next group, for L2 reuse): MOED_GPU_TILE_GROUP, 1 to 65536, for
 * measurements, else 0 (the launch's choice: MOE_GPU_TILE_GROUP, or for the persistent
 * kernels about one expert's tiles); -1 when the variable says something else. Callers
 * read it once and pass it in moe_gpu_args.tile_group. */
#define MOE_GPU_TILE_GROUP 8
int moe_gpu_tile_group(void);

/* Which of the persistent down GEMM's items run as two items of half the weight rows
 * (moe_gpu_args.tail_split). */
enum moe_gpu_tail_split {
	MOE_GPU_TAIL_SPLIT_NEVER, /* MOED_GPU_TAIL_SPLIT=0, for measurements */
	MOE_GPU_TAIL_SPLIT_SHORT, /* a last round that leaves more than half of the blocks
				     idle (unset, or 1) */
	MOE_GPU_TAIL_SPLIT_ALL,   /* every item (all), for the tests */
};
/* MOED_GPU_TAIL_SPLIT as an enum moe_gpu_tail_split; -1 when the variable says something
 * else, whose message ends in MOE_GPU_TAIL_SPLIT_WANTS. Callers read it once. */
#define MOE_GPU_TAIL_SPLIT_WANTS "wants 0 (never), 1 (where the last round is at most half full) or all"
int moe_gpu_tail_split(void);

/* A 0/1 switch from the environment (MOED_GPU_DEPENDENT_LAUNCH, MOED_HIP_TRACE, ...):
 * `unset` where the variable is unset or empty, -1 where it says something else. */
int moe_gpu_env_switch(const char *name, int unset);

/* Device 0's (the backend's) compute capability as 10 * major + minor, read once; 0 on
 * AMD builds or where it cannot be read. */
int moe_gpu_compute_capability(void);

/* The kernel called `name` (as moe_gpu_kernel_name says it), or -1. */
int moe_gpu_kernel_by_name(const char *name);

/* Whether this build has the kernel and device 0 can run it: the wgmma ones need code
 * for sm_90a and a card of compute capability 9.0; mfma64 is AMD's, the others NVIDIA's. */
int moe_gpu_kernel_usable(enum moe_gpu_kernel k);

/* Why kernel k may not be forced (a fault found and not yet mended), or NULL. Callers
 * that take a forced kernel refuse it with this reason; moe_gpu_plan() never picks it. */
const char *moe_gpu_kernel_withdrawn(enum moe_gpu_kernel k);

/* The largest hidden or intermediate size the kernels take (grids span rows in their
 * second dimension, at most 65535 blocks of 8 rows). */
#define MOE_GPU_MAX_ROWS (65535u * 8u)

/* The kernel's name, for logs and the benchmark. */
const char *moe_gpu_kernel_name(enum moe_gpu_kernel k);

/* moe_gpu_args.counters: the blocks that have finished (the folded combine's last block,
 * the one-kernel decode's); the one-kernel decode's next work item (of its fetch and
 * gate/up items, and of its down items), its gate/up items that have zeroed their share
 * of y, and each tile's finished gate/up items (it runs where the tiles are at most
 * MOE_GPU_FUSED_MAX_TILES), and its fetch items done. */
enum {
	MOE_GPU_COUNTER_DONE,
	MOE_GPU_COUNTER_CLAIMED,
	MOE_GPU_COUNTER_CLAIMED_DOWN,
	MOE_GPU_COUNTER_ZEROED,
	MOE_GPU_COUNTER_FETCHED, /* the one-kernel decode's fetch items done (fetch_bytes) */
	MOE_GPU_COUNTER_TILES,
};
#define MOE_GPU_FUSED_MAX_TILES 1024u
/* Then, two words at an even place, the device sort's first pair with an id out of range
 * (moe_gpu_sort.report's form). */
#define MOE_GPU_COUNTER_SORT_BAD ((MOE_GPU_COUNTER_TILES + MOE_GPU_FUSED_MAX_TILES + 1) & ~1u)
/* Then the one-kernel decode's blocks started on each SM (by its number, modulo
 * MOE_GPU_SM_SLOTS), where its gate/up items are spread one an SM. */
#define MOE_GPU_COUNTER_SM_SLOTS (MOE_GPU_COUNTER_SORT_BAD + 2)
#define MOE_GPU_SM_SLOTS 256u
#define MOE_GPU_COUNTERS (MOE_GPU_COUNTER_SM_SLOTS + MOE_GPU_SM_SLOTS)

/* Where ids is set, the launch first sorts the pairs on the device (moe_routing.h),
 * filling moe_gpu_args' pair_of, pos_of, topk_weights, the tile table (tiles places of
 * each array) and *tile_total; the rest is scratch. It notes an id out of range on
 * counters[MOE_GPU_COUNTER_SORT_BAD] (and clears it). */
struct moe_gpu_sort {
	const uint32_t *ids;    /* [pairs] the client's expert ids, where the device reads them */
	const float *weights;   /* [pairs] the router's weights, likewise */
	/* Host memory the device writes, where an id is out of range (the sort counts that
	 * pair as expert 0's): the first such pair p and its id, as
	 * (uint64_t)(UINT32_MAX - p) << 32 | id (moe_gpu_sort_report). Left as it is where
	 * every id is in range: the caller zeroes it before the launch. */
	unsigned long long *report;
	uint32_t *words;        /* [pairs] each pair's expert and rank in its block */
	uint32_t *block_counts; /* [blocks * experts] each block's count of each expert's pairs */
	uint32_t tile, paired, chunk, blocks; /* tiles of `tile` (paired: wgmma128c's) */
};

struct moe_gpu_args {
	uint32_t tokens, topk, hidden, inter, experts;
	int io_dtype, w_dtype, activation, gated, no_combine, router_weight_on_input;
	float scale;
	enum moe_gpu_kernel kernel; /* from the plan the routing was cut for */
	const void *x;             /* [M, H] io_dtype */
	const float *topk_weights; /* [M, K] */
	uint32_t *pair_of;         /* sorted position -> m * K + k */
	uint32_t *pos_of;          /* m * K + k -> sorted position */
	struct moe_gpu_sort sort;  /* ids set: the launch first sorts the pairs (above) */
	const uint32_t *tile_total; /* set: the matrix-unit kernels read the tile count here,
				       written by the device's sort; tiles is the most there
				       can be, and sizes the grids */
	uint32_t tiles;
	uint32_t max_tile;         /* the most pairs in any tile */
	const uint32_t *tile_first, *tile_count, *tile_expert; /* per tile: sorted range, expert */
	const void *w13, *w2;      /* w_dtype */
	void *act;                 /* [P, I] scratch, P * I * 4 bytes: f32, or the 16-bit dtype */
	float *y;                  /* [P, H] scratch: f32, or io_dtype where y_io is set */
	int y_io;                  /* set by the launch: y holds io_dtype values */
	int zero_y;                /* set by the launch: the gate/up kernel zeroes y (f32) */
	int fold;                  /* set by the launch: the combine is the down GEMM's (below) */
	int follows_kernel;        /* set by the launch: its own kernel (the fetch, the device
				      sort) comes right before the first GEMM in the stream */
	uint32_t tile_group;       /* tiles whose blocks run together (matrix-unit kernels; 0:
				      the launch's choice): moe_gpu_tile_group(), read once by
				      the caller */
	int serial_launch;         /* 1: no programmatic dependent launch (the down GEMM, the
				      sort's placing, the first GEMM after the fetch or sort;
				      MOED_GPU_DEPENDENT_LAUNCH=0, read once by the caller) */
	int no_prefetch;           /* 1: decode jobs' down-GEMM weights are not prefetched into
				      L2 (MOED_GPU_L2_PREFETCH=0, read once by the caller) */
	uint32_t prefetch_down;    /* set by the launch: the gate/up blocks have L2 fetch this
				      many rows of w2 while they stream w13 (decode): the last
				      rows of the experts of the job's last tiles */
	uint32_t *counters;        /* [MOE_GPU_COUNTERS], zero between jobs (the kernels that
				      count on them leave them zero); with them the matrix-unit
				      down GEMM of a small M (decode) adds router-weighted
				      partial sums into y as [M, H] f32 and its last block writes
				      out, one kernel fewer, and a decode job's two GEMMs run as
				      one kernel (below); NULL: neither */
	int separate_decode;       /* 1: a decode job's GEMMs are two kernels, not one
				      (MOED_GPU_FUSED_DECODE=0, read once by the caller) */
	int no_spread;             /* 1: the one-kernel decode's gate/up items go to blocks in
				      the order they ask, not one an SM first
				      (MOED_GPU_SPREAD=0, read once by the caller) */
	int tail_split;            /* enum moe_gpu_tail_split: moe_gpu_tail_split(), read once
				      by the caller (0: never) */
	void *out;                 /* [M, H] or [M, K, H] io_dtype */
	/* What the kernels read that still lies in pinned host memory the device can address
	 * (the routing's packed copy, a staged x behind it): the launch brings fetch_bytes
	 * from fetch_from to fetch_to before anything reads them. The one-kernel decode does
	 * it itself, its first work items reading over the bus (no copy queued: a graph's
	 * copy node cost Qwen3-30B-A3B M = 16 about 10 µs, bench/RESULTS.md, version 18),
	 * the head in the launch's parameters (read from fetch_from when the launch is
	 * queued; version 19), where that head holds the tile table, the places are 16-byte
	 * aligned and the bytes whole 4-byte words (moe_gpu_decode_fetches); any other
	 * launch brings them first, on NVIDIA cards by a kernel reading them over the bus
	 * where they are so aligned, else by an asynchronous copy. 0 bytes: nothing to
	 * bring. */
	const void *fetch_from;
	void *fetch_to;
	size_t fetch_bytes;
};

/* Queue the job's kernels on `stream`, first moe_gpu_sort_pairs() where sort.ids is
 * set; returns the runtime's error code (0 = none). */
int moe_gpu_launch(const struct moe_gpu_args *args, void *stream);

/* Queue the device's sort of the pairs (args->sort): once a job (the benchmark then
 * replays the rest with sort.ids NULL). */
int moe_gpu_sort_pairs(const struct moe_gpu_args *args, void *stream);

/* Read a finished sort's report (moe_gpu_sort.report): whether it names a pair whose id
 * is out of range, and if so which (*pair) and its id. */
static inline int moe_gpu_sort_report(unsigned long long report, size_t *pair, int32_t *id)
{
	if (!report)
		return 0;
	*pair = UINT32_MAX - (uint32_t)(report >> 32);
	*id = (int32_t)(uint32_t)report;
	return 1;
}

/* Whether `kernel` reads its tile count from the device (moe_gpu_args.tile_total), and
 * so may run on pairs the device sorts: the matrix-unit kernels' two-kernel and
 * persistent paths. mma16 runs small jobs as one decode kernel, which takes its items
 * from the tile count at launch. */
int moe_gpu_sorts_on_device(enum moe_gpu_kernel kernel);

/* Queue a kernel that traps, losing the device: for the test of fault handling only. */
int moe_gpu_inject_fault(void *stream);

/* The matrix-unit kernels (moe_mma.hip), called by moe_gpu_launch; sets args->y_io,
 * args->zero_y, args->fold and args->prefetch_down, and args->tile_group where it is 0. */
int moe_gpu_launch_mma(struct moe_gpu_args *args, void *stream);

/* Whether moe_gpu_launch_mma runs this job (an mma16, mma32 or mma64 one whose pairs the
 * host sorted) as one decode kernel. */
int moe_gpu_decode_in_one_kernel(const struct moe_gpu_args *args);

/* Whether that kernel brings the job's fetch (moe_gpu_args.fetch_bytes) itself: where the
 * fetch's head, which its launch's parameters carry, holds the tile table. */
int moe_gpu_decode_fetches(const struct moe_gpu_args *args);

/* Whether wgmma128e's kernels can run on this card and driver (the TMA's encoder, a
 * cluster of two of them resident): the plan takes it only then, as its routing (an
 * extended cut) suits no other kernel. */
int moe_gpu_extension_runs(void);

/* AMD's (moe_mfma.hip), the same way; sets args->y_io. */
int moe_gpu_launch_mfma(struct moe_gpu_args *args, void *stream);

#ifdef __cplusplus
}
#endif

#endif
