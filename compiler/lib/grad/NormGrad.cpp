//===- NormGrad.cpp - Gradients of softmax, reductions, LayerNorm ---------===//
//
// Softmax and LogSoftmax reuse the forward output. LayerNormalization
// recomputes its mean and inverse deviation from the input (the forward
// node's optional outputs are not produced by every kernel) and gives
// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); its scale and
// bias gradients are given in the output's shape and summed down by the
// engine.
//
//===----------------------------------------------------------------------===//
#include "GradRules.h"

namespace qn::grad {
namespace {

llvm::Error softmax(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0];
  int64_t axis = attrInt(n.proto, "axis", ctx.g.opsetVersion() >= 13 ? -1 : 1);
  if (!x->hasShape || (ctx.g.opsetVersion() < 13 && normAxis(axis, x->rank()) != x->rank() - 1))
    return fail(n.opType() + " '" + n.label() +
                "': gradients before opset 13 need the last axis and a known rank");
  const std::string &y = n.outputs[0]->name, &gy = ctx.outputGrads[0];
  if (n.opType() == "Softmax") {
    // dx = y * (gy - sum(gy * y))
    std::string s = e.reduceSum(e.op("Mul", {gy, y}, y + "_gy"), {axis}, true, y + "_gysum");
    r.set(0, e.op("Mul", {y, e.op("Sub", {gy, s}, y + "_gyc")}, x->name + "_grad"));
  } else {
    // dx = gy - exp(y) * sum(gy)
    std::string s = e.reduceSum(gy, {axis}, true, y + "_gsum");
    std::string p = e.op("Exp", {y}, y + "_probs");
    r.set(0, e.op("Sub", {gy, e.op("Mul", {p, s}, y + "_ps")}, x->name + "_grad"));
  }
  return llvm::Error::success();
}

llvm::Error reduce(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0];
  if (!x->hasShape)
    return fail(n.opType() + " '" + n.label() + "': its input's rank is not known");
  std::vector<int64_t> axes;
  if (!nodeAxes(n, 1, axes) && n.inputs.size() > 1 && n.inputs[1])
    return fail(n.opType() + " '" + n.label() + "': its axes must be constant");
  if (axes.empty()) {
    if (attrInt(n.proto, "noop_with_empty_axes", 0)) {
      r.set(0, ctx.outputGrads[0]);
      return llvm::Error::success();
    }
    for (int64_t i = 0; i < x->rank(); ++i)
      axes.push_back(i);
  }
  for (int64_t &a : axes)
    a = normAxis(a, x->rank());
  std::string g = ctx.outputGrads[0];
  if (!attrInt(n.proto, "keepdims", 1))
    g = e.unsqueeze(g, axes, g + "_keep");
  if (n.opType() == "ReduceMean") {
    int64_t count = 1;
    for (int64_t a : axes) {
      int64_t d = x->dimSize(a);
      if (d <= 0)
        return fail("ReduceMean '" + n.label() + "': the gradient needs the reduced axis " +
                    llvm::Twine(a) + " of '" + x->name + "' to have a static size");
      count *= d;
    }
    g = e.op("Mul", {g, e.scalar("inv_count", 1.0 / static_cast<double>(count))}, g + "_mean");
  }
  std::string shape = e.op("Shape", {x->name}, x->name + "_shape");
  r.set(0, e.op("Expand", {g, shape}, x->name + "_grad"));
  return llvm::Error::success();
}

llvm::Error layerNorm(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0], *scale = n.input(1);
  if (!x->hasShape)
    return fail("LayerNormalization '" + n.label() + "': its input's rank is not known");
  int64_t rank = x->rank(), axis = normAxis(attrInt(n.proto, "axis", -1), rank);
  std::vector<int64_t> axes;
  for (int64_t a = axis; a < rank; ++a)
    axes.push_back(a);
  float eps = attrFloat(n.proto, "epsilon", 1e-5f);
  const std::string &xs = x->name, &gy = ctx.outputGrads[0];
  std::string mu = e.reduceMean(xs, axes, true, xs + "_mean");
  std::string xc = e.op("Sub", {xs, mu}, xs + "_centered");
  std::string var = e.reduceMean(e.op("Mul", {xc, xc}, xs + "_sq"), axes, true, xs + "_var");
  std::string rstd = e.op(
      "Reciprocal",
      {e.op("Sqrt", {e.op("Add", {var, e.scalar("epsilon", eps)}, xs + "_vareps")}, xs + "_std")},
      xs + "_rstd");
  std::string xhat = e.op("Mul", {xc, rstd}, xs + "_xhat");
  if (ctx.want(0)) {
    std::string dxhat = e.op("Mul", {gy, scale->name}, xs + "_dxhat");
    std::string m1 = e.reduceMean(dxhat, axes, true, xs + "_dxhat_mean");
    std::string m2 = e.reduceMean(e.op("Mul", {dxhat, xhat}, xs + "_dxhat_xhat"), axes, true,
                                  xs + "_dxhat_xhat_mean");
    std::string inner = e.op("Sub", {e.op("Sub", {dxhat, m1}, xs + "_d1"),
                                     e.op("Mul", {xhat, m2}, xs + "_d2")},
                             xs + "_d3");
    r.set(0, e.op("Mul", {inner, rstd}, xs + "_grad"));
  }
  if (scale && ctx.want(1))
    r.set(1, e.op("Mul", {gy, xhat}, scale->name + "_grad"), true);
  if (n.input(2) && ctx.want(2))
    r.set(2, gy, true);
  return llvm::Error::success();
}

} // namespace

void registerNormGradRules(GradRuleRegistry &r) {
  r.add("Softmax", softmax, "norm");
  r.add("LogSoftmax", softmax, "norm");
  r.add("ReduceSum", reduce, "norm");
  r.add("ReduceMean", reduce, "norm");
  r.add("LayerNormalization", layerNorm, "norm");
}

} // namespace qn::grad
