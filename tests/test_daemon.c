/* SPDX-License-Identifier: MIT */
/*
 * The daemon end to end: the real moed binary, real client processes through libmoed,
 * every result against the tests' own f64 reference; shared weight sets; the errors a
 * client can cause, with their messages; a long job beside another client's no-ops;
 * hostile clients speaking the protocol by hand;
 * a client killed mid-stream; SIGTERM with jobs in flight.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "check_run.h"
#include "helpers.h"
#include "moe_ref.h"
#include "moed/moed.h"

static struct test_daemon daemon_;

static struct moed_client *connect_or_die(const char *name)
{
	char err[256] = "";
	struct moed_connect_options o = { .name = name, .arena_size = 8 << 20, .error = err,
					  .error_len = sizeof(err) };
	struct moed_client *c = NULL;
	int r = moed_connect(daemon_.socket, &o, &c);
	ck_assert_msg(r == 0, "connect: %d %s", r, err);
	return c;
}

static struct moed_weights_shape shape_of(const struct ref_problem *p)
{
	return (struct moed_weights_shape){ .num_experts = p->e, .hidden_size = p->h,
					    .inter_size = p->i, .dtype = p->w_dtype,
					    .gated = p->gated };
}

/* Arena copies of a problem's inputs and a poisoned output. */
struct job_bufs {
	void *x, *out;
	int32_t *ids;
	float *tw;
	size_t out_bytes;
};

static int stage(struct moed_client *c, const struct ref_problem *p, struct job_bufs *b)
{
	const size_t ds = ref_dtype_size(p->io_dtype), pairs = (size_t)p->m * p->k;
	b->out_bytes = ref_out_elems(p) * ds;
	b->x = moed_arena_alloc(c, (size_t)p->m * p->h * ds);
	b->ids = moed_arena_alloc(c, pairs * 4);
	b->tw = moed_arena_alloc(c, pairs * 4);
	b->out = moed_arena_alloc(c, b->out_bytes);
	if (!b->x || !b->ids || !b->tw || !b->out)
		return -ENOMEM;
	memcpy(b->x, p->x, (size_t)p->m * p->h * ds);
	memcpy(b->ids, p->ids, pairs * 4);
	memcpy(b->tw, p->tw, pairs * 4);
	ref_poison(b->out, b->out_bytes);
	return 0;
}

static void unstage(struct moed_client *c, struct job_bufs *b)
{
	moed_arena_free(c, b->x);
	moed_arena_free(c, b->ids);
	moed_arena_free(c, b->tw);
	moed_arena_free(c, b->out);
}

static struct moed_moe_job job_for(const struct ref_problem *p, int handle, const struct job_bufs *b)
{
	return (struct moed_moe_job){
		.weights = (uint32_t)handle, .dtype = p->io_dtype, .activation = p->act,
		.no_combine = p->no_combine, .router_weight_on_input = p->router_weight_on_input,
		.num_tokens = p->m, .topk = p->k, .routed_scaling_factor = p->scale,
		.hidden = b->x, .topk_ids = b->ids, .topk_weights = b->tw, .output = b->out,
	};
}

/* Random job settings for the weight set in p (which keeps its shape). */
static void randomize_job(struct ref_problem *p, uint64_t *rng)
{
	static const uint32_t topks[] = { 1, 2, 8 };
	p->m = (uint32_t)test_rand_range(rng, 0, 24);
	p->k = topks[test_rand_range(rng, 0, 2)];
	if (p->k > p->e)
		p->k = p->e;
	p->io_dtype = (uint8_t)test_rand_range(rng, 0, 2);
	p->act = (uint8_t)(test_rand(rng) & 1);
	p->no_combine = test_rand(rng) & 1;
	p->router_weight_on_input = p->k == 1 && (test_rand(rng) & 1);
	p->scale = test_rand(rng) & 1 ? 1.0f : (float)(0.25 + 2 * test_rand_double(rng));
}

/*
 * One client process: registers a random weight set, runs `jobs` random jobs (some with
 * kwargs) and checks each; returns the number of wrong results (its exit status).
 */
