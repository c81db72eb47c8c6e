//===- Reshape.cpp - Sharding rules of Reshape, Expand, (Un)Squeeze -------===//
//
// Reshape of a value sharded on axis d: the sharded axis may be kept (the
// last axis keeping its size, as in the flatten-for-Gemm reshapes of HF's
// Conv1D), split (hidden -> heads x head_dim: the leading factor is
// sharded) or merged (heads x head_dim -> hidden: d must lead the merged
// group). The target's entry for the sharded axis becomes the local size
// (a constant target is rewritten; in a Concat-built target the constant
// piece is, and a run-time read of the sharded dim already holds the local
// size). Anything else is gathered first. A partial sum reshapes as is.
// Expand of a sharded value along other axes rewrites the target likewise.
// Unsqueeze/Squeeze move the shard axis past the inserted or removed axes.
// A Reshape/Expand whose output is not sharded but whose target reads a
// sharded dim at run time would use a local size: reported as a problem.
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

#include "../ExporterIdioms.h"
#include <algorithm>

#include "llvm/ADT/STLExtras.h"

namespace qn::rules {

namespace {
bool entryReadsShard(const RuleContext &ctx, const idioms::ShapeEntry &e) {
  return e.tensor && ctx.of(e.tensor).isShard() && ctx.of(e.tensor).axis == e.index;
}

/// Where in a run of shape entries (a Slice of Shape(t), several entries)
/// the read of t's sharded axis lies, or -1.
int64_t shardOffsetInRange(const RuleContext &ctx, const Value *piece) {
  const Value *t = nullptr;
  int64_t first = 0, len = 0;
  if (!idioms::traceShapeRange(piece, t, first, len) || len < 2)
    return -1;
  Placement p = ctx.of(t);
  return p.isShard() && p.axis >= first && p.axis < first + len ? p.axis - first : -1;
}
} // namespace

bool readsShardedAxis(const RuleContext &ctx, const Value *piece) {
  idioms::ShapeEntry a, b;
  if (idioms::traceShapeProduct(piece, a, b))
    return entryReadsShard(ctx, a) || entryReadsShard(ctx, b);
  return entryReadsShard(ctx, idioms::traceShapeEntry(piece)) ||
         shardOffsetInRange(ctx, piece) >= 0;
}

namespace {
/// The offset within `piece` (of `len` entries) of a run-time read of a
/// sharded axis, or -1.
int64_t localReadOffset(const RuleContext &ctx, const Value *piece, int64_t len) {
  if (len == 1)
    return readsShardedAxis(ctx, piece) ? 0 : -1;
  return shardOffsetInRange(ctx, piece);
}
} // namespace

bool readsMergedSize(const RuleContext &ctx, const Value *piece, int64_t n) {
  idioms::ShapeEntry a, b;
  if (idioms::traceShapeProduct(piece, a, b)) {
    // batch * heads, both read from one tensor sharded on its heads axis.
    if (a.tensor != b.tensor || a.factor != 1 || b.factor != 1)
      return false;
    Placement p = ctx.of(a.tensor);
    if (!p.isShard() || p.blocks != 1 || p.axis < 1 || a.tensor->dimSize(p.axis) != n)
      return false;
    return std::min(a.index, b.index) == p.axis - 1 && std::max(a.index, b.index) == p.axis;
  }
  idioms::ShapeEntry e = idioms::traceShapeEntry(piece);
  return e.tensor && e.factor == 1 && ctx.of(e.tensor) == Placement::Merged(int(e.index), int(n));
}

bool localizeShapeEntry(const RuleContext &ctx, const Node &n, const Value *shape, int64_t axis,
                        bool zeroIsWrong, unsigned index, RuleResult &r) {
  const Value *holder = shape; // the constant holding the entry
  int64_t offset = axis;
  const Node *concat = nullptr;
  unsigned concatInput = 0;
  if (!shape->constant) {
    const Value *inner = idioms::unwrapShapeTarget(shape);
    concat = inner->producer;
    if (!concat || concat->opType() != "Concat" || (inner == shape && shape->uses.size() != 1))
      return false;
    // A run-time read of a sharded axis holds the local size: it must be
    // the entry of the sharded output axis, nowhere else.
    int64_t at = 0;
    bool localAtAxis = false;
    for (const Value *piece : concat->inputs) {
      int64_t len = piece && piece->rank() == 1 ? piece->dimSize(0) : -1;
      if (len < 0)
        return false;
      if (int64_t k = localReadOffset(ctx, piece, len); k >= 0) {
        if (at + k != axis)
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
  if (dims[offset] > 1 && dims[offset] % ctx.tp)
    return false; // e.g. fewer KV heads than ranks
  if (dims[offset] > 1)
    dims[offset] /= ctx.tp;
  else if (dims[offset] == 0 && zeroIsWrong)
    return false;
  else if (dims[offset] == 1 || dims[offset] == -1)
    return true; // Expand: 1 keeps the input's (local) dim; Reshape: -1 is the local rest
  ConstantRewrite rw;
  rw.node = concat ? concat : &n;
  rw.input = concat ? concatInput : index;
  rw.tensor = std::move(t);
  rw.source = holder->name;
  r.rewrites.push_back(std::move(rw));
  return true;
}

int expandOfShardedShape(const RuleContext &ctx, const Node &n) {
  if (n.opType() != "Expand" || n.inputs.size() != 2 || !n.inputs[0] || !n.inputs[1] ||
      !n.outputs[0] || !n.outputs[0]->hasShape)
    return -1;
  const Value *x = n.inputs[0], *s = n.inputs[1], *y = n.outputs[0];
  const Node *shape = s->producer;
  if (!shape || shape->opType() != "Shape" || !shape->proto.attribute().empty() ||
      !shape->inputs[0] || !shape->inputs[0]->hasShape || !x->hasShape)
    return -1;
  const Value *t = shape->inputs[0];
  Placement pt = ctx.of(t); // x itself is read replicated (gathered if need be)
  if (!pt.isShard() || pt.blocks != 1 || y->rank() != t->rank() ||
      x->rank() > y->rank())
    return -1;
  int64_t d = pt.axis, xd = d - (y->rank() - x->rank());
  if (xd >= 0 && x->dimSize(xd) != 1)
    return -1; // x's own extent there: the local target would not fit it
  return static_cast<int>(d);
}

namespace {

/// Whether a Reshape/Expand target holds a run-time read of a sharded axis
/// (a local size).
bool targetReadsShardedAxis(const RuleContext &ctx, const Value *shape) {
  if (!shape || shape->constant)
    return false;
  const Node *concat = idioms::targetConcat(shape);
  if (!concat)
    return false;
  for (const Value *piece : concat->inputs)
    if (piece && readsShardedAxis(ctx, piece))
      return true;
  return false;
}

void checkLocalReads(const RuleContext &ctx, const Node &n, RuleResult &r) {
  const NodePlacements &np = r.placements;
  if (!np.out.empty() && !np.out[0].isShard() && targetReadsShardedAxis(ctx, n.input(1)))
    r.localReadProblem = "'" + n.label() + "' (" + n.opType() +
                         ") would use a local size read from a sharded tensor";
}

/// Dims across from each other in a Reshape that keeps them: equal known
/// sizes, the same symbol, or one without a name (a -1 or a run-time entry
/// of the target, or one of ONNX's "unk__" placeholders).
bool sameDim(const Dim &a, const Dim &b) {
  auto nameless = [](const Dim &d) {
    return !d.known() && (d.symbol.empty() || llvm::StringRef(d.symbol).startswith("unk__"));
  };
  if (nameless(a) || nameless(b))
    return true; // a -1, a run-time entry: taken to be the dim across
  if (a.known() || b.known())
    return a.known() && b.known() && a.size == b.size;
  return a.symbol == b.symbol;
}

/// The int64 scalar constant `c` with the value `value` (same dims).
onnx::TensorProto scalarLike(const onnx::TensorProto &c, int64_t value) {
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::INT64);
  for (int64_t d : c.dims())
    t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char *>(&value), sizeof value));
  return t;
}

/// The entry `axis` of the target `shape` of Reshape `n`, which merges
/// batch and n-head axes into one (output S(axis)/n), made the local
/// batch * n/tp: a -1 is the local rest already; a constant is divided; a
/// run-time read of batch * local heads (GPT-NeoX) is local already; batch
/// times the constant n (OPT's `bsz * num_heads`, its Mul private to this
/// target) gets n/tp in place of n.
bool localizeMergedEntry(const RuleContext &ctx, const Node &n, const Value *shape, int64_t axis,
                         int64_t heads, RuleResult &r) {
  if (shape->constant)
    return localizeShapeEntry(ctx, n, shape, axis, true, 1, r);
  const Node *concat = idioms::targetConcat(shape);
  if (!concat || idioms::unwrapShapeTarget(shape)->uses.size() != 1)
    return false;
  const Value *entry = nullptr;
  int64_t at = 0;
  for (const Value *piece : concat->inputs) {
    int64_t len = piece && piece->rank() == 1 ? piece->dimSize(0) : -1;
    if (len < 0)
      return false;
    if (at == axis && len == 1)
      entry = piece;
    else if (localReadOffset(ctx, piece, len) >= 0)
      return false; // a local size anywhere else
    at += len;
  }
  if (!entry)
    return false;
  if (entry->constant)
    return localizeShapeEntry(ctx, n, shape, axis, true, 1, r);
  if (readsMergedSize(ctx, entry, heads))
    return true;
  // batch * heads with a constant heads factor, on a chain used only here.
  const Value *v = entry;
  while (v->producer && v->uses.size() == 1 && idioms::isShapeStep(v->producer->opType()))
    v = v->producer->inputs[0];
  const Node *mul = v->producer;
  int64_t c = 0;
  if (!mul || v->uses.size() != 1 || mul->opType() != "Mul" || mul->inputs.size() != 2 ||
      !mul->inputs[1] || !constantScalar(mul->inputs[1], c) || c != heads)
    return false;
  idioms::ShapeEntry batch = idioms::traceShapeEntry(mul->inputs[0]);
  if (!batch.tensor || batch.factor != 1 || entryReadsShard(ctx, batch))
    return false;
  ConstantRewrite rw;
  rw.node = mul;
  rw.input = 1;
  rw.tensor = scalarLike(*mul->inputs[1]->constant, heads / ctx.tp);
  rw.source = mul->inputs[1]->name;
  r.rewrites.push_back(std::move(rw));
  return true;
}

/// Reshapes that merge a sharded heads axis d (n heads) with the batch axis
/// before it into S(d-1)/n, and that split S(d)/n back into batch x heads,
/// sharded on heads; every other axis kept.
bool mergedReshape(const RuleContext &ctx, const Node &n, Placement p, RuleResult &r) {
  const Value *x = n.inputs[0], *shape = n.input(1), *y = n.outputs[0];
  const auto &xs = x->shape, &ys = y->shape;
  NodePlacements &np = r.placements;
  if (p.blocks == 1 && p.axis >= 1 && ys.size() + 1 == xs.size() && xs[p.axis].known()) {
    const int a = p.axis;
    const int64_t heads = xs[a].size;
    if (heads % ctx.tp)
      return false;
    for (int j = 0; j < a - 1; ++j)
      if (!sameDim(xs[j], ys[j]))
        return false;
    for (size_t j = a; j < ys.size(); ++j)
      if (!sameDim(xs[j + 1], ys[j]))
        return false;
    // The leading factor is the batch, its size known only at run time (a
    // known count of blocks is the blocked S(d)xk, which only fused
    // projections make).
    const Dim &b = xs[a - 1], &m = ys[a - 1];
    if (b.known() || m.known() || (!m.symbol.empty() && m.symbol == b.symbol))
      return false;
    if (!localizeMergedEntry(ctx, n, shape, a - 1, heads, r))
      return false;
    np.in[0] = p;
    np.out[0] = Placement::Merged(a - 1, static_cast<int>(heads));
    return true;
  }
  if (p.isMerged() && ys.size() == xs.size() + 1) {
    const int a = p.axis;
    const int64_t heads = p.blockSize();
    if (!ys[a + 1].known() || ys[a + 1].size != heads)
      return false;
    for (int j = 0; j < a; ++j)
      if (!sameDim(xs[j], ys[j]))
        return false;
    for (size_t j = a + 1; j < xs.size(); ++j)
      if (!sameDim(xs[j], ys[j + 1]))
        return false;
    if (ys[a].known() && xs[a].known() && xs[a].size != ys[a].size * heads)
      return false;
    if (!localizeShapeEntry(ctx, n, shape, a + 1, true, 1, r))
      return false;
    np.in[0] = p;
    np.out[0] = Placement::S(a + 1);
    return true;
  }
  return false;
}

int groupFromLeft(llvm::ArrayRef<Dim> xs, llvm::ArrayRef<Dim> ys, int d);
int groupFromRight(llvm::ArrayRef<Dim> xs, llvm::ArrayRef<Dim> ys, int d);

void reshapeRule(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0], *shape = n.input(1), *y = n.outputs[0];
  Placement p = ctx.of(x);
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
  if (static_cast<size_t>(p.axis) + 1 == xs.size() && xs.back().known() && ys.back().known() &&
      xs.back().size == ys.back().size) {
    int last = static_cast<int>(ys.size() - 1);
    if (!localizeShapeEntry(ctx, n, shape, last, false, 1, r))
      return;
    np.in[0] = p;
    np.out[0] = Placement::S(last, p.blocks);
    return;
  }
  if (mergedReshape(ctx, n, p, r))
    return;
  if (p.blocks != 1)
    return;
  int outAxis = groupFromLeft(xs, ys, p.axis);
  if (outAxis < 0)
    outAxis = groupFromRight(xs, ys, p.axis);
  if (outAxis < 0 || ys[outAxis].size <= 0 || ys[outAxis].size % ctx.tp)
    return;
  if (!localizeShapeEntry(ctx, n, shape, outAxis, outAxis != p.axis, 1, r))
    return;
  np.in[0] = p;
  np.out[0] = Placement::S(outAxis);
}

/// Groups the axes of x and y, from the left, into blocks of equal known
/// products; symbolic dims must match one to one. Returns the output axis
/// that the sharded axis d becomes (d must lead its group: a merge keeps
/// the shard outermost, a split shards the leading factor), or -1.
int groupFromLeft(llvm::ArrayRef<Dim> xs, llvm::ArrayRef<Dim> ys, int d) {
  size_t i = 0, j = 0;
  int outAxis = -1;
  while (i < xs.size() && j < ys.size()) {
    size_t i0 = i, j0 = j;
    if (!xs[i].known() || !ys[j].known()) {
      // Symbolic dims match one to one; a dim with no name (a -1 or 0 in
      // the target, or one of ONNX's "unk__" placeholders) is taken to be
      // the symbolic dim across from it once all else matches.
      auto nameless = [](const Dim &e) {
        return !e.known() && (e.symbol.empty() || llvm::StringRef(e.symbol).startswith("unk__"));
      };
      if (xs[i].known() || ys[j].known() ||
          (xs[i].symbol != ys[j].symbol && !nameless(xs[i]) && !nameless(ys[j])))
        return -1;
      ++i, ++j;
    } else {
      int64_t px = xs[i++].size, py = ys[j++].size;
      while (px != py) {
        if (px < py) {
          if (i == xs.size() || !xs[i].known())
            return -1;
          px *= xs[i++].size;
        } else {
          if (j == ys.size() || !ys[j].known())
            return -1;
          py *= ys[j++].size;
        }
      }
    }
    if (static_cast<size_t>(d) >= i0 && static_cast<size_t>(d) < i) {
      if (static_cast<size_t>(d) != i0)
        return -1;
      outAxis = static_cast<int>(j0);
    }
  }
  return outAxis;
}

/// The same from the right, over the trailing known dims only: a target
/// whose -1 takes all the leading run-time dims at once ([B, T, heads, hd]
/// -> [-1, hidden], the flatten before a 2-D Gemm) has no one-to-one match
/// of symbols, but the sharded axis lies in the known tail.
int groupFromRight(llvm::ArrayRef<Dim> xs, llvm::ArrayRef<Dim> ys, int d) {
  int64_t i = static_cast<int64_t>(xs.size()), j = static_cast<int64_t>(ys.size());
  while (i > 0 && j > 0 && xs[i - 1].known() && ys[j - 1].known()) {
    int64_t i1 = i; // the group is [i, i1) of x
    int64_t px = xs[--i].size, py = ys[--j].size;
    while (px != py) {
      if (px < py) {
        if (i == 0 || !xs[i - 1].known())
          return -1;
        px *= xs[--i].size;
      } else {
        if (j == 0 || !ys[j - 1].known())
          return -1;
        py *= ys[--j].size;
      }
    }
    if (d >= i && d < i1)
      return d == i ? static_cast<int>(j) : -1;
  }
  return -1;
}

llvm::Error reshape(const RuleContext &ctx, const Node &n, RuleResult &r) {
  reshapeRule(ctx, n, r);
  checkLocalReads(ctx, n, r);
  return llvm::Error::success();
}

void expandRule(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0], *shape = n.input(1), *y = n.outputs[0];
  Placement p = ctx.of(x);
  if (int d = expandOfShardedShape(ctx, n); d >= 0) {
    np.out[0] = Placement::S(d);
    return;
  }

