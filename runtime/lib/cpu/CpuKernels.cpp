//===- CpuKernels.cpp - CPU kernel registry and shared helpers ------------===//
//
// The kernels live in:
//   CpuMatMul.cpp       MatMul, Gemm (oneDNN sgemm; OpenBLAS for float64)
//   CpuElementwise.cpp  binary/unary/compare ops, Softmax, LogSoftmax, Cast
//   CpuShape.cpp        Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat,
//                       Slice, Shape, Constant, Identity, Gather
//   CpuTransformer.cpp  LayerNormalization, reductions, Where, Expand, Range,
//                       ConstantOfShape, Split, Trilu, Sin/Cos, logic ops, Max/Min
//   CpuCollectives.cpp  ai.quintnet AllReduce, AllGather, ReduceScatter
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <cstring>

#include "onnx/onnx_pb.h"

namespace qn::rt {

void registerCpuKernels(KernelRegistry &reg) {
  cpu::registerMatMulKernels(reg);
  cpu::registerElementwiseKernels(reg);
  cpu::registerShapeKernels(reg);
  cpu::registerCollectiveKernels(reg);
  cpu::registerTransformerKernels(reg);
}

namespace cpu {

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

Tensor toFloat32(const Tensor &t) {
  Tensor f = Tensor::empty(DType::Float, t.shape());
  const uint16_t *src = t.data<uint16_t>();
  float *dst = f.data<float>();
  int64_t n = t.numel();
  if (t.dtype() == DType::Float16) {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = halfToFloat(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = bf16ToFloat(src[i]);
  }
  return f;
}

Tensor fromFloat32(const Tensor &t, DType to) {
  Tensor h = Tensor::empty(to, t.shape());
  const float *src = t.data<float>();
  uint16_t *dst = h.data<uint16_t>();
  int64_t n = t.numel();
  if (to == DType::Float16) {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = floatToHalf(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = floatToBf16(src[i]);
  }
  return h;
}

llvm::SmallVector<int64_t, 8> contiguousStrides(llvm::ArrayRef<int64_t> shape) {
  llvm::SmallVector<int64_t, 8> s(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    s[i] = s[i + 1] * shape[i + 1];
  return s;
}

template <typename E>
static void stridedCopyT(const E *in, int64_t base, llvm::ArrayRef<int64_t> shape,
                         llvm::ArrayRef<int64_t> strides, E *out) {
  // Drop size-1 dims and merge dims that are contiguous in the source.
  llvm::SmallVector<int64_t, 8> n, s;
  for (size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0)
      return;
    if (shape[k] == 1)
      continue;
    if (!n.empty() && s.back() == strides[k] * shape[k]) {
      n.back() *= shape[k];
      s.back() = strides[k];
      continue;
    }
    n.push_back(shape[k]);
    s.push_back(strides[k]);
  }
  const E *src = in + base;
  if (n.empty()) {
    *out = *src;
    return;
  }
  size_t r = n.size();
  int64_t inner = n[r - 1], is = s[r - 1];
  llvm::SmallVector<int64_t, 8> idx(r, 0);
  int64_t off = 0;
  while (true) {
    const E *p = src + off;
    if (is == 1) {
      std::memcpy(out, p, static_cast<size_t>(inner) * sizeof(E));
    } else {
      for (int64_t j = 0; j < inner; ++j)
        out[j] = p[j * is];
    }
    out += inner;
    // Advance the odometer over dims [0, r-1).
    int64_t k = static_cast<int64_t>(r) - 2;
    for (; k >= 0; --k) {
      off += s[k];
      if (++idx[k] < n[k])
        break;
      off -= s[k] * n[k];
      idx[k] = 0;
    }
    if (k < 0)
      return;
  }
}

void stridedCopy(const void *in, int64_t base, llvm::ArrayRef<int64_t> outShape,
                 llvm::ArrayRef<int64_t> inStrides, void *out, size_t elemSize) {
  switch (elemSize) {
  case 1:
    return stridedCopyT(static_cast<const uint8_t *>(in), base, outShape, inStrides,
                        static_cast<uint8_t *>(out));
  case 2:
    return stridedCopyT(static_cast<const uint16_t *>(in), base, outShape, inStrides,
                        static_cast<uint16_t *>(out));
  case 4:
    return stridedCopyT(static_cast<const uint32_t *>(in), base, outShape, inStrides,
                        static_cast<uint32_t *>(out));
  case 8:
    return stridedCopyT(static_cast<const uint64_t *>(in), base, outShape, inStrides,
                        static_cast<uint64_t *>(out));
  default:
    llvm_unreachable("stridedCopy: unsupported element size");
  }
}

} // namespace cpu
} // namespace qn::rt
