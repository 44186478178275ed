// SPDX-License-Identifier: MIT
//
// The matrix-unit kernels of the fused MoE: NVIDIA mma.sync m16n8k16 (bf16 or f16 in,
// f32 accumulate) through inline PTX, for sm_80 and later. Both GEMMs multiply rows of
// activations by rows of weights, each stored with K contiguous, so a tile of either is
// copied to shared memory as rows of 64 k-values (128 bytes) by cp.async, 3 to 5 deep,
// and read back with ldmatrix, whose 8x8 fragments are what mma wants for a row-major A
// and a column-major B.
//   gate_up: block = (tile of BM pairs of one expert, BN rows of w13). For gated experts
//            each warp's rows are half gate rows and half the matching up rows, so the
//            epilogue a = act(g) * u needs no exchange between warps. a is written in the
//            I/O dtype, the down kernel's A operand.
//   down:    block = (tile, BN rows of w2[, part of K]); writes y in the I/O dtype for
//            the combine kernel, or adds into it (f32) where K is split to fill the GPU;
//            split for a decode job, it adds router-weighted sums into y as [M, H] and
//            its last block writes out: the combine is then its own (finish_fold).
// Blocks take tiles in groups (block_work): the blocks running at once share a few
// tiles' A rows and their experts' weight columns in L2.
// Shared-memory rows are XOR-swizzled by 16-byte chunk (chunk ^ row % 8): the eight rows
// one ldmatrix reads at a given k fall in eight different bank groups. The same layout is
// Hopper's 128-byte swizzle, so the wgmma variants (sm_90a builds: ShapeWg128, ShapeWg128W
// and the persistent ws_kernel) read the tiles through descriptors with no ldmatrix,
// sharing the loading (TileLoader) and the epilogue (store_tile); it is also the layout
// the TMA writes with its 128-byte swizzle (ws_kernel's weight tiles).
// AMD builds compile none of this (AMD's matrix-unit kernels are moe_mfma.hip); the plan
// never picks these kernels there.
#include <stdint.h>
#include <string.h>

#include "moe_device.h"

#if defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)

extern "C" int moe_gpu_launch_mma(struct moe_gpu_args *, void *)
{
	return (int)hipErrorInvalidValue;
}

extern "C" int moe_gpu_decode_in_one_kernel(const struct moe_gpu_args *)
{
	return 0;
}

extern "C" int moe_gpu_decode_fetches(const struct moe_gpu_args *)
{
	return 0;
}

extern "C" int moe_gpu_extension_runs(void)
{
	return 0;
}

#else

#include <algorithm>
#include <type_traits>

#include <cuda.h> // the TMA's tensor maps (types only: the encoder comes through the runtime)
#include <cudaTypedefs.h>

#include "moe_launch.h"

namespace {

using namespace moe;

constexpr int kBK = 64; // k-values per stage: one 128-byte row of 16-bit elements

// A block tile of BM pairs by BN weight rows, WM x WN warps, copies kStages deep;
// kWgmma: the warps work as warpgroups on Hopper's wgmma (each warp then owns 16 rows by
// all BN columns, the accumulator layout of mma.sync's m16n8 tiles side by side).
// kMathInFlight (wgmma only): 1 lets one k-tile's wgmma run on while the next is issued,
// at the cost of a stage (see the main loop).
#ifdef __NVCC__
// A shape used only for its copies' geometry (ShapeExtraRows) leaves members unread.
#pragma nv_diag_suppress 177
#endif
template <int BM_, int BN_, int WM_, int WN_, int kStages_, bool kWgmma_ = false,
	  int kMathInFlight_ = 0>
struct Shape {
	static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, kStages = kStages_;
	static constexpr bool kWgmma = kWgmma_;
	static constexpr int kMathInFlight = kMathInFlight_; // wgmma groups left running
	static_assert(kWgmma || !kMathInFlight, "mma.sync is synchronous");
	static constexpr int kThreads = WM * WN * kWarp;
	static constexpr int kWarpRows = BM / WM, kWarpCols = BN / WN;
	static constexpr int kMT = kWarpRows / 16, kNT = kWarpCols / 8; // mma tiles per warp
	static constexpr int kABytes = BM * kBK * 2;
	static constexpr int kStageBytes = (BM + BN) * kBK * 2;
	static constexpr int kSmem = kStages * kStageBytes;
	static_assert(kNT % 4 == 0, "a warp's rows must split into gate and up halves of 16");
};
#ifdef __NVCC__
#pragma nv_diag_default 177
#endif

// Few pairs (weight streaming): more stages, more bytes in flight per block. Many pairs:
// 64 x 64 warp tiles, which read half the shared memory per mma of 64 x 32 ones.
using Shape16 = Shape<16, 128, 1, 4, 5>;
using Shape32 = Shape<32, 128, 1, 4, 5>; // where an expert's pairs are at most 32
using Shape64 = Shape<64, 128, 2, 2, 4>;
using Shape128 = Shape<128, 128, 2, 2, 3>;
// Hopper: two warpgroups, each wgmma m64nBNk16 on 64 rows; B and A tiles in shared
// memory are read by the tensor cores directly (no ldmatrix), with the same swizzle.
// 128 x 128: three stages of 32 KiB, so that two blocks share an SM and one's epilogue
// overlaps the other's math (measured: four stages with a wgmma in flight, one block an
// SM, were 15% slower). 128 x 256: one block an SM, four stages of 48 KiB, one in flight.
using ShapeWg128 = Shape<128, 128, 8, 1, 3, true, 0>;
using ShapeWg128W = Shape<128, 256, 8, 1, 4, true, 1>;
static_assert(ShapeWg128::kStageBytes % 1024 == 0 && ShapeWg128::kABytes % 1024 == 0 &&
		      ShapeWg128W::kStageBytes % 1024 == 0,
	      "128-byte swizzled wgmma operands start on 1024-byte boundaries");

// The output columns of one block (or work item) of shape S: a gated expert's gate/up
// block holds gate and up weight rows side by side, BN / 2 of each.
template <class S, bool kGateUp> __host__ __device__ __forceinline__ uint32_t block_columns(const struct moe_gpu_args &a)
{
	return kGateUp && a.gated ? S::BN / 2 : S::BN;
}

// How many such blocks span the GEMM's output: I columns for gate/up, H for down.
template <class S, bool kGateUp> __host__ __device__ __forceinline__ uint32_t column_blocks_of(const struct moe_gpu_args &a)
{
	const uint32_t cols = block_columns<S, kGateUp>(a);
	return ((kGateUp ? a.inter : a.hidden) + cols - 1) / cols;
}

__device__ __forceinline__ uint32_t smem_address(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

// Byte offset of 16-byte chunk `chunk` of tile row `row`.
__device__ __forceinline__ uint32_t swizzle(int row, int chunk)
{
	return (uint32_t)(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// 16 bytes from global to shared memory, or 16 zero bytes where `in_bounds` is false
// (the source is then not read).
__device__ __forceinline__ void copy16(uint32_t dst, const void *src, bool in_bounds)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
		     "r"(in_bounds ? 16 : 0));
}

// The same, marked to leave L2 first (the L2 policy of evict_first_policy()): data read
// once, which should not push out what is read again soon.
__device__ __forceinline__ void copy16_once(uint32_t dst, const void *src, bool in_bounds, uint64_t policy)
{
	asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
		     "r"(in_bounds ? 16 : 0), "l"(policy));
}

__device__ __forceinline__ uint64_t evict_first_policy()
{
	uint64_t policy;
	asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
	return policy;
}

__device__ __forceinline__ void copy_commit()
{
	asm volatile("cp.async.commit_group;\n" ::);
}

template <int kPending> __device__ __forceinline__ void copy_wait()
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix4(uint32_t r[4], uint32_t address)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(address));
}

template <bool kBf16>
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
	if (kBf16)
		asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
		    "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
		    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
	else
		asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
		    "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
		    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Have L2 fetch `bytes` (a multiple of 16) from `p` (16-byte aligned), without waiting.
__device__ __forceinline__ void prefetch_to_l2(const void *p, uint32_t bytes)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#else
	(void)p, (void)bytes;
#endif
}

// wgmma (sm_90a only: the arch-specific features; elsewhere these trap, and the plan
// never picks the kernel, see moe_gpu_plan).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOED_HAVE_WGMMA 1
#endif

