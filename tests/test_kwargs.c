/* SPDX-License-Identifier: MIT */
/*
 * The kwargs wire format: random round trips through the client's builder and the
 * daemon's parser, every builder refusal, every parser rejection (blobs written byte
 * by byte by this test's own encoder, not by the builder), and the schema checks with
 * the messages a user sees.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "helpers.h"
#include "kwargs_parse.h"
#include "moed/kwargs.h"

/* ---- an independent encoder: bytes written by hand, little-endian ---------------- */

struct enc {
	unsigned char b[MOED_KWARGS_MAX_SIZE + 64];
	size_t len;
};

static void put8(struct enc *e, uint8_t v) { e->b[e->len++] = v; }
static void put16(struct enc *e, uint16_t v) { put8(e, v & 0xff); put8(e, (uint8_t)(v >> 8)); }
static void put32(struct enc *e, uint32_t v) { put16(e, v & 0xffff); put16(e, (uint16_t)(v >> 16)); }
static void put64(struct enc *e, uint64_t v) { put32(e, (uint32_t)v); put32(e, (uint32_t)(v >> 32)); }
static void putn(struct enc *e, const void *p, size_t n) { memcpy(e->b + e->len, p, n); e->len += n; }
static void pad8(struct enc *e) { while (e->len % 8) put8(e, 0); }
static void set32(struct enc *e, size_t at, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		e->b[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static void enc_header(struct enc *e, uint16_t count)
{
	e->len = 0;
	put32(e, 0x31574b4d); /* "MKW1" */
	put16(e, 1);
	put16(e, count);
	put32(e, 0); /* size, fixed by enc_finish */
	put32(e, 0);
}

static void enc_entry(struct enc *e, uint8_t type, const char *key, size_t key_len,
		      const void *val, uint32_t val_len)
{
	put8(e, type);
	put8(e, (uint8_t)key_len);
	put16(e, 0);
	put32(e, val_len);
	putn(e, key, key_len);
	putn(e, val, val_len);
	pad8(e);
}

static void enc_finish(struct enc *e) { set32(e, 8, (uint32_t)e->len); }

static void enc_int(struct enc *e, const char *key, int64_t v)
{
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)v >> (8 * i));
	enc_entry(e, 2, key, strlen(key), b, 8);
}

/* ---- parsing helpers ---------------------------------------------------------------- */

static struct moed_kwargs parsed;
static struct moed_error err;

static enum moed_kwargs_status parse(const struct enc *e)
{
	memset(&err, 0, sizeof(err));
	return moed_kwargs_parse(e->b, e->len, &parsed, &err);
}

#define EXPECT(e, st, words)                                                                 \
	do {                                                                                 \
		enum moed_kwargs_status got_ = parse(e);                                     \
		ck_assert_msg(got_ == (st), "got %s, expected %s (%s)",                       \
			      moed_kwargs_status_name(got_), moed_kwargs_status_name(st), err.msg); \
		ck_assert_msg(strstr(err.msg, words), "message '%s' lacks '%s'", err.msg, words); \
	} while (0)

/* ---- round trips ----------------------------------------------------------------------- */

struct expect_kw {
	char key[MOED_KWARG_KEY_MAX + 1];
	int type;
	int64_t i;
	double d;
	char s[MOED_KWARG_STRING_MAX + 1];
	int64_t arr[64];
	size_t n;
};

/* A random key of 1..64 bytes mixing ASCII, 2-, 3- and 4-byte UTF-8 sequences. */
static void random_key(uint64_t *s, char *out, unsigned idx)
{
	static const char *const pieces[] = { "a", "Z", "_", "9", "\xc3\xa9", "\xe2\x82\xac",
					      "\xf0\x9f\x98\x80", "\xe4\xb8\xad" };
	size_t target = test_rand_range(s, 1, MOED_KWARG_KEY_MAX - 4), len;
	len = (size_t)snprintf(out, 8, "%02u", idx); /* unique prefix */
	while (len < target) {
		const char *p = pieces[test_rand(s) % 8];
		if (len + strlen(p) > MOED_KWARG_KEY_MAX)
			break;
		memcpy(out + len, p, strlen(p));
		len += strlen(p);
	}
	out[len] = 0;
}

