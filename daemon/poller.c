/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "notify.h"
#include "poller.h"
#include "runner.h"

/* Entries taken from one client per round; a MoE job ends its client's turn. */
#define ROUND_BATCH 32u
/* The latency percentiles come from the last this many MoE jobs. */
#define LATENCY_SAMPLES 4096u

struct moed_poller {
	struct moed_daemon *d;
	pthread_t thread;
	pthread_mutex_t lock;
	struct moed_session **incoming; /* under lock */
	unsigned nincoming, cap_incoming;
	unsigned changes;               /* atomic: sessions were added or died since the last look */
	unsigned round_queued;          /* poller thread: entries seen this round */
	bool drain_started;             /* poller thread: drain budgets are set */
	struct moed_session **sessions; /* poller thread only */
	unsigned n, cap, rr;
	int stop; /* atomic */
	struct moed_notifier *notify;
	struct moed_runner *runner;
	unsigned running;                  /* poller thread: jobs at the runner */
	struct moed_run_item *free_items;  /* poller thread */

	/* read by the control thread (atomics) */
	uint64_t beats;      /* loop iterations */
	uint64_t beats_seen; /* control thread only */
	int sleeping;
	unsigned queued;
	int drain;
	uint64_t jobs, errors, moe_jobs;
	uint64_t queue_ns[LATENCY_SAMPLES], run_ns[LATENCY_SAMPLES];
};

#define now_ns moed_now_ns
#define cpu_relax moed_cpu_relax

static int push(struct moed_session ***arr, unsigned *n, unsigned *cap, struct moed_session *s)
{
	if (*n == *cap) {
		unsigned nc = *cap ? 2 * *cap : 16;
		struct moed_session **na = realloc(*arr, nc * sizeof(*na));
		if (!na)
			return -ENOMEM;
		*arr = na;
		*cap = nc;
	}
	(*arr)[(*n)++] = s;
	return 0;
}

void moed_poller_kick(struct moed_poller *p)
{
	const uint64_t one = 1;
	__atomic_fetch_add(&p->changes, 1, __ATOMIC_RELEASE);
	ssize_t r = write(p->d->doorbell_fd, &one, sizeof(one));
	(void)r;
}

void moed_poller_add(struct moed_poller *p, struct moed_session *s)
{
	moed_session_get(s);
	pthread_mutex_lock(&p->lock);
	if (push(&p->incoming, &p->nincoming, &p->cap_incoming, s) < 0) {
		pthread_mutex_unlock(&p->lock);
		log_err("out of memory adding client %llu: disconnecting it", (unsigned long long)s->id);
		shutdown(s->sock, SHUT_RDWR);
		moed_session_put(s);
		return;
	}
	pthread_mutex_unlock(&p->lock);
	moed_poller_kick(p);
}

static void absorb_and_prune(struct moed_poller *p)
{
	/* Cheap when nothing changed, which is nearly every round. */
	static unsigned seen; /* one poller per process */
	const unsigned now = __atomic_load_n(&p->changes, __ATOMIC_ACQUIRE);
	if (now == seen)
		return;
	seen = now;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->nincoming; i++)
		if (push(&p->sessions, &p->n, &p->cap, p->incoming[i]) < 0) {
			shutdown(p->incoming[i]->sock, SHUT_RDWR);
			moed_session_put(p->incoming[i]);
		}
	p->nincoming = 0;
	pthread_mutex_unlock(&p->lock);

	unsigned kept = 0;
	for (unsigned i = 0; i < p->n; i++) {
		struct moed_session *s = p->sessions[i];
		if (__atomic_load_n(&s->dead, __ATOMIC_ACQUIRE))
			moed_session_put(s);
		else
			p->sessions[kept++] = s;
	}
	p->n = kept;
}

