/* SPDX-License-Identifier: MIT */
/* The daemon's settings and their command line. */
#ifndef MOED_DAEMON_OPTIONS_H
#define MOED_DAEMON_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define MOED_MAX_ALLOWED 32

struct moed_options {
	char socket_path[108]; /* sizeof(sun_path) */
	char backend[32];      /* "auto" or a backend's name */
	unsigned threads;      /* CPU backend workers; 0 = one per CPU */
	unsigned spin_us;      /* poller spin before sleeping */
	uint32_t sq_entries;   /* per client; the CQ gets twice as many */
	uint64_t arena_default, arena_max; /* per client */
	uint64_t weights_max;        /* all weight sets together */
	uint64_t client_weights_max; /* weight sets one client creates */
	unsigned max_clients;
	uint32_t withhold; /* MOED_CAP_* bits the backend must not offer */
	uid_t allow_uids[MOED_MAX_ALLOWED];
	unsigned n_allow_uids;
	gid_t allow_gids[MOED_MAX_ALLOWED];
	unsigned n_allow_gids;
	int log_level;
};

void moed_options_defaults(struct moed_options *o);

/*
 * Parse argv into o. Returns 0 to run, 1 when --help or --version was answered (exit 0),
 * or -EINVAL after printing what was wrong to stderr (exit 2).
 */
int moed_options_parse(struct moed_options *o, int argc, char **argv);

/* "64M", "1G", "4096" -> bytes. 0 or -EINVAL/-ERANGE. */
int moed_parse_size(const char *s, uint64_t *out);

#endif
