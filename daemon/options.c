/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "moed/proto.h"
#include "options.h"
#include "socket_path.h"

#ifndef MOED_DEFAULT_CONFIG
#define MOED_DEFAULT_CONFIG "/etc/moed/moed.conf"
#endif

typedef int (*setter)(struct moed_options *o, const char *v, char *why, size_t len);

struct setting {
	const char *name; /* the long option and the configuration key */
	int short_name;
	bool reloadable;
	setter set;
	const char *arg, *help;
};

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
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

static int set_socket(struct moed_options *o, const char *v, char *why, size_t len)
{
	if (!*v || strlen(v) >= sizeof(o->socket_path))
		return bad(why, len, "path is empty or longer than 107 bytes");
	snprintf(o->socket_path, sizeof(o->socket_path), "%s", v);
	return 0;
}

static int set_backend(struct moed_options *o, const char *v, char *why, size_t len)
{
	if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "hip"))
		return bad(why, len, "unknown backend (auto, cpu or hip)");
	snprintf(o->backend, sizeof(o->backend), "%s", v);
	return 0;
}

static int set_threads(struct moed_options *o, const char *v, char *why, size_t len)
{
	unsigned long n;
	if (parse_uint(v, 256, &n) || n == 0)
		return bad(why, len, "expected a number of threads from 1 to 256");
	o->threads = (unsigned)n;
	return 0;
}

static int set_spin(struct moed_options *o, const char *v, char *why, size_t len)
{
	unsigned long n;
	if (parse_uint(v, 1000000, &n))
		return bad(why, len, "expected microseconds from 0 to 1000000");
	o->spin_us = (unsigned)n;
	return 0;
}

static int set_sq(struct moed_options *o, const char *v, char *why, size_t len)
{
	unsigned long n;
	if (parse_uint(v, MOED_RING_MAX_ENTRIES / 2, &n) || n < 2 || (n & (n - 1)))
		return bad(why, len, "expected a power of two from 2 to 32768");
	o->sq_entries = (uint32_t)n;
	return 0;
}

static int size_value(const char *v, uint64_t max, uint64_t *out, char *why, size_t len)
{
	uint64_t size;
	if (moed_parse_size(v, &size) || size == 0)
		return bad(why, len, "expected a size such as 4096, 64M or 2G");
	if (size > max)
		return bad(why, len, "arenas are at most 1T");
	*out = size;
	return 0;
}

static int set_arena_default(struct moed_options *o, const char *v, char *why, size_t len)
{
	return size_value(v, UINT64_C(1) << 40, &o->arena_default, why, len);
}

static int set_arena_max(struct moed_options *o, const char *v, char *why, size_t len)
{
	return size_value(v, UINT64_C(1) << 40, &o->arena_max, why, len);
}

static int set_weights_max(struct moed_options *o, const char *v, char *why, size_t len)
{
	return size_value(v, UINT64_MAX, &o->weights_max, why, len);
}

static int set_client_weights_max(struct moed_options *o, const char *v, char *why, size_t len)
{
	return size_value(v, UINT64_MAX, &o->client_weights_max, why, len);
}

static int set_max_clients(struct moed_options *o, const char *v, char *why, size_t len)
{
	unsigned long n;
	if (parse_uint(v, 65536, &n) || n == 0)
		return bad(why, len, "expected a number from 1 to 65536");
	o->max_clients = (unsigned)n;
	return 0;
}

static int set_allow_user(struct moed_options *o, const char *v, char *why, size_t len)
{
	unsigned long n;
	if (o->n_allow_uids == MOED_MAX_ALLOWED)
		return bad(why, len, "at most %u users", MOED_MAX_ALLOWED);
	struct passwd *pw = getpwnam(v);
	if (pw)
		o->allow_uids[o->n_allow_uids++] = pw->pw_uid;
	else if (parse_uint(v, (uid_t)-2, &n) == 0)
		o->allow_uids[o->n_allow_uids++] = (uid_t)n;
	else
		return bad(why, len, "no such user");
	return 0;
}

static int set_allow_group(struct moed_options *o, const char *v, char *why, size_t len)
{
	unsigned long n;
	if (o->n_allow_gids == MOED_MAX_ALLOWED)
		return bad(why, len, "at most %u groups", MOED_MAX_ALLOWED);
	struct group *gr = getgrnam(v);
	if (gr)
		o->allow_gids[o->n_allow_gids++] = gr->gr_gid;
	else if (parse_uint(v, (gid_t)-2, &n) == 0)
		o->allow_gids[o->n_allow_gids++] = (gid_t)n;
	else
		return bad(why, len, "no such group");
	return 0;
}

