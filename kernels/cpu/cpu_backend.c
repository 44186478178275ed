/* SPDX-License-Identifier: MIT */
/* The CPU backend: always built, the default where there is no GPU. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "moe_cpu.h"
#include "threadpool.h"

#define CPU_MAX_THREADS 256

struct moed_backend {
	struct moed_pool *pool;
	uint32_t caps;
	struct moed_kwarg_spec specs[2];
	struct moed_kwargs_schema schema;
};

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
	*out = b;
	return 0;
}

static void cpu_destroy(struct moed_backend *b)
{
	if (!b)
		return;
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
};
