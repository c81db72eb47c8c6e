//===- CudaElementwise.cu - Elementwise CUDA kernels -----------------------===//
//
// One N-ary kernel template (ewKernel) runs every elementwise op: unary ops,
// Cast, binary ops with NumPy broadcasting, Where, and the pairwise steps of
// the variadic Max/Min. The host side (CudaElementwise.cpp) coalesces the
// broadcast into at most kMaxDims dims with per-operand element strides (0 on
// broadcast axes); the launcher then picks one of four index modes:
//   Contig  every operand is the output's shape: offset = i, no index math;
//   Rank1   one dim left: offset = i * stride (a scalar operand: stride 0);
//   Rank2   two dims ("tensor op row vector / column vector"): one divmod;
//   General up to kMaxDims dims.
// Index math is done in 32 bits when the element count allows (a uniform
// branch inside the kernel, not another instantiation).
//
// The functors are __device__ structs that see compute-type values: float for
// float16 / bfloat16 (rounded back on store), the element type otherwise.
// Their semantics follow the CPU kernels (runtime/lib/cpu/CpuElementwise.cpp)
// line by line.
//
//===----------------------------------------------------------------------===//
#include "CudaElementwise.h"
#include "CudaIndex.cuh"

#include "../FastMath.h"

#include <cstdint>
#include <limits>
#include <type_traits>

namespace qn::rt::cuda {
namespace {

static_assert(kEwMaxDims == kMaxDims, "CudaElementwise.h and CudaIndex.cuh disagree");

constexpr int kThreads = 256;

//===----------------------------------------------------------------------===//
// Storage <-> compute types
//===----------------------------------------------------------------------===//

/// Bool as a distinct element type for Cast (dispatchAll folds it into uint8).
struct Bool8 {
  uint8_t v;
};

template <class T>
constexpr bool kIsHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

template <class S> using Comp = typename Acc<S>::type;

template <class S> __device__ __forceinline__ Comp<S> up(S v) {
  if constexpr (kIsHalf<S>)
    return toF(v);
  else
    return v;
}
template <class S, class C> __device__ __forceinline__ S down(C v) {
  if constexpr (kIsHalf<S>)
    return fromF<S>(static_cast<float>(v));
  else
    return static_cast<S>(v);
}
template <class S> __device__ __forceinline__ S ld(const void *p, int64_t off) {
  return static_cast<const S *>(p)[off];
}

template <class T> using Unsigned = std::make_unsigned_t<T>;

// Math functions by compute type (float or double).
__device__ __forceinline__ float mExp(float x) { return expf(x); }
__device__ __forceinline__ double mExp(double x) { return exp(x); }
__device__ __forceinline__ float mLog(float x) { return logf(x); }
__device__ __forceinline__ double mLog(double x) { return log(x); }
__device__ __forceinline__ float mSqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double mSqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float mTanh(float x) { return tanhf(x); }
__device__ __forceinline__ double mTanh(double x) { return tanh(x); }
__device__ __forceinline__ float mSin(float x) { return sinf(x); }
__device__ __forceinline__ double mSin(double x) { return sin(x); }
__device__ __forceinline__ float mCos(float x) { return cosf(x); }
__device__ __forceinline__ double mCos(double x) { return cos(x); }
__device__ __forceinline__ float mPow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double mPow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float mFabs(float x) { return fabsf(x); }
__device__ __forceinline__ double mFabs(double x) { return fabs(x); }
__device__ __forceinline__ float quietNaN(float) { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double quietNaN(double) {
  return __longlong_as_double(0x7ff8000000000000LL);
}

/// float32 erf: the CPU kernel's approximation (FastMath.h), which keeps GPU
/// and CPU results together; float64 uses erf() as the CPU uses std::erf.
__device__ __forceinline__ float erfOf(float x) { return fastErf(x); }
__device__ __forceinline__ double erfOf(double x) { return erf(x); }

//===----------------------------------------------------------------------===//
// Functors. Integer arithmetic wraps (two's complement).
//===----------------------------------------------------------------------===//

struct AddF {
  template <class T> __device__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(static_cast<Unsigned<T>>(a) + static_cast<Unsigned<T>>(b));
    else
      return a + b;
  }
};
struct SubF {
  template <class T> __device__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(static_cast<Unsigned<T>>(a) - static_cast<Unsigned<T>>(b));
    else
      return a - b;
  }
};
struct MulF {
  template <class T> __device__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(static_cast<Unsigned<T>>(a) * static_cast<Unsigned<T>>(b));
    else
      return a * b;
  }
};
struct DivF {
  FaultSite fault;
  template <class T> __device__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      // The CPU kernel rejects a zero divisor beforehand; the GPU cannot look
      // at the divisor without synchronising, so x / 0 is 0 here and the
      // fault is reported (CudaFault.h).
      if (b == 0) {
        reportFault(fault, kFaultDivByZero);
        return T(0);
      }
      if (b == -1) // MIN / -1 wraps
        return static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(a));
      return a / b;
    } else {
      return a / b;
    }
  }
};
struct PowF {
  // The CPU kernel multiplies for a scalar exponent of 2 or 3; pow() of
  // those is the same value up to rounding, so the GPU multiplies for any
  // element equal to 2 or 3.
  template <class T> __device__ T operator()(T a, T b) const {
    if (b == T(2))
      return a * a;
    if (b == T(3))
      return a * a * a;
    return mPow(a, b);
  }
};
struct EqualF {
  template <class T> __device__ bool operator()(T a, T b) const { return a == b; }
};
struct LessF {
  template <class T> __device__ bool operator()(T a, T b) const { return a < b; }
};
struct GreaterF {
  template <class T> __device__ bool operator()(T a, T b) const { return a > b; }
};
struct GreaterOrEqualF {
  template <class T> __device__ bool operator()(T a, T b) const { return a >= b; }
};
struct LessOrEqualF {
  template <class T> __device__ bool operator()(T a, T b) const { return a <= b; }
};
struct AndF {
  template <class T> __device__ bool operator()(T a, T b) const { return a && b; }
};
struct OrF {
  template <class T> __device__ bool operator()(T a, T b) const { return a || b; }
};
/// Max/Min of the accumulated value `a` and the next input `b`, as the CPU's
/// pick(): NaN if either is NaN; ties keep `a`.
struct MaxF {
  template <class T> __device__ T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>)
      if (isnan(a) || isnan(b))
        return quietNaN(a);
    return b > a ? b : a;
  }
};
struct MinF {
  template <class T> __device__ T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>)
      if (isnan(a) || isnan(b))
        return quietNaN(a);
    return b < a ? b : a;
  }
};

