/* SPDX-License-Identifier: MIT */
/*
 * moed under systemd, with this test playing systemd: the notification socket
 * (READY, STATUS, WATCHDOG, RELOADING/READY, STOPPING), a watchdog that goes on being fed
 * while a long job runs (the runner's, not the poller's), and socket activation
 * (LISTEN_FDS).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "check_run.h"
#include "helpers.h"
#include "moe_ref.h"
#include "moed/moed.h"

/*
 * The notification socket systemd would give the service, read by a thread of its own as
 * systemd reads it: promptly, so that the daemon never blocks on a full queue.
 */
#define MAX_MESSAGES 4096
struct notify {
	int fd;
	char path[108];
	char env[128];
	pthread_t reader;
	pthread_mutex_t lock;
	char msg[MAX_MESSAGES][256];
	double at[MAX_MESSAGES];
	unsigned count, cursor; /* cursor: the next message notify_expect looks at */
};

static void *notify_reader(void *arg)
{
	struct notify *n = arg;
	char buf[256]; /* every message moed sends is shorter */
	for (;;) {
		ssize_t len = recv(n->fd, buf, sizeof(buf) - 1, 0);
		if (len <= 0)
			return NULL;
		buf[len] = 0;
		pthread_mutex_lock(&n->lock);
		if (n->count < MAX_MESSAGES) {
			snprintf(n->msg[n->count], sizeof(n->msg[0]), "%s", buf);
			n->at[n->count++] = now_s();
		}
		pthread_mutex_unlock(&n->lock);
	}
}

static void notify_open(struct notify *n, const char *dir)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	memset(n, 0, sizeof(*n));
	snprintf(n->path, sizeof(n->path), "%s/notify", dir);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", n->path);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(n->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	snprintf(n->env, sizeof(n->env), "NOTIFY_SOCKET=%s", n->path);
	pthread_mutex_init(&n->lock, NULL);
	ck_assert_int_eq(pthread_create(&n->reader, NULL, notify_reader, n), 0);
}

/* The next message from the cursor on that contains `want`; fails after timeout_s. */
static const char *notify_expect(struct notify *n, const char *want, double timeout_s)
{
	const double end = now_s() + timeout_s;
	for (;;) {
		pthread_mutex_lock(&n->lock);
		while (n->cursor < n->count) {
			const char *m = n->msg[n->cursor++];
			if (strstr(m, want)) {
				pthread_mutex_unlock(&n->lock);
				return m;
			}
		}
		pthread_mutex_unlock(&n->lock);
		ck_assert_msg(now_s() < end, "no '%s' from the daemon within %.1f s", want, timeout_s);
		usleep(2000);
	}
}

/* When the watchdog was fed, between t0 and t1: the longest gap without a ping. */
static double longest_watchdog_gap(struct notify *n, double t0, double t1)
{
	double gap = 0, last = t0;
	pthread_mutex_lock(&n->lock);
	for (unsigned i = 0; i < n->count; i++) {
		if (!strstr(n->msg[i], "WATCHDOG=1") || n->at[i] < t0)
			continue;
		if (n->at[i] > t1)
			break;
		gap = n->at[i] - last > gap ? n->at[i] - last : gap;
		last = n->at[i];
	}
	pthread_mutex_unlock(&n->lock);
	return t1 - last > gap ? t1 - last : gap;
}

static struct test_daemon d;
static struct notify notif; /* large: not on the stack */

