//===- LinearGrad.cpp - Gradients of MatMul and Gemm ----------------------===//
//
// Backward matrix products are MatMuls, and weight gradients x^T.dy Gemms of
// two activations with transA (BLAS reads the transpose; never a Gemm with
// a constant B, which the planner would take for a new Linear layer): for
// y = x.W the input gradient dy.W^T and the weight gradient x^T.dy. A 2-D weight read by a
// batched activation gets its gradient as one 2-D product over the rows of
// the activation reshaped to [-1, K]; the sharding rules then make the input
// gradient of a column-parallel layer P (it contracts over the sharded N)
// and its weight gradient S like the weight, with no hand-written
// collective.
//
//===----------------------------------------------------------------------===//
#include "GradRules.h"

#include <numeric>

namespace qn::grad {
namespace {

std::vector<int64_t> swapLast2(int64_t rank) {
  std::vector<int64_t> perm(rank);
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[rank - 1], perm[rank - 2]);
  return perm;
}

llvm::Error matmul(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const Value *a = n.input(0), *b = n.input(1);
  const std::string &gy = ctx.outputGrads[0];
  if (!a->hasShape || !b->hasShape || a->rank() < 2 || b->rank() < 2)
    return fail("MatMul '" + n.label() +
                "': gradients need both operands of known rank >= 2 (a vector operand is "
                "not supported yet)");
  int64_t ra = a->rank(), rb = b->rank();
  if (rb == 2 && ra > 2 && b->dimSize(0) > 0 && b->dimSize(1) > 0) {
    // Batched activation times a 2-D weight.
    int64_t K = b->dimSize(0), N = b->dimSize(1);
    if (ctx.want(0))
      r.set(0, e.op("MatMul", {gy, e.transpose(b->name, {1, 0}, b->name + "_T")}, a->name + "_grad"));
    if (ctx.want(1)) {
      std::string a2 = e.op("Reshape", {a->name, e.ints("shape", {-1, K})}, a->name + "_2d");
      std::string g2 = e.op("Reshape", {gy, e.ints("shape", {-1, N})}, gy + "_2d");
      r.set(1, e.op("Gemm", {a2, g2}, b->name + "_grad", {iattr("transA", 1)}));
    }
    return llvm::Error::success();
  }
  // Same-rank or broadcast batches: batched products, then the engine sums
  // the broadcast batch axes away.
  if (ctx.want(0))
    r.set(0, e.op("MatMul", {gy, e.transpose(b->name, swapLast2(rb), b->name + "_T")},
                  a->name + "_grad"),
          /*broadcast=*/true);
  if (ctx.want(1))
    r.set(1, e.op("MatMul", {e.transpose(a->name, swapLast2(ra), a->name + "_T"), gy},
                  b->name + "_grad"),
          /*broadcast=*/true);
  return llvm::Error::success();
}

llvm::Error gemm(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const Value *a = n.input(0), *b = n.input(1), *c = n.input(2);
  const std::string &gy = ctx.outputGrads[0];
  bool ta = attrInt(n.proto, "transA", 0), tb = attrInt(n.proto, "transB", 0);
  float alpha = attrFloat(n.proto, "alpha", 1.0f), beta = attrFloat(n.proto, "beta", 1.0f);
  auto T = [&](const std::string &x) { return e.transpose(x, {1, 0}, x + "_T"); };
  auto scaled = [&](std::string x, float s, llvm::StringRef base) {
    if (s == 1.0f)
      return x;
    return e.op("Mul", {x, e.scalar("scale", s)}, base);
  };
  if (ctx.want(0)) {
    // Y = op(A).op(B): d op(A) = gy.op(B)^T.
    std::string g;
    if (!ta)
      g = tb ? e.op("MatMul", {gy, b->name}, a->name + "_grad0")
             : e.op("MatMul", {gy, T(b->name)}, a->name + "_grad0");
    else // dA = (gy.op(B)^T)^T = op(B).gy^T
      g = tb ? e.op("MatMul", {T(b->name), T(gy)}, a->name + "_grad0")
             : e.op("MatMul", {b->name, T(gy)}, a->name + "_grad0");
    r.set(0, scaled(g, alpha, a->name + "_grad"));
  }
  if (ctx.want(1)) {
    // d op(B) = op(A)^T.gy.
    std::string g;
    if (!tb)
      g = ta ? e.op("MatMul", {a->name, gy}, b->name + "_grad0")
             : e.op("Gemm", {a->name, gy}, b->name + "_grad0", {iattr("transA", 1)});
    else // dB = (op(A)^T.gy)^T = gy^T.op(A)
      g = e.op("Gemm", {gy, a->name}, b->name + "_grad0",
               ta ? std::vector<onnx::AttributeProto>{iattr("transA", 1), iattr("transB", 1)}
                  : std::vector<onnx::AttributeProto>{iattr("transA", 1)});
    r.set(1, scaled(g, alpha, b->name + "_grad"));
  }
  if (c && ctx.want(2))
    r.set(2, scaled(gy, beta, c->name + "_grad"), /*broadcast=*/true);
  return llvm::Error::success();
}

} // namespace

void registerLinearGradRules(GradRuleRegistry &r) {
  r.add("MatMul", matmul, "linear");
  r.add("Gemm", gemm, "linear");
}

} // namespace qn::grad
