/* SPDX-License-Identifier: MIT */
/*
 * A backend called directly (no daemon): random shapes, dtypes and flags against the
 * tests' own f64 reference, outputs poisoned first, run() and the daemon's submit/poll
 * for several clients at once; out-of-range expert ids; the
 * capability checks every backend shares. Built twice: as test_cpu_backend, with the
 * CPU's kwargs; and as test_gpu_backend (TEST_GPU), which loads the GPU module, skips
 * (77) without a device, and adds every M from 0 to 4096 and the model shapes of
 * TARGETS.md, checked on a sample of tokens where the whole f64 reference is too slow.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "backend_setup.h"
#include "check_run.h"
#include "helpers.h"
#include "moe_ref.h"

#ifndef TEST_BACKEND
#define TEST_BACKEND "cpu"
#endif
static void random_problem(struct ref_problem *p, uint64_t *rng)
{
	static const uint32_t topks[] = { 1, 2, 8 };
	*p = (struct ref_problem){
		.e = (uint32_t)test_rand_range(rng, 1, 12),
		.h = (uint32_t)test_rand_range(rng, 1, 150),
		.i = (uint32_t)test_rand_range(rng, 1, 100),
		.m = (uint32_t)test_rand_range(rng, 0, 40),
		.gated = test_rand(rng) & 1,
		.no_combine = test_rand(rng) & 1,
		.act = (uint8_t)(test_rand(rng) & 1),
		.io_dtype = (uint8_t)test_rand_range(rng, 0, 2),
		.w_dtype = (uint8_t)test_rand_range(rng, 0, 2),
		.scale = test_rand(rng) & 1 ? 1.0f : (float)(0.5 + 2 * test_rand_double(rng)),
	};
	p->k = topks[test_rand_range(rng, 0, 2)];
	if (p->k > p->e)
		p->k = p->e;
	p->router_weight_on_input = p->k == 1 && (test_rand(rng) & 1);
}

/* Run the problem and compare the whole output with the reference. */
static void check_whole(const struct ref_problem *p, unsigned threads, const char *note)
{
	struct setup s;
	struct moed_error err;
	static const struct moed_kwargs none;
	setup_make(&s, p, threads, 0);
	ck_assert_msg(run(&s, &none, &err) == 0, "run failed: %s", err.msg);
	double *want = malloc(ref_out_elems(p) * sizeof(double) + 8);
	ref_moe(p, want);
	double e = ref_rel_error(p->io_dtype, s.arena.base + s.job.output.offset, want, ref_out_elems(p));
	ck_assert_msg(e <= ref_tolerance(p->io_dtype),
		      "error %.3g > %.3g: M %u K %u E %u H %u I %u io %u w %u gated %d "
		      "no_combine %d rwoi %d act %u scale %g%s",
		      e, ref_tolerance(p->io_dtype), p->m, p->k, p->e, p->h, p->i, p->io_dtype,
		      p->w_dtype, p->gated, p->no_combine, p->router_weight_on_input, p->act,
		      (double)p->scale, note);
	free(want);
	setup_free(&s);
}

START_TEST(matches_reference)
{
	uint64_t rng = test_seed() + (uint64_t)_i * 7919;
	for (int round = 0; round < 40; round++) {
		struct ref_problem p;
		random_problem(&p, &rng);
		ref_problem_fill(&p, &rng);
		check_whole(&p, (unsigned)test_rand_range(&rng, 1, 3), "");
		ref_problem_free(&p);
	}
}
END_TEST

/*
 * The daemon's way of running jobs: several clients, each with its own context and one
 * job in flight, submitted together and polled until each is done (on the GPU the jobs
 * overlap on their streams). Every output against the reference.
 */
