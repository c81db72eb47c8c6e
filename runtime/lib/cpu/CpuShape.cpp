//===- CpuShape.cpp - Shape and data-movement CPU kernels ------------------===//
//
// Reshape, Flatten, Squeeze, Unsqueeze, Identity, Transpose, Slice, Concat,
// Gather, GatherND, ScatterND, Shape, Constant, Expand, Range, ConstantOfShape,
// Split, Trilu (the ops of cuda/CudaShape.cpp, and Range and ConstantOfShape).
//
// Reshape, Flatten, Squeeze, Unsqueeze and Identity return views that share
// the input's buffer (no copy); kernels never write into their inputs.
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "onnx/onnx_pb.h"
#include "qn/runtime/TensorProto.h"

namespace qn::rt::cpu {
namespace {

llvm::Error reshapeKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 2))
    return e;
  const Tensor &x = *input(ctx, 0);
  std::vector<int64_t> spec;
  if (const Tensor *s = input(ctx, 1)) {
    auto v = readInts(ctx, *s, "shape input");
    if (!v)
      return v.takeError();
    spec = std::move(*v);
  } else if (hasAttr(ctx.node, "shape")) { // opset < 5
    spec = attrInts(ctx.node, "shape");
  } else {
    return kernelError(ctx, "missing the shape input");
  }
  bool allowZero = attrInt(ctx.node, "allowzero", 0) != 0;
  std::vector<int64_t> out(spec.size());
  int64_t inferAt = -1, known = 1;
  bool hasZero = false;
  auto bad = [&](const llvm::Twine &why) {
    return kernelError(ctx,
                       "cannot reshape " + x.describe() + " to " + shapeStr(spec) + ": " + why);
  };
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t v = spec[i];
    if (v == 0 && !allowZero) {
      if (static_cast<int64_t>(i) >= x.rank())
        return bad(strCat("0 at position ", i, " copies a dimension the input lacks"));
      v = x.dim(static_cast<int64_t>(i));
    } else if (v == 0) {
      hasZero = true;
    }
    if (v == -1) {
      if (inferAt >= 0)
        return bad("more than one -1");
      inferAt = static_cast<int64_t>(i);
      continue;
    }
    if (v < 0)
      return bad(strCat("invalid dimension ", v));
    out[i] = v;
    if (__builtin_mul_overflow(known, v, &known))
      return bad("size overflow");
  }
  int64_t n = x.numel();
  if (inferAt >= 0) {
    if (hasZero)
      return bad("-1 together with 0 under allowzero=1");
    if (known == 0 || n % known != 0)
      return bad("the -1 dimension cannot be inferred");
    out[inferAt] = n / known;
    known = n;
  }
  if (known != n)
    return bad(strCat("element counts differ (", n, " vs ", known, ")"));
  ctx.outputs[0] = x.reshaped(out);
  return llvm::Error::success();
}

llvm::Error flattenKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  int64_t axis = attrInt(ctx.node, "axis", 1);
  if (auto e = normalizeAxis(ctx, axis, x.rank(), "axis", /*inclusive=*/true))
    return e;
  int64_t a = 1, b = 1;
  for (int64_t k = 0; k < x.rank(); ++k)
    (k < axis ? a : b) *= x.dim(k);
  ctx.outputs[0] = x.reshaped({a, b});
  return llvm::Error::success();
}

llvm::Error identityKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  ctx.outputs[0] = *input(ctx, 0);
  return llvm::Error::success();
}

} // namespace

llvm::Expected<StridedView> transposeView(const KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  int64_t r = x.rank();
  std::vector<int64_t> perm = attrInts(ctx.node, "perm");
  if (!hasAttr(ctx.node, "perm")) {
    perm.resize(r);
    for (int64_t i = 0; i < r; ++i)
      perm[i] = r - 1 - i;
  }
  if (static_cast<int64_t>(perm.size()) != r)
    return kernelError(ctx,
                       "perm " + shapeStr(perm) + " does not match the rank of " + x.describe());
  std::vector<bool> seen(r, false);
  for (int64_t &p : perm) {
    if (p < -r || p >= r)
      return kernelError(ctx, "perm " + shapeStr(perm) + " is not a permutation of the axes of " +
                                  x.describe());
    if (p < 0)
      p += r;
    if (seen[p])
      return kernelError(ctx, "perm " + shapeStr(perm) + " repeats an axis");
    seen[p] = true;
  }
  auto cs = contiguousStrides(x.shape());
  std::vector<int64_t> outShape(r), strides(r);
  for (int64_t i = 0; i < r; ++i) {
    outShape[i] = x.dim(perm[i]);
    strides[i] = cs[perm[i]];
  }
  if (!isSupported(x.dtype()))
    return unsupportedDType(ctx, x, "any defined dtype");
  StridedView v;
  v.shape = std::move(outShape);
  v.strides = std::move(strides);
  return v;
}

