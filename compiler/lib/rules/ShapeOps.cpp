//===- ShapeOps.cpp - Sharding rules of Transpose, Slice, Concat, Split, Shape ===//
//
// Transpose permutes the shard axis (a partial sum passes). Slice along
// other axes than the sharded one keeps the shard. Concat along another
// axis of inputs sharded alike keeps the shard (constant inputs are sliced).
// Split along the sharded axis of a blocked value (a fused Q|K|V projection
// split into its parts) gives each part sharded, its sizes divided by tp;
// other axes keep the shard. A Slice (step 1) that takes exactly one whole
// block of a blocked value (a fused projection cut by Slices, as Phi-3's
// qkv_proj and gate_up_proj are) gives that part sharded: a constant bound
// becomes the local one; a bound computed from Shape reads of the value
// (torch's chunk: Shape -> Gather -> Add -> Div) is computed from the local
// shape and must come out as the local bound. Shape of a sharded value
// yields local dims: it keeps its input sharded only when it only builds
// Reshape/Expand targets from single entries (whose rules check where a
// read of the sharded dim lands), or when every reader takes other dims (a
// Gather of a constant index, a Slice with constant bounds), or takes a run
// of entries with the sharded one only into Reshape/Expand targets (the
// dynamo exporter's Shape(K)[:-2]), or, for a blocked value, when it only
// computes the bounds of such one-block Slices; otherwise it sees the value
// whole. Shape <start, end> reads dims [start, end); one that leaves out the
// sharded dim keeps the input sharded.
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

#include <algorithm>

#include "../ExporterIdioms.h"