START_TEST(clients_submit_and_poll)
{
	enum { CLIENTS = 3 };
	uint64_t rng = test_seed() + (uint64_t)_i * 31;
	struct ref_problem p[CLIENTS];
	struct setup s[CLIENTS];
	void *ctx[CLIENTS];
	struct moed_error err;
	static const struct moed_kwargs none;
	for (int round = 0; round < 4; round++) {
		for (int c = 0; c < CLIENTS; c++) {
			random_problem(&p[c], &rng);
			ref_problem_fill(&p[c], &rng);
			if (c == 0)
				setup_make(&s[c], &p[c], 2, 0);
			else
				setup_make_on(&s[c], s[0].b, &p[c]); /* one backend, as in the daemon */
			ck_assert_int_eq(moed_backend_admit(ops, s[c].b, &s[c].job, &s[c].w.shape, &err), 0);
			ck_assert_msg(ops->client_open(s[c].b, &s[c].arena, &ctx[c], &err) == 0, "%s", err.msg);
		}
		for (int c = 0; c < CLIENTS; c++)
			ck_assert_msg(ops->submit(s[c].b, ctx[c], &s[c].job, &s[c].w, &none, &s[c].arena,
						  &err) == 0, "submit: %s", err.msg);
		for (int c = 0; c < CLIENTS; c++) {
			int r;
			const double t0 = now_s();
			while ((r = ops->poll(s[c].b, ctx[c], &err)) == 0) {
				ck_assert_msg(now_s() - t0 < 60, "job %d not done after a minute", c);
				usleep(50); /* leave the cores to the job */
			}
			ck_assert_msg(r == 1, "poll: %d %s", r, err.msg);
			double *want = malloc(ref_out_elems(&p[c]) * sizeof(double) + 8);
			ref_moe(&p[c], want);
			double e = ref_rel_error(p[c].io_dtype, s[c].arena.base + s[c].job.output.offset, want,
						 ref_out_elems(&p[c]));
			ck_assert_msg(e <= ref_tolerance(p[c].io_dtype), "client %d: error %.3g, M %u H %u I %u",
				      c, e, p[c].m, p[c].h, p[c].i);
			free(want);
			ops->client_close(s[c].b, ctx[c]);
		}
		for (int c = CLIENTS - 1; c >= 0; c--) { /* the backend's owner last */
			setup_free(&s[c]);
			ref_problem_free(&p[c]);
		}
	}
}
END_TEST

START_TEST(expert_ids_out_of_range)
{
	uint64_t rng = test_seed();
	const int32_t bad[] = { 4, -1, 1000000 };
	for (int i = 0; i < 3; i++) {
		struct ref_problem p;
		struct setup s;
		struct moed_error err;
		static const struct moed_kwargs none;
		small_problem(&p, &rng);
		p.ids[3] = bad[i]; /* token 1, slot 1 */
		setup_make(&s, &p, 2, 0);
		ck_assert_int_eq(run(&s, &none, &err), -EINVAL);
		char words[64];
		snprintf(words, sizeof(words), "topk_ids[1][1] = %d is outside [0, 4)", bad[i]);
		ck_assert_msg(strstr(err.msg, words), "'%s' lacks '%s'", err.msg, words);
		setup_free(&s);
		ref_problem_free(&p);
	}
	/* Large jobs, which the GPU backend plans from a sample of the tokens (one in four
	 * here: moe_routing.h), then sorts on the device, which checks the ids it reads (bf16:
	 * the matrix-unit kernels), or copies and sorts on the host (f32). Two ids out of range
	 * off the sample: the error names the first. One on the sample: found before the job
	 * is queued, the same message. Through run() and through a client's submit and poll,
	 * whose arena the backend pins: the device reads the ids where the client wrote them.
	 * Then the same job runs right. */
	for (int way = 0; way < 2; way++)
		for (int dtype = 0; dtype < 2; dtype++) {
			struct ref_problem p = { .e = 4, .h = 16, .i = 8, .m = 8192, .k = 2, .gated = true,
						 .io_dtype = dtype ? MOED_DTYPE_BF16 : MOED_DTYPE_F32,
						 .w_dtype = dtype ? MOED_DTYPE_BF16 : MOED_DTYPE_F32, .scale = 1.0f };
			struct setup s;
			struct moed_error err;
			static const struct moed_kwargs none;
			ref_problem_fill(&p, &rng);
			setup_make(&s, &p, 2, 0);
			int32_t *ids = (int32_t *)(s.arena.base + s.job.topk_ids.offset);
			for (int i = 0; i < 4; i++) {
				const uint32_t token = i < 3 ? 4001 + 2 * i : 4000, slot = i < 3 ? 1 : 0;
				const size_t first = 2 * token + slot, later = 2 * 6003;
				ids[later] = bad[(i + 1) % 3];
				ids[first] = bad[i % 3];
				const int r = way ? run_as_client(&s, &none, &err) : run(&s, &none, &err);
				ck_assert_int_eq(r, -EINVAL);
				char words[64];
				snprintf(words, sizeof(words), "topk_ids[%u][%u] = %d is outside [0, 4)", token, slot,
					 bad[i % 3]);
				ck_assert_msg(strstr(err.msg, words), "'%s' lacks '%s'", err.msg, words);
				ids[first] = p.ids[first], ids[later] = p.ids[later];
			}
			const int r = way ? run_as_client(&s, &none, &err) : run(&s, &none, &err);
			ck_assert_msg(r == 0, "%s", err.msg);
			double *want = malloc(ref_out_elems(&p) * sizeof(double) + 8);
			ref_moe(&p, want);
			ck_assert(ref_rel_error(p.io_dtype, s.arena.base + s.job.output.offset, want, ref_out_elems(&p)) <=
				  ref_tolerance(p.io_dtype));
			free(want);
			setup_free(&s);
			ref_problem_free(&p);
		}
}
END_TEST

