/* SPDX-License-Identifier: MIT */
/*
 * The runner's sleep between asks of the backend while jobs run (moed_runner_wait_us),
 * against the rule written out here on fresh random inputs: a backend that gives no word
 * is polled at the runner's backoff; one whose word comes at once is left to it, the
 * timer only a safety net; one whose word may come late (a GPU runtime's callback
 * thread) is asked again after an eighth of the time since a job last started or ended,
 * within 10 µs and the lesser of its lateness and 200 µs.
 */
#include "config.h"

#include <check.h>

#include "check_run.h"
#include "helpers.h"
#include "runner.h"

/* The rule, stated directly. */
static unsigned expected_wait_us(bool notified, unsigned late_us, uint64_t since_ns, unsigned backoff_us)
{
	if (!notified)
		return backoff_us;
	if (late_us == 0)
		return 20000;
	double want = since_ns / 8e3;
	const double most = late_us < 200 ? late_us : 200;
	if (want < 10)
		want = 10;
	if (want > most)
		want = most;
	return (unsigned)want;
}

START_TEST(wait_follows_the_rule)
{
	uint64_t rng = test_seed() + (uint64_t)_i;
	for (int round = 0; round < 20000; round++) {
		const bool notified = test_rand(&rng) % 4 != 0;
		const unsigned late_us = test_rand(&rng) % 3 == 0 ? 0 : (unsigned)test_rand_range(&rng, 1, 1000);
		/* Times up to a minute, weighted towards the short ones where the rule bends. */
		const uint64_t since_ns = test_rand(&rng) % 2 ? test_rand_range(&rng, 0, 4000000)
								 : test_rand_range(&rng, 0, 60000000000ull);
		const unsigned backoff_us = (unsigned)test_rand_range(&rng, 10, 200);
		const unsigned got = moed_runner_wait_us(notified, late_us, since_ns, backoff_us);
		const unsigned want = expected_wait_us(notified, late_us, since_ns, backoff_us);
		ck_assert_msg(got == want, "notified %d late %u us since %llu ns backoff %u us: %u, want %u",
			      notified, late_us, (unsigned long long)since_ns, backoff_us, got, want);
	}
}
END_TEST

START_TEST(late_word_is_polled_in_proportion)
{
	/* A 400 µs job on a backend whose word may come 400 µs late is asked again every 50
	 * µs by then, not left to the 20 ms safety net. */
	ck_assert_uint_eq(moed_runner_wait_us(true, 400, 400000, 10), 50);
	ck_assert_uint_eq(moed_runner_wait_us(true, 400, 0, 10), 10);
	ck_assert_uint_eq(moed_runner_wait_us(true, 400, 5000000000ull, 10), 200);
	ck_assert_uint_eq(moed_runner_wait_us(true, 5, 5000000, 10), 5); /* never past the lateness */
	ck_assert_uint_eq(moed_runner_wait_us(true, 0, 400000, 10), 20000);
	ck_assert_uint_eq(moed_runner_wait_us(false, 400, 400000, 80), 80);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("runner");
	TCase *tc = tcase_create("wait");

	tcase_add_loop_test(tc, wait_follows_the_rule, 0, 2);
	tcase_add_test(tc, late_word_is_polled_in_proportion);
	suite_add_tcase(s, tc);

	return test_run_suite(s);
}
