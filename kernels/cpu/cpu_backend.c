/* SPDX-License-Identifier: MIT */
/*
 * The CPU backend: always built, the default where there is no GPU. Asynchronous jobs
 * (submit/poll) run one at a time, in the order submitted, on a worker thread of the
 * backend, which spreads each over the thread pool like run() does.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "moe_cpu.h"
#include "threadpool.h"

#define CPU_MAX_THREADS 256

/* A client's context: its one job in flight. */
struct cpu_client {
	struct cpu_client *next; /* in the worker's queue */
	const struct moed_job *job;
	const struct moed_weights *w;
	const struct moed_kwargs *kwargs;
	const struct moed_arena *arena;
	int done; /* atomic: the worker finished the job; status and err are set */
	int status;
	struct moed_error err;
};

struct moed_backend {
	struct moed_pool *pool;
	uint32_t caps;
	struct moed_kwarg_spec specs[2];
	struct moed_kwargs_schema schema;

	/* the worker that runs submitted jobs */
	pthread_t worker;
	bool worker_up;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct cpu_client *queue, **queue_tail; /* under lock */
	bool stop;                              /* under lock */
	void (*notify)(void *arg); /* under lock */
	void *notify_arg;
};

static int cpu_run(struct moed_backend *b, const struct moed_job *job, const struct moed_weights *w,
		   const struct moed_kwargs *kwargs, const struct moed_arena *arena,
		   struct moed_error *err);

