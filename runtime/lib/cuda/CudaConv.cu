//===- CudaConv.cu - Conv's im2col and bias broadcast ----------------------===//
#include "CudaConv.h"
#include "CudaIndex.cuh"

namespace qn::rt::cuda {
namespace {

template <class T>
__global__ void im2colKernel(ConvGeometry g, const T *__restrict__ x, T *__restrict__ col,
                             int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i;
    int64_t o[3], k[3];
    for (int d = 2; d >= 0; --d) {
      o[d] = r % g.out[d];
      r /= g.out[d];
    }
    for (int d = 2; d >= 0; --d) {
      k[d] = r % g.k[d];
      r /= g.k[d];
    }
    // r = image * C + channel
    int64_t off = r;
    bool inside = true;
    for (int d = 0; d < 3; ++d) {
      int64_t pos = o[d] * g.stride[d] + k[d] * g.dil[d] - g.pad[d];
      inside = inside && pos >= 0 && pos < g.in[d];
      off = off * g.in[d] + pos;
    }
    col[i] = inside ? x[off] : fromF<T>(0.0f);
  }
}

template <class T>
__global__ void biasKernel(const T *__restrict__ b, T *__restrict__ y, int64_t M, int64_t P,
                           int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = b[(i / P) % M];
}

} // namespace

cudaError_t launchConvIm2col(int32_t dtype, const ConvGeometry &g, const void *x, void *col,
                             cudaStream_t stream) {
  int64_t n = g.N * g.C;
  for (int d = 0; d < 3; ++d)
    n *= g.k[d] * g.out[d];
  if (n <= 0)
    return cudaSuccess;
  bool ok = dispatchFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    im2colKernel<T><<<blocksFor(n), 256, 0, stream>>>(g, static_cast<const T *>(x),
                                                      static_cast<T *>(col), n);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t launchConvBias(int32_t dtype, const void *b, void *y, int64_t N, int64_t M, int64_t P,
                           cudaStream_t stream) {
  const int64_t n = N * M * P;
  if (n <= 0)
    return cudaSuccess;
  bool ok = dispatchFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    biasKernel<T><<<blocksFor(n), 256, 0, stream>>>(static_cast<const T *>(b),
                                                    static_cast<T *>(y), M, P, n);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

} // namespace qn::rt::cuda
