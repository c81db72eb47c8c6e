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
//     not slice; a sliced axis of known size whose bounds are computed from
//     the input's own shape, as torch's chunk does, gets its size);
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

#include "ExporterIdioms.h"
#include "qn/ops/OpTable.h"
#include "llvm/ADT/StringMap.h"

#include <set>
#include "llvm/ADT/ScopeExit.h"

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

/// Reshape's target `Concat(Slice(Shape(x), 0, k), c1, c2, ...)`: the dims.
/// `consts`, when given, gets each entry's constant value, or kRunTime for an
/// entry known only at run time.
constexpr int64_t kRunTime = INT64_MIN;
bool reshapeTarget(const Value *target, llvm::SmallVector<Dim, 4> &out,
                   std::vector<int64_t> *consts = nullptr) {
  std::vector<int64_t> values;
  auto padRunTime = [&] { // the entries just added are known at run time only
    if (consts)
      consts->resize(out.size(), kRunTime);
  };
  if (constantInts(target, values)) {
    for (int64_t v : values)
      out.push_back(v > 0 ? Dim{v, {}} : Dim{});
    if (consts)
      *consts = values;
    return true;
  }
  const Node *concat = idioms::targetConcat(target);
  if (!concat)
    return false;
  for (const Value *piece : concat->inputs) {
    if (!piece)
      return false;
    if (constantInts(piece, values)) {
      for (int64_t v : values)
        out.push_back(v > 0 ? Dim{v, {}} : Dim{});
      if (consts)
        consts->insert(consts->end(), values.begin(), values.end());
      continue;
    }
    auto padAtEnd = llvm::make_scope_exit(padRunTime);
    // One entry read at run time: Unsqueeze(Gather(Shape(v), i)),
    // Unsqueeze(Squeeze(Slice(Shape(v), i, i+1))), maybe times a constant.
    if ((piece->producer && piece->producer->opType() == "Unsqueeze") ||
        (piece->hasShape && piece->numElements() == 1)) {
      idioms::ShapeEntry e = idioms::traceShapeEntry(piece);
      if (e.tensor) {
        const Value *v = e.tensor;
        if (e.index < 0 || e.index >= v->rank() || e.factor == 0)
          return false;
        const Dim &d = v->shape[e.index];
        out.push_back(e.factor == 1 ? d : d.known() ? Dim{d.size * e.factor, {}} : Dim{});
        continue;
      }
    }
    // Entries computed at run time from something else (the mask's key
    // length, past + seq, is an Add): as many unknown dims as the piece
    // has entries, when that count is known.
    auto unknownEntries = [&] {
      int64_t len = piece->hasShape && piece->rank() == 1 ? piece->dimSize(0) : -1;
      if (len < 0)
        return false;
      out.append(static_cast<size_t>(len), Dim{});
      return true;
    };
    const Node *slice = piece->producer;
    std::vector<int64_t> starts, ends;
    if (!slice || slice->opType() != "Slice" || !constantInts(slice->input(1), starts) ||
        !constantInts(slice->input(2), ends) || starts.size() != 1 || ends.size() != 1 ||
        (slice->inputs.size() > 4 && slice->inputs[4])) {
      if (!unknownEntries())
        return false;
      continue;
    }
    const Node *shape = slice->inputs[0] ? slice->inputs[0]->producer : nullptr;
    if (!shape || shape->opType() != "Shape" || !shape->inputs[0] || !shape->inputs[0]->hasShape) {
      if (!unknownEntries())
        return false;
      continue;
    }
    const auto &src = shape->inputs[0]->shape;
    int64_t r = static_cast<int64_t>(src.size());
    int64_t b = starts[0] < 0 ? starts[0] + r : std::min(starts[0], r);
    int64_t e = ends[0] < 0 ? ends[0] + r : std::min(ends[0], r);
    for (int64_t i = std::max<int64_t>(b, 0); i < e; ++i)
      out.push_back(src[i]);
  }
  return true;
}

void sameShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!ins[0]->hasShape)
    return;
  refine(y, ins[0]->shape);
}

void broadcasting(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!allShaped)
    return;
  llvm::SmallVector<const Value *, 4> data(ins.begin(), ins.end());
  refine(y, broadcast(data));
}

void transposeShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!ins[0]->hasShape)
    return;
  int64_t r = ins[0]->rank();
  std::vector<int64_t> perm = transposePerm(n, r);
  if (static_cast<int64_t>(perm.size()) != r)
    return;
  llvm::SmallVector<Dim, 4> out;
  for (int64_t p : perm)
    out.push_back(p >= 0 && p < r ? ins[0]->shape[p] : Dim{});
  refine(y, out);
}

void matmulShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!(allShaped && ins.size() == 2 && ins[0]->rank() >= 2 && ins[1]->rank() >= 2))
    return;
  const Value *a = ins[0], *b = ins[1];
  Value batchA = *a, batchB = *b;
  batchA.shape.resize(a->shape.size() - 2);
  batchB.shape.resize(b->shape.size() - 2);
  llvm::SmallVector<Dim, 4> out = broadcast({&batchA, &batchB});
  out.push_back(a->shape[a->shape.size() - 2]);
  out.push_back(b->shape.back());
  refine(y, out);
}

void gemmShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!(ins.size() >= 2 && ins[0]->rank() == 2 && ins[1]->rank() == 2))
    return;
  bool ta = attrInt(n.proto, "transA", 0), tb = attrInt(n.proto, "transB", 0);
  refine(y, {ins[0]->shape[ta ? 1 : 0], ins[1]->shape[tb ? 0 : 1]});
}

void reshapeShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!(ins.size() == 2))
    return;
  llvm::SmallVector<Dim, 4> target;
  std::vector<int64_t> consts;
  if (!reshapeTarget(n.input(1), target, &consts))
    return;
  // ONNX's 0 (copy the input's dim; not with allowzero) and one -1 (the
  // rest): resolved where the input's dims allow, symbolic dims cancelling
  // one to one (view(bsz, q_len, -1) of [bsz, q_len, heads, head_dim]).
  const Value *x = ins[0];
  if (consts.size() == target.size() && x->hasShape) {
    bool allowZero = attrInt(n.proto, "allowzero", 0) != 0;
    int rest = -1;
    for (size_t i = 0; i < consts.size(); ++i) {
      if (consts[i] == 0 && !allowZero && i < x->shape.size())
        target[i] = x->shape[i];
      else if (consts[i] == -1)
        rest = rest == -1 ? static_cast<int>(i) : -2;
    }
    if (rest >= 0) {
      int64_t px = 1, pt = 1;
      std::multiset<std::string> sx, st;
      bool ok = true;
      for (const Dim &d : x->shape) {
        if (d.known())
          px *= d.size;
        else if (!d.symbol.empty())
          sx.insert(d.symbol);
        else
          ok = false;
      }
      for (size_t i = 0; i < target.size() && ok; ++i) {
        if (static_cast<int>(i) == rest)
          continue;
        const Dim &d = target[i];
        if (d.known())
          pt *= d.size;
        else if (!d.symbol.empty())
          st.insert(d.symbol);
        else
          ok = false;
      }
      if (ok && sx == st && pt > 0 && px % pt == 0)
        target[rest] = Dim{px / pt, {}};
    }
  }
  refine(y, target);
}

void reduceShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!ins[0]->hasShape)
    return;
  std::vector<int64_t> axes;
  if (!nodeAxes(n, 1, axes) || axes.empty())
    return;
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
}

void expandShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!(ins[0]->hasShape && ins.size() == 2))
    return;
  // Expand(x, Shape(t)): t's dims (expand_as).
  const Value *s = n.input(1);
  const Node *sp = s ? s->producer : nullptr;
  if (sp && sp->opType() == "Shape" && sp->proto.attribute().empty() && sp->inputs[0] &&
      sp->inputs[0]->hasShape) {
    refine(y, broadcast({ins[0], sp->inputs[0]}));
    return;
  }
  llvm::SmallVector<Dim, 4> target;
  if (!reshapeTarget(s, target))
    return;
  Value t;
  t.hasShape = true;
  t.shape = target;
  refine(y, broadcast({ins[0], &t}));
}

/// ConstantOfShape(Shape(x)) has x's shape; of a Concat-built shape, the
/// entries that are known; of anything else with a known length, that rank.
void constantOfShapeShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  const Value *s = ins[0];
  const Node *p = s->producer;
  if (p && p->opType() == "Shape" && p->proto.attribute().empty() && p->inputs[0] &&
      p->inputs[0]->hasShape) {
    refine(y, p->inputs[0]->shape);
    return;
  }
  std::vector<int64_t> sizes;
  llvm::SmallVector<Dim, 4> target;
  if (constantInts(s, sizes)) {
    for (int64_t v : sizes)
      target.push_back(v >= 0 ? Dim{v, {}} : Dim{});
    refine(y, target);
    return;
  }
  if (reshapeTarget(s, target)) {
    // A constant 0 in a Concat is a size here, not "copy": reshapeTarget
    // leaves it unknown, which claims nothing.
    refine(y, target);
    return;
  }
  if (s->hasShape && s->rank() == 1 && s->dimSize(0) >= 0)
    refine(y, llvm::SmallVector<Dim, 4>(static_cast<size_t>(s->dimSize(0)), Dim{}));
}

void unsqueezeShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  llvm::StringRef op = n.opType();
  Value *y = n.outputs[0];
  if (!ins[0]->hasShape)
    return;
  std::vector<int64_t> axes;
  if (!nodeAxes(n, 1, axes) || axes.empty())
    return;
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
}

void gatherShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!(allShaped && ins.size() == 2))
    return;
  int64_t r = ins[0]->rank(), axis = attrInt(n.proto, "axis", 0);
  if (axis < 0)
    axis += r;
  if (axis < 0 || axis >= r)
    return;
  llvm::SmallVector<Dim, 4> out(ins[0]->shape.begin(), ins[0]->shape.begin() + axis);
  out.append(ins[1]->shape.begin(), ins[1]->shape.end());
  out.append(ins[0]->shape.begin() + axis + 1, ins[0]->shape.end());
  refine(y, out);
}

void shapeShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!(ins[0]->hasShape && n.proto.attribute().empty()))
    return;
  refine(y, {Dim{ins[0]->rank(), {}}});
}

void concatShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!allShaped)
    return;
  int64_t r = ins[0]->rank(), axis = attrInt(n.proto, "axis", 0);
  if (axis < 0)
    axis += r;
  if (axis < 0 || axis >= r)
    return;
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
    return;
  out[axis] = total >= 0 ? Dim{total, {}} : Dim{};
  refine(y, out);
}

void splitShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  if (!ins[0]->hasShape)
    return;
  int64_t r = ins[0]->rank(), axis = attrInt(n.proto, "axis", 0);
  if (axis < 0)
    axis += r;
  if (axis < 0 || axis >= r)
    return;
  std::vector<int64_t> sizes;
  int64_t parts = static_cast<int64_t>(n.outputs.size());
  if (!constantInts(n.input(1), sizes) && ins[0]->shape[axis].known() &&
      ins[0]->shape[axis].size % parts == 0)
    sizes.assign(parts, ins[0]->shape[axis].size / parts);
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    if (!n.outputs[k])
      return;
    llvm::SmallVector<Dim, 4> out(ins[0]->shape.begin(), ins[0]->shape.end());
    out[axis] = k < sizes.size() ? Dim{sizes[k], {}} : Dim{};
    refine(n.outputs[k], out);
  }
}

void sliceShape(Node &n, llvm::ArrayRef<const Value *> ins, bool allShaped) {
  Value *y = n.outputs[0];
  if (!ins[0]->hasShape)
    return;
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
        return;
      const Dim in = out[a];
      out[a] = Dim{};
      if (bounds && k < starts.size() && in.known()) {
        int64_t len = in.size;
        int64_t b = starts[k] < 0 ? std::max<int64_t>(starts[k] + len, 0)
                                  : std::min(starts[k], len);
        int64_t e = ends[k] < 0 ? std::max<int64_t>(ends[k] + len, 0) : std::min(ends[k], len);
        out[a] = Dim{std::max<int64_t>(e - b, 0), {}};
      } else if (int64_t b = 0, e = 0; in.known() && idioms::sliceRange(n, a, in.size, b, e)) {
        // Bounds computed from the input's own shape (torch's chunk).
        out[a] = Dim{std::max<int64_t>(e - b, 0), {}};
      }
    }
  } else {
    for (Dim &d : out)
      d = Dim{};
  }
  refine(y, out);
}

using ShapeFn = void (*)(Node &, llvm::ArrayRef<const Value *>, bool);

/// Shape functions by op: from the op table's kinds where the kind decides
/// the shape, by name otherwise.
const llvm::StringMap<ShapeFn> &shapeFunctions() {
  static const llvm::StringMap<ShapeFn> fns = [] {
    llvm::StringMap<ShapeFn> m;
    for (const ops::OpInfo &op : ops::kOps) {
      if (op.domain != ops::OD_Onnx)
        continue;
      if (op.kind == ops::OK_Unary || op.kind == ops::OK_Normalize)
        m[op.name] = sameShape;
      else if (op.broadcasts())
        m[op.name] = broadcasting;
      else if (op.kind == ops::OK_Reduce)
        m[op.name] = reduceShape;
    }
    m["Transpose"] = transposeShape;
    m["MatMul"] = matmulShape;
    m["Gemm"] = gemmShape;
    m["Reshape"] = reshapeShape;
    m["Expand"] = expandShape;
    m["Unsqueeze"] = unsqueezeShape;
    m["Squeeze"] = unsqueezeShape;
    m["Gather"] = gatherShape;
    m["Shape"] = shapeShape;
    m["Concat"] = concatShape;
    m["Split"] = splitShape;
    m["Slice"] = sliceShape;
    m["Trilu"] = sameShape;
    m["ScatterND"] = sameShape; // the data's shape (the exporter's masked_fill of a mask slice)
    m["CumSum"] = sameShape;
    m["ConstantOfShape"] = constantOfShapeShape;
    return m;
  }();
  return fns;
}

} // namespace

void completeShapes(Graph &g) {
  const llvm::StringMap<ShapeFn> &fns = shapeFunctions();
  for (auto &np : g.nodes) {
    Node &n = *np;
    if (!n.domain().empty() || n.outputs.empty() || !n.outputs[0])
      continue;
    llvm::SmallVector<const Value *, 4> ins;
    bool allShaped = true;
    for (const Value *v : n.inputs)
      if (v) {
        ins.push_back(v);
        allShaped &= v->hasShape;
      }
    if (ins.empty())
      continue;
    auto it = fns.find(n.opType());
    if (it != fns.end())
      it->second(n, ins, allShaped);
  }
}

} // namespace qn
