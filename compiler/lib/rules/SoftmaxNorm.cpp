//===- SoftmaxNorm.cpp - Sharding rules of Softmax and the norms ----------===//
//
// Softmax/LogSoftmax keep a shard that does not cross the normalised slice
// (opset 13+: the axis itself; before, the op flattens from `axis` on, so
// any shard at or after it crosses). LayerNormalization needs its input
// whole (a shard before the normalised axes could pass: not yet).
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

namespace qn::rules {
namespace {

llvm::Error softmax(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  const Value *x = n.inputs[0];
  Placement p = ctx.of(x);
  if (!p.isShard() || !x->hasShape)
    return llvm::Error::success();
  int64_t axis = attrInt(n.proto, "axis", ctx.opset >= 13 ? -1 : 1);
  if (axis < 0)
    axis += x->rank();
  bool crosses = ctx.opset >= 13 ? p.axis == axis : p.axis >= axis;
  if (crosses)
    return llvm::Error::success();
  r.placements.in[0] = p;
  r.placements.out[0] = p;
  return llvm::Error::success();
}

} // namespace

void registerSoftmaxNormRules(RuleRegistry &r) {
  r.add("Softmax", softmax, "softmax-norm");
  r.add("LogSoftmax", softmax, "softmax-norm");
  r.add("LayerNormalization", replicatedRule, "softmax-norm");
}

} // namespace qn::rules
