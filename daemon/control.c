/* SPDX-License-Identifier: MIT */
/* The control protocol (moed/proto.h), daemon side: one request in, one reply out. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "poller.h"

struct reply {
	union {
		unsigned char bytes[MOED_MSG_MAX];
		struct moed_msg_hdr hdr; /* for alignment */
	} u;
	size_t body; /* bytes after hdr + struct moed_reply */
	int fds[3];
	unsigned nfds;
};

static struct moed_reply *reply_head(struct reply *r)
{
	return (struct moed_reply *)(void *)(r->u.bytes + sizeof(struct moed_msg_hdr));
}

static void *reply_body(struct reply *r)
{
	return r->u.bytes + sizeof(struct moed_msg_hdr) + sizeof(struct moed_reply);
}

static int send_reply(int sock, struct reply *r, int status, const struct moed_error *err)
{
	struct moed_reply *head = reply_head(r);
	memset(head, 0, sizeof(*head));
	head->status = status;
	if (status < 0) {
		snprintf(head->message, sizeof(head->message), "%s", err->msg);
		r->body = 0;
		r->nfds = 0;
	}
	r->u.hdr.type = MOED_MSG_REPLY;
	r->u.hdr.len = (uint32_t)(sizeof(struct moed_reply) + r->body);

	struct iovec iov = { r->u.bytes, sizeof(struct moed_msg_hdr) + r->u.hdr.len };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (r->nfds) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * r->nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * r->nfds);
		memcpy(CMSG_DATA(c), r->fds, sizeof(int) * r->nfds);
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -errno : 0;
}

/*
 * The backend's context for a new client, made now rather than at its first job: on a GPU
 * it makes a stream and pins the arena, tens of milliseconds that the first job would
 * otherwise wait. Failing here is not the client's doing: its first job tries again
 * (runner.c) and carries the error.
 */
static void open_backend_context(struct moed_daemon *d, struct moed_session *s)
{
	struct moed_error err = { "" };
	if (moed_session_open_backend(s, d->ops, d->backend, &err) < 0)
		log_info("client %llu: no backend context yet (%s); its first job tries again",
			 (unsigned long long)s->id, err.msg);
}

static int do_hello(struct moed_daemon *d, struct moed_session *s, const void *body,
		    struct reply *r, struct moed_error *err)
{
	struct moed_hello h;
	memcpy(&h, body, sizeof(h));
	if (h.abi_version != MOED_ABI_VERSION)
		return moed_error_set(err, -EPROTONOSUPPORT,
				      "client speaks ABI version %u, this daemon %u: use a matching libmoed",
				      h.abi_version, MOED_ABI_VERSION);
	if (h.reserved || h.cq_entries)
		return moed_error_set(err, -EINVAL, "reserved HELLO fields must be zero");
	if (s->ready)
		return moed_error_set(err, -EALREADY, "this connection has said HELLO already");
	if (d->draining)
		return moed_error_set(err, -ESHUTDOWN, "the daemon is draining: it takes no new clients");

	uint32_t sq = h.sq_entries ? h.sq_entries : d->opt.sq_entries;
	if (sq < MOED_RING_MIN_ENTRIES || (sq & (sq - 1)))
		return moed_error_set(err, -EINVAL, "sq_entries %u is not a power of two of at least 2", sq);
	if (sq > d->opt.sq_entries)
		sq = d->opt.sq_entries;
	uint64_t arena = h.arena_size ? h.arena_size : d->opt.arena_default;
	if (arena > d->opt.arena_max)
		return moed_error_set(err, -E2BIG, "an arena of %llu bytes exceeds this daemon's limit of %llu",
				      (unsigned long long)arena, (unsigned long long)d->opt.arena_max);
	h.name[MOED_NAME_MAX - 1] = 0;
	snprintf(s->name, sizeof(s->name), "%s", h.name);

