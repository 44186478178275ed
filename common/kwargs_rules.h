/* SPDX-License-Identifier: MIT */
/*
 * Rules of the kwargs wire format (include/moed/kwargs_abi.h) that the client's builder
 * and the daemon's parser share, so that whatever one writes the other accepts.
 */
#ifndef MOED_COMMON_KWARGS_RULES_H
#define MOED_COMMON_KWARGS_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "moed/kwargs_abi.h"

/* Why a blob or one of its entries was refused; each has its own test. */
enum moed_kwargs_status {
	MOED_KW_OK = 0,
	/* the blob */
	MOED_KW_TRUNCATED,      /* shorter than its header, or than the size it declares */
	MOED_KW_BAD_MAGIC,
	MOED_KW_BAD_VERSION,
	MOED_KW_SIZE_MISMATCH,  /* declared size not 8-aligned, or bytes after it */
	MOED_KW_TOO_LARGE,      /* beyond MOED_KWARGS_MAX_SIZE */
	MOED_KW_TOO_MANY,       /* count beyond MOED_KWARGS_MAX_COUNT */
	MOED_KW_RESERVED,       /* a reserved field or padding byte is not zero */
	MOED_KW_COUNT_MISMATCH, /* fewer or more entries than the count says */
	/* one entry */
	MOED_KW_PAST_END,       /* key or value runs past the declared size */
	MOED_KW_OVERFLOW,       /* its offset arithmetic overflows 32 bits */
	MOED_KW_BAD_TYPE,       /* unknown type tag */
	MOED_KW_BAD_KEY,        /* empty, or not valid UTF-8 */
	MOED_KW_KEY_TOO_LONG,
	MOED_KW_DUPLICATE_KEY,
	MOED_KW_BAD_VALUE,      /* wrong length for its type, bool not 0/1, not finite, bad UTF-8 */
	/* against a backend's schema */
	MOED_KW_RESERVED_KEY,   /* names a field of the job descriptor */
	MOED_KW_UNKNOWN_KEY,
	MOED_KW_WRONG_TYPE,
	MOED_KW_OUT_OF_RANGE,
	MOED_KW__COUNT
};

/* A short stable name ("truncated", "duplicate-key", ...) for messages and tests. */
const char *moed_kwargs_status_name(enum moed_kwargs_status st);

/* "bool", "int64", "double", "string", "int64[]", or "unknown". */
const char *moed_kwarg_type_name(unsigned type);

enum moed_kwargs_status moed_kwarg_key_check(const char *key, size_t len);

/* Checks the type tag, then the value bytes against it. */
enum moed_kwargs_status moed_kwarg_value_check(unsigned type, const void *value, size_t len);

static inline uint32_t moed_kwargs_pad(uint32_t n)
{
	return (MOED_KWARGS_ALIGN - (n % MOED_KWARGS_ALIGN)) % MOED_KWARGS_ALIGN;
}

#endif
