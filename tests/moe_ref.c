/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "moe_ref.h"

size_t ref_dtype_size(uint8_t dtype)
{
	return dtype == 0 ? 4 : 2;
}

/* bf16 is the top half of an f32; f16 goes through the compiler's _Float16. */
double ref_load(uint8_t dtype, const void *base, size_t idx)
{
	if (dtype == 0)
		return ((const float *)base)[idx];
	uint16_t v = ((const uint16_t *)base)[idx];
	if (dtype == 1) {
		uint32_t u = (uint32_t)v << 16;
		float f;
		memcpy(&f, &u, 4);
		return f;
	}
	_Float16 hf;
	memcpy(&hf, &v, 2);
	return (double)hf;
}

void ref_store(uint8_t dtype, void *base, size_t idx, double v)
{
	if (dtype == 0) {
		((float *)base)[idx] = (float)v;
	} else if (dtype == 1) {
		float f = (float)v;
		uint32_t u;
		memcpy(&u, &f, 4);
		((uint16_t *)base)[idx] = (uint16_t)(u >> 16); /* truncation: any bf16 will do */
	} else {
		_Float16 hf = (_Float16)v;
		memcpy((uint16_t *)base + idx, &hf, 2);
	}
}

static double gaussian(uint64_t *rng)
{
	double u1 = test_rand_double(rng), u2 = test_rand_double(rng);
	return sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2);
}

static void *random_tensor(uint8_t dtype, size_t n, double scale, uint64_t *rng)
{
	void *t = malloc(n * ref_dtype_size(dtype) + 1);
	for (size_t i = 0; i < n; i++)
		ref_store(dtype, t, i, gaussian(rng) * scale);
	return t;
}

void ref_problem_fill(struct ref_problem *p, uint64_t *rng)
{
	ref_problem_fill_weights_fast(p, rng);
	ref_problem_fill_inputs(p, rng);
}

/* Uniform in [-a, a), a = sqrt(3) * scale: the variance of a Gaussian of that scale. */
static void *uniform_tensor(uint8_t dtype, size_t n, double scale, uint64_t *rng)
{
	void *t = malloc(n * ref_dtype_size(dtype) + 1);
	const double a = 1.7320508075688772 * scale;
	uint64_t s = test_rand(rng) | 1;
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64: cheap for billions */
		ref_store(dtype, t, i, ((double)(s >> 11) * 0x1.0p-53 * 2 - 1) * a);
	}
	return t;
}

void ref_problem_fill_weights_fast(struct ref_problem *p, uint64_t *rng)
{
	const size_t rows = p->gated ? 2 * (size_t)p->i : p->i;
	/* Weights scaled like a trained layer's (~1/sqrt(fan-in)) keep activations O(1). */
	p->w13 = uniform_tensor(p->w_dtype, (size_t)p->e * rows * p->h, 1.0 / sqrt(p->h), rng);
	p->w2 = uniform_tensor(p->w_dtype, (size_t)p->e * p->h * p->i, 1.0 / sqrt(p->i), rng);
}

void ref_problem_fill_inputs(struct ref_problem *p, uint64_t *rng)
{
	p->x = random_tensor(p->io_dtype, (size_t)p->m * p->h, 1.0, rng);
	p->ids = malloc((size_t)p->m * p->k * sizeof(int32_t) + 1);
	p->tw = malloc((size_t)p->m * p->k * sizeof(float) + 1);

	double *logits = malloc(p->e * sizeof(double));
	for (uint32_t m = 0; m < p->m; m++) {
		double max = -INFINITY, total = 0;
		for (uint32_t e = 0; e < p->e; e++) {
			logits[e] = gaussian(rng);
			max = fmax(max, logits[e]);
		}
		for (uint32_t e = 0; e < p->e; e++)
			logits[e] = exp(logits[e] - max);
		for (uint32_t k = 0; k < p->k; k++) { /* top-k by repeated arg-max */
			uint32_t best = 0;
			for (uint32_t e = 1; e < p->e; e++)
				if (logits[e] > logits[best])
					best = e;
			p->ids[m * p->k + k] = (int32_t)best;
			p->tw[m * p->k + k] = (float)logits[best];
			total += logits[best];
			logits[best] = -1;
		}
		for (uint32_t k = 0; k < p->k; k++)
			p->tw[m * p->k + k] = (float)(p->tw[m * p->k + k] / total);
	}
	free(logits);
}