/* Many experts, eight of them hot (as a skewed router makes): a large job whose experts
 * hold from one pair to several tiles. The GPU backend sorts it on the device, each
 * thread of the sort's last block owning two or four experts (there are more than 1024),
 * and the tile table paired where wgmma128c runs. */
START_TEST(many_experts)
{
	static const uint32_t experts[] = { 1500, 4096 };
	uint64_t rng = test_seed() + (uint64_t)_i;
	struct ref_problem p = { .e = experts[_i], .m = 700, .k = 8, .h = 32, .i = 16, .gated = true,
				 .io_dtype = MOED_DTYPE_BF16, .w_dtype = MOED_DTYPE_BF16, .scale = 1.0f };
	ref_problem_fill(&p, &rng);
	/* Slots 0-3 from the hot experts, 4-7 from the rest, distinct within a token. */
	for (uint32_t m = 0; m < p.m; m++)
		for (uint32_t k = 0; k < p.k; k++) {
			int32_t id;
			int taken;
			do {
				id = (int32_t)(k < 4 ? test_rand_range(&rng, 0, 7) : test_rand_range(&rng, 8, p.e - 1));
				taken = 0;
				for (uint32_t j = 0; j < k; j++)
					taken |= p.ids[m * p.k + j] == id;
			} while (taken);
			p.ids[m * p.k + k] = id;
		}
	check_whole(&p, 1, ", eight hot experts");
	ref_problem_free(&p);
}
END_TEST

START_TEST(admission_checks)
{
	uint64_t rng = test_seed();
	struct ref_problem p;
	struct setup s;
	struct moed_error err;
	static const struct moed_kwargs none;

	small_problem(&p, &rng);
	setup_make(&s, &p, 1, MOED_CAP_NO_COMBINE); /* an "older kernel" without no_combine */
	ck_assert_uint_eq(ops->caps(s.b) & MOED_CAP_NO_COMBINE, 0);
	s.job.no_combine = true;
	ck_assert_int_eq(run(&s, &none, &err), -EOPNOTSUPP);
	char words[64];
	snprintf(words, sizeof(words), "backend '%s' does not support no_combine", ops->name);
	ck_assert_ptr_nonnull(strstr(err.msg, words));
	s.job.num_tokens = 0; /* refused before the empty-input shortcut */
	ck_assert_int_eq(run(&s, &none, &err), -EOPNOTSUPP);
	s.job.no_combine = false;
	ck_assert_int_eq(run(&s, &none, &err), 0);

	s.job.num_tokens = 3;
	s.job.hidden_size = 32;
	ck_assert_int_eq(run(&s, &none, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "hidden_size 32 does not match its weight set's 16"));
	s.job.hidden_size = 16;
	s.job.gated = false;
	ck_assert_int_eq(run(&s, &none, &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "job says not gated but its weight set is gated"));
	setup_free(&s);
	ref_problem_free(&p);
}
END_TEST

