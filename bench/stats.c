/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdlib.h>

#include "stats.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static double at(const uint64_t *s, size_t n, double q)
{
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return (double)s[i < n ? i : n - 1];
}

struct percentiles percentiles_of(uint64_t *s, size_t n)
{
	struct percentiles p = { 0, 0, 0 };
	if (!n)
		return p;
	qsort(s, n, sizeof(*s), cmp_u64);
	p.p50 = at(s, n, 0.50);
	p.p99 = at(s, n, 0.99);
	p.p999 = at(s, n, 0.999);
	return p;
}
