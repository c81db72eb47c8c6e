//===- CpuConv.cpp - Conv through im2col + oneDNN / OpenBLAS GEMMs -------------===//
//
// Conv (1-D, 2-D, 3-D; groups, pads, strides, dilations, auto_pad, bias) as
// im2col followed by the GEMMs of CpuMatMul.cpp (float32: oneDNN sgemm;
// float64: OpenBLAS; float16 / bfloat16 computed in float32, rounded once).
// Per image n and group g, with K = C/G * prod(kernel) and P = prod(output):
//
//   col[K, P]   rows (c, k1..kn), columns the output positions: the input
//               element each kernel tap reads at each output position (0 in
//               the padding)
//   Y[Mg, P]    = W_g[Mg, K] col[K, P] (+ B broadcast along P, as beta = 1)
//
// A 1x1 kernel with stride 1 and no pads reads X as its column matrix
// directly; kernel == stride without pads (a ViT patch embedding) is an
// im2col whose rows are strided copies of X's rows.
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "onnx/onnx_pb.h"

namespace qn::rt::cpu {

namespace {

bool fitsBlas(int64_t v) { return v >= 0 && v <= static_cast<int64_t>(INT_MAX); }

std::string listStr(llvm::ArrayRef<int64_t> v) { return shapeStr(v); }

} // namespace

llvm::Error planConv(const KernelContext &ctx, ConvPlan &p) {
  if (auto e = checkArity(ctx, 2, 3))
    return e;
  const Tensor &x = *input(ctx, 0), &w = *input(ctx, 1);
  const Tensor *b = input(ctx, 2);
  DType dt = x.dtype();
  if (w.dtype() != dt || (b && b->dtype() != dt))
    return kernelError(ctx, "input dtypes differ: X " + x.describe() + ", W " + w.describe() +
                                ", B " + describe(b));
  if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
  if (x.rank() < 3 || x.rank() > 5)
    return kernelError(ctx, "Conv supports 1-D, 2-D and 3-D convolutions: X " + x.describe() +
                                " must have rank 3, 4 or 5 ([N, C, spatial...])");
  if (w.rank() != x.rank())
    return kernelError(ctx, "W " + w.describe() + " must have X's rank (X " + x.describe() + ")");
  const int nd = static_cast<int>(x.rank()) - 2;
  p = ConvPlan{};
  p.nd = nd;
  p.N = x.dim(0);
  p.C = x.dim(1);
  p.M = w.dim(0);
  p.G = attrInt(ctx.node, "group", 1);
  if (p.G < 1)
    return kernelError(ctx, strCat("group must be >= 1, got ", p.G));
  if (p.C % p.G != 0 || p.M % p.G != 0)
    return kernelError(ctx, strCat("group=", p.G, " does not divide the input channels (X ",
                                   x.describe(), ") and the output channels (W ", w.describe(),
                                   ")"));
  p.Cg = p.C / p.G;
  p.Mg = p.M / p.G;
  if (w.dim(1) != p.Cg)
    return kernelError(ctx, strCat("W ", w.describe(), " has ", w.dim(1),
                                   " input channels per group, X ", x.describe(), " with group=",
                                   p.G, " has ", p.Cg));
  if (b && (b->rank() != 1 || b->dim(0) != p.M))
    return kernelError(ctx, strCat("B ", b->describe(), " must be [", p.M,
                                   "] (W's output channels)"));
  p.hasBias = b != nullptr;

  // Attributes, each checked against the spatial rank.
  const int off = 3 - nd; // spatial dim i of the node is dim off + i of the plan
  std::vector<int64_t> ks = attrInts(ctx.node, "kernel_shape");
  if (!ks.empty()) {
    std::vector<int64_t> wk(w.shape().begin() + 2, w.shape().end());
    if (ks != wk)
      return kernelError(ctx, "kernel_shape " + listStr(ks) + " differs from W " + w.describe());
  }
  auto spatialAttr = [&](llvm::StringRef name, int64_t *dst, size_t len,
                         int64_t minValue) -> llvm::Error {
    std::vector<int64_t> v = attrInts(ctx.node, name);
    if (v.empty())
      return llvm::Error::success();
    if (v.size() != len)
      return kernelError(ctx, strCat(name, " ", listStr(v), " must have ", len,
                                     " values for a ", nd, "-D convolution"));
    for (int64_t a : v)
      if (a < minValue)
        return kernelError(ctx, strCat(name, " ", listStr(v), " must be >= ", minValue));
    for (int i = 0; i < nd; ++i)
      dst[off + i] = v[i];
    return llvm::Error::success();
  };
  if (auto e = spatialAttr("strides", p.stride, nd, 1))
    return e;
  if (auto e = spatialAttr("dilations", p.dil, nd, 1))
    return e;
  int64_t pads[6] = {0, 0, 0, 0, 0, 0};
  std::vector<int64_t> padAttr = attrInts(ctx.node, "pads");
  if (!padAttr.empty()) {
    if (padAttr.size() != static_cast<size_t>(2 * nd))
      return kernelError(ctx, strCat("pads ", listStr(padAttr), " must have ", 2 * nd,
                                     " values for a ", nd, "-D convolution"));
    for (int64_t a : padAttr)
      if (a < 0)
        return kernelError(ctx, "pads " + listStr(padAttr) + " must be >= 0");
    std::copy(padAttr.begin(), padAttr.end(), pads);
  }
  std::string autoPad = attrString(ctx.node, "auto_pad", "NOTSET");
  bool same = autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER";
  if (autoPad != "NOTSET" && autoPad != "VALID" && !same)
    return kernelError(ctx, "auto_pad '" + autoPad +
                                "' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER");
  if (autoPad != "NOTSET" &&
      std::any_of(padAttr.begin(), padAttr.end(), [](int64_t a) { return a != 0; }))
    return kernelError(ctx, "pads " + listStr(padAttr) + " cannot be used with auto_pad " +
                                autoPad);

  p.outShape = {p.N, p.M};
  p.K = p.Cg;
  p.P = 1;
  p.inSpatial = 1;
  bool anyPad = false;
  for (int i = 0; i < nd; ++i) {
    const int j = off + i;
    p.in[j] = x.dim(2 + i);
    p.k[j] = w.dim(2 + i);
    int64_t eff = (p.k[j] - 1) * p.dil[j] + 1; // extent of the dilated kernel
    int64_t pb = pads[i], pe = pads[nd + i];
    if (autoPad == "VALID") {
      pb = pe = 0;
    } else if (same) {
      int64_t o = (p.in[j] + p.stride[j] - 1) / p.stride[j];
      int64_t total = std::max<int64_t>(0, (o - 1) * p.stride[j] + eff - p.in[j]);
      pb = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pe = total - pb;
    }
    if (p.k[j] < 1 || p.in[j] + pb + pe < eff)
      return kernelError(ctx, strCat("the kernel (W ", w.describe(), ", dilations ",
                                     p.dil[j], ") does not fit X ", x.describe(),
                                     " with pads ", pb, "+", pe, " along spatial dim ", i));
    p.padBegin[j] = pb;
    p.out[j] = (p.in[j] + pb + pe - eff) / p.stride[j] + 1;
    anyPad |= pb != 0 || pe != 0;
    p.outShape.push_back(p.out[j]);
    p.K *= p.k[j];
    p.P *= p.out[j];
    p.inSpatial *= p.in[j];
  }
  p.pointwise = !anyPad && std::all_of(p.k, p.k + 3, [](int64_t v) { return v == 1; }) &&
                std::all_of(p.stride, p.stride + 3, [](int64_t v) { return v == 1; });
  int64_t numel = 0, colNumel = 0;
  if (!checkedNumel(p.outShape, dtypeSize(dt), numel) ||
      !checkedNumel({p.N, p.G, p.K, p.P}, 8, colNumel))
    return kernelError(ctx, "output or column matrix size overflows: Y " + shapeStr(p.outShape));
  if (!fitsBlas(p.Mg) || !fitsBlas(p.K) || !fitsBlas(p.P) || !fitsBlas(p.G * p.K) ||
      !fitsBlas(p.N))
    return kernelError(ctx, "matrix dimensions exceed the BLAS int range: X " + x.describe() +
                                ", W " + w.describe());
  return llvm::Error::success();
}

namespace {

/// One image's column matrix [C*prod(k), P] from x [C, in...] (3 spatial dims).
template <typename T> void im2col(const ConvPlan &p, const T *x, T *col) {
  const int64_t ID = p.in[0], IH = p.in[1], IW = p.in[2];
  const int64_t OD = p.out[0], OH = p.out[1], OW = p.out[2];
  const int64_t sw = p.stride[2];
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t kd = 0; kd < p.k[0]; ++kd)
      for (int64_t kh = 0; kh < p.k[1]; ++kh)
        for (int64_t kw = 0; kw < p.k[2]; ++kw) {
          // Output positions ow read iw = ow*sw + w0; valid for ow in [lo, hi).
          const int64_t w0 = kw * p.dil[2] - p.padBegin[2];
          const int64_t lo = std::min(OW, w0 >= 0 ? 0 : (-w0 + sw - 1) / sw);
          const int64_t hi = std::max(lo, std::min(OW, IW - w0 <= 0 ? 0 : (IW - w0 + sw - 1) / sw));
          for (int64_t od = 0; od < OD; ++od) {
            const int64_t id = od * p.stride[0] + kd * p.dil[0] - p.padBegin[0];
            for (int64_t oh = 0; oh < OH; ++oh, col += OW) {
              const int64_t ih = oh * p.stride[1] + kh * p.dil[1] - p.padBegin[1];
              if (id < 0 || id >= ID || ih < 0 || ih >= IH) {
                std::fill(col, col + OW, T(0));
                continue;
              }
              const T *row = x + ((c * ID + id) * IH + ih) * IW;
              std::fill(col, col + lo, T(0));
              if (sw == 1 && hi > lo)
                std::memcpy(col + lo, row + lo + w0, static_cast<size_t>(hi - lo) * sizeof(T));
              else
                for (int64_t ow = lo; ow < hi; ++ow)
                  col[ow] = row[ow * sw + w0];
              std::fill(col + hi, col + OW, T(0));
            }
          }
        }
}

template <typename T> void runConv(const ConvPlan &p, const T *x, const T *w, const T *b, T *y) {
  if (p.N == 0 || p.M == 0 || p.P == 0)
    return;
  std::vector<T> colBuf;
  if (!p.pointwise && p.K > 0)
    colBuf.resize(static_cast<size_t>(p.G * p.K * p.P));
  for (int64_t n = 0; n < p.N; ++n) {
    const T *xn = x + n * p.C * p.inSpatial;
    const T *col = xn;
    if (!p.pointwise && p.K > 0) {
      im2col(p, xn, colBuf.data());
      col = colBuf.data();
    }
    T *yn = y + n * p.M * p.P;
    if (b)
      for (int64_t m = 0; m < p.M; ++m)
        std::fill(yn + m * p.P, yn + (m + 1) * p.P, b[m]);
    if (p.K == 0) {
      if (!b)
        std::fill(yn, yn + p.M * p.P, T(0));
      continue;
    }
    for (int64_t g = 0; g < p.G; ++g)
      gemm(false, false, p.Mg, p.P, p.K, T(1), w + g * p.Mg * p.K, p.K, col + g * p.K * p.P, p.P,
           b ? T(1) : T(0), yn + g * p.Mg * p.P, p.P);
  }
}

llvm::Error convKernel(KernelContext &ctx) {
  ConvPlan p;
  if (auto e = planConv(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0), &w = *input(ctx, 1);
  const Tensor *b = input(ctx, 2);
  DType dt = x.dtype();
  Tensor y = Tensor::empty(dt, p.outShape);
  if (dt == DType::Float) {
    runConv(p, x.data<float>(), w.data<float>(), b ? b->data<float>() : nullptr, y.data<float>());
  } else if (dt == DType::Double) {
    runConv(p, x.data<double>(), w.data<double>(), b ? b->data<double>() : nullptr,
            y.data<double>());
  } else {
    Tensor xf = toFloat32(x), wf = toFloat32(w), bf;
    if (b)
      bf = toFloat32(*b);
    Tensor yf = Tensor::empty(DType::Float, p.outShape);
    runConv(p, xf.data<float>(), wf.data<float>(), b ? bf.data<float>() : nullptr,
            yf.data<float>());
    y = fromFloat32(yf, dt);
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

void registerConvKernels(KernelRegistry &reg) { reg.add("", "Conv", convKernel); }

} // namespace qn::rt::cpu
