//===- CudaIndex.cuh - Device-side helpers shared by the .cu files -*- CUDA -*-===//
//
// Included only by .cu files (no LLVM, no ONNX). Element types are numbered as
// qn::rt::DType (ONNX's TensorProto::DataType); half types compute in float.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace qn::rt::cuda {

constexpr int kMaxDims = 8;

/// DType numbers (kept in sync with qn/runtime/Tensor.h).
enum DT : int32_t {
  DT_F32 = 1,
  DT_U8 = 2,
  DT_I8 = 3,
  DT_I32 = 6,
  DT_I64 = 7,
  DT_BOOL = 9,
  DT_F16 = 10,
  DT_F64 = 11,
  DT_BF16 = 16,
};

/// An output shape and, per operand, element strides into it (0 where the
/// operand is broadcast along that axis). Passed to kernels by value.
struct Dims {
  int rank = 0;
  int64_t d[kMaxDims] = {};
};
struct Strides {
  int64_t s[kMaxDims] = {};
};

/// Offset (in elements) of the element with row-major linear index `i` of
/// shape `dims` in an operand with `strides`.
__host__ __device__ inline int64_t stridedOffset(int64_t i, const Dims &dims, const Strides &st) {
  int64_t off = 0;
  for (int k = dims.rank - 1; k >= 0; --k) {
    int64_t q = i / dims.d[k];
    off += (i - q * dims.d[k]) * st.s[k];
    i = q;
  }
  return off;
}

/// float <-> element conversions (compute in float for the half types).
template <class T> __device__ __forceinline__ float toF(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float toF<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float toF<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <class T> __device__ __forceinline__ T fromF(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half fromF<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

/// Compute type of an element type: float for the half types, else itself.
template <class T> struct Acc { using type = T; };
template <> struct Acc<__half> { using type = float; };
template <> struct Acc<__nv_bfloat16> { using type = float; };

/// Blocks of `threads` covering `n` elements with a grid-stride loop (capped).
inline unsigned blocksFor(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1)
    b = 1;
  if (b > 65535LL * 32)
    b = 65535LL * 32;
  return static_cast<unsigned>(b);
}

/// Calls f(T{}) with T the C++ element type of `dtype`; returns false for an
/// unknown dtype. Bool is stored as uint8_t (ONNX/NumPy: one byte, 0 or 1).
template <class F> bool dispatchAll(int32_t dtype, F &&f) {
  switch (dtype) {
  case DT_F32: f(float{}); return true;
  case DT_F16: f(__half{}); return true;
  case DT_BF16: f(__nv_bfloat16{}); return true;
  case DT_F64: f(double{}); return true;
  case DT_I64: f(int64_t{}); return true;
  case DT_I32: f(int32_t{}); return true;
  case DT_I8: f(int8_t{}); return true;
  case DT_U8:
  case DT_BOOL: f(uint8_t{}); return true;
  default: return false;
  }
}
/// The same for the floating types only.
template <class F> bool dispatchFloat(int32_t dtype, F &&f) {
  switch (dtype) {
  case DT_F32: f(float{}); return true;
  case DT_F16: f(__half{}); return true;
  case DT_BF16: f(__nv_bfloat16{}); return true;
  case DT_F64: f(double{}); return true;
  default: return false;
  }
}
/// By element size only (data movement: copies, gathers, transposes).
template <class F> bool dispatchBySize(size_t elemSize, F &&f) {
  switch (elemSize) {
  case 1: f(uint8_t{}); return true;
  case 2: f(uint16_t{}); return true;
  case 4: f(uint32_t{}); return true;
  case 8: f(uint64_t{}); return true;
  default: return false;
  }
}

} // namespace qn::rt::cuda
