/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "job_validate.h"
#include "moed/kwargs_abi.h"

unsigned moed_dtype_size(unsigned dtype)
{
	switch (dtype) {
	case MOED_DTYPE_F32: return 4;
	case MOED_DTYPE_BF16: return 2;
	case MOED_DTYPE_F16: return 2;
	default: return 0;
	}
}

/* One buffer: exactly `need` bytes, aligned to `align`, inside the arena. */
static int check_buf(const char *name, const struct moed_buf *b, uint64_t need, unsigned align,
		     uint64_t arena_size, struct moed_error *err)
{
	if (b->length != need)
		return moed_error_set(err, -EINVAL, "%s is %llu bytes, its shape needs %llu", name,
				      (unsigned long long)b->length, (unsigned long long)need);
	if (b->offset > arena_size || b->length > arena_size - b->offset)
		return moed_error_set(err, -EINVAL,
				      "%s [%llu, +%llu) lies outside the %llu-byte arena", name,
				      (unsigned long long)b->offset, (unsigned long long)b->length,
				      (unsigned long long)arena_size);
	if (b->offset % align)
		return moed_error_set(err, -EINVAL, "%s offset %llu is not %u-byte aligned", name,
				      (unsigned long long)b->offset, align);
	return 0;
}

static bool overlap(const struct moed_buf *a, const struct moed_buf *b)
{
	/* Both lie inside the arena, so the sums cannot overflow. */
	return a->length && b->length && a->offset < b->offset + b->length &&
	       b->offset < a->offset + a->length;
}

int moed_job_from_sqe(const struct moed_sqe *sqe, uint64_t arena_size, struct moed_job *job,
		      struct moed_error *err)
{
	int r;

	memset(job, 0, sizeof(*job));
	job->user_data = sqe->user_data;
	job->opcode = sqe->opcode;

	if (sqe->opcode >= MOED_OP__COUNT)
		return moed_error_set(err, -EINVAL, "unknown opcode %u", sqe->opcode);
	if (sqe->reserved)
		return moed_error_set(err, -EINVAL, "reserved descriptor field is not zero");
	if (sqe->flags & ~MOED_SQE_F__KNOWN)
		return moed_error_set(err, -EINVAL, "unknown descriptor flags 0x%x",
				      sqe->flags & ~MOED_SQE_F__KNOWN);
	if (sqe->opcode == MOED_OP_NOP)
		return 0;

	if (sqe->arena >= MOED_ARENA__COUNT)
		return moed_error_set(err, -EOPNOTSUPP, "arena %u is not served by this daemon",
				      sqe->arena);
	const unsigned dsize = moed_dtype_size(sqe->dtype);
	if (!dsize)
		return moed_error_set(err, -EINVAL, "unknown dtype %u", sqe->dtype);
	if (sqe->activation >= MOED_ACT__COUNT)
		return moed_error_set(err, -EINVAL, "unknown activation %u", sqe->activation);
	if (sqe->num_tokens > MOED_JOB_MAX_TOKENS)
		return moed_error_set(err, -EINVAL, "num_tokens %u exceeds the limit of %u",
				      sqe->num_tokens, MOED_JOB_MAX_TOKENS);
	if (sqe->topk < 1 || sqe->topk > MOED_JOB_MAX_TOPK)
		return moed_error_set(err, -EINVAL, "topk %u is outside [1, %u]", sqe->topk,
				      MOED_JOB_MAX_TOPK);
	if (sqe->hidden_size < 1 || sqe->hidden_size > MOED_JOB_MAX_HIDDEN)
		return moed_error_set(err, -EINVAL, "hidden_size %u is outside [1, %u]",
				      sqe->hidden_size, MOED_JOB_MAX_HIDDEN);
	if (!isfinite(sqe->routed_scaling_factor))
		return moed_error_set(err, -EINVAL, "routed_scaling_factor is not finite");
	if ((sqe->flags & MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT) && sqe->topk != 1)
		return moed_error_set(err, -EINVAL,
				      "apply_router_weight_on_input needs topk 1, got %u", sqe->topk);

	const uint64_t m = sqe->num_tokens, k = sqe->topk, h = sqe->hidden_size;
	const bool no_combine = sqe->flags & MOED_SQE_F_NO_COMBINE;
	const uint64_t out_elems = no_combine ? m * k * h : m * h;

	if ((r = check_buf("hidden_states", &sqe->hidden, m * h * dsize, dsize, arena_size, err)) ||
	    (r = check_buf("topk_ids", &sqe->topk_ids, m * k * 4, 4, arena_size, err)) ||
	    (r = check_buf("topk_weights", &sqe->topk_weights, m * k * 4, 4, arena_size, err)) ||
	    (r = check_buf("output", &sqe->output, out_elems * dsize, dsize, arena_size, err)))
		return r;
	if (sqe->kwargs.length > MOED_KWARGS_MAX_SIZE)
		return moed_error_set(err, -EINVAL, "kwargs blob of %llu bytes exceeds the limit of %u",
				      (unsigned long long)sqe->kwargs.length, MOED_KWARGS_MAX_SIZE);
	if ((r = check_buf("kwargs", &sqe->kwargs, sqe->kwargs.length, 1, arena_size, err)))
		return r;

	const struct moed_buf *inputs[] = { &sqe->hidden, &sqe->topk_ids, &sqe->topk_weights,
					    &sqe->kwargs };
	const char *const input_names[] = { "hidden_states", "topk_ids", "topk_weights", "kwargs" };
	for (unsigned i = 0; i < 4; i++)
		if (overlap(&sqe->output, inputs[i]))
			return moed_error_set(err, -EINVAL, "output overlaps %s", input_names[i]);

	job->dtype = sqe->dtype;
	job->activation = sqe->activation;
	job->no_combine = no_combine;
	job->router_weight_on_input = sqe->flags & MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT;
	job->gated = !(sqe->flags & MOED_SQE_F_NOT_GATED);
	job->weights_id = sqe->weights_id;
	job->num_tokens = sqe->num_tokens;
	job->topk = sqe->topk;
	job->hidden_size = sqe->hidden_size;
	job->routed_scaling_factor = sqe->routed_scaling_factor;
	job->hidden = sqe->hidden;
	job->topk_ids = sqe->topk_ids;
	job->topk_weights = sqe->topk_weights;
	job->output = sqe->output;
	job->kwargs = sqe->kwargs;
	return 0;
}
