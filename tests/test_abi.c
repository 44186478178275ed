/* SPDX-License-Identifier: MIT */
/*
 * The shared-memory ABI: prints every size and offset and pins them to the numbers
 * written here (a change to them is an ABI break and must bump MOED_ABI_VERSION), then
 * checks region layout and the client's validation of a region header.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "helpers.h"
#include "moed/abi.h"
#include "moed/kwargs_abi.h"
#include "region.h"

struct pin {
	const char *what;
	size_t got, want;
};

#define SIZE(t, n) { "sizeof(" #t ")", sizeof(t), n }
#define OFF(t, f, n) { #t "." #f, offsetof(t, f), n }

static const struct pin pins[] = {
	SIZE(struct moed_region_header, 128),
	OFF(struct moed_region_header, magic, 0),
	OFF(struct moed_region_header, abi_version, 4),
	OFF(struct moed_region_header, header_size, 8),
	OFF(struct moed_region_header, region_size, 16),
	OFF(struct moed_region_header, sq, 24),
	OFF(struct moed_region_header, cq, 48),
	OFF(struct moed_region_header, msgs_offset, 72),
	OFF(struct moed_region_header, msg_size, 80),
	OFF(struct moed_region_header, arena_offset, 88),
	OFF(struct moed_region_header, arena_size, 96),
	OFF(struct moed_region_header, reserved2, 104),
	SIZE(struct moed_ring_layout, 24),
	OFF(struct moed_ring_layout, ctl_offset, 0),
	OFF(struct moed_ring_layout, slots_offset, 8),
	OFF(struct moed_ring_layout, entries, 16),
	OFF(struct moed_ring_layout, slot_size, 20),
	SIZE(struct moed_ring_ctl, 64),
	OFF(struct moed_ring_ctl, head, 0),
	OFF(struct moed_ring_ctl, flags, 4),
	SIZE(struct moed_buf, 16),
	SIZE(struct moed_sqe, 128),
	OFF(struct moed_sqe, seq, 0),
	OFF(struct moed_sqe, opcode, 4),
	OFF(struct moed_sqe, dtype, 5),
	OFF(struct moed_sqe, activation, 6),
	OFF(struct moed_sqe, arena, 7),
	OFF(struct moed_sqe, user_data, 8),
	OFF(struct moed_sqe, flags, 16),
	OFF(struct moed_sqe, weights_id, 20),
	OFF(struct moed_sqe, num_tokens, 24),
	OFF(struct moed_sqe, topk, 28),
	OFF(struct moed_sqe, hidden_size, 32),
	OFF(struct moed_sqe, routed_scaling_factor, 36),
	OFF(struct moed_sqe, hidden, 40),
	OFF(struct moed_sqe, topk_ids, 56),
	OFF(struct moed_sqe, topk_weights, 72),
	OFF(struct moed_sqe, output, 88),
	OFF(struct moed_sqe, kwargs, 104),
	OFF(struct moed_sqe, reserved, 120),
	SIZE(struct moed_cqe, 64),
	OFF(struct moed_cqe, seq, 0),
	OFF(struct moed_cqe, status, 4),
	OFF(struct moed_cqe, user_data, 8),
	OFF(struct moed_cqe, flags, 16),
	OFF(struct moed_cqe, out_rank, 20),
	OFF(struct moed_cqe, out_shape, 24),
	OFF(struct moed_cqe, queue_ns, 40),
	OFF(struct moed_cqe, run_ns, 48),
	SIZE(struct moed_msg, 256),
	SIZE(struct moed_kwargs_header, 16),
	OFF(struct moed_kwargs_header, count, 6),
	OFF(struct moed_kwargs_header, size, 8),
	SIZE(struct moed_kwarg_entry, 8),
	OFF(struct moed_kwarg_entry, key_len, 1),
	OFF(struct moed_kwarg_entry, value_len, 4),
};

START_TEST(layout_pinned)
{
	printf("ABI version %u, magic 0x%08x\n", MOED_ABI_VERSION, MOED_REGION_MAGIC);
	for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++) {
		printf("  %-44s %4zu\n", pins[i].what, pins[i].got);
		ck_assert_msg(pins[i].got == pins[i].want, "%s is %zu, pinned at %zu", pins[i].what,
			      pins[i].got, pins[i].want);
	}
	ck_assert_uint_eq(MOED_REGION_MAGIC, 0x44454f4du);
	ck_assert_mem_eq(&(uint32_t){ MOED_REGION_MAGIC }, "MOED", 4);
	ck_assert_mem_eq(&(uint32_t){ MOED_KWARGS_MAGIC }, "MKW1", 4);
}
END_TEST

/* A laid-out and formatted region, in memory the test owns. */
struct region {
	struct moed_region_header hdr;
	unsigned char *base;
};

static void region_make(struct region *rg, uint32_t sq, uint32_t cq, uint64_t arena)
{
	const struct moed_region_params p = { .sq_entries = sq, .cq_entries = cq, .arena_size = arena };
	ck_assert_int_eq(moed_region_layout(&p, &rg->hdr), 0);
	rg->base = calloc(1, rg->hdr.region_size);
	ck_assert_ptr_nonnull(rg->base);
	ck_assert_int_eq(moed_region_format(rg->base, &rg->hdr, 0xfffffff0u), 0);
}

