/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arena_alloc.h"

#define ALIGN 64u

void arena_alloc_init(struct arena_alloc *a, uint64_t size)
{
	memset(a, 0, sizeof(*a));
	a->size = size;
}

void arena_alloc_fini(struct arena_alloc *a)
{
	free(a->used);
	memset(a, 0, sizeof(*a));
}

uint64_t arena_alloc_take(struct arena_alloc *a, uint64_t size)
{
	if (size == 0)
		size = 1;
	if (size > a->size)
		return UINT64_MAX;
	size = (size + ALIGN - 1) / ALIGN * ALIGN;
	if (a->n == a->cap) {
		unsigned nc = a->cap ? 2 * a->cap : 32;
		struct arena_span *nu = realloc(a->used, nc * sizeof(*nu));
		if (!nu)
			return UINT64_MAX;
		a->used = nu;
		a->cap = nc;
	}
	uint64_t at = 0;
	unsigned i = 0;
	for (; i <= a->n; i++) {
		uint64_t end = i < a->n ? a->used[i].offset : a->size;
		if (end >= at && end - at >= size)
			break;
		if (i < a->n)
			at = a->used[i].offset + a->used[i].size;
	}
	if (i > a->n)
		return UINT64_MAX;
	memmove(&a->used[i + 1], &a->used[i], (a->n - i) * sizeof(*a->used));
	a->used[i] = (struct arena_span){ at, size };
	a->n++;
	return at;
}

int arena_alloc_give(struct arena_alloc *a, uint64_t offset)
{
	unsigned lo = 0, hi = a->n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (a->used[mid].offset < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == a->n || a->used[lo].offset != offset)
		return -ENOENT;
	memmove(&a->used[lo], &a->used[lo + 1], (a->n - lo - 1) * sizeof(*a->used));
	a->n--;
	return 0;
}
