//===- CpuNorm.cpp - Normalisation and reduction CPU kernels --------------===//
//
// LayerNormalization, Softmax/LogSoftmax, the Reduce* ops, CumSum
// (the ops of cuda/CudaNorm.cpp). float16/bfloat16 are computed in float32 and
// rounded back.
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "onnx/onnx_pb.h"

namespace qn::rt::cpu {
namespace {

//===----------------------------------------------------------------------===//
// LayerNormalization
//===----------------------------------------------------------------------===//

template <class T>
void layerNormRows(const T *x, const T *scale, const T *bias, T *y, float *mean, float *inv,
                   int64_t rows, int64_t cols, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * cols;
    T *yr = y + r * cols;
    double s = 0;
    for (int64_t c = 0; c < cols; ++c)
      s += xr[c];
    double m = cols ? s / static_cast<double>(cols) : 0.0;
    double v = 0;
    for (int64_t c = 0; c < cols; ++c) {
      double d = xr[c] - m;
      v += d * d;
    }
    v = cols ? v / static_cast<double>(cols) : 0.0;
    double is = 1.0 / std::sqrt(v + eps);
    for (int64_t c = 0; c < cols; ++c) {
      double t = (xr[c] - m) * is;
      if (scale)
        t *= scale[c];
      if (bias)
        t += bias[c];
      yr[c] = static_cast<T>(t);
    }
    mean[r] = static_cast<float>(m);
    inv[r] = static_cast<float>(is);
  }
}

} // namespace

llvm::Error planLayerNorm(const KernelContext &ctx, LayerNormPlan &p) {
  if (auto e = checkArity(ctx, 1, 3))
    return e;
  const Tensor &x = *input(ctx, 0);
  const Tensor *scale = input(ctx, 1), *bias = input(ctx, 2);
  DType dt = x.dtype();
  if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
  if (x.rank() == 0)
    return kernelError(ctx, "input X must have rank >= 1, got " + x.describe());
  int64_t axis = attrInt(ctx.node, "axis", -1);
  if (auto e = normalizeAxis(ctx, axis, x.rank()))
    return e;
  float eps = attrFloat(ctx.node, "epsilon", 1e-5f);
  if (!(eps >= 0))
    return kernelError(ctx, strCat("epsilon must be >= 0, got ", eps));
  std::vector<int64_t> normShape(x.shape().begin() + axis, x.shape().end());
  int64_t rows = 1, cols = 1;
  for (int64_t k = 0; k < x.rank(); ++k)
    (k < axis ? rows : cols) *= x.dim(k);
  // Scale and B broadcast (unidirectionally) to X.shape[axis:].
  for (int i = 1; i <= 2; ++i) {
    const Tensor *t = i == 1 ? scale : bias;
    if (!t)
      continue;
    std::vector<int64_t> b;
    if (t->dtype() != dt || !broadcastShapes(normShape, t->shape(), b) || b != normShape)
      return kernelError(ctx, strCat(i == 1 ? "Scale " : "B ", t->describe(),
                                     " does not match the normalized shape of X ", x.describe(),
                                     " (axis ", axis, ")"));
  }
  std::vector<int64_t> statShape(x.shape().begin(), x.shape().begin() + axis);
  statShape.resize(x.rank(), 1);
  p.axis = axis;
  p.rows = rows;
  p.cols = cols;
  p.eps = eps;
  p.normShape = std::move(normShape);
  p.statShape = std::move(statShape);
  return llvm::Error::success();
}