#ifndef TEST_GPU
START_TEST(kwargs_change_how_not_what)
{
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 6, .h = 70, .i = 45, .m = 17, .k = 2, .gated = true,
				 .scale = 1.0f };
	ref_problem_fill(&p, &rng);
	double *want = malloc(ref_out_elems(&p) * sizeof(double));
	ref_moe(&p, want);

	const int64_t settings[][2] = { { 1, 1 }, { 3, 7 }, { 2, 65536 }, { 3, 16 } };
	for (int i = 0; i < 4; i++) {
		struct setup s;
		struct moed_error err;
		struct moed_kwargs kw = { .count = 2 };
		strcpy(kw.items[0].key, "num_threads");
		kw.items[0].type = MOED_KWARG_INT64;
		kw.items[0].v.i = settings[i][0];
		strcpy(kw.items[1].key, "block_rows");
		kw.items[1].type = MOED_KWARG_INT64;
		kw.items[1].v.i = settings[i][1];
		setup_make(&s, &p, 3, 0);
		ck_assert_int_eq(moed_kwargs_check(&kw, ops->schema(s.b), &err), MOED_KW_OK);
		ck_assert_int_eq(run(&s, &kw, &err), 0);
		ck_assert(ref_rel_error(0, s.arena.base + s.job.output.offset, want, ref_out_elems(&p)) <= 1e-5);
		setup_free(&s);
	}
	/* The schema bounds num_threads by the pool the daemon started. */
	struct setup s;
	struct moed_error err;
	struct moed_kwargs kw = { .count = 1 };
	strcpy(kw.items[0].key, "num_threads");
	kw.items[0].type = MOED_KWARG_INT64;
	kw.items[0].v.i = 4;
	setup_make(&s, &p, 3, 0);
	ck_assert_int_eq(moed_kwargs_check(&kw, ops->schema(s.b), &err), MOED_KW_OUT_OF_RANGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "'num_threads' = 4 is out of range [1, 3]"));
	setup_free(&s);
	free(want);
	ref_problem_free(&p);
}
END_TEST
#endif

#ifdef TEST_GPU
/* Compare only the rows of `tokens` (a sample) with the reference for those tokens. */
static double sampled_error(const struct ref_problem *p, const void *out, const uint32_t *tokens,
			    uint32_t n)
{
	const size_t per = (size_t)(p->no_combine ? p->k : 1) * p->h, ds = ref_dtype_size(p->io_dtype);
	double *want = malloc(n * per * sizeof(double));
	unsigned char *got = malloc(n * per * ds);
	ref_moe_tokens(p, tokens, n, want);
	for (uint32_t t = 0; t < n; t++)
		memcpy(got + t * per * ds, (const unsigned char *)out + tokens[t] * per * ds, per * ds);
	double e = ref_rel_error(p->io_dtype, got, want, n * per);
	free(want);
	free(got);
	return e;
}

