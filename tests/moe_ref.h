/* SPDX-License-Identifier: MIT */
/*
 * The tests' own fused-MoE reference: f64 throughout, written from DESIGN.md and
 * sharing no code with the backends. Also random problem generation and the
 * relative-Frobenius comparison of TARGETS.md.
 */
#ifndef MOED_TESTS_MOE_REF_H
#define MOED_TESTS_MOE_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ref_problem {
	uint32_t m, k, h, i, e;
	bool gated, no_combine, router_weight_on_input;
	uint8_t act;      /* 0 silu, 1 gelu */
	uint8_t io_dtype; /* 0 f32, 1 bf16, 2 f16 */
	uint8_t w_dtype;
	float scale;
	void *x;       /* [M, H] io_dtype */
	int32_t *ids;  /* [M, K] */
	float *tw;     /* [M, K] */
	void *w13;     /* [E, 2I or I, H] w_dtype */
	void *w2;      /* [E, H, I] w_dtype */
};

size_t ref_dtype_size(uint8_t dtype);
double ref_load(uint8_t dtype, const void *base, size_t idx);
void ref_store(uint8_t dtype, void *base, size_t idx, double v);

/* Fill a problem's tensors with fresh random data (allocating them); routing is the
 * softmax of Gaussian logits, top-k distinct experts, renormalised. */
void ref_problem_fill(struct ref_problem *p, uint64_t *rng);
/* Weights only, drawn uniformly with a Gaussian's variance: fast enough for billions. */
void ref_problem_fill_weights_fast(struct ref_problem *p, uint64_t *rng);
/* Fresh inputs and routing only (x, ids, tw), keeping the weights. */
void ref_problem_fill_inputs(struct ref_problem *p, uint64_t *rng);
void ref_problem_free_inputs(struct ref_problem *p);
void ref_problem_free(struct ref_problem *p);

size_t ref_out_elems(const struct ref_problem *p);

/* The reference output, [M, H] or [M, K, H], in f64. */
void ref_moe(const struct ref_problem *p, double *out);
/* The same for the n listed tokens only: [n, H] or [n, K, H]. */
void ref_moe_tokens(const struct ref_problem *p, const uint32_t *tokens, uint32_t n, double *out);

/* Elements of out that are NaN or infinite (poison left unwritten shows here). */
size_t ref_count_nonfinite(uint8_t dtype, const void *out, size_t n);

/* The TARGETS.md bound for an I/O dtype. */
double ref_tolerance(uint8_t io_dtype);

/*
 * ||out - ref|| / ||ref||, reading out in the I/O dtype. A non-finite output element
 * where ref is finite makes the result +inf. For an all-zero ref, the absolute norm.
 */
double ref_rel_error(uint8_t dtype, const void *out, const double *ref, size_t n);

/* Poison a buffer so that unwritten elements fail the comparison (NaN bytes). */
void ref_poison(void *buf, size_t bytes);

#endif
