/* SPDX-License-Identifier: MIT */
/* What the host side of the GPU backend hands the kernels: device pointers and shapes. */
#ifndef MOED_HIP_MOE_KERNELS_H
#define MOED_HIP_MOE_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { MOED_GPU_F32 = 0, MOED_GPU_BF16 = 1, MOED_GPU_F16 = 2 };  /* = enum moed_dtype */
enum { MOED_GPU_SILU = 0, MOED_GPU_GELU = 1 };                    /* = enum moed_activation */

/* Pairs of one expert per tile: each weight row is read once per tile. */
#define MOE_GPU_TILE 16

struct moe_gpu_args {
	uint32_t tokens, topk, hidden, inter, experts;
	int io_dtype, w_dtype, activation, gated, no_combine, router_weight_on_input;
	float scale;
	const void *x;             /* [M, H] io_dtype */
	const float *topk_weights; /* [M, K] */
	const uint32_t *pair_of;   /* sorted position -> m * K + k */
	const uint32_t *expert_of; /* sorted position -> expert */
	const uint32_t *pos_of;    /* m * K + k -> sorted position */
	uint32_t tiles;
	uint32_t max_tile;         /* the most pairs in any tile (1..MOE_GPU_TILE) */
	const uint32_t *tile_first, *tile_count, *tile_expert; /* per tile: sorted range, expert */
	const void *w13, *w2;      /* w_dtype */
	float *act;                /* [P, I] scratch */
	float *y;                  /* [P, H] scratch */
	void *out;                 /* [M, H] or [M, K, H] io_dtype */
};

/* Queue the three kernels on `stream`; returns the runtime's error code (0 = none). */
int moe_gpu_launch(const struct moe_gpu_args *args, void *stream);

#ifdef __cplusplus
}
#endif

#endif
