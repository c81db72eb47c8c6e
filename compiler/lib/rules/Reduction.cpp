//===- Reduction.cpp - Sharding rules of reductions -----------------------===//
//
// Reductions (every OK_Reduce op of the table) over axes that do not hold
// the shard keep it (blocked too: the gradient of a fused Q|K|V bias) (the axis renumbered when keepdims=0 drops reduced axes
// before it). ReduceSum over the sharded axis gives P (each rank sums its
// slice; training's bias gradients and gradient norms). ReduceSum and
// ReduceMean of P stay P (they are linear). Anything else needs the input
// whole (ReduceMax over the shard: no max-reduction collective yet).
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

namespace qn::rules {
namespace {

llvm::Error reduce(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  const Value *x = n.input(0);
  if (!x || !x->hasShape || !n.outputs[0])
    return llvm::Error::success();
  Placement p = ctx.of(x);
  bool linear = n.opType() == "ReduceSum" || n.opType() == "ReduceMean";
  if (p.isPartial()) {
    if (linear) {
      r.placements.in[0] = p;
      r.placements.out[0] = p;
    }
    return llvm::Error::success();
  }
  if (!p.isShard() || p.isMerged())
    return llvm::Error::success();
  std::vector<int64_t> axes;
  bool constantAxes = nodeAxes(n, 1, axes);
  if (!constantAxes && n.inputs.size() > 1 && n.inputs[1])
    return llvm::Error::success(); // axes computed at run time
  int64_t rank = x->rank();
  if (axes.empty()) {
    if (attrInt(n.proto, "noop_with_empty_axes", 0)) {
      r.placements.in[0] = p;
      r.placements.out[0] = p;
      return llvm::Error::success();
    }
    for (int64_t i = 0; i < rank; ++i)
      axes.push_back(i);
  }
  bool overShard = false;
  int dropped = 0;
  for (int64_t &a : axes) {
    if (a < 0)
      a += rank;
    if (a == p.axis)
      overShard = true;
    else if (a < p.axis)
      ++dropped;
  }
  bool keep = attrInt(n.proto, "keepdims", 1);
  if (overShard) {
    if (n.opType() != "ReduceSum")
      return llvm::Error::success();
    r.placements.in[0] = p;
    r.placements.out[0] = Placement::P();
    return llvm::Error::success();
  }
  r.placements.in[0] = p;
  r.placements.out[0] = Placement::S(keep ? p.axis : p.axis - dropped, p.blocks);
  return llvm::Error::success();
}

} // namespace

void registerReductionRules(RuleRegistry &r) {
  r.addKind(ops::OK_Reduce, reduce, "reduction");
}

} // namespace qn::rules
