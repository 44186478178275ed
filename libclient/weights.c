/* SPDX-License-Identifier: MIT */
/* Weight sets: register (and upload through the arena), attach, release. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "client.h"
#include "export.h"

static int name_ok(struct moed_client *c, const char *name, char out[MOED_NAME_MAX])
{
	if (!name || !*name || strlen(name) >= MOED_NAME_MAX)
		return client_fail(c, -EINVAL, "weight-set name must be 1 to %u bytes", MOED_NAME_MAX - 1);
	memset(out, 0, MOED_NAME_MAX);
	memcpy(out, name, strlen(name));
	return 0;
}

static void remember(struct moed_client *c, const struct moed_weights_reply *wr)
{
	if (wr->weights_id >= 1 && wr->weights_id <= CLIENT_MAX_HANDLES) {
		c->handle_known[wr->weights_id - 1] = true;
		c->handle_shape[wr->weights_id - 1] = wr->shape;
	}
}

static uint64_t tensor_bytes(const struct moed_weights_shape *s, unsigned tensor)
{
	const uint64_t d = s->dtype == MOED_DTYPE_F32 ? 4 : 2;
	const uint64_t rows = tensor == MOED_TENSOR_W13 && s->gated ? 2 * (uint64_t)s->inter_size
				: tensor == MOED_TENSOR_W13 ? s->inter_size : s->hidden_size;
	const uint64_t cols = tensor == MOED_TENSOR_W13 ? s->hidden_size : s->inter_size;
	return s->num_experts * rows * cols * d;
}

/* Stream one tensor through a staging span of the arena. */
static int upload(struct moed_client *c, uint32_t handle, unsigned tensor, const void *src,
		  uint64_t size, unsigned char *stage, uint64_t stage_size)
{
	const unsigned char *p = src;
	for (uint64_t at = 0; at < size;) {
		uint64_t n = size - at < stage_size ? size - at : stage_size;
		memcpy(stage, p + at, n);
		const struct moed_weights_upload up = {
			.weights_id = handle, .tensor = tensor, .tensor_offset = at,
			.arena_offset = (uint64_t)(stage - c->arena), .length = n,
		};
		int r = client_request(c, MOED_MSG_WEIGHTS_UPLOAD, &up, sizeof(up), NULL, 0, NULL);
		if (r < 0)
			return r;
		at += n;
	}
	return 0;
}

MOED_EXPORT int moed_weights_register(struct moed_client *c, const char *name,
				      const struct moed_weights_shape *shape, const void *w13,
				      const void *w2)
{
	struct moed_weights_register req;
	struct moed_weights_reply wr;
	size_t len;
	int r;

	if (!c || !shape)
		return -EINVAL;
	if ((r = name_ok(c, name, req.name)) < 0)
		return r;
	req.shape = *shape;
	if ((r = client_request(c, MOED_MSG_WEIGHTS_REGISTER, &req, sizeof(req), &wr, sizeof(wr), &len)) < 0)
		return r;
	if (len != sizeof(wr))
		return client_fail(c, -EBADMSG, "malformed reply to REGISTER");
	remember(c, &wr);
	if (!wr.must_upload)
		return (int)wr.weights_id; /* attached to the committed set of that name */

	if (!w13 || !w2) {
		r = client_fail(c, -EINVAL, "w13 and w2 are needed to create weight set '%s'", name);
		goto undo;
	}
	/* Stage through the largest span the arena can spare, from a quarter of it down. */
	uint64_t stage_size = c->hdr.arena_size / 4;
	unsigned char *stage = NULL;
	while (stage_size >= 4096 && !(stage = moed_arena_alloc(c, stage_size)))
		stage_size /= 2;
	if (!stage) {
		r = client_fail(c, -ENOMEM, "no room in the arena to stage weight uploads");
		goto undo;
	}
	r = upload(c, wr.weights_id, MOED_TENSOR_W13, w13, tensor_bytes(shape, MOED_TENSOR_W13),
		   stage, stage_size);
	if (r == 0)
		r = upload(c, wr.weights_id, MOED_TENSOR_W2, w2, tensor_bytes(shape, MOED_TENSOR_W2),
			   stage, stage_size);
	moed_arena_free(c, stage);
	if (r == 0) {
		const struct moed_weights_ref ref = { .weights_id = wr.weights_id };
		r = client_request(c, MOED_MSG_WEIGHTS_COMMIT, &ref, sizeof(ref), NULL, 0, NULL);
	}
	if (r == 0)
		return (int)wr.weights_id;
undo: {
	char why[MOED_MSG_SIZE];
	memcpy(why, c->error, sizeof(why));
	moed_weights_release(c, wr.weights_id);
	memcpy(c->error, why, sizeof(why));
	return r;
}
}

MOED_EXPORT int moed_weights_attach(struct moed_client *c, const char *name,
				    struct moed_weights_shape *shape)
{
	struct moed_weights_attach req;
	struct moed_weights_reply wr;
	size_t len;
	int r;

	if (!c)
		return -EINVAL;
	if ((r = name_ok(c, name, req.name)) < 0)
		return r;
	if ((r = client_request(c, MOED_MSG_WEIGHTS_ATTACH, &req, sizeof(req), &wr, sizeof(wr), &len)) < 0)
		return r;
	if (len != sizeof(wr))
		return client_fail(c, -EBADMSG, "malformed reply to ATTACH");
	remember(c, &wr);
	if (shape)
		*shape = wr.shape;
	return (int)wr.weights_id;
}

MOED_EXPORT int moed_weights_release(struct moed_client *c, uint32_t handle)
{
	if (!c)
		return -EINVAL;
	const struct moed_weights_ref ref = { .weights_id = handle };
	int r = client_request(c, MOED_MSG_WEIGHTS_RELEASE, &ref, sizeof(ref), NULL, 0, NULL);
	if (r == 0 && handle >= 1 && handle <= CLIENT_MAX_HANDLES)
		c->handle_known[handle - 1] = false;
	return r;
}
