// SPDX-License-Identifier: MIT
//
// The matrix-unit kernels of the fused MoE on AMD (CDNA2 and 3: gfx90a, gfx940):
// v_mfma_f32_32x32x8bf16_1k and v_mfma_f32_32x32x8f16 through the compiler's builtins.
// NOT YET RUN: no AMD device is lent to this project, so the plan keeps the CUDA-core
// kernels on AMD and this family runs only where MOED_GPU_KERNEL=mfma64 forces it, until
// the GPU tests have passed on AMD hardware. NVIDIA builds compile none of it.
//
// One instruction multiplies a 32 x 8 A by an 8 x 32 B into 32 x 32 f32, over the 64 lanes
// of a wavefront, four 16-bit values of an operand a lane (the instruction's definition):
//   A[i][k]: lane i + 32 (k / 4), element k % 4
//   B[k][j]: lane j + 32 (k / 4), element k % 4
//   D[i][j]: lane j + 32 ((i / 4) % 2), element 4 (i / 8) + i % 4
// Rows of A are pairs, columns of B are weight rows, both with K contiguous: a lane's
// operand is 8 bytes of one row in LDS.
// Block: 256 threads, 4 wavefronts as 2 x 2 over a tile of 64 pairs by 128 weight rows,
// each wavefront 32 pairs by 64 weight rows (two instructions a k-step). K goes in steps
// of 32 through two LDS buffers: the next step's 16-byte global loads are in flight
// while this step computes.
//   gate_up: each wavefront's 64 weight rows are 32 gate rows and the 32 matching up
//            rows, so one lane holds g and u of the same output: a = act(g) * u.
//   down:    writes y in the I/O dtype (y_io) for the combine kernel.
#include <stdint.h>

#include "moe_device.h"

#if !(defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__))

extern "C" int moe_gpu_launch_mfma(struct moe_gpu_args *, void *)
{
	return (int)cudaErrorInvalidValue;
}

#else

