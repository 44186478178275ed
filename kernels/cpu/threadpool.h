/* SPDX-License-Identifier: MIT */
/* A fixed set of worker threads that share out the items of one parallel loop. */
#ifndef MOED_CPU_THREADPOOL_H
#define MOED_CPU_THREADPOOL_H

#include <stddef.h>

struct moed_pool;

/* `threads` counts the caller: a pool of 1 runs everything on the calling thread. */
int moed_pool_create(unsigned threads, struct moed_pool **out);
void moed_pool_destroy(struct moed_pool *p);
unsigned moed_pool_threads(const struct moed_pool *p);

/*
 * Call fn(arg, i) for every i in [0, n), on at most `use` threads (the caller is one),
 * and return when all calls have returned. Not reentrant: one loop at a time.
 */
void moed_pool_for(struct moed_pool *p, unsigned use, size_t n, void (*fn)(void *arg, size_t i),
		   void *arg);

#endif
