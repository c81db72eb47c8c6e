//===- ShapeGrad.cpp - Gradients of the layout ops ------------------------===//
//
// Squeeze and Unsqueeze with known axes are undone by each other. A Reshape
// (Flatten; a Squeeze of every unit axis) is undone by a Reshape of the
// gradient to the input's shape, written as a constant target where the
// input's dims are known or copied (0) from the gradient, so the sharding
// rules see the same kind of target as in the forward graph; a Transpose by
// the inverse permutation.
//
//===----------------------------------------------------------------------===//
#include "GradRules.h"

namespace qn::grad {
namespace {

/// gy reshaped back to x's shape.
std::string reshapeBack(const GradContext &ctx, const Value *x, const Value *y,
                        const std::string &gy) {
  Emitter &e = ctx.e;
  std::vector<int64_t> target;
  int unknown = 0;
  bool ok = x->hasShape;
  for (int64_t i = 0; ok && i < x->rank(); ++i) {
    const Dim &d = x->shape[i];
    if (d.known()) {
      target.push_back(d.size);
    } else if (y->hasShape && i < y->rank() && !d.symbol.empty() &&
               y->shape[i].symbol == d.symbol) {
      target.push_back(0); // the same symbolic dim at the same place: copy it
    } else {
      target.push_back(-1);
      ++unknown;
    }
  }
  if (ok && unknown <= 1)
    return e.op("Reshape", {gy, e.ints("shape", target)}, x->name + "_grad");
  if (!ok) {
    std::string shape = e.op("Shape", {x->name}, x->name + "_shape");
    return e.op("Reshape", {gy, shape}, x->name + "_grad");
  }
  // Several run-time dims: the exporters' idiom, one entry per dim (a
  // Gather of Shape(x) where unknown, a constant where known), so the
  // sharding rules can localise a constant entry of a sharded axis.
  std::string shape = e.op("Shape", {x->name}, x->name + "_shape");
  std::vector<std::string> entries;
  for (int64_t i = 0; i < x->rank(); ++i) {
    if (x->shape[i].known()) {
      entries.push_back(e.ints("dim", {x->shape[i].size}));
      continue;
    }
    std::string d = e.op("Gather", {shape, e.ints("index", {i})}, x->name + "_dim",
                         {iattr("axis", 0)});
    entries.push_back(d);
  }
  std::string runtimeTarget = e.op("Concat", entries, x->name + "_target", {iattr("axis", 0)});
  return e.op("Reshape", {gy, runtimeTarget}, x->name + "_grad");
}

llvm::Error reshape(const GradContext &ctx, const Node &n, GradResult &r) {
  if (ctx.want(0))
    r.set(0, reshapeBack(ctx, n.inputs[0], n.outputs[0], ctx.outputGrads[0]));
  return llvm::Error::success();
}

/// Squeeze and Unsqueeze with known axes undo each other (a sharded axis
/// renumbered by the same rules as forward); without them, a Reshape back.
llvm::Error squeeze(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  std::vector<int64_t> axes;
  if (!nodeAxes(n, 1, axes) || axes.empty()) {
    r.set(0, reshapeBack(ctx, n.inputs[0], n.outputs[0], ctx.outputGrads[0]));
    return llvm::Error::success();
  }
  const std::string base = n.inputs[0]->name + "_grad";
  r.set(0, n.opType() == "Squeeze" ? ctx.e.unsqueeze(ctx.outputGrads[0], axes, base)
                                   : ctx.e.squeeze(ctx.outputGrads[0], axes, base));
  return llvm::Error::success();
}

llvm::Error transpose(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  const Value *x = n.inputs[0];
  if (!x->hasShape)
    return fail("Transpose '" + n.label() + "': its input's rank is not known");
  std::vector<int64_t> perm = transposePerm(n, x->rank());
  std::vector<int64_t> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i)
    inverse[perm[i]] = static_cast<int64_t>(i);
  r.set(0, ctx.e.transpose(ctx.outputGrads[0], inverse, x->name + "_grad"));
  return llvm::Error::success();
}

/// Expand: the output's gradient summed over the expanded axes (the
/// engine's unbroadcast).
llvm::Error expand(const GradContext &ctx, const Node &n, GradResult &r) {
  if (ctx.want(0))
    r.set(0, ctx.outputGrads[0], /*broadcast=*/true);
  return llvm::Error::success();
}

} // namespace

void registerShapeGradRules(GradRuleRegistry &r) {
  r.add("Reshape", reshape, "shape");
  r.add("Flatten", reshape, "shape");
  r.add("Squeeze", squeeze, "shape");
  r.add("Unsqueeze", squeeze, "shape");
  r.add("Transpose", transpose, "shape");
  r.add("Expand", expand, "shape");
}

} // namespace qn::grad