namespace qn::rules {
namespace {

llvm::Error transpose(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0];
  Placement p = ctx.of(x);
  if (p.isReplicated() || !x->hasShape)
    return llvm::Error::success();
  std::vector<int64_t> perm = transposePerm(n, x->rank());
  np.in[0] = p;
  if (p.isPartial()) {
    np.out[0] = p;
    return llvm::Error::success();
  }
  for (unsigned i = 0; i < perm.size(); ++i)
    if (perm[i] == p.axis)
      np.out[0] = Placement::S(static_cast<int>(i), p.blocks);
  return llvm::Error::success();
}

/// Whether the Slice `n` of x (placed p = S(d)xk, k > 1) takes exactly one
/// whole block j of axis d (globally [jG/k, (j+1)G/k)) and can take the
/// local block [jL/k, (j+1)L/k) on each rank: a constant bound is
/// rewritten where it differs (into `r`, when given); a bound computed from
/// Shape reads of x, which hold the local size when `localReads`, must come
/// out as the local bound.
bool takesOneBlock(const RuleContext &ctx, const Node &n, Placement p, bool localReads,
                   RuleResult *r) {
  const Value *x = n.inputs[0];
  const int64_t k = p.blocks, G = x->hasShape ? x->dimSize(p.axis) : -1;
  if (k < 2 || G <= 0 || G % (k * ctx.tp))
    return false;
  const int64_t L = G / ctx.tp, w = G / k, wl = L / k;
  int64_t s = 0, e = 0, sl = 0, el = 0;
  size_t entry = 0;
  if (!idioms::sliceRange(n, p.axis, G, s, e, &entry) || e - s != w || s % w)
    return false;
  const int64_t j = s / w;
  llvm::SmallVector<ConstantRewrite, 2> rewrites;
  bool local = idioms::sliceRange(n, p.axis, L, sl, el);
  for (unsigned i : {1u, 2u}) {
    const Value *bound = n.input(i);
    const int64_t want = (i == 1 ? j : j + 1) * wl, got = i == 1 ? sl : el;
    if (!bound->constant) {
      // Computed from x's shape at run time: right only where the reads
      // hold the local size.
      if (!localReads || !local || got != want)
        return false;
      continue;
    }
    std::vector<int64_t> values;
    if (!constantInts(bound, values) || values.size() <= entry)
      return false; // an int32 bound: left alone
    int64_t c = values[entry];
    if (std::clamp(c < 0 ? c + L : c, int64_t(0), L) == want)
      continue; // 0, or an end past the axis
    onnx::TensorProto t = *bound->constant;
    reinterpret_cast<int64_t *>(t.mutable_raw_data()->data())[entry] = want;
    ConstantRewrite rw;
    rw.node = &n;
    rw.input = i;
    rw.tensor = std::move(t);
    rw.source = bound->name;
    rewrites.push_back(std::move(rw));
  }
  if (r)
    for (ConstantRewrite &rw : rewrites)
      r->rewrites.push_back(std::move(rw));
  return true;
}

/// Whether the Shape reads of x (placed p = S(d)xk, k > 1) may see the
/// local dims: every Shape of x only computes bounds of Slices of x, and
/// each of those takes one whole block with its bounds computed locally.
/// The Shape and Slice rules both ask, so they agree.
bool localShapeReads(const RuleContext &ctx, const Value *x, Placement p) {
  llvm::SmallVector<const Node *, 4> slices;
  for (const auto &[user, idx] : x->uses)
    if (user->opType() == "Shape" && user->domain().empty() &&
        (!user->outputs[0] || !user->proto.attribute().empty() ||
         !idioms::feedsOnlySliceBounds(user->outputs[0], x, slices)))
      return false; // a Shape the Shape rule would see whole
  for (const Node *s : slices)
    if (!takesOneBlock(ctx, *s, p, true, nullptr))
      return false;
  return true;
}

llvm::Error slice(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0];
  Placement p = ctx.of(x);
  if (p.isShard() && p.blocks > 1 && x->hasShape) {
    if (takesOneBlock(ctx, n, p, localShapeReads(ctx, x, p), &r)) {
      np.in[0] = p;
      np.out[0] = Placement::S(p.axis);
    }
    return llvm::Error::success();
  }
  if (!p.isShard() || p.blocks != 1 || !x->hasShape)
    return llvm::Error::success();
  std::vector<int64_t> axes;
  if (n.input(3)) {
    if (!constantInts(n.input(3), axes))
      return llvm::Error::success();
  } else if (const Value *st = n.input(1);
             st && st->hasShape && st->rank() == 1 && st->shape[0].known()) {
    for (int64_t i = 0; i < st->shape[0].size; ++i)
      axes.push_back(i);
  } else {
    return llvm::Error::success();
  }
  for (int64_t ax : axes)
    if ((ax < 0 ? ax + x->rank() : ax) == p.axis)
      return llvm::Error::success();
  np.in[0] = p;
  np.out[0] = p;
  return llvm::Error::success();
}

llvm::Error concat(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *y = n.outputs[0];
  if (!y || !y->hasShape)
    return llvm::Error::success();
  int64_t axis = attrInt(n.proto, "axis", 0);
  if (axis < 0)
    axis += y->rank();
  Placement shard = Placement::R();
  // k equal inputs each sharded on the concatenated axis (the gradients of
  // a fused projection's parts): rank r holds its slice of every block, the
  // blocked layout S(axis)xk.
  if (ctx.blockedConcat && n.inputs.size() > 1) {
    int64_t size = -1;
    bool blocked = true;
    for (const Value *v : n.inputs) {
      Placement p = v ? ctx.of(v) : Placement::R();
      int64_t s = v && v->hasShape ? v->dimSize(axis) : -1;
      blocked &= p.isShard() && p.blocks == 1 && p.axis == axis && s > 0 &&
                 (size < 0 || s == size);
      size = s;
    }
    if (blocked) {
      for (unsigned i = 0; i < n.inputs.size(); ++i)
        np.in[i] = Placement::S(static_cast<int>(axis));
      np.out[0] = Placement::S(static_cast<int>(axis), static_cast<int>(n.inputs.size()));
      return llvm::Error::success();
    }
  }
  for (const Value *v : n.inputs) {
    if (!v || v->constant)
      continue;
    Placement p = ctx.of(v);
    if (!p.isShard() || p.blocks != 1 || p.axis == axis || (shard.isShard() && shard != p))
      return llvm::Error::success();
    shard = p;
  }
  if (!shard.isShard())
    return llvm::Error::success();
  for (unsigned i = 0; i < n.inputs.size(); ++i)
    if (n.inputs[i])
      np.in[i] = shard;
  np.out[0] = shard;
  return llvm::Error::success();
}

