//===- CudaElementwise.cpp - Elementwise CUDA kernels: checks and plans ----===//
//
// Add Sub Mul Div Pow Equal Less Greater GreaterOrEqual LessOrEqual And Or Not
// Relu Neg Abs Tanh Sigmoid Erf Exp Log Sqrt Reciprocal Sin Cos Gelu Cast
// Where Max Min.
//
// Each kernel runs the CPU kernel's checks in the same order with the same
// messages (runtime/lib/cpu/CpuElementwise.cpp; the
// binary ops, Max/Min, Where, Not and Cast through the planners they share,
// declared in OpSemantics.h), then plans the broadcast once (output shape from
// those planners; per operand element strides, 0 on broadcast axes; size-1
// dims dropped and neighbours merged where every operand allows) and launches
// the one N-ary kernel of CudaElementwise.cu.
//
// Differences from the CPU kernels, none of them in values that the CPU
// kernel produces:
//  - integer Div by zero: the CPU kernel fails; the GPU cannot look at the
//    divisor without synchronising, so its quotient is 0.
//
//===----------------------------------------------------------------------===//
#include "CudaDevice.h"
#include "CudaElementwise.h"

#include "../OpSemantics.h"
#include "../StrCat.h"

#include <string>
#include <vector>

#include "onnx/onnx_pb.h"
#include "llvm/ADT/SmallVector.h"