static int client_process(uint64_t seed, int jobs, const char *wname)
{
	uint64_t rng = seed;
	struct ref_problem p = {
		.e = (uint32_t)test_rand_range(&rng, 2, 16), .h = (uint32_t)test_rand_range(&rng, 1, 96),
		.i = (uint32_t)test_rand_range(&rng, 1, 64), .gated = test_rand(&rng) & 1,
		.w_dtype = (uint8_t)test_rand_range(&rng, 0, 2),
	};
	ref_problem_fill(&p, &rng);
	ref_problem_free_inputs(&p);
	struct moed_client *c = connect_or_die(wname);
	const struct moed_weights_shape shape = shape_of(&p);
	int handle = moed_weights_register(c, wname, &shape, p.w13, p.w2);
	if (handle <= 0) {
		fprintf(stderr, "register: %s\n", moed_client_error(c));
		return 100;
	}
	struct moed_kwargs_builder *kb = moed_kwargs_builder_new();
	int wrong = 0;
	for (int j = 0; j < jobs; j++) {
		randomize_job(&p, &rng);
		ref_problem_fill_inputs(&p, &rng);
		struct job_bufs b;
		if (stage(c, &p, &b) < 0)
			return 101;
		struct moed_moe_job job = job_for(&p, handle, &b);
		job.user_data = (uint64_t)j;
		void *kw = NULL;
		if (test_rand(&rng) & 1) {
			size_t size;
			moed_kwargs_builder_reset(kb);
			moed_kwargs_add_int(kb, "num_threads", (int64_t)test_rand_range(&rng, 1, 2));
			moed_kwargs_add_int(kb, "block_rows", (int64_t)test_rand_range(&rng, 1, 100));
			const void *blob = moed_kwargs_data(kb, &size);
			kw = moed_arena_alloc(c, size);
			memcpy(kw, blob, size);
			job.kwargs = kw;
			job.kwargs_size = size;
		}
		struct moed_completion done;
		if (moed_submit_moe(c, &job, 1) != 1 || moed_wait(c, &done, 1, 30000) != 1) {
			fprintf(stderr, "job %d: %s\n", j, moed_client_error(c));
			return 102;
		}
		double *want = malloc(ref_out_elems(&p) * sizeof(double) + 8);
		ref_moe(&p, want);
		double e = ref_rel_error(p.io_dtype, b.out, want, ref_out_elems(&p));
		const uint32_t rank = p.no_combine ? 3 : 2;
		if (done.status || done.user_data != (uint64_t)j || done.out_rank != rank ||
		    done.out_shape[0] != p.m || e > ref_tolerance(p.io_dtype)) {
			fprintf(stderr, "job %d wrong: status %d (%s), error %.3g, M %u K %u H %u I %u E %u\n",
				j, done.status, done.message, e, p.m, p.k, p.h, p.i, p.e);
			wrong++;
		}
		free(want);
		moed_arena_free(c, kw);
		unstage(c, &b);
		ref_problem_free_inputs(&p);
	}
	moed_kwargs_builder_free(kb);
	moed_close(c);
	ref_problem_free(&p);
	return wrong;
}

static pid_t spawn_client(uint64_t seed, int jobs, const char *wname)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(client_process(seed, jobs, wname));
	return pid;
}

static void expect_exit0(pid_t pid, const char *who)
{
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s ended with status 0x%x", who,
		      status);
}

/* A control request that the daemon must refuse with `status`, its reply saying `words`. */
static void expect_refused(int sock, uint32_t type, const void *body, size_t len, int status,
			   const char *words)
{
	struct moed_reply rep;
	ck_assert_int_eq(raw_request(sock, type, body, len, &rep, NULL, 0), status);
	ck_assert_msg(strstr(rep.message, words), "reply '%s' lacks '%s'", rep.message, words);
}

