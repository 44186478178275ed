/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
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
	pthread_cond_t wake;
	struct moed_run_item *queue, **queue_tail; /* under lock */
	struct moed_run_item *done, **done_tail;   /* under lock */
	bool stop;                                 /* under lock */
	bool lost;                                 /* runner thread: the device is lost */
};

static void append(struct moed_run_item ***tail, struct moed_run_item *it)
{
	it->next = NULL;
	**tail = it;
	*tail = &it->next;
}

static void run_one(struct moed_runner *r, struct moed_run_item *it)
{
	struct moed_daemon *d = r->d;
	it->err.msg[0] = 0;
	it->t_run = moed_now_ns();
	it->status = d->ops->run(d->backend, &it->job, &it->w->w, &it->kwargs, &it->s->arena, &it->err);
	it->run_ns = moed_now_ns() - it->t_run;
	moed_weights_put(&d->weights, it->w);
	it->w = NULL;
	if (it->status == -ENOTRECOVERABLE && !r->lost) {
		/* Said once, loudly: every later job fails the same way until a restart. */
		r->lost = true;
		log_err("backend %s lost its device: %s", d->ops->name, it->err.msg);
		moed_sd_status("backend %s lost its device: restart moed", d->ops->name);
	}
}

static void *runner_main(void *arg)
{
	struct moed_runner *r = arg;
	pthread_mutex_lock(&r->lock);
	for (;;) {
		while (!r->queue && !r->stop)
			pthread_cond_wait(&r->wake, &r->lock);
		struct moed_run_item *it = r->queue;
		if (!it)
			break; /* stopping, and nothing left */
		r->queue = it->next;
		if (!r->queue)
			r->queue_tail = &r->queue;
		pthread_mutex_unlock(&r->lock);

		run_one(r, it);

		pthread_mutex_lock(&r->lock);
		append(&r->done_tail, it);
		/* The poller may be asleep: one doorbell write wakes it (level-triggered). */
		const uint64_t one = 1;
		ssize_t n = write(r->d->doorbell_fd, &one, sizeof(one));
		(void)n;
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
	pthread_cond_init(&r->wake, NULL);
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
	pthread_mutex_lock(&r->lock);
	struct moed_run_item *list = r->done;
	r->done = NULL;
	r->done_tail = &r->done;
	pthread_mutex_unlock(&r->lock);
	return list;
}

bool moed_runner_has_done(struct moed_runner *r)
{
	pthread_mutex_lock(&r->lock);
	bool any = r->done != NULL;
	pthread_mutex_unlock(&r->lock);
	return any;
}

void moed_runner_stop(struct moed_runner *r)
{
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
