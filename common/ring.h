/* SPDX-License-Identifier: MIT */
/*
 * Single-producer/single-consumer ring over shared memory.
 *
 * PROTOCOL
 *
 * A ring is an array of `entries` slots (a power of two) of `slot_size` bytes each,
 * plus a control block (struct moed_ring_ctl, include/moed/abi.h). Positions are
 * free-running uint32_t counters; the slot of position p is p & (entries - 1). Every
 * comparison of positions is a wrapping subtraction, so a position passing 2^32 is an
 * ordinary event.
 *
 * Who owns what:
 *   - The producer's position (next p to write) is private to the producer.
 *   - The consumer's position (next p to read) is private to the consumer, and is
 *     published in ctl->head so that the producer knows which slots are free.
 *   - The first 32-bit word of each slot is its sequence word. Only the producer
 *     writes it; it writes p + 1 after filling the slot for position p.
 *   - ctl->flags is written only by the consumer (wake-up flags).
 *   - Neither side ever reads back a word it owns from shared memory: a peer may have
 *     scribbled it. The private copies are the truth.
 *
 * Initial state (moed_ring_format, done by the creator before the region is shared,
 * with an arbitrary start position s): ctl->head = s, and the slot of each position
 * p in [s, s + entries) holds seq = p, which is "not ready" for p (ready means p + 1).
 * Both sides begin at position s (the attaching side reads it from ctl->head).
 *
 * Producing n entries at position P (the producer's private position):
 *   1. free = entries - (P - head_cache). If free < n, reload
 *        head = load_acquire(ctl->head)                                  [A1]
 *      and recompute. P - head > entries means the consumer published an impossible
 *      head: the ring is corrupt (-EPROTO), nothing is written.
 *   2. Fill the payload of slots P .. P+n-1 (everything but the sequence words).
 *   3. For each i in order: store_release(slot(P+i).seq, P+i+1)             [R1]
 *      A release store is a plain store on x86 and keeps the pairing visible to
 *      ThreadSanitizer; there is no index store, so the batch costs no extra fence.
 *   4. P += n.
 *   Full is P - head == entries: every slot is usable, none is wasted.
 *
 * Consuming at position C (the consumer's private position):
 *   1. ready: count i = 0, 1, ... while i < entries and
 *        load_acquire(slot(C+i).seq) == C+i+1                                [A2]
 *      A2 pairs with R1: the payload the producer wrote before R1 is visible.
 *      The bound i < entries keeps a hostile producer from making the consumer read
 *      past one lap.
 *   2. Copy the payload out of the slots (a peer may change shared memory at any
 *      time: validate only the private copy).
 *   3. C += n; store_release(ctl->head, C)                                    [R2]
 *      One release store per batch. R2 pairs with A1: the consumer's reads of the
 *      slots happen before the producer overwrites them.
 *
 * Sleeping and waking (the io_uring SQPOLL idea; a lost wake-up is the bug to avoid):
 *   consumer, before blocking on its eventfd:
 *      flags |= NEED_WAKEUP (relaxed store); seq_cst fence                    [F1]
 *      if an entry is ready at C: clear the flag and go on consuming.
 *      else block on the eventfd; after waking, clear the flag.
 *   producer, after publishing (R1):
 *      seq_cst fence                                                          [F2]
 *      if (load_relaxed(flags) & NEED_WAKEUP): signal the consumer's eventfd.
 *   F1 and F2 order each side's store before its load (a store-buffering pattern):
 *   either the consumer's recheck sees the new entry, or the producer sees the flag,
 *   or both (a spurious wake-up, which is harmless). Never neither.
 */
#ifndef MOED_COMMON_RING_H
#define MOED_COMMON_RING_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "moed/abi.h"

/* One side's private view of a ring. */
struct moed_ring {
	struct moed_ring_ctl *ctl;
	unsigned char *slots;
	uint32_t entries;
	uint32_t mask;
	uint32_t slot_shift; /* log2(slot_size) */
	uint32_t pos;        /* next position to produce, or to consume */
	uint32_t head_cache; /* producer: last consumer head seen */
};

/*
 * Initialise a ring's shared memory (creator only, before sharing). slot_size is a
 * power of two of at least 8 bytes; entries a power of two in
 * [MOED_RING_MIN_ENTRIES, MOED_RING_MAX_ENTRIES]. Returns 0 or -EINVAL.
 */
int moed_ring_format(struct moed_ring_ctl *ctl, void *slots, uint32_t entries,
		     uint32_t slot_size, uint32_t start);