/* An item for a job at the runner: reused, as each session has at most one there. */
static struct moed_run_item *item_get(struct moed_poller *p)
{
	struct moed_run_item *it = p->free_items;
	if (it) {
		p->free_items = it->next;
		return it;
	}
	return malloc(sizeof(*it));
}

static void item_put(struct moed_poller *p, struct moed_run_item *it)
{
	it->next = p->free_items;
	p->free_items = it;
}

/*
 * The checks of a MoE job that need the daemon's state (its weight set, the backend's
 * signature, its kwargs), then an item for the runner with everything the run needs.
 * Returns 0 with *out NULL for an empty job (done already), 0 with *out set, or an error.
 */
static int prepare_moe(struct moed_poller *p, struct moed_session *s, const struct moed_job *job,
		       struct moed_run_item **out, struct moed_error *err)
{
	struct moed_daemon *d = p->d;
	struct moed_weight_set *w;
	*out = NULL;
	int r = moed_session_use_weights(s, job->weights_id, &d->weights, &w, err);
	if (r < 0)
		return r;
	r = moed_backend_admit(d->ops, d->backend, job, &w->w.shape, err);
	struct moed_run_item *it = NULL;
	if (r == 0 && !(it = item_get(p)))
		r = moed_error_set(err, -ENOMEM, "out of memory");
	if (r == 0) {
		/* The blob lives in shared memory: parse a private copy (also for an empty job,
		 * which is refused for the same mistakes). */
		const size_t len = job->kwargs.length;
		memcpy(it->blob, s->arena.base + job->kwargs.offset, len);
		r = moed_kwargs_accept(it->blob, len, d->ops->schema(d->backend), &it->kwargs, err);
	}
	if (it && (r < 0 || job->num_tokens == 0)) {
		item_put(p, it);
		it = NULL;
	}
	if (!it) {
		moed_weights_put(&d->weights, w);
		return r;
	}
	it->w = w;
	it->job = *job;
	*out = it;
	return 0;
}

/* Fill a completion (everything but seq) and count it. Inlined: it is on the no-op path,
 * whose throughput moed-daemon-bench measures. */
static inline __attribute__((always_inline)) void
complete(struct moed_poller *p, struct moed_session *s, uint64_t user_data, int status,
	 struct moed_error *err, const struct moed_job *job, uint64_t queue_ns, uint64_t run_ns,
	 struct moed_cqe *out, struct moed_msg *msg)
{
	struct moed_cqe c;
	memset(&c, 0, sizeof(c));
	c.status = status;
	c.user_data = user_data;
	c.queue_ns = queue_ns;
	c.run_ns = run_ns;
	if (status == 0 && job->opcode == MOED_OP_MOE) {
		c.out_rank = job->no_combine ? 3 : 2;
		c.out_shape[0] = job->num_tokens;
		c.out_shape[1] = job->no_combine ? job->topk : job->hidden_size;
		c.out_shape[2] = job->no_combine ? job->hidden_size : 0;
	}
	if (status < 0) {
		if (!err->msg[0])
			snprintf(err->msg, sizeof(err->msg), "%s", strerror(-status));
		memcpy(msg->text, err->msg, sizeof(msg->text));
		c.flags |= MOED_CQE_F_MESSAGE;
		__atomic_fetch_add(&s->job_errors, 1, __ATOMIC_RELAXED);
	}
	__atomic_fetch_add(&s->jobs, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&p->jobs, 1, __ATOMIC_RELAXED);
	if (status < 0)
		__atomic_fetch_add(&p->errors, 1, __ATOMIC_RELAXED);
	if (status == 0 && job->opcode == MOED_OP_MOE) { /* job is only read when it is valid */
		uint64_t n = __atomic_fetch_add(&p->moe_jobs, 1, __ATOMIC_RELAXED) % LATENCY_SAMPLES;
		__atomic_store_n(&p->queue_ns[n], c.queue_ns, __ATOMIC_RELAXED);
		__atomic_store_n(&p->run_ns[n], c.run_ns, __ATOMIC_RELAXED);
	}
	/* Never the sequence word: only publishing writes it (see common/ring.h). */
	memcpy((unsigned char *)out + sizeof(c.seq), (unsigned char *)&c + sizeof(c.seq),
	       sizeof(c) - sizeof(c.seq));
}