	int rc = moed_session_setup(s, sq, arena, err);
	if (rc < 0)
		return rc;
	open_backend_context(d, s);
	struct moed_hello_reply *hr = reply_body(r);
	memset(hr, 0, sizeof(*hr));
	hr->region_size = s->hdr.region_size;
	hr->max_inflight = s->hdr.sq.entries;
	snprintf(hr->backend, sizeof(hr->backend), "%s", d->ops->name);
	r->body = sizeof(*hr);
	r->fds[0] = s->memfd;
	r->fds[1] = d->doorbell_fd;
	r->fds[2] = s->completion_fd;
	r->nfds = 3;
	return 0;
}

static void spec_to_wire(const struct moed_kwarg_spec *sp, struct moed_kwarg_spec_wire *w)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "%s", sp->name);
	w->type = sp->type;
	w->min = sp->min;
	w->max = sp->max;
	w->dmin = sp->dmin;
	w->dmax = sp->dmax;
	w->max_len = sp->max_len;
	size_t o = 0;
	for (const char *const *c = sp->choices; c && *c && o < sizeof(w->choices); c++)
		o += (size_t)snprintf(w->choices + o, sizeof(w->choices) - o, "%s%s",
				      c == sp->choices ? "" : ",", *c);
	snprintf(w->help, sizeof(w->help), "%s", sp->help ? sp->help : "");
}

static int do_signature(struct moed_daemon *d, struct reply *r)
{
	const struct moed_kwargs_schema *schema = d->ops->schema(d->backend);
	struct moed_signature_wire *sig = reply_body(r);
	memset(sig, 0, sizeof(*sig));
	snprintf(sig->backend, sizeof(sig->backend), "%s", d->ops->name);
	sig->caps = d->ops->caps(d->backend);
	sig->dtypes = d->ops->dtypes(d->backend);
	sig->activations = d->ops->activations(d->backend);
	sig->kwarg_count = schema->count < MOED_SIG_MAX_KWARGS ? (uint32_t)schema->count : MOED_SIG_MAX_KWARGS;
	struct moed_kwarg_spec_wire *specs = (struct moed_kwarg_spec_wire *)(sig + 1);
	for (uint32_t i = 0; i < sig->kwarg_count; i++)
		spec_to_wire(&schema->specs[i], &specs[i]);
	r->body = sizeof(*sig) + sig->kwarg_count * sizeof(*specs);
	return 0;
}

static bool name_terminated(const char *name)
{
	return memchr(name, 0, MOED_NAME_MAX) != NULL;
}

/* Put a set into the session's handle table: the handle, or -EMFILE. */
static int add_handle(struct moed_session *s, struct moed_weight_set *w, struct moed_error *err)
{
	int handle = -1;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < MOED_SESSION_MAX_WEIGHTS; i++)
		if (!s->weights[i]) {
			s->weights[i] = w;
			handle = (int)i + 1;
			break;
		}
	pthread_mutex_unlock(&s->lock);
	if (handle < 0)
		return moed_error_set(err, -EMFILE, "this client holds %u weight sets already",
				      MOED_SESSION_MAX_WEIGHTS);
	return handle;
}

static int do_weights(struct moed_daemon *d, struct moed_session *s, uint32_t type,
		      const void *body, struct reply *r, struct moed_error *err)
{
	struct moed_weights_reply *wr = reply_body(r);
	struct moed_weight_set *w = NULL;
	bool created = false;
	int rc;

	memset(wr, 0, sizeof(*wr));
	if (type == MOED_MSG_WEIGHTS_REGISTER) {
		struct moed_weights_register req;
		memcpy(&req, body, sizeof(req));
		if (!name_terminated(req.name))
			return moed_error_set(err, -EINVAL, "weight-set name is not NUL-terminated");
		const uint64_t budget = d->opt.client_weights_max > s->created_bytes
						? d->opt.client_weights_max - s->created_bytes : 0;
		rc = moed_weights_register(&d->weights, req.name, &req.shape, s, budget, &w, &created, err);
	} else {
		struct moed_weights_attach req;
		memcpy(&req, body, sizeof(req));
		if (!name_terminated(req.name))
			return moed_error_set(err, -EINVAL, "weight-set name is not NUL-terminated");
		rc = moed_weights_attach(&d->weights, req.name, &w, err);
	}
	if (rc < 0)
		return rc;
	int handle = add_handle(s, w, err);
	if (handle < 0) {
		moed_weights_put(&d->weights, w);
		return handle;
	}
	if (created) {
		pthread_mutex_lock(&s->lock);
		s->created[handle - 1] = true;
		s->created_bytes += w->w.w13_bytes + w->w.w2_bytes;
		pthread_mutex_unlock(&s->lock);
	}
	wr->weights_id = (uint32_t)handle;
	wr->must_upload = created;
	wr->shape = w->w.shape;
	r->body = sizeof(*wr);
	log_debug("client %llu (pid %d) %s weight set '%s' as handle %d",
		  (unsigned long long)s->id, (int)s->pid, created ? "created" : "attached", w->name, handle);
	return 0;
}

