/* SPDX-License-Identifier: MIT */
/* The IPC floors the benchmarks compare against, each between two pinned processes. */
#ifndef MOED_BENCH_IPC_FLOOR_H
#define MOED_BENCH_IPC_FLOOR_H

#include "stats.h"

/* Pin the calling process (all its future threads) to one CPU, if it exists. */
void bench_pin(int cpu);

/* Round trip of one cache line ping-ponged through shared memory. */
struct percentiles floor_cacheline(long iterations, uint64_t *scratch);

/*
 * Round trip where the responder spins on shared memory and answers with write() to an
 * eventfd, on which the client sleeps in read(): the wake-up that a sleeping client of
 * the daemon pays, without the daemon.
 */
struct percentiles floor_eventfd_wake(long iterations, uint64_t *scratch);

#endif
