/* SPDX-License-Identifier: MIT */
/* The client side of the kwargs wire format: an append-only encoder. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moed/kwargs.h"
#include "export.h"
#include "kwargs_rules.h"

struct moed_kwargs_builder {
	unsigned char *buf; /* header, then entries; header kept current */
	size_t cap;
};

static struct moed_kwargs_header *header(const struct moed_kwargs_builder *b)
{
	return (struct moed_kwargs_header *)(void *)b->buf;
}

MOED_EXPORT struct moed_kwargs_builder *moed_kwargs_builder_new(void)
{
	struct moed_kwargs_builder *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->cap = 256;
	b->buf = calloc(1, b->cap);
	if (!b->buf) {
		free(b);
		return NULL;
	}
	moed_kwargs_builder_reset(b);
	return b;
}

MOED_EXPORT void moed_kwargs_builder_free(struct moed_kwargs_builder *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b);
}

MOED_EXPORT void moed_kwargs_builder_reset(struct moed_kwargs_builder *b)
{
	if (!b)
		return;
	*header(b) = (struct moed_kwargs_header){
		.magic = MOED_KWARGS_MAGIC,
		.version = MOED_KWARGS_VERSION,
		.size = sizeof(struct moed_kwargs_header),
	};
}

static bool has_key(const struct moed_kwargs_builder *b, const char *key, size_t len)
{
	const struct moed_kwargs_header *h = header(b);
	uint32_t at = sizeof(*h);

	for (unsigned i = 0; i < h->count; i++) {
		struct moed_kwarg_entry e;
		memcpy(&e, b->buf + at, sizeof(e));
		if (e.key_len == len && !memcmp(b->buf + at + sizeof(e), key, len))
			return true;
		at += sizeof(e) + e.key_len + e.value_len;
		at += moed_kwargs_pad(at);
	}
	return false;
}

static int add(struct moed_kwargs_builder *b, const char *key, unsigned type,
	       const void *value, size_t value_len)
{
	if (!b || !key || (value_len && !value))
		return -EINVAL;

	size_t key_len = strlen(key);
	switch (moed_kwarg_key_check(key, key_len)) {
	case MOED_KW_OK: break;
	case MOED_KW_KEY_TOO_LONG: return -ENAMETOOLONG;
	default: return -EINVAL;
	}
	if (type == MOED_KWARG_STRING && value_len > MOED_KWARG_STRING_MAX)
		return -E2BIG;
	if (type == MOED_KWARG_INT64_ARRAY && value_len / 8 > MOED_KWARG_ARRAY_MAX)
		return -E2BIG;
	if (moed_kwarg_value_check(type, value, value_len) != MOED_KW_OK)
		return -EINVAL;
	if (has_key(b, key, key_len))
		return -EEXIST;

	struct moed_kwargs_header *h = header(b);
	if (h->count >= MOED_KWARGS_MAX_COUNT)
		return -E2BIG;
	size_t used = sizeof(struct moed_kwarg_entry) + key_len + value_len;
	used += moed_kwargs_pad((uint32_t)used);
	if (h->size + used > MOED_KWARGS_MAX_SIZE)
		return -E2BIG;

	if (h->size + used > b->cap) {
		size_t cap = b->cap;
		while (cap < h->size + used)
			cap *= 2;
		unsigned char *nb = realloc(b->buf, cap);
		if (!nb)
			return -ENOMEM;
		b->buf = nb;
		b->cap = cap;
		h = header(b);
	}

	unsigned char *at = b->buf + h->size;
	const struct moed_kwarg_entry e = {
		.type = (uint8_t)type,
		.key_len = (uint8_t)key_len,
		.value_len = (uint32_t)value_len,
	};
	memset(at, 0, used);
	memcpy(at, &e, sizeof(e));
	memcpy(at + sizeof(e), key, key_len);
	if (value_len)
		memcpy(at + sizeof(e) + key_len, value, value_len);
	h->size += (uint32_t)used;
	h->count++;
	return 0;
}

MOED_EXPORT int moed_kwargs_add_bool(struct moed_kwargs_builder *b, const char *key, bool value)
{
	const uint8_t v = value ? 1 : 0;
	return add(b, key, MOED_KWARG_BOOL, &v, 1);
}

MOED_EXPORT int moed_kwargs_add_int(struct moed_kwargs_builder *b, const char *key, int64_t value)
{
	return add(b, key, MOED_KWARG_INT64, &value, sizeof(value));
}

MOED_EXPORT int moed_kwargs_add_double(struct moed_kwargs_builder *b, const char *key,
				       double value)
{
	return add(b, key, MOED_KWARG_DOUBLE, &value, sizeof(value));
}

MOED_EXPORT int moed_kwargs_add_string(struct moed_kwargs_builder *b, const char *key,
				       const char *value)
{
	if (!value)
		return -EINVAL;
	return add(b, key, MOED_KWARG_STRING, value, strlen(value));
}

MOED_EXPORT int moed_kwargs_add_int_array(struct moed_kwargs_builder *b, const char *key,
					  const int64_t *values, size_t count)
{
	if (count > MOED_KWARG_ARRAY_MAX)
		return -E2BIG;
	return add(b, key, MOED_KWARG_INT64_ARRAY, values, count * sizeof(int64_t));
}

MOED_EXPORT unsigned moed_kwargs_count(const struct moed_kwargs_builder *b)
{
	return b ? header(b)->count : 0;
}

MOED_EXPORT const void *moed_kwargs_data(const struct moed_kwargs_builder *b, size_t *size)
{
	if (!b)
		return NULL;
	if (size)
		*size = header(b)->size;
	return b->buf;
}