static void *cpu_worker(void *arg)
{
	struct moed_backend *b = arg;
	pthread_mutex_lock(&b->lock);
	for (;;) {
		while (!b->queue && !b->stop)
			pthread_cond_wait(&b->wake, &b->lock);
		struct cpu_client *c = b->queue;
		if (!c)
			break;
		b->queue = c->next;
		if (!b->queue)
			b->queue_tail = &b->queue;
		pthread_mutex_unlock(&b->lock);
		c->err.msg[0] = 0;
		c->status = cpu_run(b, c->job, c->w, c->kwargs, c->arena, &c->err);
		pthread_mutex_lock(&b->lock); /* set_notify waits for a notify under way */
		__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
		if (b->notify)
			b->notify(b->notify_arg);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

static int cpu_probe(struct moed_error *err)
{
	(void)err;
	return 0;
}

static int cpu_create(const struct moed_backend_config *cfg, struct moed_backend **out,
		      struct moed_error *err)
{
	struct moed_backend *b = calloc(1, sizeof(*b));
	if (!b)
		return moed_error_set(err, -ENOMEM, "out of memory");

	unsigned threads = cfg->threads;
	if (!threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (unsigned)n : 1;
	}
	if (threads > CPU_MAX_THREADS)
		threads = CPU_MAX_THREADS;
	int r = moed_pool_create(threads, &b->pool);
	if (r < 0) {
		free(b);
		return moed_error_set(err, r, "cannot start %u CPU worker threads", threads);
	}
	b->caps = (MOED_CAP_NO_COMBINE | MOED_CAP_ROUTER_WEIGHT_ON_INPUT | MOED_CAP_GATED |
		   MOED_CAP_NOT_GATED) & ~cfg->withhold;
	b->specs[0] = (struct moed_kwarg_spec){
		.name = "num_threads", .type = MOED_KWARG_INT64, .min = 1, .max = threads,
		.help = "worker threads for this job (at most the daemon's --threads)",
	};
	b->specs[1] = (struct moed_kwarg_spec){
		.name = "block_rows", .type = MOED_KWARG_INT64, .min = 1, .max = 65536,
		.help = "weight rows per work item (default 16)",
	};
	b->schema = (struct moed_kwargs_schema){ b->specs, 2 };
	b->queue_tail = &b->queue;
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->wake, NULL);
	*out = b;
	return 0;
}

static void cpu_destroy(struct moed_backend *b)
{
	if (!b)
		return;
	if (b->worker_up) {
		pthread_mutex_lock(&b->lock);
		b->stop = true;
		pthread_cond_signal(&b->wake);
		pthread_mutex_unlock(&b->lock);
		pthread_join(b->worker, NULL);
	}
	pthread_cond_destroy(&b->wake);
	pthread_mutex_destroy(&b->lock);
	moed_pool_destroy(b->pool);
	free(b);
}

static const struct moed_kwargs_schema *cpu_schema(const struct moed_backend *b)
{
	return &b->schema;
}

static uint32_t cpu_caps(const struct moed_backend *b)
{
	return b->caps;
}

static uint32_t cpu_dtypes(const struct moed_backend *b)
{
	(void)b;
	return (1u << MOED_DTYPE_F32) | (1u << MOED_DTYPE_BF16) | (1u << MOED_DTYPE_F16);
}

static uint32_t cpu_activations(const struct moed_backend *b)
{
	(void)b;
	return (1u << MOED_ACT_SILU) | (1u << MOED_ACT_GELU);
}

static int cpu_weights_alloc(struct moed_backend *b, struct moed_weights *w, struct moed_error *err)
{
	(void)b;
	w->w13_bytes = moed_weights_tensor_bytes(&w->shape, MOED_TENSOR_W13);
	w->w2_bytes = moed_weights_tensor_bytes(&w->shape, MOED_TENSOR_W2);
	w->w13 = malloc(w->w13_bytes);
	w->w2 = malloc(w->w2_bytes);
	if (!w->w13 || !w->w2) {
		free(w->w13);
		free(w->w2);
		w->w13 = w->w2 = NULL;
		return moed_error_set(err, -ENOMEM, "cannot allocate %llu bytes of weights",
				      (unsigned long long)(w->w13_bytes + w->w2_bytes));
	}
	return 0;
}

static int cpu_weights_write(struct moed_backend *b, struct moed_weights *w, unsigned tensor,
			     uint64_t offset, const void *src, uint64_t len, struct moed_error *err)
{
	(void)b;
	unsigned char *dst = tensor == MOED_TENSOR_W13 ? w->w13 : w->w2;
	uint64_t size = tensor == MOED_TENSOR_W13 ? w->w13_bytes : w->w2_bytes;
	if (offset > size || len > size - offset)
		return moed_error_set(err, -EINVAL, "upload [%llu, +%llu) lies outside the %llu-byte tensor",
				      (unsigned long long)offset, (unsigned long long)len,
				      (unsigned long long)size);
	memcpy(dst + offset, src, len);
	return 0;
}

static void cpu_weights_free(struct moed_backend *b, struct moed_weights *w)
{
	(void)b;
	free(w->w13);
	free(w->w2);
	w->w13 = w->w2 = NULL;
}

static int cpu_run(struct moed_backend *b, const struct moed_job *job, const struct moed_weights *w,
		   const struct moed_kwargs *kwargs, const struct moed_arena *arena,
		   struct moed_error *err)
{
	struct moe_cpu_params params = { .threads = moed_pool_threads(b->pool), .block_rows = 16 };
	const struct moed_kwarg *kw;

	if ((kw = moed_kwargs_find(kwargs, "num_threads")))
		params.threads = (unsigned)kw->v.i;
	if ((kw = moed_kwargs_find(kwargs, "block_rows")))
		params.block_rows = (unsigned)kw->v.i;
	return moe_cpu_run(b->pool, &params, job, w, arena, err);
}

static int cpu_client_open(struct moed_backend *b, const struct moed_arena *arena, void **ctx,
			   struct moed_error *err)
{
	(void)arena;
	pthread_mutex_lock(&b->lock); /* the worker starts with the first client */
	int r = 0;
	if (!b->worker_up) {
		r = -pthread_create(&b->worker, NULL, cpu_worker, b);
		b->worker_up = r == 0;
	}
	pthread_mutex_unlock(&b->lock);
	if (r < 0)
		return moed_error_set(err, r, "cannot start the CPU job thread");
	struct cpu_client *c = calloc(1, sizeof(*c));
	if (!c)
		return moed_error_set(err, -ENOMEM, "out of memory");
	*ctx = c;
	return 0;
}

static void cpu_client_close(struct moed_backend *b, void *ctx)
{
	(void)b;
	free(ctx);
}

static int cpu_submit(struct moed_backend *b, void *ctx, const struct moed_job *job,
		      const struct moed_weights *w, const struct moed_kwargs *kwargs,
		      const struct moed_arena *arena, struct moed_error *err)
{
	(void)err;
	struct cpu_client *c = ctx;
	c->job = job;
	c->w = w;
	c->kwargs = kwargs;
	c->arena = arena;
	c->done = 0;
	c->next = NULL;
	pthread_mutex_lock(&b->lock);
	*b->queue_tail = c;
	b->queue_tail = &c->next;
	pthread_cond_signal(&b->wake);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static int cpu_poll(struct moed_backend *b, void *ctx, struct moed_error *err)
{
	(void)b;
	struct cpu_client *c = ctx;
	if (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE))
		return 0;
	if (c->status < 0) {
		*err = c->err;
		return c->status;
	}
	return 1;
}

static void cpu_set_notify(struct moed_backend *b, void (*notify)(void *arg), void *arg)
{
	pthread_mutex_lock(&b->lock);
	b->notify = notify;
	b->notify_arg = arg;
	pthread_mutex_unlock(&b->lock);
}

const struct moed_backend_ops moed_cpu_backend = {
	.name = "cpu",
	.probe = cpu_probe,
	.create = cpu_create,
	.destroy = cpu_destroy,
	.schema = cpu_schema,
	.caps = cpu_caps,
	.dtypes = cpu_dtypes,
	.activations = cpu_activations,
	.weights_alloc = cpu_weights_alloc,
	.weights_write = cpu_weights_write,
	.weights_free = cpu_weights_free,
	.run = cpu_run,
	.client_open = cpu_client_open,
	.client_close = cpu_client_close,
	.submit = cpu_submit,
	.poll = cpu_poll,
	.set_notify = cpu_set_notify,
	.notify_late_us = 0, /* the worker says at once */
};
