//===- CudaConv.h - Launchers of CudaConv.cu --------------------*- C++ -*-===//
//
// Internal to runtime/lib/cuda. POD interface between CudaConv.cpp (host
// compiler) and CudaConv.cu (nvcc).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace qn::rt::cuda {

/// The geometry of a convolution with 3 spatial dims (1-D and 2-D ones have
/// leading dims of size 1): cpu::ConvPlan's numbers.
struct ConvGeometry {
  int64_t N = 0, C = 0;
  int64_t in[3], k[3], out[3], stride[3], dil[3], pad[3];
};

/// im2col of all N images: col[n][c][k0][k1][k2][o0][o1][o2] = x[n][c][i0][i1][i2]
/// with i_d = o_d * stride_d + k_d * dil_d - pad_d, 0 outside X. `dtype` is a
/// DType number (float32, float64, float16, bfloat16); cudaErrorInvalidValue
/// for another one. Nothing is launched for an empty column matrix.
cudaError_t launchConvIm2col(int32_t dtype, const ConvGeometry &g, const void *x, void *col,
                             cudaStream_t stream);

/// y[n][m][p] = b[m] for y of [N, M, P].
cudaError_t launchConvBias(int32_t dtype, const void *b, void *y, int64_t N, int64_t M, int64_t P,
                           cudaStream_t stream);

} // namespace qn::rt::cuda