struct ReluF {
  template <class T> __device__ T operator()(T x) const { return x < T(0) ? T(0) : x; } // NaN stays
};
struct NegF {
  template <class T> __device__ T operator()(T x) const {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(x));
    else
      return -x;
  }
};
struct AbsF {
  template <class T> __device__ T operator()(T x) const {
    if constexpr (std::is_integral_v<T>)
      return x < 0 ? NegF()(x) : x;
    else
      return mFabs(x);
  }
};
struct TanhF {
  template <class T> __device__ T operator()(T x) const { return mTanh(x); }
};
struct SigmoidF {
  template <class T> __device__ T operator()(T x) const {
    if (x >= T(0))
      return T(1) / (T(1) + mExp(-x));
    T e = mExp(x);
    return e / (T(1) + e);
  }
};
struct ErfF {
  template <class T> __device__ T operator()(T x) const { return erfOf(x); }
};
struct ExpF {
  template <class T> __device__ T operator()(T x) const { return mExp(x); }
};
struct LogF {
  template <class T> __device__ T operator()(T x) const { return mLog(x); }
};
struct SqrtF {
  template <class T> __device__ T operator()(T x) const { return mSqrt(x); }
};
struct ReciprocalF {
  template <class T> __device__ T operator()(T x) const { return T(1) / x; }
};
struct SinF {
  template <class T> __device__ T operator()(T x) const { return mSin(x); }
};
struct CosF {
  template <class T> __device__ T operator()(T x) const { return mCos(x); }
};
struct GeluF {
  template <class T> __device__ T operator()(T x) const {
    return T(0.5) * x * (T(1) + erfOf(x * T(0.70710678118654752440)));
  }
};
struct GeluTanhF {
  template <class T> __device__ T operator()(T x) const {
    const T k = T(0.79788456080286535588); // sqrt(2/pi)
    return T(0.5) * x * (T(1) + mTanh(k * (x + T(0.044715) * x * x * x)));
  }
};
struct NotF {
  template <class T> __device__ bool operator()(T x) const { return !x; }
};

//===----------------------------------------------------------------------===//
// Cast (CpuElementwise.cpp castElem): NaN -> 0 and saturation for float ->
// integer, integer narrowing wraps, float64 -> float16/bfloat16 through
// float32, bool targets are "!= 0", bool sources are 0/1.
//===----------------------------------------------------------------------===//

