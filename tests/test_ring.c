/* SPDX-License-Identifier: MIT */
/*
 * The SPSC ring: single-thread edge cases (empty, full, batches, wrap-around past 2^32,
 * a hostile peer), the sleep/wake-up handshake between two processes, and a
 * two-process stress that pushes 10 million checksummed entries through a small ring.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_run.h"
#include "helpers.h"
#include "ring.h"

/* A 64-byte test slot: the sequence word, then a payload with its own checksum. */
struct msg {
	uint32_t seq;
	uint32_t sum;
	uint64_t index;
	uint64_t words[6];
};
_Static_assert(sizeof(struct msg) == 64, "test slot is one cache line");

/* FNV-1a over the payload; independent of anything the ring does. */
static uint32_t msg_sum(const struct msg *m)
{
	const unsigned char *p = (const unsigned char *)&m->index;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < sizeof(*m) - offsetof(struct msg, index); i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static void msg_fill(struct msg *m, uint64_t index)
{
	uint64_t s = index * 0x2545f4914f6cdd1dull;
	m->index = index;
	for (int i = 0; i < 6; i++)
		m->words[i] = test_rand(&s);
	m->sum = msg_sum(m);
}

/* Shared memory for one ring of `entries` test slots, visible across fork(). */
struct shared_ring {
	struct moed_ring_ctl *ctl;
	struct msg *slots;
	size_t bytes;
	uint32_t entries;
};

static void shared_ring_make(struct shared_ring *sr, uint32_t entries, uint32_t start)
{
	sr->entries = entries;
	sr->bytes = sizeof(struct moed_ring_ctl) + entries * sizeof(struct msg);
	void *mem = mmap(NULL, sr->bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	sr->ctl = mem;
	sr->slots = (struct msg *)(void *)((char *)mem + sizeof(struct moed_ring_ctl));
	ck_assert_int_eq(moed_ring_format(sr->ctl, sr->slots, entries, sizeof(struct msg), start), 0);
}

static void shared_ring_attach(struct shared_ring *sr, struct moed_ring *r)
{
	ck_assert_int_eq(moed_ring_attach(r, sr->ctl, sr->slots, sr->entries, sizeof(struct msg)), 0);
}

static void push(struct moed_ring *r, uint32_t n, uint64_t *next)
{
	ck_assert_int_eq(moed_ring_prod_reserve(r, n), (int)n);
	for (uint32_t i = 0; i < n; i++)
		msg_fill(moed_ring_slot(r, i), (*next)++);
	moed_ring_prod_publish(r, n);
}

static void pop(struct moed_ring *r, uint32_t n, uint64_t *next)
{
	ck_assert_uint_eq(moed_ring_cons_ready(r, n), n);
	for (uint32_t i = 0; i < n; i++) {
		struct msg m;
		memcpy(&m, moed_ring_slot(r, i), sizeof(m));
		ck_assert_uint_eq(m.index, *next);
		ck_assert_uint_eq(m.sum, msg_sum(&m));
		(*next)++;
	}
	moed_ring_cons_release(r, n);
}

START_TEST(empty_and_full)
{
	struct shared_ring sr;
	struct moed_ring prod, cons;
	uint64_t in = 0, out = 0;

	shared_ring_make(&sr, 8, 0);
	shared_ring_attach(&sr, &prod);
	shared_ring_attach(&sr, &cons);

	ck_assert_uint_eq(moed_ring_cons_ready(&cons, 8), 0);   /* empty */
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 100), 8); /* every slot usable */
	push(&prod, 8, &in);
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 1), 0);   /* full */
	ck_assert_uint_eq(moed_ring_cons_ready(&cons, 100), 8);
	pop(&cons, 3, &out);
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 8), 3);   /* exactly what was freed */
	push(&prod, 3, &in);
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 1), 0);
	pop(&cons, 8, &out);
	ck_assert_uint_eq(moed_ring_cons_ready(&cons, 8), 0);
	ck_assert_uint_eq(in, out);
	munmap(sr.ctl, sr.bytes);
}
END_TEST

