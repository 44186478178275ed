/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "moed/proto.h"
#include "options.h"
#include "socket_path.h"

void moed_options_defaults(struct moed_options *o)
{
	memset(o, 0, sizeof(*o));
	if (moed_default_socket_path(o->socket_path, sizeof(o->socket_path)) < 0)
		snprintf(o->socket_path, sizeof(o->socket_path), "/run/moed/moed.sock");
	snprintf(o->backend, sizeof(o->backend), "auto");
	o->spin_us = 50;
	o->sq_entries = 64;
	o->arena_default = UINT64_C(64) << 20;
	o->arena_max = UINT64_C(1) << 30;
	o->weights_max = UINT64_C(64) << 30;
	o->client_weights_max = UINT64_C(64) << 30;
	o->max_clients = 256;
	o->log_level = MOED_LOG_INFO;
}

int moed_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;

	if (end == s || errno || *s == '-')
		return -EINVAL;
	switch (*end) {
	case 0: break;
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	case 'T': case 't': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' || *end == 'B')
		end += *end == 'i' && end[1] == 'B' ? 2 : 1;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (end == s || *end || errno || *s == '-' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: moed [OPTION]...\n"
		"Serve fused Mixture-of-Experts layers to local processes over shared-memory rings.\n"
		"\n"
		"  -s, --socket=PATH         listen here (default: $RUNTIME_DIRECTORY/moed.sock,\n"
		"                            $XDG_RUNTIME_DIR/moed.sock or /run/moed/moed.sock)\n"
		"  -b, --backend=NAME        auto or cpu (default auto: the GPU when present)\n"
		"  -t, --threads=N           CPU backend worker threads (default: one per CPU)\n"
		"      --spin-us=N           poller busy-waits this long before sleeping (default 50)\n"
		"      --sq-entries=N        jobs a client may have in flight (power of two, default 64)\n"
		"      --arena-default=SIZE  data arena of a client that asks for none (default 64M)\n"
		"      --arena-max=SIZE      largest data arena a client may ask for (default 1G)\n"
		"      --weights-max=SIZE    all weight sets together (default 64G)\n"
		"      --client-weights-max=SIZE  weight sets one client creates (default 64G)\n"
		"      --max-clients=N       connections served at once (default 256)\n"
		"  -u, --allow-user=USER     also serve this user (name or uid; repeatable); the\n"
		"                            daemon's own user and root are always served\n"
		"  -g, --allow-group=GROUP   also serve members of this group (repeatable)\n"
		"      --withhold=CAP        do not offer a capability (no_combine,\n"
		"                            router_weight_on_input), as an older kernel would not\n"
		"      --log-level=LEVEL     error, warning, info or debug (default info)\n"
		"  -h, --help                show this help and exit\n"
		"  -V, --version             show the version and exit\n"
		"\n"
		"SIZE takes a K, M, G or T suffix. SIGTERM stops accepting, finishes the jobs in\n"
		"flight and exits 0.\n");
}

static int bad(const char *opt, const char *val, const char *why)
{
	fprintf(stderr, "moed: --%s=%s: %s\n", opt, val, why);
	return -EINVAL;
}

