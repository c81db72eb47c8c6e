//===- CpuKernels.cpp - CPU kernel registry and CPU-only helpers ----------===//
//
// The kernels live in (each file mirrors its cuda/Cuda*.cpp counterpart and
// registers its own kernels):
//   CpuMatMul.cpp       MatMul, Gemm (oneDNN sgemm; OpenBLAS for float64)
//   CpuElementwise.cpp  unary, binary, compare and logic ops, Where, Cast, Gelu,
//                       Max/Min, Sin/Cos
//   CpuNorm.cpp         LayerNormalization, Softmax/LogSoftmax,
//                       ReduceMean/ReduceSum/ReduceMax
//   CpuShape.cpp        Reshape, Flatten, Squeeze, Unsqueeze, Identity,
//                       Transpose, Slice, Concat, Split, Expand, Gather, Trilu,
//                       Shape, Constant, Range, ConstantOfShape
//   CpuCollectives.cpp  ai.quintnet AllReduce, AllGather, ReduceScatter
//   CpuConv.cpp         Conv (im2col + the GEMM of CpuMatMul.cpp)
// The checks, shapes and messages they share with the CUDA kernels are
// declared in ../OpSemantics.h.
//
//===----------------------------------------------------------------------===//
#include "CpuCommon.h"

#include <cstring>

#include "onnx/onnx_pb.h"

namespace qn::rt {

void registerCpuKernels(KernelRegistry &reg) {
  cpu::registerMatMulKernels(reg);
  cpu::registerElementwiseKernels(reg);
  cpu::registerShapeKernels(reg);
  cpu::registerCollectiveKernels(reg);
  cpu::registerNormKernels(reg);
  cpu::registerConvKernels(reg);
}

namespace cpu {

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