/* Positions start just below 2^32 (and elsewhere) and run through several laps. */
START_TEST(wraps_past_2_32)
{
	const uint32_t starts[] = { 0xffffffffu - 20, 0xfffffff8u, 0x7ffffffcu, 0, 0xffffffffu };
	uint64_t s = test_seed();

	for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++) {
		struct shared_ring sr;
		struct moed_ring prod, cons;
		uint64_t in = 0, out = 0;

		shared_ring_make(&sr, 16, starts[k]);
		shared_ring_attach(&sr, &prod);
		shared_ring_attach(&sr, &cons);
		ck_assert_uint_eq(prod.pos, starts[k]);
		while (in < 2000) {
			uint32_t n = (uint32_t)test_rand_range(&s, 1, 16);
			int space = moed_ring_prod_reserve(&prod, n);
			ck_assert_int_ge(space, 0);
			push(&prod, (uint32_t)space, &in);
			uint32_t ready = moed_ring_cons_ready(&cons, 16);
			ck_assert_uint_eq(ready, in - out);
			pop(&cons, (uint32_t)test_rand_range(&s, 0, ready), &out);
		}
		pop(&cons, (uint32_t)(in - out), &out);
		ck_assert_uint_eq(cons.pos, starts[k] + (uint32_t)in);
		ck_assert_uint_eq(sr.ctl->head, cons.pos);
		munmap(sr.ctl, sr.bytes);
	}
}
END_TEST

START_TEST(hostile_peers)
{
	struct shared_ring sr;
	struct moed_ring prod, cons;
	uint64_t in = 0;

	shared_ring_make(&sr, 8, 0xfffffffeu);
	shared_ring_attach(&sr, &prod);
	shared_ring_attach(&sr, &cons);
	push(&prod, 8, &in);

	/* A consumer that publishes a head ahead of the producer, or a lap behind. */
	sr.ctl->head = prod.pos + 1;
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 1), -EPROTO);
	sr.ctl->head = prod.pos - 9;
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 1), -EPROTO);
	sr.ctl->head = prod.pos - 8; /* full again: consistent */
	ck_assert_int_eq(moed_ring_prod_reserve(&prod, 1), 0);

	/* A producer marking every slot ready, forever: the consumer still stops at a lap. */
	for (uint32_t i = 0; i < 8; i++)
		sr.slots[i].seq = 0; /* nonsense values */
	ck_assert_uint_eq(moed_ring_cons_ready(&cons, 1000), 0);
	for (uint32_t i = 0; i < 8; i++)
		((struct msg *)moed_ring_slot(&cons, i))->seq = cons.pos + i + 1;
	ck_assert_uint_eq(moed_ring_cons_ready(&cons, 1000), 8);

	/* A peer scribbling the consumer's own head does not move the consumer. */
	uint32_t before = cons.pos;
	sr.ctl->head = 12345;
	moed_ring_cons_release(&cons, 2);
	ck_assert_uint_eq(cons.pos, before + 2);
	ck_assert_uint_eq(sr.ctl->head, before + 2);
	munmap(sr.ctl, sr.bytes);
}
END_TEST

START_TEST(attach_rejects_bad_geometry)
{
	struct moed_ring_ctl ctl;
	struct msg slots[8];
	struct moed_ring r;

	ck_assert_int_eq(moed_ring_format(&ctl, slots, 6, sizeof(struct msg), 0), -EINVAL);
	ck_assert_int_eq(moed_ring_format(&ctl, slots, 1, sizeof(struct msg), 0), -EINVAL);
	ck_assert_int_eq(moed_ring_format(&ctl, slots, 8, 48, 0), -EINVAL);
	ck_assert_int_eq(moed_ring_attach(&r, &ctl, slots, 0, sizeof(struct msg)), -EINVAL);
	ck_assert_int_eq(moed_ring_attach(&r, &ctl, slots, 8, 4), -EINVAL);
}
END_TEST

START_TEST(sleep_flag_rules)
{
	struct shared_ring sr;
	struct moed_ring prod, cons;
	uint64_t in = 0, out = 0;

	shared_ring_make(&sr, 4, 7);
	shared_ring_attach(&sr, &prod);
	shared_ring_attach(&sr, &cons);

	ck_assert(!moed_ring_prod_needs_wakeup(&prod));
	ck_assert(moed_ring_cons_prepare_sleep(&cons)); /* empty: may sleep */
	ck_assert(moed_ring_prod_needs_wakeup(&prod));
	moed_ring_cons_woke(&cons);
	ck_assert(!moed_ring_prod_needs_wakeup(&prod));

	push(&prod, 1, &in);
	ck_assert(!moed_ring_cons_prepare_sleep(&cons)); /* an entry is there: don't sleep */
	ck_assert(!moed_ring_prod_needs_wakeup(&prod));  /* and the flag is down again */
	pop(&cons, 1, &out);
	munmap(sr.ctl, sr.bytes);
}
END_TEST

/* Wait for entries the way the daemon will: spin a little, then sleep on an eventfd. */
static uint32_t wait_ready(struct moed_ring *r, int efd, uint32_t max)
{
	for (;;) {
		for (int spin = 0; spin < 256; spin++) {
			uint32_t n = moed_ring_cons_ready(r, max);
			if (n)
				return n;
		}
		if (moed_ring_cons_prepare_sleep(r)) {
			uint64_t v;
			struct pollfd p = { .fd = efd, .events = POLLIN };
			/* A lost wake-up shows as this 10 s poll running out. */
			ck_assert_int_eq(poll(&p, 1, 10000), 1);
			ck_assert_int_eq(read(efd, &v, sizeof(v)), (int)sizeof(v));
			moed_ring_cons_woke(r);
		}
	}
}