static void check_sampled(struct ref_problem *p, unsigned threads, uint64_t *rng)
{
	struct setup s;
	struct moed_error err;
	static const struct moed_kwargs none;
	setup_make(&s, p, threads, 0);
	ck_assert_msg(run(&s, &none, &err) == 0, "run failed: %s", err.msg);
	/* The f64 reference of a full-size layer costs seconds a token: sample fewer there. */
	const uint32_t want = (uint64_t)p->h * p->i > (4u << 20) ? 4 : 16;
	uint32_t tokens[16], n = p->m < want ? p->m : want;
	for (uint32_t t = 0; t < n; t++) /* the first and last token, and random ones */
		tokens[t] = t == 0 ? 0 : t == 1 ? p->m - 1 : (uint32_t)test_rand_range(rng, 0, p->m - 1);
	if (n) {
		double e = sampled_error(p, s.arena.base + s.job.output.offset, tokens, n);
		ck_assert_msg(e <= ref_tolerance(p->io_dtype),
			      "error %.3g > %.3g: M %u K %u E %u H %u I %u io %u w %u no_combine %d",
			      e, ref_tolerance(p->io_dtype), p->m, p->k, p->e, p->h, p->i, p->io_dtype,
			      p->w_dtype, p->no_combine);
		/* Every element written: no poison left anywhere in the output. */
		ck_assert_uint_eq(ref_count_nonfinite(p->io_dtype, s.arena.base + s.job.output.offset,
						      ref_out_elems(p)), 0);
	}
	setup_free(&s);
}

START_TEST(every_m_and_topk)
{
	static const uint32_t ms[] = { 0, 1, 2, 3, 5, 17, 64, 100, 255, 1024, 4096 };
	static const uint32_t topks[] = { 1, 2, 8 };
	uint64_t rng = test_seed() + (uint64_t)_i;
	for (size_t mi = 0; mi < sizeof(ms) / sizeof(ms[0]); mi++) {
		struct ref_problem p = {
			.e = (uint32_t)test_rand_range(&rng, 8, 40), .h = (uint32_t)test_rand_range(&rng, 33, 300),
			.i = (uint32_t)test_rand_range(&rng, 17, 200), .m = ms[mi],
			.k = topks[(mi + (size_t)_i) % 3], .gated = (mi + (size_t)_i) % 4 != 0,
			.io_dtype = (uint8_t)((mi + (size_t)_i) % 3), .w_dtype = (uint8_t)(mi % 3),
			.act = (uint8_t)(mi & 1), .no_combine = (mi + (size_t)_i) & 1, .scale = 1.5f,
		};
		p.router_weight_on_input = p.k == 1 && (mi & 2);
		ref_problem_fill(&p, &rng);
		check_sampled(&p, 1, &rng);
		ref_problem_free(&p);
	}
}
END_TEST

/* The GPU tests below each set a variable of the environment that tools/gpu-round may
 * have set for the whole run: what was there is saved and put back. */
static char *env_save(const char *name)
{
	const char *was = getenv(name);
	return was ? strdup(was) : NULL;
}

static void env_restore(const char *name, char *saved)
{
	if (saved)
		setenv(name, saved, 1);
	else
		unsetenv(name);
	free(saved);
}

/* Makes the backend with `name` set to `value` (left set) and destroys it again; what
 * create() returned, its message in err. */
static int create_with(const char *name, const char *value, struct moed_error *err)
{
	struct moed_backend *b;
	const struct moed_backend_config cfg = { 0 };
	setenv(name, value, 1);
	const int r = ops->create(&cfg, &b, err);
	if (r == 0)
		ops->destroy(b);
	return r;
}

/* With `name` set to `value`, making the backend fails with -EINVAL and says `why`. */
static void expect_create_refused(const char *name, const char *value, const char *why)
{
	struct moed_error err;
	ck_assert_int_eq(create_with(name, value, &err), -EINVAL);
	ck_assert_msg(strstr(err.msg, why), "%s=%s: message: %s", name, value, err.msg);
}

/* MOED_GPU_KERNEL is read when the backend is made: a name that is no kernel stops it,
 * with the names it takes. */
START_TEST(unknown_forced_kernel_refused)
{
	char *saved = env_save("MOED_GPU_KERNEL");
	expect_create_refused("MOED_GPU_KERNEL", "mma99",
			      "MOED_GPU_KERNEL=mma99 names no GPU kernel (warp, mma16,");
	/* A kernel withdrawn for a fault (moe_gpu_kernel_withdrawn): refused with the reason,
	 * on any build and card. */
	expect_create_refused("MOED_GPU_KERNEL", "wgmma128d",
			      "MOED_GPU_KERNEL=wgmma128d is withdrawn: it faults");
	/* AMD's kernel in an NVIDIA build (the only kind the GPU tests run on): named, but
	 * not runnable here (an AMD build, whose kernel it is, takes it). */
	struct moed_error err;
	const int r = create_with("MOED_GPU_KERNEL", "mfma64", &err);
	if (r != 0) {
		ck_assert_int_eq(r, -EINVAL);
		ck_assert_msg(strstr(err.msg, "MOED_GPU_KERNEL=mfma64: not in this build or not for this card"),
			      "message: %s", err.msg);
	}
	env_restore("MOED_GPU_KERNEL", saved);
}
END_TEST

