//===- CudaShape.h - Launchers of CudaShape.cu ------------------*- C++ -*-===//
//
// Internal to runtime/lib/cuda. POD interface between CudaShape.cpp (host
// compiler) and CudaShape.cu (nvcc); includable from both (no CudaIndex.cuh).
//
// Every launcher enqueues its work on `stream` (never synchronises, never
// allocates), launches nothing when there is nothing to copy, and returns the
// first CUDA error (cudaGetLastError() after its launches) or
// cudaErrorInvalidValue for an element size it does not handle. Element sizes
// are 1, 2, 4 or 8 bytes (plus 16 for launchStridedCopy); all counts and
// strides are in elements.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "CudaFault.h"

namespace qn::rt::cuda {

/// Generic strided copy (the data movement of Transpose, Slice, Expand,
/// Split; reused by the collectives): `out` is contiguous (row-major) of shape
/// outShape[0..rank), and its element with multi-index (i_0, ..., i_{r-1})
/// is in[base + sum_k i_k * inStrides[k]]. Strides may be negative (reversed
/// slices) or zero (broadcast); `base` is the offset of out's first element.
/// Any rank (rank 0: one element). Size-1 dims are dropped and dims that are
/// contiguous in `in` merged first; a copy that is contiguous after that is
/// one cudaMemcpyAsync (device to device); wide enough aligned rows are moved
/// in 16/8/4-byte words; a transposition of the innermost axis goes through
/// shared-memory tiles. `in` and `out` are device pointers and must not
/// overlap.
cudaError_t launchStridedCopy(const void *in, int64_t base, int rank, const int64_t *outShape,
                              const int64_t *inStrides, void *out, size_t elemSize,
                              cudaStream_t stream);

/// Concatenation of `n` inputs viewed as [outer, chunks[i]] into out viewed
/// as [outer, sum_i chunks[i]] (chunks[i] = input i's size along the axis
/// times the inner size; zero-size chunks are allowed, their srcs[i] may be
/// null). One kernel per 32 inputs; a cudaMemcpyAsync per input when
/// outer == 1.
cudaError_t launchConcat(const void *const *srcs, const int64_t *chunks, int n, int64_t outer,
                         void *out, size_t elemSize, cudaStream_t stream);

/// Gather: data viewed as [outer, axisLen, inner], `indices` (`count`
/// int64 or int32 values) read on the device, out as [outer, count, inner]:
/// out[o, j, :] = data[o, idx_j (+ axisLen if negative), :]. An index outside
/// [-axisLen, axisLen) yields a zero row and reports kFaultGatherIndex to
/// `fault` (CudaFault.h: the executor turns it into the CPU kernel's error).
cudaError_t launchGather(const void *data, const void *indices, bool indices64, int64_t outer,
                         int64_t axisLen, int64_t inner, int64_t count, void *out,
                         size_t elemSize, FaultSite fault, cudaStream_t stream);

/// Most components of a GatherND / ScatterND index tuple on CUDA.
constexpr int kMaxIndexND = 8;
/// The data axes a tuple indexes: component m selects along an axis of size
/// dims[m] whose elements are strides[m] apart (cpu::IndexNDPlan).
struct IndexND {
  int k = 0;
  int64_t dims[kMaxIndexND] = {};
  int64_t strides[kMaxIndexND] = {};
};

/// GatherND: `indices` (int64, read on the device) holds batch * tuples
/// tuples of ix.k components; out (batch * tuples slices of `slice`
/// elements) = for tuple t of batch i, the slice of data at
/// i * dataBatch + sum_m idx_m * strides[m] (negative components count from
/// the end). A component out of range yields a zero slice and reports
/// kFaultGatherIndex to `fault`.
cudaError_t launchGatherND(const void *data, const int64_t *indices, int64_t batch,
                           int64_t tuples, int64_t dataBatch, const IndexND &ix, int64_t slice,
                           void *out, size_t elemSize, FaultSite fault, cudaStream_t stream);

/// ScatterND: out (dataNumel elements, not overlapping data) = data, then the
/// slice at each of the `tuples` tuples of `indices` replaced by (reduction 0)
/// or reduced with (1 add, 2 mul, 3 max, 4 min: cpu::ScatterReduction) the
/// tuple's slice of `updates`. Without a reduction the tuples are written in
/// parallel (which of duplicate tuples wins is unspecified, as in ONNX); with
/// one, each element of a slice is reduced by one thread over the tuples in
/// order, in the CPU kernel's arithmetic (the results agree bit for bit).
/// `dtype` (a qn::rt::DType number) matters only with a reduction (float32/64,
/// float16, bfloat16, int32, int64). A tuple with a component out of range is
/// skipped and reports kFaultGatherIndex.
cudaError_t launchScatterND(int32_t dtype, int reduction, const void *data, int64_t dataNumel,
                            const int64_t *indices, const void *updates, int64_t tuples,
                            const IndexND &ix, int64_t slice, void *out, size_t elemSize,
                            FaultSite fault, cudaStream_t stream);

/// Trilu over `mats` row-major [rows, cols] matrices: out = in where
/// col - row >= k (upper) or col - row <= k (lower), 0 elsewhere (every
/// element of out is written).
cudaError_t launchTrilu(const void *in, void *out, int64_t mats, int64_t rows, int64_t cols,
                        int64_t k, bool upper, size_t elemSize, cudaStream_t stream);

} // namespace qn::rt::cuda

#ifdef __CUDACC__
// For .cu callers: the same copy with CudaIndex.cuh's Dims / Strides (the
// host compiler never sees this part).
#include "CudaIndex.cuh"

namespace qn::rt::cuda {
inline cudaError_t launchStridedCopy(const void *in, int64_t base, const Dims &outDims,
                                     const Strides &inStrides, void *out, size_t elemSize,
                                     cudaStream_t stream) {
  return launchStridedCopy(in, base, outDims.rank, outDims.d, inStrides.s, out, elemSize, stream);
}
} // namespace qn::rt::cuda
#endif
