/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "weights.h"

static const char *const tensor_names[] = { "w13", "w2" };

void moed_weights_init(struct moed_weight_registry *reg, const struct moed_backend_ops *ops,
		       struct moed_backend *backend, uint64_t max_bytes)
{
	memset(reg, 0, sizeof(*reg));
	pthread_mutex_init(&reg->lock, NULL);
	reg->ops = ops;
	reg->backend = backend;
	reg->max_bytes = max_bytes;
}

static void set_free(struct moed_weight_registry *reg, struct moed_weight_set *s)
{
	reg->ops->weights_free(reg->backend, &s->w);
	free(s);
}

void moed_weights_fini(struct moed_weight_registry *reg)
{
	while (reg->sets) {
		struct moed_weight_set *s = reg->sets;
		reg->sets = s->next;
		set_free(reg, s);
	}
	pthread_mutex_destroy(&reg->lock);
}

static struct moed_weight_set *find(struct moed_weight_registry *reg, const char *name)
{
	for (struct moed_weight_set *s = reg->sets; s; s = s->next)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

/* Another holder of a set (under the registry lock): only a committed one. */
static int hold_committed(struct moed_weight_set *s, struct moed_weight_set **out,
			  struct moed_error *err)
{
	if (!s->committed)
		return moed_error_set(err, -EBUSY, "weight set '%s' is still being uploaded", s->name);
	s->refs++;
	*out = s;
	return 0;
}

static uint64_t set_bytes(const struct moed_weights_shape *shape)
{
	return moed_weights_tensor_bytes(shape, MOED_TENSOR_W13) +
	       moed_weights_tensor_bytes(shape, MOED_TENSOR_W2);
}

static int check_shape(const struct moed_weights_shape *s, struct moed_error *err)
{
	if (s->num_experts < 1 || s->num_experts > 4096)
		return moed_error_set(err, -EINVAL, "num_experts %u is outside [1, 4096]", s->num_experts);
	if (s->hidden_size < 1 || s->hidden_size > MOED_JOB_MAX_HIDDEN)
		return moed_error_set(err, -EINVAL, "hidden_size %u is outside [1, %u]", s->hidden_size,
				      MOED_JOB_MAX_HIDDEN);
	if (s->inter_size < 1 || s->inter_size > (1u << 20))
		return moed_error_set(err, -EINVAL, "inter_size %u is outside [1, %u]", s->inter_size,
				      1u << 20);
	if (!moed_dtype_size(s->dtype))
		return moed_error_set(err, -EINVAL, "unknown weight dtype %u", s->dtype);
	if (s->gated > 1 || s->reserved[0] || s->reserved[1])
		return moed_error_set(err, -EINVAL, "gated must be 0 or 1 and reserved bytes zero");
	return 0;
}

static int check_name(const char *name, struct moed_error *err)
{
	size_t len = strnlen(name, MOED_NAME_MAX);
	if (len == 0 || len == MOED_NAME_MAX || !moed_utf8_valid(name, len))
		return moed_error_set(err, -EINVAL,
				      "weight-set name must be 1 to %u bytes of UTF-8", MOED_NAME_MAX - 1);
	return 0;
}

int moed_weights_register(struct moed_weight_registry *reg, const char *name,
			  const struct moed_weights_shape *shape, const void *creator,
			  uint64_t creator_budget, struct moed_weight_set **out, bool *created,
			  struct moed_error *err)
{
	int r;
	if ((r = check_name(name, err)) || (r = check_shape(shape, err)))
		return r;

	pthread_mutex_lock(&reg->lock);
	struct moed_weight_set *s = find(reg, name);
	if (s) {
		if (memcmp(&s->w.shape, shape, sizeof(*shape)))
			r = moed_error_set(err, -EEXIST,
					   "weight set '%s' exists with another shape (E %u, H %u, I %u)",
					   name, s->w.shape.num_experts, s->w.shape.hidden_size,
					   s->w.shape.inter_size);
		else if ((r = hold_committed(s, out, err)) == 0)
			*created = false;
		pthread_mutex_unlock(&reg->lock);
		return r;
	}

