// SPDX-License-Identifier: MIT
// What a kernel that only reads can do on this card: the fixed cost of a short streaming
// kernel and the rate it then reaches, for judging the decode rows, whose floor
// (bytes / the copy rate) has no fixed cost. Each block reads 128 rows through a ring of
// five 16 KiB stages with four in flight (as the 16-pair decode tiles do); each launch
// reads another region, so that L2 holds none of it. NVIDIA only (cp.async); built by
// `make bench-gpu`, run by tools/gpu-round.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "hip_compat.h"

namespace {

constexpr int kStage = 16384, kStages = 5, kThreads = 128;

__device__ __forceinline__ void copy16(uint32_t dst, const void *src)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}

// kContiguous: stage k is the block's k-th 16 KiB; else 128 B of each of 128 rows
// `stride` bytes apart (a tile's weight rows).
template <bool kContiguous>
__global__ void __launch_bounds__(kThreads) read_kernel(const char *w, size_t stride, int stages, unsigned *sink)
{
	extern __shared__ __align__(128) unsigned char smem[];
	const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem);
	const int t = threadIdx.x;
	const char *rows = w + (size_t)blockIdx.x * 128 * stride;
	auto issue = [&](int k) {
		for (int p = 0; p < kStage / 16 / kThreads; p++) {
			const int c = t + kThreads * p; // 16-byte chunk of the stage
			const char *src = kContiguous ? rows + (size_t)k * kStage + (size_t)c * 16
						      : rows + (size_t)(c / 8) * stride + (size_t)k * 128 + c % 8 * 16;
			copy16(base + (k % kStages) * kStage + c * 16, src);
		}
		asm volatile("cp.async.commit_group;\n" ::);
	};
	unsigned seen = 0;
	for (int k = 0; k < kStages - 1 && k < stages; k++)
		issue(k);
	for (int k = 0; k < stages; k++) {
		asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 2));
		__syncthreads();
		seen ^= ((const unsigned *)(smem + (k % kStages) * kStage))[t * 8];
		__syncthreads();
		if (k + kStages - 1 < stages)
			issue(k + kStages - 1);
		else
			asm volatile("cp.async.commit_group;\n" ::);
	}
	if (seen == 0x9e3779b9u) // never, as far as the compiler knows: the reads stay
		*sink = seen;
}

template <bool kContiguous>
void measure(const char *what, const char *w, size_t bytes, unsigned *sink, int blocks, size_t stride, int stages)
{
	const auto kernel = read_kernel<kContiguous>;
	cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kStages * kStage);
	const size_t region = (size_t)blocks * 128 * stride;
	const int regions = (int)(bytes / region);
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	std::vector<float> us;
	for (int r = 0; r < 41; r++) {
		cudaEventRecord(e0);
		kernel<<<blocks, kThreads, kStages * kStage>>>(w + (size_t)(r % regions) * region, stride, stages, sink);
		cudaEventRecord(e1);
		cudaEventSynchronize(e1);
		float ms = 0;
		cudaEventElapsedTime(&ms, e0, e1);
		if (r) // the first is cold
			us.push_back(ms * 1000);
	}
	std::sort(us.begin(), us.end());
	const double mb = (double)blocks * stages * kStage / 1e6, median = us[us.size() / 2];
	printf("%-32s %4d blocks %7.1f MB %8.2f us %5.2f TB/s\n", what, blocks, mb, median, mb / median);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
}

} // namespace

int main()
{
	const size_t bytes = (size_t)1200 << 20;
	char *w = nullptr;
	unsigned *sink = nullptr;
	if (cudaMalloc(&w, bytes) != cudaSuccess || cudaMalloc(&sink, sizeof(*sink)) != cudaSuccess) {
		fprintf(stderr, "read-probe: no device memory\n");
		return 77;
	}
	cudaMemset(w, 1, bytes);
	// Qwen3-30B-A3B's gate/up GEMM at M = 1: 96 blocks of 128 rows of 4 KiB.
	measure<false>("rows 4096 B apart", w, bytes, sink, 96, 4096, 32);
	measure<false>("rows 4224 B apart", w, bytes, sink, 96, 4224, 32);
	measure<true>("contiguous stages", w, bytes, sink, 96, 4096, 32);
	// Reads of growing size, two blocks an SM: the fixed cost and the rate.
	int sms = 132;
	cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
	for (int stages : { 4, 8, 16, 32, 64, 128 })
		measure<true>("contiguous stages", w, bytes, sink, 2 * sms, (size_t)stages * 128, stages);
	// The same reads 128 B a row, rows apart as the prefill GEMMs' weight rows are
	// (Qwen3-30B-A3B's gate/up K = 2048, DeepSeek-V3's 7168): whether reads scattered
	// over rows cost bandwidth once the whole card streams.
	measure<false>("rows 4096 B apart", w, bytes, sink, 2 * sms, 4096, 32);
	measure<false>("rows 14336 B apart", w, bytes, sink, 2 * sms, 14336, 112);
	measure<true>("contiguous stages", w, bytes, sink, 2 * sms, 14336, 112);
	const cudaError_t e = cudaDeviceSynchronize();
	if (e != cudaSuccess) {
		fprintf(stderr, "read-probe: %s\n", cudaGetErrorString(e));
		return 1;
	}
	return 0;
}
