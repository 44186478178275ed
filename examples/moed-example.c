/* SPDX-License-Identifier: MIT */
/*
 * moed-example: a client end to end. Connects to a running moed (or starts one), registers
 * a random layer of a real model's shape (scaled down by default so that it runs in
 * seconds on two cores), runs jobs combined and with no_combine in each dtype, checks
 * every result against an f64 reference, and prints results and latency.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "moe_ref.h"
#include "moed/moed.h"

struct model {
	const char *name;
	uint32_t e, k, h, i;
};

static const struct model models[] = {
	{ "mixtral", 8, 2, 4096, 14336 },
	{ "qwen3", 128, 8, 2048, 768 },
	{ "deepseek", 256, 8, 7168, 2048 },
};

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static pid_t daemon_pid;
static char spawned_dir[64];

/* Start moed on a socket in a fresh directory; wait until it accepts connections. */
static int spawn_daemon(const char *moed, char *socket_path, size_t len)
{
	snprintf(spawned_dir, sizeof(spawned_dir), "/tmp/moed-example.XXXXXX");
	if (!mkdtemp(spawned_dir))
		return -errno;
	snprintf(socket_path, len, "%s/moed.sock", spawned_dir);
	daemon_pid = fork();
	if (daemon_pid < 0)
		return -errno;
	if (daemon_pid == 0) {
		execlp(moed, moed, "--socket", socket_path, "--log-level", "warning", (char *)NULL);
		fprintf(stderr, "moed-example: cannot run %s: %s\n", moed, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct stat st;
		if (stat(socket_path, &st) == 0)
			return 0;
		int status;
		if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
			daemon_pid = 0;
			return -ECHILD;
		}
		usleep(10000);
	}
	return -ETIMEDOUT;
}

static void stop_daemon(void)
{
	if (daemon_pid > 0) {
		int status;
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, &status, 0);
		daemon_pid = 0;
	}
	if (spawned_dir[0])
		rmdir(spawned_dir);
}

static const char *const dtype_names[] = { "f32", "bf16", "f16" };