START_TEST(many_clients_correct)
{
	test_daemon_start(&daemon_, NULL);
	pid_t pids[5];
	for (int i = 0; i < 5; i++) {
		char name[32];
		snprintf(name, sizeof(name), "client-%d", i);
		pids[i] = spawn_client(test_seed() + (uint64_t)i * 1000003, 12, name);
	}
	for (int i = 0; i < 5; i++)
		expect_exit0(pids[i], "a client");
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

START_TEST(clients_share_weights)
{
	test_daemon_start(&daemon_, NULL);
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 6, .h = 40, .i = 24, .gated = true, .w_dtype = MOED_DTYPE_BF16 };
	ref_problem_fill(&p, &rng);
	ref_problem_free_inputs(&p);
	const struct moed_weights_shape shape = shape_of(&p);

	struct moed_client *a = connect_or_die("a"), *b = connect_or_die("b");
	int ha = moed_weights_register(a, "shared", &shape, p.w13, p.w2);
	ck_assert_msg(ha > 0, "%s", moed_client_error(a));
	/* B names the same set without data: only attaching can succeed. */
	int hb = moed_weights_register(b, "shared", &shape, NULL, NULL);
	ck_assert_msg(hb > 0, "%s", moed_client_error(b));
	struct moed_weights_shape seen;
	struct moed_client *c = connect_or_die("c");
	int hc = moed_weights_attach(c, "shared", &seen);
	ck_assert_int_gt(hc, 0);
	ck_assert_mem_eq(&seen, &shape, sizeof(shape));

	/* The creator leaves; the others still compute with its weights. */
	moed_close(a);
	struct moed_client *users[] = { b, c };
	const int handles[] = { hb, hc };
	for (int u = 0; u < 2; u++) {
		randomize_job(&p, &rng);
		p.m = 9;
		ref_problem_fill_inputs(&p, &rng);
		struct job_bufs bufs;
		ck_assert_int_eq(stage(users[u], &p, &bufs), 0);
		struct moed_moe_job job = job_for(&p, handles[u], &bufs);
		struct moed_completion done;
		ck_assert_int_eq(moed_submit_moe(users[u], &job, 1), 1);
		ck_assert_int_eq(moed_wait(users[u], &done, 1, 30000), 1);
		ck_assert_msg(done.status == 0, "%s", done.message);
		double *want = malloc(ref_out_elems(&p) * sizeof(double));
		ref_moe(&p, want);
		ck_assert(ref_rel_error(p.io_dtype, bufs.out, want, ref_out_elems(&p)) <= ref_tolerance(p.io_dtype));
		free(want);
		unstage(users[u], &bufs);
		ref_problem_free_inputs(&p);
	}
	/* Same name, other shape: refused with the existing shape in the message. */
	struct moed_weights_shape other = shape;
	other.inter_size = 25;
	ck_assert_int_eq(moed_weights_register(b, "shared", &other, p.w13, p.w2), -EEXIST);
	ck_assert_ptr_nonnull(strstr(moed_client_error(b), "'shared' exists with another shape (E 6, H 40, I 24)"));

	/* The last holders leave: the set is gone. */
	ck_assert_int_eq(moed_weights_release(b, (uint32_t)hb), 0);
	ck_assert_int_eq(moed_weights_release(c, (uint32_t)hc), 0);
	moed_close(c);
	ck_assert_int_eq(moed_weights_attach(b, "shared", NULL), -ENOENT);
	ck_assert_ptr_nonnull(strstr(moed_client_error(b), "no weight set named 'shared'"));
	moed_close(b);
	ref_problem_free(&p);
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

/* Submit one job and return its completion. */
static struct moed_completion run_one(struct moed_client *c, const struct moed_moe_job *job)
{
	struct moed_completion done;
	ck_assert_int_eq(moed_submit_moe(c, job, 1), 1);
	ck_assert_int_eq(moed_wait(c, &done, 1, 30000), 1);
	return done;
}

static void *kwargs_blob(struct moed_client *c, struct moed_kwargs_builder *kb, size_t *size)
{
	const void *blob = moed_kwargs_data(kb, size);
	void *kw = moed_arena_alloc(c, *size);
	memcpy(kw, blob, *size);
	return kw;
}

START_TEST(errors_reach_the_client)
{
	test_daemon_start(&daemon_, NULL);
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 4, .h = 16, .i = 8, .m = 3, .k = 2, .gated = true, .scale = 1 };
	ref_problem_fill(&p, &rng);
	struct moed_client *c = connect_or_die("errors");
	const struct moed_weights_shape shape = shape_of(&p);
	int h = moed_weights_register(c, "w", &shape, p.w13, p.w2);
	ck_assert_int_gt(h, 0);
	struct job_bufs b;
	ck_assert_int_eq(stage(c, &p, &b), 0);

	static const struct {
		int kind;
		const char *words;
	} cases[] = {
		{ 0, "unknown kwarg 'tile_k' (this backend accepts: num_threads, block_rows)" },
		{ 1, "kwarg 'num_threads' must be int64, got string" },
		{ 2, "kwarg 'block_rows' = 0 is out of range [1, 65536]" },
		{ 3, "kwarg 'activation' would override a field of the job descriptor" },
		{ 4, "kwargs blob has magic 0x31574b4c, expected 0x31574b4d" },
	};
	struct moed_kwargs_builder *kb = moed_kwargs_builder_new();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		moed_kwargs_builder_reset(kb);
		switch (cases[i].kind) {
		case 0: moed_kwargs_add_int(kb, "tile_k", 4); break;
		case 1: moed_kwargs_add_string(kb, "num_threads", "2"); break;
		case 2: moed_kwargs_add_int(kb, "block_rows", 0); break;
		case 3: moed_kwargs_add_string(kb, "activation", "gelu"); break;
		case 4: moed_kwargs_add_int(kb, "block_rows", 4); break;
		}
		size_t size;
		unsigned char *kw = kwargs_blob(c, kb, &size);
		if (cases[i].kind == 4)
			kw[0] ^= 1; /* break the magic */
		for (int empty = 0; empty < 2; empty++) { /* also refused for empty input */
			struct moed_moe_job job = job_for(&p, h, &b);
			if (empty) {
				job.num_tokens = 0;
				job.hidden = job.output = NULL;
				job.topk_ids = NULL;
				job.topk_weights = NULL;
			}
			job.kwargs = kw;
			job.kwargs_size = size;
			struct moed_completion done = run_one(c, &job);
			ck_assert_int_eq(done.status, -EINVAL);
			ck_assert_msg(strstr(done.message, cases[i].words), "'%s' lacks '%s'", done.message,
				      cases[i].words);
		}
		moed_arena_free(c, kw);
	}
	moed_kwargs_builder_free(kb);

	/* An expert id outside [0, E): the job fails, the next one works. */
	b.ids[3] = 7;
	struct moed_moe_job job = job_for(&p, h, &b);
	struct moed_completion done = run_one(c, &job);
	ck_assert_int_eq(done.status, -EINVAL);
	ck_assert_ptr_nonnull(strstr(done.message, "topk_ids[1][1] = 7 is outside [0, 4)"));
	b.ids[3] = p.ids[3];
	ck_assert_int_eq(run_one(c, &job).status, 0);

	/* Hidden size other than the weight set's. */
	job.hidden_size = 8;
	job.hidden = b.x; /* 3 x 8 f32 fits in the staged 3 x 16 */
	done = run_one(c, &job);
	ck_assert_int_eq(done.status, -EINVAL);
	ck_assert_ptr_nonnull(strstr(done.message, "hidden_size 8 does not match its weight set's 16"));

	/* Buffers outside the arena are caught by the library before they travel. */
	job = job_for(&p, h, &b);
	job.output = (char *)b.out + (64 << 20);
	ck_assert_int_eq(moed_submit_moe(c, &job, 1), -EINVAL);
	ck_assert_ptr_nonnull(strstr(moed_client_error(c), "job 0: output"));
	job = job_for(&p, h, &b);
	job.weights = 33;
	ck_assert_int_eq(moed_submit_moe(c, &job, 1), -EINVAL);
	ck_assert_ptr_nonnull(strstr(moed_client_error(c), "weights handle 33 is not held"));

	/* Weight-set errors. */
	ck_assert_int_eq(moed_weights_attach(c, "nope", NULL), -ENOENT);
	struct moed_weights_shape bad = shape;
	bad.num_experts = 0;
	ck_assert_int_eq(moed_weights_register(c, "bad", &bad, p.w13, p.w2), -EINVAL);
	ck_assert_ptr_nonnull(strstr(moed_client_error(c), "num_experts 0 is outside [1, 4096]"));
	ck_assert_int_eq(moed_weights_release(c, 40), -EBADF);
	ck_assert_ptr_nonnull(strstr(moed_client_error(c), "weights handle 40 is not held"));

	unstage(c, &b);
	moed_close(c);
	ref_problem_free(&p);
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