int moed_options_parse(struct moed_options *o, int argc, char **argv)
{
	enum { O_SPIN = 256, O_SQ, O_ARENA_DEF, O_ARENA_MAX, O_WMAX, O_CWMAX, O_MAXCL, O_WITHHOLD, O_LOG };
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "backend", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "spin-us", required_argument, NULL, O_SPIN },
		{ "sq-entries", required_argument, NULL, O_SQ },
		{ "arena-default", required_argument, NULL, O_ARENA_DEF },
		{ "arena-max", required_argument, NULL, O_ARENA_MAX },
		{ "weights-max", required_argument, NULL, O_WMAX },
		{ "client-weights-max", required_argument, NULL, O_CWMAX },
		{ "max-clients", required_argument, NULL, O_MAXCL },
		{ "allow-user", required_argument, NULL, 'u' },
		{ "allow-group", required_argument, NULL, 'g' },
		{ "withhold", required_argument, NULL, O_WITHHOLD },
		{ "log-level", required_argument, NULL, O_LOG },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c, idx;
	unsigned long v;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:b:t:u:g:hV", longopts, &idx)) != -1) {
		const char *name = NULL;
		for (const struct option *lo = longopts; lo->name; lo++)
			if (lo->val == c)
				name = lo->name;
		switch (c) {
		case 's':
			if (strlen(optarg) >= sizeof(o->socket_path) || !*optarg)
				return bad(name, optarg, "path is empty or longer than 107 bytes");
			snprintf(o->socket_path, sizeof(o->socket_path), "%s", optarg);
			break;
		case 'b':
			if (strcmp(optarg, "auto") && strcmp(optarg, "cpu"))
				return bad(name, optarg, "unknown backend (this build has: auto, cpu)");
			snprintf(o->backend, sizeof(o->backend), "%s", optarg);
			break;
		case 't':
			if (parse_uint(optarg, 256, &v) || v == 0)
				return bad(name, optarg, "expected a number of threads from 1 to 256");
			o->threads = (unsigned)v;
			break;
		case O_SPIN:
			if (parse_uint(optarg, 1000000, &v))
				return bad(name, optarg, "expected microseconds from 0 to 1000000");
			o->spin_us = (unsigned)v;
			break;
		case O_SQ:
			if (parse_uint(optarg, MOED_RING_MAX_ENTRIES / 2, &v) || v < 2 || (v & (v - 1)))
				return bad(name, optarg, "expected a power of two from 2 to 32768");
			o->sq_entries = (uint32_t)v;
			break;
		case O_ARENA_DEF:
		case O_ARENA_MAX:
		case O_WMAX:
		case O_CWMAX: {
			uint64_t size;
			if (moed_parse_size(optarg, &size) || size == 0)
				return bad(name, optarg, "expected a size such as 4096, 64M or 2G");
			if ((c == O_ARENA_DEF || c == O_ARENA_MAX) && size > (UINT64_C(1) << 40))
				return bad(name, optarg, "arenas are at most 1T");
			*(c == O_ARENA_DEF ? &o->arena_default : c == O_ARENA_MAX ? &o->arena_max
				: c == O_WMAX ? &o->weights_max : &o->client_weights_max) = size;
			break;
		}
		case O_MAXCL:
			if (parse_uint(optarg, 65536, &v) || v == 0)
				return bad(name, optarg, "expected a number from 1 to 65536");
			o->max_clients = (unsigned)v;
			break;
		case 'u': {
			if (o->n_allow_uids == MOED_MAX_ALLOWED)
				return bad(name, optarg, "too many users");
			struct passwd *pw = getpwnam(optarg);
			if (pw)
				o->allow_uids[o->n_allow_uids++] = pw->pw_uid;
			else if (parse_uint(optarg, (uid_t)-2, &v) == 0)
				o->allow_uids[o->n_allow_uids++] = (uid_t)v;
			else
				return bad(name, optarg, "no such user");
			break;
		}
		case 'g': {
			if (o->n_allow_gids == MOED_MAX_ALLOWED)
				return bad(name, optarg, "too many groups");
			struct group *gr = getgrnam(optarg);
			if (gr)
				o->allow_gids[o->n_allow_gids++] = gr->gr_gid;
			else if (parse_uint(optarg, (gid_t)-2, &v) == 0)
				o->allow_gids[o->n_allow_gids++] = (gid_t)v;
			else
				return bad(name, optarg, "no such group");
			break;
		}
		case O_WITHHOLD:
			if (!strcmp(optarg, "no_combine"))
				o->withhold |= MOED_CAP_NO_COMBINE;
			else if (!strcmp(optarg, "router_weight_on_input"))
				o->withhold |= MOED_CAP_ROUTER_WEIGHT_ON_INPUT;
			else
				return bad(name, optarg, "expected no_combine or router_weight_on_input");
			break;
		case O_LOG:
			if ((o->log_level = moed_log_level_from_name(optarg)) < 0)
				return bad(name, optarg, "expected error, warning, info or debug");
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf("moed %s (ABI %u)\n", PACKAGE_VERSION, MOED_ABI_VERSION);
			return 1;
		default:
			fprintf(stderr, "Try 'moed --help'.\n");
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "moed: unexpected argument '%s'\nTry 'moed --help'.\n", argv[optind]);
		return -EINVAL;
	}
	if (o->arena_default > o->arena_max) {
		fprintf(stderr, "moed: --arena-default is larger than --arena-max\n");
		return -EINVAL;
	}
	return 0;
}