// A shared-memory operand: K-major rows of 128 bytes, 128-byte swizzle (as swizzle()
// lays them out), 8-row groups 1024 bytes apart; the leading offset is unused there.
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t address)
{
	return (uint64_t)((address & 0x3ffff) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 |
	       (uint64_t)1 << 62;
}

__device__ __forceinline__ void wgmma_fence()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

// cp.async writes shared memory through the generic proxy, wgmma reads it through the
// async proxy: each thread fences its landed copies before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_commit()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int kPending> __device__ __forceinline__ void wgmma_wait()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

// d[N / 2] += A (64 x 16, at desc_a) * B (N x 16, K-major, at desc_b)^T, one warpgroup,
// N = 32, 128 or 256. Issued asynchronously: wgmma_commit() closes the group, wgmma_wait<n>()
// waits until at most n groups are still running.
#define MOED_WGMMA_D(i) "+f"(d[i])
#define MOED_WGMMA_D8(i)                                                                      \
	MOED_WGMMA_D(i), MOED_WGMMA_D(i + 1), MOED_WGMMA_D(i + 2), MOED_WGMMA_D(i + 3),         \
		MOED_WGMMA_D(i + 4), MOED_WGMMA_D(i + 5), MOED_WGMMA_D(i + 6), MOED_WGMMA_D(i + 7)
#define MOED_WGMMA_D16(i) MOED_WGMMA_D8(i), MOED_WGMMA_D8(i + 8)
#define MOED_WGMMA_D64(i)                                                                     \
	MOED_WGMMA_D8(i), MOED_WGMMA_D8(i + 8), MOED_WGMMA_D8(i + 16), MOED_WGMMA_D8(i + 24),   \
		MOED_WGMMA_D8(i + 32), MOED_WGMMA_D8(i + 40), MOED_WGMMA_D8(i + 48),            \
		MOED_WGMMA_D8(i + 56)
// The accumulator operands %0 .. %(N / 2 - 1); the descriptors follow them.
#define MOED_WGMMA_REGS16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define MOED_WGMMA_REGS64 \
	"{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
	"%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
	"%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
	"%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define MOED_WGMMA_REGS128 \
	"{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
	"%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
	"%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
	"%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
	"%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
	"%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
	"%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
	"%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define MOED_WGMMA(shape, type, regs, da, db)                                                 \
	"{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                                \
	"wgmma.mma_async.sync.aligned." shape ".f32." type "." type " " regs ", " da ", " db      \
	", p, 1, 1, 0, 0;\n}\n"
// Pins the accumulators in place around the asynchronous math: without it the compiler may
// move or read them while a wgmma is still writing them, which ptxas answers by
// serialising every wgmma (its warning C7514).
template <int kRegs> __device__ __forceinline__ void fence_operands(float *d)
{
#pragma unroll
	for (int i = 0; i < kRegs; i++)
		asm volatile("" : "+f"(d[i])::"memory");
}

template <int N, bool kBf16>
__device__ __forceinline__ void wgmma_m64k16(float *d, uint64_t desc_a, uint64_t desc_b)
{
#ifdef MOED_HAVE_WGMMA
	static_assert(N == 32 || N == 128 || N == 256, "the shapes the kernels use");
	if constexpr (N == 32 && kBf16)
		asm volatile(MOED_WGMMA("m64n32k16", "bf16", MOED_WGMMA_REGS16, "%16", "%17")
			     : MOED_WGMMA_D16(0) : "l"(desc_a), "l"(desc_b));
	else if constexpr (N == 32)
		asm volatile(MOED_WGMMA("m64n32k16", "f16", MOED_WGMMA_REGS16, "%16", "%17")
			     : MOED_WGMMA_D16(0) : "l"(desc_a), "l"(desc_b));
	else if constexpr (N == 128 && kBf16)
		asm volatile(MOED_WGMMA("m64n128k16", "bf16", MOED_WGMMA_REGS64, "%64", "%65")
			     : MOED_WGMMA_D64(0) : "l"(desc_a), "l"(desc_b));
	else if constexpr (N == 128)
		asm volatile(MOED_WGMMA("m64n128k16", "f16", MOED_WGMMA_REGS64, "%64", "%65")
			     : MOED_WGMMA_D64(0) : "l"(desc_a), "l"(desc_b));
	else if constexpr (kBf16)
		asm volatile(MOED_WGMMA("m64n256k16", "bf16", MOED_WGMMA_REGS128, "%128", "%129")
			     : MOED_WGMMA_D64(0), MOED_WGMMA_D64(64) : "l"(desc_a), "l"(desc_b));
	else
		asm volatile(MOED_WGMMA("m64n256k16", "f16", MOED_WGMMA_REGS128, "%128", "%129")
			     : MOED_WGMMA_D64(0), MOED_WGMMA_D64(64) : "l"(desc_a), "l"(desc_b));
#else
	(void)d, (void)desc_a, (void)desc_b;
	__trap();
#endif
}

// Where a loader thread's copies come from for one tile: kLoaders threads share a stage,
// each copying the same 16-byte chunk of k of the same rows every stage (A: the tile's
// pairs, gathered from x for gate/up or contiguous in act for down; B: weight rows, for
// gated experts half gate and half the matching up rows in each warp's column span).
template <class S, int kLoaders, bool kGateUp> struct TileLoader {
	static constexpr int kRowsPerPass = kLoaders / 8;
	static constexpr int kAPasses = S::BM / kRowsPerPass, kBPasses = S::BN / kRowsPerPass;
	static_assert(S::BM % kRowsPerPass == 0 && S::BN % kRowsPerPass == 0, "whole copy passes");
	const uint16_t *a_src[kAPasses], *b_src[kBPasses];
	const uint16_t *w;
	uint32_t K;
	int row0, chunk;
	bool once;       // the weights are read once and leave L2 first (decode's prefetch)
	uint64_t policy;

	// The weights' sources (expert e, columns from n0), then init_a() for A's; read_once:
	// the weights leave L2 first (gemm_block).
	__device__ __forceinline__ void init(const struct moe_gpu_args &a, uint32_t e, uint32_t n0, int tid,
					     bool read_once = false)
	{
		K = kGateUp ? a.hidden : a.inter;
		const uint32_t N = kGateUp ? a.inter : a.hidden;
		const bool gated = kGateUp && a.gated;
		const size_t w_rows = kGateUp ? (gated ? 2 * (size_t)a.inter : a.inter) : a.hidden;
		w = (const uint16_t *)(kGateUp ? a.w13 : a.w2);
		row0 = tid / 8, chunk = tid % 8;
		once = read_once;
		policy = once ? evict_first_policy() : 0;
		const uint32_t kc = (uint32_t)chunk * 8;
#pragma unroll
		for (int p = 0; p < kBPasses; p++) {
			const uint32_t rr = row0 + p * kRowsPerPass;
			uint32_t col = n0 + rr, wrow = col;
			if (gated) {
				const uint32_t half = S::kWarpCols / 2, q = rr % S::kWarpCols;
				col = n0 + rr / S::kWarpCols * half + q % half;
				wrow = (q >= half ? a.inter : 0) + col;
			}
			b_src[p] = col < N ? w + ((size_t)e * w_rows + wrow) * K + kc : nullptr;
		}
	}

	// The A rows' sources, after init(): the gate/up GEMM's read the routing (pair_of).
	__device__ __forceinline__ void init_a(const struct moe_gpu_args &a, uint32_t first, uint32_t count)
	{
		const uint32_t kc = (uint32_t)chunk * 8;
#pragma unroll
		for (int p = 0; p < kAPasses; p++) {
			const uint32_t row = row0 + p * kRowsPerPass;
			a_src[p] = nullptr;
			if (row < count && kGateUp)
				a_src[p] = (const uint16_t *)a.x + (size_t)(a.pair_of[first + row] / a.topk) * K + kc;
			else if (row < count)
				a_src[p] = (const uint16_t *)a.act + (size_t)(first + row) * K + kc;
		}
	}

	// Rows out of range and k beyond K are zero-filled (the source is then not read).
	__device__ __forceinline__ void load_a(uint32_t stage, uint32_t k0) const
	{
		const bool k_in = k0 + (uint32_t)chunk * 8 < K;
#pragma unroll
		for (int p = 0; p < kAPasses; p++) {
			const bool ok = a_src[p] && k_in;
			copy16(stage + swizzle(row0 + p * kRowsPerPass, chunk), ok ? a_src[p] + k0 : w, ok);
		}
	}

	__device__ __forceinline__ void load_b(uint32_t stage, uint32_t k0) const
	{
		const uint32_t bs = stage + S::kABytes;
		const bool k_in = k0 + (uint32_t)chunk * 8 < K;
#pragma unroll
		for (int p = 0; p < kBPasses; p++) {
			const bool ok = b_src[p] && k_in;
			const uint32_t dst = bs + swizzle(row0 + p * kRowsPerPass, chunk);
			if (once)
				copy16_once(dst, ok ? b_src[p] + k0 : w, ok, policy);
			else
				copy16(dst, ok ? b_src[p] + k0 : w, ok);
		}
	}
};

// The first of the 16 rows of a block tile that warp row warp_m's accumulators mt hold:
// for mma.sync, the warp's kMT tiles of 16 rows are consecutive; a wgmma m64 is a
// warpgroup's, 16 rows a warp, so that a warp's tiles are 64 rows apart (with one tile a
// warp, the same rows).
template <class S> __device__ __forceinline__ uint32_t warp_row(int warp_m, int mt)
{
	if constexpr (S::kWgmma && S::kMT > 1)
		return (uint32_t)(warp_m % 4 * 16 + warp_m / 4 * 64 * S::kMT + mt * 64);
	return (uint32_t)(warp_m * S::kWarpRows + mt * 16);
}

// A warp's accumulator rows written as 16-bit values, two a 32-bit store: the kFrags
// 8-column fragments from column col0 of each of its rows in [0, count) of the tile at
// pair `first`, value(mt, nt, e, s) giving element e (0 to 3) of fragment (mt, nt) of a
// row whose row_scale(row) is s. The bounds are checked once a warp where the fragments
// lie inside N (N is a multiple of 8), and each row's address and scale found once: the
// stores then take constant offsets.
template <class S, int kFrags, bool kBf16, class RowScale, class Value>
__device__ __forceinline__ void store_rows(uint16_t *out, uint32_t N, uint32_t col0, uint32_t first,
					   uint32_t count, int warp_m, int lane, RowScale row_scale, Value value)
{
	const int frag_row = lane / 4, frag_col = lane % 4 * 2;
	const bool whole = col0 + kFrags * 8 <= N;
#pragma unroll
	for (int mt = 0; mt < S::kMT; mt++) {
#pragma unroll
		for (int h = 0; h < 2; h++) {
			const uint32_t row = warp_row<S>(warp_m, mt) + frag_row + 8 * h;
			if (row >= count)
				continue;
			uint32_t *dst = (uint32_t *)(out + (size_t)(first + row) * N + col0 + frag_col);
			const float s = row_scale(row);
			if (whole) {
#pragma unroll
				for (int nt = 0; nt < kFrags; nt++)
					dst[nt * 4] = pack2(value(mt, nt, 2 * h, s), value(mt, nt, 2 * h + 1, s), kBf16);
				continue;
			}
#pragma unroll
			for (int nt = 0; nt < kFrags; nt++)
				if (col0 + nt * 8 < N)
					dst[nt * 4] = pack2(value(mt, nt, 2 * h, s), value(mt, nt, 2 * h + 1, s), kBf16);
		}
	}
}

// The gate/up epilogue's job choices as constants: write(activation, scaled) is called
// with the activation (MOED_GPU_SILU or MOED_GPU_GELU) and whether the router weight
// applies to the input (x w = (x s) w, row by row; else a constant 1 that the compiler
// folds away) as integral constants, so that they are taken once, outside the loops over
// the fragments.
template <class Write> __device__ __forceinline__ void with_gate_up_choices(const struct moe_gpu_args &a, Write write)
{
	using Silu = std::integral_constant<int, MOED_GPU_SILU>;
	using Gelu = std::integral_constant<int, MOED_GPU_GELU>;
	if (a.router_weight_on_input)
		a.activation == MOED_GPU_GELU ? write(Gelu(), std::true_type()) : write(Silu(), std::true_type());
	else
		a.activation == MOED_GPU_GELU ? write(Gelu(), std::false_type()) : write(Silu(), std::false_type());
}

// The epilogue's values, handed to `rows` once per call as (kFrags, out, N, col0,
// row_scale, value), the arguments of store_rows: gate/up's a = act(g) * u (or act(x)),
// down's y in the I/O dtype. Accumulator (mt, nt): elements 0, 1 at row lane / 4,
// columns 2 * (lane % 4) + 0, 1; elements 2, 3 eight rows further down. kInterleaved: a
// gated item's weight rows came 8 gate and 8 up rows in turn (gate_up_interleaved_map), so
// that gate fragments are the even ones.
template <class S, bool kGateUp, bool kBf16, int kCols = S::BN, bool kInterleaved = false, class Rows>
__device__ __forceinline__ void tile_values(const struct moe_gpu_args &a, const float (&acc)[S::kMT][S::kNT][4],
					    uint32_t first, uint32_t n0, int warp_n, Rows rows)
{
	static_assert(kCols == S::BN || (!kGateUp && S::WN == 1), "narrower items: the down GEMM's, a warp's rows whole");
	if constexpr (!kGateUp) {
		rows(std::integral_constant<int, kCols / S::WN / 8>(), (uint16_t *)a.y, a.hidden, n0 + warp_n * S::kWarpCols,
		     [](uint32_t) { return 1.0f; }, [&](int mt, int nt, int e, float) { return acc[mt][nt][e]; });
		return;
	}
	with_gate_up_choices(a, [&](auto activation, auto scaled) {
		constexpr int kAct = decltype(activation)::value;
		auto row_scale = [&](uint32_t row) {
			return decltype(scaled)::value ? a.topk_weights[a.pair_of[first + row]] : 1.0f;
		};
		if (a.gated) // gate fragments nt, up fragments nt + kNT / 2 (the weight rows' order)
			rows(std::integral_constant<int, S::kNT / 2>(), (uint16_t *)a.act, a.inter,
			     n0 + warp_n * (S::kWarpCols / 2), row_scale, [&](int mt, int nt, int e, float s) {
				     const int gate = kInterleaved ? 2 * nt : nt, up = kInterleaved ? 2 * nt + 1 : nt + S::kNT / 2;
				     return activate(kAct, s * acc[mt][gate][e]) * (s * acc[mt][up][e]);
			     });
		else
			rows(std::integral_constant<int, S::kNT>(), (uint16_t *)a.act, a.inter, n0 + warp_n * S::kWarpCols,
			     row_scale, [&](int mt, int nt, int e, float s) { return activate(kAct, s * acc[mt][nt][e]); });
	});
}

// The epilogue of a warp's accumulators, kept in registers, written by the warp itself:
// tile_values' values, or where the down GEMM's K is split, its partial sums added into
// a zeroed f32 y.
template <class S, bool kGateUp, bool kBf16, int kCols = S::BN, bool kInterleaved = false>
__device__ __forceinline__ void store_tile(const struct moe_gpu_args &a, const float (&acc)[S::kMT][S::kNT][4],
					   uint32_t first, uint32_t count, uint32_t n0, int warp_m, int warp_n,
					   int lane)
{
	if constexpr (!kGateUp) {
		if (!a.y_io) {
			// Partial sums over K, added into a zeroed f32 y; folded (see
			// moe_gpu_args.fold), into the pair's token row, weighted.
			const uint32_t N = a.hidden, col0 = n0 + warp_n * S::kWarpCols;
			const int frag_row = lane / 4, frag_col = lane % 4 * 2;
#pragma unroll
			for (int mt = 0; mt < S::kMT; mt++) {
#pragma unroll
				for (int h = 0; h < 2; h++) {
					const uint32_t row = warp_row<S>(warp_m, mt) + frag_row + 8 * h;
					if (row >= count)
						continue;
					const size_t pos = first + row;
					size_t y_row = pos;
					float coef = 1.0f;
					if (a.fold) {
						const uint32_t pair = a.pair_of[pos];
						y_row = pair / a.topk;
						coef = (a.router_weight_on_input ? 1.0f : a.topk_weights[pair]) * a.scale;
					}
#pragma unroll
					for (int nt = 0; nt < kCols / S::WN / 8; nt++) {
						const uint32_t col = col0 + nt * 8 + frag_col;
						if (col >= N)
							continue;
						float *y = a.y + y_row * N + col;
						atomicAdd(y, coef * acc[mt][nt][2 * h]);
						atomicAdd(y + 1, coef * acc[mt][nt][2 * h + 1]);
					}
				}
			}
			return;
		}
	}
	tile_values<S, kGateUp, kBf16, kCols, kInterleaved>(a, acc, first, n0, warp_n,
				       [&](auto frags, uint16_t *out, uint32_t N, uint32_t col0, auto row_scale, auto value) {
					       store_rows<S, decltype(frags)::value, kBf16>(out, N, col0, first, count, warp_m,
											    lane, row_scale, value);
				       });
}

// The epilogue of a run of a warpgroup's extra rows (wgmma128e): acc holds 64 weight rows (16 a
// warp: rows lane / 4 and lane / 4 + 8) by the extra rows at pair `first` (fragment nt:
// pairs 8 nt + 2 (lane % 4) + 0, 1), count of them real. The weight rows are output
// columns from col0 (the down GEMM's y, or a plain gate/up's act), or where `gated`, the
// gate and up rows of 32 act columns from col0, 8 of each in turn (a thread's two rows:
// one column's gate and up). Each value is stored on its own, transposed.
template <bool kGateUp, bool kBf16>
__device__ __forceinline__ void store_extra(const struct moe_gpu_args &a, const float (&acc)[MOE_ROUTE_EXTRA_ROWS / 8][4],
					    uint32_t first, uint32_t count, uint32_t col0, bool gated, int warp, int lane)
{
	const uint32_t N = kGateUp ? a.inter : a.hidden;
	uint16_t *out = kGateUp ? (uint16_t *)a.act : (uint16_t *)a.y;
	const uint32_t pair0 = 2 * (uint32_t)(lane % 4);
	auto put = [&](uint32_t p, uint32_t col, float v) {
		if (p < count && col < N)
			out[(size_t)(first + p) * N + col] = (uint16_t)pack2(v, 0.0f, kBf16); // v in the low half
	};
	if constexpr (!kGateUp) {
#pragma unroll
		for (int h = 0; h < 2; h++)
#pragma unroll
			for (int nt = 0; nt < (int)MOE_ROUTE_EXTRA_ROWS / 8; nt++)
#pragma unroll
				for (int j = 0; j < 2; j++)
					put(8 * nt + pair0 + j, col0 + 16 * warp + lane / 4 + 8 * h, acc[nt][2 * h + j]);
		return;
	}
	with_gate_up_choices(a, [&](auto activation, auto scaled) {
		constexpr int kAct = decltype(activation)::value;
		auto scale = [&](uint32_t p) {
			return decltype(scaled)::value && p < count ? a.topk_weights[a.pair_of[first + p]] : 1.0f;
		};
#pragma unroll
		for (int nt = 0; nt < (int)MOE_ROUTE_EXTRA_ROWS / 8; nt++)
#pragma unroll
			for (int j = 0; j < 2; j++) {
				const uint32_t p = 8 * nt + pair0 + j;
				const float s = scale(p);
				if (gated)
					put(p, col0 + 8 * warp + lane / 4,
					    activate(kAct, s * acc[nt][j]) * (s * acc[nt][2 + j]));
				else
					for (int h = 0; h < 2; h++)
						put(p, col0 + 16 * warp + lane / 4 + 8 * h, activate(kAct, s * acc[nt][2 * h + j]));
			}
	});
}

// Counts between blocks, as acquire and release at the device's scope. A block counts
// itself once all its threads' writes are out: a barrier, then its first thread's release
// (cumulative: it carries the writes the barrier ordered before it). A block that waits
// for a count reads it with acquire in its first thread, then a barrier: its threads'
// reads come after the counted blocks' writes. (Each thread's __threadfence, a
// sequentially consistent fence, on both sides, was the form before: Qwen3-30B-A3B M = 1
// 27 -> 25-26 µs, the other decode rows up to 1 µs faster; bench/RESULTS.md, version 35.)
__device__ __forceinline__ void count_release(uint32_t *counter)
{
	asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(counter) : "memory");
}

__device__ __forceinline__ uint32_t load_acquire(const uint32_t *counter)
{
	uint32_t v;
	asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(counter) : "memory");
	return v;
}

// Both at once (the last of several blocks): this block's count, and the count before it.
__device__ __forceinline__ uint32_t count_acquire_release(uint32_t *counter)
{
	uint32_t before;
	asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n" : "=r"(before) : "l"(counter) : "memory");
	return before;
}

// Whether this block is the last of `blocks` to get here: each counts itself on
// `counter` once its threads' writes are out. The last one sees all of theirs.
__device__ bool last_to_finish(uint32_t *counter, uint32_t blocks)
{
	__shared__ bool last;
	__syncthreads();
	if (threadIdx.x == 0)
		last = count_acquire_release(counter) == blocks - 1;
	__syncthreads();
	return last;
}

// The folded combine's end, by one block: y ([M, H] f32, every block's weighted sums in
// it) converted into out.
template <bool kBf16> __device__ void write_folded(const struct moe_gpu_args &a)
{
	const float4 *y = (const float4 *)a.y;
	uint4 *out = (uint4 *)a.out;
	const size_t groups = (size_t)a.tokens * a.hidden / 8; // H is a multiple of 8
	for (size_t g = threadIdx.x; g < groups; g += blockDim.x) {
		const float4 lo = __ldcg(y + 2 * g), hi = __ldcg(y + 2 * g + 1); // from L2, not L1
		out[g] = make_uint4(pack2(lo.x, lo.y, kBf16), pack2(lo.z, lo.w, kBf16),
				    pack2(hi.x, hi.y, kBf16), pack2(hi.z, hi.w, kBf16));
	}
}

// The down grid's last block to finish writes the folded combine's out, and leaves the
// counter at zero.
template <bool kBf16> __device__ void finish_fold(const struct moe_gpu_args &a)
{
	uint32_t *const done = a.counters + MOE_GPU_COUNTER_DONE;
	if (!last_to_finish(done, gridDim.x * gridDim.y * gridDim.z))
		return;
	write_folded<kBf16>(a);
	if (threadIdx.x == 0)
		*done = 0;
}

// The grid is tiles (x) by column blocks (y), and blocks start roughly in x-major order.
// Renumbered in groups of a.tile_group tiles, all column blocks of a group before the next
// group, the blocks running at once share a few tiles' A rows and a few experts' weight
// columns, each read from DRAM about once while in L2. In x-major order a wave took one
// column block of every tile: the A rows of all tiles went through L2 once per column
// block (Mixtral M = 4096: 112 times).
// (1: a tile's column blocks together; the grid's width: x-major, as launched.)
// work_item: the (tile, column block) of the order-th block to start, or the persistent
// kernel's order-th work item.
__device__ __forceinline__ void work_item(uint64_t order, uint32_t tiles, uint32_t column_blocks,
					  uint32_t group_tiles, uint32_t &tile, uint32_t &column_block)
{
	const uint64_t per_group = (uint64_t)group_tiles * column_blocks;
	const uint32_t group = (uint32_t)(order / per_group);
	const uint32_t first = group * group_tiles, left = tiles - first;
	const uint32_t in_group = left < group_tiles ? left : group_tiles; // the last may be short
	const uint32_t within = (uint32_t)(order - group * per_group);
	tile = first + within % in_group;
	column_block = within / in_group;
}

__device__ __forceinline__ void block_work(uint32_t group_tiles, uint32_t &tile, uint32_t &column_block)
{
	work_item((uint64_t)blockIdx.y * gridDim.x + blockIdx.x, gridDim.x, gridDim.y, group_tiles, tile,
		  column_block);
}

// The job's tiles: the device sort's count where it sorted (written before this grid, or
// its prerequisite, began), else the launch's.
__device__ __forceinline__ uint32_t tile_count_of(const struct moe_gpu_args &a)
{
	return a.tile_total ? *a.tile_total : a.tiles;
}

// Decode (moe_gpu_args.prefetch_down): the down GEMM's weights do not depend on the
// gate/up results, and the gate/up grid of a small job leaves DRAM bandwidth idle (few
// blocks, short streams, a ramp and a tail). The gate/up blocks of each expert's first
// tile have L2 fetch the last rows of the expert's w2 that the job's budget leaves it, a
// share of them each column block, so that the down GEMM reads them from L2 (the w13
// copies, and the other rows of w2, leave L2 first meanwhile). The budget goes to the
// job's last tiles first: their gate/up items come last, and the down items of their last
// column blocks end the job.
// The last rows of the w2 of tile `tile`'s expert that are prefetched: prefetch_down rows
// counted from the job's last tile back (the device's count where it sorted an mma32
// job), H rows a tile.
__device__ __forceinline__ uint32_t prefetched_rows(const struct moe_gpu_args &a, uint32_t tile)
{
	const uint64_t after = (uint64_t)(tile_count_of(a) - 1 - tile) * a.hidden; // later tiles'
	const uint64_t left = a.prefetch_down > after ? a.prefetch_down - after : 0;
	return left < a.hidden ? (uint32_t)left : a.hidden;
}

__device__ void prefetch_down_weights(const struct moe_gpu_args &a, uint32_t tile, uint32_t column_block,
				      uint32_t column_blocks)
{
	const uint32_t e = a.tile_expert[tile], fetched = prefetched_rows(a, tile);
	if (!fetched || (tile > 0 && a.tile_expert[tile - 1] == e)) // an expert's tiles are consecutive
		return;
	const uint32_t share = (fetched + column_blocks - 1) / column_blocks;
	const uint32_t r0 = a.hidden - fetched + column_block * share;
	if (r0 >= a.hidden)
		return;
	const uint32_t rows = share < a.hidden - r0 ? share : a.hidden - r0;
	const size_t row_bytes = (size_t)a.inter * 2, bytes = rows * row_bytes; // I: a multiple of 8
	const char *from = (const char *)a.w2 + ((size_t)e * a.hidden + r0) * row_bytes;
	constexpr size_t kPiece = 32768;
	for (size_t at = threadIdx.x * kPiece; at < bytes; at += blockDim.x * kPiece)
		prefetch_to_l2(from + at, (uint32_t)(bytes - at < kPiece ? bytes - at : kPiece));
}

// y zeroed for the down GEMM's sums (f32; H is a multiple of 8, so y is whole float4s):
// share `share` of `shares`, by this block's threads.
__device__ void zero_y_share(const struct moe_gpu_args &a, size_t share, size_t shares)
{
	const size_t n = (size_t)a.tokens * a.topk * a.hidden / 4;
	for (size_t i = share * blockDim.x + threadIdx.x; i < n; i += shares * blockDim.x)
		((float4 *)a.y)[i] = make_float4(0, 0, 0, 0);
}

// One block's GEMM: tile `tile` of pairs by column block `column_block` of
// `column_blocks`, part `part` of `parts` of K (the down GEMM only). With weights_first
// (always for the down GEMM) it calls wait_for_a() once its first weight stages are
// requested, before it reads anything of A (act, or the routing and x); both GEMMs call
// math_done() when only the epilogue is left.
template <class S, bool kGateUp, bool kBf16, class WaitForA, class MathDone>
__device__ __forceinline__ void gemm_block(const struct moe_gpu_args &a, uint32_t base, uint32_t tile,
					   uint32_t column_block, uint32_t column_blocks, uint32_t part,
					   uint32_t parts, WaitForA wait_for_a, MathDone math_done,
					   bool weights_first = !kGateUp)
{
	const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
	const int warp_m = warp / S::WN, warp_n = warp % S::WN;
	const uint32_t first = a.tile_first[tile], count = a.tile_count[tile];
	const uint32_t K = kGateUp ? a.hidden : a.inter;
	const uint32_t n0 = column_block * block_columns<S, kGateUp>(a);
	TileLoader<S, S::kThreads, kGateUp> loader;
	loader.init(a, a.tile_expert[tile], n0, tid,
		    a.prefetch_down &&
			    (kGateUp || n0 + block_columns<S, false>(a) <= a.hidden - prefetched_rows(a, tile)));
	auto stage_at = [&](uint32_t s) { return base + s * S::kStageBytes; };

	float acc[S::kMT][S::kNT][4];
#pragma unroll
	for (int mt = 0; mt < S::kMT; mt++)
#pragma unroll
		for (int nt = 0; nt < S::kNT; nt++)
			acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0;

	// Split K (the down GEMM only): this block's run of k-tiles.
	const uint32_t ktiles_all = (K + kBK - 1) / kBK, per = (ktiles_all + parts - 1) / parts;
	const uint32_t kt0 = part * per;
	const uint32_t ktiles = kt0 >= ktiles_all ? 0 : ktiles_all - kt0 < per ? ktiles_all - kt0 : per;
	// Copies run kAhead k-tiles ahead of the math. With wgmma one group of the math stays
	// in flight past the barrier too, so the stage it reads is not refilled until the
	// iteration after next: two stages are the math's, the rest are in flight.
	constexpr int kStages = S::kStages, kAhead = kStages - 1 - S::kMathInFlight;
	// The first stages. The weights depend on nothing A does: the down GEMM's gate/up
	// results may not all be written yet, a one-kernel decode job's routing and x may
	// still be on their way over the bus. With weights_first they are requested before
	// waiting for A (the first copy group then holds all of them, which only makes its
	// wait stricter).
	if constexpr (kGateUp) {
		if (a.prefetch_down)
			prefetch_down_weights(a, tile, column_block, column_blocks);
	}
	if (!kGateUp || weights_first) {
#pragma unroll
		for (int s = 0; s < kAhead; s++)
			if ((uint32_t)s < ktiles)
				loader.load_b(stage_at(s), (kt0 + s) * kBK);
		wait_for_a();
	}
	loader.init_a(a, first, count);
#pragma unroll
	for (int s = 0; s < kAhead; s++) {
		if ((uint32_t)s < ktiles) {
			loader.load_a(stage_at(s), (kt0 + s) * kBK);
			if (kGateUp && !weights_first)
				loader.load_b(stage_at(s), (kt0 + s) * kBK);
		}
		copy_commit();
	}
	for (uint32_t kt = 0; kt < ktiles; kt++) {
		copy_wait<kAhead - 1>(); // this thread's copies of stage kt have landed...
		if constexpr (S::kWgmma)
			fence_proxy_async();
		__syncthreads(); // ...and everyone's; the math of stage kt - kStages + kAhead is done
		const uint32_t next = kt + kAhead;
		if (next < ktiles) {
			loader.load_a(stage_at(next % kStages), (kt0 + next) * kBK);
			loader.load_b(stage_at(next % kStages), (kt0 + next) * kBK);
		}
		copy_commit();
		const uint32_t as = stage_at(kt % kStages), bs = as + S::kABytes;
		if constexpr (S::kWgmma) {
			static_assert(S::kMT == 1 && S::WN == 1, "m64 by all BN columns per warpgroup");
			// Warpgroup g: rows 64 g .. 64 g + 63 of the A tile, all BN rows of B. Each k16
			// step starts 32 bytes further into the (swizzled) 128-byte rows.
			const uint64_t da = wgmma_desc(as + warp / 4 * 64 * 128), db = wgmma_desc(bs);
			fence_operands<S::BN / 2>(&acc[0][0][0]);
			wgmma_fence();
#pragma unroll
			for (int kk = 0; kk < kBK / 16; kk++)
				wgmma_m64k16<S::BN, kBf16>(&acc[0][0][0], da + 2 * kk, db + 2 * kk);
			wgmma_commit();
			wgmma_wait<S::kMathInFlight>(); // the next barrier frees the stage read before
			fence_operands<S::BN / 2>(&acc[0][0][0]);
		} else {
#pragma unroll
		for (int kk = 0; kk < kBK / 16; kk++) {
			uint32_t af[S::kMT][4], bf[S::kNT][2];
#pragma unroll
			for (int mt = 0; mt < S::kMT; mt++)
				ldmatrix4(af[mt], as + swizzle(warp_m * S::kWarpRows + mt * 16 + lane % 16,
							       2 * kk + lane / 16));
#pragma unroll
			for (int p = 0; p < S::kNT / 2; p++) {
				uint32_t r[4];
				ldmatrix4(r, bs + swizzle(warp_n * S::kWarpCols + p * 16 + lane % 8 + lane / 16 * 8,
							  2 * kk + lane / 8 % 2));
				bf[2 * p][0] = r[0], bf[2 * p][1] = r[1];
				bf[2 * p + 1][0] = r[2], bf[2 * p + 1][1] = r[3];
			}
#pragma unroll
			for (int mt = 0; mt < S::kMT; mt++)
#pragma unroll
				for (int nt = 0; nt < S::kNT; nt++)
					mma<kBf16>(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
		}
		}
	}
	if constexpr (S::kWgmma) {
		wgmma_wait<0>();
		fence_operands<S::BN / 2>(&acc[0][0][0]);
	}
	math_done();
	store_tile<S, kGateUp, kBf16>(a, acc, first, count, n0, warp_m, warp_n, lane);
}

// One block a (tile, column block[, part of K]) of one GEMM; the down grid is the gate/up
// grid's programmatic dependent where dependent_launch().
template <class S, bool kGateUp, bool kBf16>
__global__ void __launch_bounds__(S::kThreads) mma_kernel(const struct moe_gpu_args a)
{
	extern __shared__ __align__(1024) unsigned char smem[];
	uint32_t tile, column_block;
	block_work(a.tile_group, tile, column_block);
	if constexpr (kGateUp)
		let_dependents_launch();
	// The grid is sized for the most tiles there can be where the device sorted.
	if (tile < tile_count_of(a))
		gemm_block<S, kGateUp, kBf16>(a, smem_address(smem), tile, column_block, gridDim.y, blockIdx.z,
					      gridDim.z, [] { wait_for_prerequisite_grid(); }, [] {});
	if constexpr (kGateUp) {
		// The down GEMM adds its sums into y: zeroed here, each block a share. The down
		// grid reads y only after this grid has finished (griddepcontrol.wait or stream
		// order).
		if (a.zero_y)
			zero_y_share(a, (size_t)blockIdx.y * gridDim.x + blockIdx.x, (size_t)gridDim.x * gridDim.y);
	} else if (a.fold) {
		finish_fold<kBf16>(a);
	}
}

// The SM this block runs on.
__device__ __forceinline__ uint32_t sm_id()
{
	uint32_t id;
	asm volatile("mov.u32 %0, %%smid;\n" : "=r"(id));
	return id;
}

// Until *counter reaches `value` (other blocks' count_release), by a block's first thread;
// a barrier must follow before its other threads read what the counted blocks wrote.
__device__ __forceinline__ void wait_for_count(const uint32_t *counter, uint32_t value)
{
	while (load_acquire(counter) < value)
		__nanosleep(128);
}

// The decode kernel's fetch (moe_gpu_args.fetch_bytes): item `item` copies its share,
// kFetchLoads 16-byte loads a thread all in flight at once (each crosses the bus), the
// last item also the 4-byte words past the last whole 16.
constexpr int kFetchLoads = 4;

template <class S> constexpr size_t kFetchItemLoads = (size_t)kFetchLoads * S::kThreads;

template <class S> __host__ __device__ uint32_t fetch_items_of(const struct moe_gpu_args &a)
{
	return (uint32_t)((a.fetch_bytes + 16 * kFetchItemLoads<S> - 1) / (16 * kFetchItemLoads<S>));
}

template <class S> __device__ void fetch_share(const struct moe_gpu_args &a, uint32_t item, uint32_t items)
{
	const uint4 *from = (const uint4 *)a.fetch_from;
	uint4 *to = (uint4 *)a.fetch_to;
	const size_t whole = a.fetch_bytes / 16, first = item * kFetchItemLoads<S>;
	uint4 v[kFetchLoads];
#pragma unroll
	for (int l = 0; l < kFetchLoads; l++) {
		const size_t i = first + l * S::kThreads + threadIdx.x;
		if (i < whole)
			v[l] = from[i];
	}
#pragma unroll
	for (int l = 0; l < kFetchLoads; l++) {
		const size_t i = first + l * S::kThreads + threadIdx.x;
		if (i < whole)
			to[i] = v[l];
	}
	if (item + 1 == items)
		for (size_t w = whole * 4 + threadIdx.x; w < a.fetch_bytes / 4; w += S::kThreads)
			((uint32_t *)a.fetch_to)[w] = ((const uint32_t *)a.fetch_from)[w];
}

// The head of a one-kernel decode job's fetch (moe_gpu_args.fetch_bytes) rides in the
// launch's parameters where it holds the tile table: every block writes these words where
// the fetch would have, before reading any of them, so that no block waits for another to
// bring them over the bus. Blocks then start streaming weights at once, and where more is
// left to fetch (a staged x), wait for it only before they read A. Within the 4 KiB of
// parameters every CUDA version takes, with moe_gpu_args: the routing of up to 16 tokens
// of top-8.
constexpr uint32_t kInlineFetchBytes = 3584;

struct InlineFetch {
	uint32_t *to; // moe_gpu_args.fetch_to
	uint32_t words;
	uint32_t data[kInlineFetchBytes / 4];
};

// A decode job in one kernel (Shape16, or Shape32 or 64 where the host placed the pairs; at
// most MOE_GPU_FUSED_MAX_TILES tiles): the blocks take work items in turn, first all of
// the gate/up GEMM's (tile, column block) items, then all of the down GEMM's (tile,
// column block, part of K), and a down item waits only for its own tile's gate/up
// items. With two grids the down GEMM waits for the whole gate/up grid: a ramp and a
// tail of the card's bandwidth idle between them (Qwen3-30B-A3B M = 4: 384 gate/up
// blocks for 264 places, then 512 down blocks).
// With Shape16 the items go tile by tile (all column blocks of a tile before the next
// tile's), not in tile groups: the tiles' gate/up items then end one tile after another,
// and the first down items find their tiles done while the last tile's weights still
// stream, where in groups every tile's last gate/up item came in the last round (Mixtral
// M = 4 429 -> 420 µs, M = 1 and 16 1-3 µs faster, no decode row slower; Shape32's
// Mixtral M = 64 was slower tile by tile, 703 -> 728: bench/RESULTS.md, version 25).
// Where the launch has the kernel fetch its inputs (moe_gpu_args.fetch_bytes), the first
// items copy them, and a block waits for all of those before its first other item; or
// their head comes in `head` (InlineFetch), the first items copy the rest, and a block
// waits for those only before an item reads A (the gate/up GEMM's routing and x, the down
// GEMM's act). The weights are then requested first, which where nothing is to wait for
// made the kernel 1-3 µs slower (bench/RESULTS.md, version 19).
// Every item, the first included, is claimed from a counter, so that a block waits only
// for items claimed before its own, by blocks that run (a block's first item by its
// index could wait unrun behind blocks that wait for it, should another kernel hold part
// of the card). A block claims its next item when only the present one's epilogue is
// left: claimed sooner, it could wait behind a long item (or one that waits for its
// tile) while other blocks have nothing left to do.
// The fetch and gate/up items come from one counter, the down items from another, taken
// in that order. With `spread` (no more fetch and gate/up items than the card has SMs)
// a block that is not the first to start on its SM takes the down items first: two
// gate/up items on one SM stream their weights more slowly than one (Qwen3-30B-A3B M =
// 1: 512 KiB an item, about 14.5 µs alone, 17-23 µs two to an SM; bench/RESULTS.md,
// version 27), and by arrival about 40 of its 96 gate/up items shared an SM while 36
// SMs had none. No deadlock: a down item waits only for gate/up items, which a first
// block of an SM takes before any down item and does without waiting for down items.
// The counters (moe_gpu_args.counters) are zero at the start; the last block to finish
// leaves them so, having written the folded combine's out where there is one.
template <class S, bool kBf16>
__global__ void __launch_bounds__(S::kThreads)
	decode_kernel(const struct moe_gpu_args a, uint32_t parts, bool spread, const __grid_constant__ InlineFetch head)
{
	extern __shared__ __align__(1024) unsigned char smem[];
	__shared__ uint32_t claimed[2]; // the items claimed, in turns, so that no thread
					// reads one while thread 0 writes the other
	uint32_t *const tile_done = a.counters + MOE_GPU_COUNTER_TILES;
	const uint32_t base = smem_address(smem);
	const uint32_t up_blocks = column_blocks_of<S, true>(a), down_blocks = column_blocks_of<S, false>(a);
	const uint32_t up_items = a.tiles * up_blocks, down_part_items = a.tiles * down_blocks;
	const uint32_t fetch_items = fetch_items_of<S>(a);
	const uint32_t lead_items = fetch_items + up_items, items = lead_items + parts * down_part_items;
	const uint32_t group = S::BM == Shape16::BM ? 1 : a.tile_group;
	// Thread 0's: which counter goes first, and which still have items.
	bool down_first = false, lead_left = true, down_left = true;
	if (spread && threadIdx.x == 0)
		down_first = atomicAdd(a.counters + MOE_GPU_COUNTER_SM_SLOTS + sm_id() % MOE_GPU_SM_SLOTS, 1u) > 0;
	auto claim_lead = [&] {
		const uint32_t i = lead_left ? atomicAdd(a.counters + MOE_GPU_COUNTER_CLAIMED, 1u) : lead_items;
		lead_left = i < lead_items;
		return lead_left ? i : items;
	};
	auto claim_down = [&] {
		const uint32_t i = down_left ? atomicAdd(a.counters + MOE_GPU_COUNTER_CLAIMED_DOWN, 1u) : items;
		down_left = i < items - lead_items;
		return down_left ? lead_items + i : items;
	};
	auto claim = [&] {
		const uint32_t i = down_first ? claim_down() : claim_lead();
		return i < items ? i : down_first ? claim_lead() : claim_down();
	};
	if (threadIdx.x == 0)
		claimed[0] = claim();
	__syncthreads();
	uint32_t first_item = claimed[0];
	// The head: the same words by every block (a block reads only after writing them).
	for (uint32_t w = threadIdx.x; w < head.words; w += S::kThreads)
		head.to[w] = head.data[w];
	while (first_item < fetch_items) {
		fetch_share<S>(a, first_item, fetch_items);
		__syncthreads(); // every thread has read first_item
		if (threadIdx.x == 0) {
			count_release(a.counters + MOE_GPU_COUNTER_FETCHED);
			claimed[0] = claim();
		}
		__syncthreads();
		first_item = claimed[0];
	}
	// Every fetch item was claimed before this block's next item, each by a block that
	// runs: the wait ends.
	auto wait_for_fetch = [&] {
		if (threadIdx.x == 0 && fetch_items)
			wait_for_count(a.counters + MOE_GPU_COUNTER_FETCHED, fetch_items);
		__syncthreads();
	};
	const bool early = head.words && fetch_items; // start before the fetch is done
	if (!early)
		wait_for_fetch(); // and the head written
	else
		__syncthreads(); // the head written
	for (uint32_t turn = 0, claimed_item = first_item; claimed_item < items; turn ^= 1) {
		uint32_t next = 0; // thread 0's
		auto claim_next = [&] {
			if (threadIdx.x == 0)
				next = claim();
		};
		const uint32_t item = claimed_item - fetch_items;
		uint32_t tile, column_block;
		if (item < up_items) {
			work_item(item, a.tiles, up_blocks, group, tile, column_block);
			if (a.zero_y) { // before the item's GEMM, so that the down items soon find y zeroed
				zero_y_share(a, item, up_items);
				__syncthreads();
				if (threadIdx.x == 0)
					count_release(a.counters + MOE_GPU_COUNTER_ZEROED);
			}
			gemm_block<S, true, kBf16>(a, base, tile, column_block, up_blocks, 0, 1, wait_for_fetch,
						   claim_next, early);
			__syncthreads();
			if (threadIdx.x == 0)
				count_release(tile_done + tile);
		} else {
			const uint32_t d = item - up_items, part = d / down_part_items;
			work_item(d - part * down_part_items, a.tiles, down_blocks, group, tile, column_block);
			// The tile's count first: waiting for y's zeroing first, or reading both
			// counts in one poll, was 0.3-1% slower on the larger decode rows, the
			// zeroing's count polled by many blocks while it still moves
			// (bench/RESULTS.md, version 35).
			gemm_block<S, false, kBf16>(a, base, tile, column_block, down_blocks, part, parts, [&] {
				if (threadIdx.x == 0) {
					wait_for_count(tile_done + tile, up_blocks);
					if (a.zero_y)
						wait_for_count(a.counters + MOE_GPU_COUNTER_ZEROED, up_items);
				}
				wait_for_fetch(); // what the epilogue reads of the routing
			}, claim_next);
		}
		copy_wait<0>();
		if (threadIdx.x == 0)
			claimed[turn ^ 1] = next;
		__syncthreads(); // the stages are free for the next item, and its number is in
		claimed_item = claimed[turn ^ 1];
	}
	if (!last_to_finish(a.counters + MOE_GPU_COUNTER_DONE, gridDim.x))
		return;
	if (a.fold)
		write_folded<kBf16>(a);
	for (uint32_t t = threadIdx.x; t < a.tiles; t += blockDim.x)
		tile_done[t] = 0;
	for (uint32_t t = threadIdx.x; spread && t < MOE_GPU_SM_SLOTS; t += blockDim.x)
		a.counters[MOE_GPU_COUNTER_SM_SLOTS + t] = 0;
	if (threadIdx.x == 0)
		a.counters[MOE_GPU_COUNTER_CLAIMED] = a.counters[MOE_GPU_COUNTER_CLAIMED_DOWN] =
			a.counters[MOE_GPU_COUNTER_ZEROED] = a.counters[MOE_GPU_COUNTER_FETCHED] =
				a.counters[MOE_GPU_COUNTER_DONE] = 0;
}

// mbarriers in shared memory (sm_90): the persistent kernel's stages are handed between
// its loading and its computing warps through a "full" and an "empty" barrier each.
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
	asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar)
		     : "memory");
}

