//===- Propagate.cpp - Per-op sharding rules ------------------------------===//
//
// Each op kind declares how placements flow through it: given the placements
// of its inputs, the placement it needs of each input (a constant input that
// needs S(d) is sliced; any other mismatch becomes a redistribution in
// Lower.cpp) and the placements of its outputs. Ops without a rule get the
// safe default: all inputs replicated.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Partition.h"

#include "llvm/ADT/StringSet.h"

namespace qn {

bool isShardPreservingElementwise(llvm::StringRef op);

namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

int64_t attrInt(const onnx::NodeProto &n, llvm::StringRef name, int64_t dflt) {
  for (const auto &a : n.attribute())
    if (a.name() == name)
      return a.i();
  return dflt;
}

bool isUnary(llvm::StringRef op) {
  static const llvm::StringSet<> ops = {
      "Relu", "Tanh", "Sigmoid", "Erf", "Gelu", "Exp", "Log", "Sqrt", "Abs", "Neg",
      "Reciprocal", "Softplus", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish",
      "Cast", "Identity", "Floor", "Ceil", "Sin", "Cos", "Not", "IsNaN", "Sign", "Round"};
  return ops.contains(op);
}

/// Ops that are linear in their (single) input, so a partial sum passes.
bool isLinearUnary(llvm::StringRef op) { return op == "Identity" || op == "Neg"; }

struct Rules {
  Graph &g;
  const PartitionOptions &opts;
  llvm::DenseMap<const Node *, const LinearInfo *> linearOf;

  /// Placement of value v as it is (constants: R).
  Placement of(const Value *v) const { return v ? v->placement : Placement::R(); }

  void allReplicated(const Node &n, NodePlacements &np) {
    np.in.assign(n.inputs.size(), Placement::R());
    np.out.assign(n.outputs.size(), Placement::R());
  }

  llvm::Error linear(const Node &n, const LinearInfo &li, NodePlacements &np) {
    np.in.assign(n.inputs.size(), Placement::R());
    np.out.assign(n.outputs.size(), Placement::R());
    const Value *x = n.inputs[0];
    const Value *y = n.outputs[0];
    int outLast = y->hasShape ? static_cast<int>(y->rank() - 1) : static_cast<int>(x->rank() - 1);
    switch (li.strategy) {
    case LinearStrategy::Replicate:
      break;
    case LinearStrategy::Column:
      np.in[1] = Placement::S(li.weightNAxis);
      if (li.isGemm && n.inputs.size() > 2 && n.inputs[2]) {
        // C broadcasts to [M, N]: slice it where it spans N.
        const Value *c = n.inputs[2];
        int64_t cr = c->rank();
        if (cr >= 1 && c->dimSize(cr - 1) == li.N)
          np.in[2] = Placement::S(static_cast<int>(cr - 1));
      }
      np.out[0] = Placement::S(outLast);
      break;
    case LinearStrategy::Row:
      np.in[0] = Placement::S(li.actKAxis);
      np.in[1] = Placement::S(li.weightKAxis);
      if (li.isGemm && n.inputs.size() > 2 && n.inputs[2])
        return fail("internal: row-parallel Gemm '" + n.label() + "' still has a bias");
      np.out[0] = Placement::P();
      break;
    }
    return llvm::Error::success();
  }

  void unary(const Node &n, NodePlacements &np) {
    Placement p = of(n.inputs[0]);
    if (p.isPartial() && !isLinearUnary(n.opType()))
      p = Placement::R();
    np.in.assign(n.inputs.size(), Placement::R());
    np.in[0] = p;
    np.out.assign(n.outputs.size(), Placement::R());
    np.out[0] = p;
  }

