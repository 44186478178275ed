/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for descriptor validation: any 128 bytes as a submission entry,
 * then 8 bytes of arena size. An accepted job must be one the daemon can use without
 * a further check: every span inside the arena and as long as its shape says, the
 * output apart from every input. Those properties are re-derived here independently.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job_validate.h"

static int inside(const struct moed_buf *b, uint64_t arena)
{
	return b->offset <= arena && b->length <= arena - b->offset;
}

static int apart(const struct moed_buf *a, const struct moed_buf *b)
{
	return !a->length || !b->length || a->offset + a->length <= b->offset ||
	       b->offset + b->length <= a->offset;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct moed_sqe sqe;
	uint64_t arena = 0;
	struct moed_job job;
	struct moed_error err;

	if (size < sizeof(sqe))
		return 0;
	memcpy(&sqe, data, sizeof(sqe));
	if (size >= sizeof(sqe) + 8)
		memcpy(&arena, data + sizeof(sqe), 8);
	else
		arena = UINT64_C(1) << 20;
	arena %= UINT64_C(1) << 41;

	if (moed_job_from_sqe(&sqe, arena, &job, &err) != 0 || job.opcode == MOED_OP_NOP)
		return 0;

	const uint64_t m = job.num_tokens, k = job.topk, h = job.hidden_size;
	const uint64_t d = job.dtype == MOED_DTYPE_F32 ? 4 : 2;
	if (job.dtype > MOED_DTYPE_F16 || job.activation > MOED_ACT_GELU)
		abort();
	if (job.hidden.length != m * h * d || job.topk_ids.length != m * k * 4 ||
	    job.topk_weights.length != m * k * 4 ||
	    job.output.length != (job.no_combine ? m * k * h : m * h) * d)
		abort();
	const struct moed_buf *all[] = { &job.hidden, &job.topk_ids, &job.topk_weights, &job.kwargs,
					 &job.output };
	for (int i = 0; i < 5; i++)
		if (!inside(all[i], arena))
			abort();
	for (int i = 0; i < 4; i++)
		if (!apart(&job.output, all[i]))
			abort();
	if (job.router_weight_on_input && k != 1)
		abort();
	return 0;
}