START_TEST(round_trip_random)
{
	uint64_t s = test_seed() + (uint64_t)_i;
	struct moed_kwargs_builder *b = moed_kwargs_builder_new();
	ck_assert_ptr_nonnull(b);

	for (int round = 0; round < 300; round++) {
		static struct expect_kw want[MOED_KWARGS_MAX_COUNT];
		unsigned n = (unsigned)test_rand_range(&s, 0, MOED_KWARGS_MAX_COUNT);
		moed_kwargs_builder_reset(b);
		for (unsigned k = 0; k < n; k++) {
			struct expect_kw *w = &want[k];
			random_key(&s, w->key, k);
			w->type = (int)test_rand_range(&s, 1, 5);
			switch (w->type) {
			case 1:
				w->i = (int64_t)(test_rand(&s) & 1);
				ck_assert_int_eq(moed_kwargs_add_bool(b, w->key, w->i), 0);
				break;
			case 2:
				w->i = (int64_t)test_rand(&s);
				ck_assert_int_eq(moed_kwargs_add_int(b, w->key, w->i), 0);
				break;
			case 3:
				w->d = (test_rand_double(&s) - 0.5) * 1e12;
				ck_assert_int_eq(moed_kwargs_add_double(b, w->key, w->d), 0);
				break;
			case 4: {
				size_t len = test_rand_range(&s, 0, 40);
				for (size_t c = 0; c < len; c++)
					w->s[c] = (char)test_rand_range(&s, 0x20, 0x7e);
				w->s[len] = 0;
				ck_assert_int_eq(moed_kwargs_add_string(b, w->key, w->s), 0);
				break;
			}
			case 5:
				w->n = test_rand_range(&s, 0, 64);
				for (size_t c = 0; c < w->n; c++)
					w->arr[c] = (int64_t)test_rand(&s);
				ck_assert_int_eq(moed_kwargs_add_int_array(b, w->key, w->arr, w->n), 0);
				break;
			}
		}
		ck_assert_uint_eq(moed_kwargs_count(b), n);

		size_t size;
		const unsigned char *blob = moed_kwargs_data(b, &size);
		ck_assert_uint_eq(size % 8, 0);
		/* The header, read byte by byte. */
		ck_assert_uint_eq(blob[6] | blob[7] << 8, n);
		ck_assert_uint_eq((uint32_t)blob[8] | (uint32_t)blob[9] << 8 | (uint32_t)blob[10] << 16, size);

		struct moed_kwargs *out = malloc(sizeof(*out));
		ck_assert_int_eq(moed_kwargs_parse(blob, size, out, &err), MOED_KW_OK);
		ck_assert_uint_eq(out->count, n);
		for (unsigned k = 0; k < n; k++) {
			const struct moed_kwarg *kw = moed_kwargs_find(out, want[k].key);
			ck_assert_ptr_nonnull(kw);
			ck_assert_int_eq(kw->type, want[k].type);
			switch (want[k].type) {
			case 1: ck_assert_int_eq(kw->v.b, want[k].i); break;
			case 2: ck_assert_int_eq(kw->v.i, want[k].i); break;
			case 3: ck_assert(kw->v.d == want[k].d); break;
			case 4:
				ck_assert_uint_eq(kw->v.str.len, strlen(want[k].s));
				ck_assert(!memcmp(kw->v.str.ptr, want[k].s, kw->v.str.len));
				break;
			case 5:
				ck_assert_uint_eq(kw->v.arr.count, want[k].n);
				for (uint32_t c = 0; c < want[k].n; c++)
					ck_assert_int_eq(moed_kwarg_array_at(kw, c), want[k].arr[c]);
				break;
			}
		}
		free(out);
	}
	moed_kwargs_builder_free(b);
}
END_TEST

