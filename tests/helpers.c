/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

uint64_t test_seed(void)
{
	static uint64_t seed;
	static int chosen;

	if (!chosen) {
		const char *env = getenv("MOED_TEST_SEED");
		if (env && *env) {
			seed = strtoull(env, NULL, 0);
		} else {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
			       ((uint64_t)getpid() << 40);
		}
		chosen = 1;
		fprintf(stderr, "MOED_TEST_SEED=0x%" PRIx64 "\n", seed);
	}
	return seed;
}

uint64_t test_rand(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

uint64_t test_rand_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
	if (hi - lo == UINT64_MAX)
		return test_rand(s);
	return lo + test_rand(s) % (hi - lo + 1);
}

double test_rand_double(uint64_t *s)
{
	return (double)(test_rand(s) >> 11) * 0x1.0p-53;
}

double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
