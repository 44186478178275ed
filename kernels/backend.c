/* SPDX-License-Identifier: MIT */
/* What every backend checks the same way before it runs a job. */
#include "config.h"

#include <errno.h>

#include "backend.h"

static const char *const dtype_names[] = { "f32", "bf16", "f16" };
static const char *const act_names[] = { "silu", "gelu" };

uint64_t moed_weights_tensor_bytes(const struct moed_weights_shape *s, unsigned tensor)
{
	const uint64_t e = s->num_experts, h = s->hidden_size, i = s->inter_size;
	const uint64_t dsize = moed_dtype_size(s->dtype);
	if (tensor == MOED_TENSOR_W13)
		return e * (s->gated ? 2 * i : i) * h * dsize;
	return e * h * i * dsize;
}

int moed_backend_admit(const struct moed_backend_ops *ops, const struct moed_backend *b,
		       const struct moed_job *job, const struct moed_weights_shape *shape,
		       struct moed_error *err)
{
	const uint32_t caps = ops->caps(b);

	if (job->no_combine && !(caps & MOED_CAP_NO_COMBINE))
		return moed_error_set(err, -EOPNOTSUPP,
				      "backend '%s' does not support no_combine: the caller must "
				      "combine with a backend that has it",
				      ops->name);
	if (job->router_weight_on_input && !(caps & MOED_CAP_ROUTER_WEIGHT_ON_INPUT))
		return moed_error_set(err, -EOPNOTSUPP,
				      "backend '%s' does not support apply_router_weight_on_input",
				      ops->name);
	if (!(ops->dtypes(b) & (1u << job->dtype)))
		return moed_error_set(err, -EOPNOTSUPP, "backend '%s' does not support dtype %s",
				      ops->name, dtype_names[job->dtype]);
	if (!(ops->activations(b) & (1u << job->activation)))
		return moed_error_set(err, -EOPNOTSUPP, "backend '%s' does not support activation %s",
				      ops->name, act_names[job->activation]);
	if (job->hidden_size != shape->hidden_size)
		return moed_error_set(err, -EINVAL,
				      "job hidden_size %u does not match its weight set's %u",
				      job->hidden_size, shape->hidden_size);
	if (job->gated != !!shape->gated)
		return moed_error_set(err, -EINVAL, "job says %s but its weight set is %s",
				      job->gated ? "gated" : "not gated",
				      shape->gated ? "gated" : "not gated");
	if (!(caps & (shape->gated ? MOED_CAP_GATED : MOED_CAP_NOT_GATED)))
		return moed_error_set(err, -EOPNOTSUPP, "backend '%s' does not support %s experts",
				      ops->name, shape->gated ? "gated" : "non-gated");
	return 0;
}
