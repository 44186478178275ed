/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "region.h"

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static bool ring_entries_ok(uint32_t n)
{
	return is_pow2(n) && n >= MOED_RING_MIN_ENTRIES && n <= MOED_RING_MAX_ENTRIES;
}

static uint64_t align_up(uint64_t x)
{
	return (x + MOED_CACHELINE - 1) & ~(uint64_t)(MOED_CACHELINE - 1);
}

int moed_region_layout(const struct moed_region_params *p, struct moed_region_header *hdr)
{
	if (!ring_entries_ok(p->sq_entries) || !ring_entries_ok(p->cq_entries) ||
	    p->cq_entries < p->sq_entries)
		return -EINVAL;
	if (p->arena_size == 0 || p->arena_size % MOED_CACHELINE ||
	    p->arena_size > MOED_ARENA_MAX_SIZE)
		return -EINVAL;

	memset(hdr, 0, sizeof(*hdr));
	hdr->magic = MOED_REGION_MAGIC;
	hdr->abi_version = MOED_ABI_VERSION;
	hdr->header_size = sizeof(*hdr);

	uint64_t at = align_up(sizeof(*hdr));
	hdr->sq = (struct moed_ring_layout){ .ctl_offset = at, .entries = p->sq_entries,
					     .slot_size = sizeof(struct moed_sqe) };
	at = align_up(at + sizeof(struct moed_ring_ctl));
	hdr->sq.slots_offset = at;
	at = align_up(at + (uint64_t)p->sq_entries * sizeof(struct moed_sqe));

	hdr->cq = (struct moed_ring_layout){ .ctl_offset = at, .entries = p->cq_entries,
					     .slot_size = sizeof(struct moed_cqe) };
	at = align_up(at + sizeof(struct moed_ring_ctl));
	hdr->cq.slots_offset = at;
	at = align_up(at + (uint64_t)p->cq_entries * sizeof(struct moed_cqe));

	hdr->msgs_offset = at;
	hdr->msg_size = sizeof(struct moed_msg);
	at = align_up(at + (uint64_t)p->cq_entries * sizeof(struct moed_msg));

	/* The arena starts on a page so that it can later be pinned or registered whole. */
	at = (at + 4095) & ~UINT64_C(4095);
	hdr->arena_offset = at;
	hdr->arena_size = p->arena_size;
	hdr->region_size = at + p->arena_size;
	return 0;
}

int moed_region_format(void *base, const struct moed_region_header *hdr, uint32_t start)
{
	unsigned char *b = base;
	int r;

	memcpy(b, hdr, sizeof(*hdr));
	r = moed_ring_format((struct moed_ring_ctl *)(void *)(b + hdr->sq.ctl_offset),
			     b + hdr->sq.slots_offset, hdr->sq.entries, hdr->sq.slot_size, start);
	if (r < 0)
		return r;
	return moed_ring_format((struct moed_ring_ctl *)(void *)(b + hdr->cq.ctl_offset),
				b + hdr->cq.slots_offset, hdr->cq.entries, hdr->cq.slot_size,
				start);
}

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (why && len) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* [off, off + len) lies inside [0, size), computed without overflow. */
static bool span_inside(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

struct span {
	const char *name;
	uint64_t off, len;
};

int moed_region_check(const void *base, uint64_t mapped, struct moed_region_header *hdr,
		      char *why, size_t why_len)
{
	if (mapped < sizeof(*hdr))
		return bad(why, why_len, "region of %llu bytes is smaller than its header",
			   (unsigned long long)mapped);
	memcpy(hdr, base, sizeof(*hdr));

	if (hdr->magic != MOED_REGION_MAGIC)
		return bad(why, why_len, "region magic 0x%08x is not moed's", hdr->magic);
	if (hdr->abi_version != MOED_ABI_VERSION) {
		if (why && why_len)
			snprintf(why, why_len, "daemon speaks ABI version %u, this client %u",
				 hdr->abi_version, MOED_ABI_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (hdr->header_size != sizeof(*hdr))
		return bad(why, why_len, "header size %u, expected %zu", hdr->header_size,
			   sizeof(*hdr));
	if (hdr->reserved0 || hdr->reserved1)
		return bad(why, why_len, "reserved header field is not zero");
	for (size_t i = 0; i < sizeof(hdr->reserved2) / sizeof(hdr->reserved2[0]); i++)
		if (hdr->reserved2[i])
			return bad(why, why_len, "reserved header field is not zero");
	if (hdr->region_size != mapped)
		return bad(why, why_len, "header says %llu bytes, mapping has %llu",
			   (unsigned long long)hdr->region_size, (unsigned long long)mapped);
	if (!ring_entries_ok(hdr->sq.entries) || !ring_entries_ok(hdr->cq.entries))
		return bad(why, why_len, "ring sizes %u/%u are not powers of two in [%u, %u]",
			   hdr->sq.entries, hdr->cq.entries, MOED_RING_MIN_ENTRIES,
			   MOED_RING_MAX_ENTRIES);
	if (hdr->sq.slot_size != sizeof(struct moed_sqe) ||
	    hdr->cq.slot_size != sizeof(struct moed_cqe) || hdr->msg_size != sizeof(struct moed_msg))
		return bad(why, why_len, "entry sizes %u/%u/%u do not match this ABI",
			   hdr->sq.slot_size, hdr->cq.slot_size, hdr->msg_size);

	const struct span spans[] = {
		{ "header", 0, sizeof(*hdr) },
		{ "SQ control", hdr->sq.ctl_offset, sizeof(struct moed_ring_ctl) },
		{ "SQ slots", hdr->sq.slots_offset, (uint64_t)hdr->sq.entries * hdr->sq.slot_size },
		{ "CQ control", hdr->cq.ctl_offset, sizeof(struct moed_ring_ctl) },
		{ "CQ slots", hdr->cq.slots_offset, (uint64_t)hdr->cq.entries * hdr->cq.slot_size },
		{ "messages", hdr->msgs_offset, (uint64_t)hdr->cq.entries * hdr->msg_size },
		{ "arena", hdr->arena_offset, hdr->arena_size },
	};
	const size_t n = sizeof(spans) / sizeof(spans[0]);
	for (size_t i = 0; i < n; i++) {
		if (spans[i].off % MOED_CACHELINE)
			return bad(why, why_len, "%s offset %llu is not cache-line aligned",
				   spans[i].name, (unsigned long long)spans[i].off);
		if (!span_inside(spans[i].off, spans[i].len, mapped))
			return bad(why, why_len, "%s lies outside the region", spans[i].name);
		for (size_t j = 0; j < i; j++)
			if (spans[i].off < spans[j].off + spans[j].len &&
			    spans[j].off < spans[i].off + spans[i].len)
				return bad(why, why_len, "%s overlaps %s", spans[i].name,
					   spans[j].name);
	}
	return 0;
}

int moed_region_attach_rings(void *base, const struct moed_region_header *hdr,
			     struct moed_ring *sq, struct moed_ring *cq)
{
	unsigned char *b = base;
	int r = moed_ring_attach(sq, (struct moed_ring_ctl *)(void *)(b + hdr->sq.ctl_offset),
				 b + hdr->sq.slots_offset, hdr->sq.entries, hdr->sq.slot_size);
	if (r < 0)
		return r;
	return moed_ring_attach(cq, (struct moed_ring_ctl *)(void *)(b + hdr->cq.ctl_offset),
				b + hdr->cq.slots_offset, hdr->cq.entries, hdr->cq.slot_size);
}
