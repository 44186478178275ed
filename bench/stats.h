/* SPDX-License-Identifier: MIT */
#ifndef MOED_BENCH_STATS_H
#define MOED_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>

struct percentiles {
	double p50, p99, p999; /* nanoseconds */
};

/* Sorts samples in place. */
struct percentiles percentiles_of(uint64_t *samples_ns, size_t n);

#include "clock.h"
#define now_ns moed_now_ns
#define cpu_relax moed_cpu_relax

#endif
