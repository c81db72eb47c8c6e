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

/// Longest row the fused LayerNormalization handles (held in registers).
constexpr int64_t kFusedNormMaxCols = 4096;

/// LayerNormalization along the last axis of X = the program over the inputs
/// (as launchFused: X has shape dims[0..rank), rank >= 1, the inputs are read
/// through their strides), in one kernel (CudaNorm.cu, next to the plain
/// LayerNormalization kernels, whose numerics it keeps: X rounded to dtype,
/// two-pass mean and variance in float). rows = prod(dims[0..rank-1)) > 0,
/// cols = dims[rank-1] in (0, kFusedNormMaxCols]. xOut: null or X's buffer
/// (written when given); scale, bias: null or cols elements; y: X's shape.
/// false: dtype or shape not supported (nothing launched).
bool launchFusedLayerNorm(const FuseProgram &prog, const void *const *inputs,
                          const int64_t *strides, const int64_t *dims, int rank, void *xOut,
                          const void *scale, const void *bias, void *y, float epsilon,
                          int32_t dtype, cudaStream_t stream, cudaError_t &err);

} // namespace qn::rt::cuda