// Until the barrier's phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity)
{
	asm volatile("{\n.reg .pred done;\nWAIT:\n"
		     "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
		     "@!done bra WAIT;\n}\n" ::"r"(bar),
		     "r"(parity)
		     : "memory");
}

// The tensor-memory accelerator (TMA, sm_90): one thread asks for a whole box of a 2-D
// tensor; it lands in shared memory in the 128-byte swizzle the wgmma descriptors read,
// zero-filled where it lies outside the tensor, and counts its bytes off the barrier's
// expected transaction count, which this thread's arrival sets.
__device__ __forceinline__ void mbar_arrive_expect(uint32_t bar, uint32_t bytes)
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
			     bar),
		     "r"(bytes)
		     : "memory");
#else
	(void)bar, (void)bytes;
#endif
}

__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap &map, uint32_t k, uint32_t row,
					 uint32_t bar)
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
		     "[%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
		     "l"((uint64_t)&map), "r"(k), "r"(row), "r"(bar)
		     : "memory");
#else
	(void)dst, (void)map, (void)k, (void)row, (void)bar;
#endif
}

// The same box written to the same place in both blocks of a cluster of two, counted off
// each block's barrier at the same offset.
__device__ __forceinline__ void tma_load_both(uint32_t dst, const CUtensorMap &map, uint32_t k, uint32_t row,
					      uint32_t bar)
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
		     ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
		     "l"((uint64_t)&map), "r"(k), "r"(row), "r"(bar), "h"((uint16_t)3)
		     : "memory");