/*
 * Attach one side to a formatted ring: the position starts at ctl->head. Returns 0 or
 * -EINVAL for a bad size.
 */
int moed_ring_attach(struct moed_ring *r, struct moed_ring_ctl *ctl, void *slots,
		     uint32_t entries, uint32_t slot_size);

static inline uint32_t *moed__ring_seq(const struct moed_ring *r, uint32_t p)
{
	return (uint32_t *)(void *)(r->slots + ((size_t)(p & r->mask) << r->slot_shift));
}

/* The slot at `offset` entries after this side's position. */
static inline void *moed_ring_slot(const struct moed_ring *r, uint32_t offset)
{
	return moed__ring_seq(r, r->pos + offset);
}

/*
 * Producer: how many of `want` slots may be filled now (0 when full), or -EPROTO when
 * the consumer has published an impossible head.
 */
static inline int moed_ring_prod_reserve(struct moed_ring *r, uint32_t want)
{
	uint32_t used = r->pos - r->head_cache;

	if (r->entries - used < want) {
		uint32_t head = __atomic_load_n(&r->ctl->head, __ATOMIC_ACQUIRE); /* A1 */

		used = r->pos - head;
		if (used > r->entries)
			return -EPROTO;
		r->head_cache = head;
	}
	uint32_t space = r->entries - used;
	return (int)(want < space ? want : space);
}

/* Producer: publish the next n filled slots (n no more than the last reservation). */
static inline void moed_ring_prod_publish(struct moed_ring *r, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t p = r->pos + i;
		__atomic_store_n(moed__ring_seq(r, p), p + 1, __ATOMIC_RELEASE); /* R1 */
	}
	r->pos += n;
}

/* Consumer: how many entries, at most `max`, are ready at this side's position. */
static inline uint32_t moed_ring_cons_ready(const struct moed_ring *r, uint32_t max)
{
	uint32_t limit = max < r->entries ? max : r->entries;
	uint32_t n = 0;

	while (n < limit) {
		uint32_t p = r->pos + n;
		if (__atomic_load_n(moed__ring_seq(r, p), __ATOMIC_ACQUIRE) != p + 1) /* A2 */
			break;
		n++;
	}
	return n;
}

/* Consumer: hand the next n consumed slots back to the producer. */
static inline void moed_ring_cons_release(struct moed_ring *r, uint32_t n)
{
	r->pos += n;
	__atomic_store_n(&r->ctl->head, r->pos, __ATOMIC_RELEASE); /* R2 */
}

/*
 * Consumer: raise the need-wakeup flag (F1). The caller must then recheck the ring
 * before it blocks; moed_ring_cons_prepare_sleep() does both.
 */
static inline void moed_ring_cons_set_need_wakeup(struct moed_ring *r)
{
	/* Only the consumer writes flags; a peer's scribble is overwritten, not trusted. */
	__atomic_store_n(&r->ctl->flags, MOED_RING_F_NEED_WAKEUP, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* F1 */
}

/*
 * Consumer: announce that it is about to sleep. Returns true when it may block (the
 * flag is set and the ring is still empty), false when an entry arrived meanwhile (the
 * flag is cleared again). After a wake-up, call moed_ring_cons_woke().
 */
static inline bool moed_ring_cons_prepare_sleep(struct moed_ring *r)
{
	moed_ring_cons_set_need_wakeup(r);
	if (moed_ring_cons_ready(r, 1) == 0)
		return true;
	__atomic_store_n(&r->ctl->flags, 0, __ATOMIC_RELAXED);
	return false;
}

static inline void moed_ring_cons_woke(struct moed_ring *r)
{
	__atomic_store_n(&r->ctl->flags, 0, __ATOMIC_RELAXED);
}

/* Producer: entries published but not yet released by the consumer (0 if corrupt). */
static inline uint32_t moed_ring_prod_pending(const struct moed_ring *r)
{
	uint32_t used = r->pos - __atomic_load_n(&r->ctl->head, __ATOMIC_ACQUIRE);
	return used <= r->entries ? used : 0;
}

/* Producer, after publishing: must the consumer be signalled? */
static inline bool moed_ring_prod_needs_wakeup(const struct moed_ring *r)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* F2 */
	return __atomic_load_n(&r->ctl->flags, __ATOMIC_RELAXED) & MOED_RING_F_NEED_WAKEUP;
}

#endif /* MOED_COMMON_RING_H */
