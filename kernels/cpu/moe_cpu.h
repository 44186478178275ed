/* SPDX-License-Identifier: MIT */
/* The fused-MoE computation on the CPU, f32 accumulation for every dtype. */
#ifndef MOED_CPU_MOE_CPU_H
#define MOED_CPU_MOE_CPU_H

#include "backend.h"
#include "threadpool.h"

struct moe_cpu_params {
	unsigned threads;    /* at most the pool's */
	unsigned block_rows; /* weight rows per work item */
};

int moe_cpu_run(struct moed_pool *pool, const struct moe_cpu_params *params,
		const struct moed_job *job, const struct moed_weights *w,
		const struct moed_arena *arena, struct moed_error *err);

#endif
