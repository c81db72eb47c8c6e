//===- CudaCollectives.cu - Sum of the ranks' buffers (local engine) ------===//
#include "CudaCollectives.h"
#include "CudaIndex.cuh"

namespace qn::rt::cuda {
namespace {

struct Ptrs {
  const void *p[kMaxLocalRanks];
};

template <class T>
__global__ void sumRanksKernel(T *out, Ptrs ins, int n, int64_t outer, int64_t blk, int64_t pitch,
                               int64_t offset) {
  using A = typename Acc<T>::type;
  int64_t total = outer * blk;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = i / blk, j = i - o * blk;
    int64_t at = o * pitch + offset + j;
    A s = static_cast<A>(toF(static_cast<const T *>(ins.p[0])[at]));
    for (int r = 1; r < n; ++r)
      s += static_cast<A>(toF(static_cast<const T *>(ins.p[r])[at]));
    out[i] = fromF<T>(static_cast<float>(s));
  }
}

// Exact integer / double sums (toF would round through float).
template <class T>
__global__ void sumRanksExact(T *out, Ptrs ins, int n, int64_t outer, int64_t blk, int64_t pitch,
                              int64_t offset) {
  int64_t total = outer * blk;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = i / blk, j = i - o * blk;
    int64_t at = o * pitch + offset + j;
    T s = static_cast<const T *>(ins.p[0])[at];
    for (int r = 1; r < n; ++r)
      s += static_cast<const T *>(ins.p[r])[at];
    out[i] = s;
  }
}

} // namespace

bool launchSumRanks(void *out, const void *const *ins, int n, int64_t outer, int64_t blk,
                    int64_t pitch, int64_t offset, int32_t dtype, cudaStream_t stream,
                    cudaError_t &err) {
  err = cudaSuccess;
  if (n < 1 || n > kMaxLocalRanks)
    return false;
  Ptrs p{};
  for (int r = 0; r < n; ++r)
    p.p[r] = ins[r];
  int64_t total = outer * blk;
  if (total == 0)
    return true;
  unsigned blocks = blocksFor(total);
  bool ok = true;
  switch (dtype) {
  case DT_F32:
    sumRanksKernel<float><<<blocks, 256, 0, stream>>>(static_cast<float *>(out), p, n, outer, blk,
                                                      pitch, offset);
    break;
  case DT_F16:
    sumRanksKernel<__half><<<blocks, 256, 0, stream>>>(static_cast<__half *>(out), p, n, outer,
                                                       blk, pitch, offset);
    break;
  case DT_BF16:
    sumRanksKernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(
        static_cast<__nv_bfloat16 *>(out), p, n, outer, blk, pitch, offset);
    break;
  case DT_F64:
    sumRanksExact<double><<<blocks, 256, 0, stream>>>(static_cast<double *>(out), p, n, outer,
                                                      blk, pitch, offset);
    break;
  case DT_I64:
    sumRanksExact<int64_t><<<blocks, 256, 0, stream>>>(static_cast<int64_t *>(out), p, n, outer,
                                                       blk, pitch, offset);
    break;
  case DT_I32:
    sumRanksExact<int32_t><<<blocks, 256, 0, stream>>>(static_cast<int32_t *>(out), p, n, outer,
                                                       blk, pitch, offset);
    break;
  default:
    ok = false;
  }
  if (ok)
    err = cudaGetLastError();
  return ok;
}

} // namespace qn::rt::cuda
