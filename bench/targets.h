/* SPDX-License-Identifier: MIT */
/*
 * TARGETS.md's GPU rows, for the benchmarks that time them (moed-gpu-bench, the kernels;
 * moed-daemon-bench -b hip, the whole path): the three model shapes, the token counts,
 * and the anchor's time on an H100 at each.
 */
#ifndef MOED_BENCH_TARGETS_H
#define MOED_BENCH_TARGETS_H

#include <stdint.h>

#define TARGET_ROWS 7 /* token counts a model */

struct target_model {
	const char *name;
	uint32_t e, k, h, i;                /* experts, top-k, hidden, intermediate */
	double anchor_us[TARGET_ROWS];      /* at target_ms[] tokens */
};

static const uint32_t target_ms[TARGET_ROWS] = { 1, 4, 16, 64, 256, 1024, 4096 };

static const struct target_model target_models[3] = {
	{ "Mixtral-8x7B", 8, 2, 4096, 14336, { 262, 485, 944, 977, 1073, 1818, 5518 } },
	{ "Qwen3-30B-A3B", 128, 8, 2048, 768, { 49, 117, 283, 408, 449, 536, 971 } },
	{ "DeepSeek-V3", 256, 8, 7168, 2048, { 261, 935, 2812, 6222, 7455, 7938, 10189 } },
};

#endif
