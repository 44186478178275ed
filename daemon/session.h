/* SPDX-License-Identifier: MIT */
/*
 * One client connection: its control socket, its shared region (rings and arena), its
 * completion eventfd and the weight sets it holds. Shared by the control thread (which
 * created it and answers its requests) and the poller (which serves its rings), and
 * freed when both have dropped their reference.
 */
#ifndef MOED_DAEMON_SESSION_H
#define MOED_DAEMON_SESSION_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "backend.h"
#include "region.h"
#include "ring.h"
#include "weights.h"

#define MOED_SESSION_MAX_WEIGHTS 64

struct moed_session {
	unsigned refs; /* atomic */
	int sock;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char name[MOED_NAME_MAX];
	uint64_t id; /* for logs */

	/* a connection refused at accept: its first message is answered with this */
	int refuse_status;
	char refuse_msg[160];

	/* set up by the handshake */
	bool ready;
	int memfd;
	unsigned char *region;
	struct moed_region_header hdr;
	struct moed_ring sq; /* the daemon consumes */
	struct moed_ring cq; /* the daemon produces */
	struct moed_msg *msgs;
	struct moed_arena arena;
	int completion_fd;

	/* the control thread sets dead when the client has gone; the poller then drops it */
	int dead;   /* atomic */
	int broken; /* atomic: the poller found the rings corrupt */

	pthread_mutex_t lock; /* the weights table */
	struct moed_weight_set *weights[MOED_SESSION_MAX_WEIGHTS]; /* handle = index + 1 */
	bool created[MOED_SESSION_MAX_WEIGHTS];    /* this client created the set */
	uint64_t created_bytes;                   /* of sets it created and still holds */

	uint64_t jobs, job_errors; /* atomic counters */
	int64_t drain_left;        /* poller: entries still served once draining; -1 = not draining */
	bool running;              /* poller: a job of this session is at the runner */

	/* The backend's context for this client: opened when it says HELLO, or by the
	 * runner at its first job if that failed (moed_session_open_backend), closed by the
	 * last moed_session_put (no job can be in flight by then). */
	void *backend_ctx;
	const struct moed_backend_ops *backend_ops;
	struct moed_backend *backend;
};

struct moed_session *moed_session_new(int sock, pid_t pid, uid_t uid, gid_t gid, uint64_t id);
void moed_session_get(struct moed_session *s);
/* Drop a reference; the last one unmaps the region and closes every fd. */
void moed_session_put(struct moed_session *s);

/*
 * Create the region (a sealed memfd) with these sizes and the completion eventfd.
 * Returns 0 or a negative errno with a message.
 */
int moed_session_setup(struct moed_session *s, uint32_t sq_entries, uint64_t arena_size,
		       struct moed_error *err);

/*
 * For a job: the weight set behind a handle, with a reference taken under the session
 * lock so that a concurrent release cannot free it mid-job. Drop it with
 * moed_weights_put(). -EBADF when the client holds no such handle, -EBUSY when the set
 * is not committed.
 */
int moed_session_use_weights(struct moed_session *s, uint32_t handle,
			     struct moed_weight_registry *reg, struct moed_weight_set **out,
			     struct moed_error *err);

/* The backend's context for this client, opened unless it is already; 0 or the
 * backend's negative errno with its message. */
int moed_session_open_backend(struct moed_session *s, const struct moed_backend_ops *ops,
			      struct moed_backend *b, struct moed_error *err);

/* Release every weight set the session holds (when it goes away). */
void moed_session_release_all(struct moed_session *s, struct moed_weight_registry *reg);

#endif
