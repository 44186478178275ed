// SPDX-License-Identifier: MIT
//
// The GPU backend's host side: a loadable module (moed-hip.so) that the daemon opens with
// dlopen, so that the daemon itself links no GPU runtime. Weights live in device memory
// once for all clients. Each client (the daemon's session) has a context of its own: a
// stream, an event, scratch buffers, and its arena registered (pinned) with the runtime
// where the runtime allows, so that copies in and out are asynchronous DMA. A job's
// inputs are copied in (a decode job's kernel reads its staged ones itself), its kernels
// run, its output is copied back, all queued on the client's stream by submit(); poll()
// reports it done when the event behind the output copy has fired, so clients' jobs
// overlap on the GPU. run() (direct callers: tests, tools) does the same on a context of
// the backend's own and waits.
// Runtime errors become the job's error with the runtime's message. An error that the
// device keeps returning (a kernel fault: the context is lost) fails this job and every
// later one with -ENOTRECOVERABLE, which the daemon reports; only a restart recovers.
// MOED_HIP_INJECT_FAULT=1 in the environment makes the first job trap, for that test;
// MOED_HIP_TRACE=1 prints each job's phases (host and GPU) on stderr as it completes.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "backend.h"
#include "clock.h"
}
#include "hip_compat.h"

/* Host code only: the device pass of a HIP compiler must not see the ops table. */
#if !defined(__HIP_DEVICE_COMPILE__)
#include "moe_kernels.h"
#include "moe_routing.h"

namespace {

/* The largest x copied to the GPU in the routing's copy (see enqueue). */
constexpr size_t STAGED_X_MAX = 64 << 10;

struct dbuf {
	void *p;
	size_t cap;
	bool host; /* pinned host memory, not device memory */
};

/* MOED_HIP_TRACE: where a job's time went. Host clock readings at each step of
 * submit() and when the completion callback ran; timing events around the input copies,
 * the kernels and the output copy. Armed once all is queued. */
struct job_trace {
	hipEvent_t start, in, kernels, out;
	uint64_t t_submit, t_sorted, t_copies, t_kernels, t_queued; /* moed_now_ns() */
	uint64_t t_called; /* set on the runtime's callback thread */
	uint32_t tokens;
	int kernel;
	bool armed, staged_x;
};

/* One client's context. It has at most one job in flight (the daemon's rule). */
struct hip_client {
	struct job_trace trace; /* events made only where tracing */
	struct moed_backend *backend; /* for the completion callback */
	hipStream_t stream;
	hipEvent_t done;            /* recorded after the job's output copy */
	unsigned char *pinned;      /* the arena, where registering it worked */
	const unsigned char *pinned_dev; /* where the device reads it, or NULL */
	dbuf x, routing, act, y, out;
	uint32_t *counters;         /* moe_gpu_args.counters: zeroed once, then by the kernels */
	/* Pinned: where the device's sort reports an id out of range (moe_gpu_sort.report),
	 * for poll() to read once the job is done; the job's topk and experts for its message */
	unsigned long long *report;
	bool report_armed;
	uint32_t report_topk, report_experts;
	/* host side: a private copy of a job's expert ids, its sorted order, and the pinned
	 * buffer the sorted routing is packed into, which the launch brings to the device */
	int32_t *ids;
	size_t host_pairs;
	struct moe_routing route;
	dbuf stage;
};

} // namespace

struct moed_backend {
	int device;
	hipError_t lost;   /* the sticky error that lost the device, or hipSuccess */
	bool inject_fault; /* trap in the next job (the fault-handling test) */
	bool trace;        /* MOED_HIP_TRACE=1 */
	int forced;        /* MOED_GPU_KERNEL's kernel, or -1 */
	uint32_t tile_group; /* MOED_GPU_TILE_GROUP's, or 0: the launch's (moe_gpu_tile_group) */
	bool serial_launch;  /* MOED_GPU_DEPENDENT_LAUNCH=0 */
	bool no_prefetch;    /* MOED_GPU_L2_PREFETCH=0 */
	bool separate_decode; /* MOED_GPU_FUSED_DECODE=0 */
	bool no_spread;       /* MOED_GPU_SPREAD=0 */
	int tail_split;       /* MOED_GPU_TAIL_SPLIT's (moe_gpu_tail_split) */
	uint32_t caps;
	struct moed_kwargs_schema schema;
	struct hip_client *own; /* run()'s context, made at its first job */
	pthread_mutex_t notify_lock; /* held while notify is read or called */
	void (*notify)(void *arg);   /* set_notify's: called after each job's output copy */
	void *notify_arg;
};

