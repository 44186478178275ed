/* SPDX-License-Identifier: MIT */
/* Connecting, the control socket, the signature probe and the arena. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "export.h"
#include "socket_path.h"

#define CONTROL_TIMEOUT_MS 30000

MOED_EXPORT const char *moed_version(void)
{
	return PACKAGE_VERSION;
}

MOED_EXPORT unsigned moed_abi_version(void)
{
	return MOED_ABI_VERSION;
}

int client_fail(struct moed_client *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	return code;
}

MOED_EXPORT const char *moed_client_error(const struct moed_client *c)
{
	return c ? c->error : "no client";
}

void client_ring_doorbell(struct moed_client *c)
{
	if (moed_ring_prod_needs_wakeup(&c->sq)) {
		const uint64_t one = 1;
		ssize_t r = write(c->doorbell_fd, &one, sizeof(one));
		(void)r;
	}
}

/* Receive one packet with up to three fds; waits at most CONTROL_TIMEOUT_MS. */
static ssize_t recv_packet(int sock, void *buf, size_t cap, int *fds, unsigned *nfds)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	int r = poll(&p, 1, CONTROL_TIMEOUT_MS);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;

	struct iovec iov = { buf, cap };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	*nfds = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (unsigned i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (fds && *nfds < 3)
				fds[(*nfds)++] = fd;
			else
				close(fd); /* nothing we asked for */
		}
	}
	return n;
}

static int request_fds(struct moed_client *c, uint32_t type, const void *body, size_t body_len,
		       void *reply, size_t cap, size_t *len, int *fds, unsigned *nfds)
{
	static _Thread_local union {
		unsigned char bytes[MOED_MSG_MAX];
		struct moed_msg_hdr hdr;
	} msg;
	unsigned got_fds = 0;

	if (c->hungup)
		return client_fail(c, -ECONNRESET, "the daemon has closed the connection");
	msg.hdr.type = type;
	msg.hdr.len = (uint32_t)body_len;
	if (body_len)
		memcpy(msg.bytes + sizeof(msg.hdr), body, body_len);
	if (send(c->sock, msg.bytes, sizeof(msg.hdr) + body_len, MSG_NOSIGNAL) < 0) {
		int e = errno;
		/* A daemon that refused us (say, EACCES) wrote why before it hung up. */
		struct pollfd p = { .fd = c->sock, .events = POLLIN };
		if ((e != EPIPE && e != ECONNRESET) || poll(&p, 1, 0) != 1) {
			c->hungup = e == EPIPE || e == ECONNRESET;
			return client_fail(c, -e, "cannot send to the daemon: %s", strerror(e));
		}
	}
	ssize_t n = recv_packet(c->sock, msg.bytes, sizeof(msg.bytes), fds, &got_fds);
	if (nfds)
		*nfds = got_fds;
	if (n == 0) {
		c->hungup = true;
		return client_fail(c, -ECONNRESET, "the daemon closed the connection");
	}
	if (n < 0)
		return client_fail(c, (int)n, "no reply from the daemon: %s", strerror((int)-n));
	const size_t head = sizeof(struct moed_msg_hdr) + sizeof(struct moed_reply);
	if ((size_t)n < head || msg.hdr.type != MOED_MSG_REPLY ||
	    msg.hdr.len != (size_t)n - sizeof(struct moed_msg_hdr))
		return client_fail(c, -EBADMSG, "malformed reply from the daemon");
	struct moed_reply rep;
	memcpy(&rep, msg.bytes + sizeof(struct moed_msg_hdr), sizeof(rep));
	if (rep.status < 0) {
		rep.message[sizeof(rep.message) - 1] = 0;
		return client_fail(c, rep.status, "%s", rep.message);
	}
	size_t blen = (size_t)n - head;
	if (blen > cap)
		return client_fail(c, -EBADMSG, "reply of %zu bytes, expected at most %zu", blen, cap);
	if (blen)
		memcpy(reply, msg.bytes + head, blen);
	if (len)
		*len = blen;
	return 0;
}

