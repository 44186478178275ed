/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kwargs_parse.h"

/* Names a client may not set through kwargs: they are fields of struct moed_sqe. */
static const char *const descriptor_fields[] = {
	"activation", "apply_router_weight_on_input", "dtype", "hidden_size", "hidden_states",
	"no_combine", "num_tokens", "output", "routed_scaling_factor", "topk", "top_k",
	"topk_ids", "topk_weights", "user_data", "weights", "weights_id", "w1", "w13", "w2",
	"is_gated",
};

int64_t moed_kwarg_array_at(const struct moed_kwarg *kw, uint32_t i)
{
	int64_t v;
	memcpy(&v, kw->v.arr.ptr + (size_t)i * sizeof(v), sizeof(v));
	return v;
}

const struct moed_kwarg *moed_kwargs_find(const struct moed_kwargs *kws, const char *key)
{
	for (uint32_t i = 0; i < kws->count; i++)
		if (!strcmp(kws->items[i].key, key))
			return &kws->items[i];
	return NULL;
}

/* A key that failed its checks, printable: bytes outside printable ASCII as \xNN. */
static const char *escape_key(char *out, size_t cap, const unsigned char *key, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		if (key[i] >= 0x20 && key[i] < 0x7f && key[i] != '\\')
			out[o++] = (char)key[i];
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", key[i]);
	}
	out[o] = 0;
	return out;
}

#define FAIL(st, ...) (moed_error_set(err, -EINVAL, __VA_ARGS__), (st))

enum moed_kwargs_status moed_kwargs_parse(const void *blob, size_t len, struct moed_kwargs *out,
					  struct moed_error *err)
{
	const unsigned char *b = blob;
	struct moed_kwargs_header h;

	out->count = 0;
	if (len == 0)
		return MOED_KW_OK;
	if (len > MOED_KWARGS_MAX_SIZE)
		return FAIL(MOED_KW_TOO_LARGE, "kwargs blob of %zu bytes exceeds the limit of %u",
			    len, MOED_KWARGS_MAX_SIZE);
	if (len < sizeof(h))
		return FAIL(MOED_KW_TRUNCATED,
			    "kwargs blob of %zu bytes is shorter than its %zu-byte header", len,
			    sizeof(h));
	memcpy(&h, b, sizeof(h));
	if (h.magic != MOED_KWARGS_MAGIC)
		return FAIL(MOED_KW_BAD_MAGIC, "kwargs blob has magic 0x%08x, expected 0x%08x",
			    h.magic, MOED_KWARGS_MAGIC);
	if (h.version != MOED_KWARGS_VERSION)
		return FAIL(MOED_KW_BAD_VERSION, "kwargs blob version %u, this daemon reads %u",
			    h.version, MOED_KWARGS_VERSION);
	if (h.reserved)
		return FAIL(MOED_KW_RESERVED, "kwargs header reserved field is not zero");
	if (h.size > MOED_KWARGS_MAX_SIZE)
		return FAIL(MOED_KW_TOO_LARGE, "kwargs blob declares %u bytes, over the limit of %u",
			    h.size, MOED_KWARGS_MAX_SIZE);
	if (h.size > len)
		return FAIL(MOED_KW_TRUNCATED, "kwargs blob declares %u bytes but only %zu were given",
			    h.size, len);
	if (h.size < sizeof(h) || h.size % MOED_KWARGS_ALIGN || h.size != len)
		return FAIL(MOED_KW_SIZE_MISMATCH,
			    "kwargs blob declares %u bytes, given %zu (sizes must agree and be "
			    "multiples of %u)",
			    h.size, len, MOED_KWARGS_ALIGN);
	if (h.count > MOED_KWARGS_MAX_COUNT)
		return FAIL(MOED_KW_TOO_MANY, "kwargs blob declares %u entries, at most %u allowed",
			    h.count, MOED_KWARGS_MAX_COUNT);

