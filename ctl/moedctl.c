/* SPDX-License-Identifier: MIT */
/*
 * moedctl(1): ask a running moed how it is and what it serves, as text or JSON, or tell
 * it to drain. Exit status: 0 done, 1 the daemon refused or failed the request, 2 usage,
 * 3 the daemon cannot be reached.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moed/moed.h"

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static const char *const dtype_names[] = { "f32", "bf16", "f16" };

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: moedctl [--socket PATH] [--json] COMMAND\n"
		"Query or steer a running moed daemon.\n\n"
		"Commands:\n"
		"  status    version, backend, clients, weight memory, jobs\n"
		"  clients   each connected client: pid, uid, name, jobs, failures, in flight\n"
		"  weights   each weight set: name, shape, dtype, bytes, holders\n"
		"  stats     job counters and latency percentiles of recent MoE jobs\n"
		"  drain     accept no new clients or jobs; those submitted are finished\n\n"
		"Options:\n"
		"  -s, --socket=PATH   the daemon's socket (default as for clients: $MOED_SOCKET,\n"
		"                      $RUNTIME_DIRECTORY or $XDG_RUNTIME_DIR, /run/moed/moed.sock)\n"
		"  -j, --json          print JSON instead of text\n"
		"  -h, --help          show this help\n"
		"  -V, --version       show the version\n\n"
		"Exit status: 0 done, 1 refused by the daemon, 2 usage, 3 daemon unreachable.\n");
}

/* A JSON string literal (names are UTF-8 from the daemon; escape what JSON requires). */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void human_bytes(uint64_t b, char *out, size_t len)
{
	const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int u = 0;
	while (v >= 1024 && u < 4)
		v /= 1024, u++;
	snprintf(out, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static int fail(struct moed_client *c, const char *what, int r)
{
	fprintf(stderr, "moedctl: %s: %s\n", what, moed_client_error(c)[0] ? moed_client_error(c) : strerror(-r));
	return r == -ECONNRESET || r == -EPIPE ? EXIT_UNREACHABLE : EXIT_REFUSED;
}

static int cmd_status(struct moed_client *c, bool json)
{
	struct moed_admin_status st;
	size_t len;
	int r = moed_admin_request(c, MOED_MSG_ADMIN_STATUS, NULL, 0, &st, sizeof(st), &len);
	if (r < 0 || len != sizeof(st))
		return fail(c, "status", r < 0 ? r : -EBADMSG);
	st.version[sizeof(st.version) - 1] = st.backend[sizeof(st.backend) - 1] = 0;
	if (json) {
		printf("{\"version\": ");
		json_str(st.version);
		printf(", \"abi\": %u, \"pid\": %u, \"uptime_s\": %.3f, \"backend\": ", st.abi_version,
		       st.pid, (double)st.uptime_ns / 1e9);
		json_str(st.backend);
		printf(", \"threads\": %u, \"spin_us\": %u, \"clients\": %u, \"queued\": %u, "
		       "\"weight_sets\": %u, \"weight_bytes\": %" PRIu64 ", \"weights_max\": %" PRIu64
		       ", \"jobs\": %" PRIu64 ", \"job_errors\": %" PRIu64 ", \"draining\": %s}\n",
		       st.threads, st.spin_us, st.clients, st.queued, st.weight_sets, st.weight_bytes,
		       st.weights_max, st.jobs, st.job_errors, st.draining ? "true" : "false");
		return 0;
	}
	char held[32], max[32];
	human_bytes(st.weight_bytes, held, sizeof(held));
	human_bytes(st.weights_max, max, sizeof(max));
	const uint64_t up = st.uptime_ns / 1000000000u;
	printf("moed %s (ABI %u), pid %u, up %" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s\n", st.version,
	       st.abi_version, st.pid, up / 3600, up / 60 % 60, up % 60);
	printf("state:    %s\n", st.draining ? "draining" : "serving");
	printf("backend:  %s (threads %u, poller spins %u us)\n", st.backend, st.threads, st.spin_us);
	printf("clients:  %u, jobs waiting or running: %u\n", st.clients, st.queued);
	printf("weights:  %u sets, %s of %s\n", st.weight_sets, held, max);
	printf("jobs:     %" PRIu64 " done, %" PRIu64 " failed\n", st.jobs, st.job_errors);
	return 0;
}

/* Fetch every page of a list; returns the entries (malloc'd) and their count. */
static int fetch_list(struct moed_client *c, uint32_t type, size_t entry, void **out, uint32_t *n)
{
	static union {
		unsigned char b[MOED_MSG_MAX];
		struct moed_admin_list align;
	} buf;
	unsigned char *all = NULL;
	uint32_t got = 0;
	for (;;) {
		struct moed_admin_page pg = { .first = got };
		struct moed_admin_list list;
		size_t len;
		int r = moed_admin_request(c, type, &pg, sizeof(pg), buf.b, sizeof(buf.b), &len);
		if (r < 0)
			return r;
		memcpy(&list, buf.b, sizeof(list));
		if (len != sizeof(list) + list.count * entry)
			return -EBADMSG;
		unsigned char *more = realloc(all, (got + list.count) * entry + 1);
		if (!more)
			return -ENOMEM;
		all = more;
		memcpy(all + got * entry, buf.b + sizeof(list), list.count * entry);
		got += list.count;
		if (list.count == 0 || got >= list.total)
			break;
	}
	*out = all;
	*n = got;
	return 0;
}

static int cmd_clients(struct moed_client *c, bool json)
{
	struct moed_admin_client *v;
	uint32_t n;
	int r = fetch_list(c, MOED_MSG_ADMIN_CLIENTS, sizeof(*v), (void **)&v, &n);
	if (r < 0)
		return fail(c, "clients", r);
	if (json)
		printf("[");
	else
		printf("%-6s %-8s %-6s %-20s %10s %8s %9s %8s\n", "id", "pid", "uid", "name", "jobs",
		       "errors", "in flight", "weights");
	for (uint32_t i = 0; i < n; i++) {
		v[i].name[MOED_NAME_MAX - 1] = 0;
		if (json) {
			printf("%s{\"id\": %" PRIu64 ", \"pid\": %u, \"uid\": %u, \"name\": ", i ? ", " : "",
			       v[i].id, v[i].pid, v[i].uid);
			json_str(v[i].name);
			printf(", \"jobs\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"max_inflight\": %u, "
			       "\"arena_bytes\": %" PRIu64 ", \"weight_handles\": %u}",
			       v[i].jobs, v[i].job_errors, v[i].max_inflight, v[i].arena_size,
			       v[i].weight_handles);
		} else {
			printf("%-6" PRIu64 " %-8u %-6u %-20s %10" PRIu64 " %8" PRIu64 " %9u %8u\n", v[i].id,
			       v[i].pid, v[i].uid, v[i].name[0] ? v[i].name : "-", v[i].jobs,
			       v[i].job_errors, v[i].max_inflight, v[i].weight_handles);
		}
	}
	if (json)
		printf("]\n");
	free(v);
	return 0;
}

static int cmd_weights(struct moed_client *c, bool json)
{
	struct moed_admin_weights *v;
	uint32_t n;
	int r = fetch_list(c, MOED_MSG_ADMIN_WEIGHTS, sizeof(*v), (void **)&v, &n);
	if (r < 0)
		return fail(c, "weights", r);
	if (json)
		printf("[");
	else
		printf("%-24s %6s %6s %6s %5s %6s %12s %8s\n", "name", "E", "H", "I", "dtype", "gated",
		       "bytes", "holders");
	for (uint32_t i = 0; i < n; i++) {
		v[i].name[MOED_NAME_MAX - 1] = 0;
		const char *dt = v[i].shape.dtype < 3 ? dtype_names[v[i].shape.dtype] : "?";
		if (json) {
			printf("%s{\"name\": ", i ? ", " : "");
			json_str(v[i].name);
			printf(", \"experts\": %u, \"hidden\": %u, \"inter\": %u, \"dtype\": \"%s\", "
			       "\"gated\": %s, \"bytes\": %" PRIu64 ", \"holders\": %u, \"committed\": %s}",
			       v[i].shape.num_experts, v[i].shape.hidden_size, v[i].shape.inter_size, dt,
			       v[i].shape.gated ? "true" : "false", v[i].bytes, v[i].holders,
			       v[i].committed ? "true" : "false");
		} else {
			printf("%-24s %6u %6u %6u %5s %6s %12" PRIu64 " %8u%s\n", v[i].name,
			       v[i].shape.num_experts, v[i].shape.hidden_size, v[i].shape.inter_size, dt,
			       v[i].shape.gated ? "yes" : "no", v[i].bytes, v[i].holders,
			       v[i].committed ? "" : " (uploading)");
		}
	}
	if (json)
		printf("]\n");
	free(v);
	return 0;
}

static int cmd_stats(struct moed_client *c, bool json)
{
	struct moed_admin_stats st;
	size_t len;
	int r = moed_admin_request(c, MOED_MSG_ADMIN_STATS, NULL, 0, &st, sizeof(st), &len);
	if (r < 0 || len != sizeof(st))
		return fail(c, "stats", r < 0 ? r : -EBADMSG);
	if (json) {
		printf("{\"jobs\": %" PRIu64 ", \"job_errors\": %" PRIu64 ", \"moe_jobs\": %" PRIu64
		       ", \"samples\": %u, \"queue_us\": {\"p50\": %.3f, \"p99\": %.3f, \"p99.9\": %.3f}"
		       ", \"run_us\": {\"p50\": %.3f, \"p99\": %.3f, \"p99.9\": %.3f}}\n",
		       st.jobs, st.job_errors, st.moe_jobs, st.samples, st.queue_ns[0] / 1e3,
		       st.queue_ns[1] / 1e3, st.queue_ns[2] / 1e3, st.run_ns[0] / 1e3, st.run_ns[1] / 1e3,
		       st.run_ns[2] / 1e3);
		return 0;
	}
	printf("jobs: %" PRIu64 " done (%" PRIu64 " MoE), %" PRIu64 " failed\n", st.jobs, st.moe_jobs,
	       st.job_errors);
	printf("latency of the last %u MoE jobs (us)    p50       p99     p99.9\n", st.samples);
	printf("  queued (read to start)          %9.1f %9.1f %9.1f\n", st.queue_ns[0] / 1e3,
	       st.queue_ns[1] / 1e3, st.queue_ns[2] / 1e3);
	printf("  running                         %9.1f %9.1f %9.1f\n", st.run_ns[0] / 1e3,
	       st.run_ns[1] / 1e3, st.run_ns[2] / 1e3);
	return 0;
}

static int cmd_drain(struct moed_client *c, bool json)
{
	size_t len;
	int r = moed_admin_request(c, MOED_MSG_ADMIN_DRAIN, NULL, 0, NULL, 0, &len);
	if (r < 0)
		return fail(c, "drain", r);
	if (json)
		printf("{\"draining\": true}\n");
	else
		printf("draining: no new clients or jobs; submitted jobs are being finished\n");
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' }, { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct {
		const char *name;
		int (*run)(struct moed_client *, bool);
	} commands[] = { { "status", cmd_status }, { "clients", cmd_clients }, { "weights", cmd_weights },
			 { "stats", cmd_stats }, { "drain", cmd_drain } };
	const char *socket_path = NULL;
	bool json = false;
	int c;

	while ((c = getopt_long(argc, argv, "s:jhV", longopts, NULL)) != -1) {
		switch (c) {
		case 's': socket_path = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("moedctl %s (ABI %u)\n", moed_version(), moed_abi_version()); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "moedctl: expected one command (status, clients, weights, stats, drain)\n");
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name))
			continue;
		char err[256];
		struct moed_client *cl;
		if (moed_connect_admin(socket_path, err, sizeof(err), &cl) < 0) {
			fprintf(stderr, "moedctl: %s\n", err);
			return EXIT_UNREACHABLE;
		}
		int r = commands[i].run(cl, json);
		moed_close(cl);
		return r;
	}
	fprintf(stderr, "moedctl: unknown command '%s' (status, clients, weights, stats, drain)\n",
		argv[optind]);
	return EXIT_USAGE;
}