/*
 * MoE jobs run on the daemon's runner thread, not in the poller: while one client's long
 * job runs, another client's no-ops complete; and one client's completions keep the order
 * of its submissions (a long job, then no-ops behind it).
 */
START_TEST(long_job_holds_up_no_other_client)
{
	test_daemon_start(&daemon_, NULL);
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 4, .h = 512, .i = 2048, .k = 2, .m = 64, .gated = true,
				 .io_dtype = MOED_DTYPE_BF16, .w_dtype = MOED_DTYPE_BF16, .scale = 1.0f };
	ref_problem_fill(&p, &rng);
	struct moed_client *slow = connect_or_die("slow"), *quick = connect_or_die("quick");
	const struct moed_weights_shape shape = shape_of(&p);
	int h = moed_weights_register(slow, "long", &shape, p.w13, p.w2);
	ck_assert_msg(h > 0, "%s", moed_client_error(slow));

	/* Size the job from a shorter one to run about 0.8 s here. */
	struct job_bufs b;
	ck_assert_int_eq(stage(slow, &p, &b), 0);
	struct moed_moe_job job = job_for(&p, h, &b);
	struct moed_completion done[3];
	double t0 = now_s();
	run_one(slow, &job);
	const double per_token = (now_s() - t0) / p.m;
	unstage(slow, &b);
	ref_problem_free_inputs(&p);
	p.m = (uint32_t)(0.8 / (per_token > 1e-6 ? per_token : 1e-6));
	p.m = p.m < 8 ? 8 : p.m > 3500 ? 3500 : p.m; /* what the 8 MiB arena holds */
	ref_problem_fill_inputs(&p, &rng);
	ck_assert_int_eq(stage(slow, &p, &b), 0);
	job = job_for(&p, h, &b);
	job.user_data = 100;

	t0 = now_s();
	ck_assert_int_eq(moed_submit_moe(slow, &job, 1), 1);
	const uint64_t after[2] = { 101, 102 };
	ck_assert_int_eq(moed_submit_nop(slow, after, 2), 2);
	usleep(20000); /* the runner has the job by now */
	const double t_nop = now_s();
	const uint64_t one = 7;
	ck_assert_int_eq(moed_submit_nop(quick, &one, 1), 1);
	ck_assert_int_eq(moed_wait(quick, done, 1, 30000), 1);
	const double nop_s = now_s() - t_nop;
	ck_assert_uint_eq(done[0].user_data, 7);

	int got = 0;
	while (got < 3) {
		int n = moed_wait(slow, done + got, 3 - got, 30000);
		ck_assert_int_gt(n, 0);
		got += n;
	}
	const double job_s = now_s() - t0;
	for (int i = 0; i < 3; i++) /* in submission order */
		ck_assert_uint_eq(done[i].user_data, 100 + (uint64_t)i);
	ck_assert_msg(done[0].status == 0, "%s", done[0].message);
	/* The first, middle and last tokens against the reference (all of them: seconds). */
	const uint32_t rows[3] = { 0, p.m / 2, p.m - 1 };
	double *want = malloc(3 * p.h * sizeof(double));
	uint16_t *rows_out = malloc(3 * p.h * sizeof(uint16_t));
	ref_moe_tokens(&p, rows, 3, want);
	for (int r = 0; r < 3; r++)
		memcpy(rows_out + r * p.h, (const uint16_t *)b.out + (size_t)rows[r] * p.h, p.h * 2);
	ck_assert_double_le(ref_rel_error(p.io_dtype, rows_out, want, 3 * p.h),
			    ref_tolerance(p.io_dtype));
	free(want);
	free(rows_out);
	fprintf(stderr, "M %u, %.3f s; no-op %.4f s\n", p.m, job_s, nop_s);
	if (job_s < 0.3)
		fprintf(stderr, "the long job took only %.2f s: hold-up not judged\n", job_s);
	else
		ck_assert_msg(nop_s < 0.5 * job_s,
			      "another client's no-op took %.3f s during a %.2f s job", nop_s, job_s);
	unstage(slow, &b);
	moed_close(slow);
	moed_close(quick);
	ref_problem_free(&p);
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