/* Many single entries with the consumer usually asleep: none may be stranded. */
START_TEST(no_lost_wakeups)
{
	const uint64_t total = 20000;
	struct shared_ring sr;
	int efd = eventfd(0, EFD_CLOEXEC);
	ck_assert_int_ge(efd, 0);
	shared_ring_make(&sr, 4, 0xffffff00u);

	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct moed_ring prod;
		uint64_t in = 0, s = test_seed();
		shared_ring_attach(&sr, &prod);
		while (in < total) {
			int space = moed_ring_prod_reserve(&prod, 1);
			if (space <= 0) {
				sched_yield();
				continue;
			}
			msg_fill(moed_ring_slot(&prod, 0), in++);
			moed_ring_prod_publish(&prod, 1);
			if (moed_ring_prod_needs_wakeup(&prod)) {
				uint64_t one = 1;
				if (write(efd, &one, sizeof(one)) != sizeof(one))
					_exit(3);
			}
			if (test_rand(&s) % 4 == 0)
				sched_yield(); /* let the consumer fall asleep often */
		}
		_exit(0);
	}

	struct moed_ring cons;
	uint64_t out = 0;
	shared_ring_attach(&sr, &cons);
	while (out < total)
		pop(&cons, wait_ready(&cons, efd, 4), &out);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(efd);
	munmap(sr.ctl, sr.bytes);
}
END_TEST

/*
 * Two processes, 10 million entries, a 64-entry ring, random batch sizes on both
 * sides. The consumer checks every entry's index (nothing lost, duplicated or
 * reordered) and checksum (nothing torn). Both sides spin briefly, then yield, so the
 * test also progresses when both share one CPU.
 */
START_TEST(two_process_stress)
{
	const uint64_t total = 10 * 1000 * 1000;
	struct shared_ring sr;
	shared_ring_make(&sr, 64, 0xfffff000u); /* wraps 2^32 early on */

	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct moed_ring prod;
		uint64_t in = 0, s = test_seed() ^ 1;
		shared_ring_attach(&sr, &prod);
		unsigned idle = 0;
		while (in < total) {
			uint32_t want = (uint32_t)test_rand_range(&s, 1, 32);
			if (want > total - in)
				want = (uint32_t)(total - in);
			int n = moed_ring_prod_reserve(&prod, want);
			if (n < 0)
				_exit(2);
			if (n == 0) {
				if (++idle > 64)
					sched_yield();
				continue;
			}
			idle = 0;
			for (int i = 0; i < n; i++)
				msg_fill(moed_ring_slot(&prod, (uint32_t)i), in++);
			moed_ring_prod_publish(&prod, (uint32_t)n);
		}
		_exit(0);
	}

	struct moed_ring cons;
	uint64_t out = 0, s = test_seed() ^ 2, bad = 0;
	unsigned idle = 0;
	shared_ring_attach(&sr, &cons);
	while (out < total) {
		uint32_t n = moed_ring_cons_ready(&cons, (uint32_t)test_rand_range(&s, 1, 64));
		if (n == 0) {
			if (++idle > 64)
				sched_yield();
			continue;
		}
		idle = 0;
		for (uint32_t i = 0; i < n; i++) {
			struct msg m;
			memcpy(&m, moed_ring_slot(&cons, i), sizeof(m));
			if (m.index != out || m.sum != msg_sum(&m))
				bad++;
			out++;
		}
		moed_ring_cons_release(&cons, n);
		ck_assert_msg(bad == 0, "entry %llu arrived wrong", (unsigned long long)out);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_uint_eq(out, total);
	ck_assert_uint_eq(moed_ring_cons_ready(&cons, 64), 0); /* nothing extra */
	munmap(sr.ctl, sr.bytes);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ring");
	TCase *edge = tcase_create("edge");
	TCase *procs = tcase_create("two-process");

	tcase_add_test(edge, empty_and_full);
	tcase_add_test(edge, wraps_past_2_32);
	tcase_add_test(edge, hostile_peers);
	tcase_add_test(edge, attach_rejects_bad_geometry);
	tcase_add_test(edge, sleep_flag_rules);
	tcase_add_test(procs, no_lost_wakeups);
	tcase_add_test(procs, two_process_stress);
	tcase_set_timeout(procs, 600);
	suite_add_tcase(s, edge);
	suite_add_tcase(s, procs);

	return test_run_suite(s);
}
