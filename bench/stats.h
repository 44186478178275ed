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

static inline uint64_t now_ns(void);

#include <time.h>
static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

#endif
