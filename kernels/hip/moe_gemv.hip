// SPDX-License-Identifier: MIT
//
// The decode kernels (MOE_GPU_GEMV): tiles of at most kGemvPairs pairs of one expert,
// where a job is one stream of weights and its math is matrix-vector products. On the
// CUDA cores (AMD: the vector units), weights loaded straight into registers: no shared
// memory, no barrier, nothing to fill before the first byte is used.
//   gate_up: a warp per (tile, output column r): gate row r and up row r against each
//            pair's x row; a = act(g) * u in the I/O dtype, the down kernel's input.
//   down:    a warp per (tile, kDownRows rows of w2) against each pair's a row; y in the
//            I/O dtype for the combine kernel, or, for a small job on NVIDIA, the pair's
//            router-weighted sums added into y as [M, H] f32 that the grid's last block
//            converts (the folded combine, moe_device.h).
// A lane reads 16 bytes (8 values) at a time, a warp 512 contiguous bytes of a row, and
// each lane has a batch of 16 such loads in flight before it uses the first: 8 KiB a
// warp. Small work items (a warp's row or rows) spread evenly over the card, where the
// matrix-unit kernel for 16 pairs (mma16) has a few hundred blocks of 512 KiB each and
// streams 128-byte pieces of 128 rows through shared memory.
#include <stdint.h>

#include "moe_device.h"
#include "moe_launch.h"