  if (!p.isShard() || p.blocks != 1 || !x->hasShape || !shape || !y || !y->hasShape)
    return;
  int64_t d = p.axis + (y->rank() - x->rank());
  if (y->dimSize(d) != x->dimSize(p.axis) || x->dimSize(p.axis) <= 0)
    return; // broadcast along the sharded axis
  if (!localizeShapeEntry(ctx, n, shape, d, false, 1, r))
    return;
  np.in[0] = p;
  np.out[0] = Placement::S(static_cast<int>(d));
}

llvm::Error expand(const RuleContext &ctx, const Node &n, RuleResult &r) {
  expandRule(ctx, n, r);
  checkLocalReads(ctx, n, r);
  return llvm::Error::success();
}

llvm::Error unsqueezeOrSqueeze(const RuleContext &ctx, const Node &n, RuleResult &r) {
  bool unsqueeze = n.opType() == "Unsqueeze";
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0], *y = n.outputs[0];
  Placement p = ctx.of(x);
  if (p.isPartial()) {
    np.in[0] = p;
    np.out[0] = p;
    return llvm::Error::success();
  }
  if (!p.isShard() || !x->hasShape || !y || !y->hasShape)
    return llvm::Error::success();
  std::vector<int64_t> axes;
  if (!nodeAxes(n, 1, axes) || axes.empty())
    return llvm::Error::success(); // Squeeze of every size-1 dim: keep it simple
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
      return llvm::Error::success();
    int64_t before = 0;
    for (int64_t a : axes)
      before += a < d;
    d -= before;
  }
  np.in[0] = p;
  np.out[0] = Placement::S(static_cast<int>(d), p.blocks);
  return llvm::Error::success();
}

} // namespace

void registerReshapeRules(RuleRegistry &r) {
  r.add("Reshape", reshape, "reshape");
  r.add("Expand", expand, "reshape");
  r.add("Unsqueeze", unsqueezeOrSqueeze, "reshape");
  r.add("Squeeze", unsqueezeOrSqueeze, "reshape");
}

} // namespace qn::rules