int client_request(struct moed_client *c, uint32_t type, const void *body, size_t body_len,
		   void *reply, size_t cap, size_t *len)
{
	return request_fds(c, type, body, body_len, reply, cap, len, NULL, NULL);
}

static void report(const struct moed_connect_options *o, const char *msg)
{
	if (o && o->error && o->error_len)
		snprintf(o->error, o->error_len, "%s", msg);
}

static int map_region(struct moed_client *c, int memfd, uint64_t size)
{
	struct stat st;
	if (fstat(memfd, &st) < 0 || (uint64_t)st.st_size != size)
		return client_fail(c, -EBADMSG, "the region fd is not the %llu bytes announced",
				   (unsigned long long)size);
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (m == MAP_FAILED)
		return client_fail(c, -errno, "cannot map the region: %s", strerror(errno));
	c->region = m;
	c->hdr.region_size = size;
	char why[160];
	int r = moed_region_check(c->region, size, &c->hdr, why, sizeof(why));
	if (r < 0)
		return client_fail(c, r, "the daemon's region is unusable: %s", why);
	moed_region_attach_rings(c->region, &c->hdr, &c->sq, &c->cq);
	c->msgs = (const struct moed_msg *)(const void *)(c->region + c->hdr.msgs_offset);
	c->arena = c->region + c->hdr.arena_offset;
	arena_alloc_init(&c->alloc, c->hdr.arena_size);
	return 0;
}

