/* SPDX-License-Identifier: MIT */
/*
 * Fused MoE on the CPU. Tokens are grouped by expert (a counting sort of the (token,
 * slot) pairs), so that each used expert's weight rows are read once per job and
 * applied to all of that expert's tokens while the row is in cache:
 *   stage 1, per (expert, block of I rows): a[j] = act(x[m_j] . w_gate) * (x[m_j] . w_up)
 *   stage 2, per (expert, block of H rows): y[j] = a[j] . w2
 *   stage 3, per block of tokens: combine the slots (or lay them out for no_combine)
 *     and convert to the I/O dtype.
 * Everything accumulates in f32.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "dot.h"
#include "moe_cpu.h"

struct item {
	uint32_t expert, row0, row1;
};

struct moe_ctx {
	const struct moed_job *job;
	const struct moed_weights *w;
	uint32_t m, k, h, i, e;
	const float *x;    /* [M, H] f32 input, router weight applied when on input */
	const float **x_of; /* sorted position -> its token's row of x */
	const float **a_of; /* sorted position -> its row of a */
	const float *tw;   /* [M, K] router weights (private copy) */
	uint32_t *pair_of; /* sorted position -> pair (m * K + k) */
	uint32_t *pos_of;  /* pair -> sorted position */
	uint32_t *start;   /* [E + 1]: each expert's range of sorted positions */
	float *a;          /* [P, I], by sorted position */
	float *y;          /* [P, H], by sorted position */
	struct item *items;
	uint32_t tokens_per_item;
	unsigned char *out;
	int failed; /* a work item could not get scratch memory */
};

static float activate(uint8_t act, float g)
{
	if (act == MOED_ACT_GELU)
		return 0.5f * g * (1.0f + erff(g * (float)M_SQRT1_2)); /* exact (erf) GELU */
	return g / (1.0f + expf(-g));
}

/*
 * out[t] = x[t] . (row `row` of a weight tensor of rows of `len` elements), for four
 * token vectors; f16 rows are converted into scratch first, f32 and bf16 read in place.
 */
static void row_dot4(uint8_t dtype, const void *base, uint64_t row, uint32_t len,
		     const float *const x[4], float out[4], float *scratch)
{
	if (dtype == MOED_DTYPE_F32) {
		moed_dot4_f32(x, (const float *)base + row * len, len, out);
	} else if (dtype == MOED_DTYPE_BF16) {
		moed_dot4_bf16(x, (const uint16_t *)base + row * len, len, out);
	} else {
		const uint16_t *src = (const uint16_t *)base + row * len;
		for (uint32_t i = 0; i < len; i++)
			scratch[i] = moed_f16_to_f32(src[i]);
		moed_dot4_f32(x, scratch, len, out);
	}
}

/* Pointers to up to four consecutive vectors j0.. of a [*, len] matrix (the last repeated). */
static void four_rows(const float *const *rows_of, uint32_t j0, uint32_t j1, const float *x[4])
{
	for (uint32_t t = 0; t < 4; t++)
		x[t] = rows_of[j0 + t < j1 ? j0 + t : j1 - 1];
}

static void gate_up(void *arg, size_t n)
{
	struct moe_ctx *c = arg;
	const struct item it = c->items[n];
	const bool gated = c->w->shape.gated;
	const uint64_t base = (uint64_t)it.expert * (gated ? 2 * c->i : c->i);
	const uint32_t j_begin = c->start[it.expert], j_end = c->start[it.expert + 1];
	float *scratch = c->w->shape.dtype == MOED_DTYPE_F16 ? malloc((size_t)c->h * sizeof(float)) : NULL;
	if (c->w->shape.dtype == MOED_DTYPE_F16 && !scratch) {
		__atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
		return;
	}
	for (uint32_t r = it.row0; r < it.row1; r++) {
		for (uint32_t j = j_begin; j < j_end; j += 4) {
			const float *x[4];
			float g[4], u[4];
			four_rows(c->x_of, j, j_end, x);
			row_dot4(c->w->shape.dtype, c->w->w13, base + r, c->h, x, g, scratch);
			if (gated)
				row_dot4(c->w->shape.dtype, c->w->w13, base + c->i + r, c->h, x, u, scratch);
			for (uint32_t t = 0; t < 4 && j + t < j_end; t++) {
				const float a = activate(c->job->activation, g[t]);
				c->a[(size_t)(j + t) * c->i + r] = gated ? a * u[t] : a;
			}
		}
	}
	free(scratch);
}

