//===- CpuTransformer.cpp - CPU kernels for exported transformers ---------===//
//
// LayerNormalization, ReduceMean/ReduceSum/ReduceMax, Where, Expand, Range,
// ConstantOfShape, Split, Trilu, Sin, Cos, Not, And, Or, GreaterOrEqual,
// LessOrEqual, Max, Min.
//
// Broadcasting is done by materialising each operand at the output shape with
// stridedCopy (zero strides on broadcast axes); an operand that already has
// the output shape is used in place. float16/bfloat16 are computed in float32
// and rounded back.
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "onnx/onnx_pb.h"
#include "qn/runtime/TensorProto.h"

namespace qn::rt::cpu {
namespace {

//===----------------------------------------------------------------------===//
// Shared helpers
//===----------------------------------------------------------------------===//

/// `x` materialised at `outShape` (which it must broadcast to); `x` itself
/// when the shapes already agree.
Tensor broadcastTo(const Tensor &x, llvm::ArrayRef<int64_t> outShape) {
  if (llvm::ArrayRef<int64_t>(x.shape()) == outShape)
    return x;
  size_t r = outShape.size();
  llvm::SmallVector<int64_t, 8> xp(r - x.shape().size(), 1);
  xp.append(x.shape().begin(), x.shape().end());
  auto cs = contiguousStrides(xp);
  llvm::SmallVector<int64_t, 8> strides(r);
  for (size_t k = 0; k < r; ++k)
    strides[k] = xp[k] == 1 ? 0 : cs[k];
  Tensor y = Tensor::empty(x.dtype(), outShape);
  if (y.numel() > 0)
    stridedCopy(x.raw(), 0, outShape, strides, y.raw(), dtypeSize(x.dtype()));
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

/// float32 copy of a float16/bfloat16 tensor; the tensor itself otherwise.
Tensor widen(const Tensor &t) { return isHalfLike(t.dtype()) ? toFloat32(t) : t; }
/// Rounds a float32 result back to `to` when that is a half type.
Tensor narrow(const Tensor &t, DType to) { return isHalfLike(to) ? fromFloat32(t, to) : t; }

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

template <class T> void reduceRows(RedKind k, const T *x, T *y, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) {
    const T *p = x + r * len;
    if (k == RedKind::Max) {
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
  if (len == 0 && rows > 0 && (kind == RedKind::Max || dt == DType::Int32 || dt == DType::Int64) &&
      kind != RedKind::Sum)
    return kernelError(ctx, "cannot reduce an empty set of elements of " + x.describe());
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
  // Bring the reduced axes to the back (no copy when they already are).
  bool inOrder = std::is_sorted(perm.begin(), perm.end());
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
    if (len == 0) { // Sum: 0, Mean: NaN (float only)
      visitNumeric(xw.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T v = T(0);
        if constexpr (std::is_floating_point_v<T>)
          if (kind == RedKind::Mean)
            v = std::numeric_limits<T>::quiet_NaN();
        std::fill_n(y.data<T>(), rows, v);
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
// Where, Expand
//===----------------------------------------------------------------------===//

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

} // namespace

llvm::Error expandShape(const KernelContext &ctx, std::vector<int64_t> &shape) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &x = *input(ctx, 0);
  auto spec = readInts(ctx, *input(ctx, 1), "shape input");
  if (!spec)
    return spec.takeError();
  for (int64_t d : *spec)
    if (d < 0)
      return kernelError(ctx, "shape " + shapeStr(*spec) + " has a negative dimension");
  if (!isSupported(x.dtype()))
    return unsupportedDType(ctx, x, "any defined dtype");
  if (!broadcastShapes(x.shape(), *spec, shape))
    return kernelError(ctx, "cannot expand " + x.describe() + " to " + shapeStr(*spec));
  int64_t n;
  if (!checkedNumel(shape, 8, n))
    return kernelError(ctx, "output shape overflows: " + shapeStr(shape));
  return llvm::Error::success();
}

namespace {

llvm::Error expandKernel(KernelContext &ctx) {
  std::vector<int64_t> shape;
  if (auto e = expandShape(ctx, shape))
    return e;
  ctx.outputs[0] = broadcastTo(*input(ctx, 0), shape);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Range, ConstantOfShape
//===----------------------------------------------------------------------===//

constexpr int64_t kMaxRangeElems = int64_t(1) << 40;

template <class T>
llvm::Error rangeOf(KernelContext &ctx, T s, T l, T d, DType dt) {
  int64_t n;
  if constexpr (std::is_floating_point_v<T>) {
    double c = std::ceil((static_cast<double>(l) - s) / d);
    if (d == 0 || std::isnan(c))
      return kernelError(ctx, "delta must be non-zero and the bounds finite");
    if (c > static_cast<double>(kMaxRangeElems))
      return kernelError(ctx, strCat("range has too many elements (", c, ")"));
    n = c > 0 ? static_cast<int64_t>(c) : 0;
  } else {
    if (d == 0)
      return kernelError(ctx, "delta must be non-zero");
    // In 128 bits: limit - start can overflow int64.
    __int128 span = static_cast<__int128>(l) - s, dd = d;
    __int128 c = 0;
    if (span != 0 && (span > 0) == (dd > 0)) {
      c = span / dd;
      if (c * dd != span)
        ++c;
    }
    if (c > kMaxRangeElems)
      return kernelError(ctx, "range has too many elements");
    n = static_cast<int64_t>(c);
  }
  Tensor y = Tensor::empty(dt, {n});
  T *o = y.data<T>();
  for (int64_t i = 0; i < n; ++i) // start + i * delta, as the ONNX spec writes it
    o[i] = static_cast<T>(s + static_cast<std::conditional_t<std::is_floating_point_v<T>, T,
                                                             int64_t>>(i) * d);
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error rangeKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 3, 3))
    return e;
  const Tensor *in[3] = {input(ctx, 0), input(ctx, 1), input(ctx, 2)};
  DType dt = in[0]->dtype();
  for (const Tensor *t : in) {
    if (t->dtype() != dt)
      return kernelError(ctx, strCat("start, limit and delta differ in dtype: ", in[0]->describe(),
                                     ", ", in[1]->describe(), ", ", in[2]->describe()));
    if (t->numel() != 1 || t->rank() > 1)
      return kernelError(ctx, "start, limit and delta must be scalars, got " + t->describe());
  }
  auto v = [&](auto tag, int i) { return in[i]->data<decltype(tag)>()[0]; };
  switch (dt) {
  case DType::Float:
    return rangeOf<float>(ctx, v(float{}, 0), v(float{}, 1), v(float{}, 2), dt);
  case DType::Double:
    return rangeOf<double>(ctx, v(double{}, 0), v(double{}, 1), v(double{}, 2), dt);
  case DType::Int32:
    return rangeOf<int32_t>(ctx, v(int32_t{}, 0), v(int32_t{}, 1), v(int32_t{}, 2), dt);
  case DType::Int64:
    return rangeOf<int64_t>(ctx, v(int64_t{}, 0), v(int64_t{}, 1), v(int64_t{}, 2), dt);
  default:
    return unsupportedDType(ctx, *in[0], "float32, float64, int32, int64");
  }
}

llvm::Error constantOfShapeKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  auto shape = readInts(ctx, *input(ctx, 0), "shape input");
  if (!shape)
    return shape.takeError();
  int64_t n;
  if (!checkedNumel(*shape, 8, n))
    return kernelError(ctx, "invalid output shape " + shapeStr(*shape));
  Tensor value = Tensor::zeros(DType::Float, {1});
  for (const auto &a : ctx.node.attribute()) {
    if (a.name() != "value")
      continue;
    auto t = tensorFromProto(a.t());
    if (!t)
      return kernelError(ctx, "bad value attribute: " + llvm::toString(t.takeError()));
    if (t->numel() != 1)
      return kernelError(ctx, "value must hold exactly one element, got " + t->describe());
    value = std::move(*t);
  }
  size_t es = dtypeSize(value.dtype());
  if (es == 0)
    return unsupportedDType(ctx, value, "any defined dtype");
  Tensor y = Tensor::empty(value.dtype(), *shape);
  char *o = static_cast<char *>(y.raw());
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(o + i * es, value.raw(), es);
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Split, Trilu
//===----------------------------------------------------------------------===//

} // namespace

llvm::Error splitSizes(const KernelContext &ctx, int64_t &axisOut, std::vector<int64_t> &sizes) {
  if (auto e = checkArity(ctx, 1, 2))
    return e;
  const Tensor &x = *input(ctx, 0);
  size_t es = dtypeSize(x.dtype());
  if (!isSupported(x.dtype()) || es == 0)
    return unsupportedDType(ctx, x, "any defined dtype");
  if (x.rank() == 0)
    return kernelError(ctx, "cannot split a 0-d tensor");
  int64_t axis = attrInt(ctx.node, "axis", 0);
  if (auto e = normalizeAxis(ctx, axis, x.rank()))
    return e;
  int64_t d = x.dim(axis);
  int64_t outs = static_cast<int64_t>(ctx.outputs.size());
  sizes.clear();
  if (const Tensor *s = input(ctx, 1)) {
    auto v = readInts(ctx, *s, "split input");
    if (!v)
      return v.takeError();
    sizes = std::move(*v);
  } else if (hasAttr(ctx.node, "split")) { // opset < 13
    sizes = attrInts(ctx.node, "split");
  } else if (hasAttr(ctx.node, "num_outputs")) { // opset 18
    int64_t k = attrInt(ctx.node, "num_outputs", 0);
    if (k < 1 || k != outs)
      return kernelError(ctx, strCat("num_outputs ", k, " does not match the ", outs, " outputs"));
    int64_t each = (d + k - 1) / k;
    for (int64_t i = 0; i < k; ++i)
      sizes.push_back(std::clamp<int64_t>(d - i * each, 0, each));
  } else {
    if (outs < 1 || d % outs != 0)
      return kernelError(ctx, strCat("cannot split axis ", axis, " of ", x.describe(),
                                     " into ", outs, " equal parts"));
    sizes.assign(outs, d / outs);
  }
  if (static_cast<int64_t>(sizes.size()) != outs)
    return kernelError(ctx, strCat("split ", shapeStr(sizes), " has ", sizes.size(),
                                   " entries for ", outs, " outputs"));
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0)
      return kernelError(ctx, "split " + shapeStr(sizes) + " has a negative size");
    total += s;
  }
  if (total != d)
    return kernelError(ctx, strCat("split ", shapeStr(sizes), " sums to ", total,
                                   ", not the size ", d, " of axis ", axis, " of ",
                                   x.describe()));
  axisOut = axis;
  return llvm::Error::success();
}

namespace {

llvm::Error splitKernel(KernelContext &ctx) {
  int64_t axis;
  std::vector<int64_t> sizes;
  if (auto e = splitSizes(ctx, axis, sizes))
    return e;
  const Tensor &x = *input(ctx, 0);
  size_t es = dtypeSize(x.dtype());
  int64_t d = x.dim(axis);
  int64_t outs = static_cast<int64_t>(ctx.outputs.size());
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < axis; ++k)
    outer *= x.dim(k);
  for (int64_t k = axis + 1; k < x.rank(); ++k)
    inner *= x.dim(k);
  const char *src = static_cast<const char *>(x.raw());
  size_t rowBytes = static_cast<size_t>(d * inner) * es;
  size_t off = 0;
  for (int64_t i = 0; i < outs; ++i) {
    std::vector<int64_t> shape = x.shape();
    shape[axis] = sizes[i];
    Tensor y = Tensor::empty(x.dtype(), shape);
    size_t chunk = static_cast<size_t>(sizes[i] * inner) * es;
    if (chunk)
      for (int64_t o = 0; o < outer; ++o)
        std::memcpy(static_cast<char *>(y.raw()) + o * chunk, src + o * rowBytes + off, chunk);
    off += chunk;
    ctx.outputs[i] = std::move(y);
  }
  return llvm::Error::success();
}

} // namespace

llvm::Error triluParams(const KernelContext &ctx, int64_t &kOut, bool &upperOut) {
  if (auto e = checkArity(ctx, 1, 2))
    return e;
  const Tensor &x = *input(ctx, 0);
  size_t es = dtypeSize(x.dtype());
  if (!isSupported(x.dtype()) || es == 0)
    return unsupportedDType(ctx, x, "any defined dtype");
  if (x.rank() < 2)
    return kernelError(ctx, "input must have rank >= 2, got " + x.describe());
  int64_t k = 0;
  if (const Tensor *kt = input(ctx, 1)) {
    auto v = readInts(ctx, *kt, "k input");
    if (!v)
      return v.takeError();
    if (v->size() != 1)
      return kernelError(ctx, "k must be a scalar, got " + kt->describe());
    k = (*v)[0];
  }
  kOut = k;
  upperOut = attrInt(ctx.node, "upper", 1) != 0;
  return llvm::Error::success();
}

namespace {

llvm::Error triluKernel(KernelContext &ctx) {
  int64_t k;
  bool upper;
  if (auto e = triluParams(ctx, k, upper))
    return e;
  const Tensor &x = *input(ctx, 0);
  size_t es = dtypeSize(x.dtype());
  int64_t rows = x.dim(-2), cols = x.dim(-1);
  int64_t mats = rows > 0 && cols > 0 ? x.numel() / (rows * cols) : 0;
  Tensor y = Tensor::zeros(x.dtype(), x.shape());
  const char *src = static_cast<const char *>(x.raw());
  char *dst = static_cast<char *>(y.raw());
  // Row i keeps columns j with j - i >= k (upper) or j - i <= k (lower).
  k = std::clamp<int64_t>(k, -rows - 1, cols + 1);
  for (int64_t m = 0; m < mats; ++m)
    for (int64_t i = 0; i < rows; ++i) {
      int64_t lo = upper ? std::clamp<int64_t>(i + k, 0, cols) : 0;
      int64_t hi = upper ? cols : std::clamp<int64_t>(i + k + 1, 0, cols);
      size_t base = static_cast<size_t>((m * rows + i) * cols);
      if (hi > lo)
        std::memcpy(dst + (base + lo) * es, src + (base + lo) * es,
                    static_cast<size_t>(hi - lo) * es);
    }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Sin, Cos, Not, And, Or, GreaterOrEqual, LessOrEqual, Max, Min
//===----------------------------------------------------------------------===//

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

void registerTransformerKernels(KernelRegistry &reg) {
  reg.add("", "LayerNormalization", layerNormKernel);
  reg.add("", "ReduceMean", [](KernelContext &c) { return reduceKernel(c, RedKind::Mean); });
  reg.add("", "ReduceSum", [](KernelContext &c) { return reduceKernel(c, RedKind::Sum); });
  reg.add("", "ReduceMax", [](KernelContext &c) { return reduceKernel(c, RedKind::Max); });
  reg.add("", "Where", whereKernel);
  reg.add("", "Expand", expandKernel);
  reg.add("", "Range", rangeKernel);
  reg.add("", "ConstantOfShape", constantOfShapeKernel);
  reg.add("", "Split", splitKernel);
  reg.add("", "Trilu", triluKernel);
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
