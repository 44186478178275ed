/* SPDX-License-Identifier: MIT */
/* A backend called directly by a test: weights uploaded, a job laid out in an arena. */
#ifndef MOED_TESTS_BACKEND_SETUP_H
#define MOED_TESTS_BACKEND_SETUP_H

#include <stdbool.h>

#include "backend.h"
#include "moe_ref.h"

/* The backend under test: set by the test's main(). */
extern const struct moed_backend_ops *ops;

struct setup {
	struct moed_backend *b;
	struct moed_weights w;
	struct moed_arena arena;
	struct moed_job job;
	bool own_backend; /* setup_free destroys it */
};

/* A fresh backend with the problem's weights, and its tensors laid out in a fresh arena
 * with the output poisoned. */
void setup_make(struct setup *s, const struct ref_problem *p, unsigned threads, uint32_t withhold);
/* The same on an existing backend (weights of its own, the backend shared). */
void setup_make_on(struct setup *s, struct moed_backend *b, const struct ref_problem *p);
void setup_free(struct setup *s);
/* Admission checks, then the backend's run(). */
int run(struct setup *s, const struct moed_kwargs *kw, struct moed_error *err);
/* The same as the daemon runs it: admission, then a client context on the setup's arena
 * (pinned by the GPU backend), submit and poll until done; 0 or the job's error. */
int run_as_client(struct setup *s, const struct moed_kwargs *kw, struct moed_error *err);
/* A small fixed problem (fresh random tensors) for the error cases. */
void small_problem(struct ref_problem *p, uint64_t *rng);

#endif
