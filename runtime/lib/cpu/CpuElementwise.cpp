//===- CpuElementwise.cpp - Elementwise CPU kernels ------------------------===//
//
// The ops of cuda/CudaElementwise.cpp. Binary ops with NumPy broadcasting
// (fast paths: same shape, scalar operand, an operand broadcast over leading
// axes ("bias over the last axis"), an operand broadcast over trailing axes),
// unary ops, Gelu, Cast. Every op is a functor template instantiated per
// element type: no per-element indirect calls. Then Where, Sin, Cos, Not, And,
// Or, GreaterOrEqual, LessOrEqual, Max, Min over materialised operands.
// float16/bfloat16 are computed in float32 and rounded back.
//
//===----------------------------------------------------------------------===//
#include "../FastMath.h"
#include "../StrCat.h"
#include "CpuCommon.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "onnx/onnx_pb.h"
#include "qn/runtime/TensorProto.h"

// Hot float32 loops are compiled for AVX-512, AVX2 and the baseline and picked
// at load time (GCC/Clang function multi-versioning), without changing the
// project's compile flags. The loop templates are force-inlined into each
// clone so that every clone vectorises for its target.
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__SANITIZE_ADDRESS__)
#define QN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef QN_CLONES
#define QN_CLONES
#endif
#define QN_INLINE __attribute__((always_inline)) inline

namespace qn::rt::cpu {
namespace {

//===----------------------------------------------------------------------===//
// Broadcasting plan
//===----------------------------------------------------------------------===//

struct BinaryPlan {
  enum Kind { Same, ScalarA, ScalarB, RowsA, RowsB, ColsA, ColsB, General } kind = General;
  std::vector<int64_t> outShape;
  int64_t numel = 0;
  // RowsX: X has `inner` elements, repeated for each of `outer` rows.
  // ColsX: X has `outer` elements, each repeated `inner` times.
  int64_t outer = 0, inner = 0;
  // General: coalesced dims and element strides of A and B.
  llvm::SmallVector<int64_t, 8> dims, sa, sb;
};

/// Shape of `s` left-padded with 1s to rank r.
llvm::SmallVector<int64_t, 8> padShape(llvm::ArrayRef<int64_t> s, size_t r) {
  llvm::SmallVector<int64_t, 8> p(r - s.size(), 1);
  p.append(s.begin(), s.end());
  return p;
}

/// If `x` (padded) equals [1,..,1, out[j:]], returns prod(out[j:]) (the
/// rows case); `leading` chooses that pattern, otherwise [out[:j], 1,..,1]
/// (the columns case) and returns prod(out[:j]). -1 when neither.
int64_t matchPartial(llvm::ArrayRef<int64_t> xp, llvm::ArrayRef<int64_t> out, bool leading) {
  size_t r = out.size();
  if (leading) {
    size_t j = 0;
    while (j < r && xp[j] == 1)
      ++j;
    int64_t n = 1;
    for (size_t k = j; k < r; ++k) {
      if (xp[k] != out[k])
        return -1;
      n *= out[k];
    }
    return n;
  }
  size_t j = r;
  while (j > 0 && xp[j - 1] == 1)
    --j;
  int64_t n = 1;
  for (size_t k = 0; k < j; ++k) {
    if (xp[k] != out[k])
      return -1;
    n *= out[k];
  }
  return n;
}

/// The fast path (or the general layout) for a and b, whose broadcast shape
/// and size planBinaryOp put in p.outShape and p.numel.
void layoutBinary(const Tensor &a, const Tensor &b, BinaryPlan &p) {
  const int64_t n = p.numel;
  int64_t na = a.numel(), nb = b.numel();
  if (n == 0)
    return;
  if (a.shape() == b.shape()) {
    p.kind = BinaryPlan::Same;
    return;
  }
  if (na == 1 && nb == n) {
    p.kind = BinaryPlan::ScalarA;
    return;
  }
  if (nb == 1 && na == n) {
    p.kind = BinaryPlan::ScalarB;
    return;
  }
  size_t r = p.outShape.size();
  auto ap = padShape(a.shape(), r), bp = padShape(b.shape(), r);
  if (na == n) {
    int64_t inner = matchPartial(bp, p.outShape, true);
    if (inner > 0 && inner == nb) {
      p.kind = BinaryPlan::RowsB;
      p.inner = inner;
      p.outer = n / inner;
      return;
    }
    int64_t outer = matchPartial(bp, p.outShape, false);
    if (outer > 0 && outer == nb) {
      p.kind = BinaryPlan::ColsB;
      p.outer = outer;
      p.inner = n / outer;
      return;
    }
  }
  if (nb == n) {
    int64_t inner = matchPartial(ap, p.outShape, true);
    if (inner > 0 && inner == na) {
      p.kind = BinaryPlan::RowsA;
      p.inner = inner;
      p.outer = n / inner;
      return;
    }
    int64_t outer = matchPartial(ap, p.outShape, false);
    if (outer > 0 && outer == na) {
      p.kind = BinaryPlan::ColsA;
      p.outer = outer;
      p.inner = n / outer;
      return;
    }
  }
  // General: element strides (0 on broadcast dims), size-1 dims dropped,
  // mergeable neighbours merged.
  p.kind = BinaryPlan::General;
  auto csa = contiguousStrides(ap), csb = contiguousStrides(bp);
  for (size_t k = 0; k < r; ++k) {
    int64_t d = p.outShape[k];
    if (d == 1)
      continue;
    int64_t sa = ap[k] == 1 ? 0 : csa[k];
    int64_t sb = bp[k] == 1 ? 0 : csb[k];
    if (!p.dims.empty() && p.sa.back() == sa * d && p.sb.back() == sb * d) {
      p.dims.back() *= d;
      p.sa.back() = sa;
      p.sb.back() = sb;
      continue;
    }
    p.dims.push_back(d);
    p.sa.push_back(sa);
    p.sb.push_back(sb);
  }
}

template <class Op, class T, class R>
QN_INLINE void loopVV(const T *__restrict a, const T *__restrict b, R *__restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    o[i] = Op::apply(a[i], b[i]);
}
template <class Op, class T, class R>
QN_INLINE void loopSV(T a, const T *__restrict b, R *__restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    o[i] = Op::apply(a, b[i]);
}
template <class Op, class T, class R>
QN_INLINE void loopVS(const T *__restrict a, T b, R *__restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    o[i] = Op::apply(a[i], b);
}

template <class Op, class T, class R>
QN_INLINE void runBinary(const BinaryPlan &p, const T *a, const T *b, R *o) {
  switch (p.kind) {
  case BinaryPlan::Same:
    return loopVV<Op>(a, b, o, p.numel);
  case BinaryPlan::ScalarA:
    return loopSV<Op>(a[0], b, o, p.numel);
  case BinaryPlan::ScalarB:
    return loopVS<Op>(a, b[0], o, p.numel);
  case BinaryPlan::RowsB:
    for (int64_t i = 0; i < p.outer; ++i)
      loopVV<Op>(a + i * p.inner, b, o + i * p.inner, p.inner);
    return;
  case BinaryPlan::RowsA:
    for (int64_t i = 0; i < p.outer; ++i)
      loopVV<Op>(a, b + i * p.inner, o + i * p.inner, p.inner);
    return;
  case BinaryPlan::ColsB:
    for (int64_t i = 0; i < p.outer; ++i)
      loopVS<Op>(a + i * p.inner, b[i], o + i * p.inner, p.inner);
    return;
  case BinaryPlan::ColsA:
    for (int64_t i = 0; i < p.outer; ++i)
      loopSV<Op>(a[i], b + i * p.inner, o + i * p.inner, p.inner);
    return;
  case BinaryPlan::General:
    break;
  }
  if (p.numel == 0)
    return;
  size_t r = p.dims.size();
  if (r == 0) { // everything was size 1
    o[0] = Op::apply(a[0], b[0]);
    return;
  }
  int64_t inner = p.dims[r - 1], ia = p.sa[r - 1], ib = p.sb[r - 1];
  llvm::SmallVector<int64_t, 8> idx(r, 0);
  int64_t offA = 0, offB = 0;
  while (true) {
    const T *pa = a + offA, *pb = b + offB;
    if (ia == 1 && ib == 1)
      loopVV<Op>(pa, pb, o, inner);
    else if (ia == 1 && ib == 0)
      loopVS<Op>(pa, *pb, o, inner);
    else if (ia == 0 && ib == 1)
      loopSV<Op>(*pa, pb, o, inner);
    else
      for (int64_t j = 0; j < inner; ++j)
        o[j] = Op::apply(pa[j * ia], pb[j * ib]);
    o += inner;
    int64_t k = static_cast<int64_t>(r) - 2;
    for (; k >= 0; --k) {
      offA += p.sa[k];
      offB += p.sb[k];
      if (++idx[k] < p.dims[k])
        break;
      offA -= p.sa[k] * p.dims[k];
      offB -= p.sb[k] * p.dims[k];
      idx[k] = 0;
    }
    if (k < 0)
      return;
  }
}

//===----------------------------------------------------------------------===//
// Binary functors. Integer arithmetic wraps (two's complement) instead of
// being undefined on overflow.
//===----------------------------------------------------------------------===//

template <class T> using Unsigned = std::make_unsigned_t<T>;

struct AddOp {
  template <class T> static inline T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(static_cast<Unsigned<T>>(a) + static_cast<Unsigned<T>>(b));
    else
      return a + b;
  }
};
struct SubOp {
  template <class T> static inline T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(static_cast<Unsigned<T>>(a) - static_cast<Unsigned<T>>(b));
    else
      return a - b;
  }
};
struct MulOp {
  template <class T> static inline T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(static_cast<Unsigned<T>>(a) * static_cast<Unsigned<T>>(b));
    else
      return a * b;
  }
};
struct DivOp {
  template <class T> static inline T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      // b != 0 is checked beforehand; MIN / -1 wraps.
      if (b == -1)
        return static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(a));
      return a / b;
    } else {
      return a / b;
    }
  }
};
struct PowOp {
  template <class T> static inline T apply(T a, T b) { return std::pow(a, b); }
};
struct SquareOp { // Pow with exponent 2
  template <class T> static inline T apply(T a, T) { return a * a; }
};
struct CubeOp { // Pow with exponent 3
  template <class T> static inline T apply(T a, T) { return a * a * a; }
};
struct EqualOp {
  template <class T> static inline uint8_t apply(T a, T b) { return a == b; }
};
struct LessOp {
  template <class T> static inline uint8_t apply(T a, T b) { return a < b; }
};
struct GreaterOp {
  template <class T> static inline uint8_t apply(T a, T b) { return a > b; }
};

