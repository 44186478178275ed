/* SPDX-License-Identifier: MIT */
/*
 * The control thread: the listening socket, each client's control connection, and
 * signals, all on one epoll set. Client hang-ups tear their sessions down here.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "poller.h"
#include "sd.h"

#define LISTEN_TAG ((uint64_t)-1)
#define SIGNAL_TAG ((uint64_t)-2)
#define TIMER_TAG ((uint64_t)-3)

static int listen_on(struct moed_daemon *d)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	const char *path = d->opt.socket_path;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);

	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int r = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	if (r < 0 && errno == EADDRINUSE) {
		/* A socket file is there: in use by another daemon, or left by a dead one? */
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int alive = probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0;
		if (probe >= 0)
			close(probe);
		if (alive) {
			log_err("another daemon is listening on %s", path);
			close(fd);
			return -EADDRINUSE;
		}
		unlink(path);
		r = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	}
	if (r < 0) {
		int e = errno;
		log_err("cannot listen on %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	/* Access is decided by SO_PEERCRED; the mode only keeps out whom no rule admits. */
	chmod(path, d->opt.n_allow_uids ? 0666 : d->opt.n_allow_gids ? 0660 : 0600);
	if (listen(fd, 64) < 0) {
		int e = errno;
		log_err("listen on %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	d->unlink_socket = true;
	return fd;
}

static bool peer_allowed(const struct moed_daemon *d, int sock, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	if (cred->uid == 0 || cred->uid == geteuid())
		return true;
	for (unsigned i = 0; i < d->opt.n_allow_uids; i++)
		if (cred->uid == d->opt.allow_uids[i])
			return true;
	gid_t groups[256];
	len = sizeof(groups);
	unsigned ngroups = 0;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
		ngroups = len / sizeof(gid_t);
	for (unsigned i = 0; i < d->opt.n_allow_gids; i++) {
		if (cred->gid == d->opt.allow_gids[i])
			return true;
		for (unsigned g = 0; g < ngroups; g++)
			if (groups[g] == d->opt.allow_gids[i])
				return true;
	}
	return false;
}

static void accept_clients(struct moed_daemon *d)
{
	for (;;) {
		int sock = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (sock < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		struct ucred cred = { 0, 0, 0 };
		int refuse = 0;
		char why[160] = "";
		if (!peer_allowed(d, sock, &cred)) {
			refuse = -EACCES;
			snprintf(why, sizeof(why), "uid %d (pid %d) is not allowed to use this daemon",
				 (int)cred.uid, (int)cred.pid);
		} else if (d->nsessions >= d->opt.max_clients) {
			refuse = -EUSERS;
			snprintf(why, sizeof(why), "the daemon serves at most %u clients at once",
				 d->opt.max_clients);
		}
		if (refuse && d->nsessions >= d->opt.max_clients + 64u) {
			close(sock); /* a flood of refused connections gets no answer */
			continue;
		}
		if (refuse)
			log_warn("refusing a client: %s", why);
		if (d->nsessions == d->cap_sessions) {
			unsigned nc = d->cap_sessions ? 2 * d->cap_sessions : 16;
			struct moed_session **na = realloc(d->sessions, nc * sizeof(*na));
			if (!na) {
				log_err("out of memory accepting a client");
				close(sock);
				continue;
			}
			d->sessions = na;
			d->cap_sessions = nc;
		}
		struct moed_session *s = moed_session_new(sock, cred.pid, cred.uid, cred.gid, ++d->next_id);
		if (!s) {
			log_err("out of memory accepting a client");
			close(sock);
			continue;
		}
		/* The refusal answers the client's first message, so that it is read before the
		 * hang-up (closing with the HELLO unread would reset the connection instead). */
		s->refuse_status = refuse;
		snprintf(s->refuse_msg, sizeof(s->refuse_msg), "%s", why);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = s };
		if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, sock, &ev) < 0) {
			log_err("epoll_ctl: %s", strerror(errno));
			moed_session_put(s);
			continue;
		}
		d->sessions[d->nsessions++] = s;
	}
}

static void drop_session(struct moed_daemon *d, struct moed_session *s)
{
	epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, s->sock, NULL);
	for (unsigned i = 0; i < d->nsessions; i++)
		if (d->sessions[i] == s) {
			d->sessions[i] = d->sessions[--d->nsessions];
			break;
		}
	if (s->ready)
		log_info("client %llu (pid %d) left after %llu jobs (%llu failed)",
			 (unsigned long long)s->id, (int)s->pid,
			 (unsigned long long)__atomic_load_n(&s->jobs, __ATOMIC_RELAXED),
			 (unsigned long long)__atomic_load_n(&s->job_errors, __ATOMIC_RELAXED));
	moed_session_release_all(s, &d->weights);
	__atomic_store_n(&s->dead, 1, __ATOMIC_RELEASE);
	if (s->ready) {
		moed_poller_kick(d->poller);
		s->ready = false; /* no longer counted */
		moed_daemon_report_status(d);
	}
	moed_session_put(s);
}