namespace {

llvm::Error layerNormKernel(KernelContext &ctx) {
  LayerNormPlan p;
  if (auto e = planLayerNorm(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  const Tensor *scale = input(ctx, 1), *bias = input(ctx, 2);
  DType dt = x.dtype();
  int64_t rows = p.rows, cols = p.cols;
  float eps = p.eps;
  Tensor sw, bw;
  if (scale)
    sw = widen(broadcastTo(*scale, p.normShape));
  if (bias)
    bw = widen(broadcastTo(*bias, p.normShape));
  Tensor xw = widen(x);
  Tensor mean = Tensor::empty(DType::Float, p.statShape),
         inv = Tensor::empty(DType::Float, p.statShape);
  Tensor y = Tensor::empty(xw.dtype(), x.shape());
  if (xw.dtype() == DType::Double)
    layerNormRows<double>(xw.data<double>(), sw.defined() ? sw.data<double>() : nullptr,
                          bw.defined() ? bw.data<double>() : nullptr, y.data<double>(),
                          mean.data<float>(), inv.data<float>(), rows, cols, eps);
  else
    layerNormRows<float>(xw.data<float>(), sw.defined() ? sw.data<float>() : nullptr,
                         bw.defined() ? bw.data<float>() : nullptr, y.data<float>(),
                         mean.data<float>(), inv.data<float>(), rows, cols, eps);
  ctx.outputs[0] = narrow(y, dt);
  if (ctx.outputs.size() > 1)
    ctx.outputs[1] = std::move(mean);
  if (ctx.outputs.size() > 2)
    ctx.outputs[2] = std::move(inv);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// ReduceMean / ReduceSum / ReduceMax
//===----------------------------------------------------------------------===//

using RedKind = ReduceKind;

/// The value of a reduction over no elements (ONNX's identities): Sum, L1,
/// L2, SumSquare 0; Mean NaN; Max -inf (the lowest integer); Min +inf (the
/// highest); Prod 1; LogSum and LogSumExp log(0) = -inf.
template <class T> T emptyReduction(RedKind k) {
  using L = std::numeric_limits<T>;
  switch (k) {
  case RedKind::Max:
  case RedKind::LogSum:
  case RedKind::LogSumExp:
    return L::has_infinity ? -L::infinity() : L::lowest();
  case RedKind::Min:
    return L::has_infinity ? L::infinity() : L::max();
  case RedKind::Prod:
    return T(1);
  case RedKind::Mean:
    return L::has_quiet_NaN ? L::quiet_NaN() : T(0);
  default:
    return T(0);
  }
}

/// The reductions other than Sum/Mean/Max, one row: in double for floating
/// types (and for L2, LogSum, LogSumExp of integers, rounded back), in
/// wrapping 64-bit integers for Min, Prod, L1, SumSquare of integers.
template <class T> T reduceOther(RedKind k, const T *p, int64_t len) {
  if (k == RedKind::Min) {
    T m = p[0];
    for (int64_t j = 1; j < len; ++j) {
      if constexpr (std::is_floating_point_v<T>)
        if (std::isnan(p[j]))
          return p[j];
      if (p[j] < m)
        m = p[j];
    }
    return m;
  }
  if constexpr (!std::is_floating_point_v<T>) {
    if (k == RedKind::Prod || k == RedKind::L1 || k == RedKind::SumSquare) {
      uint64_t acc = k == RedKind::Prod ? 1 : 0;
      for (int64_t j = 0; j < len; ++j) {
        int64_t v = static_cast<int64_t>(p[j]);
        if (k == RedKind::Prod)
          acc *= static_cast<uint64_t>(v);
        else if (k == RedKind::L1)
          acc += static_cast<uint64_t>(v < 0 ? -v : v);
        else
          acc += static_cast<uint64_t>(v) * static_cast<uint64_t>(v);
      }
      return static_cast<T>(static_cast<int64_t>(acc));
    }
  }
  if (k == RedKind::LogSumExp) { // max-shifted: exp never overflows
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < len; ++j)
      m = std::max(m, static_cast<double>(p[j]));
    if (std::isinf(m))
      return static_cast<T>(m);
    double s = 0;
    for (int64_t j = 0; j < len; ++j)
      s += std::exp(static_cast<double>(p[j]) - m);
    return static_cast<T>(m + std::log(s));
  }
  double acc = k == RedKind::Prod ? 1.0 : 0.0;
  for (int64_t j = 0; j < len; ++j) {
    double v = static_cast<double>(p[j]);
    switch (k) {
    case RedKind::Prod:
      acc *= v;
      break;
    case RedKind::L1:
      acc += std::abs(v);
      break;
    case RedKind::L2:
    case RedKind::SumSquare:
      acc += v * v;
      break;
    default: // LogSum
      acc += v;
    }
  }
  if (k == RedKind::L2)
    acc = std::sqrt(acc);
  else if (k == RedKind::LogSum)
    acc = std::log(acc);
  return static_cast<T>(acc);
}

template <class T> void reduceRows(RedKind k, const T *x, T *y, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) {
    const T *p = x + r * len;
    if (k != RedKind::Max && k != RedKind::Sum && k != RedKind::Mean) {
      y[r] = reduceOther(k, p, len);
    } else if (k == RedKind::Max) {
      T m = p[0];
      for (int64_t j = 1; j < len; ++j) {
        if constexpr (std::is_floating_point_v<T>)
          if (std::isnan(p[j])) {
            m = p[j];
            break;
          }
        if (p[j] > m)
          m = p[j];
      }
      y[r] = m;
    } else if constexpr (std::is_floating_point_v<T>) {
      double s = 0;
      for (int64_t j = 0; j < len; ++j)
        s += p[j];
      y[r] = static_cast<T>(k == RedKind::Mean ? s / static_cast<double>(len) : s);
    } else { // integers wrap
      uint64_t s = 0;
      for (int64_t j = 0; j < len; ++j)
        s += static_cast<uint64_t>(static_cast<int64_t>(p[j]));
      int64_t v = static_cast<int64_t>(s);
      y[r] = static_cast<T>(k == RedKind::Mean ? v / len : v);
    }
  }
}

} // namespace

llvm::Error planReduce(const KernelContext &ctx, ReduceKind kind, ReducePlan &p) {
  bool axesInput = ctx.opsetVersion >= 18 || (kind == RedKind::Sum && ctx.opsetVersion >= 13);
  if (auto e = checkArity(ctx, 1, axesInput ? 2 : 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  if (dt != DType::Float && dt != DType::Double && dt != DType::Int32 && dt != DType::Int64 &&
      !isHalfLike(dt))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16, int32, int64");
  bool keep = attrInt(ctx.node, "keepdims", 1) != 0;
  std::vector<int64_t> axes;
  p = ReducePlan();
  if (axesInput) {
    if (const Tensor *a = input(ctx, 1)) {
      auto v = readInts(ctx, *a, "axes input");
      if (!v)
        return v.takeError();
      axes = std::move(*v);
    }
    if (axes.empty() && attrInt(ctx.node, "noop_with_empty_axes", 0) != 0) {
      p.identity = true;
      return llvm::Error::success();
    }
  } else {
    axes = attrInts(ctx.node, "axes");
  }
  int64_t r = x.rank();
  std::vector<bool> red(r, axes.empty());
  for (int64_t a : axes) {
    if (auto e = normalizeAxis(ctx, a, r, "reduce axis"))
      return e;
    if (red[a])
      return kernelError(ctx, "axes " + shapeStr(axes) + " repeat an axis");
    red[a] = true;
  }
  std::vector<int64_t> outShape, perm;
  int64_t rows = 1, len = 1;
  for (int64_t k = 0; k < r; ++k) {
    if (red[k]) {
      len *= x.dim(k);
      if (keep)
        outShape.push_back(1);
    } else {
      rows *= x.dim(k);
      outShape.push_back(x.dim(k));
      perm.push_back(k);
    }
  }
  for (int64_t k = 0; k < r; ++k)
    if (red[k])
      perm.push_back(k);
  // An empty set: Sum 0, Max -inf (the lowest integer), Mean NaN; an integer
  // Mean has no value.
  if (len == 0 && rows > 0 && kind == RedKind::Mean && (dt == DType::Int32 || dt == DType::Int64))
    return kernelError(ctx, "cannot average an empty set of elements of " + x.describe());
  p.reduced = std::move(red);
  p.outShape = std::move(outShape);
  p.perm = std::move(perm);
  p.rows = rows;
  p.len = len;
  return llvm::Error::success();
}

namespace {

llvm::Error reduceKernel(KernelContext &ctx, RedKind kind) {
  ReducePlan plan;
  if (auto e = planReduce(ctx, kind, plan))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (plan.identity) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  DType dt = x.dtype();
  int64_t r = x.rank();
  const std::vector<int64_t> &outShape = plan.outShape, &perm = plan.perm;
  int64_t rows = plan.rows, len = plan.len;
  Tensor xw = widen(x);
  // Sum or mean over leading axes (a bias gradient summed over the batch):
  // accumulate whole rows, in the order the transposed row sums would use,
  // instead of transposing (the same double sums, so the same results).
  bool inOrder = std::is_sorted(perm.begin(), perm.end());
  int64_t lead = 0;
  while (lead < r && plan.reduced[lead])
    ++lead;
  bool leadingOnly = lead > 0 && lead < r &&
                     std::none_of(plan.reduced.begin() + lead, plan.reduced.end(),
                                  [](bool b) { return b; });
  if (!inOrder && leadingOnly && (kind == RedKind::Sum || kind == RedKind::Mean) && rows > 0 &&
      len > 0 &&
      (xw.dtype() == DType::Float || xw.dtype() == DType::Double)) {
    Tensor y = Tensor::empty(xw.dtype(), outShape);
    std::vector<double> acc(static_cast<size_t>(rows), 0.0);
    auto columns = [&](auto tag) {
      using T = decltype(tag);
      const T *px = xw.data<T>();
      double *a = acc.data();
      for (int64_t i = 0; i < len; ++i) {
        const T *row = px + i * rows;
        for (int64_t j = 0; j < rows; ++j)
          a[j] += static_cast<double>(row[j]);
      }
      T *py = y.data<T>();
      for (int64_t j = 0; j < rows; ++j)
        py[j] = static_cast<T>(kind == RedKind::Mean ? a[j] / static_cast<double>(len) : a[j]);
    };
    if (xw.dtype() == DType::Float)
      columns(float());
    else
      columns(double());
    ctx.outputs[0] = narrow(y, dt);
    return llvm::Error::success();
  }
  // Bring the reduced axes to the back (no copy when they already are).
  Tensor xp = xw;
  if (!inOrder && xw.numel() > 0) {
    auto cs = contiguousStrides(xw.shape());
    std::vector<int64_t> ps(r), st(r);
    for (int64_t k = 0; k < r; ++k) {
      ps[k] = xw.dim(perm[k]);
      st[k] = cs[perm[k]];
    }
    xp = Tensor::empty(xw.dtype(), ps);
    stridedCopy(xw.raw(), 0, ps, st, xp.raw(), dtypeSize(xw.dtype()));
  }
  Tensor y = Tensor::empty(xw.dtype(), outShape);
  if (rows > 0) {
    if (len == 0) { // the reduction's identity (emptyReduction)
      visitNumeric(xw.dtype(), [&](auto tag) {
        using T = decltype(tag);
        std::fill_n(y.data<T>(), rows, emptyReduction<T>(kind));
      });
    } else {
      visitNumeric(xw.dtype(), [&](auto tag) {
        using T = decltype(tag);
        reduceRows<T>(kind, xp.data<T>(), y.data<T>(), rows, len);
      });
    }
  }
  ctx.outputs[0] = narrow(y, dt);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Softmax / LogSoftmax
//===----------------------------------------------------------------------===//

/// x viewed as [outer, n, inner]; normalises along n.
template <class T, bool Log>
void runSoftmax(const T *x, T *y, int64_t outer, int64_t n, int64_t inner) {
  if (inner == 1) {
    for (int64_t o = 0; o < outer; ++o) {
      const T *xr = x + o * n;
      T *yr = y + o * n;
      T mx = -std::numeric_limits<T>::infinity();
      for (int64_t i = 0; i < n; ++i)
        mx = xr[i] > mx ? xr[i] : mx;
      if (std::isinf(mx) && mx < 0)
        mx = T(0); // all -inf: avoid inf - inf
      T sum = T(0);
      if constexpr (Log) {
        for (int64_t i = 0; i < n; ++i)
          sum += std::exp(xr[i] - mx);
        T lse = std::log(sum);
        for (int64_t i = 0; i < n; ++i)
          yr[i] = xr[i] - mx - lse;
      } else {
        for (int64_t i = 0; i < n; ++i) {
          T e = std::exp(xr[i] - mx);
          yr[i] = e;
          sum += e;
        }
        T inv = T(1) / sum;
        for (int64_t i = 0; i < n; ++i)
          yr[i] *= inv;
      }
    }
    return;
  }
  // Strided along n: process one [n, inner] block at a time, vectorised over inner.
  std::vector<T> mx(static_cast<size_t>(inner)), sum(static_cast<size_t>(inner));
  for (int64_t o = 0; o < outer; ++o) {
    const T *xb = x + o * n * inner;
    T *yb = y + o * n * inner;
    std::fill(mx.begin(), mx.end(), -std::numeric_limits<T>::infinity());
    std::fill(sum.begin(), sum.end(), T(0));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < inner; ++j)
        mx[j] = xb[i * inner + j] > mx[j] ? xb[i * inner + j] : mx[j];
    for (int64_t j = 0; j < inner; ++j)
      if (std::isinf(mx[j]) && mx[j] < 0)
        mx[j] = T(0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < inner; ++j) {
        T e = std::exp(xb[i * inner + j] - mx[j]);
        if constexpr (!Log)
          yb[i * inner + j] = e;
        sum[j] += e;
      }
    if constexpr (Log) {
      for (int64_t j = 0; j < inner; ++j)
        sum[j] = std::log(sum[j]);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < inner; ++j)
          yb[i * inner + j] = xb[i * inner + j] - mx[j] - sum[j];
    } else {
      for (int64_t j = 0; j < inner; ++j)
        sum[j] = T(1) / sum[j];
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < inner; ++j)
          yb[i * inner + j] *= sum[j];
    }
  }
}

} // namespace

llvm::Error planSoftmax(const KernelContext &ctx, SoftmaxPlan &p) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
  bool legacy = ctx.opsetVersion < 13; // coerce to 2-D at axis
  int64_t axis = attrInt(ctx.node, "axis", legacy ? 1 : -1);
  int64_t r = x.rank();
  if (r == 0)
    return kernelError(ctx, "input must have rank >= 1, got " + x.describe());
  if (auto e = normalizeAxis(ctx, axis, r, "axis", /*inclusive=*/legacy))
    return e;
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t k = 0; k < axis; ++k)
    outer *= x.dim(k);
  if (legacy) {
    for (int64_t k = axis; k < r; ++k)
      n *= x.dim(k);
  } else {
    n = x.dim(axis);
    for (int64_t k = axis + 1; k < r; ++k)
      inner *= x.dim(k);
  }
  p.axis = axis;
  p.outer = outer;
  p.n = n;
  p.inner = inner;
  return llvm::Error::success();
}

