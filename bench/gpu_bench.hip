// SPDX-License-Identifier: MIT
//
// GPU benchmark (not a test), for the device machine: the rows of TARGETS.md, each timed
// with events over many warm replays of a CUDA graph of ten launches of the job (after
// 25 ms of replays; the median replay, over ten): the way vLLM's and SGLang's MoE
// benchmarks time the Triton kernel whose figures are the anchor (ten calls captured in
// one graph, a replay's time over ten). A graph of one job is timed too ("1 a graph",
// versions up to 24 took it): its events count as well the host's launch of the graph,
// which the GPU idles for after the first event. "launched" is the same job launched
// kernel by kernel, as the backend does. Beside them, floors measured on this card in the
// same run:
// device copy bandwidth (bytes read + written) and the bf16 matrix rate of
// cuBLAS. Floor = max(bytes that must move / bandwidth, FLOPs / rate), where the bytes
// are the weights of every expert that at least one token uses plus input and output.
// The rate is measured twice: cold, once at the start (the card line), and warm, right
// after the timing of any row whose FLOPs could set its floor, in the state that row
// left the card in (the median of as many runs); the floor takes the warm one. A card
// held at its power limit lowers its clocks within tens of ms (H200: cuBLAS 834 TFLOP/s
// cold, 664 after 100 ms, bench/RESULTS.md version 16), and every row is timed warm. The
// means against the cold rate are printed as well (versions up to 15 used only that).
// Prints floor/time, the anchor's time from TARGETS.md and moed's speed against it, and
// where MOED_BENCH_TORCH names bench/torch_moe.py's output, the PyTorch reference's time
// and moed's speed against it (moed's time with sorting, as PyTorch's includes routing).
// "kernel" excludes token sorting (as the anchor's figure does); "with sort" is the full
// path measured the same way (TARGETS.md): the host's sorting (wall time, median), plus a
// graph of the backend's launch with its upload of the result (a copy, or a decode
// kernel's own reads from the pinned stage), the device's placing of a large job's pairs
// and the kernels, replayed in turn with the kernels' graph. Versions up to 16 added
// instead the host's sorting with its copy queued and waited for (the runtime's call and
// the wait counted); those means are printed as well.
// MOED_BENCH_ONLY="Qwen3-30B-A3B:1,Mixtral-8x7B:4096" times only those rows (for profilers);
// an M that is not a row of TARGETS.md (1 to 4096) adds that row, out of the means and
// without an anchor (to try the plan's choices on other sizes);
// each row draws its routing from its own seed (row_seed), the same in any subset of rows,
// and MOED_BENCH_SEED=n draws another routing for every row. MOED_BENCH_BALANCED=1 gives
// every expert the same count instead (pair p to expert p mod E; the router weights as
// drawn): the kernels' time without the padding of tiles that random counts leave, a
// bound for what cutting the tiles better could give (bench/RESULTS.md, version 30).
// MOED_BENCH_TWO_LAYERS=1 has the graphs' jobs alternate between two copies of the
// weights, as two layers of a model would: no job then finds the one before's weights in
// L2 (a decode job's few experts fit there in part: bench/RESULTS.md, version 33).
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <functional>
#include <initializer_list>

#include "hip_compat.h"
#include <cublas_v2.h>

#include "dtype.h"
#include "moe_kernels.h"
#include "moe_routing.h"
#include "targets.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		hipError_t e_ = (x);                                                               \
		if (e_ != hipSuccess) {                                                            \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, hipGetErrorString(e_)); \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)


/* The PyTorch reference's times (bench/torch_moe.py's output), where given. */
static double torch_us[TARGET_MODELS][TARGET_ROWS];

static void read_torch_times(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256], name[64];
	unsigned m;
	double us;
	if (!f) {
		fprintf(stderr, "cannot read %s: the torch column stays empty\n", path);
		return;
	}
	while (fgets(line, sizeof(line), f))
		if (line[0] != '#' && sscanf(line, "%63s %u %lf", name, &m, &us) == 3)
			for (int i = 0; i < TARGET_MODELS; i++)
				for (int j = 0; j < TARGET_ROWS; j++)
					if (!strcmp(name, target_models[i].name) && m == target_ms[j])
						torch_us[i][j] = us;
	fclose(f);
}

__global__ void fill_bf16(uint16_t *p, size_t n, uint64_t seed, float scale)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		const float u = (float)(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
		p[i] = moed_f32_to_bf16(u * scale);
	}
}

