/* SPDX-License-Identifier: MIT */
/*
 * For integration tests: start the real moed binary on a private socket and stop it;
 * and a "raw" client that speaks the protocol by hand, so that tests can send what
 * libmoed never would.
 */
#ifndef MOED_TESTS_DAEMON_HARNESS_H
#define MOED_TESTS_DAEMON_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "moed/proto.h"
#include "region.h"
#include "ring.h"

struct test_daemon {
	pid_t pid;
	char dir[64];
	char socket[108];
	const char *const *env; /* NAME=VALUE strings added to the daemon's environment */
	int listen_fd;          /* >= 0: passed as systemd's socket (LISTEN_FDS=1) */
	bool no_wait;           /* do not wait for the socket (for expected failures) */
};

/* Start daemon/moed with extra arguments (NULL-terminated); exits 99 on failure. Fields
 * env, listen_fd and no_wait are honoured when set before the call (zero them first, or
 * use test_daemon_start, which does). */
void test_daemon_spawn(struct test_daemon *d, const char *const *extra_args);
void test_daemon_start(struct test_daemon *d, const char *const *extra_args);
/* SIGTERM it and return its exit status (or -1 if it died of a signal). */
int test_daemon_stop(struct test_daemon *d);

struct raw_client {
	int sock, doorbell, completion;
	unsigned char *region;
	struct moed_region_header hdr;
	struct moed_ring sq, cq;
	unsigned char *arena;
};

/* Send one control message; receive the reply into rep (and body). Returns status. */
int raw_request(int sock, uint32_t type, const void *body, size_t len, struct moed_reply *rep,
		void *reply_body, size_t cap);
/* Connect and do the handshake by hand; returns the HELLO status. */
int raw_connect(struct raw_client *rc, const char *socket, uint32_t abi, struct moed_reply *rep);
void raw_close(struct raw_client *rc);
/* Publish one entry exactly as given (but for seq). */
void raw_submit(struct raw_client *rc, const struct moed_sqe *sqe);
/* Wait (bounded, ~10 s) for one completion; 0 or -ETIMEDOUT. */
int raw_reap(struct raw_client *rc, struct moed_cqe *out, char *msg, size_t msg_len);

#endif