bool isCompare(BinaryOp k) {
  return k == BinaryOp::Equal || k == BinaryOp::Less || k == BinaryOp::Greater;
}

template <class T, class R>
void dispatchBinary(BinaryOp k, const BinaryPlan &p, const T *a, const T *b, R *o) {
  if constexpr (std::is_same_v<R, uint8_t>) { // comparisons (of bools only Equal: planBinaryOp)
    switch (k) {
    case BinaryOp::Equal:
      return runBinary<EqualOp>(p, a, b, o);
    case BinaryOp::Less:
      return runBinary<LessOp>(p, a, b, o);
    case BinaryOp::Greater:
      return runBinary<GreaterOp>(p, a, b, o);
    default:
      llvm_unreachable("arithmetic op with bool output");
    }
  } else {
    switch (k) {
    case BinaryOp::Add:
      return runBinary<AddOp>(p, a, b, o);
    case BinaryOp::Sub:
      return runBinary<SubOp>(p, a, b, o);
    case BinaryOp::Mul:
      return runBinary<MulOp>(p, a, b, o);
    case BinaryOp::Div:
      return runBinary<DivOp>(p, a, b, o);
    case BinaryOp::Pow:
      if constexpr (std::is_floating_point_v<T>)
        return runBinary<PowOp>(p, a, b, o);
      llvm_unreachable("integer Pow");
    default:
      llvm_unreachable("compare op with non-bool output");
    }
  }
}

// float32 binary loops, one multi-versioned function per op.
QN_CLONES void addF32(const BinaryPlan &p, const float *a, const float *b, float *o) {
  runBinary<AddOp>(p, a, b, o);
}
QN_CLONES void subF32(const BinaryPlan &p, const float *a, const float *b, float *o) {
  runBinary<SubOp>(p, a, b, o);
}
QN_CLONES void mulF32(const BinaryPlan &p, const float *a, const float *b, float *o) {
  runBinary<MulOp>(p, a, b, o);
}
QN_CLONES void divF32(const BinaryPlan &p, const float *a, const float *b, float *o) {
  runBinary<DivOp>(p, a, b, o);
}
QN_CLONES void squareF32(const BinaryPlan &p, const float *a, const float *b, float *o) {
  runBinary<SquareOp>(p, a, b, o);
}
QN_CLONES void cubeF32(const BinaryPlan &p, const float *a, const float *b, float *o) {
  runBinary<CubeOp>(p, a, b, o);
}

