/* SPDX-License-Identifier: MIT */
/* Conversions between f32 and the 16-bit I/O dtypes (round to nearest even). */
#ifndef MOED_COMMON_DTYPE_H
#define MOED_COMMON_DTYPE_H

#include <stdint.h>
#include <string.h>

/* Shared with the GPU kernels: nvcc and hipcc compile these for both sides. */
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MOED_HOST_DEVICE __host__ __device__
#else
#define MOED_HOST_DEVICE
#endif

static inline MOED_HOST_DEVICE float moed_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

static inline MOED_HOST_DEVICE uint16_t moed_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40); /* NaN stays a quiet NaN */
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static inline MOED_HOST_DEVICE float moed_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
	if (exp == 0x1f) {
		u = sign | 0x7f800000u | (man << 13);
	} else if (exp) {
		u = sign | ((exp + 112) << 23) | (man << 13);
	} else if (man) { /* subnormal: normalise */
		int e = -1;
		do {
			e++;
			man <<= 1;
		} while (!(man & 0x400));
		u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
	} else {
		u = sign;
	}
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

static inline MOED_HOST_DEVICE uint16_t moed_f32_to_f16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	uint32_t sign = (u >> 16) & 0x8000, abs = u & 0x7fffffffu;
	if (abs > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00); /* NaN */
	if (abs >= 0x477ff000u)               /* rounds to beyond 65504: infinity */
		return (uint16_t)(sign | 0x7c00);
	if (abs < 0x38800000u) { /* below 2^-14: subnormal or zero */
		if (abs < 0x33000000u) /* below half the smallest subnormal */
			return (uint16_t)sign;
		uint32_t man = (abs & 0x7fffff) | 0x800000;
		unsigned shift = 126 - (abs >> 23); /* 14..24 */
		uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1)))
			half++;
		return (uint16_t)(sign | half);
	}
	uint32_t r = abs + 0xfffu + ((abs >> 13) & 1);
	return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

#endif
