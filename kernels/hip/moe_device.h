// SPDX-License-Identifier: MIT
//
// Device helpers shared by the fused-MoE kernels: dtype conversion, the activations,
// warp reductions, the dependent launch's two sides, the folded combine's end. Included
// by the .hip files only.
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

template <bool kBf16> __device__ __forceinline__ uint32_t pack2(float lo, float hi)
{
	return kBf16 ? (uint32_t)f32_to_bf16(lo) | (uint32_t)f32_to_bf16(hi) << 16
		     : (uint32_t)f32_to_f16(lo) | (uint32_t)f32_to_f16(hi) << 16;
}

// Programmatic dependent launch (NVIDIA sm_90 and later; elsewhere the launch has no such
// dependency, see moe_launch.h, and these do nothing): the gate/up grid lets the down grid
// start once all its blocks run, and the down grid fetches weights before it waits for
// the gate/up results.
__device__ __forceinline__ void let_dependents_launch()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_prerequisite_grid()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The folded combine's end (moe_gpu_args.blocks_done; NVIDIA builds, the launches fold
// nowhere else): the down grid's last block to finish converts y ([M, H] f32, every
// block's weighted sums in it) into out, and leaves the counter at zero.
// The largest M * H whose combine the down GEMM's last block does: one block converts
// it, 16 values a thread at 1024.
constexpr size_t kFoldMaxCells = 16384;

template <bool kBf16> __device__ void finish_fold(const struct moe_gpu_args &a)
{
#if MOED_GPU_NVIDIA
	__shared__ bool last;
	__threadfence(); // this thread's sums reach the device before its block is counted
	__syncthreads();
	if (threadIdx.x == 0)
		last = atomicAdd(a.blocks_done, 1u) == gridDim.x * gridDim.y * gridDim.z - 1;
	__syncthreads();
	if (!last)
		return;
	__threadfence();
	const float4 *y = (const float4 *)a.y;
	uint4 *out = (uint4 *)a.out;
	const size_t groups = (size_t)a.tokens * a.hidden / 8; // H is a multiple of 8
	for (size_t g = threadIdx.x; g < groups; g += blockDim.x) {
		const float4 lo = __ldcg(y + 2 * g), hi = __ldcg(y + 2 * g + 1); // from L2, not L1
		out[g] = make_uint4(pack2<kBf16>(lo.x, lo.y), pack2<kBf16>(lo.z, lo.w),
				    pack2<kBf16>(hi.x, hi.y), pack2<kBf16>(hi.z, hi.w));
	}
	if (threadIdx.x == 0)
		*a.blocks_done = 0;
#else
	(void)a;
	__builtin_trap();
#endif
}

} // namespace moe

#endif
