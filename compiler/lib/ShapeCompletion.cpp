//===- ShapeCompletion.cpp - Shapes ONNX 1.12's inference leaves out ------===//
//
// ONNX's shape inference (1.12) gives up on some exported patterns: a Slice
// with run-time bounds (the causal mask cut to the sequence length) has no
// shape, and broadcasting an unknown dim against a symbolic one loses the
// symbol. Everything downstream then has no shape, and the sharding rules,
// which need ranks and dims, give up too. This pass fills in, in topological
// order, what follows from the ops' semantics for a valid model:
//   - broadcasting: a dim that is unknown must be 1 or equal the other one,
//     so the result is the other one;
//   - Slice with run-time bounds keeps the rank (and the dims of axes it does
//     not slice);
//   - Reshape to Concat(Slice(Shape(x), 0, k), constants...) keeps x's first
//     k dims;
//   - unary ops, Softmax, LayerNormalization keep the shape; Transpose
//     permutes; MatMul broadcasts its batch dims.
// Only missing shapes and unknown dims are filled; nothing ONNX inferred is
// changed.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Import.h"

#include <cstring>

#include "llvm/ADT/StringSet.h"

namespace qn {
namespace {

/// Unknown: no size, and no symbol other than the "unk__N" placeholders ONNX
/// invents for dims it could not name.
bool unknown(const Dim &d) {
  return !d.known() && (d.symbol.empty() || llvm::StringRef(d.symbol).startswith("unk__"));
}

/// Broadcast of several shapes (right-aligned), preferring what is known.
llvm::SmallVector<Dim, 4> broadcast(llvm::ArrayRef<const Value *> ins) {
  size_t rank = 0;
  for (const Value *v : ins)
    rank = std::max(rank, v->shape.size());
  llvm::SmallVector<Dim, 4> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    Dim best; // unknown
    bool sawOne = false;
    for (const Value *v : ins) {
      int64_t a = static_cast<int64_t>(i) - static_cast<int64_t>(rank - v->shape.size());
      if (a < 0)
        continue;
      const Dim &d = v->shape[a];
      if (d.known() && d.size == 1) {
        sawOne = true;
        continue;
      }
      if (d.known()) {
        best = d;
        break;
      }
      if (!d.symbol.empty() && unknown(best))
        best = d;
    }
    if (unknown(best) && sawOne) {
      bool allOne = true;
      for (const Value *v : ins) {
        int64_t a = static_cast<int64_t>(i) - static_cast<int64_t>(rank - v->shape.size());
        if (a >= 0 && !(v->shape[a].known() && v->shape[a].size == 1))
          allOne = false;
      }
      if (allOne)
        best = Dim{1, {}};
    }
    out[i] = best;
  }
  return out;
}

/// Merges `inferred` into `v`: sets a missing shape, fills unknown dims.
bool refine(Value *v, const llvm::SmallVector<Dim, 4> &inferred) {
  if (!v->hasShape) {
    v->hasShape = true;
    v->shape = inferred;
    return true;
  }
  if (v->shape.size() != inferred.size())
    return false;
  bool changed = false;
  for (size_t i = 0; i < inferred.size(); ++i)
    if (unknown(v->shape[i]) && !unknown(inferred[i])) {
      v->shape[i] = inferred[i];
      changed = true;
    }
  return changed;
}

bool isUnaryShapeKeeping(llvm::StringRef op) {
  static const llvm::StringSet<> ops = {
      "Relu", "Tanh", "Sigmoid", "Erf", "Gelu", "Exp", "Log", "Sqrt", "Abs", "Neg",
      "Reciprocal", "Softplus", "LeakyRelu", "Elu", "Cast", "Identity", "Softmax",
      "LogSoftmax", "LayerNormalization", "Sin", "Cos", "Not", "Dropout", "Floor", "Ceil"};
  return ops.contains(op);
}

bool isBroadcasting(llvm::StringRef op) {
  static const llvm::StringSet<> ops = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min",
                                        "Equal", "Less", "Greater", "And", "Or",
                                        "GreaterOrEqual", "LessOrEqual"};
  return ops.contains(op);
}