/*
 * One entry (a private copy): complete it now into `out` and return false, or hand its
 * MoE job to the runner and return true; its completion then comes later, into the
 * same (reserved) slot.
 */
static bool process(struct moed_poller *p, struct moed_session *s, const struct moed_sqe *sqe,
		    struct moed_cqe *out, struct moed_msg *msg, const uint64_t *t_seen)
{
	struct moed_error err = { "" };
	struct moed_job job;
	uint64_t queue_ns = 0, run_ns = 0; /* a NOP reads no clock: it measures the IPC alone */

	int status = moed_job_from_sqe(sqe, s->arena.size, &job, &err);
	if (status == 0 && s->drain_left == 0)
		status = moed_error_set(&err, -ESHUTDOWN, "the daemon is draining: it takes no new jobs");
	else if (s->drain_left > 0)
		s->drain_left--;
	if (status == 0 && job.opcode == MOED_OP_MOE) {
		const uint64_t t_check = now_ns();
		struct moed_run_item *it;
		status = prepare_moe(p, s, &job, &it, &err);
		if (it) {
			moed_session_get(s);
			it->s = s;
			it->user_data = sqe->user_data;
			it->t_seen = *t_seen;
			s->running = true;
			p->running++;
			moed_runner_submit(p->runner, it);
			return true;
		}
		queue_ns = t_check - *t_seen;
		run_ns = now_ns() - t_check;
	}
	complete(p, s, sqe->user_data, status, &err, &job, queue_ns, run_ns, out, msg);
	return false;
}

/* Post the completions of the jobs the runner finished; returns how many. */
static unsigned post_finished(struct moed_poller *p)
{
	unsigned posted = 0;
	struct moed_run_item *next;
	for (struct moed_run_item *it = moed_runner_take_done(p->runner); it; it = next) {
		next = it->next;
		struct moed_session *s = it->s;
		s->running = false;
		p->running--;
		/* The slot was reserved when the job was taken: the client can only free more. */
		if (!__atomic_load_n(&s->dead, __ATOMIC_ACQUIRE) &&
		    !__atomic_load_n(&s->broken, __ATOMIC_RELAXED) && moed_ring_prod_reserve(&s->cq, 1) == 1) {
			complete(p, s, it->user_data, it->status, &it->err, &it->job, it->t_run - it->t_seen,
				 it->run_ns, moed_ring_slot(&s->cq, 0), &s->msgs[s->cq.pos & s->cq.mask]);
			moed_ring_prod_publish(&s->cq, 1);
			if (moed_ring_prod_needs_wakeup(&s->cq))
				moed_notifier_queue(p->notify, s->completion_fd);
			posted++;
		}
		moed_session_put(s);
		item_put(p, it);
	}
	return posted;
}

static void disconnect_broken(struct moed_session *s, const char *why)
{
	if (__atomic_exchange_n(&s->broken, 1, __ATOMIC_ACQ_REL))
		return;
	log_warn("client %llu (pid %d): %s; disconnecting it", (unsigned long long)s->id,
		 (int)s->pid, why);
	shutdown(s->sock, SHUT_RDWR); /* the control thread sees the hang-up and tears down */
}

/*
 * Serve one session's ring; returns how many entries it took. A MoE job goes to the
 * runner and ends the session's turn: its completion slot stays reserved, and the
 * session is skipped until the job is back, so completions keep submission order.
 */
