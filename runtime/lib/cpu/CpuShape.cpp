//===- CpuShape.cpp - Shape-manipulating CPU kernels -----------------------===//
//
// Reshape, Flatten, Squeeze, Unsqueeze and Identity return views that share
// the input's buffer (no copy); kernels never write into their inputs.
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <algorithm>
#include <cstring>

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

llvm::Error transposeKernel(KernelContext &ctx) {
  auto v = transposeView(ctx);
  if (!v)
    return v.takeError();
  const Tensor &x = *input(ctx, 0);
  Tensor y = Tensor::empty(x.dtype(), v->shape);
  if (x.numel())
    stridedCopy(x.raw(), 0, v->shape, v->strides, y.raw(), dtypeSize(x.dtype()));
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

void registerShapeKernels(KernelRegistry &reg) {
  reg.add("", "Gather", gatherKernel);
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
}

} // namespace qn::rt::cpu
