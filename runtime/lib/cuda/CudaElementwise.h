//===- CudaElementwise.h - Launchers of CudaElementwise.cu ------*- C++ -*-===//
//
// Internal to runtime/lib/cuda. POD interface between CudaElementwise.cpp
// (host compiler: validation, broadcasting plan, registration) and
// CudaElementwise.cu (nvcc: the functors and the one N-ary kernel template).
//
// Every launcher enqueues on `stream`, launches nothing when n == 0, and
// returns cudaGetLastError() after the launch, or cudaErrorInvalidValue for an
// op / dtype combination it has no kernel for (the host side validates first,
// so that is a bug, not a user error).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../Activations.h"
#include "CudaFault.h"

namespace qn::rt::cuda {

/// Operands of one elementwise kernel (inputs; the output is separate).
constexpr int kEwMaxOperands = 3;
/// Dimensions a layout may have after coalescing (CudaIndex.cuh's kMaxDims).
constexpr int kEwMaxDims = 8;

/// The (coalesced) output shape and, per input operand, element strides into
/// it (0 on broadcast axes). The output is contiguous in row-major order.
/// rank 0 means a single element.
struct EwLayout {
  int rank = 0;
  int64_t dims[kEwMaxDims] = {};
  int64_t strides[kEwMaxOperands][kEwMaxDims] = {};
};

/// Unary ops: y[i] = op(x[i]), same dtype in and out.
enum class EwUnary : int32_t {
  Relu, Neg, Abs,              // float types, int32, int64, int8
  Tanh, Sigmoid, Erf, Exp, Log, Sqrt, Reciprocal, Sin, Cos,
  Gelu, GeluTanh,              // float types
  Not,                         // bool
};

/// Binary ops over a broadcast layout (2 operands).
enum class EwBinary : int32_t {
  Add, Sub, Mul, Div,          // float types, int32, int64; output = input dtype
  Pow,                         // base: float types; exponent: float32 (float64 for a
                               // float64 base); output = base dtype
  Equal, Less, Greater, GreaterOrEqual, LessOrEqual, // any dtype; output bool
  And, Or,                     // bool
  Max, Min,                    // any non-bool dtype; output = input dtype
};

/// dtype: a DType number (the inputs' dtype; for Pow the base's).
cudaError_t launchEwUnary(EwUnary op, int32_t dtype, const void *x, void *y, int64_t n,
                          cudaStream_t stream);
/// An integer Div by zero yields 0 and reports kFaultDivByZero to `fault`
/// (CudaFault.h; ignored by the other ops).
cudaError_t launchEwBinary(EwBinary op, int32_t dtype, const EwLayout &layout, const void *a,
                           const void *b, void *y, int64_t n, cudaStream_t stream,
                           FaultSite fault = {});
/// An Activations.h op, y[i] = applyAct(x[i]), same dtype in and out (float
/// types; Sign also int32, int64, int8).
cudaError_t launchEwAct(Act op, ActParams p, int32_t dtype, const void *x, void *y, int64_t n,
                        cudaStream_t stream);
/// IsNaN: x of a float type, y bool.
cudaError_t launchEwIsNaN(int32_t dtype, const void *x, void *y, int64_t n, cudaStream_t stream);
/// Clip: y = min(max(x, lo), hi) (NaN stays NaN); an absent bound is
/// -inf/+inf (the integer type's limits). Float types, int32, int64, int8.
cudaError_t launchEwClip(int32_t dtype, bool hasLo, double lo, bool hasHi, double hi,
                         const void *x, void *y, int64_t n, cudaStream_t stream);
/// Where: y = c ? a : b over a broadcast layout of 3 operands (c bool; a, b
/// and y of `elemSize` bytes: 1, 2, 4 or 8).
cudaError_t launchEwWhere(size_t elemSize, const EwLayout &layout, const void *c, const void *a,
                          const void *b, void *y, int64_t n, cudaStream_t stream);
/// Cast of n contiguous elements between DType numbers `from` and `to`
/// (float32/64, float16, bfloat16, int64, int32, int8, uint8, bool), with
/// the CPU kernel's rules.
cudaError_t launchEwCast(int32_t from, int32_t to, const void *x, void *y, int64_t n,
                         cudaStream_t stream);

} // namespace qn::rt::cuda