namespace {

using namespace moe;

constexpr int kBM = 64, kBN = 128, kBK = 32, kThreads = 256, kWave = 64;
constexpr int kRow = kBK + 4;         // an LDS row in 16-bit values: 72 bytes, 8-aligned
constexpr int kChunks = kBK / 8;      // 16-byte chunks a row a step
constexpr int kRowsPerPass = kThreads / kChunks;
constexpr int kPasses = (kBM + kBN) / kRowsPerPass;
static_assert(kBM == kRowsPerPass, "the first pass copies A, the others B");

typedef short short4v __attribute__((ext_vector_type(4)));
typedef _Float16 half4v __attribute__((ext_vector_type(4)));
typedef float float16v __attribute__((ext_vector_type(16)));

// c += A * B for operands of four 16-bit values at a and b (8-byte aligned, in LDS).
template <bool kBf16>
__device__ __forceinline__ float16v mfma(const uint16_t *a, const uint16_t *b, float16v c)
{
	if constexpr (kBf16)
		return __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(*(const short4v *)a, *(const short4v *)b,
								 c, 0, 0, 0);
	else
		return __builtin_amdgcn_mfma_f32_32x32x8f16(*(const half4v *)a, *(const half4v *)b, c, 0,
							    0, 0);
}

template <bool kBf16> __device__ __forceinline__ uint16_t to16(float v)
{
	return kBf16 ? f32_to_bf16(v) : f32_to_f16(v);
}

template <bool kGateUp, bool kBf16>
__global__ void __launch_bounds__(kThreads) mfma_kernel(const struct moe_gpu_args a)
{
	__shared__ uint16_t lds[2][(kBM + kBN) * kRow]; // A rows, then B rows
	const int tid = threadIdx.x, lane = tid % kWave, wave = tid / kWave;
	const int wave_m = wave / 2, wave_n = wave % 2;
	const uint32_t tile = blockIdx.x;
	const uint32_t first = a.tile_first[tile], count = a.tile_count[tile], e = a.tile_expert[tile];
	const uint32_t K = kGateUp ? a.hidden : a.inter;
	const uint32_t N = kGateUp ? a.inter : a.hidden; // output columns
	const bool gated = kGateUp && a.gated;
	const uint32_t n0 = blockIdx.y * (gated ? kBN / 2 : kBN);
	const uint16_t *w = (const uint16_t *)(kGateUp ? a.w13 : a.w2);
	const size_t w_rows = kGateUp ? (gated ? 2 * (size_t)a.inter : a.inter) : a.hidden;

	// Each step, thread t copies chunk t % 4 of tile rows t / 4 + 64 p: A's rows in the
	// first pass, B's in the others (null: out of range, zeros).
	const int chunk = tid % kChunks;
	const uint16_t *src[kPasses];
#pragma unroll
	for (int p = 0; p < kPasses; p++) {
		const uint32_t r = tid / kChunks + p * kRowsPerPass;
		src[p] = nullptr;
		if (r < (uint32_t)kBM) {
			if (r < count && kGateUp)
				src[p] = (const uint16_t *)a.x + (size_t)(a.pair_of[first + r] / a.topk) * K;
			else if (r < count)
				src[p] = (const uint16_t *)a.act + (size_t)(first + r) * K;
			continue;
		}
		const uint32_t rr = r - kBM; // weight row of the tile
		uint32_t col = n0 + rr, wrow = col;
		if (gated) { // a wavefront's 64 rows: 32 gate rows, then the matching up rows
			const uint32_t q = rr % 64;
			col = n0 + rr / 64 * 32 + q % 32;
			wrow = (q >= 32 ? a.inter : 0) + col;
		}
		if (col < N)
			src[p] = w + ((size_t)e * w_rows + wrow) * K;
	}
	uint4 held[kPasses];
	auto fetch = [&](uint32_t k0) {
		const uint32_t k = k0 + (uint32_t)chunk * 8; // K is a multiple of 8
#pragma unroll
		for (int p = 0; p < kPasses; p++)
			held[p] = src[p] && k < K ? *(const uint4 *)(src[p] + k) : make_uint4(0, 0, 0, 0);
	};
	auto put = [&](int buf) { // rows are 8-byte aligned in LDS: two 8-byte stores
#pragma unroll
		for (int p = 0; p < kPasses; p++) {
			uint2 *d = (uint2 *)&lds[buf][(tid / kChunks + p * kRowsPerPass) * kRow + chunk * 8];
			d[0] = make_uint2(held[p].x, held[p].y);
			d[1] = make_uint2(held[p].z, held[p].w);
		}
	};

	float16v acc[2];
#pragma unroll
	for (int nt = 0; nt < 2; nt++)
#pragma unroll
		for (int i = 0; i < 16; i++)
			acc[nt][i] = 0;
	const uint32_t steps = (K + kBK - 1) / kBK;
	fetch(0);
	put(0);
	__syncthreads();
	for (uint32_t s = 0; s < steps; s++) {
		const int buf = s % 2;
		if (s + 1 < steps)
			fetch((s + 1) * kBK); // in flight during this step's math
		const uint16_t *as = &lds[buf][(wave_m * 32 + lane % 32) * kRow];
		const uint16_t *bs = &lds[buf][(kBM + wave_n * 64 + lane % 32) * kRow];
#pragma unroll
		for (int ks = 0; ks < kBK / 8; ks++) {
			const int k = ks * 8 + 4 * (lane / 32);
#pragma unroll
			for (int nt = 0; nt < 2; nt++)
				acc[nt] = mfma<kBf16>(as + k, bs + nt * 32 * kRow + k, acc[nt]);
		}
		if (s + 1 < steps)
			put(buf ^ 1); // the other buffer: read by nobody since the last barrier
		__syncthreads();
	}

	// Element i of a lane's result: row 8 (i / 4) + 4 (lane / 32) + i % 4 of the
	// wavefront's 32, column lane % 32 of the instruction's 32.
	const uint32_t j = lane % 32;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		const uint32_t row = wave_m * 32 + 8 * (i / 4) + 4 * (lane / 32) + i % 4;
		if (row >= count)
			continue;
		const size_t pos = first + row;
		uint16_t *out16 = (uint16_t *)(kGateUp ? a.act : (void *)a.y);
		if (!kGateUp) {
#pragma unroll
			for (int nt = 0; nt < 2; nt++) {
				const uint32_t col = n0 + wave_n * 64 + nt * 32 + j;
				if (col < N)
					out16[pos * N + col] = to16<kBf16>(acc[nt][i]);
			}
			continue;
		}
		const float sc = a.router_weight_on_input ? a.topk_weights[a.pair_of[pos]] : 1.0f;
		if (gated) {
			const uint32_t col = n0 + wave_n * 32 + j;
			if (col < N)
				out16[pos * N + col] = to16<kBf16>(activate(a.activation, sc * acc[0][i]) *
								   (sc * acc[1][i]));
			continue;
		}
#pragma unroll
		for (int nt = 0; nt < 2; nt++) {
			const uint32_t col = n0 + wave_n * 64 + nt * 32 + j;
			if (col < N)
				out16[pos * N + col] = to16<kBf16>(activate(a.activation, sc * acc[nt][i]));
		}
	}
}

template <bool kBf16> int launch(struct moe_gpu_args &a, hipStream_t stream)
{
	a.y_io = 1;
	const uint32_t gate_cols = a.gated ? kBN / 2 : kBN;
	const dim3 g1(a.tiles, (a.inter + gate_cols - 1) / gate_cols);
	const dim3 g2(a.tiles, (a.hidden + kBN - 1) / kBN);
	hipLaunchKernelGGL((mfma_kernel<true, kBf16>), g1, dim3(kThreads), 0, stream, a);
	hipLaunchKernelGGL((mfma_kernel<false, kBf16>), g2, dim3(kThreads), 0, stream, a);
	return (int)hipGetLastError();
}

} // namespace

extern "C" int moe_gpu_launch_mfma(struct moe_gpu_args *args, void *stream)
{
	struct moe_gpu_args &a = *args;
	if (a.io_dtype != a.w_dtype || a.io_dtype == MOED_GPU_F32 || a.hidden % 8 || a.inter % 8)
		return (int)hipErrorInvalidValue;
	return a.io_dtype == MOED_GPU_BF16 ? launch<true>(a, (hipStream_t)stream)
					   : launch<false>(a, (hipStream_t)stream);
}

#endif