START_TEST(withheld_no_combine)
{
	const char *const args[] = { "--withhold", "no_combine", NULL };
	test_daemon_start(&daemon_, args);
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 4, .h = 16, .i = 8, .m = 3, .k = 2, .gated = true, .scale = 1 };
	ref_problem_fill(&p, &rng);
	struct moed_client *c = connect_or_die("old-kernel");
	ck_assert_int_eq(moed_supports_no_combine(c), 0);
	const struct moed_signature *sig = moed_signature(c);
	ck_assert_ptr_nonnull(sig);
	ck_assert_str_eq(sig->backend, "cpu");
	ck_assert_uint_eq(sig->kwarg_count, 2);
	ck_assert_str_eq(sig->kwargs[0].name, "num_threads");
	ck_assert_int_eq(sig->kwargs[0].max, 2); /* the daemon's --threads */
	ck_assert_ptr_eq(moed_signature(c), sig); /* cached */

	const struct moed_weights_shape shape = shape_of(&p);
	int h = moed_weights_register(c, "w", &shape, p.w13, p.w2);
	struct job_bufs b;
	p.no_combine = true;
	ck_assert_int_eq(stage(c, &p, &b), 0);
	struct moed_moe_job job = job_for(&p, h, &b);
	struct moed_completion done = run_one(c, &job);
	ck_assert_int_eq(done.status, -EOPNOTSUPP);
	ck_assert_ptr_nonnull(strstr(done.message, "backend 'cpu' does not support no_combine"));
	job.num_tokens = 0; /* refused before any empty-input shortcut */
	job.hidden = job.output = NULL;
	job.topk_ids = NULL;
	job.topk_weights = NULL;
	done = run_one(c, &job);
	ck_assert_int_eq(done.status, -EOPNOTSUPP);
	job.no_combine = false; /* the combined layout still works, empty or not */
	done = run_one(c, &job);
	ck_assert_int_eq(done.status, 0);
	ck_assert_uint_eq(done.out_rank, 2);
	ck_assert_uint_eq(done.out_shape[0], 0);
	ck_assert_uint_eq(done.out_shape[1], 16);
	unstage(c, &b);
	moed_close(c);
	ref_problem_free(&p);
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