namespace {

/// `batches` row-major [M, N] matrices transposed into [N, M], in tiles that
/// stay in cache (the backward pass's X^T of a Linear: an element-by-element
/// strided walk misses the cache on every write).
template <typename T>
void transposeLastTwo(const T *x, T *y, int64_t batches, int64_t M, int64_t N) {
  constexpr int64_t kTile = 32;
  for (int64_t b = 0; b < batches; ++b, x += M * N, y += M * N)
    for (int64_t i0 = 0; i0 < M; i0 += kTile)
      for (int64_t j0 = 0; j0 < N; j0 += kTile) {
        const int64_t i1 = std::min(M, i0 + kTile), j1 = std::min(N, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j)
            y[j * M + i] = x[i * N + j];
      }
}

llvm::Error transposeKernel(KernelContext &ctx) {
  auto v = transposeView(ctx);
  if (!v)
    return v.takeError();
  const Tensor &x = *input(ctx, 0);
  Tensor y = Tensor::empty(x.dtype(), v->shape);
  const int64_t r = x.rank();
  const size_t es = dtypeSize(x.dtype());
  // The last two axes swapped, the others in place: tiled.
  bool lastTwo = r >= 2 && v->shape[r - 2] == x.dim(r - 1) && v->shape[r - 1] == x.dim(r - 2) &&
                 v->strides[r - 2] == 1 && v->strides[r - 1] == x.dim(r - 1) &&
                 x.dim(r - 1) > 1 && x.dim(r - 2) > 1;
  const auto cs = contiguousStrides(x.shape());
  for (int64_t i = 0; lastTwo && i + 2 < r; ++i)
    lastTwo = v->shape[i] == x.dim(i) && v->strides[i] == cs[i];
  if (x.numel() && lastTwo && (es == 2 || es == 4 || es == 8)) {
    const int64_t M = x.dim(r - 2), N = x.dim(r - 1), batches = x.numel() / (M * N);
    if (es == 4)
      transposeLastTwo(static_cast<const uint32_t *>(x.raw()), static_cast<uint32_t *>(y.raw()),
                       batches, M, N);
    else if (es == 8)
      transposeLastTwo(static_cast<const uint64_t *>(x.raw()), static_cast<uint64_t *>(y.raw()),
                       batches, M, N);
    else
      transposeLastTwo(static_cast<const uint16_t *>(x.raw()), static_cast<uint16_t *>(y.raw()),
                       batches, M, N);
  } else if (x.numel()) {
    stridedCopy(x.raw(), 0, v->shape, v->strides, y.raw(), es);
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

/// Axes of Squeeze/Unsqueeze: the second input (opset >= 13) or the `axes`
/// attribute (older opsets). `given` says whether any were specified.
llvm::Expected<std::vector<int64_t>> axesOf(KernelContext &ctx, bool &given) {
  given = false;
  if (const Tensor *t = input(ctx, 1)) {
    given = true;
    return readInts(ctx, *t, "axes input");
  }
  if (hasAttr(ctx.node, "axes")) {
    given = true;
    return attrInts(ctx.node, "axes");
  }
  return std::vector<int64_t>();
}

llvm::Error squeezeKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 2))
    return e;
  const Tensor &x = *input(ctx, 0);
  bool given;
  auto axes = axesOf(ctx, given);
  if (!axes)
    return axes.takeError();
  int64_t r = x.rank();
  std::vector<bool> drop(r, false);
  if (axes->empty()) {
    for (int64_t k = 0; k < r; ++k)
      drop[k] = x.dim(k) == 1;
  } else {
    for (int64_t a : *axes) {
      if (auto e = normalizeAxis(ctx, a, r, "squeeze axis"))
        return e;
      if (drop[a])
        return kernelError(ctx, "axes " + shapeStr(*axes) + " repeat an axis");
      if (x.dim(a) != 1)
        return kernelError(
            ctx, strCat("cannot squeeze axis ", a, " of ", x.describe(), ": its size is not 1"));
      drop[a] = true;
    }
  }
  std::vector<int64_t> out;
  for (int64_t k = 0; k < r; ++k)
    if (!drop[k])
      out.push_back(x.dim(k));
  ctx.outputs[0] = x.reshaped(out);
  return llvm::Error::success();
}

