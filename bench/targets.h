/* SPDX-License-Identifier: MIT */
/*
 * TARGETS.md's GPU rows, for the benchmarks that time them (moed-gpu-bench, the kernels;
 * moed-daemon-bench -b hip, the whole path): the three model shapes, the token counts,
 * the anchor's time on an H100 at each, and the geometric means the targets are set on.
 */
#ifndef MOED_BENCH_TARGETS_H
#define MOED_BENCH_TARGETS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#define TARGET_ROWS 7   /* token counts a model */
#define TARGET_MODELS 3 /* model shapes */

struct target_model {
	const char *name;
	uint32_t e, k, h, i;                /* experts, top-k, hidden, intermediate */
	double anchor_us[TARGET_ROWS];      /* at target_ms[] tokens */
};

static const uint32_t target_ms[TARGET_ROWS] = { 1, 4, 16, 64, 256, 1024, 4096 };

static const struct target_model target_models[TARGET_MODELS] = {
	{ "Mixtral-8x7B", 8, 2, 4096, 14336, { 262, 485, 944, 977, 1073, 1818, 5518 } },
	{ "Qwen3-30B-A3B", 128, 8, 2048, 768, { 49, 117, 283, 408, 449, 536, 971 } },
	{ "DeepSeek-V3", 256, 8, 7168, 2048, { 261, 935, 2812, 6222, 7455, 7938, 10189 } },
};

/* The geometric means of floor over time that TARGETS.md asks for: over every row, the
 * rows of M <= 64 and those of M >= 256. */
struct target_means {
	double log_all, log_small, log_big;
	int all, small, big;
};

static inline void target_means_add(struct target_means *t, uint32_t m, double floor_over_time)
{
	const double l = log(floor_over_time);
	t->log_all += l, t->all++;
	if (m <= 64)
		t->log_small += l, t->small++;
	if (m >= 256)
		t->log_big += l, t->big++;
}

/* One group's mean and its target, or that no row of the group was timed (a benchmark
 * asked for some rows only). */
static inline void target_mean_print(const char *group, int rows, double log_sum, const char *target)
{
	if (rows)
		printf("%s %.3f (target %s)", group, exp(log_sum / rows), target);
	else
		printf("%s none timed (target %s)", group, target);
}

/* One line: "geometric mean of `what` over the N rows: all ... M >= 256 ..." */
static inline void target_means_print(const struct target_means *t, const char *indent, const char *what)
{
	printf("%sgeometric mean of %s over the %d rows: ", indent, what, t->all);
	target_mean_print("all", t->all, t->log_all, "0.90");
	target_mean_print(", M <= 64", t->small, t->log_small, "0.95");
	target_mean_print(", M >= 256", t->big, t->log_big, "0.85");
	printf("\n");
}

#endif
