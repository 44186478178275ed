/* SPDX-License-Identifier: MIT */
/* Every Check program's main: run the suite, exit 1 if anything failed. */
#ifndef MOED_TESTS_CHECK_RUN_H
#define MOED_TESTS_CHECK_RUN_H

#include <check.h>

static inline int test_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#endif