	const uint32_t size = h.size;
	uint32_t at = sizeof(h);
	for (uint32_t i = 0; i < h.count; i++) {
		struct moed_kwarg_entry e;
		struct moed_kwarg *kw = &out->items[i];
		char shown[4 * MOED_KWARG_KEY_MAX + 8];

		if (at == size)
			return FAIL(MOED_KW_COUNT_MISMATCH,
				    "kwargs blob declares %u entries but ends after %u", h.count, i);
		if (size - at < sizeof(e))
			return FAIL(MOED_KW_PAST_END, "kwargs entry %u header runs past the end", i);
		memcpy(&e, b + at, sizeof(e));
		if (e.reserved)
			return FAIL(MOED_KW_RESERVED, "kwargs entry %u reserved field is not zero", i);

		const uint32_t key_at = at + (uint32_t)sizeof(e);
		if (e.key_len > size - key_at)
			return FAIL(MOED_KW_PAST_END, "kwargs entry %u key of %u bytes runs past the end",
				    i, e.key_len);
		switch (moed_kwarg_key_check((const char *)b + key_at, e.key_len)) {
		case MOED_KW_OK: break;
		case MOED_KW_KEY_TOO_LONG:
			return FAIL(MOED_KW_KEY_TOO_LONG,
				    "kwarg key '%s' is %u bytes, longer than the limit of %u",
				    escape_key(shown, sizeof(shown), b + key_at, e.key_len), e.key_len,
				    MOED_KWARG_KEY_MAX);
		default:
			return FAIL(MOED_KW_BAD_KEY, "kwargs entry %u key '%s' is empty or not valid UTF-8",
				    i, escape_key(shown, sizeof(shown), b + key_at, e.key_len));
		}
		memcpy(kw->key, b + key_at, e.key_len);
		kw->key[e.key_len] = 0;

		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(out->items[j].key, kw->key))
				return FAIL(MOED_KW_DUPLICATE_KEY, "kwarg '%s' appears more than once",
					    kw->key);
		if (e.type < MOED_KWARG_BOOL || e.type > MOED_KWARG_INT64_ARRAY)
			return FAIL(MOED_KW_BAD_TYPE, "kwarg '%s' has unknown type tag %u", kw->key,
				    e.type);

		const uint32_t val_at = key_at + e.key_len;
		uint32_t val_end, next;
		if (__builtin_add_overflow(val_at, e.value_len, &val_end) ||
		    __builtin_add_overflow(val_end, moed_kwargs_pad(val_end), &next))
			return FAIL(MOED_KW_OVERFLOW, "kwarg '%s' value length %u overflows the blob offset",
				    kw->key, e.value_len);
		if (next > size)
			return FAIL(MOED_KW_PAST_END, "kwarg '%s' value of %u bytes runs past the end",
				    kw->key, e.value_len);
		if (moed_kwarg_value_check(e.type, b + val_at, e.value_len) != MOED_KW_OK)
			return FAIL(MOED_KW_BAD_VALUE, "kwarg '%s' is not a well-formed %s (%u bytes)",
				    kw->key, moed_kwarg_type_name(e.type), e.value_len);
		for (uint32_t k = val_end; k < next; k++)
			if (b[k])
				return FAIL(MOED_KW_RESERVED, "kwarg '%s' padding is not zero", kw->key);

		kw->type = e.type;
		const unsigned char *v = b + val_at;
		switch (e.type) {
		case MOED_KWARG_BOOL: kw->v.b = v[0] != 0; break;
		case MOED_KWARG_INT64: memcpy(&kw->v.i, v, 8); break;
		case MOED_KWARG_DOUBLE: memcpy(&kw->v.d, v, 8); break;
		case MOED_KWARG_STRING:
			kw->v.str.ptr = (const char *)v;
			kw->v.str.len = e.value_len;
			break;
		case MOED_KWARG_INT64_ARRAY:
			kw->v.arr.ptr = v;
			kw->v.arr.count = e.value_len / 8;
			break;
		}
		out->count = i + 1;
		at = next;
	}
	if (at != size)
		return FAIL(MOED_KW_COUNT_MISMATCH,
			    "kwargs blob declares %u entries but has %u more bytes after them",
			    h.count, size - at);
	return MOED_KW_OK;
}

static const struct moed_kwarg_spec *find_spec(const struct moed_kwargs_schema *schema,
					       const char *key)
{
	for (size_t i = 0; i < schema->count; i++)
		if (!strcmp(schema->specs[i].name, key))
			return &schema->specs[i];
	return NULL;
}

