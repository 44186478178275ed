/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "threadpool.h"

struct moed_pool {
	pthread_mutex_t lock;
	pthread_cond_t start; /* workers wait here for a new loop */
	pthread_cond_t done;  /* the caller waits here for the workers to finish */
	unsigned nthreads;    /* including the caller */
	pthread_t *workers;
	unsigned spawned;

	/* the current loop, protected by lock except `next`, which is atomic */
	unsigned long generation;
	unsigned enlisted; /* workers taking part in this loop */
	unsigned busy;     /* of those, not yet finished */
	bool stop;
	size_t n, next;
	void (*fn)(void *, size_t);
	void *arg;
};

static void drain(struct moed_pool *p)
{
	for (;;) {
		size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
		if (i >= p->n)
			return;
		p->fn(p->arg, i);
	}
}

static void *worker(void *opaque)
{
	struct moed_pool *p = opaque;
	unsigned long seen = 0;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stop && (p->generation == seen || p->enlisted == 0))
			pthread_cond_wait(&p->start, &p->lock);
		if (p->stop)
			break;
		seen = p->generation;
		p->enlisted--;
		pthread_mutex_unlock(&p->lock);
		drain(p);
		pthread_mutex_lock(&p->lock);
		if (--p->busy == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int moed_pool_create(unsigned threads, struct moed_pool **out)
{
	struct moed_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->nthreads = threads ? threads : 1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->start, NULL);
	pthread_cond_init(&p->done, NULL);
	p->workers = calloc(p->nthreads, sizeof(*p->workers));
	if (!p->workers) {
		moed_pool_destroy(p);
		return -ENOMEM;
	}
	for (unsigned i = 1; i < p->nthreads; i++) {
		int r = pthread_create(&p->workers[p->spawned], NULL, worker, p);
		if (r) {
			moed_pool_destroy(p);
			return -r;
		}
		p->spawned++;
	}
	*out = p;
	return 0;
}

void moed_pool_destroy(struct moed_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->start);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->spawned; i++)
		pthread_join(p->workers[i], NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->start);
	pthread_mutex_destroy(&p->lock);
	free(p->workers);
	free(p);
}

unsigned moed_pool_threads(const struct moed_pool *p)
{
	return p->nthreads;
}

void moed_pool_for(struct moed_pool *p, unsigned use, size_t n, void (*fn)(void *, size_t),
		   void *arg)
{
	if (use == 0 || use > p->nthreads)
		use = p->nthreads;
	if (use > n)
		use = (unsigned)(n ? n : 1);

	p->fn = fn;
	p->arg = arg;
	p->n = n;
	__atomic_store_n(&p->next, 0, __ATOMIC_RELAXED);
	if (use > 1) {
		pthread_mutex_lock(&p->lock);
		p->enlisted = p->busy = use - 1;
		p->generation++;
		pthread_cond_broadcast(&p->start);
		pthread_mutex_unlock(&p->lock);
	}
	drain(p);
	if (use > 1) {
		pthread_mutex_lock(&p->lock);
		while (p->busy)
			pthread_cond_wait(&p->done, &p->lock);
		p->enlisted = 0;
		pthread_mutex_unlock(&p->lock);
	}
}