llvm::Error unsqueezeKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 2))
    return e;
  const Tensor &x = *input(ctx, 0);
  bool given;
  auto axes = axesOf(ctx, given);
  if (!axes)
    return axes.takeError();
  if (!given)
    return kernelError(ctx, "missing axes");
  int64_t outRank = x.rank() + static_cast<int64_t>(axes->size());
  std::vector<bool> ins(outRank, false);
  for (int64_t a : *axes) {
    if (auto e = normalizeAxis(ctx, a, outRank, "unsqueeze axis"))
      return e;
    if (ins[a])
      return kernelError(ctx, "axes " + shapeStr(*axes) + " repeat an axis");
    ins[a] = true;
  }
  std::vector<int64_t> out(outRank);
  int64_t j = 0;
  for (int64_t k = 0; k < outRank; ++k)
    out[k] = ins[k] ? 1 : x.dim(j++);
  ctx.outputs[0] = x.reshaped(out);
  return llvm::Error::success();
}

} // namespace

llvm::Error concatShape(const KernelContext &ctx, int64_t &axisOut,
                        std::vector<int64_t> &outShapeOut) {
  size_t n = ctx.inputs.size();
  if (n == 0)
    return kernelError(ctx, "expects at least one input");
  if (auto e = checkArity(ctx, n, n))
    return e;
  if (!hasAttr(ctx.node, "axis"))
    return kernelError(ctx, "missing attribute 'axis'");
  const Tensor &first = *input(ctx, 0);
  int64_t r = first.rank();
  if (r == 0)
    return kernelError(ctx, "cannot concatenate 0-d tensors");
  int64_t axis = attrInt(ctx.node, "axis", 0);
  if (auto e = normalizeAxis(ctx, axis, r))
    return e;
  std::vector<int64_t> outShape = first.shape();
  int64_t total = 0;
  auto mismatch = [&]() {
    std::string s;
    for (size_t i = 0; i < n; ++i)
      s += (i ? ", " : "") + ctx.inputs[i]->describe();
    return kernelError(ctx, strCat("inputs do not concatenate along axis ", axis, ": ", s));
  };
  for (size_t i = 0; i < n; ++i) {
    const Tensor &t = *ctx.inputs[i];
    if (t.dtype() != first.dtype() || t.rank() != r)
      return mismatch();
    for (int64_t k = 0; k < r; ++k)
      if (k != axis && t.dim(k) != first.dim(k))
        return mismatch();
    total += t.dim(axis);
  }
  outShape[axis] = total;
  if (!isSupported(first.dtype()))
    return unsupportedDType(ctx, first, "any defined dtype");
  axisOut = axis;
  outShapeOut = std::move(outShape);
  return llvm::Error::success();
}