namespace qn::rt::cuda {
namespace {

using cpu::checkArity;
using cpu::input;
using cpu::isHalfLike;
using cpu::kernelError;
using cpu::unsupportedDType;

int32_t dt(DType t) { return static_cast<int32_t>(t); }

//===----------------------------------------------------------------------===//
// Broadcasting plan
//===----------------------------------------------------------------------===//

/// The output shape (from the CPU kernels' planners: cpu::planBinaryOp,
/// planLogic, planCompare, planMinMax, planWhere) and, by coalesce, its size
/// and the coalesced layout of up to kEwMaxOperands operands (which must
/// broadcast to outShape).
struct Plan {
  std::vector<int64_t> outShape;
  int64_t numel = 0;
  int nOps = 0;
  llvm::SmallVector<int64_t, 8> dims;
  llvm::SmallVector<int64_t, 8> st[kEwMaxOperands];
};

void coalesce(llvm::ArrayRef<const Tensor *> ops, Plan &p) {
  size_t r = p.outShape.size();
  p.numel = 1;
  for (int64_t d : p.outShape)
    p.numel *= d; // the planners checked it for overflow
  p.nOps = static_cast<int>(ops.size());
  p.dims.clear();
  llvm::SmallVector<int64_t, 8> padded[kEwMaxOperands], cs[kEwMaxOperands];
  for (int j = 0; j < p.nOps; ++j) {
    p.st[j].clear();
    const auto &s = ops[j]->shape();
    padded[j].assign(r - s.size(), 1);
    padded[j].append(s.begin(), s.end());
    cs[j] = cpu::contiguousStrides(padded[j]);
  }
  for (size_t k = 0; k < r; ++k) {
    int64_t d = p.outShape[k];
    if (d == 1)
      continue;
    int64_t s[kEwMaxOperands];
    bool merge = !p.dims.empty();
    for (int j = 0; j < p.nOps; ++j) {
      s[j] = padded[j][k] == 1 ? 0 : cs[j][k];
      merge = merge && p.st[j].back() == s[j] * d;
    }
    if (merge) {
      p.dims.back() *= d;
      for (int j = 0; j < p.nOps; ++j)
        p.st[j].back() = s[j];
      continue;
    }
    p.dims.push_back(d);
    for (int j = 0; j < p.nOps; ++j)
      p.st[j].push_back(s[j]);
  }
}

/// Runs `launch(layout, ptrs, out, n)` over the plan of `ops` (their data
/// pointers; element sizes `es`) into `out` (element size outEs). Layouts of
/// more than kEwMaxDims dims (after coalescing: alternating broadcast
/// patterns) run as one launch per index of the leading dims.
template <class Launch>
llvm::Error runPlan(const KernelContext &ctx, const Plan &p, llvm::ArrayRef<const Tensor *> ops,
                    Tensor &out, Launch launch) {
  if (p.numel == 0)
    return llvm::Error::success();
  const int nOps = p.nOps;
  const int r = static_cast<int>(p.dims.size());
  const int lead = r > kEwMaxDims ? r - kEwMaxDims : 0;
  EwLayout l;
  l.rank = r - lead;
  int64_t inner = 1;
  for (int k = lead; k < r; ++k) {
    l.dims[k - lead] = p.dims[k];
    inner *= p.dims[k];
    for (int j = 0; j < nOps; ++j)
      l.strides[j][k - lead] = p.st[j][k];
  }
  std::vector<int64_t> idx(static_cast<size_t>(lead), 0);
  int64_t outOff = 0;
  while (true) {
    const void *ptrs[kEwMaxOperands] = {};
    for (int j = 0; j < nOps; ++j) {
      int64_t off = 0;
      for (int k = 0; k < lead; ++k)
        off += idx[k] * p.st[j][k];
      ptrs[j] = static_cast<const char *>(ops[j]->raw()) +
                off * static_cast<int64_t>(dtypeSize(ops[j]->dtype()));
    }
    void *o = static_cast<char *>(out.raw()) +
              outOff * static_cast<int64_t>(dtypeSize(out.dtype()));
    if (cudaError_t e = launch(l, ptrs, o, inner); e != cudaSuccess) {
      cudaGetLastError();
      return cudaError(ctx, e, "elementwise kernel launch");
    }
    outOff += inner;
    int k = lead - 1;
    for (; k >= 0; --k) {
      if (++idx[k] < p.dims[k])
        break;
      idx[k] = 0;
    }
    if (k < 0)
      break;
  }
  return checkLaunch(ctx);
}

llvm::Error launchFailed(const KernelContext &ctx, cudaError_t e) {
  cudaGetLastError();
  return cudaError(ctx, e, "elementwise kernel launch");
}

//===----------------------------------------------------------------------===//
// Binary ops of CpuElementwise.cpp: Add Sub Mul Div Pow Equal Less Greater
//===----------------------------------------------------------------------===//

llvm::Error binaryKernel(KernelContext &ctx, EwBinary kind, cpu::BinaryOp op) {
  cpu::BinaryShape s;
  if (auto e = cpu::planBinaryOp(ctx, op, s))
    return e;
  const Tensor *a = input(ctx, 0), *b = input(ctx, 1);
  const DType t = a->dtype();
  const DType work = s.expType; // Pow: the exponent's compute type
  const bool cmp = op == cpu::BinaryOp::Equal || op == cpu::BinaryOp::Less ||
                   op == cpu::BinaryOp::Greater;
  Plan p;
  p.outShape = std::move(s.outShape);
  p.numel = s.numel;
  // Integer Div by zero: see the file comment.

  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(cmp ? DType::Bool : t, p.outShape);
  if (p.numel > 0) {
    Tensor bConv;
    if (kind == EwBinary::Pow && b->dtype() != work) {
      bConv = dev.alloc(work, b->shape());
      if (cudaError_t e =
              launchEwCast(dt(b->dtype()), dt(work), b->raw(), bConv.raw(), b->numel(), dev.stream);
          e != cudaSuccess)
        return launchFailed(ctx, e);
      b = &bConv;
    }
    const Tensor *ops[] = {a, b};
    coalesce(ops, p);
    if (auto e = runPlan(ctx, p, ops, y, [&](const EwLayout &l, const void *const *in, void *o,
                                              int64_t n) {
          return launchEwBinary(kind, dt(t), l, in[0], in[1], o, n, dev.stream, dev.fault());
        }))
      return e;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Materialised binary ops of CpuElementwise.cpp: And Or GreaterOrEqual
// LessOrEqual
//===----------------------------------------------------------------------===//

/// Launches `kind` over the broadcast of a and b (planned in p) into a new
/// output of dtype `outType`.
llvm::Error runBinary(KernelContext &ctx, EwBinary kind, const Tensor &a, const Tensor &b,
                      Plan &p, DType outType) {
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(outType, p.outShape);
  const Tensor *ops[] = {&a, &b};
  coalesce(ops, p);
  if (auto e = runPlan(ctx, p, ops, y,
                       [&](const EwLayout &l, const void *const *in, void *o, int64_t n) {
                         return launchEwBinary(kind, dt(a.dtype()), l, in[0], in[1], o, n,
                                               dev.stream);
                       }))
    return e;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error logicKernel(KernelContext &ctx, EwBinary kind) {
  Plan p;
  if (auto e = cpu::planLogic(ctx, p.outShape))
    return e;
  return runBinary(ctx, kind, *input(ctx, 0), *input(ctx, 1), p, DType::Bool);
}

llvm::Error compareKernel(KernelContext &ctx, EwBinary kind) {
  Plan p;
  if (auto e = cpu::planCompare(ctx, p.outShape))
    return e;
  return runBinary(ctx, kind, *input(ctx, 0), *input(ctx, 1), p, DType::Bool);
}

//===----------------------------------------------------------------------===//
// Max, Min (variadic), Where
//===----------------------------------------------------------------------===//

llvm::Error minMaxKernel(KernelContext &ctx, EwBinary kind) {
  Plan p;
  if (auto e = cpu::planMinMax(ctx, p.outShape))
    return e;
  const size_t n = ctx.inputs.size();
  const Tensor &first = *input(ctx, 0);
  const DType t = first.dtype();
  const std::vector<const Tensor *> all(ctx.inputs.begin(), ctx.inputs.end());
  if (n == 1) { // the values of the only input
    ctx.outputs[0] = first;
    return llvm::Error::success();
  }
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(t, p.outShape);
  // Left fold as the CPU kernel: y = f(x0, x1), then y = f(y, xi) in place
  // (y has the output's shape, so each element is read and written by the
  // same thread).
  for (size_t i = 1; i < n; ++i) {
    const Tensor *ops[] = {i == 1 ? all[0] : &y, all[i]};
    coalesce(ops, p);
    if (auto e = runPlan(ctx, p, ops, y,
                         [&](const EwLayout &l, const void *const *in, void *o, int64_t m) {
                           return launchEwBinary(kind, dt(t), l, in[0], in[1], o, m,
                                                 dev.stream);
                         }))
      return e;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

llvm::Error whereKernel(KernelContext &ctx) {
  Plan p;
  if (auto e = cpu::planWhere(ctx, p.outShape))
    return e;
  const Tensor &c = *input(ctx, 0), &a = *input(ctx, 1), &b = *input(ctx, 2);
  const size_t es = dtypeSize(a.dtype());
  const Tensor *all[] = {&c, &a, &b};
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(a.dtype(), p.outShape);
  coalesce(all, p);
  if (auto e = runPlan(ctx, p, all, y,
                       [&](const EwLayout &l, const void *const *in, void *o, int64_t n) {
                         return launchEwWhere(es, l, in[0], in[1], in[2], o, n, dev.stream);
                       }))
    return e;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Unary ops, Gelu, Cast
//===----------------------------------------------------------------------===//

llvm::Error unaryKernel(KernelContext &ctx, EwUnary op, bool allowInt) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  DType t = x.dtype();
  bool ok = t == DType::Float || t == DType::Double || isHalfLike(t);
  if (!ok && allowInt) {
    if (t != DType::Int32 && t != DType::Int64 && t != DType::Int8)
      return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16, int32, int64, int8");
    ok = true;
  }
  if (!ok)
    return unsupportedDType(ctx, x, "float32, float64, float16, bfloat16");
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(t, x.shape());
  if (int64_t n = x.numel()) {
    if (cudaError_t e = launchEwUnary(op, dt(t), x.raw(), y.raw(), n, dev.stream);
        e != cudaSuccess)
      return launchFailed(ctx, e);
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error notKernel(KernelContext &ctx) {
  if (auto e = cpu::checkNot(ctx))
    return e;
  const Tensor &x = *input(ctx, 0);
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(DType::Bool, x.shape());
  if (int64_t n = x.numel()) {
    if (cudaError_t e = launchEwUnary(EwUnary::Not, dt(DType::Bool), x.raw(), y.raw(), n,
                                      dev.stream);
        e != cudaSuccess)
      return launchFailed(ctx, e);
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error actKernel(KernelContext &ctx, const ActInfo &info) {
  ActParams p;
  if (auto e = cpu::planAct(ctx, info, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(x.dtype(), x.shape());
  if (int64_t n = x.numel()) {
    if (cudaError_t e = launchEwAct(info.act, p, dt(x.dtype()), x.raw(), y.raw(), n, dev.stream);
        e != cudaSuccess)
      return launchFailed(ctx, e);
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

llvm::Error isNaNKernel(KernelContext &ctx) {
  if (auto e = cpu::checkIsNaN(ctx))
    return e;
  const Tensor &x = *input(ctx, 0);
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(DType::Bool, x.shape());
  if (int64_t n = x.numel()) {
    if (cudaError_t e = launchEwIsNaN(dt(x.dtype()), x.raw(), y.raw(), n, dev.stream);
        e != cudaSuccess)
      return launchFailed(ctx, e);
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

/// Clip's bounds (inputs 1 and 2) are read on the host (hostInputs).
llvm::Error clipKernel(KernelContext &ctx) {
  cpu::ClipPlan p;
  if (auto e = cpu::planClip(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0);
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(x.dtype(), x.shape());
  if (int64_t n = x.numel()) {
    if (cudaError_t e = launchEwClip(dt(x.dtype()), p.hasLo, p.lo, p.hasHi, p.hi, x.raw(),
                                     y.raw(), n, dev.stream);
        e != cudaSuccess)
      return launchFailed(ctx, e);
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

/// Dropout in inference: the output is the input; the mask, if asked for,
/// all true (ratio and training_mode are read on the host).
llvm::Error dropoutKernel(KernelContext &ctx) {
  bool wantMask = false;
  if (auto e = cpu::planDropout(ctx, wantMask))
    return e;
  const Tensor &x = *input(ctx, 0);
  ctx.outputs[0] = x;
  if (wantMask) {
    DeviceContext &dev = cudaDev(ctx);
    Tensor mask = dev.alloc(DType::Bool, x.shape());
    if (int64_t n = x.numel())
      if (cudaError_t e = cudaMemsetAsync(mask.raw(), 1, static_cast<size_t>(n), dev.stream);
          e != cudaSuccess)
        return launchFailed(ctx, e);
    ctx.outputs[1] = std::move(mask);
  }
  return checkLaunch(ctx);
}

llvm::Error geluKernel(KernelContext &ctx) {
  std::string approx = attrString(ctx.node, "approximate", "none");
  if (approx == "none")
    return unaryKernel(ctx, EwUnary::Gelu, false);
  if (approx == "tanh")
    return unaryKernel(ctx, EwUnary::GeluTanh, false);
  return kernelError(ctx, "unsupported approximate='" + approx + "' (expected none or tanh)");
}

llvm::Error castKernel(KernelContext &ctx) {
  DType to;
  if (auto e = cpu::planCast(ctx, to))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (to == x.dtype()) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  DeviceContext &dev = cudaDev(ctx);
  Tensor y = dev.alloc(to, x.shape());
  if (int64_t n = x.numel()) {
    cudaError_t e = launchEwCast(dt(x.dtype()), dt(to), x.raw(), y.raw(), n, dev.stream);
    if (e == cudaErrorInvalidValue)
      return kernelError(ctx,
                         strCat("unsupported cast ", dtypeName(x.dtype()), " -> ", dtypeName(to)));
    if (e != cudaSuccess)
      return launchFailed(ctx, e);
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

} // namespace

void registerCudaElementwiseKernels(KernelRegistry &reg) {
  auto bin = [&](const char *name, EwBinary k, cpu::BinaryOp op) {
    reg.add("", name, [k, op](KernelContext &c) { return binaryKernel(c, k, op); });
  };
  bin("Add", EwBinary::Add, cpu::BinaryOp::Add);
  bin("Sub", EwBinary::Sub, cpu::BinaryOp::Sub);
  bin("Mul", EwBinary::Mul, cpu::BinaryOp::Mul);
  bin("Div", EwBinary::Div, cpu::BinaryOp::Div);
  bin("Pow", EwBinary::Pow, cpu::BinaryOp::Pow);
  bin("Equal", EwBinary::Equal, cpu::BinaryOp::Equal);
  bin("Less", EwBinary::Less, cpu::BinaryOp::Less);
  bin("Greater", EwBinary::Greater, cpu::BinaryOp::Greater);
  reg.add("", "GreaterOrEqual",
          [](KernelContext &c) { return compareKernel(c, EwBinary::GreaterOrEqual); });
  reg.add("", "LessOrEqual",
          [](KernelContext &c) { return compareKernel(c, EwBinary::LessOrEqual); });
  reg.add("", "And", [](KernelContext &c) { return logicKernel(c, EwBinary::And); });
  reg.add("", "Or", [](KernelContext &c) { return logicKernel(c, EwBinary::Or); });
  reg.add("", "Not", notKernel);
  reg.add("", "Max", [](KernelContext &c) { return minMaxKernel(c, EwBinary::Max); });
  reg.add("", "Min", [](KernelContext &c) { return minMaxKernel(c, EwBinary::Min); });
  reg.add("", "Where", whereKernel);

  auto un = [&](const char *name, EwUnary k, bool allowInt) {
    reg.add("", name, [k, allowInt](KernelContext &c) { return unaryKernel(c, k, allowInt); });
  };
  un("Relu", EwUnary::Relu, true);
  un("Neg", EwUnary::Neg, true);
  un("Abs", EwUnary::Abs, true);
  un("Tanh", EwUnary::Tanh, false);
  un("Sigmoid", EwUnary::Sigmoid, false);
  un("Erf", EwUnary::Erf, false);
  un("Exp", EwUnary::Exp, false);
  un("Log", EwUnary::Log, false);
  un("Sqrt", EwUnary::Sqrt, false);
  un("Reciprocal", EwUnary::Reciprocal, false);
  un("Sin", EwUnary::Sin, false);
  un("Cos", EwUnary::Cos, false);
  reg.add("", "Gelu", geluKernel);
  reg.add("", "Cast", castKernel);
  for (const ActInfo &a : kActs)
    reg.add("", a.name, [&a](KernelContext &c) { return actKernel(c, a); });
  reg.add("", "IsNaN", isNaNKernel);
  reg.add("", "Clip", clipKernel, (1u << 1) | (1u << 2));
  reg.add("", "Dropout", dropoutKernel, (1u << 1) | (1u << 2));
}

} // namespace qn::rt::cuda
