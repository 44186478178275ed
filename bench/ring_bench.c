/* SPDX-License-Identifier: MIT */
/*
 * Ring benchmark (not a test). Two processes, pinned to different CPUs where there are
 * two, measure in one run:
 *   - the floor: one cache line ping-ponged through shared memory (round trip);
 *   - the ring: a 64-byte message through an SPSC ring and its reply through a second
 *     ring (round trip), the protocol of common/ring.h;
 *   - one-way throughput through one ring, one entry per publish and in batches;
 * and prints p50/p99/p99.9 with ring/floor ratios (TARGETS.md, "Local IPC").
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc_floor.h"
#include "ring.h"
#include "stats.h"

#define SLOT 64u
#define ENTRIES 256u

struct shared {
	_Alignas(64) uint32_t phase; /* parent tells the child which test runs (atomic) */
	_Alignas(64) struct moed_ring_ctl req_ctl;
	_Alignas(64) struct moed_ring_ctl rsp_ctl;
	_Alignas(64) unsigned char req_slots[ENTRIES * SLOT];
	_Alignas(64) unsigned char rsp_slots[ENTRIES * SLOT];
};

enum { PHASE_IDLE, PHASE_RING_RTT, PHASE_THROUGHPUT, PHASE_EXIT };

static long iterations = 200000;
static long tput_messages = 20000000;

/* ---- child: the responder ---------------------------------------------------------- */

static void child_ring_rtt(struct shared *sh, long n)
{
	struct moed_ring req, rsp;
	moed_ring_attach(&req, &sh->req_ctl, sh->req_slots, ENTRIES, SLOT);
	moed_ring_attach(&rsp, &sh->rsp_ctl, sh->rsp_slots, ENTRIES, SLOT);
	for (long i = 0; i < n; i++) {
		while (!moed_ring_cons_ready(&req, 1))
			cpu_relax();
		uint64_t v;
		memcpy(&v, (char *)moed_ring_slot(&req, 0) + 8, sizeof(v));
		moed_ring_cons_release(&req, 1);
		while (moed_ring_prod_reserve(&rsp, 1) != 1)
			cpu_relax();
		memcpy((char *)moed_ring_slot(&rsp, 0) + 8, &v, sizeof(v));
		moed_ring_prod_publish(&rsp, 1);
	}
}

static void child_consume(struct shared *sh, long n)
{
	struct moed_ring req;
	uint64_t expect = 0;
	moed_ring_attach(&req, &sh->req_ctl, sh->req_slots, ENTRIES, SLOT);
	while (expect < (uint64_t)n) {
		uint32_t k = moed_ring_cons_ready(&req, ENTRIES);
		if (!k) {
			cpu_relax();
			continue;
		}
		for (uint32_t i = 0; i < k; i++) {
			uint64_t v;
			memcpy(&v, (char *)moed_ring_slot(&req, i) + 8, sizeof(v));
			if (v != expect++)
				_exit(3);
		}
		moed_ring_cons_release(&req, k);
	}
}

static void child_main(struct shared *sh, int cpu)
{
	bench_pin(cpu);
	for (;;) {
		uint32_t phase;
		while ((phase = __atomic_load_n(&sh->phase, __ATOMIC_ACQUIRE)) == PHASE_IDLE)
			usleep(50);
		switch (phase) {
		case PHASE_RING_RTT: child_ring_rtt(sh, iterations); break;
		case PHASE_THROUGHPUT: child_consume(sh, tput_messages); break;
		default: _exit(0);
		}
		__atomic_store_n(&sh->phase, PHASE_IDLE, __ATOMIC_RELEASE);
	}
}

/* ---- parent: the client ---------------------------------------------------------------- */

static void run_phase(struct shared *sh, uint32_t phase)
{
	__atomic_store_n(&sh->phase, phase, __ATOMIC_RELEASE);
}

static void wait_idle(struct shared *sh)
{
	while (__atomic_load_n(&sh->phase, __ATOMIC_ACQUIRE) != PHASE_IDLE)
		cpu_relax();
}

static void format_rings(struct shared *sh)
{
	moed_ring_format(&sh->req_ctl, sh->req_slots, ENTRIES, SLOT, 0xffff0000u);
	moed_ring_format(&sh->rsp_ctl, sh->rsp_slots, ENTRIES, SLOT, 0xffff0000u);
}