namespace {

llvm::Error concatKernel(KernelContext &ctx) {
  int64_t axis;
  std::vector<int64_t> outShape;
  if (auto e = concatShape(ctx, axis, outShape))
    return e;
  size_t n = ctx.inputs.size();
  const Tensor &first = *input(ctx, 0);
  int64_t r = first.rank(), total = outShape[axis];
  size_t es = dtypeSize(first.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < axis; ++k)
    outer *= outShape[k];
  for (int64_t k = axis + 1; k < r; ++k)
    inner *= outShape[k];
  Tensor y = Tensor::empty(first.dtype(), outShape);
  char *dst = static_cast<char *>(y.raw());
  size_t rowBytes = static_cast<size_t>(total * inner) * es;
  size_t off = 0;
  for (size_t i = 0; i < n; ++i) {
    const Tensor &t = *ctx.inputs[i];
    size_t chunk = static_cast<size_t>(t.dim(axis) * inner) * es;
    if (chunk) {
      const char *src = static_cast<const char *>(t.raw());
      for (int64_t o = 0; o < outer; ++o)
        std::memcpy(dst + o * rowBytes + off, src + o * chunk, chunk);
    }
    off += chunk;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

llvm::Expected<StridedView> sliceView(const KernelContext &ctx) {
  const bool legacy = ctx.opsetVersion < 10; // starts/ends/axes as attributes
  if (auto e = checkArity(ctx, legacy ? 1 : 3, legacy ? 1 : 5))
    return e;
  const Tensor &x = *input(ctx, 0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (legacy) {
    starts = attrInts(ctx.node, "starts");
    ends = attrInts(ctx.node, "ends");
    axes = attrInts(ctx.node, "axes");
  } else {
    auto s = readInts(ctx, *input(ctx, 1), "starts");
    if (!s)
      return s.takeError();
    starts = std::move(*s);
    auto e = readInts(ctx, *input(ctx, 2), "ends");
    if (!e)
      return e.takeError();
    ends = std::move(*e);
    if (const Tensor *a = input(ctx, 3)) {
      auto v = readInts(ctx, *a, "axes");
      if (!v)
        return v.takeError();
      axes = std::move(*v);
    }
    if (const Tensor *st = input(ctx, 4)) {
      auto v = readInts(ctx, *st, "steps");
      if (!v)
        return v.takeError();
      steps = std::move(*v);
    }
  }
  size_t k = starts.size();
  if (ends.size() != k)
    return kernelError(ctx, "starts " + shapeStr(starts) + " and ends " + shapeStr(ends) +
                                " differ in length");
  bool axesGiven = !axes.empty() || (!legacy && input(ctx, 3));
  if (!axesGiven) {
    axes.resize(k);
    for (size_t i = 0; i < k; ++i)
      axes[i] = static_cast<int64_t>(i);
  }
  if (axes.size() != k)
    return kernelError(ctx, "axes " + shapeStr(axes) + " and starts " + shapeStr(starts) +
                                " differ in length");
  if (steps.empty())
    steps.assign(k, 1);
  if (steps.size() != k)
    return kernelError(ctx, "steps " + shapeStr(steps) + " and starts " + shapeStr(starts) +
                                " differ in length");
  int64_t r = x.rank();
  std::vector<int64_t> start(r, 0), step(r, 1), outShape = x.shape();
  std::vector<bool> seen(r, false);
  for (size_t i = 0; i < k; ++i) {
    int64_t a = axes[i];
    if (auto e = normalizeAxis(ctx, a, r, "slice axis"))
      return e;
    if (seen[a])
      return kernelError(ctx, "axes " + shapeStr(axes) + " repeat an axis");
    seen[a] = true;
    int64_t d = x.dim(a), s = starts[i], en = ends[i], st = steps[i];
    if (st == 0)
      return kernelError(ctx, "slice step must not be 0");
    if (s < 0)
      s += d;
    if (en < 0)
      en += d;
    int64_t len;
    int64_t dm = std::max<int64_t>(d, 1);
    if (d == 0) {
      len = 0;
    } else if (st > 0) {
      st = std::min(st, dm); // larger steps select the same single element
      s = std::clamp<int64_t>(s, 0, d);
      en = std::clamp<int64_t>(en, 0, d);
      len = en > s ? (en - s + st - 1) / st : 0;
    } else {
      st = std::max(st, -dm);
      s = std::clamp<int64_t>(s, 0, d - 1);
      en = std::clamp<int64_t>(en, -1, d - 1);
      len = s > en ? (s - en + (-st) - 1) / (-st) : 0;
    }
    start[a] = len > 0 ? s : 0;
    step[a] = st;
    outShape[a] = len;
  }
  if (!isSupported(x.dtype()))
    return unsupportedDType(ctx, x, "any defined dtype");
  auto cs = contiguousStrides(x.shape());
  StridedView v;
  v.strides.resize(r);
  for (int64_t a = 0; a < r; ++a) {
    v.base += start[a] * cs[a];
    v.strides[a] = cs[a] * step[a];
  }
  v.shape = std::move(outShape);
  return v;
}

namespace {

llvm::Error sliceKernel(KernelContext &ctx) {
  auto v = sliceView(ctx);
  if (!v)
    return v.takeError();
  const Tensor &x = *input(ctx, 0);
  Tensor y = Tensor::empty(x.dtype(), v->shape);
  if (y.numel() > 0)
    stridedCopy(x.raw(), v->base, v->shape, v->strides, y.raw(), dtypeSize(x.dtype()));
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error shapeKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  int64_t r = x.rank();
  int64_t s = attrInt(ctx.node, "start", 0), e = attrInt(ctx.node, "end", r);
  if (s < 0)
    s += r;
  if (e < 0)
    e += r;
  s = std::clamp<int64_t>(s, 0, r);
  e = std::clamp<int64_t>(e, 0, r);
  int64_t n = std::max<int64_t>(0, e - s);
  Tensor y = Tensor::empty(DType::Int64, {n});
  for (int64_t i = 0; i < n; ++i)
    y.data<int64_t>()[i] = x.dim(s + i);
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error constantKernel(KernelContext &ctx) {
  if (ctx.outputs.empty())
    return kernelError(ctx, "expects 1 output");
  const onnx::NodeProto &n = ctx.node;
  if (n.attribute_size() != 1)
    return kernelError(ctx,
                       strCat("expects exactly one value attribute, got ", n.attribute_size()));
  const onnx::AttributeProto &a = n.attribute(0);
  const std::string &name = a.name();
  if (name == "value") {
    auto t = tensorFromProto(a.t());
    if (!t)
      return kernelError(ctx, llvm::toString(t.takeError()));
    ctx.outputs[0] = std::move(*t);
  } else if (name == "value_float") {
    Tensor t = Tensor::empty(DType::Float, {});
    t.data<float>()[0] = a.f();
    ctx.outputs[0] = std::move(t);
  } else if (name == "value_floats") {
    Tensor t = Tensor::empty(DType::Float, {a.floats_size()});
    std::copy(a.floats().begin(), a.floats().end(), t.data<float>());
    ctx.outputs[0] = std::move(t);
  } else if (name == "value_int") {
    Tensor t = Tensor::empty(DType::Int64, {});
    t.data<int64_t>()[0] = a.i();
    ctx.outputs[0] = std::move(t);
  } else if (name == "value_ints") {
    Tensor t = Tensor::empty(DType::Int64, {a.ints_size()});
    std::copy(a.ints().begin(), a.ints().end(), t.data<int64_t>());
    ctx.outputs[0] = std::move(t);
  } else {
    return kernelError(ctx, "unsupported attribute '" + name + "'");
  }
  return llvm::Error::success();
}

} // namespace

llvm::Error gatherShape(const KernelContext &ctx, GatherShape &g) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &data = *input(ctx, 0);
  const Tensor &idx = *input(ctx, 1);
  if (idx.dtype() != DType::Int64 && idx.dtype() != DType::Int32)
    return unsupportedDType(ctx, idx, "int64, int32 indices");
  size_t es = dtypeSize(data.dtype());
  if (es == 0)
    return unsupportedDType(ctx, data, "any known dtype");
  int64_t axis = attrInt(ctx.node, "axis", 0);
  if (auto e = normalizeAxis(ctx, axis, data.rank()))
    return e;
  std::vector<int64_t> outShape;
  for (int64_t i = 0; i < axis; ++i)
    outShape.push_back(data.dim(i));
  for (int64_t d : idx.shape())
    outShape.push_back(d);
  for (int64_t i = axis + 1; i < data.rank(); ++i)
    outShape.push_back(data.dim(i));
  int64_t outer = 1, inner = 1, n = data.dim(axis), count = idx.numel();
  for (int64_t i = 0; i < axis; ++i)
    outer *= data.dim(i);
  for (int64_t i = axis + 1; i < data.rank(); ++i)
    inner *= data.dim(i);
  g.axis = axis;
  g.outer = outer;
  g.n = n;
  g.inner = inner;
  g.count = count;
  g.outShape = std::move(outShape);
  return llvm::Error::success();
}

namespace {

/// Gather(data, indices; axis): out = data with axis replaced by the
/// indices' shape. Negative indices count from the end; any index outside
/// [-n, n) is an error naming the node.
llvm::Error gatherKernel(KernelContext &ctx) {
  GatherShape g;
  if (auto e = gatherShape(ctx, g))
    return e;
  const Tensor &data = *input(ctx, 0);
  const Tensor &idx = *input(ctx, 1);
  size_t es = dtypeSize(data.dtype());
  int64_t axis = g.axis, outer = g.outer, n = g.n, inner = g.inner, count = g.count;
  const std::vector<int64_t> &outShape = g.outShape;
  std::vector<int64_t> where(static_cast<size_t>(count));
  for (int64_t j = 0; j < count; ++j) {
    int64_t v = idx.dtype() == DType::Int64 ? idx.data<int64_t>()[j]
                                            : static_cast<int64_t>(idx.data<int32_t>()[j]);
    if (v < -n || v >= n)
      return kernelError(ctx, strCat("index ", v, " is out of range for axis ", axis,
                                     " of size ", n));
    where[j] = v < 0 ? v + n : v;
  }
  Tensor y = Tensor::empty(data.dtype(), outShape);
  size_t row = static_cast<size_t>(inner) * es;
  const char *src = static_cast<const char *>(data.raw());
  char *dst = static_cast<char *>(y.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < count; ++j)
      if (row)
        std::memcpy(dst + (o * count + j) * row, src + (o * n + where[j]) * row, row);
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

//===----------------------------------------------------------------------===//
// GatherND, ScatterND
//===----------------------------------------------------------------------===//

namespace {

/// The checks GatherND and ScatterND share: data of rank >= 1 (any dtype),
/// int64 indices of rank >= 1 whose last dim k is in [1, rank(data) - b], and
/// the tuple layout (IndexNDPlan).
llvm::Error planIndexND(const KernelContext &ctx, int64_t b, IndexNDPlan &p) {
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1);
  if (dtypeSize(data.dtype()) == 0)
    return unsupportedDType(ctx, data, "any known dtype");
  if (idx.dtype() != DType::Int64)
    return unsupportedDType(ctx, idx, "int64 indices");
  int64_t r = data.rank(), q = idx.rank();
  if (r < 1 || q < 1)
    return kernelError(ctx, "data and indices must have rank >= 1, got " + data.describe() +
                                " and " + idx.describe());
  if (b < 0 || b >= std::min(r, q))
    return kernelError(ctx, strCat("batch_dims ", b, " must be in [0, ", std::min(r, q),
                                   ") for data ", data.describe(), " and indices ",
                                   idx.describe()));
  for (int64_t k = 0; k < b; ++k)
    if (data.dim(k) != idx.dim(k))
      return kernelError(ctx, strCat("the first ", b, " (batch) dims of data ", data.describe(),
                                     " and indices ", idx.describe(), " differ"));
  int64_t k = idx.dim(-1);
  if (k < 1 || k > r - b)
    return kernelError(ctx, strCat("the last dim of indices ", idx.describe(), " must be in [1, ",
                                   r - b, "] for data ", data.describe(),
                                   b ? strCat(" and batch_dims ", b) : std::string()));
  p = IndexNDPlan();
  p.firstAxis = b;
  for (int64_t a = 0; a < b; ++a)
    p.batch *= data.dim(a);
  p.tuples = 1;
  for (int64_t a = b; a < q - 1; ++a)
    p.tuples *= idx.dim(a);
  for (int64_t a = b + k; a < r; ++a)
    p.slice *= data.dim(a);
  auto cs = contiguousStrides(data.shape());
  p.dataBatch = 1;
  for (int64_t a = b; a < r; ++a)
    p.dataBatch *= data.dim(a);
  for (int64_t m = 0; m < k; ++m) {
    p.dims.push_back(data.dim(b + m));
    p.strides.push_back(cs[b + m]);
  }
  return llvm::Error::success();
}

/// The element offset (within its batch) of the slice that tuple `ix` selects;
/// an error naming the node and the axis when a component is out of range.
llvm::Error sliceOffset(const KernelContext &ctx, const IndexNDPlan &p, const int64_t *ix,
                        int64_t &off) {
  off = 0;
  for (size_t m = 0; m < p.dims.size(); ++m) {
    int64_t v = ix[m], d = p.dims[m];
    if (v < -d || v >= d)
      return kernelError(ctx, strCat("index ", v, " is out of range for axis ",
                                     p.firstAxis + static_cast<int64_t>(m), " of size ", d));
    off += (v < 0 ? v + d : v) * p.strides[m];
  }
  return llvm::Error::success();
}

} // namespace

llvm::Error planGatherND(const KernelContext &ctx, IndexNDPlan &p) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  if (auto e = planIndexND(ctx, attrInt(ctx.node, "batch_dims", 0), p))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1);
  p.outShape.assign(idx.shape().begin(), idx.shape().end() - 1);
  p.outShape.insert(p.outShape.end(), data.shape().begin() + p.firstAxis + idx.dim(-1),
                    data.shape().end());
  return llvm::Error::success();
}

llvm::Error planScatterND(const KernelContext &ctx, IndexNDPlan &p, ScatterReduction &red) {
  if (auto e = checkArity(ctx, 3, 3))
    return e;
  std::string r = attrString(ctx.node, "reduction", "none");
  bool minMax = ctx.opsetVersion >= 18;
  if (r == "none")
    red = ScatterReduction::None;
  else if (r == "add")
    red = ScatterReduction::Add;
  else if (r == "mul")
    red = ScatterReduction::Mul;
  else if (r == "max" && minMax)
    red = ScatterReduction::Max;
  else if (r == "min" && minMax)
    red = ScatterReduction::Min;
  else
    return kernelError(ctx, strCat("unsupported reduction '", r, "' (opset ", ctx.opsetVersion,
                                   ": none, add, mul", minMax ? ", max, min)" : ")"));
  if (auto e = planIndexND(ctx, 0, p))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1), &upd = *input(ctx, 2);
  std::vector<int64_t> want(idx.shape().begin(), idx.shape().end() - 1);
  want.insert(want.end(), data.shape().begin() + idx.dim(-1), data.shape().end());
  if (upd.dtype() != data.dtype() || upd.shape() != want)
    return kernelError(ctx, "updates " + upd.describe() + " must be " +
                                std::string(dtypeName(data.dtype())) + shapeStr(want) +
                                " for data " + data.describe() + " and indices " +
                                idx.describe());
  DType dt = data.dtype();
  if (red != ScatterReduction::None && dt != DType::Float && dt != DType::Double &&
      dt != DType::Int32 && dt != DType::Int64 && !isHalfLike(dt))
    return unsupportedDType(ctx, data, strCat("float32, float64, float16, bfloat16, int32, int64 "
                                              "(reduction '", r, "')"));
  p.outShape = data.shape();
  return llvm::Error::success();
}

namespace {

/// GatherND(data, indices; batch_dims): out[i, t, :] = the slice of data's
/// batch i at indices[i, t, :] (ONNX's definition, batches and tuples
/// flattened). Negative components count from the end.
llvm::Error gatherNDKernel(KernelContext &ctx) {
  IndexNDPlan p;
  if (auto e = planGatherND(ctx, p))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1);
  size_t es = dtypeSize(data.dtype());
  int64_t k = static_cast<int64_t>(p.dims.size());
  Tensor y = Tensor::empty(data.dtype(), p.outShape);
  const char *src = static_cast<const char *>(data.raw());
  char *dst = static_cast<char *>(y.raw());
  const int64_t *ix = idx.data<int64_t>();
  size_t row = static_cast<size_t>(p.slice) * es;
  for (int64_t i = 0; i < p.batch; ++i)
    for (int64_t t = 0; t < p.tuples; ++t) {
      int64_t off, j = i * p.tuples + t;
      if (auto e = sliceOffset(ctx, p, ix + j * k, off))
        return e;
      if (row)
        std::memcpy(dst + j * row, src + (i * p.dataBatch + off) * static_cast<int64_t>(es), row);
    }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

/// dst = reduce(dst, u), in T's arithmetic (half types: in float32, rounded
/// each time, as the CUDA kernel); integers wrap. Max/Min keep a NaN of either.
template <class T> T scatterApply(ScatterReduction red, T dst, T u) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    switch (red) {
    case ScatterReduction::Add: return static_cast<T>(static_cast<U>(dst) + static_cast<U>(u));
    case ScatterReduction::Mul: return static_cast<T>(static_cast<U>(dst) * static_cast<U>(u));
    case ScatterReduction::Max: return u > dst ? u : dst;
    case ScatterReduction::Min: return u < dst ? u : dst;
    default: return u;
    }
  } else {
    switch (red) {
    case ScatterReduction::Add: return dst + u;
    case ScatterReduction::Mul: return dst * u;
    case ScatterReduction::Max: return u != u || u > dst ? u : dst;
    case ScatterReduction::Min: return u != u || u < dst ? u : dst;
    default: return u;
    }
  }
}

template <class T, class Conv>
void scatterReduce(ScatterReduction red, T *y, const T *u, int64_t n, Conv conv) {
  for (int64_t c = 0; c < n; ++c)
    y[c] = conv.to(scatterApply(red, conv.from(y[c]), conv.from(u[c])));
}

struct SameConv {
  template <class T> static T from(T v) { return v; }
  template <class T> static T to(T v) { return v; }
};
struct HalfConv {
  static float from(uint16_t v) { return halfToFloat(v); }
  static uint16_t to(float v) { return floatToHalf(v); }
};
struct Bf16Conv {
  static float from(uint16_t v) { return bf16ToFloat(v); }
  static uint16_t to(float v) { return floatToBf16(v); }
};

/// ScatterND(data, indices, updates; reduction): a copy of data with the
/// slice at each tuple replaced by (or reduced with) its update, tuples in
/// order (the last of duplicate tuples wins without a reduction).
llvm::Error scatterNDKernel(KernelContext &ctx) {
  IndexNDPlan p;
  ScatterReduction red;
  if (auto e = planScatterND(ctx, p, red))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1), &upd = *input(ctx, 2);
  size_t es = dtypeSize(data.dtype());
  int64_t k = static_cast<int64_t>(p.dims.size());
  // Every index first: an error leaves no partial work behind.
  std::vector<int64_t> offs(static_cast<size_t>(p.tuples));
  for (int64_t t = 0; t < p.tuples; ++t)
    if (auto e = sliceOffset(ctx, p, idx.data<int64_t>() + t * k, offs[t]))
      return e;
  Tensor y = Tensor::empty(data.dtype(), data.shape());
  if (data.nbytes())
    std::memcpy(y.raw(), data.raw(), data.nbytes());
  char *dst = static_cast<char *>(y.raw());
  const char *src = static_cast<const char *>(upd.raw());
  size_t row = static_cast<size_t>(p.slice) * es;
  for (int64_t t = 0; t < p.tuples && row; ++t) {
    char *d = dst + offs[t] * static_cast<int64_t>(es);
    const char *u = src + t * static_cast<int64_t>(row);
    if (red == ScatterReduction::None) {
      std::memcpy(d, u, row);
      continue;
    }
    // planScatterND admits the float types, int32 and int64 with a reduction.
    if (data.dtype() == DType::Float16) {
      scatterReduce(red, reinterpret_cast<uint16_t *>(d), reinterpret_cast<const uint16_t *>(u),
                    p.slice, HalfConv{});
    } else if (data.dtype() == DType::BFloat16) {
      scatterReduce(red, reinterpret_cast<uint16_t *>(d), reinterpret_cast<const uint16_t *>(u),
                    p.slice, Bf16Conv{});
    } else {
      visitNumeric(data.dtype(), [&](auto tag) {
        using T = decltype(tag);
        scatterReduce(red, reinterpret_cast<T *>(d), reinterpret_cast<const T *>(u), p.slice,
                      SameConv{});
      });
    }
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Expand
//===----------------------------------------------------------------------===//

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

} // namespace

void registerShapeKernels(KernelRegistry &reg) {
  reg.add("", "Gather", gatherKernel);
  reg.add("", "GatherND", gatherNDKernel);
  reg.add("", "ScatterND", scatterNDKernel);
  reg.add("", "Reshape", reshapeKernel);
  reg.add("", "Flatten", flattenKernel);
  reg.add("", "Identity", identityKernel);
  reg.add("", "Transpose", transposeKernel);
  reg.add("", "Squeeze", squeezeKernel);
  reg.add("", "Unsqueeze", unsqueezeKernel);
  reg.add("", "Concat", concatKernel);
  reg.add("", "Slice", sliceKernel);
  reg.add("", "Shape", shapeKernel);
  reg.add("", "Constant", constantKernel);
  reg.add("", "Expand", expandKernel);
  reg.add("", "Range", rangeKernel);
  reg.add("", "ConstantOfShape", constantOfShapeKernel);
  reg.add("", "Split", splitKernel);
  reg.add("", "Trilu", triluKernel);
}

} // namespace qn::rt::cpu
