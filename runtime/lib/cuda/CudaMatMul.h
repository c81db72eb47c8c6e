//===- CudaMatMul.h - Launchers of CudaMatMul.cu ----------------*- C++ -*-===//
//
// Internal to runtime/lib/cuda. POD interface between CudaMatMul.cpp (host
// compiler) and CudaMatMul.cu (nvcc).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace qn::rt::cuda {

/// Gemm's C broadcast into Y[M,N] (row-major): Y[i,j] = C[cRows == 1 ? 0 : i,
/// cCols == 1 ? 0 : j] where C is stored as a row-major [cRows, cCols] matrix
/// (cRows is 1 or M, cCols is 1 or N). With `applyScale`, Y = scale * C
/// (computed in float for float32 / float16 / bfloat16, in double for
/// float64). `dtype` is a DType number (float32, float64, float16, bfloat16);
/// cudaErrorInvalidValue for another one. Nothing is launched when M*N == 0.
cudaError_t launchGemmBroadcastC(int32_t dtype, const void *c, int64_t cRows, int64_t cCols,
                                 void *y, int64_t M, int64_t N, bool applyScale, double scale,
                                 cudaStream_t stream);

} // namespace qn::rt::cuda
