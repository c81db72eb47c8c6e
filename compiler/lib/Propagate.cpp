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

#include <cstring>

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

namespace qn {

bool isShardPreservingElementwise(llvm::StringRef op);

namespace {



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
  DryRun *dry = nullptr;
  /// What earlier nodes need (a rule may add a constant override to the
  /// Concat that builds its Reshape target).
  llvm::DenseMap<const Node *, NodePlacements> *all = nullptr;

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
    LinearStrategy strategy = li.strategy;
    if (dry) {
      if (llvm::is_contained(dry->group, &n)) {
        strategy = LinearStrategy::Column;
      } else if (strategy == LinearStrategy::Replicate && li.pairedWith.empty() &&
                 of(x).isShard() && of(x).axis == li.actKAxis) {
        strategy = LinearStrategy::Row;
        dry->rows.push_back(&n);
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
      if (li.isGemm && n.inputs.size() > 2 && n.inputs[2] && !dry)
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
    // The shard axis, in output coordinates, if the sharded inputs agree
    // (on the axis and on the blocked layout).
    int axis = -1, blocks = 1;
    for (const Value *v : n.inputs) {
      if (!v || v->constant || !v->placement.isShard())
        continue;
      int d = static_cast<int>(v->placement.axis + (outRank - v->rank()));
      if (axis == -1) {
        axis = d;
        blocks = v->placement.blocks;
      } else if (axis != d || blocks != v->placement.blocks) {
        return; // disagreeing shards: gather all
      }
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
      np.in[i] = Placement::S(static_cast<int>(a), blocks);
    }
    np.out[0] = Placement::S(axis, blocks);
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
        np.out[0] = Placement::S(static_cast<int>(i), p.blocks);
  }

  /// Reshape of a value sharded on axis d: the sharded axis may be kept,
  /// split (hidden -> heads x head_dim: the leading factor is sharded) or
  /// merged (heads x head_dim -> hidden: d must lead the merged group). The
  /// target shape (a constant) is rewritten with the sharded dim divided by
  /// tp; anything else is gathered first. A partial sum reshapes as is.
  void reshape(const Node &n, NodePlacements &np) {
    reshapeRule(n, np);
    checkLocalReads(n, np);
  }

  void checkLocalReads(const Node &n, const NodePlacements &np) {
    if (localReadProblem.empty() && !np.out.empty() && !np.out[0].isShard() &&
        targetReadsShardedAxis(n.input(1)))
      localReadProblem = "'" + n.label() + "' (" + n.opType() +
                         ") would use a local size read from a sharded tensor";
  }

  void reshapeRule(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *x = n.inputs[0], *shape = n.input(1), *y = n.outputs[0];
    Placement p = of(x);
    if (p.isPartial()) {
      np.in[0] = p;
      np.out[0] = p;
      return;
    }
    if (!p.isShard() || !shape || !x->hasShape || !y || !y->hasShape)
      return;
    const auto &xs = x->shape, &ys = y->shape;
    // The sharded axis is the last one and keeps its size (flattening the
    // leading dims for a 2-D Gemm, as exporters do for HF's Conv1D, and
    // restoring them): the shard stays on the last axis, blocks and all.
    if (static_cast<size_t>(p.axis) + 1 == xs.size() && xs.back().known() &&
        ys.back().known() && xs.back().size == ys.back().size) {
      int last = static_cast<int>(ys.size() - 1);
      if (!localizeShapeEntry(shape, last, false, 1, np))
        return;
      np.in[0] = p;
      np.out[0] = Placement::S(last, p.blocks);
      return;
    }
    if (p.blocks != 1)
      return;
    // Group the axes of x and y into blocks of equal known products;
    // symbolic dims must match one to one.
    size_t i = 0, j = 0;
    int outAxis = -1;
    while (i < xs.size() && j < ys.size()) {
      size_t i0 = i, j0 = j;
      if (!xs[i].known() || !ys[j].known()) {
        // Symbolic dims match one to one; a dim with no name (a -1 or 0 in
        // the target, or one of ONNX's "unk__" placeholders) is taken to be
        // the symbolic dim across from it once all else matches.
        auto nameless = [](const Dim &d) {
          return !d.known() &&
                 (d.symbol.empty() || llvm::StringRef(d.symbol).startswith("unk__"));
        };
        if (xs[i].known() || ys[j].known() ||
            (xs[i].symbol != ys[j].symbol && !nameless(xs[i]) && !nameless(ys[j])))
          return;
        ++i, ++j;
      } else {
        int64_t px = xs[i++].size, py = ys[j++].size;
        while (px != py) {
          if (px < py) {
            if (i == xs.size() || !xs[i].known())
              return;
            px *= xs[i++].size;
          } else {
            if (j == ys.size() || !ys[j].known())
              return;
            py *= ys[j++].size;
          }
        }
      }
      if (static_cast<size_t>(p.axis) >= i0 && static_cast<size_t>(p.axis) < i) {
        // The sharded axis must lead its group (a merge keeps the shard
        // outermost; a split shards the leading factor).
        if (static_cast<size_t>(p.axis) != i0)
          return;
        outAxis = static_cast<int>(j0);
      }
    }
    if (outAxis < 0 || ys[outAxis].size <= 0 || ys[outAxis].size % opts.tp)
      return;
    if (!localizeShapeEntry(shape, outAxis, outAxis != p.axis, 1, np))
      return;
    np.in[0] = p;
    np.out[0] = Placement::S(outAxis);
  }

  /// The shape input `shape` of a Reshape or Expand (input `index` of its
  /// node) holds, at `axis`, the global size of a sharded axis: replace that
  /// entry by the local size. The shape is a constant, or (as exporters
  /// write it for dynamic batch and sequence) a Concat of pieces:
  /// Shape->Gather->Unsqueeze for the dynamic dims, constants for heads and
  /// head_dim. `zeroIsWrong`: a 0 ("copy the input's dim") there would copy
  /// an unsharded dim. Returns false if the entry cannot be localised.
  bool localizeShapeEntry(const Value *shape, int64_t axis, bool zeroIsWrong, unsigned index,
                          NodePlacements &np) {
    const Value *holder = shape; // the constant holding the entry
    int64_t offset = axis;
    Node *concat = nullptr;
    unsigned concatInput = 0;
    if (!shape->constant) {
      const Value *inner = unwrapShape(shape);
      concat = inner->producer;
      if (!concat || concat->opType() != "Concat" || !all ||
          (inner == shape && shape->uses.size() != 1))
        return false;
      // A run-time read of a sharded axis holds the local size: it must be
      // the entry of the sharded output axis, nowhere else.
      int64_t at = 0;
      bool localAtAxis = false;
      for (const Value *piece : concat->inputs) {
        int64_t len = piece && piece->rank() == 1 ? piece->dimSize(0) : -1;
        if (len < 0)
          return false;
        if (len == 1 && readsShardedAxis(piece)) {
          if (at != axis)
            return false;
          localAtAxis = true; // already the local size
        }
        at += len;
      }
      if (localAtAxis)
        return true;
      int64_t pos = 0;
      holder = nullptr;
      for (unsigned ci = 0; ci < concat->inputs.size(); ++ci) {
        const Value *piece = concat->inputs[ci];
        int64_t len = piece && piece->rank() == 1 ? piece->dimSize(0) : -1;
        if (len < 0)
          return false;
        if (axis >= pos && axis < pos + len) {
          holder = piece;
          offset = axis - pos;
          concatInput = ci;
          break;
        }
        pos += len;
      }
      if (!holder || !holder->constant)
        return false; // a dynamic entry: its size is not known here
    }
    if (holder->constant->data_type() != onnx::TensorProto::INT64)
      return false;
    onnx::TensorProto t = *holder->constant;
    std::string &raw = *t.mutable_raw_data();
    if (static_cast<int64_t>(raw.size()) <= offset * static_cast<int64_t>(sizeof(int64_t)))
      return false;
    int64_t *dims = reinterpret_cast<int64_t *>(raw.data());
    if (dims[offset] > 1 && dims[offset] % opts.tp)
      return false; // e.g. fewer KV heads than ranks
    if (dims[offset] > 1)
      dims[offset] /= opts.tp;
    else if ((dims[offset] == 0 && zeroIsWrong) || (dims[offset] < 0 && concat))
      return false;
    else if (dims[offset] == 1)
      return true; // Expand: 1 keeps the input's (local) dim
    t.set_name(g.uniqueName(holder->name + "__qn_local"));
    std::string name = t.name();
    g.addConstant(std::move(t));
    if (concat)
      (*all)[concat].constantOverrides.push_back({concatInput, name});
    else
      np.constantOverrides.push_back({index, name});
    return true;
  }

  /// If `v` is one entry of a shape read at run time, Shape(t)[i] (through
  /// Unsqueeze/Squeeze/Cast, a Gather of a constant index or a one-element
  /// Slice, and Mul by a constant), returns t and sets `index` to i.
  static const Value *traceShapeRead(const Value *v, int64_t &index) {
    for (int depth = 0; v && v->producer && depth < 8; ++depth) {
      const Node *p = v->producer;
      llvm::StringRef op = p->opType();
      if (op == "Unsqueeze" || op == "Squeeze" || op == "Cast") {
        v = p->inputs[0];
      } else if (op == "Mul" && p->inputs.size() == 2 && p->inputs[1] && p->inputs[1]->constant) {
        v = p->inputs[0];
      } else if ((op == "Gather" || op == "Slice") && constantScalar(p->input(1), index) && p->inputs[0] &&
                 p->inputs[0]->producer && p->inputs[0]->producer->opType() == "Shape") {
        const Value *t = p->inputs[0]->producer->inputs[0];
        if (!t || !t->hasShape)
          return nullptr;
        if (index < 0)
          index += t->rank();
        return t;
      } else {
        return nullptr;
      }
    }
    return nullptr;
  }

  /// Whether the entry `piece` is a run-time read of a sharded axis (which
  /// then holds the local size).
  bool readsShardedAxis(const Value *piece) const {
    int64_t index = -1;
    const Value *t = traceShapeRead(piece, index);
    return t && of(t).isShard() && of(t).axis == index;
  }

  /// The exporter writes expand(sizes) targets as Where(Equal(s, -1), 1, s)
  /// with s = Reshape(Concat(...), [-1]): the Concat is what matters.
  static const Value *unwrapShape(const Value *v) {
    for (int depth = 0; v && v->producer && depth < 4; ++depth) {
      const Node *p = v->producer;
      if (p->opType() == "Where" && p->inputs.size() == 3 && p->inputs[2] && p->inputs[0] &&
          p->inputs[0]->producer && p->inputs[0]->producer->opType() == "Equal" &&
          p->inputs[0]->producer->inputs[0] == p->inputs[2])
        v = p->inputs[2];
      else if (p->opType() == "Reshape" && p->inputs[0] && p->inputs[0]->producer &&
               p->inputs[0]->producer->opType() == "Concat" && p->input(1) &&
               p->input(1)->constant)
        v = p->inputs[0];
      else
        break;
    }
    return v;
  }

  /// Whether a Reshape/Expand target holds a run-time read of a sharded
  /// axis (a local size).
  bool targetReadsShardedAxis(const Value *shape) const {
    if (!shape || shape->constant)
      return false;
    const Value *inner = unwrapShape(shape);
    if (!inner->producer || inner->producer->opType() != "Concat")
      return false;
    for (const Value *piece : inner->producer->inputs)
      if (piece && readsShardedAxis(piece))
        return true;
    return false;
  }

  /// Set when a Reshape/Expand would use a local size read at run time
  /// without keeping the shard it came from (a wrong plan).
  std::string localReadProblem;

  /// The Shape value `v` only feeds the target shapes of Reshape/Expand
  /// (through the ops exporters use to build them), and only as single
  /// entries taken out by a Gather or Slice (`extracted`): reading a sharded
  /// dim there gives the local size, and the Reshape/Expand rules check that
  /// such an entry (a Concat piece) lands on their sharded axis. A whole
  /// shape used as a target, or anything on the way that is a graph output,
  /// would carry the local size unchecked.
  static bool feedsOnlyShapeTargets(const Value *v, int depth = 0, bool extracted = false) {
    static const llvm::StringSet<> through = {"Slice", "Gather", "Squeeze", "Unsqueeze", "Cast",
                                              "Concat", "Mul", "Reshape", "Equal", "Where",
                                              "ConstantOfShape", "Shape"};
    if (depth > 10 || v->uses.empty() || v->isGraphOutput)
      return false;
    for (const auto &[user, idx] : v->uses) {
      llvm::StringRef op = user->opType();
      if ((op == "Reshape" || op == "Expand") && idx == 1) {
        if (!extracted)
          return false;
        continue;
      }
      if (!through.contains(op) || !user->outputs[0])
        return false;
      const Value *out = user->outputs[0];
      bool single = (op == "Gather" || op == "Slice") && idx == 0 && out->hasShape &&
                    out->numElements() == 1;
      if (!feedsOnlyShapeTargets(out, depth + 1, extracted || single))
        return false;
    }
    return true;
  }

  /// Unsqueeze / Squeeze move the shard axis past the inserted or removed
  /// axes; a partial sum passes.
  void unsqueezeOrSqueeze(const Node &n, NodePlacements &np, bool unsqueeze) {
    allReplicated(n, np);
    const Value *x = n.inputs[0], *y = n.outputs[0];
    Placement p = of(x);
    if (p.isPartial()) {
      np.in[0] = p;
      np.out[0] = p;
      return;
    }
    if (!p.isShard() || !x->hasShape || !y || !y->hasShape)
      return;
    std::vector<int64_t> axes;
    if (!nodeAxes(n, 1, axes) || axes.empty())
      return; // Squeeze of every size-1 dim: keep it simple
    int64_t rank = unsqueeze ? y->rank() : x->rank();
    for (int64_t &a : axes)
      if (a < 0)
        a += rank;
    int64_t d = p.axis;
    if (unsqueeze) {
      // The output axis that is the d-th of the kept ones.
      int64_t kept = -1;
      for (int64_t o = 0; o < rank; ++o)
        if (!llvm::is_contained(axes, o) && ++kept == d) {
          d = o;
          break;
        }
    } else {
      if (llvm::is_contained(axes, d))
        return;
      int64_t before = 0;
      for (int64_t a : axes)
        before += a < d;
      d -= before;
    }
    np.in[0] = p;
    np.out[0] = Placement::S(static_cast<int>(d), p.blocks);
  }

  /// Slice along other axes than the sharded one keeps the shard.
  void slice(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *x = n.inputs[0];
    Placement p = of(x);
    if (!p.isShard() || p.blocks != 1 || !x->hasShape)
      return;
    std::vector<int64_t> axes;
    if (n.input(3)) {
      if (!constantInts(n.input(3), axes))
        return;
    } else if (const Value *st = n.input(1); st && st->hasShape && st->rank() == 1 &&
                                              st->shape[0].known()) {
      for (int64_t i = 0; i < st->shape[0].size; ++i)
        axes.push_back(i);
    } else {
      return;
    }
    for (int64_t ax : axes)
      if ((ax < 0 ? ax + x->rank() : ax) == p.axis)
        return;
    np.in[0] = p;
    np.out[0] = p;
  }

  /// Concat along another axis of inputs sharded alike keeps the shard;
  /// constant inputs spanning the shard axis are sliced.
  void concat(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *y = n.outputs[0];
    if (!y || !y->hasShape)
      return;
    int64_t axis = attrInt(n.proto, "axis", 0);
    if (axis < 0)
      axis += y->rank();
    Placement shard = Placement::R();
    for (const Value *v : n.inputs) {
      if (!v || v->constant)
        continue;
      Placement p = of(v);
      if (!p.isShard() || p.blocks != 1 || p.axis == axis ||
          (shard.isShard() && shard != p))
        return;
      shard = p;
    }
    if (!shard.isShard())
      return;
    for (unsigned i = 0; i < n.inputs.size(); ++i)
      if (n.inputs[i])
        np.in[i] = shard;
    np.out[0] = shard;
  }

  /// Expand of a sharded value along other axes: the target's entry for the
  /// sharded axis becomes the local size.
  void expand(const Node &n, NodePlacements &np) {
    expandRule(n, np);
    checkLocalReads(n, np);
  }

  void expandRule(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *x = n.inputs[0], *shape = n.input(1), *y = n.outputs[0];
    Placement p = of(x);
    if (!p.isShard() || p.blocks != 1 || !x->hasShape || !shape || !y || !y->hasShape)
      return;
    int64_t d = p.axis + (y->rank() - x->rank());
    if (y->dimSize(d) != x->dimSize(p.axis) || x->dimSize(p.axis) <= 0)
      return; // broadcast along the sharded axis
    if (!localizeShapeEntry(shape, d, false, 1, np))
      return;
    np.in[0] = p;
    np.out[0] = Placement::S(static_cast<int>(d));
  }

  /// MatMul of two activations (attention's Q.K^T and P.V): shards on the
  /// same batch axis (heads) stay sharded; shards on the contracted axis
  /// give a partial sum; M or N shards with the other side whole pass.
  void matmul(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *a = n.input(0), *b = n.input(1), *y = n.outputs[0];
    if (!a || !b || !a->hasShape || !b->hasShape || !y || !y->hasShape || a->rank() < 2 ||
        b->rank() < 2)
      return;
    Placement pa = of(a), pb = of(b);
    if (pa.blocks != 1 || pb.blocks != 1)
      return;
    int64_t ra = a->rank(), rb = b->rank(), r = y->rank();
    auto outBatch = [&](int axis, int64_t rank) { return axis + (r - rank); };
    if (pa.isShard() && pb.isShard() && pa.axis < ra - 2 && pb.axis < rb - 2 &&
        outBatch(pa.axis, ra) == outBatch(pb.axis, rb) && a->dimSize(pa.axis) != 1 &&
        b->dimSize(pb.axis) != 1) {
      np.in[0] = pa;
      np.in[1] = pb;
      np.out[0] = Placement::S(static_cast<int>(outBatch(pa.axis, ra)));
      return;
    }
    // One side sharded on a batch axis (heads), the other whole: slice the
    // whole side locally (no communication). This is how grouped-query
    // attention with fewer KV heads than ranks works: K and V are computed
    // whole, repeated to the query heads, and each rank keeps the heads its
    // query heads use.
    auto batchSlice = [&](const Value *s, Placement ps, const Value *o, int64_t rs, int64_t ro,
                          unsigned otherIndex) {
      if (!ps.isShard() || ps.axis >= rs - 2 || !of(o).isReplicated())
        return false;
      int64_t ob = outBatch(ps.axis, rs) - (r - ro); // the other side's axis
      if (ob < 0 || ob >= ro - 2 || o->dimSize(ob) != s->dimSize(ps.axis) ||
          s->dimSize(ps.axis) <= 0)
        return false;
      np.in[otherIndex] = Placement::S(static_cast<int>(ob));
      np.out[0] = Placement::S(static_cast<int>(outBatch(ps.axis, rs)));
      return true;
    };
    if (batchSlice(a, pa, b, ra, rb, 1)) {
      np.in[0] = pa;
      return;
    }
    if (batchSlice(b, pb, a, rb, ra, 0)) {
      np.in[1] = pb;
      return;
    }
    if (pa.isShard() && pb.isShard() && pa.axis == ra - 1 && pb.axis == rb - 2) {
      np.in[0] = pa;
      np.in[1] = pb;
      np.out[0] = Placement::P();
      return;
    }
    if (pa.isShard() && pa.axis == ra - 2 && pb.isReplicated()) {
      np.in[0] = pa;
      np.out[0] = Placement::S(static_cast<int>(r - 2));
      return;
    }
    if (pb.isShard() && pb.axis == rb - 1 && pa.isReplicated()) {
      np.in[1] = pb;
      np.out[0] = Placement::S(static_cast<int>(r - 1));
    }
  }

  /// Split along the sharded axis of a blocked value (a fused Q|K|V
  /// projection split into its parts): each part comes out sharded, and the
  /// sizes, if given, are divided by tp. Splitting an unblocked shard along
  /// its axis would need a gather; other axes keep the shard.
  void split(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *x = n.inputs[0];
    Placement p = of(x);
    if (p.isPartial()) {
      np.in[0] = p;
      np.out.assign(n.outputs.size(), p);
      return;
    }
    if (!p.isShard() || !x->hasShape)
      return;
    int64_t axis = attrInt(n.proto, "axis", 0);
    if (axis < 0)
      axis += x->rank();
    const Value *sizes = n.input(1);
    if (axis != p.axis) {
      if (p.blocks != 1)
        return;
      np.in[0] = p;
      np.out.assign(n.outputs.size(), p);
      return;
    }
    if (p.blocks != static_cast<int>(n.outputs.size()))
      return;
    if (sizes) {
      if (!sizes->constant || sizes->constant->data_type() != onnx::TensorProto::INT64)
        return;
      onnx::TensorProto t = *sizes->constant;
      std::string &raw = *t.mutable_raw_data();
      int64_t *v = reinterpret_cast<int64_t *>(raw.data());
      size_t count = raw.size() / sizeof(int64_t);
      if (count != n.outputs.size())
        return;
      const int64_t first = v[0];
      for (size_t i = 0; i < count; ++i) {
        if (v[i] != first || v[i] % opts.tp)
          return;
        v[i] /= opts.tp;
      }
      t.set_name(g.uniqueName(sizes->name + "__qn_local"));
      np.constantOverrides.push_back({1u, t.name()});
      g.addConstant(std::move(t));
    }
    np.in[0] = p;
    np.out.assign(n.outputs.size(), Placement::S(p.axis));
  }

  /// Shape of a sharded value yields the local dims. That is only allowed
  /// when the value only builds Reshape/Expand targets (whose rules check
  /// that a read of the sharded dim lands on their sharded axis), or when
  /// every consumer reads other dims than the sharded one: a Gather of a
  /// constant index, or a Slice with constant bounds.
  void shape(const Node &n, NodePlacements &np) {
    allReplicated(n, np);
    const Value *x = n.inputs[0], *y = n.outputs[0];
    Placement p = of(x);
    if (!p.isShard() || !x->hasShape || !y || !n.proto.attribute().empty() ||
        y->isGraphOutput)
      return;
    if (feedsOnlyShapeTargets(y)) {
      np.in[0] = p;
      return;
    }
    int64_t rank = x->rank();
    for (const auto &[user, idx] : y->uses) {
      if (idx != 0)
        return;
      int64_t a = 0, b = 0;
      if (user->opType() == "Gather" && constantScalar(user->input(1), a)) {
        if (a < 0)
          a += rank;
        if (a == p.axis)
          return;
      } else if (user->opType() == "Slice" && constantScalar(user->input(1), a) &&
                 constantScalar(user->input(2), b) &&
                 (user->inputs.size() < 5 || !user->inputs[4])) {
        a = a < 0 ? a + rank : std::min(a, rank);
        b = b < 0 ? b + rank : std::min(b, rank);
        if (p.axis >= a && p.axis < b)
          return;
      } else {
        return;
      }
    }
    np.in[0] = p;
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
    else if (op == "Reshape")
      reshape(n, np);
    else if (op == "Split")
      split(n, np);
    else if (op == "Shape")
      shape(n, np);
    else if (op == "Unsqueeze" || op == "Squeeze")
      unsqueezeOrSqueeze(n, np, op == "Unsqueeze");
    else if (op == "Slice")
      slice(n, np);
    else if (op == "Concat")
      concat(n, np);
    else if (op == "Expand")
      expand(n, np);
    else if (op == "MatMul")
      matmul(n, np);
    else
      allReplicated(n, np);
    return llvm::Error::success();
  }
};

} // namespace

llvm::Error propagatePlacements(Graph &g, const std::vector<LinearInfo> &linears,
                                const PartitionOptions &opts, const RewriteState &state,
                                llvm::DenseMap<const Node *, NodePlacements> &out, DryRun *dry) {
  Rules rules{g, opts, llvm::DenseMap<const Node *, const LinearInfo *>(), dry, &out, std::string()};
  for (const LinearInfo &li : linears)
    rules.linearOf[li.node] = &li;
  for (Value *v : g.inputs)
    v->placement = Placement::R();
  // In a dry run: the values derived from the group, up to its row partners.
  llvm::DenseSet<const Value *> tainted;
  for (auto &np : g.nodes) {
    const Node *n = np.get();
    for (Value *v : np->inputs)
      if (v && v->constant)
        v->placement = Placement::R();
    NodePlacements p;
    size_t rowsBefore = dry ? dry->rows.size() : 0;
    if (auto it = state.fixed.find(n); it != state.fixed.end())
      p = it->second;
    else if (auto err = rules.apply(*np, p))
      return err;
    if (!rules.localReadProblem.empty()) {
      if (!dry)
        return fail("internal: " + rules.localReadProblem);
      if (dry->violation.empty())
        dry->violation = rules.localReadProblem;
      rules.localReadProblem.clear();
    }
    if (dry && dry->violation.empty()) {
      bool isRow = dry->rows.size() > rowsBefore;
      bool inGroup = llvm::is_contained(dry->group, n);
      bool touched = inGroup;
      for (unsigned i = 0; i < np->inputs.size(); ++i) {
        const Value *v = np->inputs[i];
        if (!v || v->constant || !tainted.count(v))
          continue;
        touched = true;
        if (v->placement.isShard() && i < p.in.size() && p.in[i] != v->placement)
          dry->violation = "'" + n->label() + "' (" + n->opType() + ") needs '" + v->name +
                           "' as " + p.in[i].str() + " but it is " + v->placement.str();
      }
      if (touched && !isRow)
        for (const Value *v : np->outputs)
          if (v)
            tainted.insert(v);
    }
    for (unsigned i = 0; i < np->outputs.size(); ++i)
      if (Value *v = np->outputs[i])
        v->placement = p.out[i];
    out[n] = std::move(p);
  }
  if (dry && dry->violation.empty())
    for (const Value *v : g.outputs)
      if (tainted.count(v) && v->placement.isShard())
        dry->violation = "graph output '" + v->name + "' would be " + v->placement.str();
  return llvm::Error::success();
}

} // namespace qn