llvm::Error split(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0];
  Placement p = ctx.of(x);
  if (p.isPartial()) {
    np.in[0] = p;
    np.out.assign(n.outputs.size(), p);
    return llvm::Error::success();
  }
  if (!p.isShard() || !x->hasShape)
    return llvm::Error::success();
  int64_t axis = attrInt(n.proto, "axis", 0);
  if (axis < 0)
    axis += x->rank();
  const Value *sizes = n.input(1);
  if (axis != p.axis) {
    if (p.blocks != 1)
      return llvm::Error::success();
    np.in[0] = p;
    np.out.assign(n.outputs.size(), p);
    return llvm::Error::success();
  }
  if (p.blocks != static_cast<int>(n.outputs.size()))
    return llvm::Error::success();
  if (sizes) {
    if (!sizes->constant || sizes->constant->data_type() != onnx::TensorProto::INT64)
      return llvm::Error::success();
    onnx::TensorProto t = *sizes->constant;
    std::string &raw = *t.mutable_raw_data();
    int64_t *v = reinterpret_cast<int64_t *>(raw.data());
    size_t count = raw.size() / sizeof(int64_t);
    if (count != n.outputs.size())
      return llvm::Error::success();
    const int64_t first = v[0];
    for (size_t i = 0; i < count; ++i) {
      if (v[i] != first || v[i] % ctx.tp)
        return llvm::Error::success();
      v[i] /= ctx.tp;
    }
    ConstantRewrite rw;
    rw.node = &n;
    rw.input = 1;
    rw.tensor = std::move(t);
    rw.source = sizes->name;
    r.rewrites.push_back(std::move(rw));
  }
  np.in[0] = p;
  np.out.assign(n.outputs.size(), Placement::S(p.axis));
  return llvm::Error::success();
}

llvm::Error shape(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  NodePlacements &np = r.placements;
  const Value *x = n.inputs[0], *y = n.outputs[0];
  Placement p = ctx.of(x);
  if (!p.isShard() || !x->hasShape || !y || y->isGraphOutput)
    return llvm::Error::success();
  // Shape <start, end> (opset 15+): entry i is dim start + i.
  const int64_t rank = x->rank();
  const auto [start, end] = shapeRange(n, rank);
  if (p.axis < start || p.axis >= end) { // the sharded dim is not read
    np.in[0] = p;
    return llvm::Error::success();
  }
  const bool whole = start == 0 && end == rank;
  if (whole && p.blocks > 1 && localShapeReads(ctx, x, p)) {
    np.in[0] = p;
    return llvm::Error::success();
  }
  if (idioms::feedsOnlyShapeTargets(y)) {
    np.in[0] = p;
    return llvm::Error::success();
  }
  // Read whole by Expands of replicated broadcast masks: each rank expands
  // to its local shape (expandOfShardedShape).
  if (!y->uses.empty() && llvm::all_of(y->uses, [&](const auto &use) {
        return use.second == 1 && expandOfShardedShape(ctx, *use.first) >= 0;
      })) {
    np.in[0] = p;
    return llvm::Error::success();
  }
  const int64_t len = end - start, d = p.axis - start; // d: the sharded dim's entry
  for (const auto &[user, idx] : y->uses) {
    if (idx != 0)
      return llvm::Error::success();
    int64_t a = 0, b = 0;
    if (user->opType() == "Gather" && constantScalar(user->input(1), a)) {
      if (a < 0)
        a += len;
      if (a == d)
        return llvm::Error::success();
    } else if (user->opType() == "Slice" && constantScalar(user->input(1), a) &&
               constantScalar(user->input(2), b) &&
               (user->inputs.size() < 5 || !user->inputs[4])) {
      a = a < 0 ? a + len : std::min(a, len);
      b = b < 0 ? b + len : std::min(b, len);
      // A run of entries holding the local size (the dynamo exporter's
      // Shape(K)[:-2] = [batch, local heads]) may only reach Reshape/Expand
      // targets, whose rules check where the local read lands.
      if (d >= a && d < b &&
          (b - a < 2 || !user->outputs[0] ||
           !idioms::feedsOnlyShapeTargetPieces(user->outputs[0])))
        return llvm::Error::success();
    } else {
      return llvm::Error::success();
    }
  }
  np.in[0] = p;
  return llvm::Error::success();
}