static void start_with_notify(struct notify *nt, const char *watchdog_usec, const char *const *args)
{
	static char wd[64];
	static const char *env[4];
	memset(&d, 0, sizeof(d));
	d.listen_fd = -1;
	snprintf(d.dir, sizeof(d.dir), "/tmp/moed-sd.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(d.dir));
	notify_open(nt, d.dir);
	rmdir(d.dir); /* the harness makes its own directory; keep only our socket's */
	snprintf(wd, sizeof(wd), "WATCHDOG_USEC=%s", watchdog_usec);
	env[0] = nt->env;
	env[1] = wd;
	env[2] = NULL;
	d.env = env;
	test_daemon_spawn(&d, args);
}

START_TEST(notify_sequence)
{
	start_with_notify(&notif, "400000", NULL);
	notify_expect(&notif, "READY=1", 10);
	ck_assert_ptr_nonnull(strstr(notify_expect(&notif, "STATUS=", 5), "0 clients, 0 jobs waiting or running, backend cpu"));
	notify_expect(&notif, "WATCHDOG=1", 2);
	notify_expect(&notif, "WATCHDOG=1", 2); /* fed every ~200 ms while idle */

	char err[256];
	struct moed_connect_options o = { .error = err, .error_len = sizeof(err) };
	struct moed_client *c;
	ck_assert_int_eq(moed_connect(d.socket, &o, &c), 0);
	ck_assert_ptr_nonnull(strstr(notify_expect(&notif, "STATUS=1 clients", 5), "backend cpu"));

	kill(d.pid, SIGHUP);
	const char *m = notify_expect(&notif, "RELOADING=1", 5);
	ck_assert_ptr_nonnull(strstr(m, "MONOTONIC_USEC="));
	notify_expect(&notif, "READY=1", 5);

	moed_close(c);
	ck_assert_ptr_nonnull(notify_expect(&notif, "STATUS=0 clients", 5));
	kill(d.pid, SIGTERM);
	notify_expect(&notif, "STOPPING=1", 10);
	int status;
	ck_assert_int_eq(waitpid(d.pid, &status, 0), d.pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	d.pid = 0;
	unlink(notif.path);
	test_daemon_stop(&d);
}
END_TEST

/* Time one job of m tokens on a weight set big enough to keep a CPU busy. */
static double run_job(struct moed_client *c, int handle, const struct ref_problem *p, uint32_t m,
		      void *x, int32_t *ids, float *tw, void *out)
{
	const struct moed_moe_job job = { .weights = (uint32_t)handle, .dtype = MOED_DTYPE_F32,
					  .num_tokens = m, .topk = p->k, .hidden = x,
					  .topk_ids = ids, .topk_weights = tw, .output = out };
	struct moed_completion done;
	double t0 = now_s();
	ck_assert_int_eq(moed_submit_moe(c, &job, 1), 1);
	ck_assert_int_eq(moed_wait(c, &done, 1, 600000), 1);
	ck_assert_msg(done.status == 0, "%s", done.message);
	return now_s() - t0;
}

START_TEST(watchdog_fed_through_a_long_job)
{
	const char *const args[] = { "--threads", "1", "--arena-max", "256M", NULL };
	start_with_notify(&notif, "200000", args); /* a ping every 100 ms */
	notify_expect(&notif, "READY=1", 10);

	uint64_t rng = test_seed();
	struct ref_problem p = { .e = 4, .h = 768, .i = 768, .k = 2, .m = 16384, .gated = true };
	ref_problem_fill(&p, &rng);
	char err[256];
	struct moed_connect_options o = { .arena_size = 160 << 20, .error = err, .error_len = sizeof(err) };
	struct moed_client *c;
	ck_assert_msg(moed_connect(d.socket, &o, &c) == 0, "%s", err);
	const struct moed_weights_shape shape = { .num_experts = p.e, .hidden_size = p.h,
						  .inter_size = p.i, .dtype = MOED_DTYPE_F32, .gated = 1 };
	int h = moed_weights_register(c, "big", &shape, p.w13, p.w2);
	ck_assert_msg(h > 0, "%s", moed_client_error(c));
	void *x = moed_arena_alloc(c, (size_t)p.m * p.h * 4), *out = moed_arena_alloc(c, (size_t)p.m * p.h * 4);
	int32_t *ids = moed_arena_alloc(c, (size_t)p.m * p.k * 4);
	float *tw = moed_arena_alloc(c, (size_t)p.m * p.k * 4);
	memcpy(x, p.x, (size_t)p.m * p.h * 4);
	memcpy(ids, p.ids, (size_t)p.m * p.k * 4);
	memcpy(tw, p.tw, (size_t)p.m * p.k * 4);

	/* Size the job from a small one so that it runs about 1.5 s on this build. */
	double small = run_job(c, h, &p, 64, x, ids, tw, out);
	uint32_t m = (uint32_t)(64 * 1.5 / (small > 1e-4 ? small : 1e-4));
	m = m < 64 ? 64 : m > p.m ? p.m : m;

	notify_expect(&notif, "WATCHDOG=1", 2);
	double t0 = now_s();
	double took = run_job(c, h, &p, m, x, ids, tw, out); /* the runner is inside it */
	double t1 = now_s();
	double gap = longest_watchdog_gap(&notif, t0, t1);
	if (took < 0.6) { /* too short to tell pings going on from a stall */
		fprintf(stderr, "the longest job took only %.2f s: watchdog not judged\n", took);
		moed_close(c);
		ref_problem_free(&p);
		test_daemon_stop(&d);
		return;
	}
	/* Pings every 100 ms; a loaded 2-vCPU machine may delay one or two. */
	ck_assert_msg(gap < 0.45, "a %.2f s job left a longest gap of %.2f s between watchdog pings",
		      took, gap);
	moed_close(c);
	ref_problem_free(&p);
	unlink(notif.path);
	ck_assert_int_eq(test_daemon_stop(&d), 0);
}
END_TEST

static int listening_socket(const char *path, int type)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	if (type != SOCK_DGRAM)
		ck_assert_int_eq(listen(fd, 16), 0);
	return fd;
}

START_TEST(socket_activation)
{
	char dir[] = "/tmp/moed-act.XXXXXX", path[108];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/activated.sock", dir);
	memset(&d, 0, sizeof(d));
	d.listen_fd = listening_socket(path, SOCK_SEQPACKET);
	d.no_wait = true;
	test_daemon_spawn(&d, NULL);
	close(d.listen_fd);

	char err[256];
	struct moed_connect_options o = { .error = err, .error_len = sizeof(err) };
	struct moed_client *c;
	ck_assert_msg(moed_connect(path, &o, &c) == 0, "%s", err);
	uint64_t ud = 77;
	struct moed_completion done;
	ck_assert_int_eq(moed_submit_nop(c, &ud, 1), 1);
	ck_assert_int_eq(moed_wait(c, &done, 1, 10000), 1);
	ck_assert_uint_eq(done.user_data, 77);
	moed_close(c);
	struct stat st;
	ck_assert_int_ne(stat(d.socket, &st), 0); /* it bound nothing of its own */
	ck_assert_int_eq(test_daemon_stop(&d), 0);
	ck_assert_int_eq(stat(path, &st), 0); /* and left systemd's socket file alone */
	unlink(path);

	/* Something else than a SOCK_SEQPACKET listener: refused at start with a reason. */
	memset(&d, 0, sizeof(d));
	d.listen_fd = listening_socket(path, SOCK_DGRAM);
	d.no_wait = true;
	test_daemon_spawn(&d, NULL);
	int status;
	ck_assert_int_eq(waitpid(d.pid, &status, 0), d.pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	close(d.listen_fd);
	unlink(path);
	rmdir(d.dir);
	rmdir(dir);
}
END_TEST

int main(void)
{
#ifndef HAVE_LIBSYSTEMD
	return TEST_EXIT_SKIP; /* built without libsystemd: the daemon neither notifies nor activates */
#endif
	Suite *s = suite_create("systemd");
	TCase *tc = tcase_create("systemd");

	tcase_add_test(tc, notify_sequence);
	tcase_add_test(tc, watchdog_fed_through_a_long_job);
	tcase_add_test(tc, socket_activation);
	tcase_set_timeout(tc, 600);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
