//===- CudaNorm.cpp - LayerNormalization, reductions, Softmax on CUDA -----===//
//
// Host side of CudaNorm.cu: validation and shapes come from the CPU kernels'
// planners (cpu::planLayerNorm, cpu::planReduce, cpu::planSoftmax,
// cpu::planCumSum), so both devices accept and reject the same nodes with the
// same messages.
//
// Reduce: after dropping size-1 axes, reduced axes that form one run are
// reduced in place as [outer, len, inner]; other axis sets are first copied
// with the reduced axes moved to the back (the CPU kernel's permutation).
//
//===----------------------------------------------------------------------===//
#include "CudaNorm.h"

#include "../OpSemantics.h"
#include "CudaDevice.h"

#include <vector>

namespace qn::rt::cuda {
namespace {

int32_t dtNum(DType t) { return static_cast<int32_t>(t); }

/// Launcher result -> error naming the node, else the launch check.
llvm::Error afterLaunch(const KernelContext &ctx, cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    return cudaError(ctx, e, what);
  return checkLaunch(ctx);
}

/// Drops size-1 axes of a gather and merges axes that are contiguous in the
/// input (including runs of broadcast, zero-stride axes).
void coalesce(std::vector<int64_t> &dims, std::vector<int64_t> &strides) {
  std::vector<int64_t> d, s;
  for (size_t k = 0; k < dims.size(); ++k) {
    if (dims[k] == 1)
      continue;
    if (!d.empty() && s.back() == strides[k] * dims[k]) {
      d.back() *= dims[k];
      s.back() = strides[k];
    } else {
      d.push_back(dims[k]);
      s.push_back(strides[k]);
    }
  }
  dims = std::move(d);
  strides = std::move(s);
}

/// out (contiguous, shape `dims`) = in read with element `strides`.
llvm::Error gather(const KernelContext &ctx, const Tensor &in, Tensor &out,
                   std::vector<int64_t> dims, std::vector<int64_t> strides) {
  int64_t n = out.numel();
  if (n == 0)
    return llvm::Error::success();
  coalesce(dims, strides);
  // More axes than one launch takes: one launch per index of the leading ones.
  size_t lead = dims.size() > static_cast<size_t>(kNormMaxDims) ? dims.size() - kNormMaxDims : 0;
  int64_t outer = 1, block = 1;
  for (size_t k = 0; k < dims.size(); ++k)
    (k < lead ? outer : block) *= dims[k];
  const size_t es = dtypeSize(in.dtype());
  std::vector<int64_t> idx(lead, 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t base = 0;
    for (size_t k = 0; k < lead; ++k)
      base += idx[k] * strides[k];
    cudaError_t e =
        launchNormGather(es, static_cast<const char *>(in.raw()) + base * static_cast<int64_t>(es),
                         static_cast<char *>(out.raw()) + o * block * static_cast<int64_t>(es),
                         block, static_cast<int>(dims.size() - lead), dims.data() + lead,
                         strides.data() + lead, cudaDev(ctx).stream);
    if (e != cudaSuccess)
      return cudaError(ctx, e, "strided copy");
    for (size_t k = lead; k-- > 0;) { // next leading index, row-major
      if (++idx[k] < dims[k])
        break;
      idx[k] = 0;
    }
  }
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// LayerNormalization
//===----------------------------------------------------------------------===//

/// Scale or B as `cols` contiguous elements (planLayerNorm checked that `t`
/// broadcasts to `normShape`): `t` itself when it has as many elements,
/// otherwise a broadcast copy.
llvm::Expected<Tensor> rowOperand(const KernelContext &ctx, const Tensor &t,
                                  const std::vector<int64_t> &normShape, int64_t cols) {
  if (t.numel() == cols)
    return t;
  size_t r = normShape.size();
  std::vector<int64_t> padded(r - t.shape().size(), 1);
  padded.insert(padded.end(), t.shape().begin(), t.shape().end());
  auto cs = cpu::contiguousStrides(padded);
  std::vector<int64_t> strides(r);
  for (size_t k = 0; k < r; ++k)
    strides[k] = padded[k] == 1 ? 0 : cs[k];
  Tensor out = cudaDev(ctx).alloc(t.dtype(), normShape);
  if (auto e = gather(ctx, t, out, normShape, strides))
    return llvm::Expected<Tensor>(std::move(e));
  return out;
}

llvm::Error layerNormCuda(KernelContext &ctx) {
  cpu::LayerNormPlan p;
  if (auto e = cpu::planLayerNorm(ctx, p))
    return e;
  const Tensor &x = *cpu::input(ctx, 0);
  const Tensor *scale = cpu::input(ctx, 1), *bias = cpu::input(ctx, 2);
  DeviceContext &dev = cudaDev(ctx);
  const bool wantMean = ctx.outputs.size() > 1, wantInv = ctx.outputs.size() > 2;
  Tensor y = dev.alloc(x.dtype(), x.shape());
  Tensor mean, inv;
  if (wantMean)
    mean = dev.alloc(DType::Float, p.statShape);
  if (wantInv)
    inv = dev.alloc(DType::Float, p.statShape);
  if (p.rows > 0 && (p.cols > 0 || wantMean || wantInv)) {
    Tensor sw, bw;
    if (scale && p.cols > 0) {
      auto t = rowOperand(ctx, *scale, p.normShape, p.cols);
      if (!t)
        return t.takeError();
      sw = std::move(*t);
    }
    if (bias && p.cols > 0) {
      auto t = rowOperand(ctx, *bias, p.normShape, p.cols);
      if (!t)
        return t.takeError();
      bw = std::move(*t);
    }
    cudaError_t e = launchLayerNorm(
        dtNum(x.dtype()), x.raw(), sw.defined() ? sw.raw() : nullptr,
        bw.defined() ? bw.raw() : nullptr, y.raw(), wantMean ? mean.data<float>() : nullptr,
        wantInv ? inv.data<float>() : nullptr, p.rows, p.cols, p.eps, dev.stream);
    if (auto err = afterLaunch(ctx, e, "LayerNormalization kernel"))
      return err;
  }
  ctx.outputs[0] = std::move(y);
  if (wantMean)
    ctx.outputs[1] = std::move(mean);
  if (wantInv)
    ctx.outputs[2] = std::move(inv);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// ReduceMean / ReduceSum / ReduceMax
//===----------------------------------------------------------------------===//

int kindNum(cpu::ReduceKind k) {
  switch (k) {
  case cpu::ReduceKind::Mean:
    return 0;
  case cpu::ReduceKind::Sum:
    return 1;
  case cpu::ReduceKind::Max:
    return 2;
  default: // the CPU-only reductions (the op table's Devices column)
    return -1;
  }
}

/// Bits of a quiet NaN of a floating dtype.
uint64_t nanBits(DType t) {
  switch (t) {
  case DType::Float:
    return 0x7fc00000u;
  case DType::Double:
    return 0x7ff8000000000000ull;
  case DType::Float16:
    return 0x7e00u;
  case DType::BFloat16:
    return 0x7fc0u;
  default:
    return 0;
  }
}

/// The bits of an empty ReduceMax: -inf, or the lowest integer.
uint64_t lowestBits(DType t) {
  switch (t) {
  case DType::Float:
    return 0xff800000u;
  case DType::Double:
    return 0xfff0000000000000ull;
  case DType::Float16:
    return 0xfc00u;
  case DType::BFloat16:
    return 0xff80u;
  case DType::Int32:
    return 0x80000000u;
  case DType::Int64:
    return 0x8000000000000000ull;
  default:
    return 0;
  }
}

llvm::Error reduceCuda(KernelContext &ctx, cpu::ReduceKind kind) {
  cpu::ReducePlan p;
  if (auto e = cpu::planReduce(ctx, kind, p))
    return e;
  const Tensor &x = *cpu::input(ctx, 0);
  if (p.identity) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  DeviceContext &dev = cudaDev(ctx);
  DType dt = x.dtype();
  Tensor y = dev.alloc(dt, p.outShape);
  if (p.rows == 0) {
    ctx.outputs[0] = std::move(y);
    return llvm::Error::success();
  }
  if (p.len == 0) { // Sum: 0, Mean: NaN, Max: -inf (planReduce rejects an integer Mean)
    uint64_t bits = kind == cpu::ReduceKind::Mean  ? nanBits(dt)
                    : kind == cpu::ReduceKind::Max ? lowestBits(dt)
                                                   : 0;
    cudaError_t e = launchNormFill(dtypeSize(dt), y.raw(), p.rows, bits, dev.stream);
    if (auto err = afterLaunch(ctx, e, "fill"))
      return err;
    ctx.outputs[0] = std::move(y);
    return llvm::Error::success();
  }
  // Every dim is >= 1 here. Find the reduced axes among those of size > 1.
  const int64_t r = x.rank();
  int64_t firstRed = -1, lastRed = -1;
  for (int64_t k = 0; k < r; ++k)
    if (p.reduced[k] && x.dim(k) != 1) {
      if (firstRed < 0)
        firstRed = k;
      lastRed = k;
    }
  bool run = true;
  for (int64_t k = firstRed; firstRed >= 0 && k <= lastRed; ++k)
    if (!p.reduced[k] && x.dim(k) != 1)
      run = false;
  int64_t outer = 1, len = p.len, inner = 1;
  Tensor src = x;
  if (firstRed < 0) { // only size-1 axes are reduced: an elementwise pass
    inner = x.numel();
  } else if (run) {
    for (int64_t k = 0; k < firstRed; ++k)
      outer *= x.dim(k);
    for (int64_t k = lastRed + 1; k < r; ++k)
      inner *= x.dim(k);
  } else { // the kept axes, then the reduced ones
    auto cs = cpu::contiguousStrides(x.shape());
    std::vector<int64_t> ps(r), st(r);
    for (int64_t k = 0; k < r; ++k) {
      ps[k] = x.dim(p.perm[k]);
      st[k] = cs[p.perm[k]];
    }
    src = dev.alloc(dt, ps);
    if (auto e = gather(ctx, x, src, ps, st))
      return e;
    outer = p.rows;
  }
  NormReduceSplit split;
  if (!planNormReduce(dtNum(dt), kindNum(kind), outer, len, inner, split))
    return cpu::unsupportedDType(ctx, x, "float32, float64, float16, bfloat16, int32, int64");
  Tensor ws;
  if (split.workspaceBytes > 0)
    ws = dev.alloc(DType::UInt8, {static_cast<int64_t>(split.workspaceBytes)});
  cudaError_t e =
      launchReduce(dtNum(dt), kindNum(kind), src.raw(), y.raw(), ws.defined() ? ws.raw() : nullptr,
                   outer, len, inner, split, dev.stream);
  if (auto err = afterLaunch(ctx, e, "reduction kernel"))
    return err;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Softmax / LogSoftmax
//===----------------------------------------------------------------------===//

template <bool Log> llvm::Error softmaxCuda(KernelContext &ctx) {
  cpu::SoftmaxPlan p;
  if (auto e = cpu::planSoftmax(ctx, p))
    return e;
  const Tensor &x = *cpu::input(ctx, 0);
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(x.dtype(), x.shape());
  if (x.numel() > 0) {
    cudaError_t e =
        launchSoftmax(dtNum(x.dtype()), Log, x.raw(), y.raw(), p.outer, p.n, p.inner, dev.stream);
    if (auto err = afterLaunch(ctx, e, Log ? "LogSoftmax kernel" : "Softmax kernel"))
      return err;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// CumSum
//===----------------------------------------------------------------------===//

llvm::Error cumSumCuda(KernelContext &ctx) {
  cpu::CumSumPlan p;
  if (auto e = cpu::planCumSum(ctx, p))
    return e;
  const Tensor &x = *cpu::input(ctx, 0);
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(x.dtype(), x.shape());
  if (x.numel() > 0) {
    cudaError_t e = launchCumSum(dtNum(x.dtype()), x.raw(), y.raw(), p.outer, p.n, p.inner,
                                 p.exclusive, p.reverse, dev.stream);
    if (auto err = afterLaunch(ctx, e, "CumSum kernel"))
      return err;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

void registerCudaNormKernels(KernelRegistry &reg) {
  constexpr uint32_t kAxesOnHost = 1u << 1; // the axes input (opset 18; ReduceSum 13)
  reg.add("", "LayerNormalization", layerNormCuda);
  reg.add(
      "", "ReduceMean", [](KernelContext &c) { return reduceCuda(c, cpu::ReduceKind::Mean); },
      kAxesOnHost);
  reg.add(
      "", "ReduceSum", [](KernelContext &c) { return reduceCuda(c, cpu::ReduceKind::Sum); },
      kAxesOnHost);
  reg.add(
      "", "ReduceMax", [](KernelContext &c) { return reduceCuda(c, cpu::ReduceKind::Max); },
      kAxesOnHost);
  reg.add("", "Softmax", softmaxCuda<false>);
  reg.add("", "LogSoftmax", softmaxCuda<true>);
  reg.add("", "CumSum", cumSumCuda, kAxesOnHost); // its axis input
}

} // namespace qn::rt::cuda
