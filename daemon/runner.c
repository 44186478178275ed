/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "runner.h"
#include "sd.h"

struct moed_runner {
	struct moed_daemon *d;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;                       /* on CLOCK_MONOTONIC */
	struct moed_run_item *queue, **queue_tail; /* under lock */
	struct moed_run_item *done, **done_tail;   /* under lock */
	int any_done;                              /* atomic hint: done is not empty */
	bool stop;                                 /* under lock */
	bool kicked;                               /* under lock: the backend said a job ended */
	bool notified;                             /* the backend says when jobs end */
	struct moed_run_item *inflight;            /* runner thread: submitted, not finished */
	bool lost;                                 /* runner thread: the device is lost */
};

static void kick(void *arg)
{
	struct moed_runner *r = arg;
	pthread_mutex_lock(&r->lock);
	r->kicked = true;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

static void append(struct moed_run_item ***tail, struct moed_run_item *it)
{
	it->next = NULL;
	**tail = it;
	*tail = &it->next;
}

/* A job is over: release its weights and hand it back to the poller. */
static void finish(struct moed_runner *r, struct moed_run_item *it, int status)
{
	struct moed_daemon *d = r->d;
	it->status = status < 0 ? status : 0;
	it->run_ns = moed_now_ns() - it->t_run;
	moed_weights_put(&d->weights, it->w);
	it->w = NULL;
	if (it->status == -ENOTRECOVERABLE && !r->lost) {
		/* Said once, loudly: every later job fails the same way until a restart. */
		r->lost = true;
		log_err("backend %s lost its device: %s", d->ops->name, it->err.msg);
		moed_sd_status("backend %s lost its device: restart moed", d->ops->name);
	}
	pthread_mutex_lock(&r->lock);
	append(&r->done_tail, it);
	__atomic_store_n(&r->any_done, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&r->lock);
	/* The poller may be asleep: one doorbell write wakes it (level-triggered). */
	const uint64_t one = 1;
	ssize_t n = write(d->doorbell_fd, &one, sizeof(one));
	(void)n;
}

/* Submit a job on its client's context (opened when it connected, or here if that failed). */
static void start(struct moed_runner *r, struct moed_run_item *it)
{
	struct moed_daemon *d = r->d;
	struct moed_session *s = it->s;
	it->err.msg[0] = 0;
	it->t_run = moed_now_ns();
	int st = moed_session_open_backend(s, d->ops, d->backend, &it->err);
	if (st == 0)
		st = d->ops->submit(d->backend, s->backend_ctx, &it->job, &it->w->w, &it->kwargs,
				    &s->arena, &it->err);
	if (st < 0) {
		finish(r, it, st);
		return;
	}
	it->next = r->inflight;
	r->inflight = it;
}

/* Finish the jobs the backend says are done; returns whether any was. */
static bool reap(struct moed_runner *r)
{
	struct moed_daemon *d = r->d;
	bool any = false;
	for (struct moed_run_item **at = &r->inflight; *at;) {
		struct moed_run_item *it = *at;
		const int st = d->ops->poll(d->backend, it->s->backend_ctx, &it->err);
		if (st == 0) {
			at = &it->next;
			continue;
		}
		*at = it->next;
		finish(r, it, st);
		any = true;
	}
	return any;
}

unsigned moed_runner_wait_us(bool notified, unsigned late_us, uint64_t since_active_ns, unsigned backoff_us)
{
	if (!notified)
		return backoff_us;
	if (!late_us)
		return MOED_RUNNER_WAIT_NOTIFIED_US;
	const unsigned most = late_us < MOED_RUNNER_WAIT_MAX_US ? late_us : MOED_RUNNER_WAIT_MAX_US;
	const uint64_t eighth = since_active_ns / 8000;
	if (eighth < MOED_RUNNER_WAIT_MIN_US)
		return MOED_RUNNER_WAIT_MIN_US < most ? MOED_RUNNER_WAIT_MIN_US : most;
	return eighth < most ? (unsigned)eighth : most;
}

/*
 * Jobs running: within --spin-us of the last job submitted or finished, the runner asks
 * the backend again at once, as the poller spins for rings; past it, it waits for the
 * backend's word or the next poll (moed_runner_wait_us: a GPU job's completion callback
 * came 10-400 µs after its output copy on an H200, traces in bench/RESULTS.md).
 */
static void *runner_main(void *arg)
{
	struct moed_runner *r = arg;
	unsigned wait_us = MOED_RUNNER_WAIT_MIN_US;
	uint64_t active_ns = moed_now_ns();
	pthread_mutex_lock(&r->lock);
	for (;;) {
		while (!r->queue && !r->inflight && !r->stop)
			pthread_cond_wait(&r->wake, &r->lock);
		if (!r->queue && !r->inflight)
			break; /* stopping, and nothing left */
		const uint64_t spin_ns = (uint64_t)__atomic_load_n(&r->d->spin_us, __ATOMIC_RELAXED) * 1000;
		if (!r->queue && !r->kicked && moed_now_ns() - active_ns < spin_ns) {
			moed_cpu_relax();
		} else if (!r->queue && !r->kicked) { /* look again soon, or when told */
			const unsigned us = moed_runner_wait_us(r->notified, r->d->ops->notify_late_us,
								moed_now_ns() - active_ns, wait_us);
			struct timespec t;
			clock_gettime(CLOCK_MONOTONIC, &t);
			t.tv_nsec += (long)us * 1000;
			t.tv_sec += t.tv_nsec / 1000000000;
			t.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&r->wake, &r->lock, &t);
		}
		r->kicked = false;
		struct moed_run_item *fresh = r->queue, *next;
		r->queue = NULL;
		r->queue_tail = &r->queue;
		pthread_mutex_unlock(&r->lock);

		for (struct moed_run_item *it = fresh; it; it = next) {
			next = it->next;
			start(r, it);
		}
		const bool any = reap(r);
		if (any || fresh)
			active_ns = moed_now_ns();
		/* Without the backend's word: back off while no job starts or ends. */
		wait_us = any || fresh ? MOED_RUNNER_WAIT_MIN_US : wait_us * 2;
		if (wait_us > MOED_RUNNER_WAIT_MAX_US)
			wait_us = MOED_RUNNER_WAIT_MAX_US;
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int moed_runner_start(struct moed_daemon *d, struct moed_runner **out)
{
	struct moed_runner *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->d = d;
	r->queue_tail = &r->queue;
	r->done_tail = &r->done;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r->wake, &attr);
	pthread_condattr_destroy(&attr);
	if (d->ops->set_notify) {
		d->ops->set_notify(d->backend, kick, r);
		r->notified = true;
	}
	int e = pthread_create(&r->thread, NULL, runner_main, r);
	if (e) {
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->lock);
		free(r);
		return -e;
	}
	*out = r;
	return 0;
}

