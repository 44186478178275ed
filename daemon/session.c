/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "session.h"

struct moed_session *moed_session_new(int sock, pid_t pid, uid_t uid, gid_t gid, uint64_t id)
{
	struct moed_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->refs = 1;
	s->sock = sock;
	s->pid = pid;
	s->uid = uid;
	s->gid = gid;
	s->id = id;
	s->memfd = -1;
	s->completion_fd = -1;
	s->drain_left = -1;
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

void moed_session_get(struct moed_session *s)
{
	__atomic_fetch_add(&s->refs, 1, __ATOMIC_RELAXED);
}

void moed_session_put(struct moed_session *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (s->backend_ctx) /* before the unmap: it may have pinned the arena */
		s->backend_ops->client_close(s->backend, s->backend_ctx);
	if (s->region)
		munmap(s->region, s->hdr.region_size);
	if (s->memfd >= 0)
		close(s->memfd);
	if (s->completion_fd >= 0)
		close(s->completion_fd);
	if (s->sock >= 0)
		close(s->sock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int moed_session_open_backend(struct moed_session *s, const struct moed_backend_ops *ops,
			      struct moed_backend *b, struct moed_error *err)
{
	if (s->backend_ctx)
		return 0;
	const int r = ops->client_open(b, &s->arena, &s->backend_ctx, err);
	if (r < 0) {
		s->backend_ctx = NULL;
		return r;
	}
	s->backend_ops = ops;
	s->backend = b;
	return 0;
}

int moed_session_setup(struct moed_session *s, uint32_t sq_entries, uint64_t arena_size,
		       struct moed_error *err)
{
	const struct moed_region_params params = {
		.sq_entries = sq_entries,
		.cq_entries = 2 * sq_entries,
		.arena_size = (arena_size + 63) / 64 * 64,
	};
	uint32_t start;
	int r;

	if (moed_region_layout(&params, &s->hdr) < 0)
		return moed_error_set(err, -EINVAL, "cannot lay out a region with %u entries and %llu bytes",
				      sq_entries, (unsigned long long)arena_size);
	s->memfd = memfd_create("moed-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (s->memfd < 0)
		return moed_error_set(err, -errno, "memfd_create: %s", strerror(errno));
	if (ftruncate(s->memfd, (off_t)s->hdr.region_size) < 0)
		return moed_error_set(err, -errno, "cannot size a %llu-byte region: %s",
				      (unsigned long long)s->hdr.region_size, strerror(errno));
	/* A client must not shrink the region under the daemon's mapping (SIGBUS). */
	if (fcntl(s->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return moed_error_set(err, -errno, "cannot seal the region: %s", strerror(errno));
	void *m = mmap(NULL, s->hdr.region_size, PROT_READ | PROT_WRITE, MAP_SHARED, s->memfd, 0);
	if (m == MAP_FAILED)
		return moed_error_set(err, -errno, "cannot map the region: %s", strerror(errno));
	s->region = m;

	/* A random start position: wrap-around past 2^32 is an everyday event, not a test. */
	if (getrandom(&start, sizeof(start), GRND_NONBLOCK) != sizeof(start))
		start = (uint32_t)(uintptr_t)s ^ (uint32_t)s->id;
	if ((r = moed_region_format(s->region, &s->hdr, start)) < 0)
		return moed_error_set(err, r, "cannot format the region");
	moed_ring_attach(&s->sq, (struct moed_ring_ctl *)(void *)(s->region + s->hdr.sq.ctl_offset),
			 s->region + s->hdr.sq.slots_offset, s->hdr.sq.entries, s->hdr.sq.slot_size);
	moed_ring_attach(&s->cq, (struct moed_ring_ctl *)(void *)(s->region + s->hdr.cq.ctl_offset),
			 s->region + s->hdr.cq.slots_offset, s->hdr.cq.entries, s->hdr.cq.slot_size);
	s->msgs = (struct moed_msg *)(void *)(s->region + s->hdr.msgs_offset);
	s->arena = (struct moed_arena){ s->region + s->hdr.arena_offset, s->hdr.arena_size };

	/* Non-blocking: an io_uring write to a blocking eventfd goes through a worker thread. */
	s->completion_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->completion_fd < 0)
		return moed_error_set(err, -errno, "eventfd: %s", strerror(errno));
	return 0;
}

int moed_session_use_weights(struct moed_session *s, uint32_t handle,
			     struct moed_weight_registry *reg, struct moed_weight_set **out,
			     struct moed_error *err)
{
	int r;
	pthread_mutex_lock(&s->lock);
	struct moed_weight_set *w =
		handle >= 1 && handle <= MOED_SESSION_MAX_WEIGHTS ? s->weights[handle - 1] : NULL;
	if (!w)
		r = moed_error_set(err, -EBADF, "weights handle %u is not held by this client", handle);
	else if ((r = moed_weights_use(reg, w, err)) == 0)
		*out = w;
	pthread_mutex_unlock(&s->lock);
	return r;
}

void moed_session_release_all(struct moed_session *s, struct moed_weight_registry *reg)
{
	for (unsigned i = 0; i < MOED_SESSION_MAX_WEIGHTS; i++) {
		pthread_mutex_lock(&s->lock);
		struct moed_weight_set *w = s->weights[i];
		s->weights[i] = NULL;
		pthread_mutex_unlock(&s->lock);
		if (w)
			moed_weights_put(reg, w);
	}
}
