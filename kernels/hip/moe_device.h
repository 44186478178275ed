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

#include "dtype.h"
#include "moe_kernels.h"

namespace moe {

constexpr int kWarp = 32;

// bf16 is bit arithmetic, the same on both sides (common/dtype.h); f16 uses the
// hardware's conversions.
__device__ __forceinline__ float bf16_to_f32(uint16_t v)
{
	return moed_bf16_to_f32(v);
}

__device__ __forceinline__ uint16_t f32_to_bf16(float f)
{
	return moed_f32_to_bf16(f);
}

__device__ __forceinline__ float f16_to_f32(uint16_t v)
{
	return __half2float(__ushort_as_half(v));
}

__device__ __forceinline__ uint16_t f32_to_f16(float f)
{
	return __half_as_ushort(__float2half_rn(f));
}

// Two values as one 32-bit word of 16-bit floats (bf16, else f16), the first in the low
// half: the 16-bit stores of the kernels' epilogues and of the combine.
__device__ __forceinline__ uint32_t pack2(float lo, float hi, bool bf16)
{
#if !defined(__HIP_PLATFORM_AMD__) && !defined(__HIPCC__) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	// One instruction for both, rounding to nearest even as the bit arithmetic does (a
	// NaN becomes the canonical one). The bit arithmetic took some 15 integer instructions
	// a pair, most of the prefill GEMMs' epilogue (bench/RESULTS.md, version 13).
	uint32_t packed;
	if (bf16)
		asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(hi), "f"(lo));
	else
		asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(packed) : "f"(hi), "f"(lo));
	return packed;
#else
	return bf16 ? (uint32_t)f32_to_bf16(lo) | (uint32_t)f32_to_bf16(hi) << 16
		    : (uint32_t)f32_to_f16(lo) | (uint32_t)f32_to_f16(hi) << 16;
#endif
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

// The inclusive prefix sum of v over a warp's lanes (thread order).
__device__ __forceinline__ uint32_t warp_inclusive_sum(uint32_t v)
{
	const int lane = threadIdx.x % kWarp;
	for (int d = 1; d < kWarp; d *= 2) {
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
		const uint32_t below = __shfl_up(v, d, kWarp);
#else
		const uint32_t below = __shfl_up_sync(0xffffffffu, v, d);
#endif
		if (lane >= d)
			v += below;
	}
	return v;
}

__device__ __forceinline__ float activate(int act, float g)
{
	if (act == MOED_GPU_GELU)
		return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f));
	// The hardware's exp2 and reciprocal (relative error about 1e-6, far inside the
	// tolerances): the prefill GEMMs apply this in their epilogue while the matrix units
	// wait (bench/RESULTS.md, version 24: with the identity or tanh.approx in its place,
	// the prefill rows no faster).
	// A large -g gives exp = inf and g / inf = -0.
	return __fdividef(g, 1.0f + __expf(-g));
}

// Programmatic dependent launch (sm_90 and later; elsewhere the launch has no such
// dependency and these are not needed): a grid lets its dependent start once all of its
// blocks run (the gate/up GEMM's down GEMM, the device sort's placing), and the dependent
// does what it can before it waits for the first grid's end and results.
__device__ __forceinline__ void let_dependents_launch()
{
#if __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_prerequisite_grid()
{
#if __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

} // namespace moe

#endif