template <class T> struct IntLim;
template <> struct IntLim<int8_t> {
  static constexpr int8_t lo = -128, hi = 127;
};
template <> struct IntLim<uint8_t> {
  static constexpr uint8_t hi = 255;
};
template <> struct IntLim<int32_t> {
  static constexpr int32_t lo = INT32_MIN, hi = INT32_MAX;
};
template <> struct IntLim<int64_t> {
  static constexpr int64_t lo = INT64_MIN, hi = INT64_MAX;
};

template <class To, class From> __device__ __forceinline__ To castElem(From v) {
  if constexpr (kIsHalf<From>) {
    return castElem<To>(toF(v));
  } else if constexpr (std::is_same_v<From, Bool8>) {
    return castElem<To>(static_cast<int32_t>(v.v != 0));
  } else if constexpr (kIsHalf<To>) {
    return fromF<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, Bool8>) {
    return Bool8{static_cast<uint8_t>(v != From(0))};
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    if (isnan(v))
      return To(0);
    // The bounds are exact powers of two in any float type.
    const double d = static_cast<double>(v);
    if constexpr (std::is_signed_v<To>) {
      const double lo = static_cast<double>(IntLim<To>::lo);
      if (d <= lo)
        return IntLim<To>::lo;
      if (d >= -lo)
        return IntLim<To>::hi;
    } else {
      if (d <= 0.0)
        return To(0);
      if (d >= static_cast<double>(IntLim<To>::hi) + 1.0)
        return IntLim<To>::hi;
    }
    return static_cast<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

//===----------------------------------------------------------------------===//
// Adapters: operand loads and stores around a functor
//===----------------------------------------------------------------------===//

template <int N> struct Ins {
  const void *p[N];
};
template <int N> struct Lay {
  Dims dims;
  Strides st[N];
};

/// y = f(x): storage T in and out.
template <class F, class T> struct Unary {
  using Out = T;
  static constexpr int kN = 1;
  F f;
  __device__ __forceinline__ Out operator()(const Ins<1> &in, const int64_t *off) const {
    return down<T>(f(up(ld<T>(in.p[0], off[0]))));
  }
};
/// y = f(a, b): storage A and B in, R out.
template <class F, class A, class B, class R> struct Binary {
  using Out = R;
  static constexpr int kN = 2;
  F f;
  __device__ __forceinline__ Out operator()(const Ins<2> &in, const int64_t *off) const {
    return down<R>(f(up(ld<A>(in.p[0], off[0])), up(ld<B>(in.p[1], off[1]))));
  }
};
template <class To, class From> struct Cast {
  using Out = To;
  static constexpr int kN = 1;
  __device__ __forceinline__ Out operator()(const Ins<1> &in, const int64_t *off) const {
    return castElem<To>(ld<From>(in.p[0], off[0]));
  }
};
template <class E> struct Select {
  using Out = E;
  static constexpr int kN = 3;
  __device__ __forceinline__ Out operator()(const Ins<3> &in, const int64_t *off) const {
    return ld<uint8_t>(in.p[0], off[0]) ? ld<E>(in.p[1], off[1]) : ld<E>(in.p[2], off[2]);
  }
};

//===----------------------------------------------------------------------===//
// The kernel
//===----------------------------------------------------------------------===//

enum Mode { kContig = 0, kRank1 = 1, kRank2 = 2, kGeneral = 3 };

template <int M, class F>
__global__ void __launch_bounds__(kThreads)
    ewKernel(F f, Lay<F::kN> L, Ins<F::kN> in, typename F::Out *__restrict__ out, int64_t n) {
  constexpr int N = F::kN;
  const bool small = n <= static_cast<int64_t>(UINT32_MAX);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += step) {
    int64_t off[N];
    if constexpr (M == kContig) {
#pragma unroll
      for (int k = 0; k < N; ++k)
        off[k] = i;
    } else if constexpr (M == kRank1) {
#pragma unroll
      for (int k = 0; k < N; ++k)
        off[k] = i * L.st[k].s[0];
    } else if constexpr (M == kRank2) {
      int64_t q, r;
      if (small) {
        uint32_t ii = static_cast<uint32_t>(i), d1 = static_cast<uint32_t>(L.dims.d[1]);
        uint32_t qq = ii / d1;
        q = qq;
        r = ii - qq * d1;
      } else {
        q = i / L.dims.d[1];
        r = i - q * L.dims.d[1];
      }
#pragma unroll
      for (int k = 0; k < N; ++k)
        off[k] = q * L.st[k].s[0] + r * L.st[k].s[1];
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k)
        off[k] = 0;
      if (small) {
        uint32_t rem = static_cast<uint32_t>(i);
#pragma unroll
        for (int d = kMaxDims - 1; d >= 0; --d) {
          if (d < L.dims.rank) {
            uint32_t dd = static_cast<uint32_t>(L.dims.d[d]);
            uint32_t q = rem / dd;
            int64_t idx = rem - q * dd;
#pragma unroll
            for (int k = 0; k < N; ++k)
              off[k] += idx * L.st[k].s[d];
            rem = q;
          }
        }
      } else {
        int64_t rem = i;
#pragma unroll
        for (int d = kMaxDims - 1; d >= 0; --d) {
          if (d < L.dims.rank) {
            int64_t q = rem / L.dims.d[d];
            int64_t idx = rem - q * L.dims.d[d];
#pragma unroll
            for (int k = 0; k < N; ++k)
              off[k] += idx * L.st[k].s[d];
            rem = q;
          }
        }
      }
    }
    out[i] = f(in, off);
  }
}

