/* SPDX-License-Identifier: MIT */
/* A job's error: a negative errno for programs and a sentence for people. */
#ifndef MOED_COMMON_ERROR_H
#define MOED_COMMON_ERROR_H

#include "moed/abi.h"

struct moed_error {
	char msg[MOED_MSG_SIZE]; /* same size as the CQE's message slot */
};

/* Format the message (truncating to fit) and return `code`, a negative errno. */
__attribute__((format(printf, 3, 4))) int moed_error_set(struct moed_error *err, int code,
							  const char *fmt, ...);

#endif
