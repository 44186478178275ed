// SPDX-License-Identifier: MIT
//
// Launching a kernel as the programmatic dependent of the one before it on its stream
// (NVIDIA, compute capability 9.0 and up): its blocks start while that grid finishes and
// fetch what does not depend on it (weights) before griddepcontrol.wait (moe_device.h).
// Decode jobs are a few short kernels; this hides one launch's ramp. Elsewhere a plain
// launch. Host code of the .hip files only.
#ifndef MOED_HIP_MOE_LAUNCH_H
#define MOED_HIP_MOE_LAUNCH_H

#include <stdlib.h>
#include <string.h>

#include "hip_compat.h"
#include "moe_kernels.h"

namespace moe {

// Whether device 0 takes programmatic dependent launches. MOED_GPU_DEPENDENT_LAUNCH=0
// turns them off, for measurements (moed(8); the backend refuses other values than 0
// and 1); read once.
inline bool dependent_launch()
{
	static int allowed = -1;
	if (allowed < 0) {
		const char *env = getenv("MOED_GPU_DEPENDENT_LAUNCH");
		allowed = !(env && !strcmp(env, "0"));
	}
	return allowed && MOED_GPU_NVIDIA && moe_gpu_compute_capability() >= 90;
}

template <class Kernel, class... Args>
int launch_on(Kernel kernel, dim3 grid, int threads, int smem, bool dependent, hipStream_t stream,
	      Args... args)
{
#if MOED_GPU_NVIDIA
	cudaLaunchConfig_t config = {};
	cudaLaunchAttribute early;
	config.gridDim = grid, config.blockDim = dim3(threads), config.dynamicSmemBytes = smem;
	config.stream = stream;
	if (dependent && dependent_launch()) {
		early.id = cudaLaunchAttributeProgrammaticStreamSerialization;
		early.val.programmaticStreamSerializationAllowed = 1;
		config.attrs = &early, config.numAttrs = 1;
	}
	const cudaError_t e = cudaLaunchKernelEx(&config, kernel, args...);
	return (int)(e != cudaSuccess ? e : cudaGetLastError());
#else
	(void)dependent;
	hipLaunchKernelGGL(kernel, grid, dim3(threads), smem, stream, args...);
	return (int)hipGetLastError();
#endif
}

} // namespace moe

#endif
