/* SPDX-License-Identifier: MIT */
/* libmoed's private state and helpers shared by its files. */
#ifndef MOED_LIBCLIENT_CLIENT_H
#define MOED_LIBCLIENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena_alloc.h"
#include "moed/moed.h"
#include "region.h"
#include "ring.h"

#define CLIENT_MAX_HANDLES 64

struct moed_client {
	int sock;
	int doorbell_fd;
	int completion_fd;
	unsigned char *region;
	struct moed_region_header hdr;
	struct moed_ring sq; /* the client produces */
	struct moed_ring cq; /* the client consumes */
	const struct moed_msg *msgs;
	unsigned char *arena;
	struct arena_alloc alloc;
	uint32_t spin_us;
	unsigned inflight;
	bool hungup;
	bool have_signature;
	struct moed_signature signature;
	bool handle_known[CLIENT_MAX_HANDLES];
	struct moed_weights_shape handle_shape[CLIENT_MAX_HANDLES];
	char error[MOED_MSG_SIZE];
};

/* Record why a call failed and return `code`. */
__attribute__((format(printf, 3, 4))) int client_fail(struct moed_client *c, int code,
						       const char *fmt, ...);

/*
 * One request and its reply on the control socket. The reply body (status 0) is copied
 * to reply (at most cap bytes; its size in *len if len is not NULL). Returns the
 * daemon's status, with its message in c->error, or a local negative errno.
 */
int client_request(struct moed_client *c, uint32_t type, const void *body, size_t body_len,
		   void *reply, size_t cap, size_t *len);

/* Ring the daemon's doorbell if its poller is asleep. */
void client_ring_doorbell(struct moed_client *c);

#endif
