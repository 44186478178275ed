/* SPDX-License-Identifier: MIT */
/* Ring set-up; the hot path is inline in ring.h, whose head comment is the protocol. */
#include "config.h"

#include <string.h>

#include "ring.h"

static bool is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

static int ring_geometry_check(uint32_t entries, uint32_t slot_size)
{
	if (!is_pow2(entries) || entries < MOED_RING_MIN_ENTRIES || entries > MOED_RING_MAX_ENTRIES)
		return -EINVAL;
	if (!is_pow2(slot_size) || slot_size < sizeof(uint32_t) * 2)
		return -EINVAL;
	return 0;
}

int moed_ring_format(struct moed_ring_ctl *ctl, void *slots, uint32_t entries,
		     uint32_t slot_size, uint32_t start)
{
	int r = ring_geometry_check(entries, slot_size);
	if (r < 0)
		return r;

	memset(ctl, 0, sizeof(*ctl));
	memset(slots, 0, (size_t)entries * slot_size);
	ctl->head = start;
	for (uint32_t i = 0; i < entries; i++) {
		uint32_t p = start + i;
		uint32_t *seq = (uint32_t *)(void *)((unsigned char *)slots +
						     (size_t)(p & (entries - 1)) * slot_size);
		*seq = p; /* "not ready" for p, whose ready value is p + 1 */
	}
	return 0;
}

int moed_ring_attach(struct moed_ring *r, struct moed_ring_ctl *ctl, void *slots,
		     uint32_t entries, uint32_t slot_size)
{
	int e = ring_geometry_check(entries, slot_size);
	if (e < 0)
		return e;

	*r = (struct moed_ring){
		.ctl = ctl,
		.slots = slots,
		.entries = entries,
		.mask = entries - 1,
		.slot_shift = (uint32_t)__builtin_ctz(slot_size),
	};
	r->pos = __atomic_load_n(&ctl->head, __ATOMIC_ACQUIRE);
	r->head_cache = r->pos;
	return 0;
}
