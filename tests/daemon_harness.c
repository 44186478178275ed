/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_harness.h"
#include "helpers.h"

void test_daemon_start(struct test_daemon *d, const char *const *extra)
{
	memset(d, 0, sizeof(*d));
	d->listen_fd = -1;
	test_daemon_spawn(d, extra);
}

void test_daemon_spawn(struct test_daemon *d, const char *const *extra)
{
	const char *top = getenv("top_builddir");
	char bin[512];
	const char *argv[32];
	int n = 0;

	snprintf(bin, sizeof(bin), "%s/daemon/moed", top ? top : ".");
	snprintf(d->dir, sizeof(d->dir), "/tmp/moed-test.XXXXXX");
	if (!mkdtemp(d->dir)) {
		perror("mkdtemp");
		exit(TEST_EXIT_SETUP);
	}
	snprintf(d->socket, sizeof(d->socket), "%s/moed.sock", d->dir);
	argv[n++] = bin;
	argv[n++] = "--config"; /* whatever an installed moed.conf says does not apply */
	argv[n++] = "/dev/null";
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	argv[n++] = "--backend"; /* these tests are about the daemon: the CPU serves them */
	argv[n++] = "cpu";
	argv[n++] = "--threads";
	argv[n++] = "2";
	argv[n++] = "--log-level";
	argv[n++] = getenv("MOED_TEST_DAEMON_LOG") ? getenv("MOED_TEST_DAEMON_LOG") : "warning";
	for (; extra && *extra && n < 30; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;

	d->pid = fork();
	if (d->pid < 0) {
		perror("fork");
		exit(TEST_EXIT_SETUP);
	}
	if (d->pid == 0) {
		for (const char *const *e = d->env; e && *e; e++)
			putenv((char *)*e);
		if (d->listen_fd >= 0) { /* what systemd does for a socket unit */
			char pid[32];
			dup2(d->listen_fd, 3);
			snprintf(pid, sizeof(pid), "%d", (int)getpid());
			setenv("LISTEN_FDS", "1", 1);
			setenv("LISTEN_PID", pid, 1);
		}
		execv(bin, (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", bin, strerror(errno));
		_exit(TEST_EXIT_SETUP);
	}
	if (d->no_wait)
		return;
	for (int i = 0; i < 1000; i++) { /* up to 10 s: sanitizer builds start slowly */
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", d->socket);
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) == 0) {
			close(s); /* the daemon sees a hang-up before HELLO: harmless */
			return;
		}
		if (s >= 0)
			close(s);
		int status;
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			fprintf(stderr, "moed exited during start-up (status 0x%x)\n", status);
			exit(TEST_EXIT_SETUP);
		}
		usleep(10000);
	}
	fprintf(stderr, "moed did not start listening on %s\n", d->socket);
	kill(d->pid, SIGKILL);
	exit(TEST_EXIT_SETUP);
}

int test_daemon_stop(struct test_daemon *d)
{
	int status = 0;
	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	unlink(d->socket);
	rmdir(d->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int raw_request(int sock, uint32_t type, const void *body, size_t len, struct moed_reply *rep,
		void *reply_body, size_t cap)
{
	unsigned char buf[MOED_MSG_MAX + 64];
	struct moed_msg_hdr h = { type, (uint32_t)len };
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy(buf + sizeof(h), body, len);
	if (send(sock, buf, sizeof(h) + len, MSG_NOSIGNAL) < 0)
		return -errno;
	struct pollfd p = { .fd = sock, .events = POLLIN };
	if (poll(&p, 1, 10000) != 1)
		return -ETIMEDOUT;
	ssize_t n = recv(sock, buf, sizeof(buf), 0);
	if (n <= 0)
		return n == 0 ? -ECONNRESET : -errno;
	if ((size_t)n < sizeof(h) + sizeof(*rep))
		return -EBADMSG;
	memcpy(rep, buf + sizeof(h), sizeof(*rep));
	size_t blen = (size_t)n - sizeof(h) - sizeof(*rep);
	if (reply_body && blen)
		memcpy(reply_body, buf + sizeof(h) + sizeof(*rep), blen < cap ? blen : cap);
	return rep->status;
}

int raw_connect(struct raw_client *rc, const char *socket_path, uint32_t abi, struct moed_reply *rep)
{
	memset(rc, 0, sizeof(*rc));
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", socket_path);
	rc->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (connect(rc->sock, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -errno;

	struct moed_hello hello = { .abi_version = abi, .arena_size = 1 << 20 };
	unsigned char buf[1024];
	struct moed_msg_hdr h = { MOED_MSG_HELLO, sizeof(hello) };
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), &hello, sizeof(hello));
	if (send(rc->sock, buf, sizeof(h) + sizeof(hello), MSG_NOSIGNAL) < 0)
		return -errno;

	struct iovec iov = { buf, sizeof(buf) };
	union {
		char b[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	ssize_t n = recvmsg(rc->sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < (ssize_t)(sizeof(h) + sizeof(*rep)))
		return -EBADMSG;
	memcpy(rep, buf + sizeof(h), sizeof(*rep));
	if (rep->status < 0)
		return rep->status;
	struct moed_hello_reply hr;
	memcpy(&hr, buf + sizeof(h) + sizeof(*rep), sizeof(hr));
	int fds[3];
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	rc->doorbell = fds[1];
	rc->completion = fds[2];
	rc->region = mmap(NULL, hr.region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	close(fds[0]);
	char why[128];
	if (rc->region == MAP_FAILED ||
	    moed_region_check(rc->region, hr.region_size, &rc->hdr, why, sizeof(why)) < 0)
		return -EBADMSG;
	moed_region_attach_rings(rc->region, &rc->hdr, &rc->sq, &rc->cq);
	rc->arena = rc->region + rc->hdr.arena_offset;
	return 0;
}

void raw_close(struct raw_client *rc)
{
	if (rc->region && rc->region != MAP_FAILED)
		munmap(rc->region, rc->hdr.region_size);
	close(rc->sock);
	if (rc->doorbell > 0)
		close(rc->doorbell);
	if (rc->completion > 0)
		close(rc->completion);
}

void raw_submit(struct raw_client *rc, const struct moed_sqe *sqe)
{
	while (moed_ring_prod_reserve(&rc->sq, 1) != 1)
		usleep(100);
	memcpy((unsigned char *)moed_ring_slot(&rc->sq, 0) + 4, (const unsigned char *)sqe + 4,
	       sizeof(*sqe) - 4);
	moed_ring_prod_publish(&rc->sq, 1);
	if (moed_ring_prod_needs_wakeup(&rc->sq)) {
		uint64_t one = 1;
		if (write(rc->doorbell, &one, sizeof(one)) < 0)
			perror("doorbell");
	}
}

int raw_reap(struct raw_client *rc, struct moed_cqe *out, char *msg, size_t msg_len)
{
	for (int i = 0; i < 100000; i++) {
		if (moed_ring_cons_ready(&rc->cq, 1)) {
			memcpy(out, moed_ring_slot(&rc->cq, 0), sizeof(*out));
			if (msg) {
				const struct moed_msg *m = (const struct moed_msg *)(const void *)(
					rc->region + rc->hdr.msgs_offset);
				snprintf(msg, msg_len, "%s",
					 out->flags & MOED_CQE_F_MESSAGE ? m[rc->cq.pos & rc->cq.mask].text : "");
			}
			moed_ring_cons_release(&rc->cq, 1);
			return 0;
		}
		usleep(100);
	}
	return -ETIMEDOUT;
}