START_TEST(limits_and_handshake_errors)
{
	/* --allow-user opens the socket file to everyone: SO_PEERCRED does the refusing. */
	const char *const args[] = { "--weights-max", "64K", "--arena-max", "16M",
				     "--arena-default", "8M", "--allow-user", "12345", NULL };
	test_daemon_start(&daemon_, args);
	chmod(daemon_.dir, 0755);
	char err[256];
	struct moed_connect_options o = { .arena_size = 32 << 20, .error = err, .error_len = sizeof(err) };
	struct moed_client *c = NULL;
	ck_assert_int_eq(moed_connect(daemon_.socket, &o, &c), -E2BIG);
	ck_assert_ptr_nonnull(strstr(err, "an arena of 33554432 bytes exceeds this daemon's limit of 16777216"));

	c = connect_or_die("limits");
	struct moed_weights_shape big = { .num_experts = 8, .hidden_size = 64, .inter_size = 64,
					  .dtype = MOED_DTYPE_F32, .gated = 1 };
	ck_assert_int_eq(moed_weights_register(c, "big", &big, NULL, NULL), -ENOSPC);
	ck_assert_ptr_nonnull(strstr(moed_client_error(c), "needs 393216 bytes; the daemon holds 0 of its 65536 limit"));
	moed_close(c);

	struct raw_client rc;
	struct moed_reply rep;
	ck_assert_int_eq(raw_connect(&rc, daemon_.socket, 99, &rep), -EPROTONOSUPPORT);
	ck_assert_ptr_nonnull(strstr(rep.message, "client speaks ABI version 99, this daemon 1"));
	raw_close(&rc);

	o.arena_size = 0;
	ck_assert_int_eq(moed_connect("/nonexistent/moed.sock", &o, &c), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "cannot connect to /nonexistent/moed.sock"));

	if (geteuid() == 0) { /* another user, not allowed: refused with a reason */
		pid_t pid = fork();
		if (pid == 0) {
			if (setgid(65534) || setuid(65534))
				_exit(99);
			struct moed_client *x = NULL;
			int r = moed_connect(daemon_.socket, &o, &x);
			if (r == -EACCES && strstr(err, "uid 65534") && strstr(err, "is not allowed"))
				_exit(0);
			fprintf(stderr, "refused client: %d %s\n", r, err);
			_exit(1);
		}
		expect_exit0(pid, "the refused client");
	}
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

