/* SPDX-License-Identifier: MIT */
/*
 * moed kwargs wire format: a typed key/value blob that travels with a job (in the
 * client's arena, named by moed_sqe.kwargs) and is forwarded to the kernel backend.
 *
 * Layout, all integers little-endian, every part 8-byte aligned from the blob start:
 *
 *     struct moed_kwargs_header                 16 bytes
 *     entry 0:  struct moed_kwarg_entry          8 bytes
 *               key bytes        [key_len]       UTF-8, no NUL, 1..MOED_KWARG_KEY_MAX
 *               value bytes      [value_len]     per type, below
 *               zero padding to the next multiple of 8
 *     entry 1 ...
 *     (exactly `count` entries; the last one's padding ends at `size`)
 *
 * Value encodings:
 *     BOOL         value_len 1, byte 0 or 1
 *     INT64        value_len 8, two's complement
 *     DOUBLE       value_len 8, IEEE-754 binary64, finite
 *     STRING       value_len 0..MOED_KWARG_STRING_MAX bytes of UTF-8, no NUL
 *     INT64_ARRAY  value_len a multiple of 8, at most MOED_KWARG_ARRAY_MAX elements
 *
 * Keys are unique within a blob. A reader rejects anything else: unknown magic or
 * version, reserved fields or padding not zero, a size that disagrees with the buffer,
 * a count that disagrees with the entries, a length past the end or one whose offset
 * arithmetic overflows 32 bits, an unknown type tag, a bad key, a duplicate key.
 */
#ifndef MOED_KWARGS_ABI_H
#define MOED_KWARGS_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOED_KWARGS_MAGIC 0x31574b4du /* "MKW1" as little-endian bytes */
#define MOED_KWARGS_VERSION 1u

#define MOED_KWARGS_MAX_COUNT 64u
#define MOED_KWARGS_MAX_SIZE 65536u
#define MOED_KWARG_KEY_MAX 64u
#define MOED_KWARG_STRING_MAX 1024u
#define MOED_KWARG_ARRAY_MAX 1024u
#define MOED_KWARGS_ALIGN 8u

enum moed_kwarg_type {
	MOED_KWARG_BOOL = 1,
	MOED_KWARG_INT64 = 2,
	MOED_KWARG_DOUBLE = 3,
	MOED_KWARG_STRING = 4,
	MOED_KWARG_INT64_ARRAY = 5,
};

struct moed_kwargs_header {
	uint32_t magic;   /* MOED_KWARGS_MAGIC */
	uint16_t version; /* MOED_KWARGS_VERSION */
	uint16_t count;   /* number of entries */
	uint32_t size;    /* whole blob in bytes, header included; a multiple of 8 */
	uint32_t reserved;
};

struct moed_kwarg_entry {
	uint8_t type;    /* enum moed_kwarg_type */
	uint8_t key_len; /* 1..MOED_KWARG_KEY_MAX */
	uint16_t reserved;
	uint32_t value_len;
};

#ifdef __cplusplus
static_assert(sizeof(struct moed_kwargs_header) == 16, "kwargs header size");
static_assert(sizeof(struct moed_kwarg_entry) == 8, "kwarg entry size");
#else
_Static_assert(sizeof(struct moed_kwargs_header) == 16, "kwargs header size");
_Static_assert(offsetof(struct moed_kwargs_header, magic) == 0, "kwargs magic");
_Static_assert(offsetof(struct moed_kwargs_header, version) == 4, "kwargs version");
_Static_assert(offsetof(struct moed_kwargs_header, count) == 6, "kwargs count");
_Static_assert(offsetof(struct moed_kwargs_header, size) == 8, "kwargs size");
_Static_assert(offsetof(struct moed_kwargs_header, reserved) == 12, "kwargs reserved");
_Static_assert(sizeof(struct moed_kwarg_entry) == 8, "kwarg entry size");
_Static_assert(offsetof(struct moed_kwarg_entry, type) == 0, "kwarg type");
_Static_assert(offsetof(struct moed_kwarg_entry, key_len) == 1, "kwarg key_len");
_Static_assert(offsetof(struct moed_kwarg_entry, reserved) == 2, "kwarg reserved");
_Static_assert(offsetof(struct moed_kwarg_entry, value_len) == 4, "kwarg value_len");
#endif

#ifdef __cplusplus
}
#endif

#endif /* MOED_KWARGS_ABI_H */
