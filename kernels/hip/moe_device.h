// SPDX-License-Identifier: MIT
//
// Device helpers shared by the fused-MoE kernels: dtype conversion, the activations,
// warp reductions. Included by the .hip files only.
#ifndef MOED_HIP_MOE_DEVICE_H
#define MOED_HIP_MOE_DEVICE_H

#include <stdint.h>

#include "hip_compat.h"
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
#include <hip/hip_fp16.h>
#else
#include <cuda_fp16.h>
#endif

#include "moe_kernels.h"

namespace moe {

constexpr int kWarp = 32;

__device__ __forceinline__ float bf16_to_f32(uint16_t v)
{
	return __uint_as_float((uint32_t)v << 16);
}

// Round to nearest even; NaN stays NaN (quietened).
__device__ __forceinline__ uint16_t f32_to_bf16(float f)
{
	uint32_t u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(uint16_t v)
{
	return __half2float(__ushort_as_half(v));
}

__device__ __forceinline__ uint16_t f32_to_f16(float f)
{
	return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ float load(const void *base, size_t i, int dtype)
{
	if (dtype == MOED_GPU_F32)
		return ((const float *)base)[i];
	const uint16_t v = ((const uint16_t *)base)[i];
	return dtype == MOED_GPU_BF16 ? bf16_to_f32(v) : f16_to_f32(v);
}

__device__ __forceinline__ void store(void *base, size_t i, int dtype, float v)
{
	if (dtype == MOED_GPU_F32)
		((float *)base)[i] = v;
	else if (dtype == MOED_GPU_BF16)
		((uint16_t *)base)[i] = f32_to_bf16(v);
	else
		((uint16_t *)base)[i] = f32_to_f16(v);
}

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = kWarp / 2; o > 0; o /= 2)
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
		v += __shfl_xor(v, o, kWarp);
#else
		v += __shfl_xor_sync(0xffffffffu, v, o);
#endif
	return v;
}

__device__ __forceinline__ float activate(int act, float g)
{
	if (act == MOED_GPU_GELU)
		return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f));
	return g / (1.0f + expf(-g));
}

} // namespace moe

#endif
