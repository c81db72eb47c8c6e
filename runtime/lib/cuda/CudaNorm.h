//===- CudaNorm.h - Launchers of the normalisation / reduction kernels -*- C++ -*-===//
//
// Plain C++ interface between CudaNorm.cpp (host compiler: validation, shapes,
// registration) and CudaNorm.cu (nvcc: the kernels). POD parameters only;
// dtypes are qn::rt::DType numbers; every tensor is dense and row-major.
// Each launcher enqueues on `stream` and returns cudaGetLastError() (or
// cudaErrorInvalidValue for a dtype it does not handle).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace qn::rt::cuda {

/// Most axes of a strided gather after merging (CudaIndex.cuh's kMaxDims).
constexpr int kNormMaxDims = 8;

/// out[i] = in[sum_k i_k * inStrides[k]] for the row-major multi-index i of
/// `outDims` (`rank` <= kNormMaxDims axes, n = prod(outDims) > 0 elements of
/// `elemSize` bytes: 1, 2, 4 or 8). Transposed copies and broadcasts.
cudaError_t launchNormGather(size_t elemSize, const void *in, void *out, int64_t n, int rank,
                             const int64_t *outDims, const int64_t *inStrides, cudaStream_t stream);

/// out[0..n) = the `elemSize`-byte pattern `bits` (n > 0).
cudaError_t launchNormFill(size_t elemSize, void *out, int64_t n, uint64_t bits,
                           cudaStream_t stream);

/// LayerNormalization of x viewed as [rows, cols] (rows > 0, cols >= 0) along
/// cols. scale, bias: null or `cols` elements of x's dtype. mean, invStdDev:
/// null or `rows` floats. float32/float16/bfloat16 accumulate in float,
/// float64 in double; the mean and variance are computed in two passes.
cudaError_t launchLayerNorm(int32_t dtype, const void *x, const void *scale, const void *bias,
                            void *y, float *mean, float *invStdDev, int64_t rows, int64_t cols,
                            float epsilon, cudaStream_t stream);

/// Softmax (logSoftmax: LogSoftmax) of x viewed as [outer, n, inner] along n
/// (outer * n * inner > 0). Half types compute in float.
cudaError_t launchSoftmax(int32_t dtype, bool logSoftmax, const void *x, void *y, int64_t outer,
                          int64_t n, int64_t inner, cudaStream_t stream);

/// Reductions of x viewed as [outer, len, inner] (all > 0) along len into y
/// viewed as [outer, inner]. kind: 0 mean, 1 sum, 2 max (cpu::ReduceKind).
/// Sums of floating types accumulate in double (as the CPU kernel), of
/// integers in wrapping 64-bit; Max propagates NaN.
struct NormReduceSplit {
  int64_t splits = 1; // len cut into `splits` chunks of `chunk` (two passes when > 1)
  int64_t chunk = 0;
  size_t workspaceBytes = 0; // the partial results of the first pass
};
/// How launchReduce will split the work; allocate `workspaceBytes` of device
/// memory for it (none when splits == 1). false: dtype not supported.
bool planNormReduce(int32_t dtype, int kind, int64_t outer, int64_t len, int64_t inner,
                    NormReduceSplit &split);
cudaError_t launchReduce(int32_t dtype, int kind, const void *x, void *y, void *workspace,
                         int64_t outer, int64_t len, int64_t inner, const NormReduceSplit &split,
                         cudaStream_t stream);

/// CumSum of x viewed as [outer, n, inner] along n (outer * n * inner > 0); exclusive:
/// each output leaves out its own element; reverse: from the end of the axis.
/// float32/float16/bfloat16 sum in float (the half types rounded at each output),
/// float64 in double, int32/int64 in wrapping 64-bit, in the order of the axis
/// (as the CPU kernel: the results agree bit for bit).
cudaError_t launchCumSum(int32_t dtype, const void *x, void *y, int64_t outer, int64_t n,
                         int64_t inner, bool exclusive, bool reverse, cudaStream_t stream);

} // namespace qn::rt::cuda