#else
	(void)dst, (void)map, (void)k, (void)row, (void)bar;
#endif
}

// The interleaved gate/up weights' box (gate_up_interleaved_map) at k-value k, act column
// `col` (a multiple of 8) of expert e; `both`: written to both blocks of a cluster of two,
// as tma_load_both.
__device__ __forceinline__ void tma_load_gate_up(uint32_t dst, const CUtensorMap &map, uint32_t k, uint32_t col,
						 uint32_t e, uint32_t bar, bool both)
{
#ifdef MOED_HAVE_WGMMA
	if (both)
		asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
			     ".multicast::cluster [%0], [%1, {%2, %3, %3, %4, %5}], [%6], %7;\n" ::"r"(dst),
			     "l"((uint64_t)&map), "r"(k), "r"(0u), "r"(col / 8), "r"(e), "r"(bar), "h"((uint16_t)3)
			     : "memory");
	else
		asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
			     "[%0], [%1, {%2, %3, %3, %4, %5}], [%6];\n" ::"r"(dst),
			     "l"((uint64_t)&map), "r"(k), "r"(0u), "r"(col / 8), "r"(e), "r"(bar)
			     : "memory");
#else
	(void)dst, (void)map, (void)k, (void)col, (void)e, (void)bar, (void)both;
#endif
}