/// Launches f over n output elements laid out by `layout` (any of the four
/// modes).
template <class F>
cudaError_t launchNary(F f, const EwLayout &layout, const void *const *ptrs, void *out,
                       int64_t n, cudaStream_t stream) {
  constexpr int N = F::kN;
  if (n <= 0)
    return cudaSuccess;
  if (layout.rank < 0 || layout.rank > kMaxDims)
    return cudaErrorInvalidValue;
  Lay<N> L;
  Ins<N> in;
  L.dims.rank = layout.rank;
  for (int d = 0; d < kMaxDims; ++d)
    L.dims.d[d] = layout.dims[d];
  for (int k = 0; k < N; ++k) {
    in.p[k] = ptrs[k];
    for (int d = 0; d < kMaxDims; ++d)
      L.st[k].s[d] = layout.strides[k][d];
  }
  bool contig = layout.rank == 0;
  if (layout.rank == 1) {
    contig = true;
    for (int k = 0; k < N; ++k)
      contig = contig && layout.strides[k][0] == 1;
  }
  auto *o = static_cast<typename F::Out *>(out);
  const unsigned blocks = blocksFor(n, kThreads);
  if (contig)
    ewKernel<kContig, F><<<blocks, kThreads, 0, stream>>>(f, L, in, o, n);
  else if (layout.rank == 1)
    ewKernel<kRank1, F><<<blocks, kThreads, 0, stream>>>(f, L, in, o, n);
  else if (layout.rank == 2)
    ewKernel<kRank2, F><<<blocks, kThreads, 0, stream>>>(f, L, in, o, n);
  else
    ewKernel<kGeneral, F><<<blocks, kThreads, 0, stream>>>(f, L, in, o, n);
  return cudaGetLastError();
}

/// The same for operands that all have the output's shape (unary ops, Cast):
/// only the contiguous mode is instantiated.
template <class F>
cudaError_t launchContig(F f, const void *const *ptrs, void *out, int64_t n,
                         cudaStream_t stream) {
  constexpr int N = F::kN;
  if (n <= 0)
    return cudaSuccess;
  Lay<N> L;
  Ins<N> in;
  for (int k = 0; k < N; ++k)
    in.p[k] = ptrs[k];
  ewKernel<kContig, F><<<blocksFor(n, kThreads), kThreads, 0, stream>>>(
      f, L, in, static_cast<typename F::Out *>(out), n);
  return cudaGetLastError();
}

/// An Activations.h op (the shared definition of its math).
template <Act A> struct ActF {
  ActParams p;
  template <class T> __device__ T operator()(T x) const { return applyAct<A>(x, p); }
};
template <class C> struct ClipF {
  C lo, hi;
  __device__ C operator()(C x) const {
    C v = x < lo ? lo : x;
    return v > hi ? hi : v;
  }
};
/// IsNaN: storage T in, bool (uint8) out.
template <class T> struct IsNaNOp {
  using Out = uint8_t;
  static constexpr int kN = 1;
  __device__ __forceinline__ Out operator()(const Ins<1> &in, const int64_t *off) const {
    auto v = up(ld<T>(in.p[0], off[0]));
    return v != v;
  }
};

//===----------------------------------------------------------------------===//
// Dtype dispatch
//===----------------------------------------------------------------------===//

