/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "sd.h"

int moed_sd_listen_fd(void)
{
#ifdef HAVE_LIBSYSTEMD
	int n = sd_listen_fds(1); /* also unsets LISTEN_* so that children do not inherit it */
	if (n <= 0)
		return n < 0 ? n : -ENOENT;
	if (n != 1) {
		log_err("socket activation passed %d sockets; moed listens on exactly one", n);
		return -EINVAL;
	}
	if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
		log_err("socket activation passed a socket that is not a listening SOCK_SEQPACKET "
			"Unix socket (ListenSequentialPacket= in moed.socket)");
		return -EINVAL;
	}
	return SD_LISTEN_FDS_START;
#else
	return -ENOENT;
#endif
}

#ifdef HAVE_LIBSYSTEMD
static void notify(const char *msg)
{
	int r = sd_notify(0, msg);
	if (r < 0)
		log_debug("sd_notify(%s): %s", msg, strerror(-r));
}
#else
static void notify(const char *msg)
{
	(void)msg;
}
#endif

void moed_sd_ready(void)
{
	notify("READY=1");
}

void moed_sd_stopping(void)
{
	notify("STOPPING=1");
}

void moed_sd_reloading(void)
{
	struct timespec ts;
	char msg[64];
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
	notify(msg);
}

void moed_sd_status(const char *fmt, ...)
{
	char msg[256] = "STATUS=";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + 7, sizeof(msg) - 7, fmt, ap);
	va_end(ap);
	notify(msg);
}

uint64_t moed_sd_watchdog_usec(void)
{
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec = 0;
	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
#else
	return 0;
#endif
}

void moed_sd_watchdog_ping(void)
{
	notify("WATCHDOG=1");
}
