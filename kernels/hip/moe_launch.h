// SPDX-License-Identifier: MIT
//
// Launching the kernels on NVIDIA: a grid as the previous one's programmatic dependent
// (its blocks start while that grid finishes, and wait with wait_for_prerequisite_grid()
// where they need its results), in clusters. Shared by the matrix-unit kernels' launches
// (the down GEMM after the gate/up GEMM) and the device sort's (the placing after the
// counting). Included by the .hip files only, in their NVIDIA parts.
#ifndef MOED_HIP_MOE_LAUNCH_H
#define MOED_HIP_MOE_LAUNCH_H

#include "hip_compat.h"
#include "moe_kernels.h"

namespace moe {

// Whether a grid is launched as its predecessor's programmatic dependent: where device 0
// takes them (compute capability 9.0 and up) and the caller has not turned it off
// (moe_gpu_args.serial_launch, for measurements: moed(8)).
inline bool dependent_launch(const struct moe_gpu_args &a)
{
	return !a.serial_launch && moe_gpu_compute_capability() >= 90;
}

// `kernel` over `grid` as the previous grid's programmatic dependent where `dependent`
// (dependent_launch()); `cluster` > 1: in clusters of that many blocks.
template <class Kernel, class... Args>
int launch_clustered(Kernel kernel, dim3 grid, unsigned cluster, int threads, int smem, bool dependent,
		     cudaStream_t stream, Args... args)
{
	cudaLaunchConfig_t config = {};
	cudaLaunchAttribute attrs[2];
	config.gridDim = grid, config.blockDim = dim3(threads), config.dynamicSmemBytes = smem;
	config.stream = stream, config.attrs = attrs;
	if (dependent) {
		attrs[config.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
		attrs[config.numAttrs++].val.programmaticStreamSerializationAllowed = 1;
	}
	if (cluster > 1) {
		attrs[config.numAttrs].id = cudaLaunchAttributeClusterDimension;
		attrs[config.numAttrs++].val.clusterDim = { cluster, 1, 1 };
	}
	const cudaError_t e = cudaLaunchKernelEx(&config, kernel, args...);
	return (int)(e != cudaSuccess ? e : cudaGetLastError());
}

template <class Kernel, class... Args>
int launch_on(Kernel kernel, dim3 grid, int threads, int smem, bool dependent, cudaStream_t stream,
	      Args... args)
{
	return launch_clustered(kernel, grid, 1, threads, smem, dependent, stream, args...);
}

} // namespace moe

#endif