/// Reshape's target `Concat(Slice(Shape(x), 0, k), c1, c2, ...)`: the dims.
bool reshapeTarget(const Value *target, llvm::SmallVector<Dim, 4> &out) {
  std::vector<int64_t> values;
  if (constantInts(target, values)) {
    for (int64_t v : values)
      out.push_back(v > 0 ? Dim{v, {}} : Dim{});
    return true;
  }
  // The exporter's expand(sizes) target: Where(Equal(s, -1), 1, s) with
  // s = Reshape(Concat(...), [-1]).
  for (int depth = 0; target && target->producer && depth < 4; ++depth) {
    const Node *p = target->producer;
    if (p->opType() == "Where" && p->inputs.size() == 3 && p->inputs[0] && p->inputs[2] &&
        p->inputs[0]->producer && p->inputs[0]->producer->opType() == "Equal" &&
        p->inputs[0]->producer->inputs[0] == p->inputs[2])
      target = p->inputs[2];
    else if (p->opType() == "Reshape" && p->inputs[0] && p->inputs[0]->producer &&
             p->inputs[0]->producer->opType() == "Concat")
      target = p->inputs[0];
    else
      break;
  }
  const Node *concat = target ? target->producer : nullptr;
  if (!concat || concat->opType() != "Concat")
    return false;
  for (const Value *piece : concat->inputs) {
    if (!piece)
      return false;
    if (constantInts(piece, values)) {
      for (int64_t v : values)
        out.push_back(v > 0 ? Dim{v, {}} : Dim{});
      continue;
    }
    // Unsqueeze(Gather(Shape(v), i)) or Unsqueeze(Squeeze(Slice(Shape(v),
    // i, i+1))): v's dim i.
    if (const Node *u = piece->producer; u && u->opType() == "Unsqueeze" && u->inputs[0]) {
      const Node *inner = u->inputs[0]->producer;
      if (inner && inner->opType() == "Squeeze" && inner->inputs[0])
        inner = inner->inputs[0]->producer;
      int64_t factor = 1;
      std::vector<int64_t> c;
      if (inner && inner->opType() == "Mul" && inner->inputs.size() == 2 &&
          constantInts(inner->input(1), c) && c.size() == 1 && inner->inputs[0]) {
        factor = c[0]; // e.g. kv_heads * n_rep
        inner = inner->inputs[0]->producer;
      }
      std::vector<int64_t> index, ends;
      bool gather = inner && inner->opType() == "Gather" && constantInts(inner->input(1), index);
      bool slice = inner && inner->opType() == "Slice" && constantInts(inner->input(1), index) &&
                   constantInts(inner->input(2), ends);
      if ((gather || slice) && index.size() == 1 && inner->inputs[0] &&
          inner->inputs[0]->producer && inner->inputs[0]->producer->opType() == "Shape") {
        const Value *v = inner->inputs[0]->producer->inputs[0];
        int64_t r = v && v->hasShape ? v->rank() : -1;
        int64_t i = index[0] < 0 ? index[0] + r : index[0];
        if (r < 0 || i < 0 || i >= r)
          return false;
        if (factor == 1)
          out.push_back(v->shape[i]);
        else
          out.push_back(v->shape[i].known() ? Dim{v->shape[i].size * factor, {}} : Dim{});
        continue;
      }
      return false;
    }
    const Node *slice = piece->producer;
    std::vector<int64_t> starts, ends;
    if (!slice || slice->opType() != "Slice" || !constantInts(slice->input(1), starts) ||
        !constantInts(slice->input(2), ends) || starts.size() != 1 || ends.size() != 1 ||
        (slice->inputs.size() > 4 && slice->inputs[4]))
      return false;
    const Node *shape = slice->inputs[0] ? slice->inputs[0]->producer : nullptr;
    if (!shape || shape->opType() != "Shape" || !shape->inputs[0] || !shape->inputs[0]->hasShape)
      return false;
    const auto &src = shape->inputs[0]->shape;
    int64_t r = static_cast<int64_t>(src.size());
    int64_t b = starts[0] < 0 ? starts[0] + r : std::min(starts[0], r);
    int64_t e = ends[0] < 0 ? ends[0] + r : std::min(ends[0], r);
    for (int64_t i = std::max<int64_t>(b, 0); i < e; ++i)
      out.push_back(src[i]);
  }
  return true;
}

} // namespace