/* The measurement settings: a tile group that is not a number from 1 to 65536, a tail
 * split that is not 0, 1 or all, or a dependent-launch, prefetch, trace or
 * fault-injection switch that is not 0 or 1, stops
 * the backend with its reason; valid values are taken (tools/gpu-round runs the whole GPU
 * test under other tile groups). */
START_TEST(bad_measurement_settings_refused)
{
	char *group = env_save("MOED_GPU_TILE_GROUP"), *dependent = env_save("MOED_GPU_DEPENDENT_LAUNCH");
	char *trace = env_save("MOED_HIP_TRACE"), *prefetch = env_save("MOED_GPU_L2_PREFETCH");
	char *fused = env_save("MOED_GPU_FUSED_DECODE"), *tail = env_save("MOED_GPU_TAIL_SPLIT");
	char *spread = env_save("MOED_GPU_SPREAD");
	const char *bad[] = { "0", "65537", "8x", "-3" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[96];
		snprintf(want, sizeof(want), "MOED_GPU_TILE_GROUP=%s: wants a number of tiles from 1 to 65536",
			 bad[i]);
		expect_create_refused("MOED_GPU_TILE_GROUP", bad[i], want);
	}
	unsetenv("MOED_GPU_TILE_GROUP");
	expect_create_refused("MOED_GPU_DEPENDENT_LAUNCH", "off",
			      "MOED_GPU_DEPENDENT_LAUNCH=off: wants 0 (off) or 1 (on)");
	unsetenv("MOED_GPU_DEPENDENT_LAUNCH");
	expect_create_refused("MOED_GPU_L2_PREFETCH", "2", "MOED_GPU_L2_PREFETCH=2: wants 0 (off) or 1 (on)");
	unsetenv("MOED_GPU_L2_PREFETCH");
	expect_create_refused("MOED_GPU_FUSED_DECODE", "one", "MOED_GPU_FUSED_DECODE=one: wants 0 (off) or 1 (on)");
	unsetenv("MOED_GPU_FUSED_DECODE");
	expect_create_refused("MOED_GPU_SPREAD", "first", "MOED_GPU_SPREAD=first: wants 0 (off) or 1 (on)");
	unsetenv("MOED_GPU_SPREAD");
	expect_create_refused("MOED_GPU_TAIL_SPLIT", "2",
			      "MOED_GPU_TAIL_SPLIT=2: wants 0 (never), 1 (where the last round is at most half full) or all");
	unsetenv("MOED_GPU_TAIL_SPLIT");
	expect_create_refused("MOED_HIP_TRACE", "yes", "MOED_HIP_TRACE=yes: wants 0 (off) or 1 (on)");
	unsetenv("MOED_HIP_TRACE");
	char *inject = env_save("MOED_HIP_INJECT_FAULT");
	expect_create_refused("MOED_HIP_INJECT_FAULT", "true", "MOED_HIP_INJECT_FAULT=true: wants 0 (off) or 1 (on)");
	env_restore("MOED_HIP_INJECT_FAULT", inject);
	struct moed_error err;
	setenv("MOED_GPU_TILE_GROUP", "1", 1);
	setenv("MOED_HIP_TRACE", "0", 1);
	setenv("MOED_GPU_L2_PREFETCH", "0", 1);
	setenv("MOED_GPU_FUSED_DECODE", "0", 1);
	setenv("MOED_GPU_TAIL_SPLIT", "all", 1);
	setenv("MOED_GPU_SPREAD", "0", 1);
	ck_assert_int_eq(create_with("MOED_GPU_DEPENDENT_LAUNCH", "0", &err), 0);
	env_restore("MOED_GPU_SPREAD", spread);
	env_restore("MOED_GPU_L2_PREFETCH", prefetch);
	env_restore("MOED_GPU_FUSED_DECODE", fused);
	env_restore("MOED_GPU_TAIL_SPLIT", tail);
	env_restore("MOED_HIP_TRACE", trace);
	env_restore("MOED_GPU_TILE_GROUP", group);
	env_restore("MOED_GPU_DEPENDENT_LAUNCH", dependent);
}
END_TEST

