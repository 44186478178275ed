/* SPDX-License-Identifier: MIT */
/* The daemon as a whole: what the control thread and the poller share. */
#ifndef MOED_DAEMON_DAEMON_H
#define MOED_DAEMON_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "options.h"
#include "session.h"
#include "weights.h"

struct moed_poller;

struct moed_daemon {
	struct moed_options opt;
	const struct moed_backend_ops *ops;
	struct moed_backend *backend;
	struct moed_weight_registry weights;
	struct moed_poller *poller;
	int listen_fd;
	int epoll_fd;
	int signal_fd;
	int doorbell_fd; /* one eventfd for all clients: "the SQ has work" */
	bool unlink_socket;
	unsigned spin_us; /* atomic: --spin-us as now set (SIGHUP changes it); poller and runner */

	/* control thread only */
	struct moed_session **sessions;
	unsigned nsessions, cap_sessions;
	uint64_t next_id;
	bool stopping;
	bool draining;
	uint64_t started_ns;
	int timer_fd; /* the watchdog and status tick */
	uint64_t watchdog_usec;
	bool watchdog_missed; /* the last tick found the poller stuck */
};

/*
 * Start everything (backend, socket, poller). Returns 0, or a negative errno after
 * logging what failed.
 */
int moed_daemon_start(struct moed_daemon *d, const struct moed_options *opt);

/* Serve until SIGTERM or SIGINT; then finish the jobs in flight and return 0. */
int moed_daemon_run(struct moed_daemon *d);

void moed_daemon_stop(struct moed_daemon *d);

/* Answer one control message from a session. Returns false when the session must go. */
bool moed_control_handle(struct moed_daemon *d, struct moed_session *s);

/* Operator requests (moed/proto.h, MOED_MSG_ADMIN_*): fill the reply body, return its size
 * or a negative errno with err set. */
int moed_admin_handle(struct moed_daemon *d, uint32_t type, const void *body, void *reply,
		      size_t cap, struct moed_error *err);

/* Readiness/status line for systemd and moedctl. */
void moed_daemon_report_status(struct moed_daemon *d);

#endif