static struct percentiles bench_ring_rtt(struct shared *sh, uint64_t *t)
{
	struct moed_ring req, rsp;
	format_rings(sh);
	moed_ring_attach(&req, &sh->req_ctl, sh->req_slots, ENTRIES, SLOT);
	moed_ring_attach(&rsp, &sh->rsp_ctl, sh->rsp_slots, ENTRIES, SLOT);
	run_phase(sh, PHASE_RING_RTT);
	for (long i = 0; i < iterations; i++) {
		uint64_t v = (uint64_t)i, back;
		uint64_t t0 = now_ns();
		while (moed_ring_prod_reserve(&req, 1) != 1)
			cpu_relax();
		memcpy((char *)moed_ring_slot(&req, 0) + 8, &v, sizeof(v));
		moed_ring_prod_publish(&req, 1);
		while (!moed_ring_cons_ready(&rsp, 1))
			cpu_relax();
		memcpy(&back, (char *)moed_ring_slot(&rsp, 0) + 8, sizeof(back));
		moed_ring_cons_release(&rsp, 1);
		t[i] = now_ns() - t0;
		if (back != v) {
			fprintf(stderr, "ring bench: reply %llu to %llu\n", (unsigned long long)back,
				(unsigned long long)v);
			exit(1);
		}
	}
	wait_idle(sh);
	return percentiles_of(t, (size_t)iterations);
}

/* Messages per second from the parent to the child, publishing `batch` at a time. */
static double bench_throughput(struct shared *sh, uint32_t batch)
{
	struct moed_ring req;
	uint64_t next = 0;
	format_rings(sh);
	moed_ring_attach(&req, &sh->req_ctl, sh->req_slots, ENTRIES, SLOT);
	run_phase(sh, PHASE_THROUGHPUT);
	uint64_t t0 = now_ns();
	while (next < (uint64_t)tput_messages) {
		uint32_t want = batch;
		if (want > (uint64_t)tput_messages - next)
			want = (uint32_t)((uint64_t)tput_messages - next);
		int n = moed_ring_prod_reserve(&req, want);
		if (n <= 0) {
			cpu_relax();
			continue;
		}
		for (int i = 0; i < n; i++, next++)
			memcpy((char *)moed_ring_slot(&req, (uint32_t)i) + 8, &next, sizeof(next));
		moed_ring_prod_publish(&req, (uint32_t)n);
	}
	wait_idle(sh);
	return (double)tput_messages / ((double)(now_ns() - t0) * 1e-9);
}

static void print_row(const char *name, struct percentiles p, struct percentiles floor)
{
	printf("%-34s %8.3f %8.3f %8.3f", name, p.p50 / 1e3, p.p99 / 1e3, p.p999 / 1e3);
	if (floor.p50 > 0)
		printf("   %5.2fx %5.2fx %5.2fx", p.p50 / floor.p50, p.p99 / floor.p99,
		       p.p999 / floor.p999);
	printf("\n");
}

static void usage(const char *argv0)
{
	printf("usage: %s [-n ROUND_TRIPS] [-m THROUGHPUT_MESSAGES]\n"
	       "Round-trip latency and one-way throughput of moed's SPSC ring between two\n"
	       "processes, beside a shared-cache-line ping-pong floor measured in the same run.\n",
	       argv0);
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "n:m:h")) != -1) {
		switch (opt) {
		case 'n': iterations = strtol(optarg, NULL, 10); break;
		case 'm': tput_messages = strtol(optarg, NULL, 10); break;
		case 'h': usage(argv[0]); return 0;
		default: usage(argv[0]); return 2;
		}
	}
	if (iterations < 1000 || tput_messages < 1000) {
		fprintf(stderr, "ring bench: -n and -m must be at least 1000\n");
		return 2;
	}

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t *t = calloc((size_t)iterations, sizeof(*t));
	if (sh == MAP_FAILED || !t) {
		perror("ring bench");
		return 1;
	}
	alarm(600); /* a responder that died must not leave us spinning forever */

	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0)
		child_main(sh, ncpu > 1 ? 1 : 0);
	bench_pin(0);

	printf("moed ring benchmark: %ld round trips, %ld messages one way, %u-byte slots, "
	       "%u entries, %ld CPUs%s\n",
	       iterations, tput_messages, SLOT, ENTRIES, ncpu,
	       ncpu > 1 ? " (client on CPU 0, responder on CPU 1)" : " (both on one CPU: expect ms)");
	printf("%-34s %8s %8s %8s   %s\n", "round trip (us)", "p50", "p99", "p99.9",
	       "ratio to floor p50/p99/p99.9");

	/* Warm both sides up once, then measure floor and ring back to back, twice. */
	struct percentiles floor = { 0, 0, 0 }, ring;
	for (int rep = 0; rep < 2; rep++) {
		floor = floor_cacheline(iterations, t);
		ring = bench_ring_rtt(sh, t);
	}
	print_row("floor: one cache line ping-pong", floor, (struct percentiles){ 0, 0, 0 });
	print_row("ring: SPSC, seq word in slot", ring, floor);

	printf("\none-way throughput (million messages/s)\n");
	const uint32_t batches[] = { 1, 8, 32 };
	for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++)
		printf("  batch %-3u %8.2f\n", batches[i], bench_throughput(sh, batches[i]) / 1e6);

	run_phase(sh, PHASE_EXIT);
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "ring bench: responder failed (status 0x%x)\n", status);
		return 1;
	}
	return 0;
}