void binaryF32(BinaryOp k, const BinaryPlan &p, const float *a, const float *b, float *o) {
  switch (k) {
  case BinaryOp::Add:
    return addF32(p, a, b, o);
  case BinaryOp::Sub:
    return subF32(p, a, b, o);
  case BinaryOp::Mul:
    return mulF32(p, a, b, o);
  case BinaryOp::Div:
    return divF32(p, a, b, o);
  case BinaryOp::Pow:
    return runBinary<PowOp>(p, a, b, o); // libm: nothing to vectorise
  default:
    llvm_unreachable("not a float arithmetic op");
  }
}

/// Casts every element of a float/double/int32/int64 tensor to `to`
/// (float32 or float64): for Pow's exponent.
Tensor castExponent(const Tensor &t, DType to) {
  Tensor r = Tensor::empty(to, t.shape());
  int64_t n = t.numel();
  auto run = [&](auto *dst) {
    using D = std::remove_pointer_t<decltype(dst)>;
    switch (t.dtype()) {
    case DType::Float:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<D>(t.data<float>()[i]);
      break;
    case DType::Double:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<D>(t.data<double>()[i]);
      break;
    case DType::Int32:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<D>(t.data<int32_t>()[i]);
      break;
    case DType::Int64:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<D>(t.data<int64_t>()[i]);
      break;
    case DType::Float16:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<D>(halfToFloat(t.data<uint16_t>()[i]));
      break;
    case DType::BFloat16:
      for (int64_t i = 0; i < n; ++i)
        dst[i] = static_cast<D>(bf16ToFloat(t.data<uint16_t>()[i]));
      break;
    default:
      break;
    }
  };
  if (to == DType::Float)
    run(r.data<float>());
  else
    run(r.data<double>());
  return r;
}

template <class T> bool anyZero(const Tensor &t) {
  const T *p = t.data<T>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    if (p[i] == 0)
      return true;
  return false;
}

} // namespace

llvm::Error planBinaryOp(const KernelContext &ctx, BinaryOp kind, BinaryShape &s) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor *a = input(ctx, 0), *b = input(ctx, 1);
  DType dt = a->dtype();
  if (kind == BinaryOp::Pow) {
    // Pow(T, T1): the exponent may have another numeric type.
    if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
      return unsupportedDType(ctx, *a, "float32, float64, float16, bfloat16");
    DType eb = b->dtype();
    if (eb != DType::Float && eb != DType::Double && eb != DType::Int32 && eb != DType::Int64 &&
        !isHalfLike(eb))
      return kernelError(ctx, "unsupported exponent dtype: " + b->describe());
    s.expType = dt == DType::Double ? DType::Double : DType::Float;
  } else if (b->dtype() != dt) {
    return kernelError(ctx, "input dtypes differ: A " + a->describe() + ", B " + b->describe());
  }

  const bool cmp = isCompare(kind);
  bool ok;
  switch (dt) {
  case DType::Float:
  case DType::Double:
  case DType::Float16:
  case DType::BFloat16:
    ok = true;
    break;
  case DType::Int32:
  case DType::Int64:
    ok = kind != BinaryOp::Pow;
    break;
  case DType::Bool:
    ok = kind == BinaryOp::Equal;
    break;
  case DType::UInt8:
  case DType::Int8: // the comparisons (as GreaterOrEqual/LessOrEqual), no arithmetic
    ok = cmp;
    break;
  default:
    ok = false;
  }
  if (!ok)
    return unsupportedDType(ctx, *a,
                            kind == BinaryOp::Pow ? "float32, float64, float16, bfloat16"
                            : cmp ? "float32, float64, float16, bfloat16, int32, int64, int8, "
                                    "uint8 (Equal also bool)"
                                  : "float32, float64, float16, bfloat16, int32, int64");

  if (!broadcastShapes(a->shape(), b->shape(), s.outShape))
    return kernelError(ctx, "shapes do not broadcast: A " + a->describe() + ", B " + b->describe());
  if (!checkedNumel(s.outShape, 8, s.numel))
    return kernelError(ctx, "output shape overflows: " + shapeStr(s.outShape));
  return llvm::Error::success();
}