/// Arithmetic types: the float types, int32, int64.
template <class Fn> bool dispatchArith(int32_t dtype, Fn &&fn) {
  switch (dtype) {
  case DT_F32: fn(float{}); return true;
  case DT_F16: fn(__half{}); return true;
  case DT_BF16: fn(__nv_bfloat16{}); return true;
  case DT_F64: fn(double{}); return true;
  case DT_I32: fn(int32_t{}); return true;
  case DT_I64: fn(int64_t{}); return true;
  default: return false;
  }
}
/// Float types, int32, int64, int8 (Relu, Neg, Abs).
template <class Fn> bool dispatchSigned(int32_t dtype, Fn &&fn) {
  if (dtype == DT_I8) {
    fn(int8_t{});
    return true;
  }
  return dispatchArith(dtype, fn);
}
/// Every type, bool as Bool8 (Cast).
template <class Fn> bool dispatchCast(int32_t dtype, Fn &&fn) {
  if (dtype == DT_BOOL) {
    fn(Bool8{});
    return true;
  }
  if (dtype == DT_U8) {
    fn(uint8_t{});
    return true;
  }
  return dispatchAll(dtype, fn);
}

template <class F> cudaError_t unaryFloat(int32_t dtype, const void *x, void *y, int64_t n,
                                          cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[1] = {x};
  dispatchFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    e = launchContig(Unary<F, T>{F{}}, ptrs, y, n, s);
  });
  return e;
}
template <class F> cudaError_t unarySigned(int32_t dtype, const void *x, void *y, int64_t n,
                                           cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[1] = {x};
  dispatchSigned(dtype, [&](auto tag) {
    using T = decltype(tag);
    e = launchContig(Unary<F, T>{F{}}, ptrs, y, n, s);
  });
  return e;
}

/// Same-type inputs, output R (void: the input type).
template <class F, class R, class Dispatch>
cudaError_t binarySame(Dispatch dispatch, int32_t dtype, const EwLayout &l, const void *a,
                       const void *b, void *y, int64_t n, cudaStream_t s, F f = F{}) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[2] = {a, b};
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Out = std::conditional_t<std::is_void_v<R>, T, R>;
    e = launchNary(Binary<F, T, T, Out>{f}, l, ptrs, y, n, s);
  });
  return e;
}

struct ArithDispatch {
  template <class Fn> bool operator()(int32_t d, Fn &&fn) const { return dispatchArith(d, fn); }
};
struct AllDispatch {
  template <class Fn> bool operator()(int32_t d, Fn &&fn) const { return dispatchAll(d, fn); }
};
struct BoolDispatch {
  template <class Fn> bool operator()(int32_t d, Fn &&fn) const {
    if (d != DT_BOOL)
      return false;
    fn(uint8_t{});
    return true;
  }
};

} // namespace

cudaError_t launchEwAct(Act op, ActParams p, int32_t dtype, const void *x, void *y, int64_t n,
                        cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[1] = {x};
  visitAct(op, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    auto run = [&](auto t) {
      using T = decltype(t);
      e = launchContig(Unary<ActF<A>, T>{ActF<A>{p}}, ptrs, y, n, s);
    };
    if constexpr (A == Act::Sign)
      dispatchSigned(dtype, run);
    else
      dispatchFloat(dtype, run);
  });
  return e;
}

cudaError_t launchEwIsNaN(int32_t dtype, const void *x, void *y, int64_t n, cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[1] = {x};
  dispatchFloat(dtype, [&](auto t) {
    using T = decltype(t);
    e = launchContig(IsNaNOp<T>{}, ptrs, y, n, s);
  });
  return e;
}

cudaError_t launchEwClip(int32_t dtype, bool hasLo, double lo, bool hasHi, double hi,
                         const void *x, void *y, int64_t n, cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[1] = {x};
  dispatchSigned(dtype, [&](auto t) {
    using T = decltype(t);
    using C = Comp<T>;
    using L = std::numeric_limits<C>;
    C l = hasLo ? static_cast<C>(lo) : L::has_infinity ? -L::infinity() : L::lowest();
    C h = hasHi ? static_cast<C>(hi) : L::has_infinity ? L::infinity() : L::max();
    e = launchContig(Unary<ClipF<C>, T>{ClipF<C>{l, h}}, ptrs, y, n, s);
  });
  return e;
}