/* The set behind a handle, for the control thread (which alone changes the table). */
static struct moed_weight_set *handle_set(struct moed_session *s, uint32_t handle,
					  struct moed_error *err)
{
	struct moed_weight_set *w = NULL;
	pthread_mutex_lock(&s->lock);
	if (handle >= 1 && handle <= MOED_SESSION_MAX_WEIGHTS)
		w = s->weights[handle - 1];
	pthread_mutex_unlock(&s->lock);
	if (!w)
		moed_error_set(err, -EBADF, "weights handle %u is not held by this client", handle);
	return w;
}

static int do_upload(struct moed_daemon *d, struct moed_session *s, const void *body,
		     struct moed_error *err)
{
	struct moed_weights_upload up;
	memcpy(&up, body, sizeof(up));
	struct moed_weight_set *w = handle_set(s, up.weights_id, err);
	if (!w)
		return -EBADF;
	if (up.arena_offset > s->arena.size || up.length > s->arena.size - up.arena_offset)
		return moed_error_set(err, -EINVAL, "upload source [%llu, +%llu) lies outside the %llu-byte arena",
				      (unsigned long long)up.arena_offset, (unsigned long long)up.length,
				      (unsigned long long)s->arena.size);
	return moed_weights_upload(&d->weights, w, s, up.tensor, up.tensor_offset,
				   s->arena.base + up.arena_offset, up.length, err);
}

static int do_ref(struct moed_daemon *d, struct moed_session *s, uint32_t type, const void *body,
		  struct moed_error *err)
{
	struct moed_weights_ref ref;
	memcpy(&ref, body, sizeof(ref));
	if (ref.reserved)
		return moed_error_set(err, -EINVAL, "reserved field must be zero");
	struct moed_weight_set *w = handle_set(s, ref.weights_id, err);
	if (!w)
		return -EBADF;
	if (type == MOED_MSG_WEIGHTS_COMMIT)
		return moed_weights_commit(&d->weights, w, s, err);

	pthread_mutex_lock(&s->lock);
	s->weights[ref.weights_id - 1] = NULL;
	if (s->created[ref.weights_id - 1]) {
		s->created[ref.weights_id - 1] = false;
		s->created_bytes -= w->w.w13_bytes + w->w.w2_bytes;
	}
	pthread_mutex_unlock(&s->lock);
	moed_weights_put(&d->weights, w);
	return 0;
}

static size_t body_size(uint32_t type)
{
	switch (type) {
	case MOED_MSG_HELLO: return sizeof(struct moed_hello);
	case MOED_MSG_SIGNATURE: return 0;
	case MOED_MSG_WEIGHTS_REGISTER: return sizeof(struct moed_weights_register);
	case MOED_MSG_WEIGHTS_ATTACH: return sizeof(struct moed_weights_attach);
	case MOED_MSG_WEIGHTS_UPLOAD: return sizeof(struct moed_weights_upload);
	case MOED_MSG_WEIGHTS_COMMIT:
	case MOED_MSG_WEIGHTS_RELEASE: return sizeof(struct moed_weights_ref);
	case MOED_MSG_ADMIN_STATUS:
	case MOED_MSG_ADMIN_STATS:
	case MOED_MSG_ADMIN_DRAIN: return 0;
	case MOED_MSG_ADMIN_CLIENTS:
	case MOED_MSG_ADMIN_WEIGHTS: return sizeof(struct moed_admin_page);
	default: return SIZE_MAX;
	}
}