// An arrival on the barrier once all of this thread's cp.async copies so far have landed
// (counted in the barrier's expected arrivals: noinc).
__device__ __forceinline__ void copy_arrive(uint32_t bar)
{
	asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// Clusters (sm_90): this block's rank, an arrival on the other block's barrier at the same
// offset, and the barrier of all the cluster's threads (those that have not exited).
__device__ __forceinline__ uint32_t cluster_rank()
{
	uint32_t r = 0;
#ifdef MOED_HAVE_WGMMA
	asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
#endif
	return r;
}

__device__ __forceinline__ void mbar_arrive_peer(uint32_t bar, uint32_t peer)
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
		     "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar),
		     "r"(peer)
		     : "memory");
#else
	(void)bar, (void)peer;
#endif
}

__device__ __forceinline__ void cluster_sync()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
			     : "memory");
#endif
}

// The TMA's stores (sm_90): one thread has a box of shared memory (laid out as the map's
// box, 128-byte swizzled) written to the tensor, the parts outside it left alone. Each
// thread's stores form groups; it waits for its groups to have read their shared memory
// (before that memory is written again) or to be done (before the block exits).
__device__ __forceinline__ void tma_store(const CUtensorMap &map, uint32_t col, uint32_t row, uint32_t src)
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
			     (uint64_t)&map),
		     "r"(col), "r"(row), "r"(src)
		     : "memory");
#else
	(void)map, (void)col, (void)row, (void)src;
#endif
}