START_TEST(hand_encoded_blob_parses)
{
	struct enc e;
	enc_header(&e, 3);
	enc_int(&e, "tile_m", -7);
	enc_entry(&e, 4, "mode", 4, "fast", 4);
	enc_entry(&e, 1, "b", 1, "\x01", 1);
	enc_finish(&e);
	ck_assert_int_eq(parse(&e), MOED_KW_OK);
	ck_assert_uint_eq(parsed.count, 3);
	ck_assert_int_eq(moed_kwargs_find(&parsed, "tile_m")->v.i, -7);
	ck_assert_int_eq(moed_kwargs_find(&parsed, "b")->v.b, 1);
	ck_assert_ptr_null(moed_kwargs_find(&parsed, "missing"));

	/* An empty blob and an empty set both mean "no kwargs". */
	ck_assert_int_eq(moed_kwargs_parse(NULL, 0, &parsed, &err), MOED_KW_OK);
	enc_header(&e, 0);
	enc_finish(&e);
	ck_assert_int_eq(parse(&e), MOED_KW_OK);
	ck_assert_uint_eq(parsed.count, 0);
}
END_TEST

/* ---- builder refusals ------------------------------------------------------------------------ */

START_TEST(builder_refusals)
{
	struct moed_kwargs_builder *b = moed_kwargs_builder_new();
	char key[80];
	int64_t arr[MOED_KWARG_ARRAY_MAX + 1] = { 0 };
	static char longstr[MOED_KWARG_STRING_MAX + 2];

	ck_assert_int_eq(moed_kwargs_add_int(b, "", 1), -EINVAL);
	ck_assert_int_eq(moed_kwargs_add_int(b, "bad\xff", 1), -EINVAL);
	ck_assert_int_eq(moed_kwargs_add_int(b, "\xc0\xaf", 1), -EINVAL); /* overlong '/' */
	ck_assert_int_eq(moed_kwargs_add_int(NULL, "k", 1), -EINVAL);
	ck_assert_int_eq(moed_kwargs_add_int(b, NULL, 1), -EINVAL);
	ck_assert_int_eq(moed_kwargs_add_string(b, "k", NULL), -EINVAL);
	ck_assert_int_eq(moed_kwargs_add_string(b, "k", "\xed\xa0\x80"), -EINVAL); /* surrogate */
	ck_assert_int_eq(moed_kwargs_add_double(b, "k", NAN), -EINVAL);
	ck_assert_int_eq(moed_kwargs_add_double(b, "k", INFINITY), -EINVAL);
	memset(key, 'k', 65);
	key[65] = 0;
	ck_assert_int_eq(moed_kwargs_add_int(b, key, 1), -ENAMETOOLONG);
	key[64] = 0;
	ck_assert_int_eq(moed_kwargs_add_int(b, key, 1), 0); /* 64 bytes is the limit */
	ck_assert_int_eq(moed_kwargs_add_bool(b, key, true), -EEXIST);
	memset(longstr, 'x', MOED_KWARG_STRING_MAX + 1);
	ck_assert_int_eq(moed_kwargs_add_string(b, "s", longstr), -E2BIG);
	ck_assert_int_eq(moed_kwargs_add_int_array(b, "a", arr, MOED_KWARG_ARRAY_MAX + 1), -E2BIG);
	ck_assert_int_eq(moed_kwargs_count(b), 1); /* failures left it unchanged */

	moed_kwargs_builder_reset(b);
	for (unsigned i = 0; i < MOED_KWARGS_MAX_COUNT; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		ck_assert_int_eq(moed_kwargs_add_int(b, key, i), 0);
	}
	ck_assert_int_eq(moed_kwargs_add_int(b, "one-more", 0), -E2BIG);

	/* The blob size limit: 64 arrays of 1024 elements would be 512 KiB. */
	moed_kwargs_builder_reset(b);
	int r = 0;
	for (unsigned i = 0; i < MOED_KWARGS_MAX_COUNT && r == 0; i++) {
		snprintf(key, sizeof(key), "a%u", i);
		r = moed_kwargs_add_int_array(b, key, arr, MOED_KWARG_ARRAY_MAX);
	}
	ck_assert_int_eq(r, -E2BIG);
	size_t size;
	moed_kwargs_data(b, &size);
	ck_assert_uint_le(size, MOED_KWARGS_MAX_SIZE);
	moed_kwargs_builder_free(b);
	moed_kwargs_builder_free(NULL);
}
END_TEST