static unsigned serve(struct moed_poller *p, struct moed_session *s)
{
	if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED))
		return 0;
	uint32_t ready = moed_ring_cons_ready(&s->sq, ROUND_BATCH);
	p->round_queued += ready + s->running;
	if (!ready || s->running)
		return 0;
	int space = moed_ring_prod_reserve(&s->cq, ready);
	if (space < 0) {
		disconnect_broken(s, "its completion ring has an impossible head");
		return 0;
	}
	unsigned taken = 0, done = 0;
	const uint64_t t_seen = now_ns(); /* when this round found the entries */
	while (taken < (unsigned)space) {
		struct moed_sqe sqe;
		memcpy(&sqe, moed_ring_slot(&s->sq, taken), sizeof(sqe));
		taken++;
		if (process(p, s, &sqe, moed_ring_slot(&s->cq, done),
			    &s->msgs[(s->cq.pos + done) & s->cq.mask], &t_seen))
			break;
		done++;
	}
	if (taken)
		moed_ring_cons_release(&s->sq, taken);
	if (done) {
		moed_ring_prod_publish(&s->cq, done);
		if (moed_ring_prod_needs_wakeup(&s->cq))
			moed_notifier_queue(p->notify, s->completion_fd);
	}
	return taken;
}

/*
 * Raise need-wakeup on every ring, then sleep unless some ring has work that can be done
 * (an entry is ready and its completion ring has room). A ring whose completion ring is
 * full keeps its flag: the client rings the doorbell after it reaps.
 */
static void sleep_on_doorbell(struct moed_poller *p)
{
	bool work = false;
	for (unsigned i = 0; i < p->n; i++) {
		struct moed_session *s = p->sessions[i];
		moed_ring_cons_set_need_wakeup(&s->sq);
		if (!__atomic_load_n(&s->broken, __ATOMIC_RELAXED) && !s->running &&
		    moed_ring_cons_ready(&s->sq, 1) && moed_ring_prod_reserve(&s->cq, 1) > 0)
			work = true;
	}
	/* The runner rings the doorbell after each job, so none finishing now is missed. */
	if (moed_runner_has_done(p->runner))
		work = true;
	if (!work && !(__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE) && !p->running)) {
		struct pollfd pfd = { .fd = p->d->doorbell_fd, .events = POLLIN };
		/* The timeout only bounds how long a dead session lingers unpruned. */
		if (poll(&pfd, 1, 1000) > 0) {
			uint64_t v;
			ssize_t r = read(p->d->doorbell_fd, &v, sizeof(v));
			(void)r;
		}
	}
	for (unsigned i = 0; i < p->n; i++)
		moed_ring_cons_woke(&p->sessions[i]->sq);
}

/* At the first round after a drain: each session may finish what it had submitted. */
static void start_drain(struct moed_poller *p)
{
	for (unsigned i = 0; i < p->n; i++)
		p->sessions[i]->drain_left = (int64_t)moed_ring_cons_ready(&p->sessions[i]->sq,
									   MOED_RING_MAX_ENTRIES);
	p->drain_started = true;
}

static void *poller_main(void *arg)
{
	struct moed_poller *p = arg;
	uint64_t idle_since = now_ns();

	for (;;) {
		__atomic_fetch_add(&p->beats, 1, __ATOMIC_RELAXED);
		absorb_and_prune(p);
		if (!p->drain_started && __atomic_load_n(&p->drain, __ATOMIC_ACQUIRE))
			start_drain(p);
		unsigned did = post_finished(p);
		p->round_queued = 0;
		for (unsigned i = 0; i < p->n; i++)
			did += serve(p, p->sessions[(p->rr + i) % p->n]);
		p->rr++;
		__atomic_store_n(&p->queued, p->round_queued, __ATOMIC_RELAXED);
		moed_notifier_flush(p->notify);
		if (did) {
			idle_since = now_ns();
			continue;
		}
		if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE) && !p->running)
			break; /* a whole round found nothing: what was submitted is done */
		const uint64_t spin_ns = (uint64_t)__atomic_load_n(&p->d->spin_us, __ATOMIC_RELAXED) * 1000;
		if (now_ns() - idle_since < spin_ns) {
			cpu_relax();
			continue;
		}
		__atomic_store_n(&p->sleeping, 1, __ATOMIC_RELAXED);
		sleep_on_doorbell(p);
		__atomic_store_n(&p->sleeping, 0, __ATOMIC_RELAXED);
		idle_since = now_ns();
	}
	return NULL;
}