static void usage(void)
{
	printf("Usage: moed-example [--model mixtral|qwen3|deepseek] [--scale N | --full]\n"
	       "                    [--tokens M] [--socket PATH] [--moed PATH] [--linger S]\n"
	       "Runs fused-MoE jobs through moed and checks them against an f64 reference.\n"
	       "Without --socket it connects to the default socket, or starts a daemon (--moed,\n"
	       "default: the one built beside this program) on a private socket.\n"
	       "--scale divides the model's hidden and expert sizes (default 16). --linger keeps\n"
	       "the connection and the weight set for S seconds after the jobs (to watch them\n"
	       "with moedctl).\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' }, { "scale", required_argument, NULL, 's' },
		{ "full", no_argument, NULL, 'f' },        { "tokens", required_argument, NULL, 't' },
		{ "socket", required_argument, NULL, 'S' }, { "moed", required_argument, NULL, 'D' },
		{ "linger", required_argument, NULL, 'L' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct model *model = &models[1];
	unsigned scale = 16, tokens = 16, linger = 0;
	char socket_path[108] = "", moed[PATH_MAX];
	int c;

	/* The daemon built beside this program (libtool runs us from .libs/), else $PATH's. */
	char self[PATH_MAX];
	snprintf(self, sizeof(self), "%s", argv[0]);
	char *dir = dirname(self);
	size_t dl = strlen(dir);
	if (dl >= 6 && !strcmp(dir + dl - 6, "/.libs"))
		dir[dl - 6] = 0;
	else if (!strcmp(dir, ".libs"))
		snprintf(dir, 2, ".");
	snprintf(moed, sizeof(moed), "%s/../daemon/moed", dir);
	if (access(moed, X_OK) != 0)
		snprintf(moed, sizeof(moed), "moed");
	while ((c = getopt_long(argc, argv, "m:s:ft:S:D:L:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			model = NULL;
			for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
				if (!strcmp(optarg, models[i].name))
					model = &models[i];
			if (!model) {
				fprintf(stderr, "moed-example: unknown model '%s'\n", optarg);
				return 2;
			}
			break;
		case 's': scale = (unsigned)atoi(optarg); break;
		case 'f': scale = 1; break;
		case 't': tokens = (unsigned)atoi(optarg); break;
		case 'S': snprintf(socket_path, sizeof(socket_path), "%s", optarg); break;
		case 'D': snprintf(moed, sizeof(moed), "%s", optarg); break;
		case 'L': linger = (unsigned)atoi(optarg); break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (scale < 1 || tokens < 1 || tokens > 65536) {
		fprintf(stderr, "moed-example: --scale and --tokens must be positive\n");
		return 2;
	}

	struct ref_problem p = {
		.e = model->e, .k = model->k, .h = model->h / scale, .i = model->i / scale,
		.m = tokens, .gated = true, .scale = 1.0f, .w_dtype = MOED_DTYPE_BF16,
	};
	if (!p.h || !p.i) {
		fprintf(stderr, "moed-example: --scale %u leaves nothing of the model\n", scale);
		return 2;
	}
	const size_t w13_bytes = (size_t)p.e * 2 * p.i * p.h * 2, w2_bytes = (size_t)p.e * p.h * p.i * 2;
	const uint64_t arena = (w13_bytes + w2_bytes) / 2 + ((uint64_t)tokens * p.k * p.h * 4 + (64 << 20));

	char err[256] = "";
	struct moed_connect_options copts = { .name = "moed-example", .arena_size = arena,
					      .error = err, .error_len = sizeof(err) };
	struct moed_client *cl = NULL;
	int r = moed_connect(socket_path[0] ? socket_path : NULL, &copts, &cl);
	if ((r == -ENOENT || r == -ECONNREFUSED) && !socket_path[0]) {
		printf("no daemon on the default socket: starting %s\n", moed);
		if ((r = spawn_daemon(moed, socket_path, sizeof(socket_path))) < 0) {
			fprintf(stderr, "moed-example: cannot start the daemon: %s\n", strerror(-r));
			stop_daemon();
			return 1;
		}
		r = moed_connect(socket_path, &copts, &cl);
	}
	if (r < 0) {
		fprintf(stderr, "moed-example: %s\n", err);
		stop_daemon();
		return 1;
	}

	const struct moed_signature *sig = moed_signature(cl);
	if (!sig) {
		fprintf(stderr, "moed-example: signature: %s\n", moed_client_error(cl));
		goto fail;
	}
	printf("connected: backend %s, no_combine %s, kwargs:", sig->backend,
	       moed_supports_no_combine(cl) > 0 ? "yes" : "no");
	for (uint32_t i = 0; i < sig->kwarg_count; i++)
		printf(" %s", sig->kwargs[i].name);
	printf("\n");

	uint64_t rng = test_seed();
	printf("layer: %s / %u: E %u, top-k %u, H %u, I %u, bf16 weights (%.1f MiB), %u tokens\n",
	       model->name, scale, p.e, p.k, p.h, p.i, (double)(w13_bytes + w2_bytes) / 1048576.0, tokens);
	p.io_dtype = MOED_DTYPE_BF16;
	ref_problem_fill(&p, &rng); /* weights (and a first batch of inputs) */

	const struct moed_weights_shape shape = { .num_experts = p.e, .hidden_size = p.h,
						  .inter_size = p.i, .dtype = p.w_dtype, .gated = 1 };
	char wname[64];
	snprintf(wname, sizeof(wname), "example-%s-%u-%d", model->name, scale, (int)getpid());
	double t0 = now_us();
	int handle = moed_weights_register(cl, wname, &shape, p.w13, p.w2);
	if (handle < 0) {
		fprintf(stderr, "moed-example: weights: %s\n", moed_client_error(cl));
		goto fail;
	}
	printf("weights uploaded in %.1f ms\n", (now_us() - t0) / 1e3);

	int failures = 0;
	printf("\n%-6s %-11s %10s %10s %12s %10s\n", "dtype", "layout", "run us", "round us", "rel. error", "bound");
	for (uint8_t dt = 0; dt < 3; dt++) {
		for (int nc = 0; nc < 2; nc++) {
			/* Fresh inputs and routing in this dtype; the weights stay. */
			struct ref_problem q = p;
			q.io_dtype = dt;
			q.no_combine = nc;
			ref_problem_fill_inputs(&q, &rng);

			const size_t ds = ref_dtype_size(dt), pairs = (size_t)q.m * q.k;
			const size_t out_bytes = ref_out_elems(&q) * ds;
			void *x = moed_arena_alloc(cl, (size_t)q.m * q.h * ds);
			int32_t *ids = moed_arena_alloc(cl, pairs * 4);
			float *tw = moed_arena_alloc(cl, pairs * 4);
			void *out = moed_arena_alloc(cl, out_bytes);
			if (!x || !ids || !tw || !out) {
				fprintf(stderr, "moed-example: arena full\n");
				goto fail;
			}
			memcpy(x, q.x, (size_t)q.m * q.h * ds);
			memcpy(ids, q.ids, pairs * 4);
			memcpy(tw, q.tw, pairs * 4);
			ref_poison(out, out_bytes);

			const struct moed_moe_job job = {
				.user_data = (uint64_t)(dt * 2 + nc), .weights = (uint32_t)handle,
				.dtype = dt, .activation = MOED_ACT_SILU, .no_combine = nc,
				.num_tokens = q.m, .topk = q.k, .hidden = x, .topk_ids = ids,
				.topk_weights = tw, .output = out,
			};
			struct moed_completion done;
			t0 = now_us();
			if (moed_submit_moe(cl, &job, 1) != 1 || moed_wait(cl, &done, 1, 60000) != 1) {
				fprintf(stderr, "moed-example: %s\n", moed_client_error(cl));
				goto fail;
			}
			double round = now_us() - t0;
			if (done.status < 0) {
				fprintf(stderr, "moed-example: job failed: %s\n", done.message);
				goto fail;
			}
			double *want = malloc(ref_out_elems(&q) * sizeof(double));
			ref_moe(&q, want);
			double e = ref_rel_error(dt, out, want, ref_out_elems(&q));
			bool ok = e <= ref_tolerance(dt);
			failures += !ok;
			printf("%-6s %-11s %10.0f %10.0f %12.3g %10.0e %s\n", dtype_names[dt],
			       nc ? "no_combine" : "combined", (double)done.run_ns / 1e3, round, e,
			       ref_tolerance(dt), ok ? "ok" : "WRONG");
			free(want);
			moed_arena_free(cl, x);
			moed_arena_free(cl, ids);
			moed_arena_free(cl, tw);
			moed_arena_free(cl, out);
			ref_problem_free_inputs(&q);
		}
	}

	/* Round trip of empty jobs: the IPC cost alone. */
	enum { NOPS = 2000 };
	static double rt[NOPS];
	for (int i = 0; i < NOPS; i++) {
		uint64_t ud = (uint64_t)i;
		struct moed_completion done;
		t0 = now_us();
		if (moed_submit_nop(cl, &ud, 1) != 1 || moed_wait(cl, &done, 1, 10000) != 1) {
			fprintf(stderr, "moed-example: %s\n", moed_client_error(cl));
			goto fail;
		}
		rt[i] = now_us() - t0;
	}
	for (int i = 1; i < NOPS; i++)
		for (int j = i; j > 0 && rt[j - 1] > rt[j]; j--) {
			double t = rt[j];
			rt[j] = rt[j - 1];
			rt[j - 1] = t;
		}
	printf("\nempty-job round trip over %d jobs: p50 %.2f us, p99 %.2f us\n", NOPS, rt[NOPS / 2],
	       rt[NOPS * 99 / 100]);

	if (linger) {
		printf("lingering for %u s\n", linger);
		fflush(stdout);
		sleep(linger);
	}
	moed_weights_release(cl, (uint32_t)handle);
	moed_close(cl);
	ref_problem_free(&p);
	stop_daemon();
	printf("%s: %d of 6 jobs matched the reference\n", failures ? "FAILED" : "OK", 6 - failures);
	return failures ? 1 : 0;
fail:
	moed_close(cl);
	stop_daemon();
	return 1;
}
