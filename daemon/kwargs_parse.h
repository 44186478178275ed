/* SPDX-License-Identifier: MIT */
/*
 * The daemon side of the kwargs wire format: a strict parser of a blob that another
 * process wrote, and the check of the parsed entries against a backend's schema.
 */
#ifndef MOED_DAEMON_KWARGS_PARSE_H
#define MOED_DAEMON_KWARGS_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "kwargs_rules.h"

struct moed_kwarg {
	char key[MOED_KWARG_KEY_MAX + 1]; /* NUL-terminated copy */
	uint8_t type;                     /* enum moed_kwarg_type */
	union {
		bool b;
		int64_t i;
		double d;
		struct {
			const char *ptr; /* into the parsed blob, not NUL-terminated */
			uint32_t len;
		} str;
		struct {
			const unsigned char *ptr; /* into the parsed blob; may be unaligned */
			uint32_t count;
		} arr;
	} v;
};

struct moed_kwargs {
	uint32_t count;
	struct moed_kwarg items[MOED_KWARGS_MAX_COUNT];
};

/* Element i of an INT64_ARRAY kwarg. */
int64_t moed_kwarg_array_at(const struct moed_kwarg *kw, uint32_t i);

/* The entry named `key`, or NULL. */
const struct moed_kwarg *moed_kwargs_find(const struct moed_kwargs *kws, const char *key);

/*
 * Parse a blob of `len` bytes. The blob must be the daemon's private copy: strings and
 * arrays in *out point into it. Returns MOED_KW_OK, or the first problem found, with a
 * sentence in err (naming the key where there is one). Empty input (len 0) is an empty
 * set of kwargs.
 */
enum moed_kwargs_status moed_kwargs_parse(const void *blob, size_t len, struct moed_kwargs *out,
					  struct moed_error *err);

/* One accepted kwarg of a backend's signature. */
struct moed_kwarg_spec {
	const char *name;
	uint8_t type;             /* enum moed_kwarg_type */
	int64_t min, max;         /* INT64 value, or each INT64_ARRAY element */
	double dmin, dmax;        /* DOUBLE value */
	uint32_t max_len;         /* STRING bytes or INT64_ARRAY elements; 0 = wire limit */
	const char *const *choices; /* STRING: NULL-terminated allowed values, or NULL */
	const char *help;
};

struct moed_kwargs_schema {
	const struct moed_kwarg_spec *specs;
	size_t count;
};

/*
 * Check parsed kwargs against a schema: a key naming a descriptor field, an unknown
 * key, a wrong type or an out-of-range value is refused with a message naming the key.
 */
enum moed_kwargs_status moed_kwargs_check(const struct moed_kwargs *kws,
					  const struct moed_kwargs_schema *schema,
					  struct moed_error *err);

/* Parse then check; returns 0 or -EINVAL with the message in err. */
int moed_kwargs_accept(const void *blob, size_t len, const struct moed_kwargs_schema *schema,
		       struct moed_kwargs *out, struct moed_error *err);

#endif