bool moed_poller_healthy(struct moed_poller *p)
{
	uint64_t beats = __atomic_load_n(&p->beats, __ATOMIC_RELAXED);
	bool moved = beats != p->beats_seen;
	p->beats_seen = beats;
	return moved || __atomic_load_n(&p->sleeping, __ATOMIC_RELAXED);
}

unsigned moed_poller_queued(const struct moed_poller *p)
{
	return __atomic_load_n(&p->queued, __ATOMIC_RELAXED);
}

void moed_poller_drain(struct moed_poller *p)
{
	__atomic_store_n(&p->drain, 1, __ATOMIC_RELEASE);
	moed_poller_kick(p);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static void percentiles(uint64_t *v, uint32_t n, uint64_t out[3])
{
	qsort(v, n, sizeof(*v), cmp_u64);
	const double q[3] = { 0.50, 0.99, 0.999 };
	for (int i = 0; i < 3; i++)
		out[i] = n ? v[(size_t)(q[i] * (n - 1) + 0.5)] : 0;
}

void moed_poller_stats(const struct moed_poller *p, struct moed_poller_stats *out)
{
	static uint64_t q[LATENCY_SAMPLES], r[LATENCY_SAMPLES];
	memset(out, 0, sizeof(*out));
	out->jobs = __atomic_load_n(&p->jobs, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&p->errors, __ATOMIC_RELAXED);
	out->moe_jobs = __atomic_load_n(&p->moe_jobs, __ATOMIC_RELAXED);
	out->samples = out->moe_jobs < LATENCY_SAMPLES ? (uint32_t)out->moe_jobs : LATENCY_SAMPLES;
	for (uint32_t i = 0; i < out->samples; i++) {
		q[i] = __atomic_load_n(&p->queue_ns[i], __ATOMIC_RELAXED);
		r[i] = __atomic_load_n(&p->run_ns[i], __ATOMIC_RELAXED);
	}
	percentiles(q, out->samples, out->queue_ns);
	percentiles(r, out->samples, out->run_ns);
}

int moed_poller_start(struct moed_daemon *d, struct moed_poller **out)
{
	struct moed_poller *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->d = d;
	pthread_mutex_init(&p->lock, NULL);
	int r = moed_notifier_new(256, &p->notify);
	if (r < 0) {
		free(p);
		return r;
	}
	r = moed_runner_start(d, &p->runner);
	if (r < 0) {
		moed_notifier_free(p->notify);
		free(p);
		return r;
	}
	r = pthread_create(&p->thread, NULL, poller_main, p);
	if (r) {
		moed_runner_stop(p->runner);
		moed_runner_free(p->runner);
		moed_notifier_free(p->notify);
		free(p);
		return -r;
	}
	log_info("poller up: spins %u us before sleeping, signals completions with %s",
		 d->opt.spin_us, moed_notifier_kind(p->notify));
	*out = p;
	return 0;
}

void moed_poller_stop(struct moed_poller *p)
{
	if (!p)
		return;
	__atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
	moed_poller_kick(p);
	pthread_join(p->thread, NULL); /* it returns once the runner has nothing left */
	moed_runner_stop(p->runner);
	moed_runner_free(p->runner);
	while (p->free_items) {
		struct moed_run_item *it = p->free_items;
		p->free_items = it->next;
		free(it);
	}
	absorb_and_prune(p);
	for (unsigned i = 0; i < p->n; i++)
		moed_session_put(p->sessions[i]);
	moed_notifier_free(p->notify);
	free(p->sessions);
	free(p->incoming);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
