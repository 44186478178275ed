/* SPDX-License-Identifier: MIT */
/*
 * The kernel backend interface. A backend is a table of functions plus a signature: the
 * kwargs it accepts (name, type, range) and its capabilities. The daemon validates a
 * job's descriptor (daemon/job_validate.c) and parses its kwargs against the signature
 * before calling run(): a backend receives only jobs it said it can do.
 *
 * Buffers are named by struct moed_buf spans of an arena (struct moed_arena), so the
 * same interface will serve device-resident arenas later.
 */
#ifndef MOED_KERNELS_BACKEND_H
#define MOED_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "job_validate.h"
#include "kwargs_parse.h"
#include "moed/proto.h"

struct moed_backend;

struct moed_backend_config {
	unsigned threads;  /* worker threads; 0 = the backend's default */
	uint32_t withhold; /* MOED_CAP_* bits to withhold, as an older kernel library lacks them */
};

/* Where a job's buffers live. Host memory today. */
struct moed_arena {
	unsigned char *base;
	uint64_t size;
};

/* A weight set as the backend stores it. */
struct moed_weights {
	struct moed_weights_shape shape;
	void *w13; /* backend-owned storage, [E, 2I or I, H] */
	void *w2;  /* [E, H, I] */
	uint64_t w13_bytes, w2_bytes;
};

struct moed_backend_ops {
	const char *name;
	/* 0 when the backend can run here, else a negative errno and a reason in err. */
	int (*probe)(struct moed_error *err);
	int (*create)(const struct moed_backend_config *cfg, struct moed_backend **out,
		      struct moed_error *err);
	void (*destroy)(struct moed_backend *b);
	/* The signature. Pointers stay valid for the backend's lifetime. */
	const struct moed_kwargs_schema *(*schema)(const struct moed_backend *b);
	uint32_t (*caps)(const struct moed_backend *b);        /* MOED_CAP_* */
	uint32_t (*dtypes)(const struct moed_backend *b);      /* bit per enum moed_dtype */
	uint32_t (*activations)(const struct moed_backend *b); /* bit per enum moed_activation */
	/* Storage for a weight set's tensors; w->shape is set, the sizes are filled in. */
	int (*weights_alloc)(struct moed_backend *b, struct moed_weights *w, struct moed_error *err);
	int (*weights_write)(struct moed_backend *b, struct moed_weights *w, unsigned tensor,
			     uint64_t offset, const void *src, uint64_t len, struct moed_error *err);
	void (*weights_free)(struct moed_backend *b, struct moed_weights *w);
	/*
	 * Run one validated job to completion. 0 or a negative errno with err set.
	 * -ENOTRECOVERABLE: the device is lost (a kernel fault); this job and every later one
	 * fail so, and only a restart of the daemon brings the backend back.
	 */
	int (*run)(struct moed_backend *b, const struct moed_job *job, const struct moed_weights *w,
		   const struct moed_kwargs *kwargs, const struct moed_arena *arena,
		   struct moed_error *err);

	/*
	 * Asynchronous execution, as the daemon runs jobs. A client (a session, with its
	 * arena) gets a context from client_open(); submit() starts one validated job for
	 * it and returns at once; poll() then says 0 while that job runs, 1 when it is done,
	 * or its negative errno with err set (-ENOTRECOVERABLE as for run()). A client has
	 * at most one job in flight: submit again only after poll() said it finished. The
	 * job, weights, kwargs and arena must stay valid until then. client_open() and
	 * client_close() may be called from any thread (the daemon opens a client's context
	 * when it connects), close never with the client's job in flight. Each client's jobs
	 * may run beside other clients' (on the GPU: one stream each).
	 */
	int (*client_open)(struct moed_backend *b, const struct moed_arena *arena, void **ctx,
			   struct moed_error *err);
	void (*client_close)(struct moed_backend *b, void *ctx);
	int (*submit)(struct moed_backend *b, void *ctx, const struct moed_job *job,
		      const struct moed_weights *w, const struct moed_kwargs *kwargs,
		      const struct moed_arena *arena, struct moed_error *err);
	int (*poll)(struct moed_backend *b, void *ctx, struct moed_error *err);
	/*
	 * Optional: have the backend call notify(arg) whenever a submitted job may have
	 * finished, so that the caller sleeps until then instead of polling on a timer.
	 * notify may run on any thread (a worker, a runtime's callback thread) and must
	 * return quickly without calling the backend. set_notify(b, NULL, NULL) returns only
	 * once no call to the previous notify is under way, and none comes after it.
	 */
	void (*set_notify)(struct moed_backend *b, void (*notify)(void *arg), void *arg);
	/*
	 * How late notify may come after a job's work is done, in µs; 0: at once. The caller
	 * polls meanwhile where it is not 0 (the HIP runtime's callback thread ran 10-400 µs
	 * after a job's last copy on an H200: bench/RESULTS.md, version 8).
	 */
	unsigned notify_late_us;
};

/* Bytes of one tensor of a weight set. */
uint64_t moed_weights_tensor_bytes(const struct moed_weights_shape *s, unsigned tensor);

/*
 * The checks every backend shares, against the job's weight set and the backend's
 * signature: hidden size, capability for each flag, dtype and activation.
 * no_combine without the capability is -EOPNOTSUPP, also for an empty job.
 */
int moed_backend_admit(const struct moed_backend_ops *ops, const struct moed_backend *b,
		       const struct moed_job *job, const struct moed_weights_shape *shape,
		       struct moed_error *err);

extern const struct moed_backend_ops moed_cpu_backend;

/*
 * The backend called `name`: "cpu"; "hip" (the GPU module; NULL with the reason in err
 * when it cannot be loaded or finds no device); "auto" (the GPU when usable, else the CPU).
 */
const struct moed_backend_ops *moed_backend_find(const char *name, struct moed_error *err);

#endif