static int set_withhold(struct moed_options *o, const char *v, char *why, size_t len)
{
	if (!strcmp(v, "no_combine"))
		o->withhold |= MOED_CAP_NO_COMBINE;
	else if (!strcmp(v, "router_weight_on_input"))
		o->withhold |= MOED_CAP_ROUTER_WEIGHT_ON_INPUT;
	else
		return bad(why, len, "expected no_combine or router_weight_on_input");
	return 0;
}

static int set_log_level(struct moed_options *o, const char *v, char *why, size_t len)
{
	int l = moed_log_level_from_name(v);
	if (l < 0)
		return bad(why, len, "expected error, warning, info or debug");
	o->log_level = l;
	return 0;
}

static const struct setting settings[] = {
	{ "socket", 's', false, set_socket, "PATH", "listen here (default: $RUNTIME_DIRECTORY/moed.sock,\n"
	  "                            $XDG_RUNTIME_DIR/moed.sock or /run/moed/moed.sock)" },
	{ "backend", 'b', false, set_backend, "NAME", "auto, cpu or hip (default auto: the GPU when present)" },
	{ "threads", 't', false, set_threads, "N", "CPU backend worker threads (default: one per CPU)" },
	{ "withhold", 0, false, set_withhold, "CAP", "do not offer a capability (no_combine,\n"
	  "                            router_weight_on_input), as an older kernel would not" },
	{ "spin-us", 0, true, set_spin, "N", "poller and runner busy-wait this long before sleeping (default 50)" },
	{ "sq-entries", 0, true, set_sq, "N", "jobs a client may have in flight (power of two, default 64)" },
	{ "arena-default", 0, true, set_arena_default, "SIZE", "data arena of a client that asks for none (default 64M)" },
	{ "arena-max", 0, true, set_arena_max, "SIZE", "largest data arena a client may ask for (default 1G)" },
	{ "weights-max", 0, true, set_weights_max, "SIZE", "all weight sets together (default 64G)" },
	{ "client-weights-max", 0, true, set_client_weights_max, "SIZE", "weight sets one client creates (default 64G)" },
	{ "max-clients", 0, true, set_max_clients, "N", "connections served at once (default 256)" },
	{ "allow-user", 'u', true, set_allow_user, "USER", "also serve this user (name or uid; repeatable); the\n"
	  "                            daemon's own user and root are always served" },
	{ "allow-group", 'g', true, set_allow_group, "GROUP", "also serve members of this group (repeatable)" },
	{ "log-level", 0, true, set_log_level, "LEVEL", "error, warning, info or debug (default info)" },
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static void defaults(struct moed_options *o)
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

static void usage(void)
{
	printf("Usage: moed [OPTION]...\n"
	       "Serve fused Mixture-of-Experts layers to local processes over shared-memory rings.\n\n"
	       "  -c, --config=FILE         settings file (default %s, if present);\n"
	       "                            the command line overrides it\n",
	       MOED_DEFAULT_CONFIG);
	for (size_t i = 0; i < NSETTINGS; i++) {
		char left[40];
		snprintf(left, sizeof(left), "%c%c%c --%s=%s", settings[i].short_name ? '-' : ' ',
			 settings[i].short_name ? settings[i].short_name : ' ',
			 settings[i].short_name ? ',' : ' ', settings[i].name, settings[i].arg);
		printf("  %-26s%s%s\n", left, strlen(left) > 25 ? "\n                            " : "",
		       settings[i].help);
	}
	printf("  -h, --help                show this help and exit\n"
	       "  -V, --version             show the version and exit\n\n"
	       "SIZE takes a K, M, G or T suffix. In the settings file each line is NAME = VALUE\n"
	       "with the long option's name (see moed.conf(5)). SIGHUP re-reads it; SIGTERM stops\n"
	       "accepting, finishes the jobs in flight and exits 0.\n");
}

static const struct setting *find_setting(const char *name)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (!strcmp(settings[i].name, name))
			return &settings[i];
	return NULL;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	char *e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

/* Apply a settings file; -ENOENT when it does not exist, -EINVAL with file:line in why. */
static int load_file(struct moed_options *o, const char *path, char *why, size_t len)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		int e = errno;
		snprintf(why, len, "%s: %s", path, strerror(e));
		return -e;
	}
	char line[1024], msg[160];
	unsigned lineno = 0;
	int r = 0;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		lineno++;
		char *s = trim(line);
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			r = bad(why, len, "%s:%u: expected NAME = VALUE, got '%.60s'", path, lineno, s);
			break;
		}
		*eq = 0;
		char *name = trim(s), *value = trim(eq + 1);
		const struct setting *st = find_setting(name);
		if (!st)
			r = bad(why, len, "%s:%u: unknown setting '%.60s'", path, lineno, name);
		else if (st->set(o, value, msg, sizeof(msg)) < 0)
			r = bad(why, len, "%s:%u: %s = %.60s: %s", path, lineno, name, value, msg);
	}
	fclose(f);
	snprintf(o->config_path, sizeof(o->config_path), "%s", path);
	return r;
}