START_TEST(hostile_raw_clients)
{
	test_daemon_start(&daemon_, NULL);
	uint64_t rng = test_seed();
	struct raw_client rc;
	struct moed_reply rep;
	ck_assert_int_eq(raw_connect(&rc, daemon_.socket, MOED_ABI_VERSION, &rep), 0);
	const uint64_t arena = rc.hdr.arena_size;

	/* Spans outside the arena, arithmetic that overflows, nonsense: each job fails alone. */
	struct moed_sqe sqe = { .opcode = MOED_OP_MOE, .num_tokens = 2, .topk = 1, .hidden_size = 4,
				.routed_scaling_factor = 1, .weights_id = 1,
				.hidden = { arena - 16, 32 }, .topk_ids = { 0, 8 },
				.topk_weights = { 64, 8 }, .output = { 128, 32 } };
	struct moed_cqe cqe;
	char msg[256];
	raw_submit(&rc, &sqe);
	ck_assert_int_eq(raw_reap(&rc, &cqe, msg, sizeof(msg)), 0);
	ck_assert_int_eq(cqe.status, -EINVAL);
	ck_assert_ptr_nonnull(strstr(msg, "hidden_states ["));
	ck_assert_ptr_nonnull(strstr(msg, "lies outside"));
	sqe.hidden = (struct moed_buf){ UINT64_MAX - 7, 32 };
	raw_submit(&rc, &sqe);
	ck_assert_int_eq(raw_reap(&rc, &cqe, msg, sizeof(msg)), 0);
	ck_assert_int_eq(cqe.status, -EINVAL);
	sqe.hidden = (struct moed_buf){ 256, 32 };
	raw_submit(&rc, &sqe); /* well-formed, but the client holds no weight handle 1 */
	ck_assert_int_eq(raw_reap(&rc, &cqe, msg, sizeof(msg)), 0);
	ck_assert_int_eq(cqe.status, -EBADF);
	ck_assert_ptr_nonnull(strstr(msg, "weights handle 1 is not held by this client"));

	for (int i = 0; i < 3000; i++) {
		unsigned char junk[sizeof(struct moed_sqe)];
		for (size_t k = 0; k < sizeof(junk); k += 8) {
			uint64_t v = test_rand(&rng);
			memcpy(junk + k, &v, 8);
		}
		if (i % 2) /* half of them look like plausible MoE jobs */
			junk[4] = MOED_OP_MOE, junk[7] = 0;
		memcpy(&sqe, junk, sizeof(sqe));
		sqe.user_data = (uint64_t)i;
		raw_submit(&rc, &sqe);
		ck_assert_int_eq(raw_reap(&rc, &cqe, NULL, 0), 0);
		ck_assert_uint_eq(cqe.user_data, (uint64_t)i); /* nothing lost or reordered */
	}

	/* Malformed control messages get error replies; the connection survives them. */
	unsigned char junk[sizeof(struct moed_hello)] = { 0 };
	expect_refused(rc.sock, 77, junk, 8, -EPROTO, "unknown message type 77");
	expect_refused(rc.sock, MOED_MSG_WEIGHTS_COMMIT, junk, 3, -EPROTO,
		       "needs a 8-byte body, got 3");
	ck_assert_int_eq(raw_request(rc.sock, MOED_MSG_HELLO, junk, sizeof(struct moed_hello), &rep, NULL, 0),
			 -EPROTONOSUPPORT);

	/* A second, well-behaved client is served while the first misbehaves. */
	struct raw_client good;
	ck_assert_int_eq(raw_connect(&good, daemon_.socket, MOED_ABI_VERSION, &rep), 0);



	/* An impossible completion-ring head: the daemon disconnects that client only. */
	struct moed_raw_ctl { uint32_t head; } *cq_head = (void *)(rc.region + rc.hdr.cq.ctl_offset);
	cq_head->head += 12345;
	for (int i = 0; i < 4; i++) {
		struct moed_sqe nop = { .opcode = MOED_OP_NOP };
		raw_submit(&rc, &nop);
	}
	char b;
	struct timeval tv = { .tv_sec = 10 };
	setsockopt(rc.sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ck_assert_int_eq(recv(rc.sock, &b, 1, 0), 0); /* hung up on */
	raw_close(&rc);

	/* Weight uploads out of order, outside the arena, incomplete, or after commit. */
	struct raw_client up_c;
	ck_assert_int_eq(raw_connect(&up_c, daemon_.socket, MOED_ABI_VERSION, &rep), 0);
	struct moed_weights_register reg = { .name = "raw", .shape = { .num_experts = 1,
		.hidden_size = 8, .inter_size = 8, .dtype = MOED_DTYPE_F32, .gated = 1 } };
	struct moed_weights_reply wr;
	ck_assert_int_eq(raw_request(up_c.sock, MOED_MSG_WEIGHTS_REGISTER, &reg, sizeof(reg), &rep,
				     &wr, sizeof(wr)), 0);
	ck_assert_uint_eq(wr.must_upload, 1);
	struct moed_weights_attach att = { .name = "raw" };
	expect_refused(good.sock, MOED_MSG_WEIGHTS_ATTACH, &att, sizeof(att), -EBUSY,
		       "weight set 'raw' is still being uploaded");
	struct moed_weights_upload up = { .weights_id = wr.weights_id, .tensor = MOED_TENSOR_W13,
					  .tensor_offset = 8, .arena_offset = 0, .length = 504 };
	expect_refused(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), -EINVAL,
		       "upload of w13 must continue at byte 0, not 8");
	up.tensor_offset = 0;
	up.length = 1024;
	expect_refused(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), -EINVAL,
		       "upload of 1024 bytes runs past the end of w13 (512 bytes)");
	up.arena_offset = arena - 100;
	up.length = 512;
	expect_refused(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), -EINVAL,
		       "upload source [");
	up.arena_offset = 0;
	up.tensor = 7;
	expect_refused(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), -EINVAL,
		       "unknown tensor 7");
	up.tensor = MOED_TENSOR_W13;
	ck_assert_int_eq(raw_request(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), &rep, NULL, 0), 0);
	struct moed_weights_ref ref = { .weights_id = wr.weights_id };
	expect_refused(up_c.sock, MOED_MSG_WEIGHTS_COMMIT, &ref, sizeof(ref), -EINVAL,
		       "'raw' is incomplete: w13 has 512 of 512 bytes, w2 0 of 256");
	up.tensor = MOED_TENSOR_W2;
	up.length = 256;
	ck_assert_int_eq(raw_request(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), &rep, NULL, 0), 0);
	ck_assert_int_eq(raw_request(up_c.sock, MOED_MSG_WEIGHTS_COMMIT, &ref, sizeof(ref), &rep, NULL, 0), 0);
	expect_refused(up_c.sock, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), -EPERM,
		       "'raw' is not open for upload by this client");
	ck_assert_int_eq(raw_request(good.sock, MOED_MSG_WEIGHTS_ATTACH, &att, sizeof(att), &rep, NULL, 0), 0);
	raw_close(&up_c);
	struct moed_sqe nop = { .opcode = MOED_OP_NOP, .user_data = 42 };
	raw_submit(&good, &nop);
	ck_assert_int_eq(raw_reap(&good, &cqe, NULL, 0), 0);
	ck_assert_int_eq(cqe.status, 0);
	ck_assert_uint_eq(cqe.user_data, 42);
	raw_close(&good);
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

