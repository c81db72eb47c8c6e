//===- CudaShape.cpp - Shape and data-movement kernels of the CUDA device -===//
//
// Node checks and output shapes come from the CPU kernels' shared functions
// (cpu::transposeView, sliceView, concatShape, splitSizes, expandShape,
// gatherShape, planGatherND, planScatterND, triluParams in OpSemantics.h), so
// both devices accept, reject and shape a node alike; the data moves in
// CudaShape.cu.
//
// Reshape, Flatten, Squeeze, Unsqueeze, Identity, Shape and Constant run the
// CPU kernels unchanged: they read only shapes, attributes and host-read
// inputs, and return views of their input (which keep its location) or, for
// Shape and Constant, host tensors.
//
// The data kernels expect their data inputs on the device. When all of them
// are on the host (a shape computation fed by Shape, whose output is a host
// tensor), the CPU kernel runs and its outputs are host tensors too.
//
//===----------------------------------------------------------------------===//
#include "CudaShape.h"

#include "../OpSemantics.h"
#include "../StrCat.h"
#include "CudaDevice.h"

#include "onnx/onnx_pb.h"

namespace qn::rt::cuda {
namespace {

using cpu::input;
using cpu::kernelError;

constexpr uint32_t kInput1 = 1u << 1;
constexpr uint32_t kSliceBounds = 0xFu << 1; // starts, ends, axes, steps

/// True when the view (base, strides) of a contiguous input covers all of it
/// in order: the output is then the input itself, reshaped.
bool isWholeInOrder(const Tensor &x, int64_t base, llvm::ArrayRef<int64_t> shape,
                    llvm::ArrayRef<int64_t> strides) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  if (base != 0 || n != x.numel())
    return false;
  int64_t expect = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] == 1)
      continue;
    if (strides[k] != expect)
      return false;
    expect *= shape[k];
  }
  return true;
}

/// y = the strided view of x (launchStridedCopy).
llvm::Error stridedCopy(const KernelContext &ctx, const Tensor &x, int64_t base,
                        llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<int64_t> strides,
                        Tensor &y) {
  if (y.numel() == 0)
    return llvm::Error::success();
  cudaError_t e = launchStridedCopy(x.raw(), base, static_cast<int>(shape.size()), shape.data(),
                                    strides.data(), y.raw(), dtypeSize(x.dtype()),
                                    cudaDev(ctx).stream);
  if (e != cudaSuccess)
    return cudaError(ctx, e, "strided copy");
  return llvm::Error::success();
}

/// Transpose and Slice: a strided view of input 0.
llvm::Error viewCopy(KernelContext &ctx, llvm::Expected<cpu::StridedView> v) {
  if (!v)
    return v.takeError();
  const Tensor &x = *input(ctx, 0);
  if (isWholeInOrder(x, v->base, v->shape, v->strides)) {
    ctx.outputs[0] = x.reshaped(v->shape); // kernels never write into their inputs
    return llvm::Error::success();
  }
  Tensor y = cudaDev(ctx).alloc(x.dtype(), v->shape);
  if (auto e = stridedCopy(ctx, x, v->base, v->shape, v->strides, y))
    return e;
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error transposeKernel(KernelContext &ctx) { return viewCopy(ctx, cpu::transposeView(ctx)); }

llvm::Error sliceKernel(KernelContext &ctx) { return viewCopy(ctx, cpu::sliceView(ctx)); }

llvm::Error concatKernel(KernelContext &ctx) {
  int64_t axis;
  std::vector<int64_t> outShape;
  if (auto e = cpu::concatShape(ctx, axis, outShape))
    return e;
  size_t n = ctx.inputs.size();
  const Tensor &first = *input(ctx, 0);
  if (n == 1) {
    ctx.outputs[0] = first;
    return llvm::Error::success();
  }
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < axis; ++k)
    outer *= outShape[k];
  for (size_t k = axis + 1; k < outShape.size(); ++k)
    inner *= outShape[k];
  std::vector<const void *> srcs(n);
  std::vector<int64_t> chunks(n);
  for (size_t i = 0; i < n; ++i) {
    srcs[i] = ctx.inputs[i]->raw();
    chunks[i] = ctx.inputs[i]->dim(axis) * inner;
  }
  Tensor y = cudaDev(ctx).alloc(first.dtype(), outShape);
  if (y.numel() > 0) {
    cudaError_t e = launchConcat(srcs.data(), chunks.data(), static_cast<int>(n), outer, y.raw(),
                                 dtypeSize(first.dtype()), cudaDev(ctx).stream);
    if (e != cudaSuccess)
      return cudaError(ctx, e, "concat");
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error splitKernel(KernelContext &ctx) {
  int64_t axis;
  std::vector<int64_t> sizes;
  if (auto e = cpu::splitSizes(ctx, axis, sizes))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (sizes.size() == 1) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  int64_t d = x.dim(axis);
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < axis; ++k)
    outer *= x.dim(k);
  for (int64_t k = axis + 1; k < x.rank(); ++k)
    inner *= x.dim(k);
  int64_t off = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<int64_t> shape = x.shape();
    shape[axis] = sizes[i];
    Tensor y = cudaDev(ctx).alloc(x.dtype(), shape);
    // Output i is input [outer, d * inner] at columns [off, off + size) * inner.
    int64_t dims[2] = {outer, sizes[i] * inner}, strides[2] = {d * inner, 1};
    if (auto e = stridedCopy(ctx, x, off * inner, dims, strides, y))
      return e;
    off += sizes[i];
    ctx.outputs[i] = std::move(y);
  }
  return checkLaunch(ctx);
}

