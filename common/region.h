/* SPDX-License-Identifier: MIT */
/* The per-client shared region: choosing its layout (daemon), checking it (client). */
#ifndef MOED_COMMON_REGION_H
#define MOED_COMMON_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "moed/abi.h"
#include "ring.h"

/* Arena sizes are bounded so that every offset fits comfortably in 63 bits. */
#define MOED_ARENA_MAX_SIZE (UINT64_C(1) << 40)

struct moed_region_params {
	uint32_t sq_entries; /* power of two in [MOED_RING_MIN_ENTRIES, MOED_RING_MAX_ENTRIES] */
	uint32_t cq_entries; /* likewise; at least sq_entries so every job has a CQ slot */
	uint64_t arena_size; /* bytes, multiple of 64, at most MOED_ARENA_MAX_SIZE */
};

/*
 * Compute the header (offsets and sizes) of a region with these parameters.
 * Returns 0, or -EINVAL naming nothing: the parameters are the daemon's own.
 */
int moed_region_layout(const struct moed_region_params *params, struct moed_region_header *hdr);

/*
 * Write the header and format both rings in a zeroed mapping of hdr->region_size
 * bytes. `start` is the initial ring position (any value; tests use ones near 2^32).
 */
int moed_region_format(void *base, const struct moed_region_header *hdr, uint32_t start);

/*
 * Client side: copy the header of a mapping of `mapped` bytes into *hdr and check it
 * completely (magic, ABI version, reserved fields, sizes, alignment, bounds, overlap).
 * Returns 0, -EPROTONOSUPPORT for another ABI version, -EBADMSG for anything else
 * malformed, with a sentence in why[why_len].
 */
int moed_region_check(const void *base, uint64_t mapped, struct moed_region_header *hdr,
		      char *why, size_t why_len);

/* Both rings of a checked region, attached as client (SQ producer, CQ consumer). */
int moed_region_attach_rings(void *base, const struct moed_region_header *hdr,
			     struct moed_ring *sq, struct moed_ring *cq);

#endif /* MOED_COMMON_REGION_H */
