//===- CpuCommon.h - Helpers shared by the CPU kernels ---------*- C++ -*-===//
//
// Internal to runtime/lib/cpu. What the CUDA kernels share (checks, shapes,
// messages) is in ../OpSemantics.h, included here.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>
#include <vector>

#include "../OpSemantics.h"
#include "qn/runtime/Kernel.h"
#include "qn/runtime/Tensor.h"
#include "llvm/ADT/ArrayRef.h"

namespace qn::rt::cpu {

/// float16 / bfloat16 <-> float32 element conversion of whole tensors.
Tensor toFloat32(const Tensor &t);
Tensor fromFloat32(const Tensor &t, DType to);

/// float32 copy of a float16/bfloat16 tensor; the tensor itself otherwise.
inline Tensor widen(const Tensor &t) { return isHalfLike(t.dtype()) ? toFloat32(t) : t; }
/// Rounds a float32 result back to `to` when that is a half type.
inline Tensor narrow(const Tensor &t, DType to) { return isHalfLike(to) ? fromFloat32(t, to) : t; }

/// Calls f(T{}) for the element type of `t` (after widen()).
template <class F> bool visitNumeric(DType t, F &&f) {
  switch (t) {
  case DType::Float:
    f(float{});
    return true;
  case DType::Double:
    f(double{});
    return true;
  case DType::Int32:
    f(int32_t{});
    return true;
  case DType::Int64:
    f(int64_t{});
    return true;
  case DType::Int8:
    f(int8_t{});
    return true;
  case DType::UInt8:
    f(uint8_t{});
    return true;
  default:
    return false;
  }
}

/// Copies a strided view of `in` into contiguous `out`: out element with
/// multi-index i reads in byte-element at base + sum_k i_k * inStrides[k]
/// (strides in elements, may be negative or zero). `elemSize` is 1, 2, 4 or 8.
void stridedCopy(const void *in, int64_t base, llvm::ArrayRef<int64_t> outShape,
                 llvm::ArrayRef<int64_t> inStrides, void *out, size_t elemSize);

/// `x` materialised at `outShape` (which it must broadcast to); `x` itself
/// when the shapes already agree.
Tensor broadcastTo(const Tensor &x, llvm::ArrayRef<int64_t> outShape);

/// Row-major C[M,N] = alpha * op(A) op(B) + beta * C (CpuMatMul.cpp): float32
/// through oneDNN's sgemm (OpenBLAS when the build has no oneDNN), float64
/// through OpenBLAS. Dimensions must fit the BLAS int (the planners check).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
          int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

void registerMatMulKernels(KernelRegistry &reg);
void registerConvKernels(KernelRegistry &reg);
void registerElementwiseKernels(KernelRegistry &reg);
void registerNormKernels(KernelRegistry &reg);
void registerShapeKernels(KernelRegistry &reg);
void registerCollectiveKernels(KernelRegistry &reg);

} // namespace qn::rt::cpu
