/* SPDX-License-Identifier: MIT */
/*
 * The poller: one thread that serves every client's submission ring in turn, checks each
 * job, hands MoE jobs to the runner (daemon/runner.h) and completes everything else at
 * once, posts completions and signals waiting clients. When there is nothing to do it
 * spins for --spin-us, then raises need-wakeup on every ring and sleeps on the doorbell,
 * which clients and the runner ring.
 */
#ifndef MOED_DAEMON_POLLER_H
#define MOED_DAEMON_POLLER_H

#include <stdbool.h>
#include <stdint.h>

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

/*
 * For the watchdog: true when the poller has gone round its loop since the last call,
 * or is asleep waiting for work; false when it is stuck. (A long job is the runner's,
 * and does not stop the poller.)
 */
bool moed_poller_healthy(struct moed_poller *p);

/* Entries seen waiting or running in the last round, over all clients. */
unsigned moed_poller_queued(const struct moed_poller *p);

/*
 * Drain: the entries already submitted are served; every later one completes with
 * -ESHUTDOWN. Irreversible.
 */
void moed_poller_drain(struct moed_poller *p);

struct moed_poller_stats {
	uint64_t jobs, errors, moe_jobs;
	uint32_t samples;         /* latency samples the percentiles come from */
	uint64_t queue_ns[3];     /* p50, p99, p99.9 of MoE jobs' queueing */
	uint64_t run_ns[3];       /* likewise, execution */
};
void moed_poller_stats(const struct moed_poller *p, struct moed_poller_stats *out);

#endif
