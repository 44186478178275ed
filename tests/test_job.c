/* SPDX-License-Identifier: MIT */
/*
 * Descriptor validation: random well-formed jobs are accepted with every field carried
 * over; each way a client can get a descriptor wrong is refused with its message and
 * nothing about the job is trusted.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "check_run.h"
#include "helpers.h"
#include "job_validate.h"
#include "moed/kwargs_abi.h"

static const uint64_t arena = 1 << 24;
static struct moed_error err;
static struct moed_job job;

/* The test's own size arithmetic for a job's buffers. */
static uint64_t elem_size(unsigned dtype) { return dtype == MOED_DTYPE_F32 ? 4 : 2; }

/* A well-formed random MoE job whose buffers are laid out back to back. */
static struct moed_sqe random_job(uint64_t *s)
{
	struct moed_sqe q = {
		.opcode = MOED_OP_MOE,
		.dtype = (uint8_t)test_rand_range(s, 0, 2),
		.activation = (uint8_t)test_rand_range(s, 0, 1),
		.user_data = test_rand(s),
		.weights_id = (uint32_t)test_rand(s),
		.num_tokens = (uint32_t)test_rand_range(s, 0, 64),
		.topk = (uint32_t)test_rand_range(s, 1, 8),
		.hidden_size = (uint32_t)test_rand_range(s, 1, 512),
		.routed_scaling_factor = (float)test_rand_double(s) * 3,
	};
	if (test_rand(s) & 1)
		q.flags |= MOED_SQE_F_NO_COMBINE;
	if (test_rand(s) & 1)
		q.flags |= MOED_SQE_F_NOT_GATED;
	if (q.topk == 1 && (test_rand(s) & 1))
		q.flags |= MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT;

	const uint64_t m = q.num_tokens, k = q.topk, h = q.hidden_size, d = elem_size(q.dtype);
	uint64_t at = test_rand_range(s, 0, 16) * 64;
	struct moed_buf *bufs[] = { &q.hidden, &q.topk_ids, &q.topk_weights, &q.output, &q.kwargs };
	const uint64_t lens[] = { m * h * d, m * k * 4, m * k * 4,
				  (q.flags & MOED_SQE_F_NO_COMBINE ? m * k * h : m * h) * d,
				  test_rand_range(s, 0, 4) * 8 };
	for (int i = 0; i < 5; i++) {
		bufs[i]->offset = at;
		bufs[i]->length = lens[i];
		at += (lens[i] + 63) / 64 * 64;
	}
	return q;
}

START_TEST(accepts_random_jobs)
{
	uint64_t s = test_seed() + (uint64_t)_i;
	for (int i = 0; i < 2000; i++) {
		struct moed_sqe q = random_job(&s);
		ck_assert_msg(moed_job_from_sqe(&q, arena, &job, &err) == 0, "refused: %s", err.msg);
		ck_assert_uint_eq(job.user_data, q.user_data);
		ck_assert_uint_eq(job.num_tokens, q.num_tokens);
		ck_assert_uint_eq(job.topk, q.topk);
		ck_assert_uint_eq(job.hidden_size, q.hidden_size);
		ck_assert_uint_eq(job.weights_id, q.weights_id);
		ck_assert_int_eq(job.no_combine, !!(q.flags & MOED_SQE_F_NO_COMBINE));
		ck_assert_int_eq(job.gated, !(q.flags & MOED_SQE_F_NOT_GATED));
		ck_assert_int_eq(job.router_weight_on_input,
				 !!(q.flags & MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT));
		ck_assert(job.routed_scaling_factor == q.routed_scaling_factor);
		ck_assert_mem_eq(&job.output, &q.output, sizeof(q.output));
		ck_assert_mem_eq(&job.kwargs, &q.kwargs, sizeof(q.kwargs));
	}
}
END_TEST

START_TEST(nop_needs_only_opcode)
{
	struct moed_sqe q = { .opcode = MOED_OP_NOP, .user_data = 42, .dtype = 200 };
	ck_assert_int_eq(moed_job_from_sqe(&q, arena, &job, &err), 0);
	ck_assert_uint_eq(job.user_data, 42);
	ck_assert_uint_eq(job.opcode, MOED_OP_NOP);
	q.reserved = 1;
	ck_assert_int_eq(moed_job_from_sqe(&q, arena, &job, &err), -EINVAL);
}
END_TEST

/* A base job with fixed shapes so that each case can name its numbers. */
static struct moed_sqe base(void)
{
	/* M 4, K 2, H 8, f32: hidden 128 B, ids 32, weights 32, output 128 */
	return (struct moed_sqe){
		.opcode = MOED_OP_MOE, .dtype = MOED_DTYPE_F32, .num_tokens = 4, .topk = 2,
		.hidden_size = 8, .routed_scaling_factor = 1.0f,
		.hidden = { 0, 128 }, .topk_ids = { 128, 32 }, .topk_weights = { 192, 32 },
		.output = { 256, 128 }, .kwargs = { 512, 0 },
	};
}

