/* SPDX-License-Identifier: MIT */
/*
 * Daemon benchmark (not a test). In one run, on this machine:
 *   IPC: the round trip of an empty job through moed, with the client spinning and with
 *        the client sleeping on its eventfd, beside the floors measured in the same run
 *        (a cache line ping-ponged between two processes; a spinning responder waking a
 *        sleeping client with an eventfd write()), and the throughput of empty jobs from
 *        one client in batches (TARGETS.md, "Local IPC").
 *   MoE: the CPU backend's time on scaled-down real layers, kernel alone (run_ns) and
 *        the full path through the daemon, beside this machine's floors: memory copy
 *        bandwidth and the f32 matrix-multiply rate (OpenBLAS sgemm where built with it).
 *        With -b hip: TARGETS.md's layers in full through the daemon on the GPU (run_ns:
 *        sorting, copies and kernels; full: the client's round trip), beside the card's
 *        floors when -F gives them (moed-gpu-bench measures them). -s sets how long the
 *        daemon and the client busy-wait (--spin-us; default: the daemon's 50 us and the
 *        library's 20 us), to time the path where cores are spent on latency.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "helpers.h"
#include "ipc_floor.h"
#include "moe_ref.h"
#include "moed/moed.h"
#include "stats.h"
#include "targets.h"

static pid_t daemon_pid;
static char dir[64], sock[108];
static long moe_spin_us = -1; /* -s: the MoE rows' daemon and client spin, or -1: defaults */

/* The daemon's --spin-us for the MoE rows: -s's, or its default. */
static void moe_daemon_spin(char *buf, size_t len)
{
	snprintf(buf, len, "%ld", moe_spin_us >= 0 ? moe_spin_us : 50L);
}