int moed_daemon_start(struct moed_daemon *d, const struct moed_options *opt)
{
	struct moed_error err = { "" };
	int r;

	memset(d, 0, sizeof(*d));
	d->opt = *opt;
	d->spin_us = opt->spin_us;
	d->listen_fd = d->epoll_fd = d->signal_fd = d->doorbell_fd = d->timer_fd = -1;
	d->started_ns = moed_now_ns();
	moed_log_set_level(opt->log_level);

	/* Block the signals we read from a signalfd before any thread exists: every thread
	 * (backend workers, the poller) inherits the mask, so none can take them. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (!(d->ops = moed_backend_find(opt->backend, &err))) {
		log_err("backend %s: %s", opt->backend, err.msg);
		return -ENODEV;
	}
	const struct moed_backend_config cfg = { .threads = opt->threads, .withhold = opt->withhold };
	if ((r = d->ops->create(&cfg, &d->backend, &err)) < 0) {
		log_err("backend %s: %s", d->ops->name, err.msg);
		return r;
	}
	moed_weights_init(&d->weights, d->ops, d->backend, opt->weights_max);

	d->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	d->doorbell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	d->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (d->signal_fd < 0 || d->doorbell_fd < 0 || d->epoll_fd < 0) {
		r = -errno;
		log_err("cannot set up the event loop: %s", strerror(errno));
		return r;
	}
	d->listen_fd = moed_sd_listen_fd();
	if (d->listen_fd >= 0) {
		/* systemd owns the socket file: we neither chmod nor unlink it. */
		fcntl(d->listen_fd, F_SETFL, fcntl(d->listen_fd, F_GETFL) | O_NONBLOCK);
		fcntl(d->listen_fd, F_SETFD, FD_CLOEXEC);
		log_info("using the listening socket passed by systemd");
	} else if (d->listen_fd == -ENOENT) {
		if ((d->listen_fd = listen_on(d)) < 0)
			return d->listen_fd;
	} else {
		return d->listen_fd;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = LISTEN_TAG };
	epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, d->listen_fd, &ev);
	ev.data.u64 = SIGNAL_TAG;
	epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, d->signal_fd, &ev);

	if ((r = moed_poller_start(d, &d->poller)) < 0) {
		log_err("cannot start the poller: %s", strerror(-r));
		return r;
	}

	/* One tick for the watchdog (at half its period) and the status line. */
	d->watchdog_usec = moed_sd_watchdog_usec();
	uint64_t tick_us = d->watchdog_usec ? d->watchdog_usec / 2 : 1000000;
	d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct itimerspec its = {
		.it_interval = { (time_t)(tick_us / 1000000), (long)(tick_us % 1000000) * 1000 },
		.it_value = { (time_t)(tick_us / 1000000), (long)(tick_us % 1000000) * 1000 },
	};
	if (d->timer_fd < 0 || timerfd_settime(d->timer_fd, 0, &its, NULL) < 0) {
		r = -errno;
		log_err("cannot start the watchdog timer: %s", strerror(errno));
		return r;
	}
	ev.data.u64 = TIMER_TAG;
	epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, d->timer_fd, &ev);
	log_info("moed %s listening on %s, backend %s (%s), ABI %u", PACKAGE_VERSION,
		 opt->socket_path, d->ops->name,
		 d->ops->caps(d->backend) & MOED_CAP_NO_COMBINE ? "no_combine" : "no_combine withheld",
		 MOED_ABI_VERSION);
	moed_sd_ready();
	moed_daemon_report_status(d);
	return 0;
}