static void down(void *arg, size_t n)
{
	struct moe_ctx *c = arg;
	const struct item it = c->items[n];
	const uint32_t j_begin = c->start[it.expert], j_end = c->start[it.expert + 1];
	float *scratch = c->w->shape.dtype == MOED_DTYPE_F16 ? malloc((size_t)c->i * sizeof(float)) : NULL;
	if (c->w->shape.dtype == MOED_DTYPE_F16 && !scratch) {
		__atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
		return;
	}
	for (uint32_t r = it.row0; r < it.row1; r++) {
		for (uint32_t j = j_begin; j < j_end; j += 4) {
			const float *a[4];
			float y[4];
			four_rows(c->a_of, j, j_end, a);
			row_dot4(c->w->shape.dtype, c->w->w2, (uint64_t)it.expert * c->h + r, c->i, a, y,
				 scratch);
			for (uint32_t t = 0; t < 4 && j + t < j_end; t++)
				c->y[(size_t)(j + t) * c->h + r] = y[t];
		}
	}
	free(scratch);
}

static void store_row(uint8_t dtype, unsigned char *out, size_t elem0, const float *v, uint32_t n)
{
	if (dtype == MOED_DTYPE_F32) {
		memcpy((float *)(void *)out + elem0, v, n * sizeof(float));
		return;
	}
	uint16_t *o = (uint16_t *)(void *)out + elem0;
	if (dtype == MOED_DTYPE_BF16)
		for (uint32_t i = 0; i < n; i++)
			o[i] = moed_f32_to_bf16(v[i]);
	else
		for (uint32_t i = 0; i < n; i++)
			o[i] = moed_f32_to_f16(v[i]);
}

static void combine(void *arg, size_t n)
{
	struct moe_ctx *c = arg;
	const struct moed_job *job = c->job;
	const uint32_t m0 = (uint32_t)n * c->tokens_per_item;
	const uint32_t m1 = m0 + c->tokens_per_item < c->m ? m0 + c->tokens_per_item : c->m;
	float *acc = malloc((size_t)c->h * sizeof(float));
	if (!acc) {
		__atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
		return;
	}
	for (uint32_t m = m0; m < m1; m++) {
		if (job->no_combine) {
			for (uint32_t k = 0; k < c->k; k++) {
				uint32_t pair = m * c->k + k;
				store_row(job->dtype, c->out, (size_t)pair * c->h,
					  c->y + (size_t)c->pos_of[pair] * c->h, c->h);
			}
			continue;
		}
		memset(acc, 0, (size_t)c->h * sizeof(float));
		for (uint32_t k = 0; k < c->k; k++) {
			uint32_t pair = m * c->k + k;
			const float coef = job->router_weight_on_input ? 1.0f : c->tw[pair];
			const float *y = c->y + (size_t)c->pos_of[pair] * c->h;
			for (uint32_t h = 0; h < c->h; h++)
				acc[h] += coef * y[h];
		}
		for (uint32_t h = 0; h < c->h; h++)
			acc[h] *= job->routed_scaling_factor;
		store_row(job->dtype, c->out, (size_t)m * c->h, acc, c->h);
	}
	free(acc);
}

static size_t make_items(struct moe_ctx *c, uint32_t rows, uint32_t block, struct item *items)
{
	size_t n = 0;
	for (uint32_t e = 0; e < c->e; e++) {
		if (c->start[e] == c->start[e + 1])
			continue; /* unused expert: its weights are never touched */
		for (uint32_t r = 0; r < rows; r += block)
			items[n++] = (struct item){ e, r, r + block < rows ? r + block : rows };
	}
	return n;
}

static float load_input(uint8_t dtype, const unsigned char *base, size_t idx)
{
	uint16_t v;
	switch (dtype) {
	case MOED_DTYPE_F32: {
		float f;
		memcpy(&f, base + idx * 4, 4);
		return f;
	}
	case MOED_DTYPE_BF16:
		memcpy(&v, base + idx * 2, 2);
		return moed_bf16_to_f32(v);
	default:
		memcpy(&v, base + idx * 2, 2);
		return moed_f16_to_f32(v);
	}
}

