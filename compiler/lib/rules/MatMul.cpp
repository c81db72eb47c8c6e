//===- MatMul.cpp - Sharding rules of MatMul and Gemm ---------------------===//
//
// A Linear (MatMul with a constant 2-D weight, Gemm with a constant B)
// follows its strategy: column-parallel slices the weight's N axis (and a
// bias spanning N) and gives S(last); row-parallel needs the activation
// sharded on K, slices the weight's K axis and gives P. In a planner's dry
// run the group under test is column-parallel, and an undecided Linear
// whose activation arrives sharded on K is taken as its row partner.
// MatMul of two activations (attention's Q.K^T and P.V): shards on the same
// batch axis (heads) stay sharded; one side sharded on a batch axis with the
// other whole slices the other side locally (GQA); shards on the contracted
// axis give P; an M or N shard with the other side whole passes. A Gemm of
// two activations without C follows the same 2-D cases through its
// transposes.
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

#include "llvm/ADT/STLExtras.h"

namespace qn::rules {
namespace {

llvm::Error linear(const RuleContext &ctx, const Node &n, const LinearInfo &li, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0];
  const Value *y = n.outputs[0];
  int outLast = y->hasShape ? static_cast<int>(y->rank() - 1) : static_cast<int>(x->rank() - 1);
  LinearStrategy strategy = li.strategy;
  if (ctx.dry) {
    if (llvm::is_contained(ctx.dry->group, &n)) {
      strategy = LinearStrategy::Column;
    } else if (strategy == LinearStrategy::Replicate && li.pairedWith.empty() &&
               ctx.of(x).isShard() && ctx.of(x).axis == li.actKAxis) {
      strategy = LinearStrategy::Row;
      r.tentativeRow = true;
    }
  }
  switch (strategy) {
  case LinearStrategy::Replicate:
    break;
  case LinearStrategy::Column:
    np.in[1] = Placement::S(li.weightNAxis, li.fusedParts);
    if (li.isGemm && n.inputs.size() > 2 && n.inputs[2]) {
      // C broadcasts to [M, N]: slice it where it spans N.
      const Value *c = n.inputs[2];
      int64_t cr = c->rank();
      if (cr >= 1 && c->dimSize(cr - 1) == li.N)
        np.in[2] = Placement::S(static_cast<int>(cr - 1), li.fusedParts);
    }
    np.out[0] = Placement::S(outLast, li.fusedParts);
    break;
  case LinearStrategy::Row:
    np.in[0] = Placement::S(li.actKAxis);
    np.in[1] = Placement::S(li.weightKAxis);
    if (li.isGemm && n.inputs.size() > 2 && n.inputs[2] && !ctx.dry)
      return fail("internal: row-parallel Gemm '" + n.label() + "' still has a bias");
    np.out[0] = Placement::P();
    break;
  }
  return llvm::Error::success();
}

llvm::Error activations(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *a = n.input(0), *b = n.input(1), *y = n.outputs[0];
  if (!a || !b || !a->hasShape || !b->hasShape || !y || !y->hasShape || a->rank() < 2 ||
      b->rank() < 2)
    return llvm::Error::success();
  Placement pa = ctx.of(a), pb = ctx.of(b);
  int64_t ra = a->rank(), rb = b->rank(), rr = y->rank();
  auto outBatch = [&](int axis, int64_t rank) { return axis + (rr - rank); };
  // Batched MatMuls over a merged (batch*heads) axis (OPT's and GPT-NeoX's
  // bmm): both sides merged alike on the same batch axis.
  if (pa.isMerged() || pb.isMerged()) {
    if (pa.blocks == pb.blocks && pa.axis < ra - 2 && pb.axis < rb - 2 &&
        outBatch(pa.axis, ra) == outBatch(pb.axis, rb)) {
      np.in[0] = pa;
      np.in[1] = pb;
      np.out[0] = Placement::Merged(static_cast<int>(outBatch(pa.axis, ra)), pa.blockSize());
    }
    return llvm::Error::success();
  }
  if (pa.blocks != 1 || pb.blocks != 1) {
    // Head-wise blocked operands (a fused Q|K|V's gradient, training): the
    // blocked N or M axis passes; blocked alike on the contracted axis: P.
    if (pa.blocks < 0 || pb.blocks < 0)
      return llvm::Error::success();
    if (pb.isShard() && pb.axis == rb - 1 && pa.isReplicated()) {
      np.in[1] = pb;
      np.out[0] = Placement::S(static_cast<int>(rr - 1), pb.blocks);
    } else if (pa.isShard() && pa.axis == ra - 2 && pb.isReplicated()) {
      np.in[0] = pa;
      np.out[0] = Placement::S(static_cast<int>(rr - 2), pa.blocks);
    } else if (pa.isShard() && pb.isShard() && pa.blocks == pb.blocks && pa.axis == ra - 1 &&
               pb.axis == rb - 2) {
      np.in[0] = pa;
      np.in[1] = pb;
      np.out[0] = Placement::P();
    }
    return llvm::Error::success();
  }
  if (pa.isShard() && pb.isShard() && pa.axis < ra - 2 && pb.axis < rb - 2 &&
      outBatch(pa.axis, ra) == outBatch(pb.axis, rb) && a->dimSize(pa.axis) != 1 &&
      b->dimSize(pb.axis) != 1) {
    np.in[0] = pa;
    np.in[1] = pb;
    np.out[0] = Placement::S(static_cast<int>(outBatch(pa.axis, ra)));
    return llvm::Error::success();
  }
  // One side sharded on a batch axis (heads), the other whole: slice the
  // whole side locally (no communication). This is how grouped-query
  // attention with fewer KV heads than ranks works: K and V are computed
  // whole, repeated to the query heads, and each rank keeps the heads its
  // query heads use.
  auto batchSlice = [&](const Value *s, Placement ps, const Value *o, int64_t rs, int64_t ro,
                        unsigned otherIndex) {
    if (!ps.isShard() || ps.axis >= rs - 2 || !ctx.of(o).isReplicated())
      return false;
    int64_t ob = outBatch(ps.axis, rs) - (rr - ro); // the other side's axis
    if (ob < 0 || (ob < ro - 2 && o->dimSize(ob) == 1)) {
      // The other side broadcasts along it (multi-query attention's single
      // K/V head): whole, it serves every rank's heads.
      np.out[0] = Placement::S(static_cast<int>(outBatch(ps.axis, rs)));
      return true;
    }
    if (ob >= ro - 2 || o->dimSize(ob) != s->dimSize(ps.axis) ||
        s->dimSize(ps.axis) <= 0)
      return false;
    np.in[otherIndex] = Placement::S(static_cast<int>(ob));
    np.out[0] = Placement::S(static_cast<int>(outBatch(ps.axis, rs)));
    return true;
  };
  if (batchSlice(a, pa, b, ra, rb, 1)) {
    np.in[0] = pa;
    return llvm::Error::success();
  }
  if (batchSlice(b, pb, a, rb, ra, 0)) {
    np.in[1] = pb;
    return llvm::Error::success();
  }
  if (pa.isShard() && pb.isShard() && pa.axis == ra - 1 && pb.axis == rb - 2) {
    np.in[0] = pa;
    np.in[1] = pb;
    np.out[0] = Placement::P();
    return llvm::Error::success();
  }
  if (pa.isShard() && pa.axis == ra - 2 && pb.isReplicated()) {
    np.in[0] = pa;
    np.out[0] = Placement::S(static_cast<int>(rr - 2));
    return llvm::Error::success();
  }
  if (pb.isShard() && pb.axis == rb - 1 && pa.isReplicated()) {
    np.in[1] = pb;
    np.out[0] = Placement::S(static_cast<int>(rr - 1));
  }
  return llvm::Error::success();
}

llvm::Error matmul(const RuleContext &ctx, const Node &n, RuleResult &r) {
  if (ctx.linear)
    return linear(ctx, n, *ctx.linear, r);
  return activations(ctx, n, r);
}

/// Gemm of two activations without C (the backward pass's weight gradients
/// op(A)^T.dY): the 2-D MatMul cases on op(A) [M, K] and op(B) [K, N], the
/// transposes mapping each operand's sharded axis; blocked layouts pass.
llvm::Error gemmActivations(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *a = n.input(0), *b = n.input(1);
  if (!a || !b || n.input(2) || !a->hasShape || !b->hasShape || a->rank() != 2 || b->rank() != 2)
    return llvm::Error::success();
  Placement pa = ctx.of(a), pb = ctx.of(b);
  if (pa.isMerged() || pb.isMerged())
    return llvm::Error::success();
  bool ta = attrInt(n.proto, "transA", 0), tb = attrInt(n.proto, "transB", 0);
  // The operand's sharded axis in op(X) terms: 0 = rows, 1 = columns.
  auto logical = [](Placement p, bool t) { return p.isShard() ? (t ? 1 - p.axis : p.axis) : -1; };
  int la = logical(pa, ta), lb = logical(pb, tb);
  if (la == 1 && lb == 0 && pa.blocks == pb.blocks) { // both on K
    np.in[0] = pa;
    np.in[1] = pb;
    np.out[0] = Placement::P();
  } else if (la == 0 && pb.isReplicated()) { // M
    np.in[0] = pa;
    np.out[0] = Placement::S(0, pa.blocks);
  } else if (lb == 1 && pa.isReplicated()) { // N
    np.in[1] = pb;
    np.out[0] = Placement::S(1, pb.blocks);
  }
  return llvm::Error::success();
}

llvm::Error gemm(const RuleContext &ctx, const Node &n, RuleResult &r) {
  if (ctx.linear)
    return linear(ctx, n, *ctx.linear, r);
  return gemmActivations(ctx, n, r);
}

} // namespace

void registerMatMulRules(RuleRegistry &r) {
  r.add("MatMul", matmul, "matmul");
  r.add("Gemm", gemm, "matmul");
}

} // namespace qn::rules
