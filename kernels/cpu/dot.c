/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <string.h>

#include "dot.h"
#include "dtype.h"

/* The 32-byte vectors only pass between static inline helpers of this file, never across
 * an ABI boundary, so GCC's note about their calling convention does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));

/* ThreadSanitizer's runtime is not up when ifunc resolvers run: no clones under it. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOED_NO_CLONES 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define MOED_NO_CLONES 1
#endif

#if defined(__x86_64__) && !defined(MOED_NO_CLONES) && \
	(defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 12)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

static inline float hsum(v8f v)
{
	return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline v8f load8(const float *p)
{
	v8f v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline v8f widen_bf16(const uint16_t *p)
{
	v8h h;
	memcpy(&h, p, sizeof(h));
	v8u u = __builtin_convertvector(h, v8u) << 16;
	v8f f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

MULTIVERSION void moed_dot4_f32(const float *const x[4], const float *w, uint32_t n, float out[4])
{
	v8f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
	uint32_t i = 0;
	for (; i + 8 <= n; i += 8) {
		const v8f wv = load8(w + i);
		a0 += load8(x[0] + i) * wv;
		a1 += load8(x[1] + i) * wv;
		a2 += load8(x[2] + i) * wv;
		a3 += load8(x[3] + i) * wv;
	}
	float s[4] = { hsum(a0), hsum(a1), hsum(a2), hsum(a3) };
	for (; i < n; i++)
		for (int t = 0; t < 4; t++)
			s[t] += x[t][i] * w[i];
	memcpy(out, s, sizeof(s));
}

MULTIVERSION void moed_dot4_bf16(const float *const x[4], const uint16_t *w, uint32_t n, float out[4])
{
	v8f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
	uint32_t i = 0;
	for (; i + 8 <= n; i += 8) {
		const v8f wv = widen_bf16(w + i);
		a0 += load8(x[0] + i) * wv;
		a1 += load8(x[1] + i) * wv;
		a2 += load8(x[2] + i) * wv;
		a3 += load8(x[3] + i) * wv;
	}
	float s[4] = { hsum(a0), hsum(a1), hsum(a2), hsum(a3) };
	for (; i < n; i++) {
		const float wf = moed_bf16_to_f32(w[i]);
		for (int t = 0; t < 4; t++)
			s[t] += x[t][i] * wf;
	}
	memcpy(out, s, sizeof(s));
}