/* Feed the watchdog only while the poller makes progress; refresh the status line. */
static void tick(struct moed_daemon *d)
{
	uint64_t expirations;
	if (read(d->timer_fd, &expirations, sizeof(expirations)) < 0)
		return;
	if (d->watchdog_usec) {
		if (moed_poller_healthy(d->poller)) {
			moed_sd_watchdog_ping();
			if (d->watchdog_missed)
				log_info("the poller is making progress again");
			d->watchdog_missed = false;
		} else if (!d->watchdog_missed) {
			log_warn("the poller has made no progress for %llu ms: not feeding the watchdog",
				 (unsigned long long)(d->watchdog_usec / 2000));
			d->watchdog_missed = true;
		}
	}
	moed_daemon_report_status(d);
}

/* SIGHUP: read the settings again; apply what can change at run time, say what cannot. */
static void reload(struct moed_daemon *d)
{
	struct moed_options next;
	char kept[256], why[512];

	moed_sd_reloading();
	if (moed_options_reload(&d->opt, &next, kept, sizeof(kept), why, sizeof(why)) < 0) {
		log_err("reload failed, keeping the current settings: %s", why);
		moed_sd_ready();
		return;
	}
	d->opt = next;
	moed_log_set_level(next.log_level);
	__atomic_store_n(&d->spin_us, next.spin_us, __ATOMIC_RELAXED);
	pthread_mutex_lock(&d->weights.lock);
	d->weights.max_bytes = next.weights_max;
	pthread_mutex_unlock(&d->weights.lock);
	if (kept[0])
		log_warn("reloaded %s; these changed but apply only after a restart: %s",
			 next.config_path[0] ? next.config_path : "settings", kept);
	else
		log_info("reloaded %s", next.config_path[0] ? next.config_path : "settings");
	moed_sd_ready();
	moed_daemon_report_status(d);
}

int moed_daemon_run(struct moed_daemon *d)
{
	struct epoll_event evs[32];

	while (!d->stopping) {
		int n = epoll_wait(d->epoll_fd, evs, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("epoll_wait: %s", strerror(errno));
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == LISTEN_TAG) {
				accept_clients(d);
			} else if (evs[i].data.u64 == SIGNAL_TAG) {
				struct signalfd_siginfo si;
				while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGHUP) {
						reload(d);
						continue;
					}
					log_info("%s: finishing the jobs in flight, then exiting",
						 strsignal((int)si.ssi_signo));
					d->stopping = true;
				}
			} else if (evs[i].data.u64 == TIMER_TAG) {
				tick(d);
			} else {
				struct moed_session *s = evs[i].data.ptr;
				bool keep = !(evs[i].events & (EPOLLHUP | EPOLLERR));
				if (evs[i].events & EPOLLIN)
					keep = moed_control_handle(d, s) && keep;
				if (!keep)
					drop_session(d, s);
			}
		}
	}
	return 0;
}

void moed_daemon_stop(struct moed_daemon *d)
{
	moed_sd_stopping();
	if (d->listen_fd >= 0) {
		close(d->listen_fd); /* stop accepting first */
		d->listen_fd = -1;
		if (d->unlink_socket)
			unlink(d->opt.socket_path);
	}
	moed_poller_stop(d->poller); /* serves what was submitted, then stops */
	d->poller = NULL;
	while (d->nsessions) {
		struct moed_session *s = d->sessions[0];
		moed_session_release_all(s, &d->weights);
		d->sessions[0] = d->sessions[--d->nsessions];
		moed_session_put(s);
	}
	free(d->sessions);
	if (d->backend) {
		moed_weights_fini(&d->weights);
		d->ops->destroy(d->backend);
	}
	if (d->epoll_fd >= 0)
		close(d->epoll_fd);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	if (d->doorbell_fd >= 0)
		close(d->doorbell_fd);
	if (d->timer_fd >= 0)
		close(d->timer_fd);
}