int moe_cpu_run(struct moed_pool *pool, const struct moe_cpu_params *params,
		const struct moed_job *job, const struct moed_weights *w,
		const struct moed_arena *arena, struct moed_error *err)
{
	struct moe_ctx c = {
		.job = job, .w = w, .m = job->num_tokens, .k = job->topk, .h = job->hidden_size,
		.i = w->shape.inter_size, .e = w->shape.num_experts,
		.out = arena->base + job->output.offset,
	};
	const size_t pairs = (size_t)c.m * c.k;
	const uint32_t block = params->block_rows ? params->block_rows : 16;
	int r = 0;

	if (c.m == 0)
		return 0;

	/* Read the client's routing once into private memory: it may change under us. */
	int32_t *ids = malloc(pairs * sizeof(*ids));
	float *tw = malloc(pairs * sizeof(*tw));
	float *x = malloc((size_t)c.m * c.h * sizeof(*x));
	c.pair_of = malloc(pairs * sizeof(*c.pair_of));
	c.pos_of = malloc(pairs * sizeof(*c.pos_of));
	c.start = calloc((size_t)c.e + 1, sizeof(*c.start));
	c.a = malloc(pairs * c.i * sizeof(float));
	c.y = malloc(pairs * c.h * sizeof(float));
	c.x_of = malloc(pairs * sizeof(*c.x_of));
	c.a_of = malloc(pairs * sizeof(*c.a_of));
	const uint32_t max_rows = c.h > c.i ? c.h : c.i;
	c.items = malloc(((size_t)max_rows / block + 1) * (c.e < pairs ? c.e : pairs) * sizeof(*c.items));
	if (!ids || !tw || !x || !c.pair_of || !c.pos_of || !c.start || !c.a || !c.y || !c.items ||
	    !c.x_of || !c.a_of) {
		r = moed_error_set(err, -ENOMEM, "out of memory for a job of %u tokens", c.m);
		goto out;
	}
	memcpy(ids, arena->base + job->topk_ids.offset, pairs * sizeof(*ids));
	memcpy(tw, arena->base + job->topk_weights.offset, pairs * sizeof(*tw));
	c.tw = tw;

	for (size_t p = 0; p < pairs; p++) {
		if (ids[p] < 0 || (uint32_t)ids[p] >= c.e) {
			r = moed_error_set(err, -EINVAL, "topk_ids[%zu][%zu] = %d is outside [0, %u)",
					   p / c.k, p % c.k, ids[p], c.e);
			goto out;
		}
		c.start[ids[p] + 1]++;
	}
	for (uint32_t e = 0; e < c.e; e++)
		c.start[e + 1] += c.start[e];
	/* Counting sort, stable in pair order. */
	uint32_t *cursor = malloc(((size_t)c.e + 1) * sizeof(*cursor));
	if (!cursor) {
		r = moed_error_set(err, -ENOMEM, "out of memory for a job of %u tokens", c.m);
		goto out;
	}
	memcpy(cursor, c.start, ((size_t)c.e + 1) * sizeof(*cursor));
	for (size_t p = 0; p < pairs; p++) {
		uint32_t pos = cursor[ids[p]]++;
		c.pair_of[pos] = (uint32_t)p;
		c.pos_of[p] = pos;
	}
	free(cursor);

	const unsigned char *hidden = arena->base + job->hidden.offset;
	for (uint32_t m = 0; m < c.m; m++) {
		const float scale = job->router_weight_on_input ? tw[(size_t)m * c.k] : 1.0f;
		for (uint32_t h = 0; h < c.h; h++)
			x[(size_t)m * c.h + h] = scale * load_input(job->dtype, hidden, (size_t)m * c.h + h);
	}
	c.x = x;
	for (size_t j = 0; j < pairs; j++) {
		c.x_of[j] = x + (size_t)(c.pair_of[j] / c.k) * c.h;
		c.a_of[j] = c.a + j * c.i;
	}

	size_t n = make_items(&c, c.i, block, c.items);
	moed_pool_for(pool, params->threads, n, gate_up, &c);
	n = make_items(&c, c.h, block, c.items);
	moed_pool_for(pool, params->threads, n, down, &c);
	c.tokens_per_item = 4;
	moed_pool_for(pool, params->threads, (c.m + c.tokens_per_item - 1) / c.tokens_per_item,
		      combine, &c);
	if (c.failed)
		r = moed_error_set(err, -ENOMEM, "out of memory for a job of %u tokens", c.m);
out:
	free(ids);
	free(tw);
	free(x);
	free(c.pair_of);
	free(c.pos_of);
	free(c.start);
	free(c.a);
	free(c.y);
	free(c.items);
	free(c.x_of);
	free(c.a_of);
	return r;
}
