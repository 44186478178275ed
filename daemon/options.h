/* SPDX-License-Identifier: MIT */
/*
 * The daemon's settings: defaults, then the configuration file (moed.conf(5)), then the
 * command line, each overriding the one before. Every setting has one parser, shared by
 * the file and the command line, and is either reloadable (SIGHUP applies it) or not.
 */
#ifndef MOED_DAEMON_OPTIONS_H
#define MOED_DAEMON_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define MOED_MAX_ALLOWED 32

struct moed_options {
	/* not reloadable */
	char socket_path[108]; /* sizeof(sun_path) */
	char backend[32];      /* "auto" or a backend's name */
	unsigned threads;      /* CPU backend workers; 0 = one per CPU */
	uint32_t withhold;     /* MOED_CAP_* bits the backend must not offer */
	/* reloadable */
	unsigned spin_us;      /* poller spin before sleeping */
	uint32_t sq_entries;   /* per client; the CQ gets twice as many */
	uint64_t arena_default, arena_max; /* per client */
	uint64_t weights_max;        /* all weight sets together */
	uint64_t client_weights_max; /* weight sets one client creates */
	unsigned max_clients;
	uid_t allow_uids[MOED_MAX_ALLOWED];
	unsigned n_allow_uids;
	gid_t allow_gids[MOED_MAX_ALLOWED];
	unsigned n_allow_gids;
	int log_level;

	/* where they came from */
	char config_path[256]; /* "" when no file was read */
	int argc;
	char **argv;
};

/*
 * Build the settings from defaults, the configuration file (--config, else
 * MOED_DEFAULT_CONFIG when it exists) and argv. Returns 0 to run, 1 when --help or
 * --version was answered (exit 0), or -EINVAL after printing what was wrong, naming the
 * option or the file and line (exit 2).
 */
int moed_options_parse(struct moed_options *o, int argc, char **argv);

/*
 * For SIGHUP: read the file and argv again into `next`, then keep in `next` the current
 * value of each setting that cannot change at run time, listing those that differ in
 * `kept` (comma-separated names, "" when none). Returns 0, or -EINVAL with the reason in
 * why (and `next` unusable).
 */
int moed_options_reload(const struct moed_options *cur, struct moed_options *next, char *kept,
			size_t kept_len, char *why, size_t why_len);

/* "64M", "1G", "4096" -> bytes. 0 or -EINVAL/-ERANGE. */
int moed_parse_size(const char *s, uint64_t *out);

#endif