/* An event loop's way to wait: arm the wake-up, poll the completion eventfd, reap. */
START_TEST(event_loop_wakeup)
{
	test_daemon_start(&daemon_, NULL);
	struct moed_client *c = connect_or_die("event-loop");
	const int fd = moed_completion_fd(c);
	ck_assert_int_ge(fd, 0);
	for (uint64_t i = 0; i < 200; i++) {
		ck_assert_int_eq(moed_submit_nop(c, &i, 1), 1);
		struct moed_completion done;
		int got = 0;
		while (!got) {
			if (moed_arm_wakeup(c) == 0) { /* nothing yet: sleep until signalled */
				struct pollfd p = { .fd = fd, .events = POLLIN };
				ck_assert_int_eq(poll(&p, 1, 10000), 1); /* a lost wake-up fails here */
				uint64_t v;
				ck_assert_int_eq(read(fd, &v, sizeof(v)), (int)sizeof(v));
			}
			got = moed_poll(c, &done, 1);
			ck_assert_int_ge(got, 0);
		}
		ck_assert_uint_eq(done.user_data, i);
		ck_assert_int_eq(done.status, 0);
	}
	ck_assert_uint_eq(moed_inflight(c), 0);
	size_t size;
	ck_assert_ptr_nonnull(moed_arena_base(c, &size));
	ck_assert_uint_eq(size, 8 << 20);
	moed_close(c);
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

START_TEST(sigkill_one_client)
{
	test_daemon_start(&daemon_, NULL);
	/* The victim streams jobs for ever; the others do a fixed amount of work. */
	pid_t victim = spawn_client(test_seed() ^ 0x5555, 1 << 30, "victim");
	pid_t others[3];
	for (int i = 0; i < 3; i++) {
		char name[32];
		snprintf(name, sizeof(name), "survivor-%d", i);
		others[i] = spawn_client(test_seed() + (uint64_t)i * 7, 14, name);
	}
	usleep(300000);
	kill(victim, SIGKILL);
	int status;
	waitpid(victim, &status, 0);
	for (int i = 0; i < 3; i++)
		expect_exit0(others[i], "a survivor");
	/* The victim's weight set went with it; a new client is served as usual. */
	struct moed_client *c = connect_or_die("after");
	int h = 0;
	for (int i = 0; i < 500 && (h = moed_weights_attach(c, "victim", NULL)) > 0; i++) {
		moed_weights_release(c, (uint32_t)h); /* a job of the victim's may still hold it */
		usleep(20000);
	}
	ck_assert_int_eq(h, -ENOENT);
	moed_close(c);
	expect_exit0(spawn_client(test_seed() + 99, 3, "late"), "a late client");
	ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
}
END_TEST

START_TEST(sigterm_finishes_inflight_jobs)
{
	test_daemon_start(&daemon_, NULL);
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 8, .h = 96, .i = 64, .m = 24, .k = 2, .gated = true, .scale = 1 };
	ref_problem_fill(&p, &rng);
	char err[256];
	struct moed_connect_options o = { .sq_entries = 64, .arena_size = 8 << 20, .error = err,
					  .error_len = sizeof(err) };
	struct moed_client *c = NULL;
	ck_assert_int_eq(moed_connect(daemon_.socket, &o, &c), 0);
	const struct moed_weights_shape shape = shape_of(&p);
	int h = moed_weights_register(c, "w", &shape, p.w13, p.w2);
	ck_assert_int_gt(h, 0);

	enum { N = 48 };
	struct job_bufs b[N];
	struct moed_moe_job jobs[N];
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(stage(c, &p, &b[i]), 0);
		jobs[i] = job_for(&p, h, &b[i]);
		jobs[i].user_data = (uint64_t)i;
	}
	ck_assert_int_eq(moed_submit_moe(c, jobs, N), N);
	kill(daemon_.pid, SIGTERM);

	double *want = malloc(ref_out_elems(&p) * sizeof(double));
	ref_moe(&p, want);
	bool seen[N] = { false };
	int got = 0, r;
	struct moed_completion done[8];
	while ((r = moed_wait(c, done, 8, 30000)) > 0) {
		for (int i = 0; i < r; i++) {
			ck_assert_int_eq(done[i].status, 0);
			ck_assert_uint_lt(done[i].user_data, N);
			ck_assert(!seen[done[i].user_data]);
			seen[done[i].user_data] = true;
			got++;
		}
	}
	ck_assert_int_eq(r, -ECONNRESET); /* then the daemon went */
	ck_assert_int_eq(got, N);
	for (int i = 0; i < N; i++)
		ck_assert(ref_rel_error(0, b[i].out, want, ref_out_elems(&p)) <= 1e-5);
	int status;
	ck_assert_int_eq(waitpid(daemon_.pid, &status, 0), daemon_.pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "moed exit status 0x%x", status);
	daemon_.pid = 0;
	test_daemon_stop(&daemon_);
	free(want);
	moed_close(c);
	ref_problem_free(&p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("daemon");

	tcase_add_test(tc, many_clients_correct);
	tcase_add_test(tc, clients_share_weights);
	tcase_add_test(tc, errors_reach_the_client);
	tcase_add_test(tc, long_job_holds_up_no_other_client);
	tcase_add_test(tc, withheld_no_combine);
	tcase_add_test(tc, limits_and_handshake_errors);
	tcase_add_test(tc, hostile_raw_clients);
	tcase_add_test(tc, event_loop_wakeup);
	tcase_add_test(tc, sigkill_one_client);
	tcase_add_test(tc, sigterm_finishes_inflight_jobs);
	tcase_set_timeout(tc, 300);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
