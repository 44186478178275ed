// SPDX-License-Identifier: MIT
//
// Fused-MoE kernels in HIP C++ (NVIDIA through hip_compat.h): the warp kernels, the
// combine, and the per-job choice between them and the matrix-unit kernels (moe_mma.hip).
// (token, slot) pairs are grouped by expert on the host and cut into tiles of pairs of
// one expert, then
//   gate_up: a warp per (tile, row of I): a = act(x . w_gate) * (x . w_up) for each pair
//            of the tile, so each weight row is read once per tile;
//   down:    a warp per (tile, row of H): y = a . w2;
//   combine: a thread per (token, column): the weighted sum over the token's slots, or
//            the no_combine layout, converted to the I/O dtype.
// Loads along H and I are coalesced across the warp (16 bytes a lane where rows allow);
// accumulation is f32 throughout. These serve few pairs per expert (decode: the weights
// are streamed once, the rest is free) and every case the matrix units cannot take.
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe_device.h"
#include "moe_routing.h"
#if !defined(__HIP_PLATFORM_AMD__) && !defined(__HIPCC__)
#include "moe_launch.h"
#endif

namespace {

using namespace moe;

constexpr int kWarpsPerBlock = 8;

// Eight consecutive elements from index i (a multiple of 8, 16-byte aligned) in one or
// two 16-byte loads: the wide loads that keep the memory system busy.
__device__ __forceinline__ void load8(const void *base, size_t i, int dtype, float out[8])
{
	if (dtype == MOED_GPU_F32) {
		const float4 *p = (const float4 *)((const float *)base + i);
		const float4 a = p[0], b = p[1];
		out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
		out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
		return;
	}
	const uint4 v = *(const uint4 *)((const uint16_t *)base + i);
	const uint32_t w[4] = { v.x, v.y, v.z, v.w };
#pragma unroll
	for (int k = 0; k < 4; k++) {
		const uint16_t lo = (uint16_t)(w[k] & 0xffff), hi = (uint16_t)(w[k] >> 16);
		if (dtype == MOED_GPU_BF16) {
			out[2 * k] = bf16_to_f32(lo);
			out[2 * k + 1] = bf16_to_f32(hi);
		} else {
			out[2 * k] = __half2float(__ushort_as_half(lo));
			out[2 * k + 1] = __half2float(__ushort_as_half(hi));
		}
	}
}

// blockIdx.x: tile; blockIdx.y * warps + warp: row of I. kVec: H is a multiple of 8,
// so every row starts 16-byte aligned and each lane loads 8 elements at a time.
template <bool kVec, int kTile> __global__ void gate_up_kernel(struct moe_gpu_args a)
{
	const int lane = threadIdx.x % kWarp;
	const uint32_t r = blockIdx.y * kWarpsPerBlock + threadIdx.x / kWarp;
	const uint32_t t = blockIdx.x;
	if (r >= a.inter)
		return;
	const uint32_t first = a.tile_first[t], n = a.tile_count[t], e = a.tile_expert[t];
	const uint32_t rows = a.gated ? 2 * a.inter : a.inter;
	const size_t grow = ((size_t)e * rows + r) * a.hidden;
	const size_t urow = ((size_t)e * rows + a.inter + r) * a.hidden;
	size_t xrow[kTile];
	float scale[kTile], g[kTile], u[kTile];
#pragma unroll
	for (int q = 0; q < kTile; q++) {
		const uint32_t pair = a.pair_of[first + (q < (int)n ? q : 0)];
		xrow[q] = (size_t)(pair / a.topk) * a.hidden;
		scale[q] = a.router_weight_on_input ? a.topk_weights[pair] : 1.0f;
		g[q] = u[q] = 0;
	}
	if (kVec) {
		for (uint32_t h = lane * 8; h < a.hidden; h += kWarp * 8) {
			float wg[8], wu[8] = { 0 };
			load8(a.w13, grow + h, a.w_dtype, wg);
			if (a.gated)
				load8(a.w13, urow + h, a.w_dtype, wu);
#pragma unroll
			for (int q = 0; q < kTile; q++) {
				if (q < (int)n) {
					float x[8];
					load8(a.x, xrow[q] + h, a.io_dtype, x);
#pragma unroll
					for (int k = 0; k < 8; k++) {
						g[q] += scale[q] * x[k] * wg[k];
						u[q] += scale[q] * x[k] * wu[k];
					}
				}
			}
		}
	} else {
		for (uint32_t h = lane; h < a.hidden; h += kWarp) {
			const float wg = load(a.w13, grow + h, a.w_dtype);
			const float wu = a.gated ? load(a.w13, urow + h, a.w_dtype) : 0.0f;
#pragma unroll
			for (int q = 0; q < kTile; q++) {
				if (q < (int)n) {
					const float x = scale[q] * load(a.x, xrow[q] + h, a.io_dtype);
					g[q] += x * wg;
					u[q] += x * wu;
				}
			}
		}
	}
#pragma unroll
	for (int q = 0; q < kTile; q++) {
		if (q < (int)n) {
			const float gs = warp_sum(g[q]), us = warp_sum(u[q]);
			if (lane == 0) {
				const float act = activate(a.activation, gs);
				((float *)a.act)[(size_t)(first + q) * a.inter + r] = a.gated ? act * us : act;
			}
		}
	}
}

// blockIdx.x: tile; blockIdx.y * warps + warp: row of H. kVec: I is a multiple of 8.
template <bool kVec, int kTile> __global__ void down_kernel(struct moe_gpu_args a)
{
	const int lane = threadIdx.x % kWarp;
	const uint32_t r = blockIdx.y * kWarpsPerBlock + threadIdx.x / kWarp;
	const uint32_t t = blockIdx.x;
	if (r >= a.hidden)
		return;
	const uint32_t first = a.tile_first[t], n = a.tile_count[t], e = a.tile_expert[t];
	const size_t wrow = ((size_t)e * a.hidden + r) * a.inter;
	float s[kTile];
#pragma unroll
	for (int q = 0; q < kTile; q++)
		s[q] = 0;
	if (kVec) {
		for (uint32_t i = lane * 8; i < a.inter; i += kWarp * 8) {
			float w[8];
			load8(a.w2, wrow + i, a.w_dtype, w);
#pragma unroll
			for (int q = 0; q < kTile; q++) {
				if (q < (int)n) {
					float v[8];
					load8(a.act, (size_t)(first + q) * a.inter + i, MOED_GPU_F32, v);
#pragma unroll
					for (int k = 0; k < 8; k++)
						s[q] += v[k] * w[k];
				}
			}
		}
	} else {
		for (uint32_t i = lane; i < a.inter; i += kWarp) {
			const float w = load(a.w2, wrow + i, a.w_dtype);
#pragma unroll
			for (int q = 0; q < kTile; q++)
				if (q < (int)n)
					s[q] += ((const float *)a.act)[(size_t)(first + q) * a.inter + i] * w;
		}
	}
#pragma unroll
	for (int q = 0; q < kTile; q++) {
		if (q < (int)n) {
			const float v = warp_sum(s[q]);
			if (lane == 0)
				a.y[(size_t)(first + q) * a.hidden + r] = v;
		}
	}
}

// y at sorted position `pos`, column h: f32, or the I/O dtype where the down GEMM wrote it so.
__device__ __forceinline__ float y_at(const struct moe_gpu_args &a, uint32_t pos, uint32_t h)
{
	const size_t i = (size_t)pos * a.hidden + h;
	return a.y_io ? load(a.y, i, a.io_dtype) : a.y[i];
}

// One thread per (token, column of H).
__global__ void combine_kernel(struct moe_gpu_args a)
{
	const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (idx >= (size_t)a.tokens * a.hidden)
		return;
	const uint32_t m = (uint32_t)(idx / a.hidden), h = (uint32_t)(idx % a.hidden);
	if (a.no_combine) {
		for (uint32_t k = 0; k < a.topk; k++) {
			const uint32_t pair = m * a.topk + k;
			store(a.out, (size_t)pair * a.hidden + h, a.io_dtype, y_at(a, a.pos_of[pair], h));
		}
		return;
	}
	float s = 0;
	for (uint32_t k = 0; k < a.topk; k++) {
		const uint32_t pair = m * a.topk + k;
		const float coef = a.router_weight_on_input ? 1.0f : a.topk_weights[pair];
		s += coef * y_at(a, a.pos_of[pair], h);
	}
	store(a.out, idx, a.io_dtype, s * a.scale);
}

// Eight consecutive values of y, kept as loaded: two 16-byte words of f32, or one of
// 16-bit values where y_io (as loaded, so that a thread holds its eight rows in half the
// registers of floats: more threads an SM, more loads in flight).
template <bool kY16> struct Y8 {
	uint4 w[kY16 ? 1 : 2];
};

template <bool kY16> __device__ __forceinline__ Y8<kY16> load8(const struct moe_gpu_args &a, size_t i)
{
	Y8<kY16> r;
	if constexpr (kY16) {
		r.w[0] = *(const uint4 *)((const uint16_t *)a.y + i);
	} else {
		r.w[0] = *(const uint4 *)(a.y + i);
		r.w[1] = *(const uint4 *)(a.y + i + 4);
	}
	return r;
}

template <bool kY16> __device__ __forceinline__ void unpack8(const Y8<kY16> &r, bool bf16, float v[8])
{
	const uint32_t *words = (const uint32_t *)r.w; // indexed by constants once unrolled
#pragma unroll
	for (int j = 0; j < 8; j++) {
		if (!kY16) {
			v[j] = __uint_as_float(words[j]);
			continue;
		}
		const uint16_t half = (uint16_t)(words[j / 2] >> (16 * (j % 2)));
		v[j] = bf16 ? bf16_to_f32(half) : f16_to_f32(half);
	}
}

// Eight consecutive outputs in the I/O dtype, one or two 16-byte stores.
__device__ __forceinline__ void store8(const struct moe_gpu_args &a, size_t i, const float v[8])
{
	if (a.io_dtype == MOED_GPU_F32) {
		*(float4 *)((float *)a.out + i) = make_float4(v[0], v[1], v[2], v[3]);
		*(float4 *)((float *)a.out + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
		return;
	}
	const bool bf16 = a.io_dtype == MOED_GPU_BF16;
	uint32_t packed[4];
#pragma unroll
	for (int j = 0; j < 4; j++)
		packed[j] = pack2(v[2 * j], v[2 * j + 1], bf16);
	*(uint4 *)((uint16_t *)a.out + i) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// The same where H is a multiple of 8: one thread per (token, 8 columns), 16-byte loads
// and stores, all rows loaded before they are summed (the scalar kernel above moved
// about a third of the copy bandwidth on 16-bit y, and waits for each k in turn at small
// M). kY16: y holds the I/O dtype (y_io).
template <int kMaxTopk, bool kY16> __global__ void combine8_kernel(struct moe_gpu_args a)
{
	const uint32_t groups = a.hidden / 8;
	const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (idx >= (size_t)a.tokens * groups)
		return;
	const uint32_t m = (uint32_t)(idx / groups), h = (uint32_t)(idx % groups) * 8;
	const bool bf16 = a.io_dtype == MOED_GPU_BF16;
	Y8<kY16> rows[kMaxTopk];
#pragma unroll
	for (int k = 0; k < kMaxTopk; k++)
		if (k < (int)a.topk)
			rows[k] = load8<kY16>(a, (size_t)a.pos_of[m * a.topk + k] * a.hidden + h);
	float v[8];
	if (a.no_combine) {
#pragma unroll
		for (int k = 0; k < kMaxTopk; k++)
			if (k < (int)a.topk) {
				unpack8<kY16>(rows[k], bf16, v);
				store8(a, ((size_t)m * a.topk + k) * a.hidden + h, v);
			}
		return;
	}
	float s[8] = {};
#pragma unroll
	for (int k = 0; k < kMaxTopk; k++)
		if (k < (int)a.topk) {
			const float coef = a.router_weight_on_input ? 1.0f : a.topk_weights[m * a.topk + k];
			unpack8<kY16>(rows[k], bf16, v);
#pragma unroll
			for (int j = 0; j < 8; j++)
				s[j] += coef * v[j];
		}
#pragma unroll
	for (int j = 0; j < 8; j++)
		s[j] *= a.scale;
	store8(a, (size_t)m * a.hidden + h, s);
}

/* Whether the wgmma kernels can run here: built for sm_90a, on a card of exactly 9.0
 * (arch-specific code runs on nothing else). */
bool wgmma_runs()
{
#if defined(MOED_GPU_WGMMA)
	return moe_gpu_compute_capability() == 90;
#else
	return false;
#endif
}

/* Whether `used` experts hold on average from 32 pairs short of a whole number of tiles,
 * one or more, to 63 past it. */
bool near_whole_tiles(size_t pairs, uint32_t used, uint32_t tile)
{
	const size_t mean = used ? pairs / used : 0;
	return mean + 32 >= tile && (mean + 32) % tile < tile - 32;
}

} // namespace

extern "C" struct moe_gpu_plan moe_gpu_plan(size_t pairs, uint32_t most_pairs, uint32_t used_experts, uint32_t over_16,
					     int io_dtype, int w_dtype, uint32_t hidden, uint32_t inter,
					     int forced)
{
	static const uint32_t tiles[MOE_GPU_KERNELS] = { MOE_GPU_TILE, 16, 32, 64, 128, 128, 128, 128, 128, 128, 128, 128, 64, 128 };
	struct moe_gpu_plan p = { MOE_GPU_WARP, MOE_GPU_TILE, 0 };
	const bool mma = io_dtype == w_dtype && io_dtype != MOED_GPU_F32 && hidden % 8 == 0 &&
			 inter % 8 == 0;
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
	(void)pairs, (void)most_pairs, (void)used_experts, (void)over_16;
	if (mma && forced == MOE_GPU_MFMA64)
		p.kernel = MOE_GPU_MFMA64, p.tile = tiles[MOE_GPU_MFMA64];
#else
	if (!mma)
		return p;
	if (forced >= 0 && forced < MOE_GPU_KERNELS && forced != MOE_GPU_MFMA64 &&
	    !moe_gpu_kernel_withdrawn((enum moe_gpu_kernel)forced))
		p.kernel = (enum moe_gpu_kernel)forced;
	/* Even at one pair per expert the 16-pair tiles stream weights faster than the warp
	 * kernels (bench/RESULTS.md, version 5: DeepSeek-V3 M = 1 189 vs 219 us). */
	else if (most_pairs <= 16)
		p.kernel = MOE_GPU_MMA16;
	/* Where few experts have a second tile of 16 (at most one in eight), the decode
	 * kernel still beats mma64's two (bench/RESULTS.md, version 19: DeepSeek-V3 M = 256,
	 * about 1 in 250, 5236-5246 against 5745-5837 us in one run, 5004-5007 against
	 * 5191-5193 in another); where many do, not (Qwen3-30B-A3B M = 256 and Mixtral-8x7B
	 * M = 64, about 2 in 5: 319 against 309-312, 733-734 against 674-675). */
	else if (most_pairs <= 32 && 8 * over_16 <= used_experts)
		p.kernel = MOE_GPU_MMA16;
	/* Where many do, one tile of 32 an expert: mma64's tiles, three quarters padding,
	 * cost their math (bench/RESULTS.md, version 21, three passes: Mixtral-8x7B M = 64
	 * 702-712 -> 680-682 us, Qwen3-30B-A3B M = 256 314-317 -> 301-302). Not beyond 32:
	 * at DeepSeek-V3 M = 1024, about 48 pairs at most, 5918-5929 -> 6318-6369 forced. */
	else if (most_pairs <= 32)
		p.kernel = MOE_GPU_MMA32;
	/* Beyond 32 pairs an expert: without wgmma, mma64 up to 64 and mma128 beyond; on
	 * Hopper, the persistent kernel even where its 128-pair tiles are mostly padding
	 * (bench/RESULTS.md, version 26, two passes, wgmma128p against mma64, µs, at most 37
	 * to 62 pairs an expert: DeepSeek-V3 M = 768 / 1024 5368 / 5452 against 5572 / 5637,
	 * Mixtral-8x7B M = 128 / 192 681 / 746 against 694 / 764; Qwen3-30B-A3B M = 512 / 640
	 * even, M = 384 314 against 309). */
	else if (!wgmma_runs())
		p.kernel = most_pairs <= 64 ? MOE_GPU_MMA64 : MOE_GPU_MMA128;
	else
		/* The persistent kernel, its weight tiles fetched by the TMA, against wgmma128w
		 * (wgmma128wn where I <= 1024), same run: Mixtral M = 256 / 1024 / 4096 811 / 1714
		 * / 5872 -> 758 / 1532 / 5321 us, Qwen3 M = 4096 926 -> 887. Where an expert has
		 * more than one tile, in clusters that share an expert's weight tiles: against
		 * wgmma128p, Mixtral M = 1024 / 4096 1569 / 5252 -> 1362 / 4644 us, DeepSeek-V3
		 * M = 4096 9200 -> 8015; Qwen3 M = 1024 (one tile an expert) 431 -> 455
		 * (bench/RESULTS.md, version 10). */
		/* Where experts hold about a whole number of tiles (from 32 pairs short of it to
		 * 63 past it, on average), about half of them a few pairs more: wgmma128e takes
		 * those with their last tile instead of a short tile of their own
		 * (bench/RESULTS.md, version 32, two passes against wgmma128c: Mixtral M = 1024
		 * 1490-1499 -> 1343-1344 us, Qwen3 M = 4096 711-712 -> 692-702; version 34, about
		 * one tile: DeepSeek-V3 M = 4096 7518-7537 -> 7348-7382, about eight: Mixtral
		 * M = 4096 4722-4767 -> 4614-4677). Where no expert has such pairs it costs a
		 * little (every expert given 256 pairs: Mixtral M = 1024 1199-1200 -> 1244, Qwen3
		 * M = 4096 598-600 -> 601-604). */
		p.kernel = most_pairs <= 128 ? MOE_GPU_WGMMA128P
			   : near_whole_tiles(pairs, used_experts, 128) && moe_gpu_extension_runs() ? MOE_GPU_WGMMA128E
												: MOE_GPU_WGMMA128C;
	p.tile = tiles[p.kernel];
	p.paired = p.kernel == MOE_GPU_WGMMA128E ? MOE_ROUTE_PAIRED_EXTENDED
		   : p.kernel == MOE_GPU_WGMMA128C || p.kernel == MOE_GPU_WGMMA128D ? MOE_ROUTE_PAIRED
										      : MOE_ROUTE_IN_ORDER;
#endif
	return p;
}

extern "C" int moe_gpu_route(struct moe_routing *r, const int32_t *ids, size_t pairs, uint32_t topk,
			     uint32_t experts, uint32_t *copy, int io_dtype, int w_dtype, uint32_t hidden,
			     uint32_t inter, int forced, struct moe_gpu_plan *plan, size_t *bad, int32_t *bad_id)
{
	int e;
	if (moe_route_on_device(pairs, experts)) {
		if ((e = moe_route_sample(r, ids, pairs, topk, experts, bad, bad_id)))
			return e;
		*plan = moe_gpu_plan(pairs, r->most_pairs, r->used_experts, r->over_16, io_dtype, w_dtype, hidden, inter,
				     forced);
		if (moe_gpu_sorts_on_device(plan->kernel)) {
			moe_route_defer(r, plan->tile, plan->paired);
			return 0;
		}
		memcpy(copy, ids, pairs * sizeof(*copy)); // read once: the host sorts from the copy
		ids = (const int32_t *)copy;
	}
	if ((e = moe_route_count(r, ids, pairs, experts, bad))) {
		if (e == -EINVAL)
			*bad_id = ids[*bad];
		return e;
	}
	*plan = moe_gpu_plan(pairs, r->most_pairs, r->used_experts, r->over_16, io_dtype, w_dtype, hidden, inter, forced);
	return moe_route_cut(r, plan->tile, plan->paired);
}

extern "C" int moe_gpu_tile_group(void)
{
	const char *env = getenv("MOED_GPU_TILE_GROUP");
	if (!env || !*env)
		return 0; // the launch's choice
	char *end = NULL;
	const long n = strtol(env, &end, 10);
	return *end || n < 1 || n > 65536 ? -1 : (int)n;
}

extern "C" int moe_gpu_tail_split(void)
{
	const char *v = getenv("MOED_GPU_TAIL_SPLIT");
	if (!v || !*v || !strcmp(v, "1"))
		return MOE_GPU_TAIL_SPLIT_SHORT;
	return !strcmp(v, "0") ? MOE_GPU_TAIL_SPLIT_NEVER : !strcmp(v, "all") ? MOE_GPU_TAIL_SPLIT_ALL : -1;
}

extern "C" int moe_gpu_env_switch(const char *name, int unset)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return unset;
	return !strcmp(v, "0") ? 0 : !strcmp(v, "1") ? 1 : -1;
}

extern "C" int moe_gpu_compute_capability(void)
{
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
	return 0;
#else
	static int known = -1;
	if (known < 0) {
		int major = 0, minor = 0;
		if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
		    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) != cudaSuccess)
			major = minor = 0;
		known = 10 * major + minor;
	}
	return known;
