//===- CudaMatMul.cu - Gemm's C broadcast ----------------------------------===//
#include "CudaIndex.cuh"
#include "CudaMatMul.h"

#include <type_traits>

namespace qn::rt::cuda {
namespace {

template <class T>
__global__ void broadcastCKernel(const T *__restrict__ c, int64_t cRows, int64_t cCols,
                                 T *__restrict__ y, int64_t M, int64_t N, bool applyScale,
                                 double scale) {
  const int64_t n = M * N;
  const int64_t rowStride = cRows == 1 ? 0 : cCols;
  const int64_t colStride = cCols == 1 ? 0 : 1;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / N, col = i - r * N;
    T v = c[r * rowStride + col * colStride];
    if (applyScale) {
      if constexpr (std::is_same_v<T, double>)
        v = v * scale;
      else
        v = fromF<T>(toF(v) * static_cast<float>(scale));
    }
    y[i] = v;
  }
}

} // namespace

cudaError_t launchGemmBroadcastC(int32_t dtype, const void *c, int64_t cRows, int64_t cCols,
                                 void *y, int64_t M, int64_t N, bool applyScale, double scale,
                                 cudaStream_t stream) {
  const int64_t n = M * N;
  if (n <= 0)
    return cudaSuccess;
  bool ok = dispatchFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    broadcastCKernel<T><<<blocksFor(n), 256, 0, stream>>>(static_cast<const T *>(c), cRows, cCols,
                                                          static_cast<T *>(y), M, N, applyScale,
                                                          scale);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

} // namespace qn::rt::cuda
