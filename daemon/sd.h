/* SPDX-License-Identifier: MIT */
/*
 * Everything systemd: readiness and status notifications, the watchdog, and the
 * listening socket passed by socket activation. Without libsystemd (or outside systemd)
 * each call does nothing and the daemon binds its own socket.
 */
#ifndef MOED_DAEMON_SD_H
#define MOED_DAEMON_SD_H

#include <stdbool.h>
#include <stdint.h>

/*
 * The listening socket systemd passed (LISTEN_FDS), or -ENOENT when none was passed,
 * or -EINVAL (with a logged reason) when what was passed is not one SOCK_SEQPACKET Unix
 * listening socket.
 */
int moed_sd_listen_fd(void);

void moed_sd_ready(void);
void moed_sd_stopping(void);
/* RELOADING=1 with MONOTONIC_USEC=now; follow with moed_sd_ready(). */
void moed_sd_reloading(void);
__attribute__((format(printf, 1, 2))) void moed_sd_status(const char *fmt, ...);

/* The watchdog period systemd asked for, in microseconds; 0 when none. */
uint64_t moed_sd_watchdog_usec(void);
void moed_sd_watchdog_ping(void);

#endif
