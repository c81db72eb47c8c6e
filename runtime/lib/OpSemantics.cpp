//===- OpSemantics.cpp - Generic checks shared by the CPU and CUDA kernels -===//
//
// The generic helpers of OpSemantics.h; each op's planner is defined next to
// its CPU kernel (cpu/).
//
//===----------------------------------------------------------------------===//
#include "OpSemantics.h"
#include "StrCat.h"

#include <algorithm>
#include <cstring>

#include "onnx/onnx_pb.h"

namespace qn::rt::cpu {

std::string shapeStr(llvm::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i)
      s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string describe(const Tensor *t) { return t ? t->describe() : std::string("<missing>"); }

llvm::Error kernelError(const KernelContext &ctx, const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 (nodeLabel(ctx.node) + ": " + msg).str());
}

llvm::Error checkArity(const KernelContext &ctx, size_t required, size_t maxInputs,
                       size_t outputs) {
  size_t given = ctx.inputs.size();
  // Trailing left-out inputs are fine; count the last present one.
  size_t last = 0;
  for (size_t i = 0; i < given; ++i)
    if (ctx.inputs[i] && ctx.inputs[i]->defined())
      last = i + 1;
  if (last > maxInputs)
    return kernelError(ctx, strCat("expects at most ", maxInputs, " inputs, got ", last));
  for (size_t i = 0; i < required; ++i)
    if (!input(ctx, i))
      return kernelError(ctx, strCat("expects ", required, " input", required == 1 ? "" : "s",
                                     ", input ", i, " is missing"));
  if (ctx.outputs.size() < outputs)
    return kernelError(ctx, strCat("expects ", outputs, " output", outputs == 1 ? "" : "s",
                                   ", got ", ctx.outputs.size()));
  return llvm::Error::success();
}

llvm::Error unsupportedDType(const KernelContext &ctx, const Tensor &t, llvm::StringRef supported) {
  return kernelError(ctx, strCat("unsupported dtype ", dtypeName(t.dtype()), " (input ",
                                 t.describe(), "); supported: ", supported));
}

llvm::Error normalizeAxis(const KernelContext &ctx, int64_t &axis, int64_t rank,
                          llvm::StringRef what, bool inclusive) {
  int64_t hi = inclusive ? rank : rank - 1;
  if (axis < -rank || axis > hi)
    return kernelError(ctx, strCat(what, " ", axis, " is out of range for rank ", rank));
  if (axis < 0)
    axis += rank;
  return llvm::Error::success();
}

llvm::Expected<std::vector<int64_t>> readInts(const KernelContext &ctx, const Tensor &t,
                                              llvm::StringRef what) {
  if (t.rank() > 1)
    return kernelError(ctx, strCat(what, " must be a 1-D tensor, got ", t.describe()));
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::Int64) {
    if (!v.empty())
      std::memcpy(v.data(), t.raw(), v.size() * 8);
  } else if (t.dtype() == DType::Int32) {
    const int32_t *p = t.data<int32_t>();
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = p[i];
  } else {
    return kernelError(ctx, strCat(what, " must be int64 (or int32), got ", t.describe()));
  }
  return v;
}

bool broadcastShapes(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                     std::vector<int64_t> &out) {
  size_t r = std::max(a.size(), b.size());
  out.assign(r, 1);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1)
      out[i] = da;
    else if (da == 1)
      out[i] = db;
    else
      return false;
  }
  return true;
}

llvm::SmallVector<int64_t, 8> contiguousStrides(llvm::ArrayRef<int64_t> shape) {
  llvm::SmallVector<int64_t, 8> s(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    s[i] = s[i + 1] * shape[i + 1];
  return s;
}

//===----------------------------------------------------------------------===//
// Parametric unary ops, IsNaN, Clip, Dropout
//===----------------------------------------------------------------------===//

const ActInfo *findAct(llvm::StringRef opType) {
  for (const ActInfo &a : kActs)
    if (opType == a.name)
      return &a;
  return nullptr;
}

llvm::Error planAct(const KernelContext &ctx, const ActInfo &info, ActParams &p) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType t = x.dtype();
  bool ok = t == DType::Float || t == DType::Double || isHalfLike(t) ||
            (info.integers && (t == DType::Int32 || t == DType::Int64 || t == DType::Int8));
  if (!ok)
    return unsupportedDType(ctx, x,
                            info.integers
                                ? "float32, float64, float16, bfloat16, int32, int64, int8"
                                : "float32, float64, float16, bfloat16");
  p.a = info.attrA ? attrFloat(ctx.node, info.attrA, info.defaultA) : 0.f;
  p.b = info.attrB ? attrFloat(ctx.node, info.attrB, info.defaultB) : 0.f;
  return llvm::Error::success();
}

