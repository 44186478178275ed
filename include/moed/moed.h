/* SPDX-License-Identifier: MIT */
/*
 * libmoed: the client library of the moed fused-MoE daemon.
 *
 * A client connects once, places its tensors in the data arena it shares with the
 * daemon, submits jobs into its submission ring and reaps completions from its
 * completion ring, by polling or by waiting (spin, then sleep on an eventfd).
 *
 * Conventions: every function that can fail returns 0 (or a count) on success and a
 * negative errno on failure; none logs. Where the daemon refused something, the
 * client's last error message (moed_client_error) or the completion's message says
 * why. A struct moed_client is not thread-safe: use one per thread, or lock around it.
 */
#ifndef MOED_MOED_H
#define MOED_MOED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moed/abi.h"
#include "moed/kwargs.h"
#include "moed/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

struct moed_client;

/* The library's version ("0.1.0") and the shared-memory ABI version it speaks. */
const char *moed_version(void);
unsigned moed_abi_version(void);

struct moed_connect_options {
	const char *name;     /* shown in the daemon's log; may be NULL */
	uint32_t sq_entries;  /* jobs in flight; 0 = the daemon's default */
	uint64_t arena_size;  /* data arena bytes; 0 = the daemon's default */
	uint32_t spin_us;     /* moed_wait spins this long before sleeping; default 20 */
	char *error;          /* if not NULL, why a connect failed */
	size_t error_len;
};

/*
 * Connect to the daemon at `socket_path` (NULL: $MOED_SOCKET, else moed.sock in
 * $RUNTIME_DIRECTORY or $XDG_RUNTIME_DIR, else /run/moed/moed.sock) and map the
 * region it hands over. `opts` may be NULL.
 * Returns 0, or -ENOENT/-ECONNREFUSED (no daemon), -EACCES (not allowed),
 * -EPROTONOSUPPORT (ABI mismatch), -E2BIG (arena too large), -EBADMSG (malformed
 * region), -ENOMEM; the reason is also written to opts->error.
 */
int moed_connect(const char *socket_path, const struct moed_connect_options *opts,
		 struct moed_client **out);

/*
 * Connect for operator requests only (moedctl): no region, no jobs. Same socket, same
 * permission check. Returns 0 or the errors of moed_connect, with the reason in error.
 */
int moed_connect_admin(const char *socket_path, char *error, size_t error_len,
		       struct moed_client **out);

/*
 * One operator request (MOED_MSG_ADMIN_*, moed/proto.h) and its reply body. Returns the
 * daemon's status (0 or a negative errno, message in moed_client_error) and the body's
 * size in *reply_len.
 */
int moed_admin_request(struct moed_client *c, uint32_t type, const void *body, size_t body_len,
		       void *reply, size_t cap, size_t *reply_len);

/* Disconnect and unmap; NULL is accepted. The daemon releases the client's weights. */
void moed_close(struct moed_client *c);

/* The message of the last failed call on this client ("" if none). */
const char *moed_client_error(const struct moed_client *c);

/* ---- the backend's signature: fetched once, then cached ------------------------------ */

struct moed_signature {
	char backend[MOED_BACKEND_NAME_MAX];
	uint32_t caps;        /* MOED_CAP_* */
	uint32_t dtypes;      /* bit per enum moed_dtype */
	uint32_t activations; /* bit per enum moed_activation */
	uint32_t kwarg_count;
	struct moed_kwarg_spec_wire kwargs[MOED_SIG_MAX_KWARGS];
};

/* The signature, asked of the daemon on first use and cached; NULL on failure. */
const struct moed_signature *moed_signature(struct moed_client *c);

/* Shorthand for the capability probe: 1, 0, or a negative errno. */
int moed_supports_no_combine(struct moed_client *c);

/* ---- the data arena -------------------------------------------------------------------- */

/* Allocate `size` bytes of the arena, 64-byte aligned; NULL when it is full. */
void *moed_arena_alloc(struct moed_client *c, size_t size);
/* Return an allocation; NULL is accepted. */
void moed_arena_free(struct moed_client *c, void *p);
/* The arena as a whole (base and size), e.g. to wrap it in an array library. */
void *moed_arena_base(const struct moed_client *c, size_t *size);