namespace {

using namespace moe;

constexpr int kGemvPairs = 4;    // the plan's tile for MOE_GPU_GEMV: pairs a warp multiplies
constexpr int kGemvWarps = 8;    // a block
constexpr int kDownRows = 4;     // w2 rows a warp: enough loads in flight for short rows
constexpr int kRowPass = kWarp * 8; // values a warp covers with one load a lane

// 16 bytes of weights, used once: on NVIDIA a streaming load (evict first).
__device__ __forceinline__ uint4 load_weights16(const uint16_t *p)
{
#if MOED_GPU_NVIDIA
	return __ldcs((const uint4 *)p);
#else
	return *(const uint4 *)p;
#endif
}

// Asks L2 for the line at p (NVIDIA; a hint, nothing elsewhere).
__device__ __forceinline__ void prefetch_l2(const void *p)
{
#if MOED_GPU_NVIDIA
	asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
#else
	(void)p;
#endif
}

template <bool kBf16> __device__ __forceinline__ void unpack8(const uint4 &v, float f[8])
{
	const uint32_t w[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
	for (int i = 0; i < 4; i++) {
		const uint16_t lo = (uint16_t)(w[i] & 0xffffu), hi = (uint16_t)(w[i] >> 16);
		f[2 * i] = kBf16 ? bf16_to_f32(lo) : f16_to_f32(lo);
		f[2 * i + 1] = kBf16 ? bf16_to_f32(hi) : f16_to_f32(hi);
	}
}

// This lane's share of rows[r] . vecs[q] for the first n vectors, over L values (a
// multiple of 8): lane l takes values 8 l + kRowPass j. kBatch loads of each row go out
// before the first is used.
template <int kRows, int kBatch, bool kBf16>
__device__ __forceinline__ void dot_rows(const uint16_t *const (&rows)[kRows],
					 const uint16_t *const (&vecs)[kGemvPairs], uint32_t n, uint32_t L,
					 int lane, float (&acc)[kRows][kGemvPairs])
{
	for (uint32_t base = (uint32_t)lane * 8; base < L; base += kBatch * kRowPass) {
		uint4 w[kRows][kBatch];
#pragma unroll
		for (int b = 0; b < kBatch; b++) {
			const uint32_t k = base + b * kRowPass;
#pragma unroll
			for (int r = 0; r < kRows; r++)
				w[r][b] = k < L ? load_weights16(rows[r] + k) : make_uint4(0, 0, 0, 0);
		}
#pragma unroll
		for (int b = 0; b < kBatch; b++) {
			const uint32_t k = base + b * kRowPass;
			if (k >= L)
				continue;
			float wf[kRows][8];
#pragma unroll
			for (int r = 0; r < kRows; r++)
				unpack8<kBf16>(w[r][b], wf[r]);
#pragma unroll
			for (int q = 0; q < kGemvPairs; q++) {
				if ((uint32_t)q >= n)
					continue;
				float v[8];
				unpack8<kBf16>(*(const uint4 *)(vecs[q] + k), v);
#pragma unroll
				for (int r = 0; r < kRows; r++)
#pragma unroll
					for (int j = 0; j < 8; j++)
						acc[r][q] += wf[r][j] * v[j];
			}
		}
	}
}

template <bool kBf16>
__global__ void __launch_bounds__(kGemvWarps *kWarp) gemv_gate_up(const struct moe_gpu_args a)
{
	let_dependents_launch();
	const int lane = threadIdx.x % kWarp;
	if (a.zero_y) { // the folded down kernel's [M, H] sums (H is a multiple of 8)
		const size_t cells = (size_t)a.tokens * a.hidden / 4, blocks = (size_t)gridDim.x * gridDim.y;
		const size_t at = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
		for (size_t i = at * blockDim.x + threadIdx.x; i < cells; i += blocks * blockDim.x)
			((float4 *)a.y)[i] = make_float4(0, 0, 0, 0);
	}
	const uint32_t t = blockIdx.x, r = blockIdx.y * kGemvWarps + threadIdx.x / kWarp;
	if (r >= a.inter)
		return;
	const uint32_t first = a.tile_first[t], n = a.tile_count[t], H = a.hidden;
	const size_t w_rows = a.gated ? 2 * (size_t)a.inter : a.inter;
	const uint16_t *gate = (const uint16_t *)a.w13 + ((size_t)a.tile_expert[t] * w_rows + r) * H;
	// Ungated, the one row is read twice (as "up"), and u is not used.
	const uint16_t *const rows[2] = { gate, a.gated ? gate + (size_t)a.inter * H : gate };
	const uint16_t *vecs[kGemvPairs];
#pragma unroll
	for (int q = 0; q < kGemvPairs; q++)
		vecs[q] = (const uint16_t *)a.x + (size_t)(a.pair_of[first + ((uint32_t)q < n ? q : 0)] / a.topk) * H;
	float acc[2][kGemvPairs] = {};
	dot_rows<2, 8, kBf16>(rows, vecs, n, H, lane, acc);
#pragma unroll
	for (int q = 0; q < kGemvPairs; q++) {
		if ((uint32_t)q >= n)
			continue;
		const float g = warp_sum(acc[0][q]), u = warp_sum(acc[1][q]);
		if (lane == 0) {
			const float s = a.router_weight_on_input ? a.topk_weights[a.pair_of[first + q]] : 1.0f;
			const float v = a.gated ? activate(a.activation, s * g) * (s * u) : activate(a.activation, s * g);
			((uint16_t *)a.act)[(size_t)(first + q) * a.inter + r] = kBf16 ? f32_to_bf16(v) : f32_to_f16(v);
		}
	}
}

template <bool kBf16>
__global__ void __launch_bounds__(kGemvWarps *kWarp) gemv_down(const struct moe_gpu_args a)
{
	const int lane = threadIdx.x % kWarp;
	const uint32_t t = blockIdx.x, H = a.hidden, I = a.inter;
	const uint32_t h0 = (blockIdx.y * kGemvWarps + threadIdx.x / kWarp) * kDownRows;
	const uint32_t first = a.tile_first[t], n = a.tile_count[t];
	const uint16_t *rows[kDownRows];
#pragma unroll
	for (int r = 0; r < kDownRows; r++) { // rows past H repeat the last (not stored)
		const uint32_t h = h0 + r < H ? h0 + r : H - 1;
		rows[r] = (const uint16_t *)a.w2 + ((size_t)a.tile_expert[t] * H + h) * I;
	}
	// The weights do not depend on the gate/up grid (which may still run, see
	// moe_launch.h): the first of them on their way before waiting for it.
#pragma unroll
	for (int r = 0; r < kDownRows; r++)
		if ((uint32_t)lane * 8 < I)
			prefetch_l2(rows[r] + lane * 8);
	wait_for_prerequisite_grid();
	const uint16_t *vecs[kGemvPairs];
#pragma unroll
	for (int q = 0; q < kGemvPairs; q++)
		vecs[q] = (const uint16_t *)a.act + (size_t)(first + ((uint32_t)q < n ? q : 0)) * I;
	float acc[kDownRows][kGemvPairs] = {};
	dot_rows<kDownRows, 4, kBf16>(rows, vecs, n, I, lane, acc);
#pragma unroll
	for (int q = 0; q < kGemvPairs; q++) {
		if ((uint32_t)q >= n)
			continue;
		const uint32_t pair = a.pair_of[first + q];
		const float coef = (a.router_weight_on_input ? 1.0f : a.topk_weights[pair]) * a.scale;
#pragma unroll
		for (int r = 0; r < kDownRows; r++) {
			const float v = warp_sum(acc[r][q]);
			if (lane || h0 + r >= H)
				continue;
			if (a.fold)
				atomicAdd(a.y + (size_t)(pair / a.topk) * H + h0 + r, coef * v);
			else
				((uint16_t *)a.y)[(size_t)(first + q) * H + h0 + r] =
					kBf16 ? f32_to_bf16(v) : f32_to_f16(v);
		}
	}
	if (a.fold) // every thread of the block: it synchronises
		finish_fold<kBf16>(a);
}

template <bool kBf16> int launch(struct moe_gpu_args &a, hipStream_t stream)
{
	// Folded on NVIDIA only: the last block's reads of the others' sums are checked there.
	a.fold = MOED_GPU_NVIDIA && !a.no_combine && a.blocks_done &&
		 (size_t)a.tokens * a.hidden <= kFoldMaxCells;
	a.y_io = !a.fold, a.zero_y = a.fold;
	const dim3 gate_up(a.tiles, (a.inter + kGemvWarps - 1) / kGemvWarps);
	const dim3 down(a.tiles, (a.hidden + kGemvWarps * kDownRows - 1) / (kGemvWarps * kDownRows));
	const int e = launch_on(gemv_gate_up<kBf16>, gate_up, kGemvWarps * kWarp, 0, false, stream, a);
	return e ? e : launch_on(gemv_down<kBf16>, down, kGemvWarps * kWarp, 0, true, stream, a);
}

} // namespace

extern "C" int moe_gpu_launch_gemv(struct moe_gpu_args *args, void *stream)
{
	struct moe_gpu_args &a = *args;
	if (a.io_dtype != a.w_dtype || a.io_dtype == MOED_GPU_F32 || a.hidden % 8 || a.inter % 8 ||
	    a.max_tile > kGemvPairs)
		return (int)hipErrorInvalidValue;
	return a.io_dtype == MOED_GPU_BF16 ? launch<true>(a, (hipStream_t)stream)
					   : launch<false>(a, (hipStream_t)stream);
}
