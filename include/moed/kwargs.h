/* SPDX-License-Identifier: MIT */
/*
 * Building a kwargs blob for a job (libmoed). The blob's layout is in
 * moed/kwargs_abi.h; the daemon checks it against the backend's signature and fails the
 * job with a message naming the key when a kwarg is unknown, of the wrong type or out of
 * range.
 *
 * All functions return 0 or a negative errno and leave the builder unchanged on error.
 */
#ifndef MOED_KWARGS_H
#define MOED_KWARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moed/kwargs_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

struct moed_kwargs_builder;

/* A new, empty builder, or NULL when out of memory. */
struct moed_kwargs_builder *moed_kwargs_builder_new(void);

/* Free a builder; NULL is accepted. */
void moed_kwargs_builder_free(struct moed_kwargs_builder *b);

/* Forget every entry, keeping the memory. */
void moed_kwargs_builder_reset(struct moed_kwargs_builder *b);

/*
 * Add one entry. `key` is a NUL-terminated UTF-8 string of 1..MOED_KWARG_KEY_MAX bytes.
 * Returns -EINVAL for a NULL argument, an empty or invalid key, a non-finite double or
 * a string that is not valid UTF-8; -ENAMETOOLONG for a long key; -EEXIST when the key
 * is already present; -E2BIG past MOED_KWARGS_MAX_COUNT entries, MOED_KWARGS_MAX_SIZE
 * bytes, MOED_KWARG_STRING_MAX string bytes or MOED_KWARG_ARRAY_MAX array elements;
 * -ENOMEM.
 */
int moed_kwargs_add_bool(struct moed_kwargs_builder *b, const char *key, bool value);
int moed_kwargs_add_int(struct moed_kwargs_builder *b, const char *key, int64_t value);
int moed_kwargs_add_double(struct moed_kwargs_builder *b, const char *key, double value);
int moed_kwargs_add_string(struct moed_kwargs_builder *b, const char *key, const char *value);
int moed_kwargs_add_int_array(struct moed_kwargs_builder *b, const char *key,
			      const int64_t *values, size_t count);

/* Number of entries added so far. */
unsigned moed_kwargs_count(const struct moed_kwargs_builder *b);

/*
 * The encoded blob, valid until the builder is next changed or freed; its size in
 * *size. Copy it into the arena and name it in moed_sqe.kwargs.
 */
const void *moed_kwargs_data(const struct moed_kwargs_builder *b, size_t *size);

#ifdef __cplusplus
}
#endif

#endif /* MOED_KWARGS_H */