/* ---- parser rejections, one per failure kind --------------------------------------------------- */

START_TEST(rejects_truncated)
{
	struct enc e;
	enc_header(&e, 1);
	enc_int(&e, "k", 1);
	enc_finish(&e);
	size_t full = e.len;

	e.len = 10;
	EXPECT(&e, MOED_KW_TRUNCATED, "shorter than its 16-byte header");
	e.len = full - 8;
	EXPECT(&e, MOED_KW_TRUNCATED, "declares 40 bytes but only 32");
}
END_TEST

START_TEST(rejects_bad_header)
{
	struct enc e;
	enc_header(&e, 0);
	enc_finish(&e);
	e.b[0] ^= 0xff;
	EXPECT(&e, MOED_KW_BAD_MAGIC, "magic");
	e.b[0] ^= 0xff;
	e.b[4] = 2;
	EXPECT(&e, MOED_KW_BAD_VERSION, "version 2");
	e.b[4] = 1;
	e.b[12] = 1;
	EXPECT(&e, MOED_KW_RESERVED, "reserved");
	e.b[12] = 0;

	/* Bytes after the declared size, or a size that is not a multiple of 8. */
	put64(&e, 0);
	EXPECT(&e, MOED_KW_SIZE_MISMATCH, "declares 16 bytes, given 24");
	set32(&e, 8, 20);
	e.len = 20;
	EXPECT(&e, MOED_KW_SIZE_MISMATCH, "multiples of 8");

	set32(&e, 8, MOED_KWARGS_MAX_SIZE + 8);
	e.len = 16;
	EXPECT(&e, MOED_KW_TOO_LARGE, "over the limit");
	e.len = MOED_KWARGS_MAX_SIZE + 8;
	EXPECT(&e, MOED_KW_TOO_LARGE, "exceeds the limit");
}
END_TEST

START_TEST(rejects_too_many)
{
	struct enc e;
	enc_header(&e, MOED_KWARGS_MAX_COUNT + 1);
	for (unsigned i = 0; i <= MOED_KWARGS_MAX_COUNT; i++) {
		char k[8];
		snprintf(k, sizeof(k), "k%u", i);
		enc_int(&e, k, i);
	}
	enc_finish(&e);
	EXPECT(&e, MOED_KW_TOO_MANY, "65 entries, at most 64");
}
END_TEST

START_TEST(rejects_count_mismatch)
{
	struct enc e;
	enc_header(&e, 3); /* says three, holds two */
	enc_int(&e, "a", 1);
	enc_int(&e, "b", 2);
	enc_finish(&e);
	EXPECT(&e, MOED_KW_COUNT_MISMATCH, "declares 3 entries but ends after 2");

	enc_header(&e, 1); /* says one, holds two */
	enc_int(&e, "a", 1);
	enc_int(&e, "b", 2);
	enc_finish(&e);
	EXPECT(&e, MOED_KW_COUNT_MISMATCH, "24 more bytes after them");
}
END_TEST

START_TEST(rejects_past_end)
{
	struct enc e;
	/* Value length runs past the declared size. */
	enc_header(&e, 1);
	enc_int(&e, "key", 1);
	enc_finish(&e);
	set32(&e, 16 + 4, 64);
	EXPECT(&e, MOED_KW_PAST_END, "'key' value of 64 bytes runs past the end");

	/* Key length runs past the end. */
	enc_header(&e, 1);
	enc_int(&e, "key", 1);
	enc_finish(&e);
	e.b[16 + 1] = 40;
	EXPECT(&e, MOED_KW_PAST_END, "key of 40 bytes runs past the end");
}
END_TEST