llvm::Error checkIsNaN(const KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (x.dtype() != DType::Float && x.dtype() != DType::Double && !isHalfLike(x.dtype()))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
  return llvm::Error::success();
}

/// A one-element bound of Clip as a double (read on the host).
static llvm::Error clipBound(const KernelContext &ctx, const Tensor &x, size_t i,
                             const char *what, bool &has, double &v) {
  const Tensor *b = input(ctx, i);
  if (!b)
    return llvm::Error::success();
  if (b->dtype() != x.dtype() || b->numel() != 1)
    return kernelError(ctx, strCat(what, " must be a one-element tensor of the input's dtype (",
                                   dtypeName(x.dtype()), "), got ", b->describe()));
  if (b->location() != Location::Host)
    return kernelError(ctx, strCat(what, " must be readable on the host"));
  has = true;
  switch (b->dtype()) {
  case DType::Float: v = b->data<float>()[0]; break;
  case DType::Double: v = b->data<double>()[0]; break;
  case DType::Float16: v = halfToFloat(b->data<uint16_t>()[0]); break;
  case DType::BFloat16: v = bf16ToFloat(b->data<uint16_t>()[0]); break;
  case DType::Int32: v = b->data<int32_t>()[0]; break;
  case DType::Int64: v = static_cast<double>(b->data<int64_t>()[0]); break;
  case DType::Int8: v = b->data<int8_t>()[0]; break;
  default: has = false; break;
  }
  return llvm::Error::success();
}

llvm::Error planClip(const KernelContext &ctx, ClipPlan &p) {
  if (auto e = checkArity(ctx, 1, 3))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType t = x.dtype();
  if (!(t == DType::Float || t == DType::Double || isHalfLike(t) || t == DType::Int32 ||
        t == DType::Int64 || t == DType::Int8))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16, int32, int64, int8");
  if (ctx.opsetVersion < 11) {
    if (hasAttr(ctx.node, "min")) {
      p.hasLo = true;
      p.lo = attrFloat(ctx.node, "min", 0.f);
    }
    if (hasAttr(ctx.node, "max")) {
      p.hasHi = true;
      p.hi = attrFloat(ctx.node, "max", 0.f);
    }
    return llvm::Error::success();
  }
  if (auto e = clipBound(ctx, x, 1, "min", p.hasLo, p.lo))
    return e;
  return clipBound(ctx, x, 2, "max", p.hasHi, p.hi);
}

llvm::Error planDropout(const KernelContext &ctx, bool &wantMask) {
  if (auto e = checkArity(ctx, 1, 3))
    return e;
  wantMask = ctx.node.output_size() > 1 && !ctx.node.output(1).empty();
  const Tensor *ratio = input(ctx, 1), *training = input(ctx, 2);
  bool train = false;
  if (training) {
    if (training->dtype() != DType::Bool || training->numel() != 1 ||
        training->location() != Location::Host)
      return kernelError(ctx, strCat("training_mode must be a one-element bool, got ",
                                     training->describe()));
    train = training->data<uint8_t>()[0] != 0;
  }
  double r = 0.5;
  if (ratio && ratio->numel() == 1 && ratio->location() == Location::Host) {
    if (ratio->dtype() == DType::Float)
      r = ratio->data<float>()[0];
    else if (ratio->dtype() == DType::Double)
      r = ratio->data<double>()[0];
  }
  if (train && r > 0)
    return kernelError(ctx, "training_mode is true: random dropout is not supported (export "
                            "the model in eval mode)");
  return llvm::Error::success();
}

} // namespace qn::rt::cpu