	const uint64_t bytes = set_bytes(shape);
	if (bytes > creator_budget) {
		pthread_mutex_unlock(&reg->lock);
		return moed_error_set(err, -EDQUOT,
				      "weight set '%s' needs %llu bytes; this client may create %llu more",
				      name, (unsigned long long)bytes, (unsigned long long)creator_budget);
	}
	if (bytes > reg->max_bytes - reg->bytes) {
		r = moed_error_set(err, -ENOSPC,
				   "weight set '%s' needs %llu bytes; the daemon holds %llu of its %llu limit",
				   name, (unsigned long long)bytes, (unsigned long long)reg->bytes,
				   (unsigned long long)reg->max_bytes);
		pthread_mutex_unlock(&reg->lock);
		return r;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		pthread_mutex_unlock(&reg->lock);
		return moed_error_set(err, -ENOMEM, "out of memory");
	}
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->w.shape = *shape;
	if ((r = reg->ops->weights_alloc(reg->backend, &s->w, err)) < 0) {
		free(s);
		pthread_mutex_unlock(&reg->lock);
		return r;
	}
	s->refs = 1;
	s->creator = creator;
	s->next = reg->sets;
	reg->sets = s;
	reg->bytes += bytes;
	pthread_mutex_unlock(&reg->lock);
	*out = s;
	*created = true;
	return 0;
}

int moed_weights_attach(struct moed_weight_registry *reg, const char *name,
			struct moed_weight_set **out, struct moed_error *err)
{
	int r = check_name(name, err);
	if (r)
		return r;
	pthread_mutex_lock(&reg->lock);
	struct moed_weight_set *s = find(reg, name);
	if (!s)
		r = moed_error_set(err, -ENOENT, "no weight set named '%s'", name);
	else
		r = hold_committed(s, out, err);
	pthread_mutex_unlock(&reg->lock);
	return r;
}

int moed_weights_upload(struct moed_weight_registry *reg, struct moed_weight_set *s,
			const void *creator, unsigned tensor, uint64_t tensor_offset,
			const void *src, uint64_t len, struct moed_error *err)
{
	if (tensor > MOED_TENSOR_W2)
		return moed_error_set(err, -EINVAL, "unknown tensor %u (0 = w13, 1 = w2)", tensor);
	/* Only the creator writes, and only before commit: no lock needed for the data,
	 * since nobody else can reach an uncommitted set. */
	if (s->committed || s->creator != creator)
		return moed_error_set(err, -EPERM, "weight set '%s' is not open for upload by this client",
				      s->name);
	const uint64_t size = tensor == MOED_TENSOR_W13 ? s->w.w13_bytes : s->w.w2_bytes;
	if (tensor_offset != s->filled[tensor])
		return moed_error_set(err, -EINVAL,
				      "upload of %s must continue at byte %llu, not %llu",
				      tensor_names[tensor], (unsigned long long)s->filled[tensor],
				      (unsigned long long)tensor_offset);
	if (len > size - tensor_offset)
		return moed_error_set(err, -EINVAL, "upload of %llu bytes runs past the end of %s (%llu bytes)",
				      (unsigned long long)len, tensor_names[tensor],
				      (unsigned long long)size);
	int r = reg->ops->weights_write(reg->backend, &s->w, tensor, tensor_offset, src, len, err);
	if (r == 0)
		s->filled[tensor] += len;
	return r;
}

int moed_weights_commit(struct moed_weight_registry *reg, struct moed_weight_set *s,
			const void *creator, struct moed_error *err)
{
	if (s->committed || s->creator != creator)
		return moed_error_set(err, -EPERM, "weight set '%s' is not open for upload by this client",
				      s->name);
	if (s->filled[0] != s->w.w13_bytes || s->filled[1] != s->w.w2_bytes)
		return moed_error_set(err, -EINVAL,
				      "weight set '%s' is incomplete: w13 has %llu of %llu bytes, w2 %llu of %llu",
				      s->name, (unsigned long long)s->filled[0],
				      (unsigned long long)s->w.w13_bytes, (unsigned long long)s->filled[1],
				      (unsigned long long)s->w.w2_bytes);
	pthread_mutex_lock(&reg->lock);
	s->committed = true;
	s->creator = NULL;
	pthread_mutex_unlock(&reg->lock);
	return 0;
}

int moed_weights_use(struct moed_weight_registry *reg, struct moed_weight_set *s,
		     struct moed_error *err)
{
	int r = 0;
	pthread_mutex_lock(&reg->lock);
	if (s->committed)
		s->refs++;
	else
		r = moed_error_set(err, -EBUSY, "weight set '%s' is not committed yet", s->name);
	pthread_mutex_unlock(&reg->lock);
	return r;
}

void moed_weights_put(struct moed_weight_registry *reg, struct moed_weight_set *s)
{
	pthread_mutex_lock(&reg->lock);
	if (--s->refs) {
		pthread_mutex_unlock(&reg->lock);
		return;
	}
	for (struct moed_weight_set **p = &reg->sets; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	reg->bytes -= set_bytes(&s->w.shape);
	pthread_mutex_unlock(&reg->lock);
	set_free(reg, s);
}