void completeShapes(Graph &g) {
  for (auto &np : g.nodes) {
    Node &n = *np;
    if (!n.domain().empty() || n.outputs.empty() || !n.outputs[0])
      continue;
    llvm::StringRef op = n.opType();
    Value *y = n.outputs[0];
    llvm::SmallVector<const Value *, 4> ins;
    bool allShaped = true;
    for (const Value *v : n.inputs)
      if (v) {
        ins.push_back(v);
        allShaped &= v->hasShape;
      }
    if (ins.empty())
      continue;
    if (isUnaryShapeKeeping(op) && ins[0]->hasShape) {
      refine(y, ins[0]->shape);
    } else if (isBroadcasting(op) && allShaped) {
      llvm::SmallVector<const Value *, 4> data(ins.begin(), ins.end());
      refine(y, broadcast(data));
    } else if (op == "Transpose" && ins[0]->hasShape) {
      std::vector<int64_t> perm;
      for (const auto &a : n.proto.attribute())
        if (a.name() == "perm")
          perm.assign(a.ints().begin(), a.ints().end());
      int64_t r = ins[0]->rank();
      if (perm.empty())
        for (int64_t i = r - 1; i >= 0; --i)
          perm.push_back(i);
      if (static_cast<int64_t>(perm.size()) != r)
        continue;
      llvm::SmallVector<Dim, 4> out;
      for (int64_t p : perm)
        out.push_back(p >= 0 && p < r ? ins[0]->shape[p] : Dim{});
      refine(y, out);
    } else if (op == "MatMul" && allShaped && ins.size() == 2 && ins[0]->rank() >= 2 &&
               ins[1]->rank() >= 2) {
      const Value *a = ins[0], *b = ins[1];
      Value batchA = *a, batchB = *b;
      batchA.shape.resize(a->shape.size() - 2);
      batchB.shape.resize(b->shape.size() - 2);
      llvm::SmallVector<Dim, 4> out = broadcast({&batchA, &batchB});
      out.push_back(a->shape[a->shape.size() - 2]);
      out.push_back(b->shape.back());
      refine(y, out);
    } else if (op == "Gemm" && ins.size() >= 2 && ins[0]->rank() == 2 && ins[1]->rank() == 2) {
      bool ta = attrInt(n.proto, "transA", 0), tb = attrInt(n.proto, "transB", 0);
      refine(y, {ins[0]->shape[ta ? 1 : 0], ins[1]->shape[tb ? 0 : 1]});
    } else if (op == "Reshape" && ins.size() == 2) {
      llvm::SmallVector<Dim, 4> target;
      if (reshapeTarget(n.input(1), target))
        refine(y, target);
    } else if ((op == "ReduceMean" || op == "ReduceSum" || op == "ReduceMax") &&
               ins[0]->hasShape) {
      std::vector<int64_t> axes;
      if (!nodeAxes(n, 1, axes) || axes.empty())
        continue;
      int64_t r = ins[0]->rank();
      bool keep = attrInt(n.proto, "keepdims", 1) != 0;
      llvm::SmallVector<Dim, 4> out;
      for (int64_t i = 0; i < r; ++i) {
        bool reduced = false;
        for (int64_t a : axes)
          reduced |= (a < 0 ? a + r : a) == i;
        if (!reduced)
          out.push_back(ins[0]->shape[i]);
        else if (keep)
          out.push_back(Dim{1, {}});
      }
      refine(y, out);
    } else if (op == "Expand" && ins[0]->hasShape && ins.size() == 2) {
      llvm::SmallVector<Dim, 4> target;
      if (!reshapeTarget(n.input(1), target))
        continue;
      Value t;
      t.hasShape = true;
      t.shape = target;
      refine(y, broadcast({ins[0], &t}));
    } else if ((op == "Unsqueeze" || op == "Squeeze") && ins[0]->hasShape) {
      std::vector<int64_t> axes;
      if (!nodeAxes(n, 1, axes) || axes.empty())
        continue;
      int64_t inRank = ins[0]->rank();
      int64_t outRank = op == "Unsqueeze" ? inRank + static_cast<int64_t>(axes.size())
                                          : inRank - static_cast<int64_t>(axes.size());
      auto has = [&](int64_t i, int64_t r) {
        for (int64_t a : axes)
          if ((a < 0 ? a + r : a) == i)
            return true;
        return false;
      };
      llvm::SmallVector<Dim, 4> out;
      if (op == "Unsqueeze") {
        size_t k = 0;
        for (int64_t i = 0; i < outRank; ++i)
          out.push_back(has(i, outRank) ? Dim{1, {}}
                                        : (k < ins[0]->shape.size() ? ins[0]->shape[k++] : Dim{}));
      } else {
        for (int64_t i = 0; i < inRank; ++i)
          if (!has(i, inRank))
            out.push_back(ins[0]->shape[i]);
      }
      refine(y, out);
    } else if (op == "Gather" && allShaped && ins.size() == 2) {
      int64_t r = ins[0]->rank(), axis = attrInt(n.proto, "axis", 0);
      if (axis < 0)
        axis += r;
      if (axis < 0 || axis >= r)
        continue;
      llvm::SmallVector<Dim, 4> out(ins[0]->shape.begin(), ins[0]->shape.begin() + axis);
      out.append(ins[1]->shape.begin(), ins[1]->shape.end());
      out.append(ins[0]->shape.begin() + axis + 1, ins[0]->shape.end());
      refine(y, out);
    } else if (op == "Shape" && ins[0]->hasShape && n.proto.attribute().empty()) {
      refine(y, {Dim{ins[0]->rank(), {}}});
    } else if (op == "Concat" && allShaped) {
      int64_t r = ins[0]->rank(), axis = attrInt(n.proto, "axis", 0);
      if (axis < 0)
        axis += r;
      if (axis < 0 || axis >= r)
        continue;
      llvm::SmallVector<Dim, 4> out(r);
      int64_t total = 0;
      bool ok = true;
      for (const Value *v : ins) {
        ok &= v->rank() == r;
        if (!ok)
          break;
        total = (total >= 0 && v->shape[axis].known()) ? total + v->shape[axis].size : -1;
        for (int64_t i = 0; i < r; ++i)
          if (i != axis && unknown(out[i]))
            out[i] = v->shape[i];
      }
      if (!ok)
        continue;
      out[axis] = total >= 0 ? Dim{total, {}} : Dim{};
      refine(y, out);
    } else if (op == "Split" && ins[0]->hasShape) {
      int64_t r = ins[0]->rank(), axis = attrInt(n.proto, "axis", 0);
      if (axis < 0)
        axis += r;
      if (axis < 0 || axis >= r)
        continue;
      std::vector<int64_t> sizes;
      int64_t parts = static_cast<int64_t>(n.outputs.size());
      if (!constantInts(n.input(1), sizes) && ins[0]->shape[axis].known() &&
          ins[0]->shape[axis].size % parts == 0)
        sizes.assign(parts, ins[0]->shape[axis].size / parts);
      for (size_t k = 0; k < n.outputs.size(); ++k) {
        if (!n.outputs[k])
          continue;
        llvm::SmallVector<Dim, 4> out(ins[0]->shape.begin(), ins[0]->shape.end());
        out[axis] = k < sizes.size() ? Dim{sizes[k], {}} : Dim{};
        refine(n.outputs[k], out);
      }
    } else if (op == "Slice" && ins[0]->hasShape) {
      // Same rank; axes not sliced keep their dims; constant bounds on a
      // known dim give the size.
      std::vector<int64_t> axes, starts, ends;
      int64_t r = ins[0]->rank();
      llvm::SmallVector<Dim, 4> out(ins[0]->shape.begin(), ins[0]->shape.end());
      bool bounds = constantInts(n.input(1), starts) && constantInts(n.input(2), ends) &&
                    starts.size() == ends.size() && (n.inputs.size() < 5 || !n.inputs[4]);
      bool haveAxes = constantInts(n.input(3), axes);
      if (!haveAxes && !n.input(3) && bounds)
        for (size_t k = 0; k < starts.size(); ++k)
          axes.push_back(static_cast<int64_t>(k));
      if (haveAxes || !axes.empty()) {
        for (size_t k = 0; k < axes.size(); ++k) {
          int64_t a = axes[k] < 0 ? axes[k] + r : axes[k];
          if (a < 0 || a >= r)
            continue;
          const Dim in = out[a];
          out[a] = Dim{};
          if (bounds && k < starts.size() && in.known()) {
            int64_t len = in.size;
            int64_t b = starts[k] < 0 ? std::max<int64_t>(starts[k] + len, 0)
                                      : std::min(starts[k], len);
            int64_t e = ends[k] < 0 ? std::max<int64_t>(ends[k] + len, 0) : std::min(ends[k], len);
            out[a] = Dim{std::max<int64_t>(e - b, 0), {}};
          }
        }
      } else {
        for (Dim &d : out)
          d = Dim{};
      }
      refine(y, out);
    }
  }
}

} // namespace qn
