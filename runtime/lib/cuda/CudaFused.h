//===- CudaFused.h - The fused elementwise kernel's launcher ----*- C++ -*-===//
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../FuseProgram.h"

namespace qn::rt::cuda {

/// out (contiguous, shape dims[0..rank)) = program over the inputs, each read
/// through its element strides (0 on broadcast axes; strides[j*rank + k]).
/// All inputs and the output have dtype `dtype` (float32, float16 or
/// bfloat16); computation is in float32. false: dtype not supported.
bool launchFused(const FuseProgram &prog, const void *const *inputs, const int64_t *strides,
                 const int64_t *dims, int rank, void *out, int32_t dtype, cudaStream_t stream,
                 cudaError_t &err);

} // namespace qn::rt::cuda
