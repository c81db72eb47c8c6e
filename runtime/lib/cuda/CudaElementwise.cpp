//===- CudaElementwise.cpp - Elementwise CUDA kernels: checks and plans ----===//
//
// Add Sub Mul Div Pow Equal Less Greater GreaterOrEqual LessOrEqual And Or Not
// Relu Neg Abs Tanh Sigmoid Erf Exp Log Sqrt Reciprocal Sin Cos Gelu Cast
// Where Max Min.
//
// Each kernel runs the CPU kernel's checks in the same order with the same
// messages (runtime/lib/cpu/CpuElementwise.cpp, CpuTransformer.cpp), then
// plans the broadcast once (output shape by cpu::broadcastShapes; per operand
// element strides, 0 on broadcast axes; size-1 dims dropped and neighbours
// merged where every operand allows) and launches the one N-ary kernel of
// CudaElementwise.cu.
//
// Differences from the CPU kernels, none of them in values that the CPU
// kernel produces:
//  - integer Div by zero: the CPU kernel fails; the GPU cannot look at the
//    divisor without synchronising, so its quotient is 0.
//
//===----------------------------------------------------------------------===//
#include "CudaDevice.h"
#include "CudaElementwise.h"

#include "../StrCat.h"
#include "../cpu/CpuCommon.h"

#include <string>
#include <vector>

#include "onnx/onnx_pb.h"
#include "qn/runtime/TensorProto.h"
#include "llvm/ADT/SmallVector.h"

namespace qn::rt::cuda {
namespace {

using cpu::checkArity;
using cpu::input;
using cpu::isHalfLike;
using cpu::kernelError;
using cpu::shapeStr;
using cpu::unsupportedDType;

int32_t dt(DType t) { return static_cast<int32_t>(t); }

//===----------------------------------------------------------------------===//
// Broadcasting plan
//===----------------------------------------------------------------------===//

/// The output shape and the coalesced layout of up to kEwMaxOperands
/// operands (which must broadcast to outShape).
struct Plan {
  std::vector<int64_t> outShape;
  int64_t numel = 0;
  int nOps = 0;
  llvm::SmallVector<int64_t, 8> dims;
  llvm::SmallVector<int64_t, 8> st[kEwMaxOperands];
};

void coalesce(llvm::ArrayRef<const Tensor *> ops, Plan &p) {
  size_t r = p.outShape.size();
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

/// cpu::broadcastShapes over all `ts`, checked for size overflow, with the
/// messages of CpuTransformer.cpp's broadcastAll; then the layout.
llvm::Error planAll(const KernelContext &ctx, llvm::ArrayRef<const Tensor *> ts, Plan &p) {
  std::vector<int64_t> out = ts[0]->shape();
  for (size_t i = 1; i < ts.size(); ++i) {
    std::vector<int64_t> next;
    if (!cpu::broadcastShapes(out, ts[i]->shape(), next)) {
      std::string s;
      for (size_t j = 0; j < ts.size(); ++j)
        s += (j ? ", " : "") + ts[j]->describe();
      return kernelError(ctx, "shapes do not broadcast: " + s);
    }
    out = std::move(next);
  }
  int64_t n;
  if (!checkedNumel(out, 8, n))
    return kernelError(ctx, "output shape overflows: " + shapeStr(out));
  p.outShape = std::move(out);
  p.numel = n;
  return llvm::Error::success();
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

llvm::Error binaryKernel(KernelContext &ctx, EwBinary kind) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor *a = input(ctx, 0), *b = input(ctx, 1);
  DType t = a->dtype();
  DType work = DType::Undefined; // Pow: the exponent's compute type
  if (kind == EwBinary::Pow) {
    // Pow(T, T1): the exponent may have another numeric type.
    if (t != DType::Float && t != DType::Double && !isHalfLike(t))
      return unsupportedDType(ctx, *a, "float32, float64, float16, bfloat16");
    DType eb = b->dtype();
    if (eb != DType::Float && eb != DType::Double && eb != DType::Int32 && eb != DType::Int64 &&
        !isHalfLike(eb))
      return kernelError(ctx, "unsupported exponent dtype: " + b->describe());
    work = t == DType::Double ? DType::Double : DType::Float;
  } else if (b->dtype() != t) {
    return kernelError(ctx, "input dtypes differ: A " + a->describe() + ", B " + b->describe());
  }
  const bool cmp =
      kind == EwBinary::Equal || kind == EwBinary::Less || kind == EwBinary::Greater;
  bool ok;
  switch (t) {
  case DType::Float:
  case DType::Double:
  case DType::Float16:
  case DType::BFloat16:
    ok = true;
    break;
  case DType::Int32:
  case DType::Int64:
    ok = kind != EwBinary::Pow;
    break;
  case DType::Bool:
  case DType::UInt8:
  case DType::Int8:
    ok = kind == EwBinary::Equal;
    break;
  default:
    ok = false;
  }
  if (!ok)
    return unsupportedDType(ctx, *a,
                            kind == EwBinary::Pow ? "float32, float64, float16, bfloat16"
                            : cmp ? "float32, float64, float16, bfloat16, int32, int64"
                                    " (Equal also bool, int8, uint8)"
                                  : "float32, float64, float16, bfloat16, int32, int64");
  Plan p;
  if (!cpu::broadcastShapes(a->shape(), b->shape(), p.outShape))
    return kernelError(ctx, "shapes do not broadcast: A " + a->describe() + ", B " + b->describe());
  if (!checkedNumel(p.outShape, 8, p.numel))
    return kernelError(ctx, "output shape overflows: " + shapeStr(p.outShape));
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
          return launchEwBinary(kind, dt(t), l, in[0], in[1], o, n, dev.stream);
        }))
      return e;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Binary ops of CpuTransformer.cpp: And Or GreaterOrEqual LessOrEqual
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

bool isNumeric(DType t) {
  switch (t) {
  case DType::Float:
  case DType::Double:
  case DType::Float16:
  case DType::BFloat16:
  case DType::Int32:
  case DType::Int64:
  case DType::Int8:
  case DType::UInt8:
    return true;
  default:
    return false;
  }
}

llvm::Error logicKernel(KernelContext &ctx, EwBinary kind) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  for (const Tensor *t : {&a, &b})
    if (t->dtype() != DType::Bool)
      return unsupportedDType(ctx, *t, "bool");
  Plan p;
  const Tensor *all[] = {&a, &b};
  if (auto e = planAll(ctx, all, p))
    return e;
  return runBinary(ctx, kind, a, b, p, DType::Bool);
}