void moed_runner_submit(struct moed_runner *r, struct moed_run_item *it)
{
	pthread_mutex_lock(&r->lock);
	append(&r->queue_tail, it);
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

struct moed_run_item *moed_runner_take_done(struct moed_runner *r)
{
	/* Asked every poller round: no lock while nothing is done. A job finishing just now
	 * is seen next round (its doorbell write keeps the poller from sleeping first). */
	if (!__atomic_load_n(&r->any_done, __ATOMIC_ACQUIRE))
		return NULL;
	pthread_mutex_lock(&r->lock);
	struct moed_run_item *list = r->done;
	r->done = NULL;
	r->done_tail = &r->done;
	__atomic_store_n(&r->any_done, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&r->lock);
	return list;
}

bool moed_runner_has_done(struct moed_runner *r)
{
	return __atomic_load_n(&r->any_done, __ATOMIC_ACQUIRE);
}

void moed_runner_stop(struct moed_runner *r)
{
	/* No word from the backend may reach this runner once it is gone: set_notify(NULL)
	 * returns only when no call to kick() is under way. */
	if (r->notified)
		r->d->ops->set_notify(r->d->backend, NULL, NULL);
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
}

void moed_runner_free(struct moed_runner *r)
{
	if (!r)
		return;
	pthread_cond_destroy(&r->wake);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