llvm::Error expandKernel(KernelContext &ctx) {
  std::vector<int64_t> shape;
  if (auto e = cpu::expandShape(ctx, shape))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (x.shape() == shape) { // as on the CPU: the input itself
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  size_t r = shape.size();
  std::vector<int64_t> xp(r - x.shape().size(), 1);
  xp.insert(xp.end(), x.shape().begin(), x.shape().end());
  auto cs = cpu::contiguousStrides(xp);
  std::vector<int64_t> strides(r);
  for (size_t k = 0; k < r; ++k)
    strides[k] = xp[k] == 1 ? 0 : cs[k];
  Tensor y = cudaDev(ctx).alloc(x.dtype(), shape);
  if (auto e = stridedCopy(ctx, x, 0, shape, strides, y))
    return e;
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error gatherKernel(KernelContext &ctx) {
  cpu::GatherShape g;
  if (auto e = cpu::gatherShape(ctx, g))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1);
  Tensor y = cudaDev(ctx).alloc(data.dtype(), g.outShape);
  if (y.numel() > 0) {
    cudaError_t e = launchGather(data.raw(), idx.raw(), idx.dtype() == DType::Int64, g.outer, g.n,
                                 g.inner, g.count, y.raw(), dtypeSize(data.dtype()),
                                 cudaDev(ctx).fault(), cudaDev(ctx).stream);
    if (e != cudaSuccess)
      return cudaError(ctx, e, "gather");
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

/// The tuple layout of a GatherND / ScatterND plan for the launchers; an
/// error for more components than a launch takes.
llvm::Error indexND(const KernelContext &ctx, const cpu::IndexNDPlan &p, IndexND &ix) {
  if (p.dims.size() > static_cast<size_t>(kMaxIndexND))
    return kernelError(ctx, strCat("index tuples of ", p.dims.size(),
                                   " components are not supported on CUDA (at most ",
                                   kMaxIndexND, ")"));
  ix.k = static_cast<int>(p.dims.size());
  for (int m = 0; m < ix.k; ++m) {
    ix.dims[m] = p.dims[m];
    ix.strides[m] = p.strides[m];
  }
  return llvm::Error::success();
}

llvm::Error gatherNDKernel(KernelContext &ctx) {
  cpu::IndexNDPlan p;
  if (auto e = cpu::planGatherND(ctx, p))
    return e;
  IndexND ix;
  if (auto e = indexND(ctx, p, ix))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1);
  Tensor y = cudaDev(ctx).alloc(data.dtype(), p.outShape);
  if (y.numel() > 0) {
    cudaError_t e = launchGatherND(data.raw(), idx.data<int64_t>(), p.batch, p.tuples,
                                   p.dataBatch, ix, p.slice, y.raw(), dtypeSize(data.dtype()),
                                   cudaDev(ctx).fault(), cudaDev(ctx).stream);
    if (e != cudaSuccess)
      return cudaError(ctx, e, "GatherND");
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error scatterNDKernel(KernelContext &ctx) {
  cpu::IndexNDPlan p;
  cpu::ScatterReduction red;
  if (auto e = cpu::planScatterND(ctx, p, red))
    return e;
  IndexND ix;
  if (auto e = indexND(ctx, p, ix))
    return e;
  const Tensor &data = *input(ctx, 0), &idx = *input(ctx, 1), &upd = *input(ctx, 2);
  Tensor y = cudaDev(ctx).alloc(data.dtype(), data.shape());
  if (y.numel() > 0) {
    cudaError_t e = launchScatterND(static_cast<int32_t>(data.dtype()), static_cast<int>(red),
                                    data.raw(), data.numel(), idx.data<int64_t>(), upd.raw(),
                                    p.tuples, ix, p.slice, y.raw(), dtypeSize(data.dtype()),
                                    cudaDev(ctx).fault(), cudaDev(ctx).stream);
    if (e != cudaSuccess)
      return cudaError(ctx, e, "ScatterND");
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error triluKernel(KernelContext &ctx) {
  int64_t k;
  bool upper;
  if (auto e = cpu::triluParams(ctx, k, upper))
    return e;
  const Tensor &x = *input(ctx, 0);
  int64_t rows = x.dim(-2), cols = x.dim(-1);
  int64_t mats = rows > 0 && cols > 0 ? x.numel() / (rows * cols) : 0;
  Tensor y = cudaDev(ctx).alloc(x.dtype(), x.shape());
  if (y.numel() > 0) {
    cudaError_t e = launchTrilu(x.raw(), y.raw(), mats, rows, cols, k, upper,
                                dtypeSize(x.dtype()), cudaDev(ctx).stream);
    if (e != cudaSuccess)
      return cudaError(ctx, e, "trilu");
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

/// The CPU registry's kernel for `op`.
KernelFn cpuKernel(const KernelRegistry &cpuReg, llvm::StringRef op) {
  if (const KernelFn *fn = cpuReg.lookup("", op))
    return *fn;
  return [name = op.str()](KernelContext &ctx) -> llvm::Error {
    return kernelError(ctx, "no CPU kernel for " + name);
  };
}

/// Registers a data kernel `fn` that falls back to the CPU kernel when every
/// input outside `hostMask` is on the host; a mix of host and device data
/// inputs is an error.
void addData(KernelRegistry &reg, const KernelRegistry &cpuReg, llvm::StringRef op,
             llvm::Error (*fn)(KernelContext &), uint32_t hostMask) {
  KernelFn onCpu = cpuKernel(cpuReg, op);
  reg.add(
      "", op,
      [fn, onCpu, hostMask](KernelContext &ctx) -> llvm::Error {
        size_t host = 0, device = 0;
        for (size_t i = 0; i < ctx.inputs.size(); ++i) {
          if (i < 32 && (hostMask >> i & 1u))
            continue;
          if (const Tensor *t = input(ctx, i))
            ++(t->onHost() ? host : device);
        }
        if (host && device)
          return kernelError(ctx, strCat("expects its data inputs in one place, got ", host,
                                         " on the host and ", device, " on the device"));
        if (host)
          return onCpu(ctx);
        return fn(ctx);
      },
      hostMask);
}

} // namespace

void registerCudaShapeKernels(KernelRegistry &reg) {
  KernelRegistry cpuReg;
  registerCpuKernels(cpuReg);
  // Metadata only: the CPU kernels as they are.
  reg.add("", "Reshape", cpuKernel(cpuReg, "Reshape"), kInput1);
  reg.add("", "Flatten", cpuKernel(cpuReg, "Flatten"));
  reg.add("", "Squeeze", cpuKernel(cpuReg, "Squeeze"), kInput1);
  reg.add("", "Unsqueeze", cpuKernel(cpuReg, "Unsqueeze"), kInput1);
  reg.add("", "Identity", cpuKernel(cpuReg, "Identity"));
  reg.add("", "Shape", cpuKernel(cpuReg, "Shape"));
  reg.add("", "Constant", cpuKernel(cpuReg, "Constant"));
  // Data movement.
  addData(reg, cpuReg, "Transpose", transposeKernel, 0);
  addData(reg, cpuReg, "Slice", sliceKernel, kSliceBounds);
  addData(reg, cpuReg, "Concat", concatKernel, 0);
  addData(reg, cpuReg, "Split", splitKernel, kInput1);
  addData(reg, cpuReg, "Expand", expandKernel, kInput1);
  addData(reg, cpuReg, "Gather", gatherKernel, 0);
  addData(reg, cpuReg, "GatherND", gatherNDKernel, 0);
  addData(reg, cpuReg, "ScatterND", scatterNDKernel, 0);
  addData(reg, cpuReg, "Trilu", triluKernel, kInput1);
}

} // namespace qn::rt::cuda