llvm::Error compareKernel(KernelContext &ctx, EwBinary kind) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  if (a.dtype() != b.dtype())
    return kernelError(ctx, "A " + a.describe() + " and B " + b.describe() + " differ in dtype");
  Plan p;
  const Tensor *all[] = {&a, &b};
  if (auto e = planAll(ctx, all, p))
    return e;
  if (!isNumeric(a.dtype()))
    return unsupportedDType(ctx, a,
                            "float32, float64, float16, bfloat16, int8, uint8, int32, int64");
  return runBinary(ctx, kind, a, b, p, DType::Bool);
}

//===----------------------------------------------------------------------===//
// Max, Min (variadic), Where
//===----------------------------------------------------------------------===//

llvm::Error minMaxKernel(KernelContext &ctx, EwBinary kind) {
  size_t n = ctx.inputs.size();
  if (n == 0)
    return kernelError(ctx, "expects at least one input");
  if (auto e = checkArity(ctx, n, n))
    return e;
  const Tensor &first = *input(ctx, 0);
  DType t = first.dtype();
  std::vector<const Tensor *> all;
  for (size_t i = 0; i < n; ++i) {
    if (ctx.inputs[i]->dtype() != t)
      return kernelError(ctx, "inputs differ in dtype: " + first.describe() + " vs " +
                                  ctx.inputs[i]->describe());
    all.push_back(ctx.inputs[i]);
  }
  Plan p;
  if (auto e = planAll(ctx, all, p))
    return e;
  if (!isNumeric(t))
    return unsupportedDType(ctx, first,
                            "float32, float64, float16, bfloat16, int8, uint8, int32, int64");
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
  if (auto e = checkArity(ctx, 3, 3))
    return e;
  const Tensor &c = *input(ctx, 0), &a = *input(ctx, 1), &b = *input(ctx, 2);
  if (c.dtype() != DType::Bool)
    return unsupportedDType(ctx, c, "bool condition");
  if (a.dtype() != b.dtype())
    return kernelError(ctx, "X " + a.describe() + " and Y " + b.describe() + " differ in dtype");
  size_t es = dtypeSize(a.dtype());
  if (!isSupported(a.dtype()) || es == 0)
    return unsupportedDType(ctx, a, "any defined dtype");
  Plan p;
  const Tensor *all[] = {&c, &a, &b};
  if (auto e = planAll(ctx, all, p))
    return e;
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
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (x.dtype() != DType::Bool)
    return unsupportedDType(ctx, x, "bool");
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

llvm::Error geluKernel(KernelContext &ctx) {
  std::string approx = attrString(ctx.node, "approximate", "none");
  if (approx == "none")
    return unaryKernel(ctx, EwUnary::Gelu, false);
  if (approx == "tanh")
    return unaryKernel(ctx, EwUnary::GeluTanh, false);
  return kernelError(ctx, "unsupported approximate='" + approx + "' (expected none or tanh)");
}

llvm::Error castKernel(KernelContext &ctx) {
  if (auto e = checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *input(ctx, 0);
  if (!hasAttr(ctx.node, "to"))
    return kernelError(ctx, "missing attribute 'to'");
  int64_t toCode = attrInt(ctx.node, "to", 0);
  DType to = dtypeFromOnnx(static_cast<int32_t>(toCode));
  if (to == DType::Undefined)
    return kernelError(ctx, strCat("unsupported target type to=", toCode));
  if (!isSupported(x.dtype()))
    return unsupportedDType(ctx, x,
                            "float32, float64, float16, bfloat16, int64, int32, int8, "
                            "uint8, bool");
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
  auto bin = [&](const char *name, EwBinary k) {
    reg.add("", name, [k](KernelContext &c) { return binaryKernel(c, k); });
  };
  bin("Add", EwBinary::Add);
  bin("Sub", EwBinary::Sub);
  bin("Mul", EwBinary::Mul);
  bin("Div", EwBinary::Div);
  bin("Pow", EwBinary::Pow);
  bin("Equal", EwBinary::Equal);
  bin("Less", EwBinary::Less);
  bin("Greater", EwBinary::Greater);
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
}

} // namespace qn::rt::cuda