cudaError_t launchEwUnary(EwUnary op, int32_t dtype, const void *x, void *y, int64_t n,
                          cudaStream_t s) {
  switch (op) {
  case EwUnary::Relu: return unarySigned<ReluF>(dtype, x, y, n, s);
  case EwUnary::Neg: return unarySigned<NegF>(dtype, x, y, n, s);
  case EwUnary::Abs: return unarySigned<AbsF>(dtype, x, y, n, s);
  case EwUnary::Tanh: return unaryFloat<TanhF>(dtype, x, y, n, s);
  case EwUnary::Sigmoid: return unaryFloat<SigmoidF>(dtype, x, y, n, s);
  case EwUnary::Erf: return unaryFloat<ErfF>(dtype, x, y, n, s);
  case EwUnary::Exp: return unaryFloat<ExpF>(dtype, x, y, n, s);
  case EwUnary::Log: return unaryFloat<LogF>(dtype, x, y, n, s);
  case EwUnary::Sqrt: return unaryFloat<SqrtF>(dtype, x, y, n, s);
  case EwUnary::Reciprocal: return unaryFloat<ReciprocalF>(dtype, x, y, n, s);
  case EwUnary::Sin: return unaryFloat<SinF>(dtype, x, y, n, s);
  case EwUnary::Cos: return unaryFloat<CosF>(dtype, x, y, n, s);
  case EwUnary::Gelu: return unaryFloat<GeluF>(dtype, x, y, n, s);
  case EwUnary::GeluTanh: return unaryFloat<GeluTanhF>(dtype, x, y, n, s);
  case EwUnary::Not: {
    if (dtype != DT_BOOL)
      return cudaErrorInvalidValue;
    const void *ptrs[1] = {x};
    return launchContig(Unary<NotF, uint8_t>{NotF{}}, ptrs, y, n, s);
  }
  }
  return cudaErrorInvalidValue;
}

cudaError_t launchEwBinary(EwBinary op, int32_t dtype, const EwLayout &l, const void *a,
                           const void *b, void *y, int64_t n, cudaStream_t s,
                           FaultSite fault) {
  switch (op) {
  case EwBinary::Add: return binarySame<AddF, void>(ArithDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Sub: return binarySame<SubF, void>(ArithDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Mul: return binarySame<MulF, void>(ArithDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Div:
    return binarySame<DivF, void>(ArithDispatch{}, dtype, l, a, b, y, n, s, DivF{fault});
  case EwBinary::Pow: {
    // The exponent was converted to the compute type (float32, or float64
    // for a float64 base) by the host side, as the CPU kernel does.
    cudaError_t e = cudaErrorInvalidValue;
    const void *ptrs[2] = {a, b};
    dispatchFloat(dtype, [&](auto tag) {
      using T = decltype(tag);
      using E = std::conditional_t<std::is_same_v<T, double>, double, float>;
      e = launchNary(Binary<PowF, T, E, T>{PowF{}}, l, ptrs, y, n, s);
    });
    return e;
  }
  case EwBinary::Equal:
    return binarySame<EqualF, uint8_t>(AllDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Less:
    return binarySame<LessF, uint8_t>(AllDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Greater:
    return binarySame<GreaterF, uint8_t>(AllDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::GreaterOrEqual:
    return binarySame<GreaterOrEqualF, uint8_t>(AllDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::LessOrEqual:
    return binarySame<LessOrEqualF, uint8_t>(AllDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::And:
    return binarySame<AndF, uint8_t>(BoolDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Or:
    return binarySame<OrF, uint8_t>(BoolDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Max: return binarySame<MaxF, void>(AllDispatch{}, dtype, l, a, b, y, n, s);
  case EwBinary::Min: return binarySame<MinF, void>(AllDispatch{}, dtype, l, a, b, y, n, s);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launchEwWhere(size_t elemSize, const EwLayout &l, const void *c, const void *a,
                          const void *b, void *y, int64_t n, cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[3] = {c, a, b};
  dispatchBySize(elemSize, [&](auto tag) {
    using E = decltype(tag);
    e = launchNary(Select<E>{}, l, ptrs, y, n, s);
  });
  return e;
}

cudaError_t launchEwCast(int32_t from, int32_t to, const void *x, void *y, int64_t n,
                         cudaStream_t s) {
  cudaError_t e = cudaErrorInvalidValue;
  const void *ptrs[1] = {x};
  dispatchCast(from, [&](auto fromTag) {
    using From = decltype(fromTag);
    dispatchCast(to, [&](auto toTag) {
      using To = decltype(toTag);
      e = launchContig(Cast<To, From>{}, ptrs, y, n, s);
    });
  });
  return e;
}

} // namespace qn::rt::cuda