static void list_names(char *out, size_t cap, const struct moed_kwargs_schema *schema)
{
	size_t o = 0;
	out[0] = 0;
	for (size_t i = 0; i < schema->count && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", schema->specs[i].name);
	if (!schema->count)
		snprintf(out, cap, "none");
}

static enum moed_kwargs_status check_value(const struct moed_kwarg *kw,
					   const struct moed_kwarg_spec *spec,
					   struct moed_error *err)
{
	const uint32_t max_len = spec->max_len;

	switch (kw->type) {
	case MOED_KWARG_INT64:
		if (kw->v.i < spec->min || kw->v.i > spec->max)
			return FAIL(MOED_KW_OUT_OF_RANGE,
				    "kwarg '%s' = %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
				    kw->key, kw->v.i, spec->min, spec->max);
		break;
	case MOED_KWARG_DOUBLE:
		if (!(kw->v.d >= spec->dmin && kw->v.d <= spec->dmax))
			return FAIL(MOED_KW_OUT_OF_RANGE, "kwarg '%s' = %g is out of range [%g, %g]",
				    kw->key, kw->v.d, spec->dmin, spec->dmax);
		break;
	case MOED_KWARG_STRING:
		if (max_len && kw->v.str.len > max_len)
			return FAIL(MOED_KW_OUT_OF_RANGE, "kwarg '%s' is %u bytes long, at most %u",
				    kw->key, kw->v.str.len, max_len);
		if (spec->choices) {
			char names[160];
			size_t o = 0;
			for (const char *const *c = spec->choices; *c; c++) {
				if (strlen(*c) == kw->v.str.len && !memcmp(*c, kw->v.str.ptr, kw->v.str.len))
					return MOED_KW_OK;
				if (o < sizeof(names))
					o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s",
							      c == spec->choices ? "" : ", ", *c);
			}
			return FAIL(MOED_KW_OUT_OF_RANGE, "kwarg '%s' = \"%.*s\" is not one of: %s",
				    kw->key, (int)(kw->v.str.len > 40 ? 40 : kw->v.str.len),
				    kw->v.str.ptr, names);
		}
		break;
	case MOED_KWARG_INT64_ARRAY:
		if (max_len && kw->v.arr.count > max_len)
			return FAIL(MOED_KW_OUT_OF_RANGE, "kwarg '%s' has %u elements, at most %u",
				    kw->key, kw->v.arr.count, max_len);
		for (uint32_t i = 0; i < kw->v.arr.count; i++) {
			int64_t x = moed_kwarg_array_at(kw, i);
			if (x < spec->min || x > spec->max)
				return FAIL(MOED_KW_OUT_OF_RANGE,
					    "kwarg '%s'[%u] = %" PRId64 " is out of range [%" PRId64
					    ", %" PRId64 "]",
					    kw->key, i, x, spec->min, spec->max);
		}
		break;
	}
	return MOED_KW_OK;
}

enum moed_kwargs_status moed_kwargs_check(const struct moed_kwargs *kws,
					  const struct moed_kwargs_schema *schema,
					  struct moed_error *err)
{
	for (uint32_t i = 0; i < kws->count; i++) {
		const struct moed_kwarg *kw = &kws->items[i];

		for (size_t f = 0; f < sizeof(descriptor_fields) / sizeof(descriptor_fields[0]); f++)
			if (!strcmp(kw->key, descriptor_fields[f]))
				return FAIL(MOED_KW_RESERVED_KEY,
					    "kwarg '%s' would override a field of the job "
					    "descriptor; set it there instead",
					    kw->key);

		const struct moed_kwarg_spec *spec = find_spec(schema, kw->key);
		if (!spec) {
			char names[160];
			list_names(names, sizeof(names), schema);
			return FAIL(MOED_KW_UNKNOWN_KEY, "unknown kwarg '%s' (this backend accepts: %s)",
				    kw->key, names);
		}
		if (spec->type != kw->type)
			return FAIL(MOED_KW_WRONG_TYPE, "kwarg '%s' must be %s, got %s", kw->key,
				    moed_kwarg_type_name(spec->type), moed_kwarg_type_name(kw->type));
		enum moed_kwargs_status st = check_value(kw, spec, err);
		if (st != MOED_KW_OK)
			return st;
	}
	return MOED_KW_OK;
}

int moed_kwargs_accept(const void *blob, size_t len, const struct moed_kwargs_schema *schema,
		       struct moed_kwargs *out, struct moed_error *err)
{
	if (moed_kwargs_parse(blob, len, out, err) != MOED_KW_OK)
		return -EINVAL;
	if (moed_kwargs_check(out, schema, err) != MOED_KW_OK)
		return -EINVAL;
	return 0;
}
