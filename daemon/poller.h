/* SPDX-License-Identifier: MIT */
/*
 * The poller: one thread that serves every client's submission ring in turn, runs the
 * jobs, posts completions and signals waiting clients. When there is nothing to do it
 * spins for --spin-us, then raises need-wakeup on every ring and sleeps on the doorbell.
 */
#ifndef MOED_DAEMON_POLLER_H
#define MOED_DAEMON_POLLER_H

struct moed_daemon;
struct moed_poller;
struct moed_session;

int moed_poller_start(struct moed_daemon *d, struct moed_poller **out);
/* Serve a session from the next round on (the poller takes its own reference). */
void moed_poller_add(struct moed_poller *p, struct moed_session *s);
/* Wake the poller so that it notices new or dead sessions. */
void moed_poller_kick(struct moed_poller *p);
/* Serve whatever is already submitted, then stop the thread and drop every session. */
void moed_poller_stop(struct moed_poller *p);

#endif
