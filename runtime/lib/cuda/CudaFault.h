//===- CudaFault.h - Faults that kernels find while computing ---*- C++ -*-===//
//
// Internal to runtime/lib/cuda. POD, seen by the host compiler and by nvcc.
//
// Some errors depend on values that live on the GPU: a Gather index outside
// its axis, an integer division by zero. The CPU kernels reject them before
// computing; a CUDA kernel cannot look at device data on the host without
// synchronising (and a captured run cannot synchronise at all). So such a
// kernel still computes something defined (a zero row, a zero quotient) and
// records the fault in a device word of its rank, the first fault winning:
//
//   word = site * kFaultKinds + kind
//
// where `site` is what the executor set in DeviceContext::faultSite before
// launching the node's kernels (its step index + 1; 0 outside an executor).
// The executor reads the word back with the outputs of every run (4 bytes,
// on the stream, also after a CUDA graph replay) and turns a fault into the
// CPU kernel's error naming the node; the run's outputs are not returned.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>

namespace qn::rt::cuda {

enum FaultKind : int32_t {
  kFaultNone = 0,
  kFaultGatherIndex = 1, // a Gather/GatherND/ScatterND index outside [-axisLen, axisLen)
  kFaultDivByZero = 2,   // an integer Div by zero
  kFaultKinds = 4,
};

/// Passed by value to the kernels that can fault. A null word reports
/// nothing.
struct FaultSite {
  int32_t *word = nullptr;
  int32_t site = 0;
};

#ifdef __CUDACC__
__device__ __forceinline__ void reportFault(FaultSite f, int32_t kind) {
  if (f.word)
    atomicCAS(f.word, 0, f.site * kFaultKinds + kind);
}
#endif

} // namespace qn::rt::cuda