#define REFUSED(q, code, words)                                                          \
	do {                                                                             \
		memset(&err, 0, sizeof(err));                                            \
		int r_ = moed_job_from_sqe(&(q), arena, &job, &err);                     \
		ck_assert_msg(r_ == (code), "got %d, expected %d (%s)", r_, code, err.msg); \
		ck_assert_msg(strstr(err.msg, words), "message '%s' lacks '%s'", err.msg, words); \
	} while (0)

START_TEST(refuses_bad_fields)
{
	struct moed_sqe q = base();
	ck_assert_int_eq(moed_job_from_sqe(&q, arena, &job, &err), 0);

	q = base(); q.opcode = 9; REFUSED(q, -EINVAL, "unknown opcode 9");
	q = base(); q.reserved = 5; REFUSED(q, -EINVAL, "reserved descriptor field");
	q = base(); q.flags = 1u << 9; REFUSED(q, -EINVAL, "unknown descriptor flags 0x200");
	q = base(); q.arena = 1; REFUSED(q, -EOPNOTSUPP, "arena 1 is not served");
	q = base(); q.dtype = 3; REFUSED(q, -EINVAL, "unknown dtype 3");
	q = base(); q.activation = 2; REFUSED(q, -EINVAL, "unknown activation 2");
	q = base(); q.num_tokens = MOED_JOB_MAX_TOKENS + 1; REFUSED(q, -EINVAL, "num_tokens 16777217 exceeds");
	q = base(); q.topk = 0; REFUSED(q, -EINVAL, "topk 0 is outside [1, 64]");
	q = base(); q.topk = 65; REFUSED(q, -EINVAL, "topk 65 is outside");
	q = base(); q.hidden_size = 0; REFUSED(q, -EINVAL, "hidden_size 0 is outside");
	q = base(); q.routed_scaling_factor = NAN; REFUSED(q, -EINVAL, "routed_scaling_factor is not finite");
	q = base(); q.routed_scaling_factor = INFINITY; REFUSED(q, -EINVAL, "not finite");
	q = base(); q.flags = MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT;
	REFUSED(q, -EINVAL, "apply_router_weight_on_input needs topk 1, got 2");
}
END_TEST

START_TEST(refuses_bad_buffers)
{
	struct moed_sqe q;

	q = base(); q.hidden.length = 64; REFUSED(q, -EINVAL, "hidden_states is 64 bytes, its shape needs 128");
	q = base(); q.topk_ids.length = 36; REFUSED(q, -EINVAL, "topk_ids is 36 bytes, its shape needs 32");
	q = base(); q.topk_weights.length = 0; REFUSED(q, -EINVAL, "topk_weights is 0 bytes");
	q = base(); q.flags = MOED_SQE_F_NO_COMBINE; /* [M, K, H] needs 256 bytes */
	REFUSED(q, -EINVAL, "output is 128 bytes, its shape needs 256");
	q = base(); q.dtype = MOED_DTYPE_BF16; REFUSED(q, -EINVAL, "hidden_states is 128 bytes, its shape needs 64");

	q = base(); q.output.offset = arena - 64; REFUSED(q, -EINVAL, "output [16777152, +128) lies outside");
	q = base(); q.hidden.offset = arena + 4096; REFUSED(q, -EINVAL, "hidden_states [16781312, +128) lies outside");
	q = base(); q.topk_ids.offset = UINT64_MAX - 8; /* offset + length wraps 64 bits */
	REFUSED(q, -EINVAL, "topk_ids [18446744073709551607, +32) lies outside");
	q = base(); q.kwargs = (struct moed_buf){ UINT64_MAX - 7, 16 }; REFUSED(q, -EINVAL, "kwargs");
	q = base(); q.topk_weights.offset = 194; REFUSED(q, -EINVAL, "topk_weights offset 194 is not 4-byte aligned");
	q = base(); q.kwargs.length = MOED_KWARGS_MAX_SIZE + 8; REFUSED(q, -EINVAL, "kwargs blob of 65544 bytes exceeds");

	q = base(); q.output.offset = 64; REFUSED(q, -EINVAL, "output overlaps hidden_states");
	q = base(); q.output.offset = 144; REFUSED(q, -EINVAL, "output overlaps topk_ids");
	q = base(); q.output.offset = 216; REFUSED(q, -EINVAL, "output overlaps topk_weights");
	q = base(); q.kwargs = (struct moed_buf){ 264, 16 }; REFUSED(q, -EINVAL, "output overlaps kwargs");
}
END_TEST

START_TEST(empty_input_is_valid)
{
	struct moed_sqe q = base();
	q.num_tokens = 0;
	q.hidden.length = q.topk_ids.length = q.topk_weights.length = q.output.length = 0;
	ck_assert_int_eq(moed_job_from_sqe(&q, arena, &job, &err), 0);
	ck_assert_uint_eq(job.num_tokens, 0);
	q.output.offset = arena + 1; /* even an empty span must not point outside */
	REFUSED(q, -EINVAL, "output [16777217, +0) lies outside");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("job");
	TCase *tc = tcase_create("validate");

	tcase_add_loop_test(tc, accepts_random_jobs, 0, 2);
	tcase_add_test(tc, nop_needs_only_opcode);
	tcase_add_test(tc, refuses_bad_fields);
	tcase_add_test(tc, refuses_bad_buffers);
	tcase_add_test(tc, empty_input_is_valid);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
