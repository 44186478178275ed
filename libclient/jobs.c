/* SPDX-License-Identifier: MIT */
/* Submitting jobs and reaping their completions. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "export.h"

#define now_ns moed_now_ns

/* A pointer and length as a span of the arena; -EINVAL if it is not inside. */
static int span(struct moed_client *c, unsigned job, const char *what, const void *p,
		uint64_t len, struct moed_buf *out)
{
	if (len == 0 && !p) {
		*out = (struct moed_buf){ 0, 0 };
		return 0;
	}
	const unsigned char *b = p;
	if (!b || b < c->arena || (uint64_t)(b - c->arena) > c->hdr.arena_size ||
	    len > c->hdr.arena_size - (uint64_t)(b - c->arena))
		return client_fail(c, -EINVAL, "job %u: %s (%llu bytes) is not inside the arena", job,
				   what, (unsigned long long)len);
	*out = (struct moed_buf){ (uint64_t)(b - c->arena), len };
	return 0;
}

static int fill_sqe(struct moed_client *c, unsigned idx, const struct moed_moe_job *j,
		    struct moed_sqe *q)
{
	if (j->weights < 1 || j->weights > CLIENT_MAX_HANDLES || !c->handle_known[j->weights - 1])
		return client_fail(c, -EINVAL, "job %u: weights handle %u is not held", idx, j->weights);
	const struct moed_weights_shape *shape = &c->handle_shape[j->weights - 1];
	const uint64_t m = j->num_tokens, k = j->topk;
	const uint64_t h = j->hidden_size ? j->hidden_size : shape->hidden_size;
	const uint64_t d = j->dtype == MOED_DTYPE_F32 ? 4 : 2;
	int r;

	memset(q, 0, sizeof(*q));
	q->opcode = MOED_OP_MOE;
	q->dtype = j->dtype;
	q->activation = j->activation;
	q->arena = MOED_ARENA_HOST;
	q->user_data = j->user_data;
	q->flags = (j->no_combine ? MOED_SQE_F_NO_COMBINE : 0) |
		   (j->router_weight_on_input ? MOED_SQE_F_ROUTER_WEIGHT_ON_INPUT : 0) |
		   (shape->gated ? 0 : MOED_SQE_F_NOT_GATED);
	q->weights_id = j->weights;
	q->num_tokens = j->num_tokens;
	q->topk = j->topk;
	q->hidden_size = (uint32_t)h;
	q->routed_scaling_factor = j->routed_scaling_factor != 0 ? j->routed_scaling_factor : 1.0f;
	if ((r = span(c, idx, "hidden", j->hidden, m * h * d, &q->hidden)) ||
	    (r = span(c, idx, "topk_ids", j->topk_ids, m * k * 4, &q->topk_ids)) ||
	    (r = span(c, idx, "topk_weights", j->topk_weights, m * k * 4, &q->topk_weights)) ||
	    (r = span(c, idx, "output", j->output, (j->no_combine ? m * k * h : m * h) * d, &q->output)) ||
	    (r = span(c, idx, "kwargs", j->kwargs, j->kwargs ? j->kwargs_size : 0, &q->kwargs)))
		return r;
	return 0;
}

typedef int (*fill_fn)(struct moed_client *c, unsigned idx, const void *items, struct moed_sqe *q);

/*
 * Fill up to n entries straight into the free slots (never their sequence words) and
 * publish them with one batch. Stops at the first entry that fill refuses: what came
 * before it is submitted; the refusal is returned only when nothing was.
 */
static int submit(struct moed_client *c, unsigned n, fill_fn fill, const void *items)
{
	if (c->hungup)
		return client_fail(c, -EPIPE, "the daemon has closed the connection");
	int space = moed_ring_prod_reserve(&c->sq, n);
	if (space < 0)
		return client_fail(c, -EPROTO, "the submission ring is corrupt");
	int done = 0, r = 0;
	for (; done < space; done++) {
		struct moed_sqe q;
		if ((r = fill(c, (unsigned)done, items, &q)) < 0)
			break;
		memcpy((unsigned char *)moed_ring_slot(&c->sq, (uint32_t)done) + sizeof(q.seq),
		       (const unsigned char *)&q + sizeof(q.seq), sizeof(q) - sizeof(q.seq));
	}
	if (done) {
		moed_ring_prod_publish(&c->sq, (uint32_t)done);
		c->inflight += (unsigned)done;
		client_ring_doorbell(c);
	}
	return done ? done : r;
}

static int fill_moe(struct moed_client *c, unsigned idx, const void *items, struct moed_sqe *q)
{
	return fill_sqe(c, idx, &((const struct moed_moe_job *)items)[idx], q);
}

