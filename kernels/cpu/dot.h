/* SPDX-License-Identifier: MIT */
/*
 * Dot products of up to four f32 vectors with one weight row, so that the row is loaded
 * once for four tokens. Built for AVX2+FMA and for baseline x86-64 and chosen at load
 * time (target_clones) where the compiler supports it.
 */
#ifndef MOED_CPU_DOT_H
#define MOED_CPU_DOT_H

#include <stdint.h>

/* out[t] = x[t] . w over n elements, t < 4 (repeat a pointer for fewer rows). */
void moed_dot4_f32(const float *const x[4], const float *w, uint32_t n, float out[4]);
/* The same with a bf16 weight row, widened in registers. */
void moed_dot4_bf16(const float *const x[4], const uint16_t *w, uint32_t n, float out[4]);

#endif