__device__ __forceinline__ void tma_store_commit()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void tma_stores_read()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void tma_stores_done()
{
#ifdef MOED_HAVE_WGMMA
	asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

// A barrier of `threads` threads (whole warps) on hardware barrier `id` (1 to 15; 0 is
// __syncthreads').
__device__ __forceinline__ void named_barrier(uint32_t id, uint32_t threads)
{
	asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void st_shared32(uint32_t address, uint32_t value)
{
	asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(address), "r"(value) : "memory");
}

// One computing warpgroup's epilogue through shared memory, where all of its 64 rows are
// in the tile (the cooperative persistent kernel, whose other stores are the warps' own).
// The warpgroup converts its fragments into `buffer`, 64 rows by 128 columns as two TMA
// boxes of 64 x 64, and its first thread has the TMA write them: the
// matrix units wait only for the conversion, not for the stores, which run on during the
// next item's math (bench/RESULTS.md, version 15: the prefill rows 0-8% faster than
// the stores from registers; version 24: the gate/up GEMM no faster without its stores,
// its epilogue about 1% of it). Coalesced, too: whole 128-byte rows instead of 16 bytes a
// row a store. A buffer is written again only when the TMA has read it. Fragments kFrags
// (a multiple of 16) from column col0, 128 columns a pass.
constexpr uint32_t kEpilogueBoxBytes = 64 * 128;
// kBoxes boxes a buffer (1 or 2: passes of 64 or 128 columns; one box cost the prefill rows
// at most 1%, bench/RESULTS.md version 31).
template <int kFrags, bool kBf16, int kBoxes, class RowScale, class Value>
__device__ __forceinline__ void stage_rows(const CUtensorMap &map, uint32_t buffer, uint32_t col0, uint32_t N,
					   uint32_t first_row, uint32_t tile_row0, int warp_in_group, int lane,
					   bool issuer, uint32_t barrier_id, RowScale row_scale, Value value)
{
	constexpr int kPassFrags = 8 * kBoxes;
	static_assert(kFrags % kPassFrags == 0, "whole passes");
	const int frag_row = lane / 4, in_chunk = lane % 4 * 4;
#pragma unroll
	for (int pass = 0; pass < kFrags / kPassFrags; pass++) {
		if (issuer)
			tma_stores_read();
		named_barrier(barrier_id, 128);
#pragma unroll
		for (int h = 0; h < 2; h++) {
			// Row r's 16-byte chunk c lies at chunk c ^ r % 8 of its 128 bytes (the TMA's
			// 128-byte swizzle): a warp's 8 rows by 4 lanes then hit 32 banks.
			const uint32_t row = (uint32_t)(warp_in_group * 16 + frag_row + 8 * h);
			const float s = row_scale(tile_row0 + row);
			const uint32_t at = buffer + row * 128 + in_chunk;
#pragma unroll
			for (int f = 0; f < kPassFrags; f++) {
				const int nt = pass * kPassFrags + f;
				st_shared32(at + f / 8 * kEpilogueBoxBytes + ((f % 8) ^ (row % 8)) * 16,
					    pack2(value(0, nt, 2 * h, s), value(0, nt, 2 * h + 1, s), kBf16));
			}
		}
		fence_proxy_async(); // this thread's writes, for the TMA's reads
		named_barrier(barrier_id, 128);
		if (issuer) {
#pragma unroll
			for (int box = 0; box < kBoxes; box++) {
				const uint32_t col = col0 + pass * 64 * kBoxes + box * 64;
				if (col < N)
					tma_store(map, col, first_row, buffer + box * kEpilogueBoxBytes);
			}
			tma_store_commit();
		}
	}
}

// The persistent, warp-specialised variant of wgmma128w, the plan's prefill kernel on
// Hopper (wgmma128p). One block an SM walks the (tile, column block) work items
// with a stride of the grid, in the order of the other kernels' tile groups (work_item).
// Warpgroup 0 loads; its first thread has the TMA fetch the weight tile (and, for the down
// GEMM, the A tile: act's rows are contiguous) as two boxes of BN / 2 rows: a gated
// expert's gate rows and the matching up rows, or BN consecutive rows. The gate/up GEMM's
// A rows are gathered from x, which the TMA cannot do on Hopper: all 128 threads copy
// them with cp.async, each arriving on the stage's "full" barrier when its copies land
// (so it counts 128 such arrivals and the TMA's), and the computing threads fence them
// for the async proxy that wgmma reads through once the stage is full. Warpgroups 1 and 2
// compute, keep one wgmma group in flight, release each stage when its math is done (one
// arrival a warp), and write their results while the loaders already fill the next
// items' stages. They share the work in one of two ways:
//
// Cooperative (kPingpong false: wgmma128p, wgmma128c): items of 128 pairs by 256 weight
// rows, each warpgroup computing 64 of the pairs. Both write their results at once, and
// the matrix units wait meanwhile: for a warpgroup whose 64 rows are all in the tile, only
// while it converts them into its shared-memory buffer, whose stores the TMA then makes
// during the next item's math (stage_rows; measured, bench/RESULTS.md version 15: the
// prefill rows 0-8% faster than the warps' own stores). The down GEMM's last round of
// items, where it would leave more than half of the blocks idle, runs as twice as many
// items of 128 weight rows (one weight box, never shared in a pair; m64n128 wgmma):
// Mixtral-8x7B M = 1024's down GEMM, 160 items for 66 pairs, 487 -> 449 µs (version 24).
//
// Ping-pong (kPingpong true: wgmma128s): items of 128 pairs by 128 weight rows,
// each warpgroup computing every other item whole (two m64n128 wgmma a k-step), in turns:
// a warpgroup starts its math when the other has issued all of its item's, so that one's
// epilogue runs during the other's math. Half the accumulator columns an item, so the
// A tiles are read twice as often, and an m64n128 wgmma reads more shared memory per
// multiply-add than an m64n256. Measured (bench/RESULTS.md, version 13): slower where
// tiles are full, faster only where they are part full: forced only. (Version 13's
// reason for it, the epilogue's 13-25% with the matrix units waiting, was mostly power:
// the build without an epilogue fed the down GEMM an act never written, and the card,
// held at its power limit, clocked higher; version 24.)
// The stages are used in order of items, all of an item's k-tiles together: item j of
// the block (counted from 0) uses ring positions j * ktiles onwards, whichever warpgroup
// computes it.
//
// kPair (wgmma128c, the plan's where an expert has more than one tile; with kPingpong,
// wgmma128d, withdrawn for a fault not yet found: moe_gpu_kernel_withdrawn):
// clusters of two blocks walk items of two consecutive tiles, one each, in step (the
// routing lists the tiles paired by expert for these kernels: moe_route_cut). Where both
// tiles are one expert's, their weight tiles are the same: each block's TMA fetches one of
// the two boxes for both blocks (multicast), halving the weights' reads from L2. A stage
// of either block is then written by both, so each block's "empty" barrier counts the
// computing warps of both blocks, and a block refills a stage only when both have
// released it. The blocks wait for each other once at the start (the barriers set up)
// and once at the end (no arrival may reach a block that has exited).
template <bool kPingpong> struct WsShape;
template <> struct WsShape<false> {
	using S = Shape<128, 256, 8, 1, 4, true, 1>;
	static constexpr uint32_t kReleasingWarps = 8; // the warps that compute an item
};
template <> struct WsShape<true> {
	using S = Shape<128, 128, 4, 1, 7, true, 1>; // one warpgroup's item
	static constexpr uint32_t kReleasingWarps = 4;
};
constexpr int kWsLoaders = 128;
constexpr int kWsThreads = kWsLoaders + WsShape<false>::S::kThreads; // a loading and two computing warpgroups
static_assert(2 * WsShape<true>::S::kThreads == WsShape<false>::S::kThreads, "two computing warpgroups either way");
constexpr uint32_t kActBoxRows = 128;         // the down GEMM's A tile: one TMA box
// wgmma128e's items also multiply the pairs that an extended cut adds to an expert's last
// tile (MOE_ROUTE_PAIRED_EXTENDED: at most kExtraRows, their x or act rows after each
// stage). Their math has the operands' roles swapped: runs of 64 of the item's 256 weight
// rows are the wgmma's A and the extra rows its B (one m64n32k16 a run and k-step,
// nothing padded), and the warps store the transposed result. Where the tile is the
// second of a pair of one expert's, each of the pair's four computing warpgroups takes a
// run; where it is paired with another expert's, its block's two take two runs each. So that
// a gated item's 64 weight rows hold gate and up rows of the same columns, 8 of each in
// turn (a thread's two accumulator rows then hold one column's gate and up), its gate/up
// weights come by gate_up_interleaved_map. To make room beside the four stages, the
// epilogue buffers hold one box each.
constexpr uint32_t kExtraRows = MOE_ROUTE_EXTRA_ROWS, kExtraBytes = kExtraRows * kBK * 2;
constexpr uint32_t kExtraPartRows = 64; // weight rows a warpgroup's extra math takes
// The extra rows' x tile, as the loaders copy it.
using ShapeExtraRows = Shape<kExtraRows, 128, 2, 1, 1>;
template <bool kPingpong, bool kExtend> __host__ __device__ constexpr uint32_t ws_stage_bytes()
{
	return WsShape<kPingpong>::S::kStageBytes + (kExtend ? kExtraBytes : 0);
}
// The cooperative kernels' epilogue buffers, one a computing warpgroup (stage_rows), of
// this many boxes.
template <bool kPingpong, bool kExtend> __host__ __device__ constexpr int ws_epilogue_boxes()
{
	return kPingpong ? 0 : kExtend ? 1 : 2;
}
template <bool kPingpong, bool kExtend> __host__ __device__ constexpr uint32_t ws_epilogue_bytes()
{
	return 2 * ws_epilogue_boxes<kPingpong, kExtend>() * kEpilogueBoxBytes;
}
// Stages, epilogue buffers, barriers.
template <bool kPingpong, bool kExtend> constexpr int ws_smem()
{
	using S = typename WsShape<kPingpong>::S;
	return S::kSmem + (kExtend ? S::kStages * kExtraBytes : 0) + ws_epilogue_bytes<kPingpong, kExtend>() +
	       2 * S::kStages * 8 + (kPingpong ? 16 : 0);
}
static_assert(WsShape<false>::S::BM == kActBoxRows && WsShape<true>::S::BM == kActBoxRows,
	      "the act tensor map's box is an A tile");
static_assert(ws_smem<true, false>() <= 227 * 1024 && ws_smem<false, false>() <= 227 * 1024 &&
		      ws_smem<false, true>() <= 227 * 1024,
	      "Hopper's shared memory");
static_assert(ws_stage_bytes<false, true>() % 1024 == 0 && kExtraRows == 32, "the extra rows: one wgmma's B (n32)");

template <bool kGateUp, bool kBf16, bool kPair, bool kPingpong, bool kExtend>
__global__ void __launch_bounds__(kWsThreads, 1)
	ws_kernel(const struct moe_gpu_args a, uint32_t items, const __grid_constant__ CUtensorMap map_a,
		  const __grid_constant__ CUtensorMap map_w, const __grid_constant__ CUtensorMap map_out,
		  const __grid_constant__ CUtensorMap map_extra)
{
#ifdef MOED_HAVE_WGMMA
	using S = typename WsShape<kPingpong>::S;
	static_assert(!kExtend || (kPair && !kPingpong), "extended pairs: wgmma128e's");
	constexpr uint32_t kStageStride = ws_stage_bytes<kPingpong, kExtend>();
	constexpr int kBoxes = ws_epilogue_boxes<kPingpong, kExtend>();
	constexpr uint32_t kStages = S::kStages, kBlocks = kPair ? 2 : 1;
	constexpr uint32_t kBoxRows = S::BN / 2, kBoxBytes = kBoxRows * kBK * 2; // a weight box
	extern __shared__ __align__(1024) unsigned char smem[];
	const uint32_t base = smem_address(smem);
	const uint32_t epilogue = base + kStages * kStageStride; // the computing warpgroups' buffers (cooperative)
	// 8-byte barriers
	const uint32_t full = epilogue + ws_epilogue_bytes<kPingpong, kExtend>(), empty = full + 8 * kStages;
	const uint32_t turn = empty + 8 * kStages; // ping-pong: warpgroup w's turn, [2]
	const int tid = threadIdx.x;
	const uint32_t rank = kPair ? cluster_rank() : 0, peer = rank ^ 1;
	if (tid == 0) {
		for (uint32_t s = 0; s < kStages; s++) {
			mbar_init(full + 8 * s, kGateUp ? kWsLoaders + 1 : 1);
			mbar_init(empty + 8 * s, kBlocks * WsShape<kPingpong>::kReleasingWarps);
		}
		if constexpr (kPingpong) {
			mbar_init(turn, 4);
			mbar_init(turn + 8, 4);
		}
		asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); // for the TMA
	}
	// Launched as the job's fetch's or sort's programmatic dependent (follows_kernel): what
	// they wrote, before any of it is read. (Without a prerequisite grid it returns at once.)
	if constexpr (kGateUp)
		wait_for_prerequisite_grid();
	// The only block-wide barrier: the roles part here.
	if constexpr (kPair)
		cluster_sync();
	else
		__syncthreads();
	const uint32_t K = kGateUp ? a.hidden : a.inter, ktiles = (K + kBK - 1) / kBK;
	const uint32_t N = kGateUp ? a.inter : a.hidden;
	const bool gated = kGateUp && a.gated;
	const uint32_t cols = block_columns<S, kGateUp>(a), column_blocks = column_blocks_of<S, kGateUp>(a);
	// The device sort's count where it sorted (the grid and `items` are then sized for
	// the most tiles there can be).
	const uint32_t tiles = tile_count_of(a);
	const uint32_t group_units = (tiles + kBlocks - 1) / kBlocks; // tiles, or pairs of them
	items = items < group_units * column_blocks ? items : group_units * column_blocks;
	const uint32_t group = kPair ? (a.tile_group + 1) / 2 : a.tile_group;
	const uint32_t walker = kPair ? blockIdx.x / 2 : blockIdx.x, walkers = gridDim.x / kBlocks;
	// A last round of the down GEMM's items that leaves more than half of the walkers idle
	// runs as twice as many items of half the weight rows (moe_gpu_args.tail_split): walk
	// number w < whole_items is item w, and from there on each item is two walks, its
	// first BN / 2 weight rows and its last.
	uint32_t whole_items = items, walks = items;
	if constexpr (!kGateUp && !kPingpong) {
		const uint32_t rest = items % walkers;
		if (a.tail_split == MOE_GPU_TAIL_SPLIT_ALL ||
		    (a.tail_split == MOE_GPU_TAIL_SPLIT_SHORT && rest && 2 * rest <= walkers)) {
			whole_items = a.tail_split == MOE_GPU_TAIL_SPLIT_ALL ? 0 : items - rest;
			walks = whole_items + 2 * (items - whole_items);
		}
	}
	// Walk w's item and its half of the weight rows (-1: all of them).
	auto walk_item = [&](uint32_t w, uint32_t &item, int &half) {
		if (w < whole_items) {
			item = w, half = -1;
		} else {
			item = whole_items + (w - whole_items) / 2;
			half = (int)((w - whole_items) % 2);
		}
	};
	// This block's tile of item `item`, or `tiles` where a pair's second has none.
	auto item_tile = [&](uint32_t item, uint32_t &tile, uint32_t &column_block) {
		work_item(item, group_units, column_blocks, group, tile, column_block);
		tile = tile * kBlocks + rank;
		if (tile >= tiles)
			tile = tiles;
	};
	// The extra pairs that this block's item of `tile` multiplies (kExtend): their count,
	// 0 where none, and first place. Where the pair's two tiles are one expert's, the
	// second's extra pairs are the pair's, its four computing warpgroups taking 64 weight
	// rows each; else (`own`) a tile's extra pairs are its block's alone, its two
	// warpgroups taking 128 weight rows each (an expert of an odd number of tiles, its
	// last paired with another expert's).
	auto item_extra = [&](uint32_t tile, uint32_t &first, bool &own) -> uint32_t {
		first = 0, own = false;
		if constexpr (kExtend) {
			if (tile >= tiles)
				return 0;
			const uint32_t other = tile - rank + peer;
			own = other >= tiles || a.tile_expert[other] != a.tile_expert[tile];
			const uint32_t holder = own ? tile : tile - rank + 1;
			if (a.tile_count[holder] > S::BM) {
				first = a.tile_first[holder] + S::BM;
				return a.tile_count[holder] - S::BM;
			}
		}
		return 0;
	};
	// Use g (counted over all of this block's k-tiles) of stage g % kStages is the
	// barriers' phase g / kStages: the loaders wait for the previous phase's release.
	if (tid < kWsLoaders) {
		// Registers move from the loading warpgroup to the computing ones (128 accumulators
		// a thread): 128 x 56 + 256 x 224 of the block's 168 x 384. wgmma128e's gate/up
		// loaders, with the extra rows' copies too, spill at 56: 64 + 216 gave back a
		// third of its cost where no pair is extended (bench/RESULTS.md, version 33).
		if constexpr (kExtend)
			asm volatile("setmaxnreg.dec.sync.aligned.u32 64;\n" ::: "memory");
		else
			asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n" ::: "memory");
		if constexpr (kGateUp)
			let_dependents_launch();
		else
			wait_for_prerequisite_grid();
		TileLoader<S, kWsLoaders, true> gather; // the gate/up GEMM's A rows
		TileLoader<ShapeExtraRows, kWsLoaders, true> gather_extra; // and its extra rows
		uint32_t g = 0;
		for (uint32_t w = walker; (kGateUp || tid == 0) && w < walks; w += walkers) {
			uint32_t item, tile, column_block;
			int half;
			walk_item(w, item, half);
			item_tile(item, tile, column_block);
			const bool real = tile < tiles;
			const uint32_t first = real ? a.tile_first[tile] : 0, e = real ? a.tile_expert[tile] : 0;
			const uint32_t n0 = column_block * cols;
			// The weight boxes' first rows in the [experts * rows, K] tensor.
			const uint32_t w_rows = gated ? 2 * a.inter : N;
			const uint32_t row_lo = e * w_rows + n0;
			const uint32_t row_hi = gated ? row_lo + a.inter : row_lo + kBoxRows;
			// Both tiles one expert's: this block fetches box `rank` for both (whole
			// items only).
			bool shared = false;
			if constexpr (kPair) {
				const uint32_t other = tile - rank + peer;
				shared = real && half < 0 && other < tiles && a.tile_expert[other] == e;
			}
			uint32_t extra_first;
			bool own_extra;
			const uint32_t extra = item_extra(tile, extra_first, own_extra);
			if constexpr (kGateUp)
				gather.init(a, e, n0, tid), gather.init_a(a, first, real ? a.tile_count[tile] : 0);
			// The item's stages; `extended`: with the item's extra rows. Two copies of the
			// loop, so that an item without them runs wgmma128c's (the extension's copies
			// in the same loop cost its gate/up GEMM 3.5%: bench/RESULTS.md, version 33).
			auto load_stages = [&](auto extended) {
				constexpr bool kExtra = decltype(extended)::value;
				if constexpr (kExtra && kGateUp)
					gather_extra.init(a, e, n0, tid), gather_extra.init_a(a, extra_first, extra);
				for (uint32_t kt = 0; kt < ktiles; kt++, g++) {
					const uint32_t s = g % kStages, stage = base + s * kStageStride;
					const uint32_t k0 = kt * kBK;
					mbar_wait(empty + 8 * s, (g / kStages & 1) ^ 1);
					if (tid == 0) {
						const uint32_t bar = full + 8 * s, b = stage + S::kABytes;
						mbar_arrive_expect(bar, (half < 0 ? 2 : 1) * kBoxBytes + (kGateUp ? 0 : S::kABytes) +
									   (!kGateUp && kExtra ? kExtraBytes : 0));
						if constexpr (!kGateUp) {
							tma_load(stage, map_a, k0, first, bar);
							if constexpr (kExtra)
								tma_load(stage + S::kStageBytes, map_extra, k0, extra_first, bar);
						}
						if (kExtend && kGateUp && gated) {
							// Interleaved boxes: box r, act columns n0 + 64 r on, gate and up.
							if (shared)
								tma_load_gate_up(b + rank * kBoxBytes, map_w, k0, n0 + rank * (S::BN / 4),
										 e, bar, true);
							else
								for (uint32_t r = 0; r < 2; r++)
									tma_load_gate_up(b + r * kBoxBytes, map_w, k0, n0 + r * (S::BN / 4),
											 e, bar, false);
						} else if (half >= 0) {
							tma_load(b, map_w, k0, half ? row_hi : row_lo, bar);
						} else if (shared) {
							tma_load_both(b + rank * kBoxBytes, map_w, k0, rank ? row_hi : row_lo, bar);
						} else {
							tma_load(b, map_w, k0, row_lo, bar);
							tma_load(b + kBoxBytes, map_w, k0, row_hi, bar);
						}
					}
					if constexpr (kGateUp) {
						gather.load_a(stage, k0);
						if constexpr (kExtra)
							gather_extra.load_a(stage + S::kStageBytes, k0);
						copy_arrive(full + 8 * s);
					}
				}
			};
			if (kExtend && extra)
				load_stages(std::integral_constant<bool, kExtend>());
			else
				load_stages(std::false_type());
		}
		copy_wait<0>();
	} else {
		if constexpr (kExtend)
			asm volatile("setmaxnreg.inc.sync.aligned.u32 216;\n" ::: "memory");
		else
			asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n" ::: "memory");
		const int ctid = tid - kWsLoaders, lane = ctid % kWarp, warp = ctid / kWarp;
		const uint32_t wg = (uint32_t)warp / 4;
		// A stage done with: one arrival a warp (wgmma_wait is the whole warp's), on both
		// blocks' barriers in a pair.
		auto release = [&](uint32_t s) {
			if (lane == 0) {
				mbar_arrive(empty + 8 * s);
				if constexpr (kPair)
					mbar_arrive_peer(empty + 8 * s, peer);
			}
		};
		// The stages of ring positions g onwards, ktiles of them, waited for and released
		// without math (a warpgroup with no rows in the item).
		auto pass_on = [&](uint32_t g) {
			for (uint32_t kt = 0; kt < ktiles; kt++, g++) {
				mbar_wait(full + 8 * (g % kStages), g / kStages & 1);
				__syncwarp();
				release(g % kStages);
			}
		};
		// The item's math into acc from ring position g: the first `wgmmas` of the kMT m64
		// wgmma a k-step (those whose 64 rows hold pairs of the tile). A constant, so that
		// no wgmma is issued on a path ptxas sees as divergent (it would serialise them
		// all: warning C7520). `issued` runs once the last k-tile's math is issued. `width`:
		// the weight rows multiplied, BN or (a half item) BN / 2, in acc's first columns.
		// `parts` (kExtend, a constant too): also the item's extra rows, after each stage,
		// by that many runs of 64 weight rows of its B tile from run `part0` on (run p: weight
		// rows 64 p to 64 p + 63), into accx[0], accx[1] (transposed: weight rows by extra
		// rows).
		float acc[S::kMT][S::kNT][4];
		float accx[2][kExtraRows / 8][4];
		auto compute = [&](uint32_t g, uint32_t row0, auto wgmmas, auto issued, auto width, auto parts,
				   uint32_t part0) {
			constexpr int kParts = decltype(parts)::value;
			static_assert(kParts <= 2, "accx holds two runs");
#pragma unroll
			for (int mt = 0; mt < S::kMT; mt++)
#pragma unroll
				for (int nt = 0; nt < S::kNT; nt++)
					acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0;
#pragma unroll
			for (int x = 0; x < kParts; x++)
#pragma unroll
				for (int nt = 0; nt < (int)kExtraRows / 8; nt++)
					accx[x][nt][0] = accx[x][nt][1] = accx[x][nt][2] = accx[x][nt][3] = 0;
			auto fence_extra = [&] {
#pragma unroll
				for (int x = 0; x < kParts; x++)
					fence_operands<kExtraRows / 2>(&accx[x][0][0]);
			};
			for (uint32_t kt = 0; kt < ktiles; kt++, g++) {
				const uint32_t s = g % kStages, as = base + s * kStageStride;
				mbar_wait(full + 8 * s, g / kStages & 1);
				if constexpr (kGateUp)
					fence_proxy_async(); // the loaders' copies, for the wgmma's reads
				const uint64_t db = wgmma_desc(as + S::kABytes);
				fence_operands<S::kMT * S::BN / 2>(&acc[0][0][0]);
				fence_extra();
				wgmma_fence();
#pragma unroll
				for (int mt = 0; mt < decltype(wgmmas)::value; mt++) {
					const uint64_t da = wgmma_desc(as + (row0 + 64 * mt) * 128);
#pragma unroll
					for (int kk = 0; kk < kBK / 16; kk++)
						wgmma_m64k16<decltype(width)::value, kBf16>(&acc[mt][0][0], da + 2 * kk,
											     db + 2 * kk);
				}
				const uint64_t dx = wgmma_desc(as + S::kStageBytes);
#pragma unroll
				for (int x = 0; x < kParts; x++) {
					const uint64_t dw = wgmma_desc(as + S::kABytes + (part0 + x) * kExtraPartRows * 128);
#pragma unroll
					for (int kk = 0; kk < kBK / 16; kk++)
						wgmma_m64k16<kExtraRows, kBf16>(&accx[x][0][0], dw + 2 * kk, dx + 2 * kk);
				}
				wgmma_commit();
				wgmma_wait<1>(); // the math of k-tile g - 1 is done: its stage is free
				fence_operands<S::kMT * S::BN / 2>(&acc[0][0][0]);
				fence_extra();
				if (kt > 0)
					release((g - 1) % kStages);
			}
			issued();
			wgmma_wait<0>();
			fence_operands<S::kMT * S::BN / 2>(&acc[0][0][0]);
			fence_extra();
			if (ktiles > 0)
				release((g - 1) % kStages);
		};
		if constexpr (kPingpong) {
			// Item j is warpgroup j % 2's; it waits for the other's item j - 1 to be
			// issued (that warpgroup's (j - 1) / 2-th hand-over, on turn[wg]).
			constexpr uint32_t row0 = 0;
			static_assert(S::kMT == 2, "two m64 wgmma a k-step");
			for (uint32_t j = wg, item = walker + wg * walkers; item < items; j += 2, item += 2 * walkers) {
				uint32_t tile, column_block;
				item_tile(item, tile, column_block);
				const uint32_t count = tile < tiles ? a.tile_count[tile] : 0;
				if (j > 0)
					mbar_wait(turn + 8 * wg, (j - 1) / 2 & 1);
				auto hand_over = [&] {
					if (lane == 0)
						mbar_arrive(turn + 8 * (wg ^ 1));
				};
				if (!count) {
					hand_over();
					pass_on(j * ktiles);
					continue;
				}
				using Whole = std::integral_constant<int, S::BN>;
				using None = std::integral_constant<int, 0>;
				if (count > 64)
					compute(j * ktiles, row0, std::integral_constant<int, 2>(), hand_over, Whole(), None(), 0);
				else
					compute(j * ktiles, row0, std::integral_constant<int, 1>(), hand_over, Whole(), None(), 0);
				store_tile<S, kGateUp, kBf16>(a, acc, a.tile_first[tile], count, column_block * cols,
							      warp % 4, 0, lane);
			}
		} else {
			// A warpgroup whose 64 rows are all in the tile writes through its buffer and
			// the TMA (map_out: act, or y in the I/O dtype; 64-row boxes); else, or where
			// the down GEMM adds into an f32 y, the warps write their own.
			const bool issuer = ctid % 128 == 0;
			const uint32_t buffer = epilogue + wg * kBoxes * kEpilogueBoxBytes;
			uint32_t g = 0;
			// The epilogue of an item whose math is in acc: `width` weight rows from
			// column n0.
			auto finish = [&](uint32_t tile, uint32_t count, uint32_t n0, auto width) {
				constexpr int kCols = decltype(width)::value;
				const uint32_t first = a.tile_first[tile];
				// A part-full tile stores row by row. (The launch sets y_io, so the
				// second test cannot hold today: it keeps the TMA's 16-bit stores out
				// of an f32 y, should a split of the down GEMM come back.)
				if (wg * 64 + 64 > count || (!kGateUp && !a.y_io)) {
					store_tile<S, kGateUp, kBf16, kCols, kExtend>(a, acc, first, count, n0, warp, 0, lane);
					return;
				}
				tile_values<S, kGateUp, kBf16, kCols, kExtend>(
					a, acc, first, n0, 0,
					[&](auto frags, uint16_t *, uint32_t N, uint32_t col0, auto row_scale, auto value) {
						stage_rows<decltype(frags)::value, kBf16, kBoxes>(map_out, buffer, col0, N, first + wg * 64,
											  wg * 64, warp % 4, lane, issuer, 1 + wg,
											  row_scale, value);
					});
			};
			using Whole = std::integral_constant<int, S::BN>;
			using Half = std::integral_constant<int, S::BN / 2>;
			for (uint32_t w = walker; w < walks; w += walkers, g += ktiles) {
				uint32_t item, tile, column_block;
				int half;
				walk_item(w, item, half);
				item_tile(item, tile, column_block);
				uint32_t count = tile < tiles ? a.tile_count[tile] : 0;
				// The item's extra rows (an extended cut's, item_extra).
				uint32_t extra_first;
				bool own_extra;
				const uint32_t extra = item_extra(tile, extra_first, own_extra);
				count = count < S::BM ? count : S::BM;
				// None of this warpgroup's 64 rows is in the tile (an expert's short last
				// tile, or no tile): it only passes the stages on, and the other
				// warpgroup's math has the matrix units to itself.
				if (wg * 64 >= count) {
					pass_on(g);
					continue;
				}
				const uint32_t n0 = column_block * cols;
				using None = std::integral_constant<int, 0>;
				using One = std::integral_constant<int, 1>;
				using Two = std::integral_constant<int, 2>;
				// The extra rows' output columns from run `run` of 64 weight rows of the item
				// at n: gated, the run's 64 rows are the gate and up rows of 32 columns.
				auto extra_col = [&](uint32_t n, uint32_t run) {
					return n + run * (gated ? kExtraPartRows / 2 : kExtraPartRows);
				};
				if constexpr (!kGateUp) {
					if (half >= 0) {
						// One weight box of two runs: the warpgroups of the block whose
						// extra rows they are take one each (in a pair, the first's).
						const uint32_t nh = n0 + (uint32_t)half * (S::BN / 2);
						if (extra && (own_extra || rank == 0)) {
							compute(g, wg * 64, One(), [] {}, Half(), One(), wg);
							finish(tile, count, nh, Half());
							store_extra<kGateUp, kBf16>(a, accx[0], extra_first, extra, extra_col(nh, wg),
										  false, warp % 4, lane);
						} else {
							compute(g, wg * 64, One(), [] {}, Half(), None(), 0);
							finish(tile, count, nh, Half());
						}
						continue;
					}
				}
				if (extra && own_extra) { // this block's: runs 2 wg and 2 wg + 1
					compute(g, wg * 64, One(), [] {}, Whole(), Two(), 2 * wg);
					finish(tile, count, n0, Whole());
#pragma unroll
					for (uint32_t x = 0; x < 2; x++)
						store_extra<kGateUp, kBf16>(a, accx[x], extra_first, extra, extra_col(n0, 2 * wg + x),
									  gated, warp % 4, lane);
				} else if (extra) { // the pair's: run 2 rank + wg
					const uint32_t run = rank * 2 + wg;
					compute(g, wg * 64, One(), [] {}, Whole(), One(), run);
					finish(tile, count, n0, Whole());
					store_extra<kGateUp, kBf16>(a, accx[0], extra_first, extra, extra_col(n0, run), gated,
								  warp % 4, lane);
				} else {
					compute(g, wg * 64, One(), [] {}, Whole(), None(), 0);
					finish(tile, count, n0, Whole());
				}
			}
			if (issuer)
				tma_stores_done(); // before the block's shared memory goes, and its grid ends
		}
	}
	if constexpr (kPair) {
		__syncwarp();
		cluster_sync(); // the other block's arrivals on this one's barriers are all in
	}
#else
	(void)a, (void)items, (void)map_a, (void)map_w, (void)map_out, (void)map_extra;
	__trap();
#endif
}