START_TEST(layout_is_consistent)
{
	uint64_t s = test_seed() + (uint64_t)_i;
	for (int round = 0; round < 200; round++) {
		uint32_t sq = 1u << test_rand_range(&s, 1, 16);
		uint32_t cq = sq << test_rand_range(&s, 0, 16 - (uint64_t)__builtin_ctz(sq));
		uint64_t arena = 64 * test_rand_range(&s, 1, 1 << 14);
		struct region rg;
		struct moed_region_header copy;
		char why[128];

		region_make(&rg, sq, cq, arena);
		ck_assert_uint_eq(rg.hdr.arena_offset % 4096, 0);
		ck_assert_uint_eq(rg.hdr.region_size, rg.hdr.arena_offset + arena);
		ck_assert_int_eq(moed_region_check(rg.base, rg.hdr.region_size, &copy, why, sizeof(why)), 0);
		ck_assert_mem_eq(&copy, &rg.hdr, sizeof(copy));

		struct moed_ring sqr, cqr;
		ck_assert_int_eq(moed_region_attach_rings(rg.base, &copy, &sqr, &cqr), 0);
		ck_assert_uint_eq(sqr.pos, 0xfffffff0u);
		ck_assert_uint_eq(cqr.entries, cq);
		free(rg.base);
	}
}
END_TEST

START_TEST(layout_rejects_bad_params)
{
	struct moed_region_header h;
	const struct moed_region_params bad[] = {
		{ 3, 4, 4096 },               /* not a power of two */
		{ 1, 4, 4096 },               /* below the minimum */
		{ 4, 1u << 17, 4096 },        /* above the maximum */
		{ 8, 4, 4096 },               /* CQ smaller than SQ */
		{ 4, 4, 0 },                  /* no arena */
		{ 4, 4, 100 },                /* arena not a multiple of 64 */
		{ 4, 4, (UINT64_C(1) << 40) + 64 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_int_eq(moed_region_layout(&bad[i], &h), -EINVAL);
}
END_TEST

/* Break one thing in a good header; the client must refuse with the expected words. */
static void expect_refused(struct region *rg, void (*breakit)(struct moed_region_header *),
			   int code, const char *words)
{
	struct moed_region_header copy, saved = rg->hdr;
	char why[256] = "";

	breakit((struct moed_region_header *)(void *)rg->base);
	int r = moed_region_check(rg->base, rg->hdr.region_size, &copy, why, sizeof(why));
	ck_assert_int_eq(r, code);
	ck_assert_msg(strstr(why, words), "message '%s' lacks '%s'", why, words);
	memcpy(rg->base, &saved, sizeof(saved));
}

static void b_magic(struct moed_region_header *h) { h->magic ^= 1; }
static void b_version(struct moed_region_header *h) { h->abi_version = 2; }
static void b_hsize(struct moed_region_header *h) { h->header_size = 64; }
static void b_reserved0(struct moed_region_header *h) { h->reserved0 = 1; }
static void b_reserved2(struct moed_region_header *h) { h->reserved2[2] = 1; }
static void b_size(struct moed_region_header *h) { h->region_size += 4096; }
static void b_entries(struct moed_region_header *h) { h->sq.entries = 6; }
static void b_slot(struct moed_region_header *h) { h->cq.slot_size = 128; }
static void b_align(struct moed_region_header *h) { h->msgs_offset += 8; }
static void b_outside(struct moed_region_header *h) { h->arena_offset = UINT64_MAX - 63; }
static void b_overlap(struct moed_region_header *h) { h->cq.slots_offset = h->sq.slots_offset; }
static void b_cq_huge(struct moed_region_header *h) { h->cq.entries = MOED_RING_MAX_ENTRIES; }

START_TEST(check_refuses_bad_headers)
{
	struct region rg;
	region_make(&rg, 16, 32, 1 << 16);

	expect_refused(&rg, b_magic, -EBADMSG, "magic");
	expect_refused(&rg, b_version, -EPROTONOSUPPORT, "ABI version 2");
	expect_refused(&rg, b_hsize, -EBADMSG, "header size");
	expect_refused(&rg, b_reserved0, -EBADMSG, "reserved");
	expect_refused(&rg, b_reserved2, -EBADMSG, "reserved");
	expect_refused(&rg, b_size, -EBADMSG, "mapping has");
	expect_refused(&rg, b_entries, -EBADMSG, "powers of two");
	expect_refused(&rg, b_slot, -EBADMSG, "entry sizes");
	expect_refused(&rg, b_align, -EBADMSG, "messages offset");
	expect_refused(&rg, b_outside, -EBADMSG, "arena lies outside");
	expect_refused(&rg, b_overlap, -EBADMSG, "CQ slots overlaps SQ slots");
	expect_refused(&rg, b_cq_huge, -EBADMSG, "outside the region");

	struct moed_region_header copy;
	char why[128];
	ck_assert_int_eq(moed_region_check(rg.base, 64, &copy, why, sizeof(why)), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(why, "smaller than its header"));
	free(rg.base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("abi");
	TCase *tc = tcase_create("abi");

	tcase_add_test(tc, layout_pinned);
	tcase_add_loop_test(tc, layout_is_consistent, 0, 3);
	tcase_add_test(tc, layout_rejects_bad_params);
	tcase_add_test(tc, check_refuses_bad_headers);
	/* Regions of up to a few MiB, 200 a loop: 2-3 s each under TSan on 2 vCPUs, past
	 * Check's default 4 s when the suite runs beside other tests (CI saw it). */
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
