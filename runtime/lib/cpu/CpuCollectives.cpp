//===- CpuCollectives.cpp - ai.quintnet collectives on CPU ----------------===//
//
// AllReduce(x) -> y (sum), AllGather(x; axis) -> y, ReduceScatter(x; axis) -> y
// through KernelContext::comm. Without a communicator (a single rank) each is
// the identity.
//
//===----------------------------------------------------------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include "onnx/onnx_pb.h"
#include "qn/runtime/Communicator.h"

namespace qn::rt::cpu {
namespace {

constexpr const char *kDomain = "ai.quintnet";

llvm::Error wrapCommError(const KernelContext &ctx, llvm::Error e) {
  if (!e)
    return e;
  return kernelError(ctx, "collective failed: " + llvm::toString(std::move(e)));
}

llvm::Error allReduceKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (!ctx.comm) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  Tensor y = x.clone(); // never reduce into the input's buffer
  if (auto e = wrapCommError(ctx, ctx.comm->allReduceSum(y)))
    return e;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error allGatherKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  int64_t axis;
  if (auto e = collectiveAxis(ctx, x, axis))
    return e;
  if (!ctx.comm) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  Tensor y;
  if (auto e = wrapCommError(ctx, ctx.comm->allGather(x, y, static_cast<int>(axis))))
    return e;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error reduceScatterKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  int64_t axis;
  if (auto e = collectiveAxis(ctx, x, axis))
    return e;
  if (!ctx.comm) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  int n = ctx.comm->size();
  if (n <= 0 || x.dim(axis) % n != 0)
    return kernelError(
        ctx, strCat("axis ", axis, " of ", x.describe(), " is not divisible by the ", n, " ranks"));
  Tensor y;
  if (auto e = wrapCommError(ctx, ctx.comm->reduceScatterSum(x, y, static_cast<int>(axis))))
    return e;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

llvm::Error collectiveAxis(const KernelContext &ctx, const Tensor &x, int64_t &axis) {
  if (!hasAttr(ctx.node, "axis"))
    return kernelError(ctx, "missing attribute 'axis'");
  axis = attrInt(ctx.node, "axis", 0);
  if (x.rank() == 0)
    return kernelError(ctx, "input must have rank >= 1, got " + x.describe());
  return normalizeAxis(ctx, axis, x.rank());
}

void registerCollectiveKernels(KernelRegistry &reg) {
  reg.add(kDomain, "AllReduce", allReduceKernel);
  reg.add(kDomain, "AllGather", allGatherKernel);
  reg.add(kDomain, "ReduceScatter", reduceScatterKernel);
}

} // namespace qn::rt::cpu
