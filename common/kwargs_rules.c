/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <math.h>
#include <string.h>

#include "kwargs_rules.h"
#include "utf8.h"

const char *moed_kwargs_status_name(enum moed_kwargs_status st)
{
	static const char *const names[MOED_KW__COUNT] = {
		[MOED_KW_OK] = "ok",
		[MOED_KW_TRUNCATED] = "truncated",
		[MOED_KW_BAD_MAGIC] = "bad-magic",
		[MOED_KW_BAD_VERSION] = "bad-version",
		[MOED_KW_SIZE_MISMATCH] = "size-mismatch",
		[MOED_KW_TOO_LARGE] = "too-large",
		[MOED_KW_TOO_MANY] = "too-many",
		[MOED_KW_RESERVED] = "reserved-not-zero",
		[MOED_KW_COUNT_MISMATCH] = "count-mismatch",
		[MOED_KW_PAST_END] = "past-end",
		[MOED_KW_OVERFLOW] = "overflow",
		[MOED_KW_BAD_TYPE] = "bad-type",
		[MOED_KW_BAD_KEY] = "bad-key",
		[MOED_KW_KEY_TOO_LONG] = "key-too-long",
		[MOED_KW_DUPLICATE_KEY] = "duplicate-key",
		[MOED_KW_BAD_VALUE] = "bad-value",
		[MOED_KW_RESERVED_KEY] = "reserved-key",
		[MOED_KW_UNKNOWN_KEY] = "unknown-key",
		[MOED_KW_WRONG_TYPE] = "wrong-type",
		[MOED_KW_OUT_OF_RANGE] = "out-of-range",
	};
	return (unsigned)st < MOED_KW__COUNT ? names[st] : "unknown-status";
}

const char *moed_kwarg_type_name(unsigned type)
{
	switch (type) {
	case MOED_KWARG_BOOL: return "bool";
	case MOED_KWARG_INT64: return "int64";
	case MOED_KWARG_DOUBLE: return "double";
	case MOED_KWARG_STRING: return "string";
	case MOED_KWARG_INT64_ARRAY: return "int64[]";
	default: return "unknown";
	}
}

enum moed_kwargs_status moed_kwarg_key_check(const char *key, size_t len)
{
	if (len == 0)
		return MOED_KW_BAD_KEY;
	if (len > MOED_KWARG_KEY_MAX)
		return MOED_KW_KEY_TOO_LONG;
	return moed_utf8_valid(key, len) ? MOED_KW_OK : MOED_KW_BAD_KEY;
}

enum moed_kwargs_status moed_kwarg_value_check(unsigned type, const void *value, size_t len)
{
	double d;

	switch (type) {
	case MOED_KWARG_BOOL:
		if (len != 1 || *(const unsigned char *)value > 1)
			return MOED_KW_BAD_VALUE;
		return MOED_KW_OK;
	case MOED_KWARG_INT64:
		return len == 8 ? MOED_KW_OK : MOED_KW_BAD_VALUE;
	case MOED_KWARG_DOUBLE:
		if (len != 8)
			return MOED_KW_BAD_VALUE;
		memcpy(&d, value, sizeof(d));
		return isfinite(d) ? MOED_KW_OK : MOED_KW_BAD_VALUE;
	case MOED_KWARG_STRING:
		if (len > MOED_KWARG_STRING_MAX || !moed_utf8_valid(value, len))
			return MOED_KW_BAD_VALUE;
		return MOED_KW_OK;
	case MOED_KWARG_INT64_ARRAY:
		if (len % 8 || len / 8 > MOED_KWARG_ARRAY_MAX)
			return MOED_KW_BAD_VALUE;
		return MOED_KW_OK;
	default:
		return MOED_KW_BAD_TYPE;
	}
}