/* A client with its socket connected (no handshake yet); *c set even on failure. */
static int open_socket(const char *socket_path, struct moed_client **out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char path[sizeof(addr.sun_path)];

	struct moed_client *c = calloc(1, sizeof(*c));
	*out = c;
	if (!c)
		return -ENOMEM;
	c->sock = c->doorbell_fd = c->completion_fd = -1;
	if (socket_path) {
		if (strlen(socket_path) >= sizeof(path))
			return client_fail(c, -ENAMETOOLONG, "socket path is too long");
		snprintf(path, sizeof(path), "%s", socket_path);
	} else if (moed_default_socket_path(path, sizeof(path)) < 0) {
		return client_fail(c, -ENAMETOOLONG, "socket path is too long");
	}
	memcpy(addr.sun_path, path, sizeof(path));
	c->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->sock < 0 || connect(c->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return client_fail(c, -errno, "cannot connect to %s: %s", path, strerror(errno));
	return 0;
}

MOED_EXPORT int moed_connect(const char *socket_path, const struct moed_connect_options *opts,
			     struct moed_client **out)
{
	struct moed_client *c;
	int r;

	if (!out)
		return -EINVAL;
	if ((r = open_socket(socket_path, &c)) < 0)
		goto fail;
	c->spin_us = opts && opts->spin_us ? opts->spin_us : 20;

	struct moed_hello hello = {
		.abi_version = MOED_ABI_VERSION,
		.sq_entries = opts ? opts->sq_entries : 0,
		.arena_size = opts ? opts->arena_size : 0,
	};
	if (opts && opts->name)
		snprintf(hello.name, sizeof(hello.name), "%s", opts->name);
	struct moed_hello_reply hr;
	int fds[3];
	unsigned nfds = 0;
	size_t len = 0;
	r = request_fds(c, MOED_MSG_HELLO, &hello, sizeof(hello), &hr, sizeof(hr), &len, fds, &nfds);
	if (r == 0 && (len != sizeof(hr) || nfds != 3))
		r = client_fail(c, -EBADMSG, "the daemon's handshake is malformed");
	if (r < 0) {
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		goto fail;
	}
	c->doorbell_fd = fds[1];
	c->completion_fd = fds[2];
	r = map_region(c, fds[0], hr.region_size);
	close(fds[0]);
	if (r < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	report(opts, c ? c->error : "out of memory");
	moed_close(c);
	return r;
}

MOED_EXPORT int moed_connect_admin(const char *socket_path, char *error, size_t error_len,
				   struct moed_client **out)
{
	struct moed_client *c;
	if (!out)
		return -EINVAL;
	int r = open_socket(socket_path, &c);
	if (r < 0) {
		if (error && error_len)
			snprintf(error, error_len, "%s", c ? c->error : "out of memory");
		moed_close(c);
		return r;
	}
	*out = c;
	return 0;
}

MOED_EXPORT int moed_admin_request(struct moed_client *c, uint32_t type, const void *body,
				   size_t body_len, void *reply, size_t cap, size_t *reply_len)
{
	if (!c || type < MOED_MSG_ADMIN_STATUS || type > MOED_MSG_ADMIN_DRAIN ||
	    body_len > MOED_MSG_MAX - sizeof(struct moed_msg_hdr))
		return -EINVAL;
	return client_request(c, type, body, body_len, reply, cap, reply_len);
}

MOED_EXPORT void moed_close(struct moed_client *c)
{
	if (!c)
		return;
	if (c->region)
		munmap(c->region, c->hdr.region_size);
	arena_alloc_fini(&c->alloc);
	if (c->sock >= 0)
		close(c->sock);
	if (c->doorbell_fd >= 0)
		close(c->doorbell_fd);
	if (c->completion_fd >= 0)
		close(c->completion_fd);
	free(c);
}

MOED_EXPORT const struct moed_signature *moed_signature(struct moed_client *c)
{
	static _Thread_local union {
		unsigned char bytes[MOED_MSG_MAX];
		struct moed_signature_wire align;
	} buf;
	size_t len;

	if (!c)
		return NULL;
	if (c->have_signature)
		return &c->signature;
	if (client_request(c, MOED_MSG_SIGNATURE, NULL, 0, buf.bytes, sizeof(buf.bytes), &len) < 0)
		return NULL;
	struct moed_signature_wire w;
	if (len < sizeof(w)) {
		client_fail(c, -EBADMSG, "malformed signature");
		return NULL;
	}
	memcpy(&w, buf.bytes, sizeof(w));
	if (w.kwarg_count > MOED_SIG_MAX_KWARGS ||
	    len != sizeof(w) + w.kwarg_count * sizeof(struct moed_kwarg_spec_wire)) {
		client_fail(c, -EBADMSG, "malformed signature");
		return NULL;
	}
	memset(&c->signature, 0, sizeof(c->signature));
	memcpy(c->signature.backend, w.backend, sizeof(w.backend));
	c->signature.backend[sizeof(w.backend) - 1] = 0;
	c->signature.caps = w.caps;
	c->signature.dtypes = w.dtypes;
	c->signature.activations = w.activations;
	c->signature.kwarg_count = w.kwarg_count;
	memcpy(c->signature.kwargs, buf.bytes + sizeof(w), len - sizeof(w));
	for (uint32_t i = 0; i < w.kwarg_count; i++) {
		struct moed_kwarg_spec_wire *k = &c->signature.kwargs[i];
		k->name[sizeof(k->name) - 1] = 0;
		k->choices[sizeof(k->choices) - 1] = 0;
		k->help[sizeof(k->help) - 1] = 0;
	}
	c->have_signature = true;
	return &c->signature;
}

MOED_EXPORT int moed_supports_no_combine(struct moed_client *c)
{
	const struct moed_signature *sig = moed_signature(c);
	if (!sig)
		return c ? -EIO : -EINVAL;
	return !!(sig->caps & MOED_CAP_NO_COMBINE);
}

MOED_EXPORT void *moed_arena_alloc(struct moed_client *c, size_t size)
{
	if (!c)
		return NULL;
	uint64_t off = arena_alloc_take(&c->alloc, size);
	return off == UINT64_MAX ? NULL : c->arena + off;
}

MOED_EXPORT void moed_arena_free(struct moed_client *c, void *p)
{
	if (!c || !p)
		return;
	unsigned char *b = p;
	if (b >= c->arena && b < c->arena + c->hdr.arena_size)
		arena_alloc_give(&c->alloc, (uint64_t)(b - c->arena));
}

MOED_EXPORT void *moed_arena_base(const struct moed_client *c, size_t *size)
{
	if (!c)
		return NULL;
	if (size)
		*size = c->hdr.arena_size;
	return c->arena;
}
