/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#include "log.h"
#include "notify.h"

static const uint64_t one = 1; /* what every signal writes; lives as long as the program */

struct moed_notifier {
	bool uring;
	unsigned queued;
#ifdef HAVE_LIBURING
	struct io_uring ring;
	unsigned sqe_flags;
#endif
};

int moed_notifier_new(unsigned entries, struct moed_notifier **out)
{
	struct moed_notifier *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
#ifdef HAVE_LIBURING
	int r = io_uring_queue_init(entries, &n->ring, 0);
	if (r == 0) {
		n->uring = true;
#ifdef IORING_FEAT_CQE_SKIP
		/* Successful writes need no completion entry: nothing to reap. */
		if (n->ring.features & IORING_FEAT_CQE_SKIP)
			n->sqe_flags = IOSQE_CQE_SKIP_SUCCESS;
#endif
	} else {
		log_warn("io_uring unavailable (%s): completions are signalled with write()",
			 strerror(-r));
	}
#else
	(void)entries;
#endif
	*out = n;
	return 0;
}

void moed_notifier_free(struct moed_notifier *n)
{
	if (!n)
		return;
#ifdef HAVE_LIBURING
	if (n->uring) {
		moed_notifier_flush(n);
		io_uring_queue_exit(&n->ring);
	}
#endif
	free(n);
}

void moed_notifier_queue(struct moed_notifier *n, int efd)
{
#ifdef HAVE_LIBURING
	if (n->uring) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&n->ring);
		if (!sqe) {
			moed_notifier_flush(n);
			sqe = io_uring_get_sqe(&n->ring);
		}
		if (sqe) {
			io_uring_prep_write(sqe, efd, &one, sizeof(one), 0);
			sqe->flags |= n->sqe_flags;
			n->queued++;
			return;
		}
	}
#else
	(void)n;
#endif
	/* EAGAIN means the counter is already huge: the client is awake enough. */
	ssize_t r = write(efd, &one, sizeof(one));
	(void)r;
}

void moed_notifier_flush(struct moed_notifier *n)
{
#ifdef HAVE_LIBURING
	if (!n->uring)
		return;
	if (n->queued) {
		int r = io_uring_submit(&n->ring);
		if (r < 0)
			log_warn("io_uring_submit: %s", strerror(-r));
		n->queued = 0;
	}
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&n->ring, &cqe) == 0) {
		if (cqe->res < 0 && cqe->res != -EAGAIN)
			log_debug("completion signal failed: %s", strerror(-cqe->res));
		io_uring_cqe_seen(&n->ring, cqe);
	}
#else
	(void)n;
#endif
}

const char *moed_notifier_kind(const struct moed_notifier *n)
{
	return n->uring ? "io_uring" : "write()";
}