/// ConstantOfShape(target): where one entry of the target reads a sharded
/// axis at run time (a local size), the output is sharded there like the
/// tensor it read (GPT-NeoX's baddbmm zeros of [batch*heads, T, S]: merged).
/// A read it cannot place is a local-read problem.
llvm::Error constantOfShape(const RuleContext &ctx, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  const Value *target = n.inputs[0];
  const Node *concat = idioms::targetConcat(target);
  if (!concat) {
    return llvm::Error::success();
  }
  Placement out = Placement::R();
  bool reads = false, placeable = idioms::unwrapShapeTarget(target) == target;
  int64_t at = 0;
  for (const Value *piece : concat->inputs) {
    int64_t len = piece && piece->hasShape && piece->rank() == 1 ? piece->dimSize(0) : -1;
    if (len < 0) {
      placeable = false;
      break;
    }
    if (len > 1 && readsShardedAxis(ctx, piece)) { // a run of entries: not placed here
      reads = true;
      placeable = false;
    } else if (len == 1 && readsShardedAxis(ctx, piece)) {
      if (reads)
        placeable = false;
      reads = true;
      idioms::ShapeEntry a, b;
      idioms::ShapeEntry e = idioms::traceShapeEntry(piece);
      if (idioms::traceShapeProduct(piece, a, b)) {
        Placement pa = ctx.of(a.tensor);
        int64_t heads = pa.isShard() && pa.blocks == 1 ? a.tensor->dimSize(pa.axis) : -1;
        if (heads > 0 && readsMergedSize(ctx, piece, heads))
          out = Placement::Merged(static_cast<int>(at), static_cast<int>(heads));
        else
          placeable = false;
      } else if (e.tensor && e.factor == 1) {
        Placement pe = ctx.of(e.tensor);
        out = pe.isMerged() ? Placement::Merged(static_cast<int>(at), pe.blockSize())
              : pe.blocks == 1 ? Placement::S(static_cast<int>(at))
                               : Placement::R();
        placeable &= !out.isReplicated();
      } else {
        placeable = false;
      }
    }
    at += len;
  }
  if (!reads)
    return llvm::Error::success();
  if (!placeable) {
    r.localReadProblem = "'" + n.label() + "' (ConstantOfShape) would use a local size read " +
                         "from a sharded tensor";
    return llvm::Error::success();
  }
  r.placements.out[0] = out;
  return llvm::Error::success();
}

} // namespace

void registerShapeOpRules(RuleRegistry &r) {
  r.add("ConstantOfShape", constantOfShape, "shape-ops");
  r.add("Transpose", transpose, "shape-ops");
  r.add("Slice", slice, "shape-ops");
  r.add("Concat", concat, "shape-ops");
  r.add("Split", split, "shape-ops");
  r.add("Shape", shape, "shape-ops");
}

} // namespace qn::rules