START_TEST(rejects_overflow)
{
	struct enc e;
	enc_header(&e, 1);
	enc_int(&e, "key", 1);
	enc_finish(&e);
	set32(&e, 16 + 4, 0xfffffff0u); /* 16 + 8 + 3 + this wraps a 32-bit offset */
	EXPECT(&e, MOED_KW_OVERFLOW, "'key' value length 4294967280 overflows");
	set32(&e, 16 + 4, 0xffffffe0u); /* the value fits 32 bits; its padding does not */
	EXPECT(&e, MOED_KW_OVERFLOW, "overflows");
}
END_TEST

START_TEST(rejects_bad_type)
{
	const uint8_t tags[] = { 0, 6, 0x80, 0xff };
	for (size_t i = 0; i < sizeof(tags); i++) {
		struct enc e;
		enc_header(&e, 1);
		enc_entry(&e, tags[i], "kind", 4, "12345678", 8);
		enc_finish(&e);
		char words[64];
		snprintf(words, sizeof(words), "'kind' has unknown type tag %u", tags[i]);
		EXPECT(&e, MOED_KW_BAD_TYPE, words);
	}
}
END_TEST

START_TEST(rejects_bad_keys)
{
	static const struct {
		const char *key;
		size_t len;
		const char *shown;
	} bad[] = {
		{ "", 0, "key ''" },
		{ "a\xff", 2, "a\\xff" },                  /* never valid in UTF-8 */
		{ "\xc0\x80", 2, "\\xc0\\x80" },           /* overlong NUL */
		{ "\xe0\x80\xaf", 3, "\\xe0" },            /* overlong */
		{ "\xed\xb0\x80", 3, "\\xed" },            /* surrogate */
		{ "\xf4\x90\x80\x80", 4, "\\xf4" },        /* past U+10FFFF */
		{ "\x80x", 2, "\\x80x" },                  /* lone continuation */
		{ "ab\xe2\x82", 4, "ab\\xe2" },           /* sequence cut short */
		{ "a\0b", 3, "a\\x00b" },                  /* NUL inside */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct enc e;
		enc_header(&e, 1);
		enc_entry(&e, 2, bad[i].key, bad[i].len, "12345678", 8);
		enc_finish(&e);
		EXPECT(&e, MOED_KW_BAD_KEY, bad[i].shown);
	}

	char key[MOED_KWARG_KEY_MAX + 1];
	memset(key, 'q', sizeof(key));
	struct enc e;
	enc_header(&e, 1);
	enc_entry(&e, 2, key, sizeof(key), "12345678", 8);
	enc_finish(&e);
	EXPECT(&e, MOED_KW_KEY_TOO_LONG, "65 bytes, longer than the limit of 64");
}
END_TEST

START_TEST(rejects_duplicate_key)
{
	struct enc e;
	enc_header(&e, 3);
	enc_int(&e, "x", 1);
	enc_int(&e, "tile", 2);
	enc_entry(&e, 1, "tile", 4, "\x00", 1);
	enc_finish(&e);
	EXPECT(&e, MOED_KW_DUPLICATE_KEY, "'tile' appears more than once");
}
END_TEST