void ref_problem_free_inputs(struct ref_problem *p)
{
	free(p->x);
	free(p->ids);
	free(p->tw);
	p->x = NULL;
	p->ids = NULL;
	p->tw = NULL;
}

void ref_problem_free(struct ref_problem *p)
{
	ref_problem_free_inputs(p);
	free(p->w13);
	free(p->w2);
}

size_t ref_out_elems(const struct ref_problem *p)
{
	return (size_t)p->m * (p->no_combine ? p->k : 1) * p->h;
}

static double act(uint8_t a, double g)
{
	return a == 1 ? 0.5 * g * (1.0 + erf(g / sqrt(2.0))) : g / (1.0 + exp(-g));
}

void ref_moe(const struct ref_problem *p, double *out)
{
	uint32_t *all = malloc(p->m * sizeof(uint32_t) + 4);
	for (uint32_t m = 0; m < p->m; m++)
		all[m] = m;
	ref_moe_tokens(p, all, p->m, out);
	free(all);
}

void ref_moe_tokens(const struct ref_problem *p, const uint32_t *tokens, uint32_t n, double *out)
{
	const size_t rows = p->gated ? 2 * (size_t)p->i : p->i;
	const size_t per = (size_t)(p->no_combine ? p->k : 1) * p->h;
	double *a = malloc(p->i * sizeof(double) + 1), *y = malloc(p->h * sizeof(double) + 1);

	memset(out, 0, n * per * sizeof(double));
	for (uint32_t t = 0; t < n; t++) {
		const uint32_t m = tokens[t];
		double *o = out + t * per;
		for (uint32_t k = 0; k < p->k; k++) {
			const uint32_t e = (uint32_t)p->ids[m * p->k + k];
			const double w = p->tw[m * p->k + k];
			const double in_scale = p->router_weight_on_input ? w : 1.0;
			for (uint32_t r = 0; r < p->i; r++) {
				double g = 0, u = 0;
				for (uint32_t h = 0; h < p->h; h++) {
					double x = in_scale * ref_load(p->io_dtype, p->x, (size_t)m * p->h + h);
					g += x * ref_load(p->w_dtype, p->w13, ((size_t)e * rows + r) * p->h + h);
					if (p->gated)
						u += x * ref_load(p->w_dtype, p->w13,
								  ((size_t)e * rows + p->i + r) * p->h + h);
				}
				a[r] = p->gated ? act(p->act, g) * u : act(p->act, g);
			}
			for (uint32_t h = 0; h < p->h; h++) {
				double s = 0;
				for (uint32_t r = 0; r < p->i; r++)
					s += a[r] * ref_load(p->w_dtype, p->w2, ((size_t)e * p->h + h) * p->i + r);
				y[h] = s;
			}
			for (uint32_t h = 0; h < p->h; h++) {
				if (p->no_combine)
					o[(size_t)k * p->h + h] = y[h];
				else
					o[h] += p->scale * (p->router_weight_on_input ? 1.0 : w) * y[h];
			}
		}
	}
	free(a);
	free(y);
}

double ref_tolerance(uint8_t io_dtype)
{
	return io_dtype == 0 ? 1e-5 : io_dtype == 1 ? 1e-2 : 2e-3;
}

double ref_rel_error(uint8_t dtype, const void *out, const double *ref, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		double o = ref_load(dtype, out, i);
		if (!isfinite(o) && isfinite(ref[i]))
			return INFINITY;
		num += (o - ref[i]) * (o - ref[i]);
		den += ref[i] * ref[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

size_t ref_count_nonfinite(uint8_t dtype, const void *out, size_t n)
{
	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += !isfinite(ref_load(dtype, out, i));
	return bad;
}

void ref_poison(void *buf, size_t bytes)
{
	memset(buf, 0xff, bytes); /* all-ones is NaN in f32, bf16 and f16 */
}
