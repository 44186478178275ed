/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend_setup.h"
#include "helpers.h"

const struct moed_backend_ops *ops;

void setup_make(struct setup *s, const struct ref_problem *p, unsigned threads, uint32_t withhold)
{
	struct moed_error err;
	const struct moed_backend_config cfg = { .threads = threads, .withhold = withhold };
	ck_assert_msg(ops->create(&cfg, &s->b, &err) == 0, "create: %s", err.msg);
	setup_make_on(s, s->b, p);
	s->own_backend = true;
}

void setup_make_on(struct setup *s, struct moed_backend *b, const struct ref_problem *p)
{
	struct moed_error err;
	s->b = b;
	s->own_backend = false;

	s->w = (struct moed_weights){ .shape = { .num_experts = p->e, .hidden_size = p->h,
						 .inter_size = p->i, .dtype = p->w_dtype,
						 .gated = p->gated } };
	ck_assert_int_eq(ops->weights_alloc(s->b, &s->w, &err), 0);
	/* Upload in uneven chunks, as a client would through its arena. */
	for (unsigned t = 0; t < 2; t++) {
		uint64_t size = t ? s->w.w2_bytes : s->w.w13_bytes, at = 0;
		const unsigned char *src = t ? p->w2 : p->w13;
		const uint64_t chunk = size < (1u << 20) ? 1000 : UINT64_C(64) << 20; /* uneven when small */
		while (at < size) {
			uint64_t n = size - at < chunk ? size - at : chunk;
			ck_assert_int_eq(ops->weights_write(s->b, &s->w, t, at, src + at, n, &err), 0);
			at += n;
		}
	}

	const size_t ds = ref_dtype_size(p->io_dtype), pairs = (size_t)p->m * p->k;
	const size_t xb = (size_t)p->m * p->h * ds, ob = ref_out_elems(p) * ds;
	s->arena.size = (xb + pairs * 8 + ob + 4096) / 64 * 64 + 64;
	s->arena.base = malloc(s->arena.size);
	uint64_t at = 0;
	s->job = (struct moed_job){
		.opcode = MOED_OP_MOE, .dtype = p->io_dtype, .activation = p->act,
		.no_combine = p->no_combine, .router_weight_on_input = p->router_weight_on_input,
		.gated = p->gated, .num_tokens = p->m, .topk = p->k, .hidden_size = p->h,
		.routed_scaling_factor = p->scale,
	};
	s->job.hidden = (struct moed_buf){ at, xb };
	memcpy(s->arena.base + at, p->x, xb);
	at += (xb + 63) / 64 * 64;
	s->job.topk_ids = (struct moed_buf){ at, pairs * 4 };
	memcpy(s->arena.base + at, p->ids, pairs * 4);
	at += (pairs * 4 + 63) / 64 * 64;
	s->job.topk_weights = (struct moed_buf){ at, pairs * 4 };
	memcpy(s->arena.base + at, p->tw, pairs * 4);
	at += (pairs * 4 + 63) / 64 * 64;
	s->job.output = (struct moed_buf){ at, ob };
	ref_poison(s->arena.base + at, ob);
}

void setup_free(struct setup *s)
{
	ops->weights_free(s->b, &s->w);
	if (s->own_backend)
		ops->destroy(s->b);
	free(s->arena.base);
}

int run(struct setup *s, const struct moed_kwargs *kw, struct moed_error *err)
{
	int r = moed_backend_admit(ops, s->b, &s->job, &s->w.shape, err);
	return r ? r : ops->run(s->b, &s->job, &s->w, kw, &s->arena, err);
}

int run_as_client(struct setup *s, const struct moed_kwargs *kw, struct moed_error *err)
{
	void *ctx;
	int r = moed_backend_admit(ops, s->b, &s->job, &s->w.shape, err);
	if (r)
		return r;
	ck_assert_msg(ops->client_open(s->b, &s->arena, &ctx, err) == 0, "client_open: %s", err->msg);
	r = ops->submit(s->b, ctx, &s->job, &s->w, kw, &s->arena, err);
	const double t0 = now_s();
	while (r == 0 && (r = ops->poll(s->b, ctx, err)) == 0) {
		ck_assert_msg(now_s() - t0 < 60, "job not done after a minute");
		usleep(50); /* leave the cores to the job */
	}
	ops->client_close(s->b, ctx);
	return r < 0 ? r : 0;
}

void small_problem(struct ref_problem *p, uint64_t *rng)
{
	*p = (struct ref_problem){ .e = 4, .h = 16, .i = 8, .m = 3, .k = 2, .gated = true,
				   .scale = 1.0f };
	ref_problem_fill(p, rng);
}
