/* SPDX-License-Identifier: MIT */
/*
 * Named weight sets shared between clients: one copy in the backend's memory,
 * reference-counted, freed when the last holder releases it. A set is created by one
 * client, which uploads both tensors in order and commits it; only then may others
 * attach. Thread-safe: the control thread registers and releases, the poller holds a
 * reference for the duration of each job.
 */
#ifndef MOED_DAEMON_WEIGHTS_H
#define MOED_DAEMON_WEIGHTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

struct moed_weight_set {
	char name[MOED_NAME_MAX];
	struct moed_weights w;
	unsigned refs;
	bool committed;
	const void *creator;  /* the session that uploads; NULL once committed */
	uint64_t filled[2];   /* bytes uploaded so far, per tensor, in order */
	struct moed_weight_set *next;
};

struct moed_weight_registry {
	pthread_mutex_t lock;
	struct moed_weight_set *sets;
	uint64_t bytes, max_bytes;
	const struct moed_backend_ops *ops;
	struct moed_backend *backend;
};

void moed_weights_init(struct moed_weight_registry *reg, const struct moed_backend_ops *ops,
		       struct moed_backend *backend, uint64_t max_bytes);
/* Frees every set still present (at shutdown). */
void moed_weights_fini(struct moed_weight_registry *reg);

/*
 * Create the set `name` for `creator`, or attach to a committed set of that name and the
 * same shape. *created tells which. Errors: -EINVAL (bad name or shape), -EEXIST (same
 * name, other shape), -EBUSY (still being uploaded by another client), -ENOSPC (over the
 * daemon's limit), -ENOMEM; each with a message.
 */
int moed_weights_register(struct moed_weight_registry *reg, const char *name,
			  const struct moed_weights_shape *shape, const void *creator,
			  uint64_t creator_budget, struct moed_weight_set **out, bool *created,
			  struct moed_error *err);

/* Attach to a committed set by name: -ENOENT, or -EBUSY while it is being uploaded. */
int moed_weights_attach(struct moed_weight_registry *reg, const char *name,
			struct moed_weight_set **out, struct moed_error *err);

/* Append bytes to one tensor (creator only, before commit). */
int moed_weights_upload(struct moed_weight_registry *reg, struct moed_weight_set *set,
			const void *creator, unsigned tensor, uint64_t tensor_offset,
			const void *src, uint64_t len, struct moed_error *err);

/* Make the set usable and attachable; both tensors must be complete. */
int moed_weights_commit(struct moed_weight_registry *reg, struct moed_weight_set *set,
			const void *creator, struct moed_error *err);

/*
 * Take another reference to a set the caller already holds, for the duration of a job:
 * -EBUSY (with a message) while it is not committed.
 */
int moed_weights_use(struct moed_weight_registry *reg, struct moed_weight_set *set,
		     struct moed_error *err);
/* Drop one reference; the last frees the set. */
void moed_weights_put(struct moed_weight_registry *reg, struct moed_weight_set *set);

#endif