  /// Elementwise ops with numpy broadcasting (Add, Mul, Where, ...).
  void elementwise(const Node &n, NodePlacements &np) {
    np.in.assign(n.inputs.size(), Placement::R());
    np.out.assign(n.outputs.size(), Placement::R());
    const Value *y = n.outputs[0];
    if (!y || !y->hasShape)
      return;
    int64_t outRank = y->rank();
    // Partial sums: Add/Sub of partials stays partial.
    bool anyPartial = false, allPartial = true;
    for (const Value *v : n.inputs) {
      bool p = v && !v->constant && v->placement.isPartial();
      anyPartial |= p;
      allPartial &= p;
    }
    if (anyPartial && allPartial && (n.opType() == "Add" || n.opType() == "Sub")) {
      np.in.assign(n.inputs.size(), Placement::P());
      np.out[0] = Placement::P();
      return;
    }
    // The shard axis, in output coordinates, if the sharded inputs agree.
    int axis = -1;
    for (const Value *v : n.inputs) {
      if (!v || v->constant || !v->placement.isShard())
        continue;
      int d = static_cast<int>(v->placement.axis + (outRank - v->rank()));
      if (axis == -1)
        axis = d;
      else if (axis != d)
        return; // disagreeing shards: gather all
    }
    if (axis < 0)
      return;
    int64_t extent = y->dimSize(axis);
    if (extent <= 0 || extent % opts.tp)
      return;
    for (unsigned i = 0; i < n.inputs.size(); ++i) {
      const Value *v = n.inputs[i];
      if (!v || !v->hasShape)
        continue;
      int64_t a = axis - (outRank - v->rank());
      if (a < 0 || v->dimSize(a) == 1)
        continue; // broadcast along the shard axis: the whole input is needed
      np.in[i] = Placement::S(static_cast<int>(a));
    }
    np.out[0] = Placement::S(axis);
  }

  void softmax(const Node &n, NodePlacements &np) {
    np.in.assign(n.inputs.size(), Placement::R());
    np.out.assign(n.outputs.size(), Placement::R());
    const Value *x = n.inputs[0];
    Placement p = of(x);
    if (!p.isShard() || !x->hasShape)
      return;
    int64_t axis = attrInt(n.proto, "axis", g.opsetVersion() >= 13 ? -1 : 1);
    if (axis < 0)
      axis += x->rank();
    // Before opset 13 the op flattens from `axis` on: any shard at or after it
    // crosses the normalised slice.
    bool crosses = g.opsetVersion() >= 13 ? p.axis == axis : p.axis >= axis;
    if (crosses)
      return;
    np.in[0] = p;
    np.out[0] = p;
  }

  void transpose(const Node &n, NodePlacements &np) {
    np.in.assign(n.inputs.size(), Placement::R());
    np.out.assign(n.outputs.size(), Placement::R());
    const Value *x = n.inputs[0];
    Placement p = of(x);
    if (p.isReplicated() || !x->hasShape)
      return;
    std::vector<int64_t> perm;
    for (const auto &a : n.proto.attribute())
      if (a.name() == "perm")
        perm.assign(a.ints().begin(), a.ints().end());
    if (perm.empty())
      for (int64_t i = x->rank() - 1; i >= 0; --i)
        perm.push_back(i);
    np.in[0] = p;
    if (p.isPartial()) {
      np.out[0] = p;
      return;
    }
    for (unsigned i = 0; i < perm.size(); ++i)
      if (perm[i] == p.axis)
        np.out[0] = Placement::S(static_cast<int>(i));
  }

  llvm::Error apply(const Node &n, NodePlacements &np) {
    if (auto it = linearOf.find(&n); it != linearOf.end())
      return linear(n, *it->second, np);
    llvm::StringRef op = n.opType();
    if (!n.domain().empty() || n.inputs.empty() || !n.inputs[0])
      allReplicated(n, np);
    else if (isUnary(op))
      unary(n, np);
    else if (isShardPreservingElementwise(op))
      elementwise(n, np);
    else if (op == "Softmax" || op == "LogSoftmax")
      softmax(n, np);
    else if (op == "Transpose")
      transpose(n, np);
    else
      allReplicated(n, np);
    return llvm::Error::success();
  }
};

} // namespace

llvm::Error propagatePlacements(Graph &g, const std::vector<LinearInfo> &linears,
                                const PartitionOptions &opts, const RewriteState &state,
                                llvm::DenseMap<const Node *, NodePlacements> &out) {
  Rules rules{g, opts, llvm::DenseMap<const Node *, const LinearInfo *>()};
  for (const LinearInfo &li : linears)
    rules.linearOf[li.node] = &li;
  for (Value *v : g.inputs)
    v->placement = Placement::R();
  for (auto &np : g.nodes) {
    for (Value *v : np->inputs)
      if (v && v->constant)
        v->placement = Placement::R();
    NodePlacements p;
    if (auto it = state.fixed.find(np.get()); it != state.fixed.end())
      p = it->second;
    else if (auto err = rules.apply(*np, p))
      return err;
    for (unsigned i = 0; i < np->outputs.size(); ++i)
      if (Value *v = np->outputs[i])
        v->placement = p.out[i];
    out[np.get()] = std::move(p);
  }
  return llvm::Error::success();
}

} // namespace qn