namespace {

llvm::Error binaryKernel(KernelContext &ctx, BinaryOp kind) {
  BinaryShape s;
  if (auto e = planBinaryOp(ctx, kind, s))
    return e;
  const Tensor *a = input(ctx, 0), *b = input(ctx, 1);
  DType dt = a->dtype();
  Tensor bConv;
  if (kind == BinaryOp::Pow && b->dtype() != s.expType) {
    bConv = castExponent(*b, s.expType);
    b = &bConv;
  }
  const bool cmp = isCompare(kind);

  BinaryPlan p;
  p.outShape = std::move(s.outShape);
  p.numel = s.numel;
  layoutBinary(*a, *b, p);
  if (kind == BinaryOp::Div && p.numel > 0 &&
      ((dt == DType::Int32 && anyZero<int32_t>(*b)) ||
       (dt == DType::Int64 && anyZero<int64_t>(*b))))
    return kernelError(ctx, "integer division by zero (divisor " + b->describe() + ")");

  DType outType = cmp ? DType::Bool : dt;
  Tensor y = Tensor::empty(outType, p.outShape);
  if (p.numel > 0) {
    Tensor af, bf, yf;
    const Tensor *aa = a, *bb = b;
    Tensor *yy = &y;
    if (isHalfLike(dt)) {
      af = toFloat32(*a);
      aa = &af;
      if (b->dtype() != DType::Float) {
        bf = toFloat32(*b);
        bb = &bf;
      }
      if (!cmp) {
        yf = Tensor::empty(DType::Float, p.outShape);
        yy = &yf;
      }
    }
    DType work = aa->dtype();
    bool handled = false;
    // Pow with a scalar exponent 2 or 3: multiplications.
    if (kind == BinaryOp::Pow && p.kind == BinaryPlan::ScalarB) {
      double e = work == DType::Float ? bb->data<float>()[0] : bb->data<double>()[0];
      if (e == 2.0 || e == 3.0) {
        handled = true;
        if (work == DType::Float) {
          if (e == 2.0)
            squareF32(p, aa->data<float>(), bb->data<float>(), yy->data<float>());
          else
            cubeF32(p, aa->data<float>(), bb->data<float>(), yy->data<float>());
        } else {
          if (e == 2.0)
            runBinary<SquareOp>(p, aa->data<double>(), bb->data<double>(), yy->data<double>());
          else
            runBinary<CubeOp>(p, aa->data<double>(), bb->data<double>(), yy->data<double>());
        }
      }
    }
    if (handled) {
    } else if (cmp) {
      uint8_t *o = yy->data<uint8_t>();
      switch (work) {
      case DType::Float:
        dispatchBinary(kind, p, aa->data<float>(), bb->data<float>(), o);
        break;
      case DType::Double:
        dispatchBinary(kind, p, aa->data<double>(), bb->data<double>(), o);
        break;
      case DType::Int32:
        dispatchBinary(kind, p, aa->data<int32_t>(), bb->data<int32_t>(), o);
        break;
      case DType::Int64:
        dispatchBinary(kind, p, aa->data<int64_t>(), bb->data<int64_t>(), o);
        break;
      case DType::Int8:
        dispatchBinary(kind, p, aa->data<int8_t>(), bb->data<int8_t>(), o);
        break;
      default: // bool, uint8
        dispatchBinary(kind, p, aa->data<uint8_t>(), bb->data<uint8_t>(), o);
        break;
      }
    } else {
      switch (work) {
      case DType::Float:
        binaryF32(kind, p, aa->data<float>(), bb->data<float>(), yy->data<float>());
        break;
      case DType::Double:
        dispatchBinary(kind, p, aa->data<double>(), bb->data<double>(), yy->data<double>());
        break;
      case DType::Int32:
        dispatchBinary(kind, p, aa->data<int32_t>(), bb->data<int32_t>(), yy->data<int32_t>());
        break;
      case DType::Int64:
        dispatchBinary(kind, p, aa->data<int64_t>(), bb->data<int64_t>(), yy->data<int64_t>());
        break;
      default:
        llvm_unreachable("checked above");
      }
    }
    if (yy != &y)
      y = fromFloat32(*yy, dt);
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Unary ops
//===----------------------------------------------------------------------===//

struct ReluOp {
  // A quiet comparison: it lets the compiler vectorise under -ftrapping-math.
  // NaN stays NaN.
  template <class T> static inline T apply(T x) {
    if constexpr (std::is_floating_point_v<T>)
      return __builtin_isless(x, T(0)) ? T(0) : x;
    else
      return x < T(0) ? T(0) : x;
  }
};
struct NegOp {
  template <class T> static inline T apply(T x) {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(x));
    else
      return -x;
  }
};
struct AbsOp {
  template <class T> static inline T apply(T x) {
    if constexpr (std::is_integral_v<T>)
      return x < 0 ? NegOp::apply(x) : x;
    else
      return std::fabs(x);
  }
};
struct TanhOp {
  template <class T> static inline T apply(T x) {
    if constexpr (std::is_same_v<T, float>)
      return fastTanh(x);
    else
      return std::tanh(x);
  }
};
struct SigmoidOp {
  template <class T> static inline T apply(T x) {
    if (x >= T(0))
      return T(1) / (T(1) + std::exp(-x));
    T e = std::exp(x);
    return e / (T(1) + e);
  }
};
/// erf: float32 by the shared approximation (FastMath.h, also the CUDA
/// kernels' and the fused programs'), float64 by std::erf.
template <class T> inline T erfOf(T x) {
  if constexpr (std::is_same_v<T, float>)
    return fastErf(x);
  else
    return std::erf(x);
}

struct ErfOp {
  template <class T> static inline T apply(T x) { return erfOf(x); }
};
struct ExpOp {
  template <class T> static inline T apply(T x) { return std::exp(x); }
};
struct LogOp {
  template <class T> static inline T apply(T x) { return std::log(x); }
};
struct SqrtOp {
  template <class T> static inline T apply(T x) { return std::sqrt(x); }
};
struct ReciprocalOp {
  template <class T> static inline T apply(T x) { return T(1) / x; }
};
struct GeluOp {
  template <class T> static inline T apply(T x) {
    return T(0.5) * x * (T(1) + erfOf(x * T(0.70710678118654752440)));
  }
};
struct GeluTanhOp {
  template <class T> static inline T apply(T x) {
    const T k = T(0.79788456080286535588); // sqrt(2/pi)
    return T(0.5) * x * (T(1) + TanhOp::apply(k * (x + T(0.044715) * x * x * x)));
  }
};

template <class Op, class T>
QN_INLINE void runUnary(const T *__restrict x, T *__restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = Op::apply(x[i]);
}

// float32 unary loops: multi-versioned where the op vectorises.
QN_CLONES void reluF32(const float *x, float *y, int64_t n) { runUnary<ReluOp>(x, y, n); }
QN_CLONES void negF32(const float *x, float *y, int64_t n) { runUnary<NegOp>(x, y, n); }
QN_CLONES void absF32(const float *x, float *y, int64_t n) { runUnary<AbsOp>(x, y, n); }
QN_CLONES void erfF32(const float *x, float *y, int64_t n) { runUnary<ErfOp>(x, y, n); }
QN_CLONES void geluF32(const float *x, float *y, int64_t n) { runUnary<GeluOp>(x, y, n); }
QN_CLONES void tanhF32(const float *x, float *y, int64_t n) { runUnary<TanhOp>(x, y, n); }
QN_CLONES void geluTanhF32(const float *x, float *y, int64_t n) {
  runUnary<GeluTanhOp>(x, y, n);
}
QN_CLONES void sqrtF32(const float *x, float *y, int64_t n) { runUnary<SqrtOp>(x, y, n); }
QN_CLONES void reciprocalF32(const float *x, float *y, int64_t n) {
  runUnary<ReciprocalOp>(x, y, n);
}

template <class Op> void unaryF32(const float *x, float *y, int64_t n) {
  if constexpr (std::is_same_v<Op, ReluOp>)
    reluF32(x, y, n);
  else if constexpr (std::is_same_v<Op, NegOp>)
    negF32(x, y, n);
  else if constexpr (std::is_same_v<Op, AbsOp>)
    absF32(x, y, n);
  else if constexpr (std::is_same_v<Op, ErfOp>)
    erfF32(x, y, n);
  else if constexpr (std::is_same_v<Op, GeluOp>)
    geluF32(x, y, n);
  else if constexpr (std::is_same_v<Op, TanhOp>)
    tanhF32(x, y, n);
  else if constexpr (std::is_same_v<Op, GeluTanhOp>)
    geluTanhF32(x, y, n);
  else if constexpr (std::is_same_v<Op, SqrtOp>)
    sqrtF32(x, y, n);
  else if constexpr (std::is_same_v<Op, ReciprocalOp>)
    reciprocalF32(x, y, n);
  else
    runUnary<Op>(x, y, n); // libm calls (tanh, exp, ...): nothing to vectorise
}

template <class Op> llvm::Error unaryKernel(KernelContext &ctx, bool allowInt) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  int64_t n = x.numel();
  switch (dt) {
  case DType::Float: {
    Tensor y = Tensor::empty(dt, x.shape());
    unaryF32<Op>(x.data<float>(), y.data<float>(), n);
    ctx.outputs[0] = std::move(y);
    return llvm::Error::success();
  }
  case DType::Double: {
    Tensor y = Tensor::empty(dt, x.shape());
    runUnary<Op>(x.data<double>(), y.data<double>(), n);
    ctx.outputs[0] = std::move(y);
    return llvm::Error::success();
  }
  case DType::Float16:
  case DType::BFloat16: {
    Tensor xf = toFloat32(x), yf = Tensor::empty(DType::Float, x.shape());
    unaryF32<Op>(xf.data<float>(), yf.data<float>(), n);
    ctx.outputs[0] = fromFloat32(yf, dt);
    return llvm::Error::success();
  }
  default:
    break;
  }
  if constexpr (std::is_same_v<Op, ReluOp> || std::is_same_v<Op, NegOp> ||
                std::is_same_v<Op, AbsOp>) {
    if (allowInt) {
      Tensor y = Tensor::empty(dt, x.shape());
      switch (dt) {
      case DType::Int32:
        runUnary<Op>(x.data<int32_t>(), y.data<int32_t>(), n);
        ctx.outputs[0] = std::move(y);
        return llvm::Error::success();
      case DType::Int64:
        runUnary<Op>(x.data<int64_t>(), y.data<int64_t>(), n);
        ctx.outputs[0] = std::move(y);
        return llvm::Error::success();
      case DType::Int8:
        runUnary<Op>(x.data<int8_t>(), y.data<int8_t>(), n);
        ctx.outputs[0] = std::move(y);
        return llvm::Error::success();
      default:
        break;
      }
      return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16, int32, int64, int8");
    }
  }
  return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
}

llvm::Error geluKernel(KernelContext &ctx) {
  std::string approx = attrString(ctx.node, "approximate", "none");
  if (approx == "none")
    return unaryKernel<GeluOp>(ctx, false);
  if (approx == "tanh")
    return unaryKernel<GeluTanhOp>(ctx, false);
  return kernelError(ctx, "unsupported approximate='" + approx + "' (expected none or tanh)");
}

//===----------------------------------------------------------------------===//
// Cast
//===----------------------------------------------------------------------===//

struct Half {
  uint16_t bits;
};
struct BF16 {
  uint16_t bits;
};
struct Bool8 {
  uint8_t v;
};

template <class T> inline double toWide(T v) { return static_cast<double>(v); }

/// One element: From -> To, with NaN/out-of-range floats -> integers
/// saturating (NaN -> 0) instead of being undefined.
template <class To, class From> inline To castElem(From v) {
  if constexpr (std::is_same_v<From, Half>) {
    return castElem<To>(halfToFloat(v.bits));
  } else if constexpr (std::is_same_v<From, BF16>) {
    return castElem<To>(bf16ToFloat(v.bits));
  } else if constexpr (std::is_same_v<From, Bool8>) {
    return castElem<To>(static_cast<int32_t>(v.v != 0));
  } else if constexpr (std::is_same_v<To, Half>) {
    if constexpr (std::is_same_v<From, float>)
      return Half{floatToHalf(v)};
    else
      return Half{floatToHalf(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<To, BF16>) {
    if constexpr (std::is_same_v<From, float>)
      return BF16{floatToBf16(v)};
    else
      return BF16{floatToBf16(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<To, Bool8>) {
    return Bool8{static_cast<uint8_t>(v != From(0))};
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    if (std::isnan(v))
      return To(0);
    // Saturate; the bounds are exact powers of two in any float type.
    const double lo = static_cast<double>(std::numeric_limits<To>::min());
    const double hiExclusive = -lo; // 2^(bits-1) for signed types
    double d = static_cast<double>(v);
    if constexpr (std::is_signed_v<To>) {
      if (d <= lo)
        return std::numeric_limits<To>::min();
      if (d >= hiExclusive)
        return std::numeric_limits<To>::max();
    } else {
      if (d <= 0.0)
        return To(0);
      if (d >= static_cast<double>(std::numeric_limits<To>::max()) + 1.0)
        return std::numeric_limits<To>::max();
    }
    return static_cast<To>(v);
  } else {
    // Integer narrowing wraps (two's complement), as in NumPy / ONNX Runtime.
    return static_cast<To>(v);
  }
}

template <class To, class From> void castLoop(const void *src, void *dst, int64_t n) {
  const From *s = static_cast<const From *>(src);
  To *d = static_cast<To *>(dst);
  for (int64_t i = 0; i < n; ++i)
    d[i] = castElem<To>(s[i]);
}

template <class From> bool castFrom(DType to, const void *src, void *dst, int64_t n) {
  switch (to) {
  case DType::Float:
    castLoop<float, From>(src, dst, n);
    return true;
  case DType::Double:
    castLoop<double, From>(src, dst, n);
    return true;
  case DType::Float16:
    castLoop<Half, From>(src, dst, n);
    return true;
  case DType::BFloat16:
    castLoop<BF16, From>(src, dst, n);
    return true;
  case DType::Int64:
    castLoop<int64_t, From>(src, dst, n);
    return true;
  case DType::Int32:
    castLoop<int32_t, From>(src, dst, n);
    return true;
  case DType::Int8:
    castLoop<int8_t, From>(src, dst, n);
    return true;
  case DType::UInt8:
    castLoop<uint8_t, From>(src, dst, n);
    return true;
  case DType::Bool:
    castLoop<Bool8, From>(src, dst, n);
    return true;
  default:
    return false;
  }
}

bool castAny(DType from, DType to, const void *src, void *dst, int64_t n) {
  switch (from) {
  case DType::Float:
    return castFrom<float>(to, src, dst, n);
  case DType::Double:
    return castFrom<double>(to, src, dst, n);
  case DType::Float16:
    return castFrom<Half>(to, src, dst, n);
  case DType::BFloat16:
    return castFrom<BF16>(to, src, dst, n);
  case DType::Int64:
    return castFrom<int64_t>(to, src, dst, n);
  case DType::Int32:
    return castFrom<int32_t>(to, src, dst, n);
  case DType::Int8:
    return castFrom<int8_t>(to, src, dst, n);
  case DType::UInt8:
    return castFrom<uint8_t>(to, src, dst, n);
  case DType::Bool:
    return castFrom<Bool8>(to, src, dst, n);
  default:
    return false;
  }
}

} // namespace

llvm::Error planCast(const KernelContext &ctx, DType &to) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (!hasAttr(ctx.node, "to"))
    return kernelError(ctx, "missing attribute 'to'");
  int64_t toCode = attrInt(ctx.node, "to", 0);
  to = dtypeFromOnnx(static_cast<int32_t>(toCode));
  if (to == DType::Undefined)
    return kernelError(ctx, strCat("unsupported target type to=", toCode));
  if (!isSupported(x.dtype()))
    return unsupportedDType(ctx, x,
                            "float32, float64, float16, bfloat16, int64, int32, int8, "
                            "uint8, bool");
  return llvm::Error::success();
}

namespace {

llvm::Error castKernel(KernelContext &ctx) {
  DType to;
  if (auto e = planCast(ctx, to))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (to == x.dtype()) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  Tensor y = Tensor::empty(to, x.shape());
  if (!castAny(x.dtype(), to, x.raw(), y.raw(), x.numel()))
    return kernelError(ctx,
                       strCat("unsupported cast ", dtypeName(x.dtype()), " -> ", dtypeName(to)));
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Where, Sin, Cos, Not, And, Or, GreaterOrEqual, LessOrEqual, Max, Min
//
// Broadcasting is done by materialising each operand at the output shape with
// broadcastTo (zero strides on broadcast axes); an operand that already has
// the output shape is used in place.
//===----------------------------------------------------------------------===//

namespace {

/// The dtypes that visitNumeric takes after widen(); not bool.
bool isNumeric(DType t) {
  switch (t) {
  case DType::Float:
  case DType::Double:
  case DType::Float16:
  case DType::BFloat16:
  case DType::Int32:
  case DType::Int64:
  case DType::Int8:
  case DType::UInt8:
    return true;
  default:
    return false;
  }
}

template <class T> DType dtypeOf() {
  if constexpr (std::is_same_v<T, float>)
    return DType::Float;
  else if constexpr (std::is_same_v<T, double>)
    return DType::Double;
  else if constexpr (std::is_same_v<T, int32_t>)
    return DType::Int32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return DType::Int64;
  else if constexpr (std::is_same_v<T, int8_t>)
    return DType::Int8;
  else
    return DType::UInt8;
}

/// Elementwise binary op over broadcast operands a, b (same dtype T, already
/// widened): out[i] = f(a[i], b[i]) with result dtype `outType`.
template <class T, class R, class F>
Tensor binaryLoop(const Tensor &a, const Tensor &b, const std::vector<int64_t> &shape,
                  DType outType, F f) {
  Tensor y = Tensor::empty(outType, shape);
  int64_t n = y.numel();
  R *o = y.data<R>();
  if (a.numel() == 1 && b.shape() == shape) { // scalar fast paths
    T av = a.data<T>()[0];
    const T *pb = b.data<T>();
    for (int64_t i = 0; i < n; ++i)
      o[i] = f(av, pb[i]);
    return y;
  }
  if (b.numel() == 1 && a.shape() == shape) {
    T bv = b.data<T>()[0];
    const T *pa = a.data<T>();
    for (int64_t i = 0; i < n; ++i)
      o[i] = f(pa[i], bv);
    return y;
  }
  Tensor ea = broadcastTo(a, shape), eb = broadcastTo(b, shape);
  const T *pa = ea.data<T>(), *pb = eb.data<T>();
  for (int64_t i = 0; i < n; ++i)
    o[i] = f(pa[i], pb[i]);
  return y;
}

} // namespace

llvm::Error broadcastAll(const KernelContext &ctx, llvm::ArrayRef<const Tensor *> ts,
                         std::vector<int64_t> &out) {
  out = ts[0]->shape();
  for (size_t i = 1; i < ts.size(); ++i) {
    std::vector<int64_t> next;
    if (!broadcastShapes(out, ts[i]->shape(), next)) {
      std::string s;
      for (size_t j = 0; j < ts.size(); ++j)
        s += (j ? ", " : "") + ts[j]->describe();
      return kernelError(ctx, "shapes do not broadcast: " + s);
    }
    out = std::move(next);
  }
  int64_t n;
  if (!checkedNumel(out, 8, n))
    return kernelError(ctx, "output shape overflows: " + shapeStr(out));
  return llvm::Error::success();
}

namespace {

template <class E> void selectLoop(const uint8_t *c, const E *a, const E *b, E *o, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    o[i] = c[i] ? a[i] : b[i];
}

} // namespace

llvm::Error planWhere(const KernelContext &ctx, std::vector<int64_t> &outShape) {
  if (auto e = checkArity(ctx, 3, 3))
    return e;
  const Tensor &c = *input(ctx, 0), &a = *input(ctx, 1), &b = *input(ctx, 2);
  if (c.dtype() != DType::Bool)
    return unsupportedDType(ctx, c, "bool condition");
  if (a.dtype() != b.dtype())
    return kernelError(ctx, "X " + a.describe() + " and Y " + b.describe() + " differ in dtype");
  if (!isSupported(a.dtype()) || dtypeSize(a.dtype()) == 0)
    return unsupportedDType(ctx, a, "any defined dtype");
  const Tensor *all[] = {&c, &a, &b};
  return broadcastAll(ctx, all, outShape);
}

namespace {

llvm::Error whereKernel(KernelContext &ctx) {
  std::vector<int64_t> shape;
  if (auto e = planWhere(ctx, shape))
    return e;
  const Tensor &c = *input(ctx, 0), &a = *input(ctx, 1), &b = *input(ctx, 2);
  size_t es = dtypeSize(a.dtype());
  Tensor ec = broadcastTo(c, shape), ea = broadcastTo(a, shape), eb = broadcastTo(b, shape);
  Tensor y = Tensor::empty(a.dtype(), shape);
  int64_t n = y.numel();
  const uint8_t *pc = ec.data<uint8_t>();
  switch (es) {
  case 1:
    selectLoop(pc, ea.data<uint8_t>(), eb.data<uint8_t>(), y.data<uint8_t>(), n);
    break;
  case 2:
    selectLoop(pc, ea.data<uint16_t>(), eb.data<uint16_t>(), y.data<uint16_t>(), n);
    break;
  case 4:
    selectLoop(pc, ea.data<uint32_t>(), eb.data<uint32_t>(), y.data<uint32_t>(), n);
    break;
  default:
    selectLoop(pc, ea.data<uint64_t>(), eb.data<uint64_t>(), y.data<uint64_t>(), n);
    break;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

template <bool IsSin> llvm::Error trigKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
  Tensor xw = widen(x);
  Tensor y = Tensor::empty(xw.dtype(), x.shape());
  int64_t n = x.numel();
  auto run = [&](auto *in, auto *out) {
    for (int64_t i = 0; i < n; ++i)
      out[i] = IsSin ? std::sin(in[i]) : std::cos(in[i]);
  };
  if (xw.dtype() == DType::Double)
    run(xw.data<double>(), y.data<double>());
  else
    run(xw.data<float>(), y.data<float>());
  ctx.outputs[0] = narrow(y, dt);
  return llvm::Error::success();
}

} // namespace

llvm::Error checkNot(const KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (x.dtype() != DType::Bool)
    return unsupportedDType(ctx, x, "bool");
  return llvm::Error::success();
}

namespace {

llvm::Error notKernel(KernelContext &ctx) {
  if (auto e = checkNot(ctx))
    return e;
  const Tensor &x = *input(ctx, 0);
  Tensor y = Tensor::empty(DType::Bool, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i)
    y.data<uint8_t>()[i] = !x.data<uint8_t>()[i];
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

llvm::Error planLogic(const KernelContext &ctx, std::vector<int64_t> &outShape) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  for (const Tensor *t : {&a, &b})
    if (t->dtype() != DType::Bool)
      return unsupportedDType(ctx, *t, "bool");
  const Tensor *all[] = {&a, &b};
  return broadcastAll(ctx, all, outShape);
}

llvm::Error planCompare(const KernelContext &ctx, std::vector<int64_t> &outShape) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  if (a.dtype() != b.dtype())
    return kernelError(ctx, "A " + a.describe() + " and B " + b.describe() + " differ in dtype");
  const Tensor *all[] = {&a, &b};
  if (auto e = broadcastAll(ctx, all, outShape))
    return e;
  if (!isNumeric(a.dtype()))
    return unsupportedDType(ctx, a, "float32, float64, float16, bfloat16, int8, uint8, int32, int64");
  return llvm::Error::success();
}

llvm::Error planMinMax(const KernelContext &ctx, std::vector<int64_t> &outShape) {
  size_t n = ctx.inputs.size();
  if (n == 0)
    return kernelError(ctx, "expects at least one input");
  if (auto e = checkArity(ctx, n, n))
    return e;
  const Tensor &first = *input(ctx, 0);
  DType dt = first.dtype();
  std::vector<const Tensor *> all;
  for (size_t i = 0; i < n; ++i) {
    if (ctx.inputs[i]->dtype() != dt)
      return kernelError(ctx, "inputs differ in dtype: " + first.describe() + " vs " +
                                  ctx.inputs[i]->describe());
    all.push_back(ctx.inputs[i]);
  }
  if (auto e = broadcastAll(ctx, all, outShape))
    return e;
  if (!isNumeric(dt))
    return unsupportedDType(ctx, first,
                            "float32, float64, float16, bfloat16, int8, uint8, int32, int64");
  return llvm::Error::success();
}

namespace {

template <bool IsAnd> llvm::Error logicKernel(KernelContext &ctx) {
  std::vector<int64_t> shape;
  if (auto e = planLogic(ctx, shape))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  ctx.outputs[0] = binaryLoop<uint8_t, uint8_t>(a, b, shape, DType::Bool, [](uint8_t p, uint8_t q) {
    return static_cast<uint8_t>(IsAnd ? (p && q) : (p || q));
  });
  return llvm::Error::success();
}

template <bool IsGE> llvm::Error compareKernel(KernelContext &ctx) {
  std::vector<int64_t> shape;
  if (auto e = planCompare(ctx, shape))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  Tensor aw = widen(a), bw = widen(b);
  visitNumeric(aw.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ctx.outputs[0] = binaryLoop<T, uint8_t>(aw, bw, shape, DType::Bool, [](T p, T q) {
      return static_cast<uint8_t>(IsGE ? p >= q : p <= q);
    });
  });
  return llvm::Error::success();
}

template <bool IsMax> llvm::Error minMaxKernel(KernelContext &ctx) {
  std::vector<int64_t> shape;
  if (auto e = planMinMax(ctx, shape))
    return e;
  size_t n = ctx.inputs.size();
  const Tensor &first = *input(ctx, 0);
  DType dt = first.dtype();
  Tensor acc = widen(first);
  visitNumeric(acc.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto pick = [](T p, T q) -> T {
      if constexpr (std::is_floating_point_v<T>)
        if (std::isnan(p) || std::isnan(q))
          return std::numeric_limits<T>::quiet_NaN();
      return IsMax ? (q > p ? q : p) : (q < p ? q : p);
    };
    if (n == 1)
      acc = broadcastTo(acc, shape).clone();
    for (size_t i = 1; i < n; ++i) {
      Tensor next = widen(*ctx.inputs[i]);
      std::vector<int64_t> s;
      broadcastShapes(acc.shape(), next.shape(), s);
      acc = binaryLoop<T, T>(acc, next, s, acc.dtype(), pick);
    }
  });
  ctx.outputs[0] = narrow(acc, dt);
  return llvm::Error::success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Parametric unary ops (Activations.h), IsNaN, Clip, Dropout
//===----------------------------------------------------------------------===//

template <Act A, class T> void runAct(const T *x, T *y, int64_t n, ActParams p) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = applyAct<A>(x[i], p);
}

template <Act A> llvm::Error actKernel(KernelContext &ctx, const ActInfo &info) {
  ActParams p;
  if (auto e = planAct(ctx, info, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  int64_t n = x.numel();
  Tensor y = Tensor::empty(isHalfLike(dt) ? DType::Float : dt, x.shape());
  switch (dt) {
  case DType::Float:
    runAct<A>(x.data<float>(), y.data<float>(), n, p);
    break;
  case DType::Double:
    runAct<A>(x.data<double>(), y.data<double>(), n, p);
    break;
  case DType::Float16:
  case DType::BFloat16: {
    Tensor xf = toFloat32(x);
    runAct<A>(xf.data<float>(), y.data<float>(), n, p);
    y = fromFloat32(y, dt);
    break;
  }
  default:
    if constexpr (A == Act::Sign) {
      if (dt == DType::Int32)
        runAct<A>(x.data<int32_t>(), y.data<int32_t>(), n, p);
      else if (dt == DType::Int64)
        runAct<A>(x.data<int64_t>(), y.data<int64_t>(), n, p);
      else
        runAct<A>(x.data<int8_t>(), y.data<int8_t>(), n, p);
    }
    break;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error isNaNKernel(KernelContext &ctx) {
  if (auto e = checkIsNaN(ctx))
    return e;
  const Tensor &x = *input(ctx, 0);
  Tensor xf = isHalfLike(x.dtype()) ? toFloat32(x) : x;
  Tensor y = Tensor::empty(DType::Bool, x.shape());
  uint8_t *out = y.data<uint8_t>();
  int64_t n = x.numel();
  if (x.dtype() == DType::Double)
    for (int64_t i = 0; i < n; ++i)
      out[i] = std::isnan(xf.data<double>()[i]);
  else
    for (int64_t i = 0; i < n; ++i)
      out[i] = std::isnan(xf.data<float>()[i]);
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

template <class T, class C> void runClip(const T *x, T *y, int64_t n, C lo, C hi) {
  // min(max(x, lo), hi) as ONNX Runtime: NaN stays NaN.
  for (int64_t i = 0; i < n; ++i) {
    C v = static_cast<C>(x[i]);
    v = v < lo ? lo : v;
    y[i] = static_cast<T>(v > hi ? hi : v);
  }
}

template <class T> void clipInt(const Tensor &x, Tensor &y, const ClipPlan &p) {
  T lo = p.hasLo ? static_cast<T>(p.lo) : std::numeric_limits<T>::lowest();
  T hi = p.hasHi ? static_cast<T>(p.hi) : std::numeric_limits<T>::max();
  runClip<T, T>(x.data<T>(), y.data<T>(), x.numel(), lo, hi);
}

llvm::Error clipKernel(KernelContext &ctx) {
  ClipPlan p;
  if (auto e = planClip(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  int64_t n = x.numel();
  const double inf = std::numeric_limits<double>::infinity();
  double lo = p.hasLo ? p.lo : -inf, hi = p.hasHi ? p.hi : inf;
  Tensor y = Tensor::empty(isHalfLike(dt) ? DType::Float : dt, x.shape());
  switch (dt) {
  case DType::Float:
    runClip<float, float>(x.data<float>(), y.data<float>(), n, float(lo), float(hi));
    break;
  case DType::Double:
    runClip<double, double>(x.data<double>(), y.data<double>(), n, lo, hi);
    break;
  case DType::Float16:
  case DType::BFloat16: {
    Tensor xf = toFloat32(x);
    runClip<float, float>(xf.data<float>(), y.data<float>(), n, float(lo), float(hi));
    y = fromFloat32(y, dt);
    break;
  }
  case DType::Int32:
    clipInt<int32_t>(x, y, p);
    break;
  case DType::Int64:
    clipInt<int64_t>(x, y, p);
    break;
  default:
    clipInt<int8_t>(x, y, p);
    break;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error dropoutKernel(KernelContext &ctx) {
  bool wantMask = false;
  if (auto e = planDropout(ctx, wantMask))
    return e;
  const Tensor &x = *input(ctx, 0);
  ctx.outputs[0] = x; // inference: the identity
  if (wantMask) {
    Tensor mask = Tensor::empty(DType::Bool, x.shape());
    if (x.numel())
      std::memset(mask.raw(), 1, static_cast<size_t>(x.numel()));
    ctx.outputs[1] = std::move(mask);
  }
  return llvm::Error::success();
}

void registerElementwiseKernels(KernelRegistry &reg) {
  static_assert(sizeof(Half) == 2 && sizeof(BF16) == 2 && sizeof(Bool8) == 1, "layout");
  reg.add("", "Add", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Add); });
  reg.add("", "Sub", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Sub); });
  reg.add("", "Mul", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Mul); });
  reg.add("", "Div", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Div); });
  reg.add("", "Pow", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Pow); });
  reg.add("", "Equal", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Equal); });
  reg.add("", "Less", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Less); });
  reg.add("", "Greater", [](KernelContext &c) { return binaryKernel(c, BinaryOp::Greater); });