static uint64_t rng_state;
static double gaussian(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	double u1 = ((rng_state >> 11) + 1) * 0x1.0p-53;
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	double u2 = (rng_state >> 11) * 0x1.0p-53;
	return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* MOED_BENCH_SEED, read once by main(): 0 where unset. */
static uint64_t bench_seed;

/* A row's routing comes from a stream of its own, seeded from the model's name and M
 * (and bench_seed), so that a row draws the same routing in a full run and in a run of
 * some rows (MOED_BENCH_ONLY). */
static uint64_t row_seed(const char *model, uint32_t m)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over the name, then M and the seed */
	for (const char *c = model; *c; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
	h = (h ^ m) * 0x100000001b3ull;
	return (h ^ bench_seed) * 0x100000001b3ull;
}

/* MOED_BENCH_BALANCED and MOED_BENCH_TWO_LAYERS, read once by main(). */
static int balanced_routing, two_layers;

/* Softmax of Gaussian logits, top-k, renormalised (TARGETS.md's routing); balanced: the
 * experts p mod e instead (a token's k distinct where k <= e), the weights kept. */
static void route(const char *model, uint32_t m, uint32_t e, uint32_t k, int32_t *ids, float *tw)
{
	rng_state = row_seed(model, m);
	double *l = (double *)malloc(e * sizeof(double));
	for (uint32_t t = 0; t < m; t++) {
		double mx = -1e300, sum = 0;
		for (uint32_t j = 0; j < e; j++)
			l[j] = gaussian(), mx = fmax(mx, l[j]);
		for (uint32_t j = 0; j < e; j++)
			l[j] = exp(l[j] - mx);
		for (uint32_t s = 0; s < k; s++) {
			uint32_t best = 0;
			for (uint32_t j = 1; j < e; j++)
				if (l[j] > l[best])
					best = j;
			ids[t * k + s] = (int32_t)best;
			tw[t * k + s] = (float)l[best];
			sum += l[best];
			l[best] = -1;
		}
		for (uint32_t s = 0; s < k; s++)
			tw[t * k + s] = (float)(tw[t * k + s] / sum);
	}
	free(l);
	for (uint32_t p = 0; balanced_routing && p < m * k; p++)
		ids[p] = (int32_t)(p % e);
}

/* The experts at least one pair goes to, counted from the ids: the floor's weights. (The
 * routing's used_experts is an estimate from a sample where the device sorts; a balanced
 * routing's pattern can hide half the experts from it.) */
static uint32_t experts_used(const int32_t *ids, size_t pairs, uint32_t e)
{
	unsigned char *seen = (unsigned char *)calloc(e, 1);
	uint32_t used = 0;
	for (size_t p = 0; seen && p < pairs; p++)
		if (ids[p] >= 0 && (uint32_t)ids[p] < e && !seen[ids[p]])
			seen[ids[p]] = 1, used++;
	free(seen);
	return used;
}

/* The most tokens a row may have: the buffers are sized for TARGETS.md's largest. */
static const uint32_t kRowMaxM = target_ms[TARGET_ROWS - 1];

/* MOED_BENCH_ONLY's entries, model:M each, comma-separated: a row of TARGETS.md, or any
 * other M from 1 to kRowMaxM of one of its models (timed, but out of the means and
 * without an anchor). Unset or empty, every row of TARGETS.md. */
struct only_entry {
	int model; /* index in target_models */
	uint32_t m;
};
static struct only_entry *only_list;
static int only_count = -1; /* -1: every row */

/* Parses MOED_BENCH_ONLY into only_list; 0, or -1 with the reason printed. */
static int read_only_rows(void)
{
	const char *only = getenv("MOED_BENCH_ONLY");
	if (!only || !*only)
		return 0;
	only_count = 0;
	only_list = (struct only_entry *)calloc(strlen(only) / 2 + 1, sizeof(*only_list));
	if (!only_list)
		abort();
	for (const char *p = only; *p;) {
		const char *end = strchr(p, ',');
		const size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *colon = (const char *)memchr(p, ':', len);
		int model = -1;
		for (int i = 0; colon && i < TARGET_MODELS; i++)
			if (strlen(target_models[i].name) == (size_t)(colon - p) &&
			    !strncmp(p, target_models[i].name, colon - p))
				model = i;
		char digits[16] = "";
		const size_t nd = colon ? len - (size_t)(colon + 1 - p) : 0;
		if (nd && nd < sizeof(digits))
			memcpy(digits, colon + 1, nd);
		char *stop = NULL;
		const unsigned long m = strtoul(digits, &stop, 10);
		if (model < 0 || !nd || nd >= sizeof(digits) || *stop || digits[0] < '0' || digits[0] > '9' ||
		    m < 1 || m > kRowMaxM) {
			fprintf(stderr, "MOED_BENCH_ONLY: \"%.*s\": wants model:M, the model one of", (int)len, p);
			for (int i = 0; i < TARGET_MODELS; i++)
				fprintf(stderr, "%s %s", i ? "," : "", target_models[i].name);
			fprintf(stderr, " and M from 1 to %u\n", kRowMaxM);
			return -1;
		}
		only_list[only_count].model = model, only_list[only_count++].m = (uint32_t)m;
		p += len + (end ? 1 : 0);
	}
	return 0;
}

/* A row to time: M tokens, and its column in TARGETS.md (-1: not one of its rows). */
struct bench_row {
	uint32_t m;
	int target;
};

/* The rows of model `model` to time, by M, in a new array (free() it); how many in *n. */
static struct bench_row *rows_of(int model, int *n)
{
	const int cap = TARGET_ROWS + (only_count > 0 ? only_count : 0);
	struct bench_row *rows = (struct bench_row *)calloc(cap, sizeof(*rows));
	if (!rows)
		abort();
	*n = 0;
	if (only_count < 0)
		for (int i = 0; i < TARGET_ROWS; i++)
			rows[*n].m = target_ms[i], rows[(*n)++].target = i;
	for (int j = 0; j < only_count; j++) {
		int seen = only_list[j].model != model;
		for (int r = 0; r < *n; r++)
			seen |= rows[r].m == only_list[j].m;
		if (seen)
			continue;
		rows[*n].m = only_list[j].m, rows[*n].target = -1;
		for (int i = 0; i < TARGET_ROWS; i++)
			if (target_ms[i] == only_list[j].m)
				rows[*n].target = i;
		(*n)++;
	}
	for (int a = 1; a < *n; a++) /* by M */
		for (int b = a; b > 0 && rows[b].m < rows[b - 1].m; b--) {
			const struct bench_row t = rows[b];
			rows[b] = rows[b - 1], rows[b - 1] = t;
		}
	return rows;
}

/* The device's sort of a row's pairs against the host's: the same tile table, every
 * pair placed once, in a tile of its expert, and no id reported out of range. Rows whose
 * sort was checked so far. */
static int sorts_checked;
static void check_device_sort(const struct moe_routing *dev_rt, void *routing, const int32_t *ids,
			      const unsigned long long *report, size_t pairs, const char *model, uint32_t m,
			      hipStream_t st)
{
	struct moe_routing ref;
	memset(&ref, 0, sizeof(ref));
	size_t bad;
	if (moe_route_count(&ref, ids, pairs, dev_rt->experts, &bad) || moe_route_cut(&ref, dev_rt->tile, dev_rt->paired))
		abort();
	const size_t cap = dev_rt->ntiles;
	uint32_t *table = (uint32_t *)malloc((3 * cap + 1) * 4), *pair_of = (uint32_t *)malloc(2 * pairs * 4);
	uint32_t *pos_of = pair_of + pairs;
	CHECK(hipStreamSynchronize(st));
	CHECK(hipMemcpy(table, MOE_ROUTE_TILES(routing, dev_rt), (3 * cap + 1) * 4, hipMemcpyDeviceToHost));
	CHECK(hipMemcpy(pair_of, MOE_ROUTE_PAIR_OF(routing, dev_rt), 2 * pairs * 4, hipMemcpyDeviceToHost));
	const uint32_t total = table[3 * cap];
	int wrong = total != ref.ntiles || *report; /* every id is in range */
	for (uint32_t t = 0; !wrong && t < total; t++) {
		const uint32_t first = table[t], count = table[cap + t], e = table[2 * cap + t];
		wrong = first != ref.tiles[t] || count != ref.tiles[ref.ntiles + t] || e != ref.tiles[2 * ref.ntiles + t];
		for (uint32_t q = first; !wrong && q < first + count && q < pairs; q++)
			wrong = pair_of[q] >= pairs || (uint32_t)ids[pair_of[q]] != e || pos_of[pair_of[q]] != q;
	}
	if (wrong) {
		fprintf(stderr, "%s M = %u: the device's sort differs from the host's (%u tiles against %u)\n", model,
			m, total, ref.ntiles);
		exit(1);
	}
	sorts_checked++;
	free(table);
	free(pair_of);
	moe_routing_free(&ref);
}

static int cmp_f(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* The medians over `reps` runs of several ways of queueing the same work on st, timed in
 * turn by events (so that each sees the card in the same state), in us. */
static void median_us_in_turn(int reps, hipStream_t st, cudaEvent_t e0, cudaEvent_t e1,
			      std::initializer_list<std::function<void()>> ways, std::initializer_list<double *> medians)
{
	const size_t n = ways.size();
	if (medians.size() != n) { /* a way without its median, or the reverse */
		fprintf(stderr, "median_us_in_turn: %zu ways, %zu medians\n", n, medians.size());
		abort();
	}
	float *t = (float *)malloc(n * reps * sizeof(float));
	for (int r = 0; r < reps; r++) {
		size_t w = 0;
		for (const auto &queue : ways) {
			cudaEventRecord(e0, st);
			queue();
			cudaEventRecord(e1, st);
			cudaEventSynchronize(e1);
			cudaEventElapsedTime(&t[w++ * reps + r], e0, e1);
		}
	}
	size_t w = 0;
	for (double *median : medians) {
		qsort(t + w * reps, reps, sizeof(float), cmp_f);
		*median = t[w++ * reps + reps / 2] * 1e3;
	}
	free(t);
}

/* Replays the graph for at least 25 ms before it is timed, as triton.testing.do_bench
 * warms before it times (the anchor's way), so that a row is timed at its own load, not
 * the row before's. Measured (bench/RESULTS.md, version 15), against 3 warm launches:
 * the decode rows faster (Qwen3-30B-A3B M = 4 93 -> 83 us), the long prefill rows slower
 * (DeepSeek-V3 M = 4096 7608 -> 8098): we think the clocks drop as the card heats. */
static void warm_up(hipStream_t st, cudaGraphExec_t exec)
{
	const double t0 = now_us();
	do {
		for (int i = 0; i < 8; i++)
			CHECK(cudaGraphLaunch(exec, st));
		CHECK(hipStreamSynchronize(st));
	} while (now_us() - t0 < 25e3);
}

/* Jobs a timed graph holds, as vLLM's and SGLang's MoE benchmarks capture the Triton
 * kernel: the host's launch of the graph, which the GPU idles for after the first
 * event, is then counted once for ten jobs. */
constexpr int kGraphCalls = 10;

/* A graph of `calls` launches of job `a` on st, one after the other (each job's kernels
 * wait for the one before's, in stream order), instantiated; where `odd` is given, the
 * odd-numbered launches use its weights instead (MOED_BENCH_TWO_LAYERS). */
static cudaGraphExec_t graph_of(hipStream_t st, int calls, struct moe_gpu_args a,
				const struct moe_gpu_args *odd = NULL)
{
	cudaGraph_t graph;
	cudaGraphExec_t exec;
	CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
	for (int c = 0; c < calls; c++) {
		struct moe_gpu_args job = a;
		if (odd && c % 2)
			job.w13 = odd->w13, job.w2 = odd->w2;
		CHECK((hipError_t)moe_gpu_launch(&job, st));
	}
	CHECK(cudaStreamEndCapture(st, &graph));
	CHECK(cudaGraphInstantiate(&exec, graph, 0));
	CHECK(cudaGraphDestroy(graph)); /* the instance keeps what it needs */
	return exec;
}

/* The card's bf16 matrix rate through cuBLAS: C = A B, n x n x n, f32 out. */
struct matmul_probe {
	cublasHandle_t blas;
	uint16_t *a, *b;
	float *c;
	int n;
};

static float matmul_ms(const struct matmul_probe *p, hipStream_t st, cudaEvent_t e0, cudaEvent_t e1)
{
	const float one = 1, zero = 0;
	const int n = p->n;
	float ms = 0;
	cudaEventRecord(e0, st);
	cublasGemmEx(p->blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, p->a, CUDA_R_16BF, n, p->b, CUDA_R_16BF,
		     n, &zero, p->c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	cudaEventRecord(e1, st);
	CHECK(cudaEventSynchronize(e1));
	cudaEventElapsedTime(&ms, e0, e1);
	return ms;
}

/* FLOP/s: cold, the best of 10 runs; warm (on a card a row has just heated), the median
 * of `reps`, at least 10. */
static double matmul_rate(const struct matmul_probe *p, hipStream_t st, cudaEvent_t e0, cudaEvent_t e1, int warm,
			  int reps)
{
	const int runs = warm && reps > 10 ? reps : 10;
	float *t = (float *)malloc(runs * sizeof(float));
	for (int r = 0; r < runs; r++)
		t[r] = matmul_ms(p, st, e0, e1);
	qsort(t, runs, sizeof(float), cmp_f);
	const double ms = warm ? t[runs / 2] : t[0];
	free(t);
	return 2.0 * p->n * (double)p->n * p->n / (ms * 1e-3);
}

/* A 0/1 measurement setting, `unset` where it is not set, read as the backend reads it. */
static int measurement_switch(const char *name, int unset, int *on)
{
	*on = moe_gpu_env_switch(name, unset);
	if (*on < 0)
		fprintf(stderr, "%s=%s: wants 0 (off) or 1 (on)\n", name, getenv(name));
	return *on;
}

static int usage(const char *prog)
{
	fprintf(stderr, "usage: %s [repetitions (1 to 100000) [KERNEL]]; KERNEL: one of", prog);
	for (int k = 0; k < MOE_GPU_KERNELS; k++)
		fprintf(stderr, " %s", moe_gpu_kernel_name((enum moe_gpu_kernel)k));
	fprintf(stderr, "\n");
	return 2;
}

int main(int argc, char **argv)
{
	char *end = NULL;
	const long reps_asked = argc > 1 ? strtol(argv[1], &end, 10) : 30;
	if (argc > 1 && (end == argv[1] || *end || reps_asked < 1 || reps_asked > 100000)) {
		fprintf(stderr, "%s: repetitions \"%s\": wants a number from 1 to 100000\n", argv[0], argv[1]);
		return usage(argv[0]);
	}
	const int reps = (int)reps_asked;
	/* A kernel by name (warp, mma16, ...) instead of the plan's, for comparisons. */
	const int forced = argc > 2 ? moe_gpu_kernel_by_name(argv[2]) : -1;
	if (argc > 2 && forced < 0) {
		fprintf(stderr, "%s: no kernel called \"%s\"\n", argv[0], argv[2]);
		return usage(argv[0]);
	}
	if (forced >= 0 && moe_gpu_kernel_withdrawn((enum moe_gpu_kernel)forced)) {
		fprintf(stderr, "%s is withdrawn: %s\n", argv[2],
			moe_gpu_kernel_withdrawn((enum moe_gpu_kernel)forced));
		return 2;
	}
	if (forced >= 0 && !moe_gpu_kernel_usable((enum moe_gpu_kernel)forced)) {
		fprintf(stderr, "%s: not in this build or not for this card (wgmma needs sm_90a)\n", argv[2]);
		return 2;
	}
	const int tile_group = moe_gpu_tile_group(); /* read once, as the backend does */
	if (tile_group < 0) {
		fprintf(stderr, "MOED_GPU_TILE_GROUP=%s: wants a number of tiles from 1 to 65536\n",
			getenv("MOED_GPU_TILE_GROUP"));
		return 2;
	}
	const int tail_split = moe_gpu_tail_split(); /* likewise */
	if (tail_split < 0) {
		fprintf(stderr, "MOED_GPU_TAIL_SPLIT=%s: " MOE_GPU_TAIL_SPLIT_WANTS "\n", getenv("MOED_GPU_TAIL_SPLIT"));
		return 2;
	}
	const char *seed = getenv("MOED_BENCH_SEED");
	if (seed && *seed) {
		char *seed_end = NULL;
		errno = 0;
		bench_seed = strtoull(seed, &seed_end, 0);
		if (errno || *seed_end || *seed < '0' || *seed > '9') { /* strtoull takes " -1" */
			fprintf(stderr, "MOED_BENCH_SEED=%s: wants a number from 0 to 2^64 - 1\n", seed);
			return 2;
		}
	}
	int dependent, prefetch, fused, spread;
	if (measurement_switch("MOED_GPU_DEPENDENT_LAUNCH", 1, &dependent) < 0 ||
	    measurement_switch("MOED_GPU_L2_PREFETCH", 1, &prefetch) < 0 ||
	    measurement_switch("MOED_GPU_FUSED_DECODE", 1, &fused) < 0 ||
	    measurement_switch("MOED_GPU_SPREAD", 1, &spread) < 0 ||
	    measurement_switch("MOED_BENCH_BALANCED", 0, &balanced_routing) < 0 ||
	    measurement_switch("MOED_BENCH_TWO_LAYERS", 0, &two_layers) < 0 || read_only_rows() < 0)
		return 2;
	hipStream_t st;
	CHECK(hipSetDevice(0));
	CHECK(hipStreamCreateWithFlags(&st, hipStreamNonBlocking));
	cudaDeviceProp prop;
	CHECK(cudaGetDeviceProperties(&prop, 0));
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);

	/* Floor terms on this card. */
	const size_t cb = (size_t)1 << 30;
	void *ca, *cbuf;
	CHECK(hipMalloc(&ca, cb));
	CHECK(hipMalloc(&cbuf, cb));
	float best_ms = 1e30f;
	for (int r = 0; r < 10; r++) {
		cudaEventRecord(e0, st);
		CHECK(hipMemcpyAsync(cbuf, ca, cb, hipMemcpyDeviceToDevice, st));
		cudaEventRecord(e1, st);
		cudaEventSynchronize(e1);
		float ms_ = 0;
		cudaEventElapsedTime(&ms_, e0, e1);
		best_ms = ms_ < best_ms ? ms_ : best_ms;
	}
	const double bw = 2.0 * cb / (best_ms * 1e-3);
	CHECK(hipFree(ca));
	CHECK(hipFree(cbuf));

	struct matmul_probe mm = { NULL, NULL, NULL, NULL, 8192 };
	const size_t mm_cells = (size_t)mm.n * mm.n;
	cublasCreate(&mm.blas);
	cublasSetStream(mm.blas, st);
	CHECK(hipMalloc((void **)&mm.a, mm_cells * 2));
	CHECK(hipMalloc((void **)&mm.b, mm_cells * 2));
	CHECK(hipMalloc((void **)&mm.c, mm_cells * 4));
	hipLaunchKernelGGL(fill_bf16, dim3(1024), dim3(256), 0, st, mm.a, mm_cells, 1ull, 1.0f);
	hipLaunchKernelGGL(fill_bf16, dim3(1024), dim3(256), 0, st, mm.b, mm_cells, 2ull, 1.0f);
	const double rate = matmul_rate(&mm, st, e0, e1, 0, reps);

	char group[16] = "per job";
	if (tile_group)
		snprintf(group, sizeof(group), "%d", tile_group);
	printf("card: %s; copy %.2f TB/s (read + written), bf16 matmul %.0f TFLOP/s (cuBLAS, cold); "
	       "median of %d warm runs; tile group %s\n",
	       prop.name, bw / 1e12, rate / 1e12, reps, group);
	if (balanced_routing)
		printf("routing: every expert the same count (MOED_BENCH_BALANCED=1), not TARGETS.md's\n");
	if (two_layers)
		printf("weights: a graph's jobs alternate between two copies (MOED_BENCH_TWO_LAYERS=1)\n");
	if (getenv("MOED_BENCH_TORCH"))
		read_torch_times(getenv("MOED_BENCH_TORCH"));
	printf("%-14s %5s %9s %6s %9s %10s %9s %9s %7s %9s %8s %9s %8s %-10s %s\n", "model", "M", "floor us",
	       "TF/s", "kernel us", "1 a graph", "launched", "w/ sort", "floor/t", "anchor us", "vs anchor",
	       "torch us", "vs torch", "kernel", "sorting: host + graph");

	struct target_means means = {};
	struct target_means sorted_means = {}, waited_means = {};
	struct target_means cold_means = {}; /* against the cold matmul rate */
	struct target_means single_means = {}; /* one job a graph, as through version 24 */
	int rows_timed = 0;
	for (const struct target_model &md : target_models) {
		int nrows;
		struct bench_row *rows = rows_of((int)(&md - target_models), &nrows);
		if (!nrows) { /* none asked for: no weights drawn */
			free(rows);
			continue;
		}
		const size_t w13n = (size_t)md.e * 2 * md.i * md.h, w2n = (size_t)md.e * md.h * md.i;
		uint16_t *w13, *w2, *x, *out, *w13b = NULL, *w2b = NULL; /* b: the second layer's */
		float *y;
		void *act, *routing, *stage;
		const uint32_t mmax = target_ms[TARGET_ROWS - 1], pmax = mmax * md.k;
		CHECK(hipMalloc((void **)&w13, w13n * 2));
		CHECK(hipMalloc((void **)&w2, w2n * 2));
		if (two_layers) {
			CHECK(hipMalloc((void **)&w13b, w13n * 2));
			CHECK(hipMalloc((void **)&w2b, w2n * 2));
			hipLaunchKernelGGL(fill_bf16, dim3(4096), dim3(256), 0, st, w13b, w13n, 6ull, 1.7f / sqrtf(md.h));
			hipLaunchKernelGGL(fill_bf16, dim3(4096), dim3(256), 0, st, w2b, w2n, 7ull, 1.7f / sqrtf(md.i));
		}
		CHECK(hipMalloc((void **)&x, (size_t)mmax * md.h * 2));
		CHECK(hipMalloc((void **)&out, (size_t)mmax * md.h * 2));
		CHECK(hipMalloc(&act, (size_t)pmax * md.i * 4));
		CHECK(hipMalloc((void **)&y, (size_t)pmax * md.h * 4));
		/* The packed routing at its largest (moe_routing.h): 4 arrays of pairs (the
		 * device sort's words included), at most pairs + experts tiles, the tile count,
		 * the experts' first positions, the sort blocks' counts. */
		const size_t routing_cap =
			(4 * (size_t)pmax + 3 * ((size_t)pmax + md.e + 1) + 1 + md.e + (size_t)MOE_ROUTE_SORT_BLOCKS * md.e) * 4;
		CHECK(hipMalloc(&routing, routing_cap));
		uint32_t *counters; /* moe_gpu_args.counters, zero between jobs */
		CHECK(hipMalloc((void **)&counters, MOE_GPU_COUNTERS * sizeof(*counters)));
		CHECK(hipMemsetAsync(counters, 0, MOE_GPU_COUNTERS * sizeof(*counters), st));
		CHECK(hipHostMalloc(&stage, routing_cap, hipHostMallocDefault));
		hipLaunchKernelGGL(fill_bf16, dim3(4096), dim3(256), 0, st, w13, w13n, 3ull, 1.7f / sqrtf(md.h));
		hipLaunchKernelGGL(fill_bf16, dim3(4096), dim3(256), 0, st, w2, w2n, 4ull, 1.7f / sqrtf(md.i));
		hipLaunchKernelGGL(fill_bf16, dim3(1024), dim3(256), 0, st, x, (size_t)mmax * md.h, 5ull, 1.7f);
		/* Pinned, as the backend's client arena: the device's sort reads them. */
		int32_t *ids;
		float *tw;
		unsigned long long *report; /* the device's sort's, of an id out of range */
		CHECK(hipHostMalloc((void **)&ids, pmax * 4, hipHostMallocDefault));
		CHECK(hipHostMalloc((void **)&tw, pmax * 4, hipHostMallocDefault));
		CHECK(hipHostMalloc((void **)&report, sizeof(*report), hipHostMallocDefault));
		*report = 0;
		struct moe_routing rt;
		memset(&rt, 0, sizeof(rt));
		double last_us = 0;
		for (int ri = 0; ri < nrows; ri++) {
			const uint32_t m = rows[ri].m, pairs = m * md.k;
			const int mi = rows[ri].target; /* -1: not a row of TARGETS.md */
			/* Over two minutes a row (the timings in turn take 2 + 2 kGraphCalls
			 * times the job's time a repetition): skip. */
			if (last_us * (2 + 2 * kGraphCalls) * (reps + 3) > 120e6) {
				printf("%-14s %5u %9s (skipped: the previous row took %.0f ms a launch)\n",
				       md.name, m, "", last_us / 1e3);
				continue;
			}
			route(md.name, m, md.e, md.k, ids, tw);
			/* Token sorting as the backend does it, timed warm (median of reps): count,
			 * plan, cut, pack into pinned memory, or for a large job plan from a sample
			 * (t_host), then one copy, or the device's sort (which reads the ids itself),
			 * waited for (t_sort, the measure of versions up to 16). The kernels are
			 * then timed without it. */
			struct moe_gpu_plan plan;
			struct moe_gpu_args a;
			memset(&a, 0, sizeof(a));
			a.tokens = m, a.topk = md.k, a.hidden = md.h, a.inter = md.i, a.experts = md.e;
			a.counters = counters;
			float *ts = (float *)malloc(2 * (reps + 1) * sizeof(float)), *th = ts + reps + 1;
			for (int r = 0; r <= reps; r++) {
				size_t bad;
				int32_t bad_id;
				const double t0 = now_us();
				CHECK((hipError_t)moe_gpu_route(&rt, ids, pairs, md.k, md.e, (uint32_t *)stage,
								 MOED_GPU_BF16, MOED_GPU_BF16, md.h, md.i, forced,
								 &plan, &bad, &bad_id));
				if (!rt.on_device)
					moe_route_pack(&rt, tw, stage);
				th[r] = (float)(now_us() - t0);
				moe_route_args(&rt, routing, &a);
				if (rt.on_device) {
					a.sort.ids = (const uint32_t *)ids, a.sort.weights = tw, a.sort.report = report;
					CHECK((hipError_t)moe_gpu_sort_pairs(&a, st));
				} else {
					CHECK(hipMemcpyAsync(routing, stage, moe_route_packed_bytes(&rt),
							     hipMemcpyHostToDevice, st));
				}
				CHECK(hipStreamSynchronize(st));
				ts[r] = (float)(now_us() - t0);
			}
			if (rt.on_device)
				check_device_sort(&rt, routing, ids, report, pairs, md.name, m, st);
			qsort(ts + 1, reps, sizeof(float), cmp_f); /* the first, cold, is left out */
			qsort(th + 1, reps, sizeof(float), cmp_f);
			const double t_sort = ts[1 + reps / 2], t_host = th[1 + reps / 2];
			free(ts);
			a.io_dtype = MOED_GPU_BF16, a.w_dtype = MOED_GPU_BF16, a.activation = MOED_GPU_SILU;
			a.gated = 1, a.scale = 1, a.kernel = plan.kernel;
			a.x = x;
			a.w13 = w13, a.w2 = w2, a.act = act, a.y = y, a.out = out, a.counters = counters;
			a.tile_group = (uint32_t)tile_group, a.serial_launch = !dependent;
			a.no_prefetch = !prefetch, a.separate_decode = !fused, a.tail_split = tail_split;
			a.no_spread = !spread;
			/* The full path's launch brings the routing from the stage (as the backend's
			 * does), or sorts a large job's pairs again. */
			struct moe_gpu_args full = a;
			if (!rt.on_device)
				full.fetch_from = stage, full.fetch_to = routing,
				full.fetch_bytes = moe_route_packed_bytes(&rt);
			a.sort.ids = NULL; /* sorted */
			for (int r = 0; r < 3; r++)
				CHECK((hipError_t)moe_gpu_launch(&a, st));
			CHECK(hipStreamSynchronize(st));
			/* Kernel by kernel, as the backend launches them; as graphs of ten jobs (the
			 * anchor's way) and of one; and as the full path's graph of ten: the four in
			 * turn, so that each sees the card in the same state (timed one after the
			 * other, the second read up to 8% slower on the long rows; we think the
			 * clocks drop as the card heats). */
			struct moe_gpu_args odd = a; /* the second layer's weights */
			odd.w13 = w13b, odd.w2 = w2b;
			const struct moe_gpu_args *alternate = two_layers ? &odd : NULL;
			cudaGraphExec_t exec = graph_of(st, kGraphCalls, a, alternate), exec1 = graph_of(st, 1, a);
			/* The full path's device part: the upload (which brings the placing's cursors
			 * back each replay), the placing, the kernels. */
			cudaGraphExec_t full_exec = graph_of(st, kGraphCalls, full, alternate);
			warm_up(st, exec);
			double launched = 0, kern = 0, kern1 = 0, full_us = 0;
			median_us_in_turn(reps, st, e0, e1,
					  { [&] { CHECK((hipError_t)moe_gpu_launch(&a, st)); },
					    [&] { CHECK(cudaGraphLaunch(exec, st)); },
					    [&] { CHECK(cudaGraphLaunch(exec1, st)); },
					    [&] { CHECK(cudaGraphLaunch(full_exec, st)); } },
					  { &launched, &kern, &kern1, &full_us });
			kern /= kGraphCalls, full_us /= kGraphCalls;
			for (cudaGraphExec_t x : { exec, exec1, full_exec })
				CHECK(cudaGraphExecDestroy(x));
			const double with_sort = t_host + full_us;
			const double bytes = (double)experts_used(ids, pairs, md.e) * 3 * md.i * md.h * 2 + 2.0 * m * md.h * 2;
			const double flops = 2.0 * pairs * 3 * md.i * md.h;
			/* The rate warm where the FLOPs could set the floor (the warm rate has
			 * been at most 25% under the cold one). Measured after the row, not
			 * before: a row timed right after cuBLAS ran up to 14% slower (version 16). */
			const double row_rate =
				flops / rate >= 0.5 * bytes / bw ? matmul_rate(&mm, st, e0, e1, 1, reps) : rate;
			last_us = kern;
			const double floor_us = fmax(bytes / bw, flops / row_rate) * 1e6;
			const double ratio = floor_us / kern;
			const double anchor = mi >= 0 ? md.anchor_us[mi] : 0;
			const double torch = mi >= 0 ? torch_us[&md - target_models][mi] : 0;
			char versus_anchor[32], versus_torch[32]; /* dashes where there is no figure */
			if (anchor > 0)
				snprintf(versus_anchor, sizeof(versus_anchor), "%9.0f %7.2fx", anchor, anchor / kern);
			else
				snprintf(versus_anchor, sizeof(versus_anchor), "%9s %8s", "-", "-");
			if (torch > 0)
				snprintf(versus_torch, sizeof(versus_torch), "%9.0f %7.1fx", torch, torch / with_sort);
			else
				snprintf(versus_torch, sizeof(versus_torch), "%9s %8s", "-", "-");
			/* What sorting adds: the host's part, and the full graph's beyond the kernels'. */
			printf("%-14s %5u %9.0f %6.0f %9.0f %10.0f %9.0f %9.0f %7.2f %s %s %-10s %.1f + %.1f\n", md.name,
			       m, floor_us, row_rate / 1e12, kern, kern1, launched, with_sort, ratio, versus_anchor,
			       versus_torch, moe_gpu_kernel_name(plan.kernel), t_host, full_us - kern);
			rows_timed++;
			if (mi < 0)
				continue; /* the means are TARGETS.md's rows' */
			target_means_add(&means, m, ratio);
			target_means_add(&sorted_means, m, floor_us / with_sort);
			target_means_add(&waited_means, m, floor_us / (kern + t_sort));
			target_means_add(&cold_means, m, fmax(bytes / bw, flops / rate) * 1e6 / kern);
			target_means_add(&single_means, m, floor_us / kern1);
		}
		free(rows);
		moe_routing_free(&rt);
		CHECK(hipHostFree(ids));
		CHECK(hipHostFree(tw));
		CHECK(hipHostFree(report));
		void *bufs[] = { w13, w2, x, out, act, y, routing, counters, w13b, w2b };
		for (void *p : bufs)
			CHECK(hipFree(p)); /* NULL: nothing to free */
		CHECK(hipHostFree(stage));
	}
	if (!rows_timed) { /* every row asked for was skipped as too long */
		fprintf(stderr, "no row timed\n");
		return 2;
	}
	target_means_print(&means, "", "floor/time");
	/* TARGETS.md: "the full path including token sorting, measured the same way". */
	target_means_print(&sorted_means, "", "floor/(time + sorting)");
	target_means_print(&waited_means, "", "floor/(time + sorting, its upload waited for as through version 16)");
	target_means_print(&cold_means, "", "floor/time with the cold matmul rate");
	target_means_print(&single_means, "", "floor/time, one job a graph (the measure through version 24)");
	printf("the device's sort matched the host's on %d rows\n", sorts_checked);
	CHECK(hipFree(mm.a));
	CHECK(hipFree(mm.b));
	CHECK(hipFree(mm.c));
	cublasDestroy(mm.blas);
	return 0;
}
