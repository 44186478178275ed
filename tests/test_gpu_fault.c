/* SPDX-License-Identifier: MIT */
/*
 * A kernel that traps loses the GPU for the whole process: the job fails with
 * -ENOTRECOVERABLE and the runtime's words, and so does every later job, saying why.
 * Its own program, since nothing runs on the GPU after the fault. Skips (77) without a
 * device. The fault comes from MOED_HIP_INJECT_FAULT=1, read when the backend is made.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_setup.h"
#include "check_run.h"
#include "helpers.h"

START_TEST(kernel_fault_fails_every_later_job)
{
	uint64_t rng = test_seed();
	struct ref_problem p;
	struct setup s;
	struct moed_error err;
	static const struct moed_kwargs none;
	small_problem(&p, &rng);
	setenv("MOED_HIP_INJECT_FAULT", "1", 1);
	setup_make(&s, &p, 1, 0);
	ck_assert_int_eq(run(&s, &none, &err), -ENOTRECOVERABLE);
	ck_assert_msg(strstr(err.msg, "GPU fault: ") && strstr(err.msg, "until moed restarts"),
		      "message: %s", err.msg);
	ck_assert_int_eq(run(&s, &none, &err), -ENOTRECOVERABLE);
	ck_assert_msg(strstr(err.msg, "the GPU faulted earlier ("), "message: %s", err.msg);
	setup_free(&s);
	ref_problem_free(&p);
}
END_TEST

int main(void)
{
	struct moed_error err = { "" };
	ops = moed_backend_find("hip", &err);
	if (!ops) {
		printf("backend hip unavailable, skipped: %s\n", err.msg);
		return TEST_EXIT_SKIP;
	}
	setenv("CK_FORK", "no", 1); /* the GPU runtime does not survive fork() */
	Suite *s = suite_create("gpu_fault");
	TCase *tc = tcase_create("fault");
	tcase_add_test(tc, kernel_fault_fails_every_later_job);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return test_run_suite(s);
}
