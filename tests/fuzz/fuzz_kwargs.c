/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the kwargs parser and schema check.
 *
 * Input byte 0 picks a mode. Odd: the rest is a blob, parsed as the daemon would.
 * Even: the rest drives the client's builder (so the fuzzer starts from well-formed
 * blobs), then flips the bytes it names; an unflipped blob must parse back to what
 * was built. Either way the parser must never read outside the blob (ASan) and every
 * accepted entry must obey the format's rules.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kwargs_parse.h"
#include "moed/kwargs.h"
#include "utf8.h"

static const char *const modes[] = { "a", "bb", NULL };
static const struct moed_kwarg_spec specs[] = {
	{ .name = "i", .type = MOED_KWARG_INT64, .min = -5, .max = 5 },
	{ .name = "d", .type = MOED_KWARG_DOUBLE, .dmin = -1, .dmax = 1 },
	{ .name = "s", .type = MOED_KWARG_STRING, .choices = modes },
	{ .name = "t", .type = MOED_KWARG_STRING, .max_len = 3 },
	{ .name = "v", .type = MOED_KWARG_INT64_ARRAY, .min = 0, .max = 9, .max_len = 4 },
	{ .name = "b", .type = MOED_KWARG_BOOL },
};
static const struct moed_kwargs_schema schema = { specs, sizeof(specs) / sizeof(specs[0]) };

static struct moed_kwargs parsed;

static void check_invariants(const struct moed_kwargs *kws)
{
	if (kws->count > MOED_KWARGS_MAX_COUNT)
		abort();
	for (uint32_t i = 0; i < kws->count; i++) {
		const struct moed_kwarg *kw = &kws->items[i];
		size_t len = strlen(kw->key);
		if (moed_kwarg_key_check(kw->key, len) != MOED_KW_OK)
			abort();
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(kws->items[j].key, kw->key))
				abort();
		if (kw->type == MOED_KWARG_STRING && !moed_utf8_valid(kw->v.str.ptr, kw->v.str.len))
			abort();
	}
}

static void parse_blob(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees any over-read */
	struct moed_error err;

	memcpy(copy, data, size);
	if (moed_kwargs_parse(copy, size, &parsed, &err) == MOED_KW_OK) {
		check_invariants(&parsed);
		(void)moed_kwargs_check(&parsed, &schema, &err);
	}
	free(copy);
}

/* Take n bytes from the input stream, or zeros once it runs dry. */
static void take(const uint8_t **p, size_t *left, void *out, size_t n)
{
	size_t k = n < *left ? n : *left;
	memset(out, 0, n);
	memcpy(out, *p, k);
	*p += k;
	*left -= k;
}

static void build_and_mutate(const uint8_t *p, size_t left)
{
	struct moed_kwargs_builder *b = moed_kwargs_builder_new();
	uint8_t nentries = 0, nflips = 0;
	take(&p, &left, &nentries, 1);
	nentries %= 8;
	for (unsigned i = 0; i < nentries; i++) {
		uint8_t type = 0, klen = 0;
		char key[8] = { 0 };
		int64_t v[4];
		take(&p, &left, &type, 1);
		take(&p, &left, &klen, 1);
		take(&p, &left, key, sizeof(key) - 1);
		key[(klen % 7) + 1 > 7 ? 7 : (klen % 7) + 1] = 0;
		take(&p, &left, v, sizeof(v));
		switch (type % 5) {
		case 0: moed_kwargs_add_bool(b, key, v[0] & 1); break;
		case 1: moed_kwargs_add_int(b, key, v[0]); break;
		case 2: {
			double d;
			memcpy(&d, &v[0], sizeof(d));
			moed_kwargs_add_double(b, key, d);
			break;
		}
		case 3: {
			char s[9];
			memcpy(s, v, 8);
			s[8] = 0;
			moed_kwargs_add_string(b, key, s);
			break;
		}
		case 4: moed_kwargs_add_int_array(b, key, v, (size_t)(type / 5) % 5); break;
		}
	}

	size_t size;
	const uint8_t *blob = moed_kwargs_data(b, &size);
	uint8_t *copy = malloc(size);
	memcpy(copy, blob, size);
	struct moed_error err;
	if (moed_kwargs_parse(copy, size, &parsed, &err) != MOED_KW_OK ||
	    parsed.count != moed_kwargs_count(b))
		abort(); /* the builder wrote something the parser refuses */
	check_invariants(&parsed);

	take(&p, &left, &nflips, 1);
	for (unsigned i = 0; i < nflips % 8; i++) {
		uint16_t at = 0;
		uint8_t x = 0;
		take(&p, &left, &at, sizeof(at));
		take(&p, &left, &x, 1);
		copy[at % size] ^= x;
	}
	parse_blob(copy, size);
	free(copy);
	moed_kwargs_builder_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		parse_blob(data + 1, size - 1);
	else
		build_and_mutate(data + 1, size - 1);
	return 0;
}