static int fill_nop(struct moed_client *c, unsigned idx, const void *items, struct moed_sqe *q)
{
	(void)c;
	memset(q, 0, sizeof(*q)); /* opcode 0 is MOED_OP_NOP */
	q->user_data = ((const uint64_t *)items)[idx];
	return 0;
}

MOED_EXPORT int moed_submit_moe(struct moed_client *c, const struct moed_moe_job *jobs, unsigned n)
{
	if (!c || (n && !jobs))
		return -EINVAL;
	return submit(c, n, fill_moe, jobs);
}

MOED_EXPORT int moed_submit_nop(struct moed_client *c, const uint64_t *user_data, unsigned n)
{
	if (!c || (n && !user_data))
		return -EINVAL;
	return submit(c, n, fill_nop, user_data);
}

MOED_EXPORT int moed_poll(struct moed_client *c, struct moed_completion *out, unsigned max)
{
	if (!c || (max && !out))
		return -EINVAL;
	uint32_t n = moed_ring_cons_ready(&c->cq, max);
	for (uint32_t i = 0; i < n; i++) {
		struct moed_cqe q;
		memcpy(&q, moed_ring_slot(&c->cq, i), sizeof(q));
		struct moed_completion *o = &out[i];
		o->user_data = q.user_data;
		o->status = q.status;
		o->out_rank = q.out_rank;
		memcpy(o->out_shape, q.out_shape, sizeof(o->out_shape));
		o->queue_ns = q.queue_ns;
		o->run_ns = q.run_ns;
		if (q.flags & MOED_CQE_F_MESSAGE) {
			memcpy(o->message, c->msgs[(c->cq.pos + i) & c->cq.mask].text, sizeof(o->message));
			o->message[sizeof(o->message) - 1] = 0;
		} else {
			o->message[0] = 0;
		}
	}
	if (n) {
		moed_ring_cons_release(&c->cq, n);
		c->inflight -= n < c->inflight ? n : c->inflight;
		/* The daemon leaves entries in the SQ while our CQ is full; it sleeps until told. */
		if (moed_ring_prod_pending(&c->sq))
			client_ring_doorbell(c);
	}
	return (int)n;
}

/* Has the daemon closed the connection? Only a hang-up makes the socket readable. */
static bool daemon_gone(struct moed_client *c)
{
	char b;
	ssize_t r = recv(c->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
		c->hungup = true;
	return c->hungup;
}

MOED_EXPORT int moed_wait(struct moed_client *c, struct moed_completion *out, unsigned max,
			  int timeout_ms)
{
	if (!c || !max || !out)
		return -EINVAL;
	const uint64_t start = now_ns();
	const uint64_t spin_end = start + (uint64_t)c->spin_us * 1000;
	const uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms * 1000000;
	int n;

	if ((n = moed_poll(c, out, max)))
		return n;
	while (now_ns() < spin_end)
		if ((n = moed_poll(c, out, max)))
			return n;

	for (;;) {
		if (!moed_ring_cons_prepare_sleep(&c->cq)) {
			if ((n = moed_poll(c, out, max)))
				return n;
			continue;
		}
		uint64_t now = now_ns();
		if (now >= deadline) {
			moed_ring_cons_woke(&c->cq);
			return client_fail(c, -ETIMEDOUT, "no completion within %d ms", timeout_ms);
		}
		int wait_ms = deadline == UINT64_MAX ? -1 : (int)((deadline - now + 999999) / 1000000);
		struct pollfd p[2] = { { .fd = c->completion_fd, .events = POLLIN },
				       { .fd = c->sock, .events = POLLIN | POLLRDHUP } };
		int pr = poll(p, 2, wait_ms);
		moed_ring_cons_woke(&c->cq);
		if (pr > 0 && (p[0].revents & POLLIN)) {
			uint64_t v;
			ssize_t rr = read(c->completion_fd, &v, sizeof(v));
			(void)rr;
		}
		if ((n = moed_poll(c, out, max)))
			return n;
		if (pr > 0 && p[1].revents && daemon_gone(c))
			return client_fail(c, -ECONNRESET, "the daemon closed the connection");
		if (pr < 0 && errno != EINTR)
			return client_fail(c, -errno, "poll: %s", strerror(errno));
	}
}

MOED_EXPORT void moed_set_spin_us(struct moed_client *c, uint32_t spin_us)
{
	if (c)
		c->spin_us = spin_us;
}

MOED_EXPORT unsigned moed_inflight(const struct moed_client *c)
{
	return c ? c->inflight : 0;
}

MOED_EXPORT int moed_completion_fd(const struct moed_client *c)
{
	return c ? c->completion_fd : -EINVAL;
}

MOED_EXPORT int moed_arm_wakeup(struct moed_client *c)
{
	if (!c)
		return -EINVAL;
	if (moed_ring_cons_prepare_sleep(&c->cq))
		return 0;
	return 1;
}