bool moed_control_handle(struct moed_daemon *d, struct moed_session *s)
{
	static struct reply r;
	static union {
		unsigned char bytes[MOED_MSG_MAX];
		struct moed_msg_hdr hdr;
	} in;
	struct moed_error err = { "" };
	int rc;

	ssize_t n = recv(s->sock, in.bytes, sizeof(in.bytes), MSG_TRUNC | MSG_DONTWAIT);
	if (n == 0)
		return false; /* hang-up */
	if (n < 0)
		return errno == EAGAIN || errno == EINTR;

	r.body = 0;
	r.nfds = 0;
	const size_t got = (size_t)n;
	bool keep = true;
	if (got > sizeof(in.bytes)) {
		rc = moed_error_set(&err, -EMSGSIZE, "message of %zu bytes exceeds the limit of %u", got,
				    MOED_MSG_MAX);
	} else if (got < sizeof(struct moed_msg_hdr) || in.hdr.len != got - sizeof(struct moed_msg_hdr)) {
		rc = moed_error_set(&err, -EPROTO, "malformed message: %zu bytes, header says %u + 8",
				    got, got >= 8 ? in.hdr.len : 0);
	} else if (body_size(in.hdr.type) == SIZE_MAX) {
		rc = moed_error_set(&err, -EPROTO, "unknown message type %u", in.hdr.type);
	} else if (in.hdr.len != body_size(in.hdr.type)) {
		rc = moed_error_set(&err, -EPROTO, "message type %u needs a %zu-byte body, got %u",
				    in.hdr.type, body_size(in.hdr.type), in.hdr.len);
	} else if (s->refuse_status) {
		rc = moed_error_set(&err, s->refuse_status, "%s", s->refuse_msg);
		keep = false;
	} else if (in.hdr.type >= MOED_MSG_ADMIN_STATUS && in.hdr.type <= MOED_MSG_ADMIN_DRAIN) {
		const size_t cap = MOED_MSG_MAX - sizeof(struct moed_msg_hdr) - sizeof(struct moed_reply);
		rc = moed_admin_handle(d, in.hdr.type, in.bytes + sizeof(struct moed_msg_hdr),
				       reply_body(&r), cap, &err);
		if (rc >= 0) {
			r.body = (size_t)rc;
			rc = 0;
		}
	} else if (in.hdr.type != MOED_MSG_HELLO && !s->ready) {
		rc = moed_error_set(&err, -EPROTO, "say HELLO first");
	} else {
		const void *body = in.bytes + sizeof(struct moed_msg_hdr);
		switch (in.hdr.type) {
		case MOED_MSG_HELLO:
			rc = do_hello(d, s, body, &r, &err);
			if (rc == -EPROTONOSUPPORT)
				keep = false;
			break;
		case MOED_MSG_SIGNATURE: rc = do_signature(d, &r); break;
		case MOED_MSG_WEIGHTS_REGISTER:
		case MOED_MSG_WEIGHTS_ATTACH: rc = do_weights(d, s, in.hdr.type, body, &r, &err); break;
		case MOED_MSG_WEIGHTS_UPLOAD: rc = do_upload(d, s, body, &err); break;
		default: rc = do_ref(d, s, in.hdr.type, body, &err); break;
		}
	}
	if (rc < 0)
		log_debug("client %llu (pid %d): %s", (unsigned long long)s->id, (int)s->pid, err.msg);
	if (send_reply(s->sock, &r, rc, &err) < 0)
		return false; /* a client that does not read its replies is gone */
	if (rc == 0 && in.hdr.type == MOED_MSG_HELLO) {
		s->ready = true;
		log_info("client %llu connected: pid %d uid %d '%s', %u in flight, %llu-byte arena",
			 (unsigned long long)s->id, (int)s->pid, (int)s->uid, s->name, s->hdr.sq.entries,
			 (unsigned long long)s->hdr.arena_size);
		moed_poller_add(d->poller, s);
		moed_daemon_report_status(d);
	}
	return keep;
}
