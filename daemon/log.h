/* SPDX-License-Identifier: MIT */
/* The daemon's log: one line per event on stderr, at the boundary where it happened. */
#ifndef MOED_DAEMON_LOG_H
#define MOED_DAEMON_LOG_H

enum moed_log_level { MOED_LOG_ERR = 3, MOED_LOG_WARN = 4, MOED_LOG_INFO = 6, MOED_LOG_DEBUG = 7 };

void moed_log_set_level(int level);
int moed_log_level_from_name(const char *name); /* -1 when unknown */

__attribute__((format(printf, 2, 3))) void moed_log(int level, const char *fmt, ...);

#define log_err(...) moed_log(MOED_LOG_ERR, __VA_ARGS__)
#define log_warn(...) moed_log(MOED_LOG_WARN, __VA_ARGS__)
#define log_info(...) moed_log(MOED_LOG_INFO, __VA_ARGS__)
#define log_debug(...) moed_log(MOED_LOG_DEBUG, __VA_ARGS__)

#endif