namespace {

template <bool Log> llvm::Error softmaxKernel(KernelContext &ctx) {
  SoftmaxPlan p;
  if (auto e = planSoftmax(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType dt = x.dtype();
  int64_t outer = p.outer, n = p.n, inner = p.inner;
  if (dt == DType::Double) {
    Tensor y = Tensor::empty(dt, x.shape());
    if (x.numel())
      runSoftmax<double, Log>(x.data<double>(), y.data<double>(), outer, n, inner);
    ctx.outputs[0] = std::move(y);
    return llvm::Error::success();
  }
  Tensor xf = dt == DType::Float ? x : toFloat32(x);
  Tensor y = Tensor::empty(DType::Float, x.shape());
  if (x.numel())
    runSoftmax<float, Log>(xf.data<float>(), y.data<float>(), outer, n, inner);
  ctx.outputs[0] = dt == DType::Float ? std::move(y) : fromFloat32(y, dt);
  return llvm::Error::success();
}

} // namespace

llvm::Error planCumSum(const KernelContext &ctx, CumSumPlan &p) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &x = *input(ctx, 0), &a = *input(ctx, 1);
  DType dt = x.dtype();
  if (dt != DType::Float && dt != DType::Double && dt != DType::Int32 && dt != DType::Int64 &&
      !isHalfLike(dt))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16, int32, int64");
  if (a.numel() != 1 || a.rank() > 1 || (a.dtype() != DType::Int32 && a.dtype() != DType::Int64))
    return kernelError(ctx, "axis must be a 0-d or one-element int32/int64 tensor, got " +
                                a.describe());
  if (a.location() != Location::Host)
    return kernelError(ctx, "axis must be readable on the host");
  int64_t axis = a.dtype() == DType::Int64 ? a.data<int64_t>()[0] : a.data<int32_t>()[0];
  if (auto e = normalizeAxis(ctx, axis, x.rank()))
    return e;
  p = CumSumPlan();
  p.axis = axis;
  for (int64_t k = 0; k < x.rank(); ++k)
    (k < axis ? p.outer : k == axis ? p.n : p.inner) *= x.dim(k);
  p.exclusive = attrInt(ctx.node, "exclusive", 0) != 0;
  p.reverse = attrInt(ctx.node, "reverse", 0) != 0;
  return llvm::Error::success();
}

namespace {

/// Sums of x viewed as [outer, n, inner] along n, in the order of the axis
/// (from its end when reversed), rounded to T at each output. Integers wrap.
template <class T> void cumSumRows(const T *x, T *y, const CumSumPlan &p) {
  using Acc = std::conditional_t<std::is_integral_v<T>, uint64_t, T>;
  for (int64_t o = 0; o < p.outer; ++o)
    for (int64_t c = 0; c < p.inner; ++c) {
      Acc s = 0;
      for (int64_t j = 0; j < p.n; ++j) {
        int64_t i = (o * p.n + (p.reverse ? p.n - 1 - j : j)) * p.inner + c;
        Acc v = static_cast<Acc>(x[i]);
        if (!p.exclusive)
          s += v;
        y[i] = static_cast<T>(s);
        if (p.exclusive)
          s += v;
      }
    }
}

llvm::Error cumSumKernel(KernelContext &ctx) {
  CumSumPlan p;
  if (auto e = planCumSum(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  Tensor xw = widen(x); // half types sum in float32, as the CUDA kernel
  Tensor y = Tensor::empty(xw.dtype(), x.shape());
  if (x.numel() > 0)
    visitNumeric(xw.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cumSumRows<T>(xw.data<T>(), y.data<T>(), p);
    });
  ctx.outputs[0] = narrow(y, x.dtype());
  return llvm::Error::success();
}

} // namespace

void registerNormKernels(KernelRegistry &reg) {
  reg.add("", "LayerNormalization", layerNormKernel);
  reg.add("", "ReduceMean", [](KernelContext &c) { return reduceKernel(c, RedKind::Mean); });
  reg.add("", "ReduceSum", [](KernelContext &c) { return reduceKernel(c, RedKind::Sum); });
  reg.add("", "ReduceMax", [](KernelContext &c) { return reduceKernel(c, RedKind::Max); });
  reg.add("", "ReduceMin", [](KernelContext &c) { return reduceKernel(c, RedKind::Min); });
  reg.add("", "ReduceProd", [](KernelContext &c) { return reduceKernel(c, RedKind::Prod); });
  reg.add("", "ReduceL1", [](KernelContext &c) { return reduceKernel(c, RedKind::L1); });
  reg.add("", "ReduceL2", [](KernelContext &c) { return reduceKernel(c, RedKind::L2); });
  reg.add("", "ReduceSumSquare",
          [](KernelContext &c) { return reduceKernel(c, RedKind::SumSquare); });
  reg.add("", "ReduceLogSum", [](KernelContext &c) { return reduceKernel(c, RedKind::LogSum); });
  reg.add("", "ReduceLogSumExp",
          [](KernelContext &c) { return reduceKernel(c, RedKind::LogSumExp); });
  reg.add("", "Softmax", softmaxKernel<false>);
  reg.add("", "LogSoftmax", softmaxKernel<true>);
  reg.add("", "CumSum", cumSumKernel);
}

} // namespace qn::rt::cpu