/* Sizes past what the kernels' grids span are refused when the weights are made. */
START_TEST(oversized_weights_refused)
{
	struct moed_backend *b;
	struct moed_error err;
	const struct moed_backend_config cfg = { 0 };
	ck_assert_int_eq(ops->create(&cfg, &b, &err), 0);
	struct moed_weights w = { .shape = { .num_experts = 1, .hidden_size = 600000, .inter_size = 8,
					     .dtype = MOED_DTYPE_BF16, .gated = 1 } };
	ck_assert_int_eq(ops->weights_alloc(b, &w, &err), -EINVAL);
	ck_assert_msg(strstr(err.msg, "hidden_size 600000, inter_size 8: the GPU backend takes sizes up to"),
		      "message: %s", err.msg);
	ops->destroy(b);
}
END_TEST

static uint32_t most_pairs_per_expert(const struct ref_problem *p)
{
	uint32_t *n = calloc(p->e, sizeof(uint32_t)), most = 0;
	for (size_t j = 0; j < (size_t)p->m * p->k; j++)
		most = ++n[p->ids[j]] > most ? n[p->ids[j]] : most;
	free(n);
	return most;
}

/*
 * The matrix-unit kernels (NVIDIA) take 16-bit I/O with hidden and intermediate sizes
 * that are multiples of 8, in tiles of 16, 32, 64 or 128 pairs picked by the most pairs any
 * expert has (and K split for small down GEMMs). Each round draws sizes that are
 * multiples of 8 but of no tile (64 k-values, 64 or 128 columns), then for each band an M
 * that gives the experts that many pairs on average (a few more for the busiest): the
 * plan's bands are 16, 32, 64 (on Hopper, wgmma's tiles of 128 from 33 on), 128, a tile
 * and a few pairs (on Hopper, wgmma128e: an expert's last tile takes up to 32 more, in a
 * cluster with another expert's tile), beyond (where experts hold several tiles; at 300,
 * wgmma128e's pairs of one expert's tiles taking them), and a job of two tokens. Few
 * experts, so that each holds many pairs. Compared whole where the f64 reference is
 * cheap, else on sampled tokens. The last round runs every item of the persistent down
 * GEMM as two of half the weight rows (MOED_GPU_TAIL_SPLIT=all), which the plan does only
 * for a short last round.
 */
