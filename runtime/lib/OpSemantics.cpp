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

} // namespace qn::rt::cpu
