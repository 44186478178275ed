/* SPDX-License-Identifier: MIT */
/*
 * Turning a submission entry (already copied out of shared memory) into a job the
 * daemon can trust: every enum known, every shape within limits, every buffer exactly
 * the size its shape needs and inside the client's arena.
 */
#ifndef MOED_DAEMON_JOB_VALIDATE_H
#define MOED_DAEMON_JOB_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "moed/abi.h"

/* Limits on one job; generous, but they keep every size product far from overflow. */
#define MOED_JOB_MAX_TOKENS (1u << 24)
#define MOED_JOB_MAX_TOPK 64u
#define MOED_JOB_MAX_HIDDEN (1u << 20)

struct moed_job {
	uint64_t user_data;
	uint8_t opcode; /* enum moed_opcode */
	uint8_t dtype;  /* enum moed_dtype */
	uint8_t activation;
	bool no_combine;
	bool router_weight_on_input;
	bool gated;
	uint32_t weights_id;
	uint32_t num_tokens; /* M */
	uint32_t topk;       /* K */
	uint32_t hidden_size; /* H */
	float routed_scaling_factor;
	/* spans of the host arena, each checked to lie inside it */
	struct moed_buf hidden, topk_ids, topk_weights, output, kwargs;
};

/* Bytes per element of an I/O dtype; 0 for an unknown one. */
unsigned moed_dtype_size(unsigned dtype);

/*
 * Validate `sqe` (a private copy) against an arena of `arena_size` bytes. Returns 0 and
 * fills *job, or -EINVAL (malformed or inconsistent), -EOPNOTSUPP (an arena kind this
 * daemon does not serve) with a message in err. Checks nothing about the weight set or
 * the backend: those come later, with the job's weight set in hand.
 */
int moed_job_from_sqe(const struct moed_sqe *sqe, uint64_t arena_size, struct moed_job *job,
		      struct moed_error *err);

#endif
