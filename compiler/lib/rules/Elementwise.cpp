//===- Elementwise.cpp - Sharding rules of elementwise ops ----------------===//
//
// Unary ops (every OK_Unary op of the table) pass R and S(d) through; a
// partial sum passes only ops linear in their input (OF_PassesPartial:
// Identity, Neg), others see it reduced first.
// Broadcasting ops (OK_Binary, OK_Variadic, OK_Select, OK_Compare,
// OK_Logic) keep S(d) when the
// sharded inputs agree on the axis (and on the blocked layout): constant
// inputs spanning it are sliced, inputs broadcast along it (size 1, or
// missing the axis) are needed whole; an input whose size there is unknown
// (shape completion found no 1: it may be the full extent) makes the op run
// replicated. Add/Sub of partial sums stay partial.
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

namespace qn::rules {
namespace {

llvm::Error unary(const RuleContext &ctx, const Node &n, RuleResult &r) {
  Placement p = ctx.of(n.inputs[0]);
  const ops::OpInfo *info = ops::findOp(n.domain(), n.opType());
  if (p.isPartial() && !(info && info->has(ops::OF_PassesPartial)))
    p = Placement::R();
  allReplicated(n, r);
  r.placements.in[0] = p;
  r.placements.out[0] = p;
  return llvm::Error::success();
}

llvm::Error broadcasting(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *y = n.outputs[0];
  if (!y || !y->hasShape)
    return llvm::Error::success();
  int64_t outRank = y->rank();
  // Partial sums: Add/Sub of partials stays partial.
  bool anyPartial = false, allPartial = true;
  for (const Value *v : n.inputs) {
    bool p = v && !v->constant && ctx.of(v).isPartial();
    anyPartial |= p;
    allPartial &= p;
  }
  if (anyPartial && allPartial && (n.opType() == "Add" || n.opType() == "Sub")) {
    np.in.assign(n.inputs.size(), Placement::P());
    np.out[0] = Placement::P();
    return llvm::Error::success();
  }
  // The shard axis, in output coordinates, if the sharded inputs agree
  // (on the axis and on the blocked layout).
  int axis = -1, blocks = 1;
  for (const Value *v : n.inputs) {
    // A constant is sharded only where pinned (training's parameters).
    if (!v || !ctx.of(v).isShard())
      continue;
    int d = static_cast<int>(ctx.of(v).axis + (outRank - v->rank()));
    if (axis == -1) {
      axis = d;
      blocks = ctx.of(v).blocks;
    } else if (axis != d || blocks != ctx.of(v).blocks) {
      return llvm::Error::success(); // disagreeing shards: gather all
    }
  }
  if (axis < 0)
    return llvm::Error::success();
  if (blocks < 0) {
    // A merged (batch*heads) axis, S(d)/n: the other inputs broadcast along
    // it (rank too low or size 1) or are sharded alike; anything else (a
    // constant of that extent, a size known only at run time) stays whole.
    for (unsigned i = 0; i < n.inputs.size(); ++i) {
      const Value *v = n.inputs[i];
      if (!v)
        continue;
      int64_t a = axis - (outRank - (v->hasShape ? v->rank() : 0));
      if (ctx.of(v).isShard()) {
        np.in[i] = ctx.of(v); // agreed above
        continue;
      }
      if (!v->hasShape || (a >= 0 && v->dimSize(a) != 1)) {
        allReplicated(n, r);
        return llvm::Error::success();
      }
    }
    np.out[0] = Placement::S(axis, blocks);
    return llvm::Error::success();
  }
  int64_t extent = y->dimSize(axis);
  if (extent <= 0 || extent % ctx.tp)
    return llvm::Error::success();
  for (unsigned i = 0; i < n.inputs.size(); ++i) {
    const Value *v = n.inputs[i];
    if (!v)
      continue;
    if (!v->hasShape) {
      allReplicated(n, r); // its extent along the axis could be anything
      return llvm::Error::success();
    }
    int64_t a = axis - (outRank - v->rank());
    if (a < 0 || v->dimSize(a) == 1)
      continue; // broadcast along the shard axis: the whole input is needed
    if (v->dimSize(a) < 0 && ctx.of(v) != Placement::S(static_cast<int>(a), blocks)) {
      // Not known to be 1 (whole) nor the extent (sliceable): it may be
      // either at run time, so neither is safe. Everything whole.
      allReplicated(n, r);
      return llvm::Error::success();
    }
    np.in[i] = Placement::S(static_cast<int>(a), blocks);
  }
  np.out[0] = Placement::S(axis, blocks);
  return llvm::Error::success();
}

} // namespace

void registerElementwiseRules(RuleRegistry &r) {
  r.addKind(ops::OK_Unary, unary, "elementwise");
  r.addKind(ops::OK_Binary, broadcasting, "elementwise");
  r.addKind(ops::OK_Variadic, broadcasting, "elementwise");
  r.addKind(ops::OK_Select, broadcasting, "elementwise");
  r.addKind(ops::OK_Compare, broadcasting, "elementwise");
  r.addKind(ops::OK_Logic, broadcasting, "elementwise");
}

} // namespace qn::rules