START_TEST(matrix_unit_tiles)
{
	static const uint32_t mean_pairs[] = { 0 /* M = 2 */, 6, 21, 42, 84, 140, 300 };
	static const uint32_t topks[] = { 1, 2, 8 };
	uint64_t rng = test_seed() + (uint64_t)_i * 104729;
	char *tail = env_save("MOED_GPU_TAIL_SPLIT");
	if (_i == 3)
		setenv("MOED_GPU_TAIL_SPLIT", "all", 1);
	for (size_t mi = 0; mi < sizeof(mean_pairs) / sizeof(mean_pairs[0]); mi++) {
		const uint8_t dtype = (mi + (size_t)_i) % 2 ? MOED_DTYPE_BF16 : MOED_DTYPE_F16;
		struct ref_problem p = {
			.e = (uint32_t)test_rand_range(&rng, 2, 9),
			.h = 8 * (uint32_t)test_rand_range(&rng, 5, 70),
			.i = 8 * (uint32_t)test_rand_range(&rng, 3, 96),
			.k = topks[test_rand_range(&rng, 0, 2)], .gated = test_rand(&rng) % 4 != 0,
			.io_dtype = dtype, .w_dtype = dtype, .act = (uint8_t)(test_rand(&rng) & 1),
			.no_combine = test_rand(&rng) & 1,
			.scale = test_rand(&rng) & 1 ? 1.0f : (float)(0.5 + 2 * test_rand_double(&rng)),
		};
		if (p.k > p.e)
			p.k = p.e;
		p.m = mean_pairs[mi] ? (mean_pairs[mi] * p.e + p.k - 1) / p.k : 2;
		p.router_weight_on_input = p.k == 1 && (test_rand(&rng) & 1);
		ref_problem_fill(&p, &rng);
		const uint32_t most = most_pairs_per_expert(&p);
		if ((double)p.m * p.k * p.h * p.i > 1.5e8) {
			check_sampled(&p, 1, &rng);
		} else {
			char note[64];
			snprintf(note, sizeof(note), ", most pairs of one expert %u", most);
			check_whole(&p, 1, note);
		}
		ref_problem_free(&p);
	}
	env_restore("MOED_GPU_TAIL_SPLIT", tail);
}
END_TEST

/* TARGETS.md's shapes: Mixtral and Qwen3 whole, DeepSeek-V3 with 32 of its 256 experts
 * (its full weights would take minutes to draw on the CPU). bf16, as served. */
START_TEST(model_shapes)
{
	static const struct { uint32_t e, k, h, i; } shapes[] = {
		{ 8, 2, 4096, 14336 }, { 128, 8, 2048, 768 }, { 32, 8, 7168, 2048 },
	};
	uint64_t rng = test_seed() + (uint64_t)_i;
	struct ref_problem p = { .e = shapes[_i].e, .k = shapes[_i].k, .h = shapes[_i].h,
				 .i = shapes[_i].i, .gated = true, .io_dtype = MOED_DTYPE_BF16,
				 .w_dtype = MOED_DTYPE_BF16, .scale = 1.0f };
	ref_problem_fill_weights_fast(&p, &rng);
	static const uint32_t ms[] = { 1, 64, 1024 };
	for (int mi = 0; mi < 3; mi++) {
		p.m = ms[mi];
		p.no_combine = mi == 1;
		ref_problem_fill_inputs(&p, &rng);
		check_sampled(&p, 1, &rng);
		ref_problem_free_inputs(&p);
	}
	ref_problem_free(&p);
}
END_TEST
#endif

int main(void)
{
	struct moed_error err = { "" };
	ops = moed_backend_find(TEST_BACKEND, &err);
	if (!ops) {
		printf("backend %s unavailable, skipped: %s\n", TEST_BACKEND, err.msg);
		return TEST_EXIT_SKIP;
	}
#ifdef TEST_GPU
	/* The GPU runtime is set up in this process (the probe above) and does not survive
	 * fork(): run the tests in process. */
	setenv("CK_FORK", "no", 1);
#endif
	Suite *s = suite_create(TEST_BACKEND "_backend");
	TCase *tc = tcase_create(TEST_BACKEND);

	tcase_add_loop_test(tc, matches_reference, 0, 3);
	tcase_add_loop_test(tc, clients_submit_and_poll, 0, 2);
	tcase_add_test(tc, expert_ids_out_of_range);
	tcase_add_loop_test(tc, many_experts, 0, 2);
	tcase_add_test(tc, admission_checks);
#ifdef TEST_GPU
	tcase_add_loop_test(tc, every_m_and_topk, 0, 3);
	tcase_add_loop_test(tc, model_shapes, 0, 3);
	tcase_add_loop_test(tc, matrix_unit_tiles, 0, 4);
	tcase_add_test(tc, oversized_weights_refused);
	tcase_add_test(tc, unknown_forced_kernel_refused);
	tcase_add_test(tc, bad_measurement_settings_refused);
#else
	tcase_add_test(tc, kwargs_change_how_not_what);
#endif
	tcase_set_timeout(tc, 300);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