namespace {

int gpu_error(struct moed_error *err, hipError_t e, const char *what)
{
	return moed_error_set(err, -EIO, "GPU %s failed: %s", what, hipGetErrorString(e));
}

/* The job's error for pair `bad`, whose id was `id`, whether the host or the device saw it. */
int ids_out_of_range(struct moed_error *err, size_t bad, int32_t id, uint32_t topk, uint32_t experts)
{
	return moed_error_set(err, -EINVAL, "topk_ids[%zu][%zu] = %d is outside [0, %u)", bad / topk, bad % topk,
			      id, experts);
}

void release(dbuf *b)
{
	if (b->p)
		(void)(b->host ? hipHostFree(b->p) : hipFree(b->p));
	b->p = NULL;
	b->cap = 0;
}

hipError_t allocate(dbuf *b, size_t bytes)
{
	return b->host ? hipHostMalloc(&b->p, bytes, hipHostMallocDefault) : hipMalloc(&b->p, bytes);
}

/* A buffer of at least `bytes`. Growing frees the old one, and freeing waits for the
 * whole device (every client's work): it grows by half again at least, so that jobs of
 * slowly rising size reallocate a few times, not at each step. */
int ensure(dbuf *b, size_t bytes, struct moed_error *err)
{
	if (bytes <= b->cap)
		return 0;
	size_t got = bytes > b->cap + b->cap / 2 ? bytes : b->cap + b->cap / 2;
	release(b);
	hipError_t e = allocate(b, got);
	if (e == hipErrorMemoryAllocation && got > bytes) { /* the headroom is optional */
		(void)hipGetLastError();
		got = bytes;
		e = allocate(b, got);
	}
	if (e != hipSuccess) {
		b->p = NULL;
		return gpu_error(err, e, b->host ? "allocation of pinned host memory"
						 : "allocation of scratch memory");
	}
	b->cap = got;
	return 0;
}

template <typename T> bool grow(T **p, size_t n)
{
	T *q = (T *)realloc(*p, n * sizeof(T) + 1);
	if (!q)
		return false;
	*p = q;
	return true;
}

int hip_probe(struct moed_error *err)
{
#if MOED_GPU_NVIDIA
	/* The first runtime call of the process: have the driver load every kernel of this
	 * module when the context is made (daemon start-up), not at a kernel's first launch,
	 * which blocked a client's first job of each kind for milliseconds (moed(8)). A value
	 * the administrator set is kept. */
	setenv("CUDA_MODULE_LOADING", "EAGER", 0);
#endif
	int n = 0;
	hipError_t e = hipGetDeviceCount(&n);
	if (e != hipSuccess)
		return moed_error_set(err, -ENODEV, "no GPU: %s", hipGetErrorString(e));
	if (n < 1)
		return moed_error_set(err, -ENODEV, "no GPU device found");
	return 0;
}

/* MOED_GPU_KERNEL, read once: a kernel this build has, or -1 when unset. */
int forced_kernel(int *out, struct moed_error *err)
{
	const char *name = getenv("MOED_GPU_KERNEL");
	*out = -1;
	if (!name || !*name)
		return 0;
	const int k = moe_gpu_kernel_by_name(name);
	if (k < 0) {
		char names[128] = "";
		for (int i = 0, at = 0; i < MOE_GPU_KERNELS && at < (int)sizeof(names); i++)
			at += snprintf(names + at, sizeof(names) - at, "%s%s", i ? ", " : "",
				       moe_gpu_kernel_name((enum moe_gpu_kernel)i));
		return moed_error_set(err, -EINVAL, "MOED_GPU_KERNEL=%s names no GPU kernel (%s)", name,
				      names);
	}
	const char *withdrawn = moe_gpu_kernel_withdrawn((enum moe_gpu_kernel)k);
	if (withdrawn)
		return moed_error_set(err, -EINVAL, "MOED_GPU_KERNEL=%s is withdrawn: %s", name, withdrawn);
	if (!moe_gpu_kernel_usable((enum moe_gpu_kernel)k))
		return moed_error_set(err, -EINVAL,
				      "MOED_GPU_KERNEL=%s: not in this build or not for this card (the wgmma "
				      "kernels need --with-gpu-arch=sm_90a and an sm_90 card, wgmma128e also "
				      "the TMA's encoder and clusters of two; AMD builds have warp and "
				      "mfma64, NVIDIA builds the others)", name);
	*out = k;
	return 0;
}

/* A switch from the environment: 0 or 1, `unset` where it is unset or empty. */
int env_switch(const char *name, bool unset, bool *on, struct moed_error *err)
{
	const int v = moe_gpu_env_switch(name, unset);
	if (v < 0)
		return moed_error_set(err, -EINVAL, "%s=%s: wants 0 (off) or 1 (on)", name, getenv(name));
	*on = v;
	return 0;
}

int hip_create(const struct moed_backend_config *cfg, struct moed_backend **out, struct moed_error *err)
{
	int r = hip_probe(err);
	if (r < 0)
		return r;
	int forced;
	if ((r = forced_kernel(&forced, err)) < 0)
		return r;
	const int tile_group = moe_gpu_tile_group();
	if (tile_group < 0)
		return moed_error_set(err, -EINVAL, "MOED_GPU_TILE_GROUP=%s: wants a number of tiles from 1 "
				      "to 65536", getenv("MOED_GPU_TILE_GROUP"));
	const int tail_split = moe_gpu_tail_split();
	if (tail_split < 0)
		return moed_error_set(err, -EINVAL, "MOED_GPU_TAIL_SPLIT=%s: " MOE_GPU_TAIL_SPLIT_WANTS,
				      getenv("MOED_GPU_TAIL_SPLIT"));
	bool dependent, prefetch, fused, spread, trace, inject;
	if ((r = env_switch("MOED_GPU_DEPENDENT_LAUNCH", true, &dependent, err)) < 0 ||
	    (r = env_switch("MOED_GPU_L2_PREFETCH", true, &prefetch, err)) < 0 ||
	    (r = env_switch("MOED_GPU_FUSED_DECODE", true, &fused, err)) < 0 ||
	    (r = env_switch("MOED_GPU_SPREAD", true, &spread, err)) < 0 ||
	    (r = env_switch("MOED_HIP_TRACE", false, &trace, err)) < 0 ||
	    (r = env_switch("MOED_HIP_INJECT_FAULT", false, &inject, err)) < 0)
		return r;
	struct moed_backend *b = (struct moed_backend *)calloc(1, sizeof(*b));
	if (!b)
		return moed_error_set(err, -ENOMEM, "out of memory");
	hipError_t e = hipSetDevice(0);
	if (e != hipSuccess) {
		free(b);
		return gpu_error(err, e, "set-up");
	}
	b->caps = (MOED_CAP_NO_COMBINE | MOED_CAP_ROUTER_WEIGHT_ON_INPUT | MOED_CAP_GATED |
		   MOED_CAP_NOT_GATED) & ~cfg->withhold;
	b->schema.specs = NULL;
	b->schema.count = 0;
	b->forced = forced;
	b->tile_group = (uint32_t)tile_group;
	b->serial_launch = !dependent;
	b->no_prefetch = !prefetch;
	b->separate_decode = !fused;
	b->no_spread = !spread;
	b->tail_split = tail_split;
	pthread_mutex_init(&b->notify_lock, NULL);
	b->inject_fault = inject;
	b->trace = trace;
	*out = b;
	return 0;
}

void client_free(struct hip_client *c)
{
	if (!c)
		return;
	if (c->stream) /* its work done, host callbacks included, before anything goes */
		(void)hipStreamSynchronize(c->stream);
	dbuf *all[] = { &c->x, &c->routing, &c->act, &c->y, &c->out, &c->stage };
	for (dbuf *d : all)
		release(d);
	if (c->counters)
		(void)hipFree(c->counters);
	if (c->report)
		(void)hipHostFree(c->report);
	if (c->pinned)
		(void)hipHostUnregister(c->pinned);
	if (c->done)
		(void)hipEventDestroy(c->done);
	hipEvent_t *marks[] = { &c->trace.start, &c->trace.in, &c->trace.kernels, &c->trace.out };
	for (hipEvent_t *m : marks)
		if (*m)
			(void)hipEventDestroy(*m);
	if (c->stream)
		(void)hipStreamDestroy(c->stream);
	free(c->ids);
	moe_routing_free(&c->route);
	free(c);
}

/* A context; the arena, when given, is registered for DMA where the runtime allows. */
int client_make(struct moed_backend *b, const struct moed_arena *arena, struct hip_client **out,
		struct moed_error *err)
{
	struct hip_client *c = (struct hip_client *)calloc(1, sizeof(*c));
	if (!c)
		return moed_error_set(err, -ENOMEM, "out of memory");
	c->backend = b;
	c->stage.host = true;
	hipError_t e = hipStreamCreateWithFlags(&c->stream, hipStreamNonBlocking);
	if (e == hipSuccess)
		e = hipEventCreateWithFlags(&c->done, hipEventDisableTiming);
	hipEvent_t *marks[] = { &c->trace.start, &c->trace.in, &c->trace.kernels, &c->trace.out };
	for (hipEvent_t *m : marks)
		if (b->trace && e == hipSuccess)
			e = hipEventCreateWithFlags(m, hipEventDefault);
	if (e == hipSuccess)
		e = hipMalloc(&c->counters, MOE_GPU_COUNTERS * sizeof(*c->counters));
	if (e == hipSuccess)
		e = hipMemsetAsync(c->counters, 0, MOE_GPU_COUNTERS * sizeof(*c->counters), c->stream);
	if (e == hipSuccess)
		e = hipHostMalloc((void **)&c->report, sizeof(*c->report), hipHostMallocDefault);
	if (e != hipSuccess) {
		client_free(c);
		return gpu_error(err, e, "stream set-up");
	}
	/* Not every mapping can be pinned (the runtime decides): unpinned, copies are
	 * staged by the runtime and submit() returns only once they are done. */
	if (arena && arena->size) {
		e = hipHostRegister(arena->base, arena->size, hipHostRegisterDefault);
		if (e == hipSuccess) {
			c->pinned = arena->base;
			void *dev = NULL; /* for the device's sort, which reads the ids and weights */
			if (hipHostGetDevicePointer(&dev, arena->base, 0) == hipSuccess)
				c->pinned_dev = (const unsigned char *)dev;
			else
				(void)hipGetLastError();
		} else {
			(void)hipGetLastError();
		}
		if (b->trace)
			fprintf(stderr, "moed-hip trace: client arena of %zu bytes %s%s\n", arena->size,
				e == hipSuccess ? "pinned" : "not pinned: ",
				e == hipSuccess ? "" : hipGetErrorString(e));
	}
	*out = c;
	return 0;
}

void hip_destroy(struct moed_backend *b)
{
	if (!b)
		return;
	client_free(b->own);
	pthread_mutex_destroy(&b->notify_lock);
	free(b);
}

const struct moed_kwargs_schema *hip_schema(const struct moed_backend *b)
{
	return &b->schema;
}

uint32_t hip_caps(const struct moed_backend *b)
{
	return b->caps;
}

uint32_t hip_dtypes(const struct moed_backend *)
{
	return (1u << MOED_DTYPE_F32) | (1u << MOED_DTYPE_BF16) | (1u << MOED_DTYPE_F16);
}

uint32_t hip_activations(const struct moed_backend *)
{
	return (1u << MOED_ACT_SILU) | (1u << MOED_ACT_GELU);
}

uint64_t tensor_bytes(const struct moed_weights_shape *s, unsigned tensor)
{
	const uint64_t d = s->dtype == MOED_DTYPE_F32 ? 4 : 2;
	const uint64_t rows = tensor == MOED_TENSOR_W13 ? (s->gated ? 2ull : 1ull) * s->inter_size
							: s->hidden_size;
	const uint64_t cols = tensor == MOED_TENSOR_W13 ? s->hidden_size : s->inter_size;
	return s->num_experts * rows * cols * d;
}

int hip_weights_alloc(struct moed_backend *, struct moed_weights *w, struct moed_error *err)
{
	if (w->shape.hidden_size > MOE_GPU_MAX_ROWS || w->shape.inter_size > MOE_GPU_MAX_ROWS)
		return moed_error_set(err, -EINVAL,
				      "hidden_size %u, inter_size %u: the GPU backend takes sizes up to %u",
				      w->shape.hidden_size, w->shape.inter_size, MOE_GPU_MAX_ROWS);
	w->w13_bytes = tensor_bytes(&w->shape, MOED_TENSOR_W13);
	w->w2_bytes = tensor_bytes(&w->shape, MOED_TENSOR_W2);
	w->w13 = w->w2 = NULL;
	hipError_t e = hipMalloc(&w->w13, w->w13_bytes);
	if (e == hipSuccess)
		e = hipMalloc(&w->w2, w->w2_bytes);
	if (e != hipSuccess) {
		if (w->w13)
			(void)hipFree(w->w13);
		w->w13 = NULL;
		return moed_error_set(err, -ENOMEM, "cannot allocate %llu bytes of GPU memory for weights: %s",
				      (unsigned long long)(w->w13_bytes + w->w2_bytes), hipGetErrorString(e));
	}
	return 0;
}

int hip_weights_write(struct moed_backend *, struct moed_weights *w, unsigned tensor, uint64_t offset,
		      const void *src, uint64_t len, struct moed_error *err)
{
	unsigned char *dst = (unsigned char *)(tensor == MOED_TENSOR_W13 ? w->w13 : w->w2);
	const uint64_t size = tensor == MOED_TENSOR_W13 ? w->w13_bytes : w->w2_bytes;
	if (offset > size || len > size - offset)
		return moed_error_set(err, -EINVAL, "upload [%llu, +%llu) lies outside the %llu-byte tensor",
				      (unsigned long long)offset, (unsigned long long)len,
				      (unsigned long long)size);
	hipError_t e = hipMemcpy(dst + offset, src, len, hipMemcpyHostToDevice);
	return e == hipSuccess ? 0 : gpu_error(err, e, "weight upload");
}

void hip_weights_free(struct moed_backend *, struct moed_weights *w)
{
	if (w->w13)
		(void)hipFree(w->w13);
	if (w->w2)
		(void)hipFree(w->w2);
	w->w13 = w->w2 = NULL;
}

/* Pick the kernels from the most pairs any expert has, and group the pairs by expert
 * into the kernels' tiles (moe_gpu_route). The routing lives in shared memory: a small
 * job's ids are read once into a private copy; a large one's are sampled, then read by
 * the device where it sorts them, else copied into the stage first. */
int sort_pairs(struct hip_client *c, const struct moed_job *job, const struct moed_weights *w,
	       const struct moed_arena *arena, struct moe_gpu_plan *plan, struct moed_error *err)
{
	const uint32_t experts = w->shape.num_experts;
	const size_t pairs = (size_t)job->num_tokens * job->topk;
	const int32_t *ids = (const int32_t *)(arena->base + job->topk_ids.offset);
	if (!moe_route_on_device(pairs, experts)) {
		if (pairs > c->host_pairs) {
			if (!grow(&c->ids, pairs))
				return moed_error_set(err, -ENOMEM, "out of memory");
			c->host_pairs = pairs;
		}
		memcpy(c->ids, ids, pairs * sizeof(int32_t));
		ids = c->ids;
	}
	size_t bad = 0;
	int32_t bad_id = 0;
	const int r = moe_gpu_route(&c->route, ids, pairs, job->topk, experts, (uint32_t *)c->stage.p, job->dtype,
				    w->shape.dtype, job->hidden_size, w->shape.inter_size, c->backend->forced, plan,
				    &bad, &bad_id);
	if (r == -EINVAL)
		return ids_out_of_range(err, bad, bad_id, job->topk, experts);
	return r < 0 ? moed_error_set(err, r, "out of memory") : 0;
}

/* Queue a job's copies and kernels on the client's stream, then its event. */
int enqueue(struct hip_client *c, const struct moed_job *job, const struct moed_weights *w,
	    const struct moed_arena *arena, struct moed_error *err)
{
	const size_t m = job->num_tokens, k = job->topk, pairs = m * k;
	const size_t h = job->hidden_size, i = w->shape.inter_size;
	const size_t ds = job->dtype == MOED_DTYPE_F32 ? 4 : 2;
	int r;
	c->report_armed = false;
	if (m == 0) { /* nothing to do: the event fires at once */
		const hipError_t e = hipEventRecord(c->done, c->stream);
		return e == hipSuccess ? 0 : gpu_error(err, e, "job");
	}
	struct job_trace *tr = c->trace.start ? &c->trace : NULL;
	if (tr)
		tr->armed = false, tr->t_submit = moed_now_ns(), tr->t_called = 0, tr->tokens = (uint32_t)m;
	/* A small x travels in the routing's copy, behind it (one copy fewer for a decode job:
	 * each costs microseconds of the stream's time); a large one is copied on its own
	 * from the arena, where a host copy into the stage would cost more than it saves, and
	 * first: its copy (16 MiB at Qwen3 M = 4096, hundreds of µs) then runs while the host
	 * sorts the pairs, which takes it tens of µs. */
	const size_t x_bytes = m * h * ds;
	const bool stage_x = x_bytes <= STAGED_X_MAX;
	if ((r = ensure(&c->x, stage_x ? 0 : x_bytes, err)))
		return r;
	hipError_t e = tr ? hipEventRecord(tr->start, c->stream) : hipSuccess;
	if (e == hipSuccess && !stage_x)
		e = hipMemcpyAsync(c->x.p, arena->base + job->hidden.offset, x_bytes, hipMemcpyHostToDevice,
				   c->stream);
	if (e != hipSuccess)
		return gpu_error(err, e, "copy of the job's inputs");
	/* The stage's room for any sorting: the host's packed copy with the most tiles there
	 * can be (a large job's ids first copied there), or the ids and the weights. */
	const size_t stage_most = (6 * pairs + 3 * (size_t)w->shape.num_experts + 3) * sizeof(uint32_t) + 256 +
				  (stage_x ? x_bytes : 0);
	if ((r = ensure(&c->stage, stage_most, err)))
		return r;
	struct moe_gpu_plan plan;
	if ((r = sort_pairs(c, job, w, arena, &plan, err)) < 0)
		return r;
	if (tr)
		tr->t_sorted = moed_now_ns(), tr->kernel = plan.kernel;
	const struct moe_routing *rt = &c->route;
	const size_t routing_bytes = moe_route_packed_bytes(rt), x_at = (routing_bytes + 255) & ~(size_t)255;
	if ((r = ensure(&c->routing, stage_x ? x_at + x_bytes : routing_bytes, err)) ||
	    (r = ensure(&c->act, pairs * i * 4, err)) || (r = ensure(&c->y, pairs * h * 4, err)) ||
	    (r = ensure(&c->out, job->output.length, err)))
		return r;
	/* The stage is free: the previous job's copy finished before that job completed.
	 * Where the host sorted, it holds the routing's packed copy (then a staged x), as laid
	 * out on the device; where the device sorts, the ids and the weights where the device
	 * cannot read the arena, then a staged x. */
	unsigned char *stage = (unsigned char *)c->stage.p;
	const float *weights = (const float *)(arena->base + job->topk_weights.offset);
	const uint32_t *sort_ids = NULL;
	const float *sort_weights = NULL;
	size_t stage_x_at = x_at, fetch_from = 0, fetch_to = 0, fetch_bytes = stage_x ? x_at + x_bytes : routing_bytes;
	if (rt->on_device) {
		size_t used = 0;
		if (c->pinned_dev) {
			sort_ids = (const uint32_t *)(c->pinned_dev + job->topk_ids.offset);
			sort_weights = (const float *)(c->pinned_dev + job->topk_weights.offset);
		} else {
			memcpy(stage, arena->base + job->topk_ids.offset, pairs * sizeof(uint32_t));
			memcpy(stage + pairs * sizeof(uint32_t), weights, pairs * sizeof(float));
			sort_ids = (const uint32_t *)stage;
			sort_weights = (const float *)(stage + pairs * sizeof(uint32_t));
			used = 2 * pairs * sizeof(uint32_t);
		}
		stage_x_at = (used + 255) & ~(size_t)255;
		fetch_from = stage_x_at, fetch_to = x_at, fetch_bytes = stage_x ? x_bytes : 0;
	} else {
		moe_route_pack(rt, weights, stage);
	}
	if (stage_x)
		memcpy(stage + stage_x_at, arena->base + job->hidden.offset, x_bytes);
	void *x_dev = stage_x ? (unsigned char *)c->routing.p + x_at : c->x.p;
	/* The stage's copy is the launch's (moe_gpu_args.fetch_bytes): a kernel reads it over
	 * the bus, the decode kernel itself where it can. The trace's "copies in" is then the
	 * large x's alone. */
	if (tr && (e = hipEventRecord(tr->in, c->stream)) != hipSuccess)
		return gpu_error(err, e, "copy of the job's inputs");
	if (tr)
		tr->t_copies = moed_now_ns(), tr->staged_x = stage_x;

	struct moe_gpu_args a;
	memset(&a, 0, sizeof(a));
	a.tokens = (uint32_t)m;
	a.topk = (uint32_t)k;
	a.hidden = (uint32_t)h;
	a.inter = (uint32_t)i;
	a.experts = w->shape.num_experts;
	a.io_dtype = job->dtype;
	a.w_dtype = w->shape.dtype;
	a.activation = job->activation;
	a.gated = w->shape.gated;
	a.no_combine = job->no_combine;
	a.router_weight_on_input = job->router_weight_on_input;
	a.scale = job->routed_scaling_factor;
	a.kernel = plan.kernel;
	a.x = x_dev;
	moe_route_args(rt, c->routing.p, &a);
	a.w13 = w->w13;
	a.w2 = w->w2;
	a.act = c->act.p;
	a.y = (float *)c->y.p;
	a.out = c->out.p;
	a.counters = c->counters;
	a.tile_group = c->backend->tile_group;
	a.serial_launch = c->backend->serial_launch;
	a.no_prefetch = c->backend->no_prefetch;
	a.separate_decode = c->backend->separate_decode;
	a.no_spread = c->backend->no_spread;
	a.tail_split = c->backend->tail_split;
	if (rt->on_device) {
		a.sort.ids = sort_ids, a.sort.weights = sort_weights, a.sort.report = c->report;
		__atomic_store_n(c->report, 0ull, __ATOMIC_RELAXED); /* the device writes it only on an error */
		c->report_armed = true, c->report_topk = (uint32_t)k, c->report_experts = a.experts;
	}
	a.fetch_from = stage + fetch_from;
	a.fetch_to = (unsigned char *)c->routing.p + fetch_to;
	a.fetch_bytes = fetch_bytes;
	e = (hipError_t)moe_gpu_launch(&a, c->stream);
	if (e == hipSuccess && tr)
		e = hipEventRecord(tr->kernels, c->stream);
	if (e != hipSuccess)
		return gpu_error(err, e, "launch of the job's kernels (and copy of its routing)");
	if (tr)
		tr->t_kernels = moed_now_ns();
	e = hipMemcpyAsync(arena->base + job->output.offset, c->out.p, job->output.length,
			   hipMemcpyDeviceToHost, c->stream);
	if (e == hipSuccess && tr)
		e = hipEventRecord(tr->out, c->stream);
	if (e == hipSuccess)
		e = hipEventRecord(c->done, c->stream);
	if (e != hipSuccess)
		return gpu_error(err, e, "copy of the job's output");
	if (tr)
		tr->t_queued = moed_now_ns(), tr->armed = true;
	return 0;
}

/*
 * After a failed job: a fault that the device keeps reporting (illegal address, trap,
 * hardware error) has lost the context, while a one-off error (a bad launch) is cleared
 * by reading it. Synchronising tells them apart.
 */
int check_lost(struct moed_backend *b, int r, struct moed_error *err)
{
	(void)hipGetLastError();
	const hipError_t e = hipDeviceSynchronize();
	if (e == hipSuccess)
		return r;
	b->lost = e;
	return moed_error_set(err, -ENOTRECOVERABLE,
			      "GPU fault: %s; the device is lost to this daemon, every later job fails "
			      "until moed restarts", hipGetErrorString(e));
}

bool notifies(struct moed_backend *b)
{
	pthread_mutex_lock(&b->notify_lock);
	const bool yes = b->notify != NULL;
	pthread_mutex_unlock(&b->notify_lock);
	return yes;
}

/* Runs on the runtime's callback thread once a client's stream gets past its job. */
void notify_done(void *arg)
{
	struct hip_client *c = (struct hip_client *)arg;
	struct moed_backend *b = c->backend;
	if (c->trace.start)
		__atomic_store_n(&c->trace.t_called, moed_now_ns(), __ATOMIC_RELEASE);
	pthread_mutex_lock(&b->notify_lock);
	if (b->notify)
		b->notify(b->notify_arg);
	pthread_mutex_unlock(&b->notify_lock);
}

void hip_set_notify(struct moed_backend *b, void (*notify)(void *arg), void *arg)
{
	pthread_mutex_lock(&b->notify_lock);
	b->notify = notify;
	b->notify_arg = arg;
	pthread_mutex_unlock(&b->notify_lock);
}

int hip_client_open(struct moed_backend *b, const struct moed_arena *arena, void **ctx,
		    struct moed_error *err)
{
	struct hip_client *c;
	const int r = client_make(b, arena, &c, err);
	if (r == 0)
		*ctx = c;
	return r;
}

void hip_client_close(struct moed_backend *, void *ctx)
{
	client_free((struct hip_client *)ctx);
}

int hip_submit(struct moed_backend *b, void *ctx, const struct moed_job *job,
	       const struct moed_weights *w, const struct moed_kwargs *,
	       const struct moed_arena *arena, struct moed_error *err)
{
	struct hip_client *c = (struct hip_client *)ctx;
	if (b->lost != hipSuccess)
		return moed_error_set(err, -ENOTRECOVERABLE,
				      "the GPU faulted earlier (%s): no job can run until moed restarts",
				      hipGetErrorString(b->lost));
	if (b->inject_fault) {
		b->inject_fault = false;
		const hipError_t e = (hipError_t)moe_gpu_inject_fault(c->stream);
		if (e != hipSuccess)
			return check_lost(b, gpu_error(err, e, "fault injection"), err);
	}
	int r = enqueue(c, job, w, arena, err);
	if (r == 0 && notifies(b)) {
		const hipError_t e = hipLaunchHostFunc(c->stream, notify_done, c);
		if (e != hipSuccess)
			r = gpu_error(err, e, "completion callback");
	}
	/* Only the runtime's errors (-EIO) can mean a lost device: a job's own mistakes (ids
	 * out of range) must not cost a device-wide synchronisation of every client. */
	return r == -EIO ? check_lost(b, r, err) : r;
}

/* MOED_HIP_TRACE's line for a finished job: the host's steps from submit() on, then the
 * GPU's, then when the callback ran and when poll() saw the job done (both from submit). */
void report_trace(struct job_trace *tr)
{
	if (!tr->armed)
		return;
	tr->armed = false;
	const uint64_t seen = moed_now_ns(), called = __atomic_load_n(&tr->t_called, __ATOMIC_ACQUIRE);
	float in = 0, kernels = 0, out = 0;
	(void)hipEventElapsedTime(&in, tr->start, tr->in);
	(void)hipEventElapsedTime(&kernels, tr->in, tr->kernels);
	(void)hipEventElapsedTime(&out, tr->kernels, tr->out);
	char callback[48] = "no callback";
	if (called)
		snprintf(callback, sizeof(callback), "callback at %.1f us", (called - tr->t_submit) / 1e3);
	fprintf(stderr,
		"moed-hip trace: M %u, %s: host sort %.1f, copies%s %.1f, kernels %.1f, rest %.1f us; "
		"GPU copies in %.1f, kernels %.1f, copy out %.1f us; %s, seen done at %.1f us\n",
		tr->tokens, moe_gpu_kernel_name((enum moe_gpu_kernel)tr->kernel),
		(tr->t_sorted - tr->t_submit) / 1e3, tr->staged_x ? " (x staged)" : "",
		(tr->t_copies - tr->t_sorted) / 1e3, (tr->t_kernels - tr->t_copies) / 1e3,
		(tr->t_queued - tr->t_kernels) / 1e3, in * 1e3, kernels * 1e3, out * 1e3, callback,
		(seen - tr->t_submit) / 1e3);
}

int hip_poll(struct moed_backend *b, void *ctx, struct moed_error *err)
{
	struct hip_client *c = (struct hip_client *)ctx;
	const hipError_t e = hipEventQuery(c->done);
	if (e == hipSuccess) {
		report_trace(&c->trace);
		size_t bad;
		int32_t id;
		if (c->report_armed &&
		    moe_gpu_sort_report(__atomic_load_n(c->report, __ATOMIC_RELAXED), &bad, &id)) {
			c->report_armed = false;
			return ids_out_of_range(err, bad, id, c->report_topk, c->report_experts);
		}
		c->report_armed = false;
		return 1;
	}
	if (e == hipErrorNotReady)
		return 0;
	return check_lost(b, gpu_error(err, e, "job"), err);
}

int hip_run(struct moed_backend *b, const struct moed_job *job, const struct moed_weights *w,
	    const struct moed_kwargs *kw, const struct moed_arena *arena, struct moed_error *err)
{
	int r = b->own ? 0 : client_make(b, NULL, &b->own, err);
	if (r == 0)
		r = hip_submit(b, b->own, job, w, kw, arena, err);
	if (r < 0)
		return r;
	(void)hipEventSynchronize(b->own->done); /* poll() reads its outcome */
	r = hip_poll(b, b->own, err);
	return r < 0 ? r : 0;
}

} // namespace

extern "C" {
/* The symbol the daemon looks up after dlopen (kernels/backend_load.c). */
__attribute__((visibility("default"))) extern const struct moed_backend_ops moed_hip_backend;
const struct moed_backend_ops moed_hip_backend = {
	"hip",       hip_probe,         hip_create,        hip_destroy,      hip_schema,
	hip_caps,    hip_dtypes,        hip_activations,   hip_weights_alloc, hip_weights_write,
	hip_weights_free, hip_run,      hip_client_open,   hip_client_close, hip_submit,
	hip_poll,    hip_set_notify,    400,
};
}
#endif /* !__HIP_DEVICE_COMPILE__ */
