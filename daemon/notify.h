/* SPDX-License-Identifier: MIT */
/*
 * Signalling clients' completion eventfds, batched: the poller queues one signal per
 * client that is waiting and flushes once per round, so many completions cost one
 * io_uring_enter. Without liburing (or where io_uring is refused) each signal is a
 * write(). This file holds every #ifdef for liburing.
 */
#ifndef MOED_DAEMON_NOTIFY_H
#define MOED_DAEMON_NOTIFY_H

struct moed_notifier;

/* Never fails for want of io_uring: it falls back to write(). -ENOMEM only. */
int moed_notifier_new(unsigned entries, struct moed_notifier **out);
void moed_notifier_free(struct moed_notifier *n);
void moed_notifier_queue(struct moed_notifier *n, int eventfd);
void moed_notifier_flush(struct moed_notifier *n);
const char *moed_notifier_kind(const struct moed_notifier *n);

#endif