#endif
}

extern "C" int moe_gpu_kernel_by_name(const char *name)
{
	for (int k = 0; name && k < MOE_GPU_KERNELS; k++)
		if (!strcmp(name, moe_gpu_kernel_name((enum moe_gpu_kernel)k)))
			return k;
	return -1;
}

extern "C" int moe_gpu_kernel_usable(enum moe_gpu_kernel k)
{
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
	return k == MOE_GPU_WARP || k == MOE_GPU_MFMA64;
#elif defined(MOED_GPU_WGMMA)
	return k >= 0 && (k < MOE_GPU_WGMMA128 || (k < MOE_GPU_MFMA64 && wgmma_runs()) ||
			  (k == MOE_GPU_WGMMA128E && wgmma_runs() && moe_gpu_extension_runs()));
#else
	return k >= 0 && k < MOE_GPU_WGMMA128;
#endif
}

extern "C" const char *moe_gpu_kernel_withdrawn(enum moe_gpu_kernel k)
{
	// wgmma128d passed the GPU tests of version 13, and in version 22 faulted ("unspecified
	// launch failure", in its gate/up kernel) on Mixtral-8x7B at M = 1024 and 4096, whose
	// experts hold several tiles, also with its pairs' weight boxes not shared; Mixtral M = 1
	// and 64 ran, and Qwen3-30B-A3B at M = 1024 and 4096. Not found yet; wgmma128c and
	// wgmma128s, each half of it, pass.
	return k == MOE_GPU_WGMMA128D ? "it faults on some jobs whose experts hold several tiles "
					"(bench/RESULTS.md, version 22)"
				      : nullptr;
}

