/* SPDX-License-Identifier: MIT */
/*
 * The runner: one thread that executes MoE jobs for the poller, so that a long job never
 * holds up the rings. The poller validates a job, hands it over with everything it needs
 * (references to its session and weight set, a private copy of its kwargs) and goes on
 * serving; the runner submits it to the backend on its client's context (opened at the
 * client's first job; on the GPU a stream of its own, so clients' jobs overlap), waits
 * for the backend's word that a job ended, or polls (moed_runner_wait_us), and hands each
 * finished job back through the done list, ringing the doorbell so that a sleeping
 * poller wakes to post the completion. The backend is called from this thread only (but
 * for client_close). Each session has at most one job here at a time (the poller's rule).
 */
#ifndef MOED_DAEMON_RUNNER_H
#define MOED_DAEMON_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "kwargs_parse.h"

struct moed_daemon;
struct moed_runner;
struct moed_session;
struct moed_weight_set;

struct moed_run_item {
	struct moed_run_item *next;
	struct moed_session *s;    /* a reference, dropped by the poller after posting */
	struct moed_weight_set *w; /* a reference, dropped by the runner when the job is over */
	struct moed_job job;       /* validated private copy */
	struct moed_kwargs kwargs; /* parsed from blob */
	uint64_t user_data;
	uint64_t t_seen, t_run, run_ns; /* found by the poller, submitted, until seen done */
	int status;                     /* the run's result */
	struct moed_error err;
	unsigned char blob[MOED_KWARGS_MAX_SIZE];
};

int moed_runner_start(struct moed_daemon *d, struct moed_runner **out);
/* Queue a job; the item belongs to the runner until moed_runner_take_done returns it. */
void moed_runner_submit(struct moed_runner *r, struct moed_run_item *it);
/* The jobs finished since the last call, oldest first (NULL when none). */
struct moed_run_item *moed_runner_take_done(struct moed_runner *r);
/* True when finished jobs wait to be taken. */
bool moed_runner_has_done(struct moed_runner *r);
/* Finish the queued jobs, then stop the thread. Items not yet taken stay in the done list. */
void moed_runner_stop(struct moed_runner *r);
void moed_runner_free(struct moed_runner *r);

/*
 * How long the runner sleeps before it asks the backend again, in µs, while jobs run and
 * its spin (--spin-us) is over: without word from the backend, `backoff_us` (doubling from
 * MOED_RUNNER_WAIT_MIN_US to MOED_RUNNER_WAIT_MAX_US while no job ends); with word that
 * comes at once, MOED_RUNNER_WAIT_NOTIFIED_US (a safety net); with word that may come up
 * to `late_us` late, an eighth of the time since a job last started or ended
 * (`since_active_ns`), from MOED_RUNNER_WAIT_MIN_US to the lesser of late_us and
 * MOED_RUNNER_WAIT_MAX_US, so that a job is seen within about an eighth of its length
 * after it ends.
 */
#define MOED_RUNNER_WAIT_MIN_US 10u
#define MOED_RUNNER_WAIT_MAX_US 200u
#define MOED_RUNNER_WAIT_NOTIFIED_US 20000u
unsigned moed_runner_wait_us(bool notified, unsigned late_us, uint64_t since_active_ns, unsigned backoff_us);

#endif
