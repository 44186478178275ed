/* SPDX-License-Identifier: MIT */
/* A first-fit allocator of arena spans, 64-byte aligned, bookkeeping outside the arena. */
#ifndef MOED_LIBCLIENT_ARENA_ALLOC_H
#define MOED_LIBCLIENT_ARENA_ALLOC_H

#include <stdint.h>

struct arena_span {
	uint64_t offset, size;
};

struct arena_alloc {
	uint64_t size;
	struct arena_span *used; /* sorted by offset */
	unsigned n, cap;
};

void arena_alloc_init(struct arena_alloc *a, uint64_t size);
void arena_alloc_fini(struct arena_alloc *a);
/* The offset of a new span, or UINT64_MAX when there is no room (or no memory). */
uint64_t arena_alloc_take(struct arena_alloc *a, uint64_t size);
/* Give back the span starting at offset; -ENOENT if there is none. */
int arena_alloc_give(struct arena_alloc *a, uint64_t offset);

#endif