extern "C" const char *moe_gpu_kernel_name(enum moe_gpu_kernel k)
{
	switch (k) {
	case MOE_GPU_WARP: return "warp";
	case MOE_GPU_MMA16: return "mma16";
	case MOE_GPU_MMA32: return "mma32";
	case MOE_GPU_MMA64: return "mma64";
	case MOE_GPU_MMA128: return "mma128";
	case MOE_GPU_WGMMA128: return "wgmma128";
	case MOE_GPU_WGMMA128W: return "wgmma128w";
	case MOE_GPU_WGMMA128P: return "wgmma128p";
	case MOE_GPU_WGMMA128WN: return "wgmma128wn";
	case MOE_GPU_WGMMA128C: return "wgmma128c";
	case MOE_GPU_WGMMA128S: return "wgmma128s";
	case MOE_GPU_WGMMA128D: return "wgmma128d";
	case MOE_GPU_MFMA64: return "mfma64";
	case MOE_GPU_WGMMA128E: return "wgmma128e";
	}
	return "?";
}

namespace {

// The device's sort (moe_routing.h), in two kernels. sort_count_kernel: each block counts
// its chunk of pairs by expert in shared memory, keeping each pair's expert and rank
// among the chunk's pairs of that expert as one word and copying its weight, and writes
// its counts; it reads what lies in host memory (the ids, the weights) once, over the bus,
// and notes the first id out of range. sort_place_kernel, its programmatic dependent: each
// block adds up the counting blocks' counts into each expert's first position and the first
// rank there of the counting block its pairs came from, and places them; its last block
// cuts the tile table instead, as moe_route_cut() does from those counts, and reports the
// id out of range. (Version 30's form added the counts into each expert's total by atomics
// and had the last counting block cut: round trips to L2 one after another, bench/RESULTS.md
// version 31.)
constexpr uint32_t kSortThreads = MOE_ROUTE_SORT_THREADS;
constexpr uint32_t kPlaceThreads = 256; // a placing block's pairs
constexpr uint32_t kPlaceMaxExpertsAThread = MOE_ROUTE_DEVICE_MAX_EXPERTS / kPlaceThreads;
static_assert(MOE_ROUTE_SORT_THREADS % kPlaceThreads == 0, "a placing block's pairs lie in one counting block");
constexpr uint32_t kRankBits = 20;
static_assert(MOE_ROUTE_DEVICE_MAX_PAIRS / MOE_ROUTE_SORT_BLOCKS <= 1u << kRankBits, "ranks fit their bits");

// The exclusive prefix sums of v[0..2] over the block's threads (in thread order), and
// their totals: each warp's by shuffles, then the warps' totals by the first warp. (Ten
// rounds over shared memory with two block barriers each took about 2 µs of the 12 that
// sorting 8192 pairs took: bench/RESULTS.md, version 27.) `buf` holds 3 * kPlaceWarps
// words of shared memory.
constexpr uint32_t kPlaceWarps = kPlaceThreads / kWarp;
static_assert(kPlaceThreads % kWarp == 0 && kPlaceWarps <= kWarp, "one warp scans the warps' totals");

__device__ void block_exclusive_scan3(uint32_t v[3], uint32_t total[3], uint32_t *buf)
{
	const uint32_t lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
	uint32_t within[3];
	for (int c = 0; c < 3; c++) {
		within[c] = warp_inclusive_sum(v[c]);
		if (lane == kWarp - 1)
			buf[c * kPlaceWarps + warp] = within[c];
	}
	__syncthreads();
	if (warp == 0)
		for (int c = 0; c < 3; c++) {
			const uint32_t sum = warp_inclusive_sum(lane < kPlaceWarps ? buf[c * kPlaceWarps + lane] : 0);
			if (lane < kPlaceWarps)
				buf[c * kPlaceWarps + lane] = sum;
		}
	__syncthreads();
	for (int c = 0; c < 3; c++) {
		v[c] = (warp ? buf[c * kPlaceWarps + warp - 1] : 0) + within[c] - v[c];
		total[c] = buf[c * kPlaceWarps + kPlaceWarps - 1];
	}
	__syncthreads(); // buf is free again
}

// Tile j of an expert whose range is [start, start + count), at place `at` of the table
// (the sort fills what the other kernels read as const): at most `most` pairs (the tile, or
// more where an extended cut adds the expert's last few).
__device__ __forceinline__ void put_tile(const struct moe_gpu_args &a, uint32_t at, uint32_t start,
					 uint32_t count, uint32_t expert, uint32_t j, uint32_t most)
{
	const uint32_t tile = a.sort.tile, left = count - j * tile;
	uint32_t *table = (uint32_t *)a.tile_first;
	table[at] = start + j * tile;
	table[a.tiles + at] = left < most ? left : most;
	table[2 * a.tiles + at] = expert;
}

// The first pair whose id is out of range wins (moe_gpu_sort.report's form: the largest
// word); the pair is then counted as expert 0's.
__device__ __noinline__ uint32_t out_of_range(const struct moe_gpu_args &a, uint32_t pair, uint32_t id)
{
	atomicMax((unsigned long long *)(a.counters + MOE_GPU_COUNTER_SORT_BAD),
		  (unsigned long long)(UINT32_MAX - pair) << 32 | id);
	return 0;
}

__global__ void __launch_bounds__(kSortThreads) sort_count_kernel(const struct moe_gpu_args a)
{
	extern __shared__ uint32_t sort_smem[]; // [experts]
	const struct moe_gpu_sort &s = a.sort;
	const uint32_t experts = a.experts, pairs = a.tokens * a.topk, t = threadIdx.x;
	uint32_t *hist = sort_smem;
	let_dependents_launch(); // the placing's blocks start, and wait for this grid's end
	for (uint32_t e = t; e < experts; e += kSortThreads)
		hist[e] = 0;
	__syncthreads();
	const uint32_t lo = blockIdx.x * s.chunk, hi = lo + s.chunk < pairs ? lo + s.chunk : pairs;
	// Each id is loaded once (volatile: not again where it is used, as the client may be
	// writing it), then checked.
	const volatile uint32_t *ids = s.ids;
	constexpr int kLoads = 4; // in flight at once: each crosses the bus
	for (uint32_t base = lo; base < hi; base += kLoads * kSortThreads) {
		uint32_t id[kLoads];
		float w[kLoads];
#pragma unroll
		for (int l = 0; l < kLoads; l++) {
			const uint32_t p = base + l * kSortThreads + t;
			if (p < hi)
				id[l] = ids[p], w[l] = s.weights[p];
		}
#pragma unroll
		for (int l = 0; l < kLoads; l++) {
			const uint32_t p = base + l * kSortThreads + t;
			if (p < hi) {
				const uint32_t e = id[l] < experts ? id[l] : out_of_range(a, p, id[l]);
				s.words[p] = e << kRankBits | atomicAdd(&hist[e], 1u);
				((float *)a.topk_weights)[p] = w[l];
			}
		}
	}
	__syncthreads();
	uint32_t *counts = s.block_counts + (size_t)blockIdx.x * experts;
	for (uint32_t e = t; e < experts; e += kSortThreads)
		counts[e] = hist[e];
}

// The cut of the tile table from each expert's pairs (thread t's `per` experts from
// t * per on, count[j] each, first positions from mine[0]): tiles of a.sort.tile in order,
// or paired (odd experts, those with an odd number of tiles, pair their last tiles in
// turn, each pair placed after the second's own tiles, which tells the first through
// `odd`, indexed by the first's odd rank; a last odd expert's at the end). `mine` and
// `total` are block_exclusive_scan3's: the pairs, the tiles in order and the odd experts.
__device__ void cut_tiles(const struct moe_gpu_args &a, uint32_t per, const uint32_t *count,
			  const uint32_t *tiles, const uint32_t mine[3], const uint32_t total[3], uint32_t *odd)
{
	const struct moe_gpu_sort &s = a.sort;
	const uint32_t t = threadIdx.x, experts = a.experts;
	uint32_t start = mine[0], at = mine[1], odd_rank = mine[2];
	const uint32_t in_order_total = total[1], odd_total = total[2];
	// An expert's last tile's most pairs (an extended cut's take the expert's few past it).
	auto last_of = [&](uint32_t n) { return s.tile + moe_route_extra(n, s.tile, (int)s.paired); };
	for (uint32_t j = 0; j < per; j++) {
		const uint32_t e = t * per + j;
		if (e >= experts)
			break;
		const uint32_t in_order = s.paired ? tiles[j] & ~1u : tiles[j];
		const uint32_t before = at + (s.paired ? 2 * (odd_rank / 2) : 0);
		const uint32_t last = last_of(count[j]);
		for (uint32_t i = 0; i < in_order; i++)
			put_tile(a, before + i, start, count[j], e, i, i + 1 == tiles[j] ? last : s.tile);
		if (in_order != tiles[j]) {
			if (odd_rank & 1u) {
				odd[odd_rank - 1] = before + in_order;
				put_tile(a, before + in_order + 1, start, count[j], e, tiles[j] - 1, last);
			} else if (odd_rank + 1 == odd_total) {
				put_tile(a, in_order_total + 2 * (odd_total / 2), start, count[j], e, tiles[j] - 1, last);
			}
			odd_rank++;
		}
		at += in_order;
		start += count[j];
	}
	__syncthreads();
	start = mine[0], odd_rank = mine[2];
	for (uint32_t j = 0; j < per; j++) {
		const uint32_t e = t * per + j;
		if (e >= experts)
			break;
		if (tiles[j] & 1u && s.paired) {
			if (!(odd_rank & 1u) && odd_rank + 1 < odd_total)
				put_tile(a, odd[odd_rank], start, count[j], e, tiles[j] - 1, last_of(count[j]));
			odd_rank++;
		}
		start += count[j];
	}
	if (t == 0) {
		*(uint32_t *)a.tile_total = in_order_total + odd_total;
		const unsigned long long bad = atomicExch((unsigned long long *)(a.counters + MOE_GPU_COUNTER_SORT_BAD), 0ull);
		if (bad)
			*s.report = bad;
	}
}

// A block of kPlaceThreads pairs, or the last block, which cuts the tile table instead.
__global__ void __launch_bounds__(kPlaceThreads) sort_place_kernel(const struct moe_gpu_args a)
{
	extern __shared__ uint32_t sort_smem[]; // [experts] twice, then [3 * kPlaceWarps]
	const struct moe_gpu_sort &s = a.sort;
	const uint32_t experts = a.experts, pairs = a.tokens * a.topk, t = threadIdx.x;
	const bool cuts = blockIdx.x == gridDim.x - 1;
	const uint32_t p = blockIdx.x * kPlaceThreads + t, counted_before = cuts ? 0 : p / s.chunk;
	uint32_t *total = sort_smem, *first = sort_smem + experts, *scan = first + experts;
	let_dependents_launch(); // the job's first GEMM may launch, and waits for this grid's end
	for (uint32_t e = t; e < experts; e += kPlaceThreads)
		total[e] = 0, first[e] = 0;
	__syncthreads();
	wait_for_prerequisite_grid(); // the counting grid's words, weights and counts
	// Each expert's pairs in all counting blocks (total), and in those before this block's
	// (first, for now): `split` threads an expert where there are fewer experts than
	// threads, each adding up every split-th block's count, 16 loads in flight at once (a
	// thread's loads one after another: the kernel 7.6 µs at 32768 pairs instead of 6.1,
	// bench/RESULTS.md version 31).
	constexpr uint32_t kInFlight = 16;
	const uint32_t split = experts < kPlaceThreads ? kPlaceThreads / experts : 1;
	for (uint32_t cell = t; cell < experts * split; cell += kPlaceThreads) {
		const uint32_t e = cell % experts, part = cell / experts;
		uint32_t all = 0, before = 0;
		for (uint32_t b0 = part; b0 < s.blocks; b0 += kInFlight * split) {
			uint32_t c[kInFlight];
#pragma unroll
			for (uint32_t i = 0; i < kInFlight; i++) {
				const uint32_t b = b0 + i * split;
				c[i] = b < s.blocks ? s.block_counts[(size_t)b * experts + e] : 0;
			}
#pragma unroll
			for (uint32_t i = 0; i < kInFlight; i++) {
				all += c[i];
				before += b0 + i * split < counted_before ? c[i] : 0;
			}
		}
		if (all)
			atomicAdd(&total[e], all);
		if (before)
			atomicAdd(&first[e], before);
	}
	__syncthreads();
	// Thread t owns `per` experts from t * per on: their counts, their tiles.
	const uint32_t per = (experts + kPlaceThreads - 1) / kPlaceThreads;
	uint32_t count[kPlaceMaxExpertsAThread], tiles[kPlaceMaxExpertsAThread];
	uint32_t mine[3] = { 0, 0, 0 }; // pairs, tiles in order, odd experts (paired)
	for (uint32_t j = 0; j < kPlaceMaxExpertsAThread; j++) {
		const uint32_t e = t * per + j;
		count[j] = j < per && e < experts ? total[e] : 0;
		tiles[j] = moe_route_tiles(count[j], s.tile, (int)s.paired);
		mine[0] += count[j];
		mine[1] += s.paired ? tiles[j] & ~1u : tiles[j];
		mine[2] += s.paired ? tiles[j] & 1u : 0;
	}
	uint32_t sums[3];
	block_exclusive_scan3(mine, sums, scan); // its barriers: total is free from here
	if (cuts) {
		cut_tiles(a, per, count, tiles, mine, sums, total);
		return;
	}
	uint32_t start = mine[0];
	for (uint32_t j = 0; j < per && t * per + j < experts; j++) {
		first[t * per + j] += start;
		start += count[j];
	}
	__syncthreads();
	if (p < pairs) {
		const uint32_t word = s.words[p];
		const uint32_t pos = first[word >> kRankBits] + (word & ((1u << kRankBits) - 1));
		a.pair_of[pos] = p;
		a.pos_of[p] = pos;
	}
}

#if !defined(__HIP_PLATFORM_AMD__) && !defined(__HIPCC__)
// The launch's fetch (moe_gpu_args.fetch_bytes) as a kernel of its own: a thread a
// 16-byte unit read over the bus, then the 4-byte words past the last whole unit.
__global__ void fetch_kernel(const uint4 *from, uint4 *to, size_t bytes)
{
	const size_t units = bytes / 16, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	let_dependents_launch(); // as sort_place_kernel
	if (i < units)
		to[i] = from[i];
	if (i < bytes % 16 / 4)
		((uint32_t *)(to + units))[i] = ((const uint32_t *)(from + units))[i];
}
#endif

// The fetch brought before the job's kernels. A graph's copy node cost the stream 9.5-9.9
// µs for 8 to 64 KiB from pinned memory, a kernel reading them 2.6-3.7 (bench/RESULTS.md,
// version 29: Mixtral-8x7B M = 256, the graph's part of sorting 10.9-11.2 -> 1.4-2.7 µs).
// `fetchable`: 16-byte aligned places, whole 4-byte words. AMD builds keep the copy: the
// device's reads of the stage are the NVIDIA decode kernel's way, not tried on AMD.
bool fetches_by_kernel(bool fetchable)
{
#if !defined(__HIP_PLATFORM_AMD__) && !defined(__HIPCC__)
	return fetchable;
#else
	(void)fetchable;
	return false;
#endif
}

int bring_fetch(const struct moe_gpu_args &a, bool fetchable, hipStream_t s)
{
#if !defined(__HIP_PLATFORM_AMD__) && !defined(__HIPCC__)
	if (fetches_by_kernel(fetchable)) {
		const size_t threads = (a.fetch_bytes + 15) / 16;
		hipLaunchKernelGGL(fetch_kernel, dim3((unsigned)((threads + 255) / 256)), dim3(256), 0, s,
				   (const uint4 *)a.fetch_from, (uint4 *)a.fetch_to, a.fetch_bytes);
		return (int)hipGetLastError();
	}
#else
	(void)fetchable;
#endif
	return (int)hipMemcpyAsync(a.fetch_to, a.fetch_from, a.fetch_bytes, hipMemcpyHostToDevice, s);
}

void launch_combine(const struct moe_gpu_args &a, hipStream_t s)
{
	const size_t cells = (size_t)a.tokens * a.hidden;
	if (a.hidden % 8 == 0 && a.topk <= 8) {
		/* 128 threads a block: a decode job's few rows still span several SMs. */
		const dim3 grid((unsigned)((cells / 8 + 127) / 128));
		if (a.topk <= 2 && a.y_io)
			hipLaunchKernelGGL((combine8_kernel<2, true>), grid, dim3(128), 0, s, a);
		else if (a.topk <= 2)
			hipLaunchKernelGGL((combine8_kernel<2, false>), grid, dim3(128), 0, s, a);
		else if (a.y_io)
			hipLaunchKernelGGL((combine8_kernel<8, true>), grid, dim3(128), 0, s, a);
		else
			hipLaunchKernelGGL((combine8_kernel<8, false>), grid, dim3(128), 0, s, a);
		return;
	}
	hipLaunchKernelGGL(combine_kernel, dim3((unsigned)((cells + 255) / 256)), dim3(256), 0, s, a);
}

} // namespace