  for (const ActInfo &a : kActs)
    visitAct(a.act, [&](auto tag) {
      reg.add("", a.name, [&a](KernelContext &c) { return actKernel<decltype(tag)::value>(c, a); });
    });
  reg.add("", "IsNaN", isNaNKernel);
  reg.add("", "Clip", clipKernel);
  reg.add("", "Dropout", dropoutKernel);
  reg.add("", "Relu", [](KernelContext &c) { return unaryKernel<ReluOp>(c, true); });
  reg.add("", "Neg", [](KernelContext &c) { return unaryKernel<NegOp>(c, true); });
  reg.add("", "Abs", [](KernelContext &c) { return unaryKernel<AbsOp>(c, true); });
  reg.add("", "Tanh", [](KernelContext &c) { return unaryKernel<TanhOp>(c, false); });
  reg.add("", "Sigmoid", [](KernelContext &c) { return unaryKernel<SigmoidOp>(c, false); });
  reg.add("", "Erf", [](KernelContext &c) { return unaryKernel<ErfOp>(c, false); });
  reg.add("", "Exp", [](KernelContext &c) { return unaryKernel<ExpOp>(c, false); });
  reg.add("", "Log", [](KernelContext &c) { return unaryKernel<LogOp>(c, false); });
  reg.add("", "Sqrt", [](KernelContext &c) { return unaryKernel<SqrtOp>(c, false); });
  reg.add("", "Reciprocal", [](KernelContext &c) { return unaryKernel<ReciprocalOp>(c, false); });
  reg.add("", "Gelu", geluKernel);

  reg.add("", "Cast", castKernel);
  reg.add("", "Where", whereKernel);
  reg.add("", "Sin", trigKernel<true>);
  reg.add("", "Cos", trigKernel<false>);
  reg.add("", "Not", notKernel);
  reg.add("", "And", logicKernel<true>);
  reg.add("", "Or", logicKernel<false>);
  reg.add("", "GreaterOrEqual", compareKernel<true>);
  reg.add("", "LessOrEqual", compareKernel<false>);
  reg.add("", "Max", minMaxKernel<true>);
  reg.add("", "Min", minMaxKernel<false>);
}

} // namespace qn::rt::cpu