int sm_count()
{
	static int sms; // device 0, the backend's
	if (!sms && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess)
		sms = 132;
	return sms;
}

// The kernels want more than the default 48 KiB of shared memory: raised once each.
template <auto kKernel, int kBytes> cudaError_t allow_smem()
{
	static bool raised;
	if (raised)
		return cudaSuccess;
	const cudaError_t e =
		cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
	raised = e == cudaSuccess;
	return e;
}

template <class S, bool kGateUp, bool kBf16>
int launch_gemm(const struct moe_gpu_args &a, dim3 grid, cudaStream_t stream)
{
	const cudaError_t e = allow_smem<mma_kernel<S, kGateUp, kBf16>, S::kSmem>();
	if (e != cudaSuccess)
		return (int)e;
	return launch_on(mma_kernel<S, kGateUp, kBf16>, grid, S::kThreads, S::kSmem,
			 !kGateUp && dependent_launch(a), stream, a);
}

template <class S> dim3 gate_up_grid(const struct moe_gpu_args &a)
{
	return dim3(a.tiles, column_blocks_of<S, true>(a));
}

// The largest M * H whose combine the down GEMM's last block does (finish_fold): one
// block converts it, 16 values a thread at 1024.
constexpr size_t kFoldMaxCells = 16384;

// How many blocks of kKernel the card holds at once.
template <auto kKernel, int kThreads, int kSmem> uint32_t resident_blocks()
{
	static uint32_t slots;
	if (!slots) {
		int per_sm = 0;
		if (allow_smem<kKernel, kSmem>() != cudaSuccess ||
		    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kThreads, kSmem) != cudaSuccess ||
		    per_sm < 1)
			per_sm = 1;
		slots = (uint32_t)per_sm * sm_count();
	}
	return slots;
}

// Decode's prefetch of the down GEMM's weights (prefetch_down_weights): as many rows of w2
// as three eighths of L2 hold (where the streamed weights should not push them out), from
// the job's last tile back. The tiles stand for the used experts (at most 16 or 32 pairs
// an expert: mostly one tile each). Measured (bench/RESULTS.md): all of w2 where it
// fitted in half of L2, else none (version 11: Qwen3 M = 1 31-32 -> 28 µs; all where
// only part fitted was slower, Qwen3 M = 4 95 -> 99); version 28, the last experts'
// whole w2 in half of L2: Qwen3 M = 2 40 -> 37 µs, M = 4 76 -> 74, M = 16 171 -> 169;
// their last rows in two, three and four eighths: Mixtral M = 1 169-170 / 168 / 171,
// DeepSeek-V3 M = 1 171 / 169-170 / 171, Qwen3 M = 64 270 / 272-273 / 274-275, Qwen3
// M = 1 26 in all three.
uint32_t down_weights_prefetched_rows(const struct moe_gpu_args &a)
{
	static size_t l2_bytes;
	if (!l2_bytes) {
		int v = 0;
		l2_bytes = cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, 0) == cudaSuccess && v > 0 ? (size_t)v : 1;
	}
	const size_t fit = l2_bytes * 3 / 8 / ((size_t)a.inter * 2), all = (size_t)a.tiles * a.hidden;
	return (uint32_t)std::min<size_t>(std::min(fit, all), UINT32_MAX);
}

// Whether the fetch's head (its first kInlineFetchBytes) holds the tile table.
bool head_holds_tiles(const struct moe_gpu_args &a)
{
	const size_t n = a.fetch_bytes < kInlineFetchBytes ? a.fetch_bytes : kInlineFetchBytes;
	const uintptr_t lo = (uintptr_t)a.fetch_to, hi = lo + n;
	auto in_head = [&](const uint32_t *p) {
		return (uintptr_t)p >= lo && (uintptr_t)(p + a.tiles) <= hi;
	};
	return in_head(a.tile_first) && in_head(a.tile_count) && in_head(a.tile_expert);
}

// The fetch's head into `head` where it holds the tile table (read here, on the host: a
// graph keeps what it read when captured), `a`'s fetch left for the rest. (Where it does
// not, the kernel fetches all before anything else; moe_gpu_launch brings such a fetch
// first instead: moe_gpu_decode_fetches.)
void take_fetch_head(struct moe_gpu_args &a, InlineFetch &head)
{
	if (!head_holds_tiles(a))
		return;
	const size_t n = a.fetch_bytes < kInlineFetchBytes ? a.fetch_bytes : kInlineFetchBytes;
	head.to = (uint32_t *)a.fetch_to, head.words = (uint32_t)(n / 4);
	memcpy(head.data, a.fetch_from, n);
	a.fetch_from = (const char *)a.fetch_from + n, a.fetch_to = (char *)a.fetch_to + n;
	a.fetch_bytes -= n; // the head is whole 16-byte units unless it is all
}

// A decode job's two GEMMs as one kernel (decode_kernel), K split in `parts` as the down
// GEMM's would be: as many blocks as the card holds, or as there are items.
template <class S, bool kBf16> int launch_decode(const struct moe_gpu_args &job, uint32_t parts, cudaStream_t stream)
{
	constexpr auto kKernel = decode_kernel<S, kBf16>;
	const cudaError_t e = allow_smem<kKernel, S::kSmem>();
	if (e != cudaSuccess)
		return (int)e;
	struct moe_gpu_args a = job;
	InlineFetch head;
	head.to = nullptr, head.words = 0;
	if (a.fetch_bytes)
		take_fetch_head(a, head);
	const uint32_t lead_items = fetch_items_of<S>(a) + a.tiles * column_blocks_of<S, true>(a);
	const uint32_t items = lead_items + a.tiles * parts * column_blocks_of<S, false>(a);
	const uint32_t slots = resident_blocks<kKernel, S::kThreads, S::kSmem>();
	const bool spread = lead_items <= (uint32_t)sm_count() && !a.no_spread;
	return launch_on(kKernel, dim3(items < slots ? items : slots), S::kThreads, S::kSmem, false, stream, a,
			 parts, spread, head);
}

// SG: the gate/up GEMM's shape, SD the down GEMM's (the same tile of pairs).
template <class SG, class SD, bool kBf16> int launch(struct moe_gpu_args &a, cudaStream_t stream)
{
	static_assert(SG::BM == SD::BM, "both GEMMs take the tiles the routing cut");
	// A down GEMM of few blocks (few tiles, small H) would leave SMs idle: split its K
	// (= I) over more blocks, each of at least 4 k-tiles, adding into a zeroed y. As many
	// splits as fill the card's resident blocks once, not more: these blocks stream
	// weights, and a second, partial wave leaves bandwidth idle at its end (Qwen3 M = 1
	// took 3 splits, 384 blocks for 264 places; Mixtral M = 4 2 splits, about 350).
	const uint32_t blocks = a.tiles * column_blocks_of<SD, false>(a);
	const uint32_t slots = resident_blocks<mma_kernel<SD, false, kBf16>, SD::kThreads, SD::kSmem>();
	uint32_t splits = blocks >= slots ? 1 : slots / blocks;
	const uint32_t most = (a.inter / kBK) / 4;
	splits = splits > most ? (most ? most : 1) : splits;
	splits = splits > 8 ? 8 : splits;
	const dim3 g2(a.tiles, column_blocks_of<SD, false>(a), splits);
	// A decode job's combine is a kernel of a few blocks that costs a launch (Qwen3 M = 4:
	// 6.5 µs): the down GEMM does it (moe_gpu_args.fold) where its last block's
	// conversion is short, split or not.
	a.fold = !a.no_combine && a.counters && (size_t)a.tokens * a.hidden <= kFoldMaxCells;
	// Otherwise, unsplit, y is written once in the I/O dtype: half the bytes of f32 to
	// write and for the combine to read, one more rounding (2^-9 relative in bf16) inside
	// the bounds.
	a.y_io = splits == 1 && !a.fold;
	a.zero_y = !a.y_io; // by the gate/up blocks: one node fewer than a memset
	a.tile_group = a.tile_group ? a.tile_group : MOE_GPU_TILE_GROUP;
	// Tiles of 16 or 32 pairs (bench/RESULTS.md, version 28, three passes, µs: mma32's
	// Qwen3-30B-A3B M = 256 301 -> 297, Mixtral-8x7B M = 64 682 -> 680, DeepSeek-V3 M = 512
	// 5410 -> 5376).
	a.prefetch_down = SG::BM <= Shape32::BM && !a.no_prefetch ? down_weights_prefetched_rows(a) : 0;
	if constexpr (std::is_same<SG, SD>::value &&
		      (std::is_same<SG, Shape16>::value || std::is_same<SG, Shape32>::value ||
		       std::is_same<SG, Shape64>::value)) {
		// Every decode job: even where all tiles' gate/up items end together (a tile
		// group or fewer), one kernel saves a launch and the down grid's ramp
		// (bench/RESULTS.md, version 15: Mixtral M = 1, 4, 16 1-3% faster than two
		// kernels; Qwen3 M = 1 about 1 us slower).
		if (moe_gpu_decode_in_one_kernel(&a))
			return launch_decode<SG, kBf16>(a, splits, stream);
	}
	const int e = launch_gemm<SG, true, kBf16>(a, gate_up_grid<SG>(a), stream);
	return e ? e : launch_gemm<SD, false, kBf16>(a, g2, stream);
}