extern "C" int moe_gpu_sort_pairs(const struct moe_gpu_args *a, void *stream)
{
	const uint32_t pairs = a->tokens * a->topk;
	if (!pairs)
		return 0;
	if (!a->counters || !a->sort.report || a->experts > MOE_ROUTE_DEVICE_MAX_EXPERTS || !a->sort.blocks ||
	    (size_t)a->sort.blocks * a->sort.chunk < pairs)
		return (int)hipErrorInvalidValue;
	const size_t count_smem = (size_t)a->experts * sizeof(uint32_t);
	const size_t place_smem = (2 * (size_t)a->experts + 3 * kPlaceWarps) * sizeof(uint32_t); // < 48 KiB
	const dim3 place_grid((pairs + kPlaceThreads - 1) / kPlaceThreads + 1); // and the cut's
	hipLaunchKernelGGL(sort_count_kernel, dim3(a->sort.blocks), dim3(kSortThreads), count_smem,
			   (hipStream_t)stream, *a);
#if !defined(__HIP_PLATFORM_AMD__) && !defined(__HIPCC__)
	/* The placing as the counting's programmatic dependent: its blocks start meanwhile
	 * and wait (wait_for_prerequisite_grid). */
	return launch_on(sort_place_kernel, place_grid, (int)kPlaceThreads, (int)place_smem, dependent_launch(*a),
			 (cudaStream_t)stream, *a);
#else
	hipLaunchKernelGGL(sort_place_kernel, place_grid, dim3(kPlaceThreads), place_smem,
			   (hipStream_t)stream, *a);
	return (int)hipGetLastError();
#endif
}

