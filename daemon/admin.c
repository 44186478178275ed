/* SPDX-License-Identifier: MIT */
/* Operator requests (moedctl): status, clients, weight sets, statistics, drain. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "poller.h"
#include "sd.h"


static unsigned ready_clients(const struct moed_daemon *d)
{
	unsigned n = 0;
	for (unsigned i = 0; i < d->nsessions; i++)
		n += d->sessions[i]->ready;
	return n;
}

static int status(struct moed_daemon *d, struct moed_admin_status *st)
{
	struct moed_poller_stats ps;
	moed_poller_stats(d->poller, &ps);
	memset(st, 0, sizeof(*st));
	snprintf(st->version, sizeof(st->version), "%s", PACKAGE_VERSION);
	snprintf(st->backend, sizeof(st->backend), "%s", d->ops->name);
	st->abi_version = MOED_ABI_VERSION;
	st->pid = (uint32_t)getpid();
	st->uptime_ns = moed_now_ns() - d->started_ns;
	st->clients = ready_clients(d);
	st->queued = moed_poller_queued(d->poller);
	st->draining = d->draining;
	pthread_mutex_lock(&d->weights.lock);
	for (struct moed_weight_set *w = d->weights.sets; w; w = w->next)
		st->weight_sets++;
	st->weight_bytes = d->weights.bytes;
	st->weights_max = d->weights.max_bytes;
	pthread_mutex_unlock(&d->weights.lock);
	st->jobs = ps.jobs;
	st->job_errors = ps.errors;
	st->spin_us = d->opt.spin_us;
	st->threads = d->opt.threads ? d->opt.threads : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	return sizeof(*st);
}

static int clients(struct moed_daemon *d, const struct moed_admin_page *pg, unsigned char *out,
		   size_t cap)
{
	struct moed_admin_list list = { 0, 0 };
	const size_t room = (cap - sizeof(list)) / sizeof(struct moed_admin_client);
	unsigned idx = 0;
	for (unsigned i = 0; i < d->nsessions; i++) {
		const struct moed_session *s = d->sessions[i];
		if (!s->ready)
			continue;
		list.total++;
		if (idx++ < pg->first || list.count >= room)
			continue;
		struct moed_admin_client c = {
			.id = s->id, .pid = (uint32_t)s->pid, .uid = (uint32_t)s->uid,
			.jobs = __atomic_load_n(&s->jobs, __ATOMIC_RELAXED),
			.job_errors = __atomic_load_n(&s->job_errors, __ATOMIC_RELAXED),
			.arena_size = s->hdr.arena_size, .max_inflight = s->hdr.sq.entries,
		};
		memcpy(c.name, s->name, sizeof(c.name));
		for (unsigned h = 0; h < MOED_SESSION_MAX_WEIGHTS; h++)
			c.weight_handles += s->weights[h] != NULL;
		memcpy(out + sizeof(list) + list.count * sizeof(c), &c, sizeof(c));
		list.count++;
	}
	memcpy(out, &list, sizeof(list));
	return (int)(sizeof(list) + list.count * sizeof(struct moed_admin_client));
}

static int weight_sets(struct moed_daemon *d, const struct moed_admin_page *pg, unsigned char *out,
		       size_t cap)
{
	struct moed_admin_list list = { 0, 0 };
	const size_t room = (cap - sizeof(list)) / sizeof(struct moed_admin_weights);
	pthread_mutex_lock(&d->weights.lock);
	for (struct moed_weight_set *w = d->weights.sets; w; w = w->next) {
		if (list.total++ < pg->first || list.count >= room)
			continue;
		struct moed_admin_weights a = {
			.shape = w->w.shape, .bytes = w->w.w13_bytes + w->w.w2_bytes,
			.holders = w->refs, .committed = w->committed,
		};
		memcpy(a.name, w->name, sizeof(a.name));
		memcpy(out + sizeof(list) + list.count * sizeof(a), &a, sizeof(a));
		list.count++;
	}
	pthread_mutex_unlock(&d->weights.lock);
	memcpy(out, &list, sizeof(list));
	return (int)(sizeof(list) + list.count * sizeof(struct moed_admin_weights));
}

int moed_admin_handle(struct moed_daemon *d, uint32_t type, const void *body, void *reply,
		      size_t cap, struct moed_error *err)
{
	struct moed_admin_page pg = { 0, 0 };
	if (type == MOED_MSG_ADMIN_CLIENTS || type == MOED_MSG_ADMIN_WEIGHTS) {
		memcpy(&pg, body, sizeof(pg));
		if (pg.reserved)
			return moed_error_set(err, -EINVAL, "reserved field must be zero");
	}
	switch (type) {
	case MOED_MSG_ADMIN_STATUS:
		return status(d, reply);
	case MOED_MSG_ADMIN_CLIENTS:
		return clients(d, &pg, reply, cap);
	case MOED_MSG_ADMIN_WEIGHTS:
		return weight_sets(d, &pg, reply, cap);
	case MOED_MSG_ADMIN_STATS: {
		struct moed_poller_stats ps;
		struct moed_admin_stats st = { 0 };
		moed_poller_stats(d->poller, &ps);
		st.jobs = ps.jobs;
		st.job_errors = ps.errors;
		st.moe_jobs = ps.moe_jobs;
		st.samples = ps.samples;
		memcpy(st.queue_ns, ps.queue_ns, sizeof(st.queue_ns));
		memcpy(st.run_ns, ps.run_ns, sizeof(st.run_ns));
		memcpy(reply, &st, sizeof(st));
		return sizeof(st);
	}
	case MOED_MSG_ADMIN_DRAIN:
		if (!d->draining) {
			d->draining = true;
			moed_poller_drain(d->poller);
			log_info("draining: no new clients or jobs; those submitted are served");
			moed_daemon_report_status(d);
		}
		return 0;
	default:
		return moed_error_set(err, -EPROTO, "unknown message type %u", type);
	}
}

void moed_daemon_report_status(struct moed_daemon *d)
{
	static char last[160];
	char line[160];
	snprintf(line, sizeof(line), "%u clients, %u jobs waiting or running, backend %s%s",
		 ready_clients(d), d->poller ? moed_poller_queued(d->poller) : 0, d->ops->name,
		 d->draining ? ", draining" : "");
	if (!strcmp(line, last))
		return; /* only changes travel */
	memcpy(last, line, sizeof(last));
	moed_sd_status("%s", line);
}