// cuTensorMapEncodeTiled, from the driver through the runtime (the module links no
// driver library); NULL where the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder()
{
	static PFN_cuTensorMapEncodeTiled_v12000 encode;
	static bool asked;
	if (!asked) {
		cudaDriverEntryPointQueryResult found;
		void *fn = nullptr;
		if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
						     &found) == cudaSuccess &&
		    found == cudaDriverEntryPointSuccess)
			encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
		asked = true;
	}
	return encode;
}

// The TMA's view of a [rows, k] matrix of 16-bit values (k contiguous, a multiple of 8):
// boxes of box_rows rows by 64 k-values, 128-byte swizzled as the kernels' tiles are,
// zeros outside.
cudaError_t tensor_map(CUtensorMap *map, const void *base, uint64_t rows, uint64_t k, uint32_t box_rows)
{
	const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
	if (!encode)
		return cudaErrorNotSupported;
	const cuuint64_t dims[2] = {k, rows}, strides[1] = {k * 2};
	const cuuint32_t box[2] = {kBK, box_rows}, steps[2] = {1, 1};
	const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, (void *)base, dims, strides, box,
				  steps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
				  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
	return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// The TMA's view of a gated w13, [experts, 2 (gate, up), inter, K], as wgmma128e's gate/up
// items take it: boxes of 64 act columns by 64 k-values holding their gate and up rows 8
// of each in turn (dimensions, fastest first: k, a row of 8, gate or up, 8 rows, expert;
// the third's stride larger than the fourth's), 128-byte swizzled, zeros outside.
cudaError_t gate_up_interleaved_map(CUtensorMap *map, const void *w13, uint64_t experts, uint64_t inter, uint64_t k)
{
	const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
	if (!encode)
		return cudaErrorNotSupported;
	const cuuint64_t row = k * 2;
	const cuuint64_t dims[5] = {k, 8, 2, inter / 8, experts};
	const cuuint64_t strides[4] = {row, inter * row, 8 * row, 2 * inter * row};
	const cuuint32_t box[5] = {kBK, 8, 2, 8, 1}, steps[5] = {1, 1, 1, 1, 1};
	const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 5, (void *)w13, dims, strides, box, steps,
				  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
				  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
	return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// How many clusters of two persistent blocks of kSmem bytes the card runs at once (0: none).
template <auto kKernel, int kSmem> uint32_t resident_pairs()
{
	static int pairs = -1;
	if (pairs < 0) {
		cudaLaunchConfig_t config = {};
		cudaLaunchAttribute pair;
		pair.id = cudaLaunchAttributeClusterDimension;
		pair.val.clusterDim = { 2, 1, 1 };
		config.gridDim = dim3(2 * sm_count()), config.blockDim = dim3(kWsThreads);
		config.dynamicSmemBytes = kSmem, config.attrs = &pair, config.numAttrs = 1;
		int n = 0;
		pairs = allow_smem<kKernel, kSmem>() == cudaSuccess &&
				cudaOccupancyMaxActiveClusters(&n, kKernel, &config) == cudaSuccess ?
			n : 0;
	}
	return (uint32_t)pairs;
}

// The persistent kernels' tile group where none is set: about one expert's tiles (the
// pairs an expert holds on average, in tiles of 128), an even number from 2 to
// MOE_GPU_TILE_GROUP. The blocks running at once then take the column blocks of few tiles,
// whose A rows they share through L2, while an expert's tiles still read each of its
// weight tiles once. Against 8 (bench/RESULTS.md, version 36, three passes in turn, µs):
// 2 for DeepSeek-V3 M = 1024 5451-5452 -> 5371-5373, M = 4096 6998-7037 -> 6935-6959,
// Qwen3-30B-A3B M = 4096 650-656 -> 638-644, Mixtral-8x7B M = 256 707-709 -> 699-700; but
// Mixtral-8x7B M = 4096, eight tiles an expert, 4623-4637 -> 4733-4784.
uint32_t persistent_tile_group(const struct moe_gpu_args &a)
{
	constexpr uint64_t kTile = WsShape<false>::S::BM;
	const uint64_t pairs = (uint64_t)a.tokens * a.topk, used = std::min<uint64_t>(a.experts, pairs);
	const uint64_t tiles = used ? (pairs + kTile * used - 1) / (kTile * used) : 1;
	return (uint32_t)std::min<uint64_t>(MOE_GPU_TILE_GROUP, std::max<uint64_t>(2, (tiles + 1) & ~1ull));
}

// The persistent kernel: a block an SM (at most one per work item), never split, in
// clusters of two where kPair; where the TMA cannot be set up for this job, or no
// cluster fits, the same tiles without it (wgmma128w).
template <bool kBf16, bool kPair, bool kPingpong, bool kExtend = false>
int launch_persistent(struct moe_gpu_args &a, cudaStream_t stream)
{
	static_assert(!(kPair && kPingpong), "wgmma128d is withdrawn (moe_gpu_kernel_withdrawn)");
	using S = typename WsShape<kPingpong>::S;
	constexpr int kSmem = ws_smem<kPingpong, kExtend>();
	constexpr auto gate_up = ws_kernel<true, kBf16, kPair, kPingpong, kExtend>;
	constexpr auto down = ws_kernel<false, kBf16, kPair, kPingpong, kExtend>;
	cudaError_t raised = allow_smem<gate_up, kSmem>();
	if (raised == cudaSuccess)
		raised = allow_smem<down, kSmem>();
	if (raised != cudaSuccess)
		return (int)raised;
	// The weights as [experts * rows, K] in boxes of half an item's weight rows, the down
	// GEMM's A (act) as [pairs, I] in boxes of a tile.
	const uint64_t pairs = (uint64_t)a.tokens * a.topk, w13_rows = a.gated ? 2 * (uint64_t)a.inter : a.inter;
	// The cooperative kernels' outputs, act and y, as [pairs, columns] in boxes of 64 x 64
	// (stage_rows).
	CUtensorMap w13_map, w2_map, act_map, act_extra_map, act_out_map, y_out_map;
	cudaError_t mapped = kExtend && a.gated ? gate_up_interleaved_map(&w13_map, a.w13, a.experts, a.inter, a.hidden)
					       : tensor_map(&w13_map, a.w13, a.experts * w13_rows, a.hidden, S::BN / 2);
	if (mapped == cudaSuccess)
		mapped = tensor_map(&w2_map, a.w2, (uint64_t)a.experts * a.hidden, a.inter, S::BN / 2);
	if (mapped == cudaSuccess)
		mapped = tensor_map(&act_map, a.act, pairs, a.inter, kActBoxRows);
	// The extra rows' boxes: only wgmma128e's items read them (the others get a copy of
	// act_map, never read, rather than an encoding a job).
	if constexpr (kExtend) {
		if (mapped == cudaSuccess)
			mapped = tensor_map(&act_extra_map, a.act, pairs, a.inter, kExtraRows);
	} else {
		act_extra_map = act_map;
	}
	if (mapped == cudaSuccess)
		mapped = tensor_map(&act_out_map, a.act, pairs, a.inter, 64);
	if (mapped == cudaSuccess)
		mapped = tensor_map(&y_out_map, a.y, pairs, a.hidden, 64);
	// Blocks (or clusters) running at once.
	const uint32_t walkers =
		kPair ? std::min(resident_pairs<gate_up, kSmem>(), resident_pairs<down, kSmem>()) : sm_count();
	if (mapped != cudaSuccess || !walkers) { // a driver without the encoder, a misaligned tensor
		// No other kernel takes an extended cut's tiles: the plan picks wgmma128e only
		// where moe_gpu_extension_runs(), and its jobs' tensors are aligned as wgmma128c's.
		if constexpr (kExtend)
			return (int)(mapped != cudaSuccess ? mapped : cudaErrorNotSupported);
		return launch<ShapeWg128W, ShapeWg128W, kBf16>(a, stream);
	}
	const uint32_t units = kPair ? (a.tiles + 1) / 2 : a.tiles; // tiles, or pairs of them
	const uint32_t items1 = units * column_blocks_of<S, true>(a), items2 = units * column_blocks_of<S, false>(a);
	const uint32_t blocks = kPair ? 2 : 1;
	a.y_io = 1;
	a.tile_group = a.tile_group ? a.tile_group : persistent_tile_group(a);
	// After the job's own fetch or sort, the gate/up GEMM's blocks start as that kernel
	// ends, and wait for it before they read anything (bench/RESULTS.md, version 33).
	int e = launch_clustered(gate_up, dim3(blocks * std::min(items1, walkers)), blocks, kWsThreads, kSmem,
				 dependent_launch(a) && a.follows_kernel, stream, a, items1, act_map, w13_map, act_out_map,
				 act_extra_map);
	if (!e)
		e = launch_clustered(down, dim3(blocks * std::min(items2, walkers)), blocks, kWsThreads, kSmem,
				     dependent_launch(a), stream, a, items2, act_map, w2_map, y_out_map, act_extra_map);
	return e;
}

template <bool kBf16> int launch_dtype(struct moe_gpu_args &a, cudaStream_t stream)
{
	switch (a.kernel) {
	case MOE_GPU_MMA16: return launch<Shape16, Shape16, kBf16>(a, stream);
	case MOE_GPU_MMA32: return launch<Shape32, Shape32, kBf16>(a, stream);
	case MOE_GPU_MMA64: return launch<Shape64, Shape64, kBf16>(a, stream);
	case MOE_GPU_MMA128: return launch<Shape128, Shape128, kBf16>(a, stream);
	case MOE_GPU_WGMMA128: return launch<ShapeWg128, ShapeWg128, kBf16>(a, stream);
	case MOE_GPU_WGMMA128W: return launch<ShapeWg128W, ShapeWg128W, kBf16>(a, stream);
	case MOE_GPU_WGMMA128WN: return launch<ShapeWg128W, ShapeWg128, kBf16>(a, stream);
	case MOE_GPU_WGMMA128P: return launch_persistent<kBf16, false, false>(a, stream);
	case MOE_GPU_WGMMA128C: return launch_persistent<kBf16, true, false>(a, stream);
	case MOE_GPU_WGMMA128E: return launch_persistent<kBf16, true, false, true>(a, stream);
	case MOE_GPU_WGMMA128S: return launch_persistent<kBf16, false, true>(a, stream);
	default: return (int)cudaErrorInvalidValue;
	}
}

} // namespace

extern "C" int moe_gpu_extension_runs(void)
{
#ifdef MOED_GPU_WGMMA
	constexpr int kSmem = ws_smem<false, true>();
	return tensor_map_encoder() && resident_pairs<ws_kernel<true, true, true, false, true>, kSmem>() &&
	       resident_pairs<ws_kernel<false, true, true, false, true>, kSmem>() &&
	       resident_pairs<ws_kernel<true, false, true, false, true>, kSmem>() &&
	       resident_pairs<ws_kernel<false, false, true, false, true>, kSmem>();
#else
	return 0;
#endif
}

extern "C" int moe_gpu_decode_in_one_kernel(const struct moe_gpu_args *a)
{
	// Where the host sorted the pairs: the kernel's items come from the tile count at
	// launch. (mma64 jobs placed by the device after a copy were no faster as one kernel,
	// bench/RESULTS.md, version 19: DeepSeek-V3 M = 1024.)
	return (a->kernel == MOE_GPU_MMA16 || a->kernel == MOE_GPU_MMA32 || a->kernel == MOE_GPU_MMA64) &&
	       !a->tile_total && !a->separate_decode &&
	       a->counters && a->tiles <= MOE_GPU_FUSED_MAX_TILES;
}

extern "C" int moe_gpu_decode_fetches(const struct moe_gpu_args *a)
{
	// Waiting for all of it at the start, as a job whose tile table lies past the head
	// must, cost more than a kernel that brings it first (bench/RESULTS.md, version 29:
	// Qwen3-30B-A3B M = 256, the graph's part of sorting 5.7-5.8 -> 2.6 µs; M = 64 4.8-4.9
	// -> 3.3).
	return moe_gpu_decode_in_one_kernel(a) && head_holds_tiles(*a);
}

extern "C" int moe_gpu_launch_mma(struct moe_gpu_args *args, void *stream)
{
	struct moe_gpu_args &a = *args;
	if (a.io_dtype != a.w_dtype || a.io_dtype == MOED_GPU_F32 || a.hidden % 8 || a.inter % 8)
		return (int)cudaErrorInvalidValue;
	return a.io_dtype == MOED_GPU_BF16 ? launch_dtype<true>(a, (cudaStream_t)stream)
					   : launch_dtype<false>(a, (cudaStream_t)stream);
}

#endif