extern "C" int moe_gpu_sorts_on_device(enum moe_gpu_kernel kernel)
{
	return kernel != MOE_GPU_WARP && kernel != MOE_GPU_MMA16 && kernel != MOE_GPU_MFMA64;
}

extern "C" int moe_gpu_launch(const struct moe_gpu_args *args, void *stream)
{
	struct moe_gpu_args a = *args;
	hipStream_t s = (hipStream_t)stream;
	a.y_io = 0, a.zero_y = 0, a.fold = 0, a.prefetch_down = 0, a.follows_kernel = 0;
	if (a.tokens == 0 || a.tiles == 0)
		return 0;
	/* The decode kernel fetches its inputs itself from 16-byte aligned places, in 4-byte
	 * words at the least, before anything else reads them: not where the pairs are placed
	 * first, nor where its parameters cannot carry the tile table. */
	const bool fetchable = ((uintptr_t)a.fetch_from | (uintptr_t)a.fetch_to) % 16 == 0 &&
			       a.fetch_bytes % 4 == 0;
	if (a.fetch_bytes && (a.sort.ids || !fetchable || !moe_gpu_decode_fetches(&a))) {
		const int e = bring_fetch(a, fetchable, s);
		if (e)
			return e;
		a.fetch_bytes = 0;
		a.follows_kernel = fetches_by_kernel(fetchable);
	}
	if (a.sort.ids) {
		const int e = moe_gpu_sort_pairs(&a, stream);
		if (e)
			return e;
		a.follows_kernel = 1;
	}
	if (a.kernel != MOE_GPU_WARP) { /* may set a.y_io, a.zero_y */
		const int e = a.kernel == MOE_GPU_MFMA64 ? moe_gpu_launch_mfma(&a, stream)
							 : moe_gpu_launch_mma(&a, stream);
		if (e)
			return e;
		if (!a.fold)
			launch_combine(a, s);
		return (int)hipGetLastError();
	}
	const dim3 block(kWarp * kWarpsPerBlock);
	/* Tiles in x (up to 2^31 - 1), rows in y (up to 65535 blocks: moe_gpu_max_rows). */
	const dim3 gu(a.tiles, (a.inter + kWarpsPerBlock - 1) / kWarpsPerBlock);
	const dim3 dn(a.tiles, (a.hidden + kWarpsPerBlock - 1) / kWarpsPerBlock);
	/* Few pairs per expert (decode): a smaller register tile, more warps in flight. */
	const bool vh = a.hidden % 8 == 0, vi = a.inter % 8 == 0;
	if (a.max_tile <= 1) {
		if (vh) hipLaunchKernelGGL((gate_up_kernel<true, 1>), gu, block, 0, s, a);
		else hipLaunchKernelGGL((gate_up_kernel<false, 1>), gu, block, 0, s, a);
		if (vi) hipLaunchKernelGGL((down_kernel<true, 1>), dn, block, 0, s, a);
		else hipLaunchKernelGGL((down_kernel<false, 1>), dn, block, 0, s, a);
	} else if (a.max_tile <= 4) {
		if (vh) hipLaunchKernelGGL((gate_up_kernel<true, 4>), gu, block, 0, s, a);
		else hipLaunchKernelGGL((gate_up_kernel<false, 4>), gu, block, 0, s, a);
		if (vi) hipLaunchKernelGGL((down_kernel<true, 4>), dn, block, 0, s, a);
		else hipLaunchKernelGGL((down_kernel<false, 4>), dn, block, 0, s, a);
	} else {
		if (vh) hipLaunchKernelGGL((gate_up_kernel<true, MOE_GPU_TILE>), gu, block, 0, s, a);
		else hipLaunchKernelGGL((gate_up_kernel<false, MOE_GPU_TILE>), gu, block, 0, s, a);
		if (vi) hipLaunchKernelGGL((down_kernel<true, MOE_GPU_TILE>), dn, block, 0, s, a);
		else hipLaunchKernelGGL((down_kernel<false, MOE_GPU_TILE>), dn, block, 0, s, a);
	}
	launch_combine(a, s);
	return (int)hipGetLastError();
}

namespace {

__global__ void trap_kernel()
{
#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
	__builtin_trap();
#else
	__trap();
#endif
}

} // namespace

extern "C" int moe_gpu_inject_fault(void *stream)
{
	hipLaunchKernelGGL(trap_kernel, dim3(1), dim3(1), 0, (hipStream_t)stream);
	return (int)hipGetLastError();
}
