/* SPDX-License-Identifier: MIT */
/* Shared test support: reproducible fresh randomness, a clock, the exit-code convention. */
#ifndef MOED_TESTS_HELPERS_H
#define MOED_TESTS_HELPERS_H

#include <stdint.h>

#define TEST_EXIT_SKIP 77  /* a feature the machine lacks */
#define TEST_EXIT_SETUP 99 /* the test could not set itself up */

/*
 * A seed that differs every run (from the clock and pid) unless MOED_TEST_SEED is set;
 * printed once so that a failing run can be repeated.
 */
uint64_t test_seed(void);

/* splitmix64: a small, good generator; state is the caller's. */
uint64_t test_rand(uint64_t *state);
/* Uniform in [lo, hi]. */
uint64_t test_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);
double test_rand_double(uint64_t *state); /* [0, 1) */

/* Seconds on the monotonic clock. */
double now_s(void);

#endif