/* Everything but --help/--version printing; why says what was wrong. */
static int build(struct moed_options *o, int argc, char **argv, bool *answered, char *why, size_t len)
{
	static struct option longopts[NSETTINGS + 4];
	char shorts[64] = "c:hV";
	const char *config = NULL;
	int c;

	defaults(o);
	o->argc = argc;
	o->argv = argv;
	*answered = false;
	for (size_t i = 0; i < NSETTINGS; i++) {
		longopts[i] = (struct option){ settings[i].name, required_argument, NULL,
					       settings[i].short_name ? settings[i].short_name : 256 + (int)i };
		if (settings[i].short_name) {
			size_t l = strlen(shorts);
			shorts[l] = (char)settings[i].short_name;
			shorts[l + 1] = ':';
			shorts[l + 2] = 0;
		}
	}
	longopts[NSETTINGS] = (struct option){ "config", required_argument, NULL, 'c' };
	longopts[NSETTINGS + 1] = (struct option){ "help", no_argument, NULL, 'h' };
	longopts[NSETTINGS + 2] = (struct option){ "version", no_argument, NULL, 'V' };
	longopts[NSETTINGS + 3] = (struct option){ NULL, 0, NULL, 0 };

	/* First pass: only --config, --help and --version; the file goes under argv. */
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
		if (c == 'c')
			config = optarg;
		else if (c == 'h' || c == 'V') {
			*answered = true;
			return c;
		} else if (c == '?') {
			return bad(why, len, "option '%s' is unknown or lacks its value\nTry 'moed --help'.",
				   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad(why, len, "unexpected argument '%s'\nTry 'moed --help'.", argv[optind]);
	int r = load_file(o, config ? config : MOED_DEFAULT_CONFIG, why, len);
	if (r == -ENOENT && !config) {
		o->config_path[0] = 0; /* no file at the default place: fine */
	} else if (r < 0) {
		return r == -EINVAL ? r : bad(why, len, "cannot read %s: %s", config, strerror(-r));
	}

	optind = 1;
	while ((c = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
		const struct setting *st = NULL;
		for (size_t i = 0; i < NSETTINGS; i++)
			if (longopts[i].val == c)
				st = &settings[i];
		if (!st)
			continue; /* --config, handled above */
		char msg[160];
		if (st->set(o, optarg, msg, sizeof(msg)) < 0)
			return bad(why, len, "--%s=%s: %s", st->name, optarg, msg);
	}
	if (o->arena_default > o->arena_max)
		return bad(why, len, "arena-default is larger than arena-max");
	return 0;
}

int moed_options_parse(struct moed_options *o, int argc, char **argv)
{
	char why[512];
	bool answered;
	int r = build(o, argc, argv, &answered, why, sizeof(why));
	if (answered) {
		if (r == 'h')
			usage();
		else
			printf("moed %s (ABI %u)\n", PACKAGE_VERSION, MOED_ABI_VERSION);
		return 1;
	}
	if (r < 0) {
		fprintf(stderr, "moed: %s\n", why);
		return -EINVAL;
	}
	return 0;
}

/* Whether a setting that needs a restart differs between two sets of options. */
static bool same(const struct moed_options *a, const struct moed_options *b, const char *name)
{
	if (!strcmp(name, "socket"))
		return !strcmp(a->socket_path, b->socket_path);
	if (!strcmp(name, "backend"))
		return !strcmp(a->backend, b->backend);
	if (!strcmp(name, "threads"))
		return a->threads == b->threads;
	return a->withhold == b->withhold; /* "withhold" */
}

int moed_options_reload(const struct moed_options *cur, struct moed_options *next, char *kept,
			size_t kept_len, char *why, size_t why_len)
{
	bool answered;
	int r = build(next, cur->argc, cur->argv, &answered, why, why_len);
	if (r < 0 || answered)
		return r < 0 ? r : -EINVAL;
	size_t o = 0;
	kept[0] = 0;
	for (size_t i = 0; i < NSETTINGS; i++) {
		if (settings[i].reloadable || same(cur, next, settings[i].name))
			continue;
		if (o < kept_len)
			o += (size_t)snprintf(kept + o, kept_len - o, "%s%s", o ? ", " : "", settings[i].name);
	}
	snprintf(next->socket_path, sizeof(next->socket_path), "%s", cur->socket_path);
	snprintf(next->backend, sizeof(next->backend), "%s", cur->backend);
	next->threads = cur->threads;
	next->withhold = cur->withhold;
	return 0;
}