/* ---- weight sets -------------------------------------------------------------------------- */

/*
 * Register weight set `name` of this shape and upload w13 and w2 (host memory of the
 * shape's dtype, w13 [E, 2I or I, H], w2 [E, H, I]) through the arena in chunks; if a
 * committed set of that name and shape exists, attach to it instead (no upload).
 * Returns a handle (> 0) for jobs, or -EEXIST (same name, other shape), -EBUSY
 * (another client is still uploading it), -ENOSPC/-EDQUOT (limits), -ENOMEM (no arena
 * room for a staging chunk), -EINVAL.
 */
int moed_weights_register(struct moed_client *c, const char *name,
			  const struct moed_weights_shape *shape, const void *w13, const void *w2);

/* Attach to a committed set by name; its shape in *shape. A handle, or -ENOENT/-EBUSY. */
int moed_weights_attach(struct moed_client *c, const char *name, struct moed_weights_shape *shape);

/* Drop a handle; the set is freed when its last holder drops it. */
int moed_weights_release(struct moed_client *c, uint32_t handle);

/* ---- jobs ------------------------------------------------------------------------------------ */

/*
 * One fused-MoE job. Every pointer must lie in this client's arena. hidden_size 0 takes
 * the weight set's. The weight set's gating is taken from the handle. kwargs (a blob from
 * moed_kwargs_data, copied into the arena) may be NULL.
 */
struct moed_moe_job {
	uint64_t user_data;
	uint32_t weights;   /* handle */
	uint8_t dtype;      /* enum moed_dtype of hidden and output */
	uint8_t activation; /* enum moed_activation */
	bool no_combine;
	bool router_weight_on_input;
	uint32_t num_tokens;
	uint32_t topk;
	uint32_t hidden_size;
	float routed_scaling_factor; /* 0 is taken as 1 */
	const void *hidden;
	const int32_t *topk_ids;
	const float *topk_weights;
	void *output;
	const void *kwargs;
	size_t kwargs_size;
};

/*
 * Submit up to n jobs; returns how many were queued (fewer when the ring is full, 0
 * included). A job whose buffers are not in the arena or whose handle is unknown stops
 * the batch there: the jobs before it are queued and counted; if it is the first,
 * -EINVAL is returned (with moed_client_error). -EPIPE when the daemon has gone.
 */
int moed_submit_moe(struct moed_client *c, const struct moed_moe_job *jobs, unsigned n);

/* Submit n empty jobs (they complete at once): for measuring the round trip. */
int moed_submit_nop(struct moed_client *c, const uint64_t *user_data, unsigned n);

struct moed_completion {
	uint64_t user_data;
	int32_t status; /* 0 or a negative errno */
	uint32_t out_rank;
	uint32_t out_shape[3];
	uint64_t queue_ns, run_ns;
	char message[MOED_MSG_SIZE]; /* why, when status < 0 */
};

/* Reap up to max completions without waiting; returns how many (0 included). */
int moed_poll(struct moed_client *c, struct moed_completion *out, unsigned max);

/*
 * Reap at least one and up to max completions: spin for the connection's spin_us, then
 * sleep on the completion eventfd. timeout_ms < 0 waits for ever. Returns how many, or
 * -ETIMEDOUT, or -ECONNRESET when the daemon has gone (completions it posted before
 * going are still returned first).
 */
int moed_wait(struct moed_client *c, struct moed_completion *out, unsigned max, int timeout_ms);

/* How long moed_wait spins before it sleeps; 0 sleeps at once. */
void moed_set_spin_us(struct moed_client *c, uint32_t spin_us);

/* Jobs submitted and not yet reaped. */
unsigned moed_inflight(const struct moed_client *c);

/* The completion eventfd, for an event loop: readable when completions may be ready
 * (after moed_arm_wakeup). Non-blocking; read it before reaping. */
int moed_completion_fd(const struct moed_client *c);

/* Ask for the eventfd to be signalled: returns 1 when completions are already there
 * (reap them instead of sleeping), 0 when it is armed. */
int moed_arm_wakeup(struct moed_client *c);

#ifdef __cplusplus
}
#endif

#endif /* MOED_MOED_H */