START_TEST(rejects_bad_values)
{
	const double nan = NAN, inf = -INFINITY;
	static const struct {
		uint8_t type;
		const char *val;
		uint32_t len;
		const char *words;
	} bad[] = {
		{ 1, "\x02", 1, "not a well-formed bool" },
		{ 1, "\x01\x00", 2, "bool (2 bytes)" },
		{ 2, "1234", 4, "int64 (4 bytes)" },
		{ 3, "1234", 4, "double (4 bytes)" },
		{ 4, "ok\xff", 3, "string (3 bytes)" },
		{ 4, "a\0b", 3, "string (3 bytes)" },
		{ 5, "123456781234", 12, "int64[] (12 bytes)" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct enc e;
		enc_header(&e, 1);
		enc_entry(&e, bad[i].type, "v", 1, bad[i].val, bad[i].len);
		enc_finish(&e);
		EXPECT(&e, MOED_KW_BAD_VALUE, bad[i].words);
	}
	const double *ds[] = { &nan, &inf };
	for (int i = 0; i < 2; i++) {
		struct enc e;
		enc_header(&e, 1);
		enc_entry(&e, 3, "d", 1, ds[i], 8);
		enc_finish(&e);
		EXPECT(&e, MOED_KW_BAD_VALUE, "'d' is not a well-formed double");
	}
	static char big[MOED_KWARG_STRING_MAX + 1];
	memset(big, 'x', sizeof(big));
	struct enc e;
	enc_header(&e, 1);
	enc_entry(&e, 4, "s", 1, big, sizeof(big));
	enc_finish(&e);
	EXPECT(&e, MOED_KW_BAD_VALUE, "'s' is not a well-formed string");
}
END_TEST

START_TEST(rejects_nonzero_padding)
{
	struct enc e;
	enc_header(&e, 1);
	enc_entry(&e, 1, "flag", 4, "\x01", 1);
	enc_finish(&e);
	e.b[e.len - 1] = 7;
	EXPECT(&e, MOED_KW_RESERVED, "'flag' padding is not zero");

	enc_header(&e, 1);
	enc_entry(&e, 1, "flag", 4, "\x01", 1);
	enc_finish(&e);
	e.b[16 + 2] = 1;
	EXPECT(&e, MOED_KW_RESERVED, "entry 0 reserved field");
}
END_TEST

/* ---- schema -------------------------------------------------------------------------------------- */

static const char *const modes[] = { "auto", "tiled", "stream", NULL };
static const struct moed_kwarg_spec specs[] = {
	{ .name = "num_threads", .type = MOED_KWARG_INT64, .min = 1, .max = 64 },
	{ .name = "alpha", .type = MOED_KWARG_DOUBLE, .dmin = 0.0, .dmax = 2.0 },
	{ .name = "mode", .type = MOED_KWARG_STRING, .choices = modes },
	{ .name = "tag", .type = MOED_KWARG_STRING, .max_len = 8 },
	{ .name = "tiles", .type = MOED_KWARG_INT64_ARRAY, .min = 16, .max = 256, .max_len = 3 },
	{ .name = "deterministic", .type = MOED_KWARG_BOOL },
};
static const struct moed_kwargs_schema schema = { specs, sizeof(specs) / sizeof(specs[0]) };

/* Build one kwarg with the real builder, accept it against the schema. */
static int accept_one(void (*add)(struct moed_kwargs_builder *))
{
	struct moed_kwargs_builder *b = moed_kwargs_builder_new();
	static struct moed_kwargs out;
	size_t size;
	add(b);
	const void *blob = moed_kwargs_data(b, &size);
	void *copy = malloc(size);
	memcpy(copy, blob, size);
	memset(&err, 0, sizeof(err));
	int r = moed_kwargs_accept(copy, size, &schema, &out, &err);
	free(copy);
	moed_kwargs_builder_free(b);
	return r;
}

static void a_ok(struct moed_kwargs_builder *b)
{
	const int64_t t[] = { 16, 256 };
	moed_kwargs_add_int(b, "num_threads", 64);
	moed_kwargs_add_double(b, "alpha", 1.5);
	moed_kwargs_add_string(b, "mode", "tiled");
	moed_kwargs_add_string(b, "tag", "12345678");
	moed_kwargs_add_int_array(b, "tiles", t, 2);
	moed_kwargs_add_bool(b, "deterministic", true);
}
static void a_unknown(struct moed_kwargs_builder *b) { moed_kwargs_add_int(b, "num_thread", 4); }
static void a_reserved(struct moed_kwargs_builder *b) { moed_kwargs_add_bool(b, "no_combine", true); }
static void a_reserved2(struct moed_kwargs_builder *b) { moed_kwargs_add_double(b, "routed_scaling_factor", 2); }
static void a_type(struct moed_kwargs_builder *b) { moed_kwargs_add_double(b, "num_threads", 4); }
static void a_range_lo(struct moed_kwargs_builder *b) { moed_kwargs_add_int(b, "num_threads", 0); }
static void a_range_hi(struct moed_kwargs_builder *b) { moed_kwargs_add_int(b, "num_threads", 65); }
static void a_drange(struct moed_kwargs_builder *b) { moed_kwargs_add_double(b, "alpha", 2.5); }
static void a_choice(struct moed_kwargs_builder *b) { moed_kwargs_add_string(b, "mode", "turbo"); }
static void a_strlen(struct moed_kwargs_builder *b) { moed_kwargs_add_string(b, "tag", "123456789"); }
static void a_arr_elem(struct moed_kwargs_builder *b)
{
	const int64_t t[] = { 16, 512 };
	moed_kwargs_add_int_array(b, "tiles", t, 2);
}
static void a_arr_len(struct moed_kwargs_builder *b)
{
	const int64_t t[] = { 16, 16, 16, 16 };
	moed_kwargs_add_int_array(b, "tiles", t, 4);
}

START_TEST(schema_accepts_and_refuses)
{
	static const struct {
		void (*add)(struct moed_kwargs_builder *);
		const char *words;
	} cases[] = {
		{ a_unknown, "unknown kwarg 'num_thread' (this backend accepts: num_threads, alpha" },
		{ a_reserved, "kwarg 'no_combine' would override a field of the job descriptor" },
		{ a_reserved2, "kwarg 'routed_scaling_factor' would override" },
		{ a_type, "kwarg 'num_threads' must be int64, got double" },
		{ a_range_lo, "kwarg 'num_threads' = 0 is out of range [1, 64]" },
		{ a_range_hi, "kwarg 'num_threads' = 65 is out of range [1, 64]" },
		{ a_drange, "kwarg 'alpha' = 2.5 is out of range [0, 2]" },
		{ a_choice, "kwarg 'mode' = \"turbo\" is not one of: auto, tiled, stream" },
		{ a_strlen, "kwarg 'tag' is 9 bytes long, at most 8" },
		{ a_arr_elem, "kwarg 'tiles'[1] = 512 is out of range [16, 256]" },
		{ a_arr_len, "kwarg 'tiles' has 4 elements, at most 3" },
	};
	ck_assert_int_eq(accept_one(a_ok), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(accept_one(cases[i].add), -EINVAL);
		ck_assert_msg(strstr(err.msg, cases[i].words), "message '%s' lacks '%s'", err.msg,
			      cases[i].words);
	}
}
END_TEST

START_TEST(status_names_are_distinct)
{
	for (int a = 0; a < MOED_KW__COUNT; a++)
		for (int b = a + 1; b < MOED_KW__COUNT; b++)
			ck_assert_str_ne(moed_kwargs_status_name(a), moed_kwargs_status_name(b));
	ck_assert_str_eq(moed_kwargs_status_name(MOED_KW__COUNT), "unknown-status");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kwargs");
	TCase *tc = tcase_create("kwargs");

	tcase_add_loop_test(tc, round_trip_random, 0, 4);
	tcase_add_test(tc, hand_encoded_blob_parses);
	tcase_add_test(tc, builder_refusals);
	tcase_add_test(tc, rejects_truncated);
	tcase_add_test(tc, rejects_bad_header);
	tcase_add_test(tc, rejects_too_many);
	tcase_add_test(tc, rejects_count_mismatch);
	tcase_add_test(tc, rejects_past_end);
	tcase_add_test(tc, rejects_overflow);
	tcase_add_test(tc, rejects_bad_type);
	tcase_add_test(tc, rejects_bad_keys);
	tcase_add_test(tc, rejects_duplicate_key);
	tcase_add_test(tc, rejects_bad_values);
	tcase_add_test(tc, rejects_nonzero_padding);
	tcase_add_test(tc, schema_accepts_and_refuses);
	tcase_add_test(tc, status_names_are_distinct);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
