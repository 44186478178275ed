/* SPDX-License-Identifier: MIT */
#include "config.h"

#define _GNU_SOURCE 1
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc_floor.h"

void bench_pin(int cpu)
{
	cpu_set_t set;
	if (cpu >= sysconf(_SC_NPROCESSORS_ONLN))
		cpu = 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(0, sizeof(set), &set);
}

struct lines {
	_Alignas(64) uint64_t ping;
	_Alignas(64) uint64_t pong;
};

static struct lines *shared_lines(void)
{
	struct lines *l = mmap(NULL, sizeof(*l), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (l == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	l->ping = l->pong = 0;
	return l;
}

static void finish(pid_t pid, struct lines *l)
{
	int status;
	waitpid(pid, &status, 0);
	munmap(l, sizeof(*l));
}

struct percentiles floor_cacheline(long n, uint64_t *t)
{
	struct lines *l = shared_lines();
	pid_t pid = fork();
	if (pid == 0) {
		bench_pin(1);
		for (long i = 1; i <= n; i++) {
			while (__atomic_load_n(&l->ping, __ATOMIC_ACQUIRE) != (uint64_t)i)
				cpu_relax();
			__atomic_store_n(&l->pong, (uint64_t)i, __ATOMIC_RELEASE);
		}
		_exit(0);
	}
	bench_pin(0);
	for (long i = 1; i <= n; i++) {
		uint64_t t0 = now_ns();
		__atomic_store_n(&l->ping, (uint64_t)i, __ATOMIC_RELEASE);
		while (__atomic_load_n(&l->pong, __ATOMIC_ACQUIRE) != (uint64_t)i)
			cpu_relax();
		t[i - 1] = now_ns() - t0;
	}
	finish(pid, l);
	return percentiles_of(t, (size_t)n);
}

struct percentiles floor_eventfd_wake(long n, uint64_t *t)
{
	struct lines *l = shared_lines();
	int efd = eventfd(0, EFD_CLOEXEC);
	pid_t pid = fork();
	if (pid == 0) {
		bench_pin(1);
		const uint64_t one = 1;
		for (long i = 1; i <= n; i++) {
			while (__atomic_load_n(&l->ping, __ATOMIC_ACQUIRE) != (uint64_t)i)
				cpu_relax();
			if (write(efd, &one, sizeof(one)) != sizeof(one))
				_exit(1);
		}
		_exit(0);
	}
	bench_pin(0);
	for (long i = 1; i <= n; i++) {
		uint64_t v, t0 = now_ns();
		__atomic_store_n(&l->ping, (uint64_t)i, __ATOMIC_RELEASE);
		if (read(efd, &v, sizeof(v)) != sizeof(v))
			break;
		t[i - 1] = now_ns() - t0;
	}
	finish(pid, l);
	close(efd);
	return percentiles_of(t, (size_t)n);
}