static void start_daemon(const char *moed, const char *spin_us, int pin_cpu, const char *backend)
{
	snprintf(dir, sizeof(dir), "/tmp/moed-bench.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(sock, sizeof(sock), "%s/moed.sock", dir);
	daemon_pid = fork();
	if (daemon_pid == 0) {
		if (pin_cpu >= 0)
			bench_pin(pin_cpu);
		execlp(moed, moed, "--socket", sock, "--spin-us", spin_us, "--log-level", "warning",
		       "--backend", backend, "--config", "/dev/null", (char *)NULL);
		fprintf(stderr, "cannot run %s: %s\n", moed, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct stat st;
		if (stat(sock, &st) == 0)
			return;
		usleep(10000);
	}
	fprintf(stderr, "moed did not start\n");
	exit(1);
}

static void stop_daemon(void)
{
	int status;
	kill(daemon_pid, SIGTERM);
	waitpid(daemon_pid, &status, 0);
	rmdir(dir);
}

static struct moed_client *connect_daemon(uint64_t arena)
{
	char err[256];
	struct moed_connect_options o = { .name = "bench", .arena_size = arena, .sq_entries = 256,
					  .error = err, .error_len = sizeof(err) };
	struct moed_client *c;
	if (moed_connect(sock, &o, &c) < 0) {
		fprintf(stderr, "connect: %s\n", err);
		exit(1);
	}
	return c;
}

static struct percentiles nop_round_trips(struct moed_client *c, long n, uint64_t *t)
{
	struct moed_completion done;
	for (long i = 0; i < n; i++) {
		uint64_t ud = (uint64_t)i, t0 = now_ns();
		if (moed_submit_nop(c, &ud, 1) != 1 || moed_wait(c, &done, 1, 10000) != 1) {
			fprintf(stderr, "nop: %s\n", moed_client_error(c));
			exit(1);
		}
		t[i] = now_ns() - t0;
	}
	return percentiles_of(t, (size_t)n);
}

/* Empty jobs per second from one client, keeping up to `batch` in flight. */
static double nop_throughput(struct moed_client *c, unsigned batch, long total)
{
	static struct moed_completion done[256];
	static uint64_t ud[256];
	long sent = 0, reaped = 0;
	uint64_t t0 = now_ns();
	while (reaped < total) {
		unsigned room = batch - moed_inflight(c);
		if (room && sent < total) {
			if (room > total - sent)
				room = (unsigned)(total - sent);
			int k = moed_submit_nop(c, ud, room);
			if (k < 0)
				exit(1);
			sent += k;
		}
		int r = moed_poll(c, done, 256);
		if (r < 0)
			exit(1);
		reaped += r;
	}
	return (double)total / ((double)(now_ns() - t0) * 1e-9);
}

static void row(const char *name, struct percentiles p, struct percentiles floor)
{
	printf("  %-40s %8.2f %8.2f %8.2f   %5.2fx %5.2fx %5.2fx\n", name, p.p50 / 1e3, p.p99 / 1e3,
	       p.p999 / 1e3, p.p50 / floor.p50, p.p99 / floor.p99, p.p999 / floor.p999);
}

/* ---- MoE floors ------------------------------------------------------------------------- */

/* Copy bandwidth, bytes read + written per second, best of several 256 MiB copies. */
static double copy_bandwidth(void)
{
	const size_t n = (size_t)256 << 20;
	char *a = malloc(n), *b = malloc(n);
	memset(a, 1, n);
	memset(b, 2, n);
	double best = 0;
	for (int i = 0; i < 5; i++) {
		uint64_t t0 = now_ns();
		memcpy(i & 1 ? a : b, i & 1 ? b : a, n);
		double bw = 2.0 * (double)n / ((double)(now_ns() - t0) * 1e-9);
		best = bw > best ? bw : best;
	}
	free(a);
	free(b);
	return best;
}

/* f32 matrix-multiply rate (FLOP/s): OpenBLAS sgemm, else a plain loop (labelled). */
static double matmul_rate(const char **how)
{
	const int n = 1024;
	float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
	      *c = calloc((size_t)n * n, sizeof(float));
	for (int i = 0; i < n * n; i++)
		a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.2f;
	double best = 0;
	for (int rep = 0; rep < 4; rep++) {
		uint64_t t0 = now_ns();
#ifdef HAVE_OPENBLAS
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
		*how = "OpenBLAS sgemm";
#else
		for (int i = 0; i < n; i++)
			for (int j = 0; j < n; j++) {
				float s = 0;
				for (int k = 0; k < n; k++)
					s += a[i * n + k] * b[j * n + k];
				c[i * n + j] = s;
			}
		*how = "a plain C loop (configure found no OpenBLAS)";
#endif
		double r = 2.0 * n * n * (double)n / ((double)(now_ns() - t0) * 1e-9);
		best = r > best ? r : best;
	}
	free(a);
	free(b);
	free(c);
	return best;
}

struct shape {
	const char *name;
	uint32_t e, k, h, i;
	const double *anchor_us; /* TARGETS.md's anchor at target_ms[] (full-size layers) */
};

/* floor / full over the GPU rows */
static struct target_means full_means;

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Rows of one layer through the daemon; bw or rate 0: no floor known (printed as -). */
static void moe_rows(const struct shape *s, const unsigned *ms, int nm, double bw, double rate, bool gpu)
{
	uint64_t rng = test_seed();
	struct ref_problem p = { .e = s->e, .k = s->k, .h = s->h, .i = s->i, .gated = true,
				 .w_dtype = MOED_DTYPE_BF16, .io_dtype = MOED_DTYPE_BF16, .scale = 1 };
	ref_problem_fill(&p, &rng);
	ref_problem_free_inputs(&p);
	const uint64_t wbytes = (uint64_t)p.e * 3 * p.i * p.h * 2;
	uint64_t io = 0;
	for (int mi = 0; mi < nm; mi++)
		io = (uint64_t)ms[mi] * (4ull * p.h + 8ull * p.k) > io ? (uint64_t)ms[mi] * (4ull * p.h + 8ull * p.k) : io;
	/* The CPU runs from the arena's half of the weights' size; a GPU needs room for the
	 * largest job's inputs and output, and a stage for the weight upload. */
	struct moed_client *c = connect_daemon(gpu ? io + (256 << 20) : wbytes / 2 + (64 << 20));
	if (moe_spin_us >= 0)
		moed_set_spin_us(c, (uint32_t)moe_spin_us);
	const struct moed_weights_shape shape = { .num_experts = p.e, .hidden_size = p.h,
						  .inter_size = p.i, .dtype = p.w_dtype, .gated = 1 };
	int handle = moed_weights_register(c, s->name, &shape, p.w13, p.w2);
	if (handle < 0) {
		fprintf(stderr, "weights: %s\n", moed_client_error(c));
		exit(1);
	}
	for (int mi = 0; mi < nm; mi++) {
		p.m = ms[mi];
		ref_problem_fill_inputs(&p, &rng);
		const size_t pairs = (size_t)p.m * p.k;
		void *x = moed_arena_alloc(c, (size_t)p.m * p.h * 2), *out = moed_arena_alloc(c, (size_t)p.m * p.h * 2);
		int32_t *ids = moed_arena_alloc(c, pairs * 4);
		float *tw = moed_arena_alloc(c, pairs * 4);
		memcpy(x, p.x, (size_t)p.m * p.h * 2);
		memcpy(ids, p.ids, pairs * 4);
		memcpy(tw, p.tw, pairs * 4);

		bool used[1024] = { false };
		unsigned nused = 0;
		for (size_t q = 0; q < pairs; q++)
			if (!used[p.ids[q]])
				used[p.ids[q]] = true, nused++;
		const double bytes = (double)nused * 3 * p.i * p.h * 2 + 2.0 * p.m * p.h * 2;
		const double flops = 2.0 * pairs * 3 * p.i * p.h;
		const double floor_us = bw > 0 && rate > 0 ? fmax(bytes / bw, flops / rate) * 1e6 : NAN;

		const struct moed_moe_job job = { .weights = (uint32_t)handle, .dtype = MOED_DTYPE_BF16,
						  .num_tokens = p.m, .topk = p.k, .hidden = x,
						  .topk_ids = ids, .topk_weights = tw, .output = out };
		enum { REPS = 7 };
		double kern[REPS], full[REPS];
		for (int r = 0; r < REPS; r++) {
			struct moed_completion done;
			uint64_t t0 = now_ns();
			if (moed_submit_moe(c, &job, 1) != 1 || moed_wait(c, &done, 1, 600000) != 1 || done.status) {
				fprintf(stderr, "job: %s %s\n", moed_client_error(c), done.message);
				exit(1);
			}
			full[r] = (double)(now_ns() - t0) / 1e3;
			kern[r] = (double)done.run_ns / 1e3;
		}
		qsort(kern, REPS, sizeof(double), cmp_double);
		qsort(full, REPS, sizeof(double), cmp_double);
		printf("  %-22s %6u %9.0f %9.0f %9.0f   %5.2f %5.2f", s->name, p.m, floor_us, kern[REPS / 2],
		       full[REPS / 2], floor_us / kern[REPS / 2], floor_us / full[REPS / 2]);
		const double anchor = s->anchor_us && mi < TARGET_ROWS ? s->anchor_us[mi] : 0;
		if (anchor > 0)
			printf(" %9.0f %8.2fx", anchor, anchor / full[REPS / 2]);
		printf("\n");
		if (gpu && floor_us > 0)
			target_means_add(&full_means, p.m, floor_us / full[REPS / 2]);
		fflush(stdout);
		moed_arena_free(c, x);
		moed_arena_free(c, out);
		moed_arena_free(c, ids);
		moed_arena_free(c, tw);
		ref_problem_free_inputs(&p);
	}
	moed_close(c);
	ref_problem_free(&p);
}

int main(int argc, char **argv)
{
	long n = 100000;
	bool moe = true, ipc = true;
	char moed[PATH_MAX], self[PATH_MAX];
	int opt;

	snprintf(self, sizeof(self), "%s", argv[0]);
	char *d = dirname(self);
	size_t dl = strlen(d);
	if (dl >= 6 && !strcmp(d + dl - 6, "/.libs"))
		d[dl - 6] = 0;
	snprintf(moed, sizeof(moed), "%s/../daemon/moed", d);
	if (access(moed, X_OK))
		snprintf(moed, sizeof(moed), "moed");
	const char *backend = "cpu";
	double gpu_bw = 0, gpu_rate = 0;
	while ((opt = getopt(argc, argv, "n:D:imb:F:s:h")) != -1) {
		switch (opt) {
		case 'n': n = atol(optarg); break;
		case 's':
			moe_spin_us = atol(optarg);
			if (moe_spin_us < 0 || moe_spin_us > 1000000) {
				fprintf(stderr, "-s wants microseconds from 0 to 1000000\n");
				return 2;
			}
			break;
		case 'D': snprintf(moed, sizeof(moed), "%s", optarg); break;
		case 'i': moe = false; break;
		case 'm': ipc = false; break;
		case 'b': backend = optarg; break;
		case 'F':
			if (sscanf(optarg, "%lf,%lf", &gpu_bw, &gpu_rate) != 2 || gpu_bw <= 0 || gpu_rate <= 0) {
				fprintf(stderr, "-F wants COPY_TB_PER_S,MATMUL_TFLOP_PER_S, e.g. 3.01,786\n");
				return 2;
			}
			gpu_bw *= 1e12, gpu_rate *= 1e12;
			break;
		default:
			printf("usage: %s [-n ROUND_TRIPS] [-D MOED] [-i: IPC only] [-m: MoE only]\n"
			       "       [-b BACKEND: MoE on that backend, TARGETS.md's layers in full]\n"
			       "       [-F COPY_TB_PER_S,MATMUL_TFLOP_PER_S: the GPU's floors]\n"
			       "       [-s SPIN_US: the MoE rows' daemon and client busy-wait]\n", argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (n < 1000) {
		fprintf(stderr, "-n must be at least 1000\n");
		return 2;
	}
	uint64_t *t = calloc((size_t)n, sizeof(*t));
	alarm(1800);

	if (ipc) {
		printf("IPC, %ld round trips each, client on CPU 0, responder or daemon on CPU 1\n", n);
		printf("  %-40s %8s %8s %8s   %s\n", "round trip (us)", "p50", "p99", "p99.9", "ratio to its floor");
		struct percentiles line = floor_cacheline(n, t);
		struct percentiles efd = floor_eventfd_wake(n, t);
		start_daemon(moed, "1000000", 1, "cpu");
		bench_pin(0);
		struct moed_client *c = connect_daemon(1 << 20);
		nop_round_trips(c, n / 10, t); /* warm-up */
		moed_set_spin_us(c, 1000000);
		struct percentiles spin = nop_round_trips(c, n, t);
		moed_set_spin_us(c, 0);
		struct percentiles sleep = nop_round_trips(c, n, t);
		row("floor: cache line ping-pong", line, line);
		row("moed empty job, client spinning", spin, line);
		row("floor: eventfd write() wakes a sleeper", efd, efd);
		row("moed empty job, client sleeping", sleep, efd);
		moed_set_spin_us(c, 1000000);
		printf("\n  empty jobs per second from one client (million):\n");
		const unsigned batches[] = { 1, 32, 256 };
		for (int i = 0; i < 3; i++)
			printf("    up to %3u in flight  %8.2f\n", batches[i],
			       nop_throughput(c, batches[i], 20 * n) / 1e6);
		moed_close(c);
		stop_daemon();
		cpu_set_t all;
		CPU_ZERO(&all);
		for (int i = 0; i < CPU_SETSIZE; i++)
			CPU_SET(i, &all);
		sched_setaffinity(0, sizeof(all), &all);
	}
	if (moe && strcmp(backend, "cpu")) {
		/* TARGETS.md's layers in full, on a GPU backend; the floors, when given, come from
		 * moed-gpu-bench's measurement on the same card. */
		printf("\nMoE through the daemon on backend %s (TARGETS.md's layers, bf16)\n", backend);
		if (gpu_bw > 0)
			printf("  floors given: copy %.2f TB/s, bf16 matmul %.0f TFLOP/s\n", gpu_bw / 1e12,
			       gpu_rate / 1e12);
		printf("  %-22s %6s %9s %9s %9s   %5s %5s %9s %9s\n", "layer", "M", "floor us", "run us",
		       "full us", "f/run", "f/full", "anchor us", "vs anchor");
		char spin[24];
		moe_daemon_spin(spin, sizeof(spin));
		printf("  daemon --spin-us %s, client spin %s us\n", spin, moe_spin_us >= 0 ? spin : "20 (default)");
		start_daemon(moed, spin, -1, backend);
		for (int i = 0; i < TARGET_MODELS; i++) {
			const struct target_model *row = &target_models[i];
			const struct shape s = { row->name, row->e, row->k, row->h, row->i, row->anchor_us };
			moe_rows(&s, target_ms, TARGET_ROWS, gpu_bw, gpu_rate, true);
		}
		stop_daemon();
		/* "vs anchor" sets the whole path (copies, sorting, the daemon) against the
		 * anchor's kernels alone, as TARGETS.md asks of the full path. */
		if (full_means.all)
			target_means_print(&full_means, "  ", "floor/full");
	} else if (moe) {
		const char *how = "";
		const double bw = copy_bandwidth(), rate = matmul_rate(&how);
		printf("\nMoE on the CPU backend (bf16 weights and I/O, f32 accumulation, %ld CPUs)\n",
		       sysconf(_SC_NPROCESSORS_ONLN));
		printf("  floors: copy %.1f GB/s (read + written), f32 matmul %.1f GFLOP/s (%s)\n",
		       bw / 1e9, rate / 1e9, how);
		printf("  %-22s %6s %9s %9s %9s   %5s %5s\n", "layer (scaled)", "M", "floor us",
		       "kernel us", "full us", "f/ker", "f/full");
		char spin[24];
		moe_daemon_spin(spin, sizeof(spin));
		start_daemon(moed, spin, -1, "cpu");
		const struct shape shapes[] = {
			{ "qwen3-30b-a3b/8", 128, 8, 256, 96, NULL }, /* scaled: no anchor */
			{ "mixtral-8x7b/16", 8, 2, 256, 896, NULL },
			{ "deepseek-v3/16", 256, 8, 448, 128, NULL },
		};
		const unsigned ms[] = { 1, 16, 64, 256 };
		for (int i = 0; i < 3; i++)
			moe_rows(&shapes[i], ms, 4, bw, rate, false);
		stop_daemon();
	}
	free(t);
	return 0;
}
