//===- Defuse.cpp - Splitting fused projections cut into unequal parts ----===//
//
// A fused projection whose output is cut into parts of unequal width cannot
// be column-parallel as one Linear: the blocked placement S(d)xk needs k
// equal parts, and the parts may not even divide by tp (Falcon's multi-query
// `query_key_value`: H query heads, then one key and one value head). Before
// planning, such a projection is split into one Linear per part, each with
// its slice of the weight's columns; the planner then sees what a model with
// separate q/k/v projections has (query column-parallel, a single KV head
// replicated, as for grouped-query attention with fewer KV heads than ranks).
//
// Recognised: y = Reshape(MatMul(x, W[K, P*D]), [..., P, D]) whose every
// reader takes a contiguous range of the P axis, a Slice with constant
// bounds (step 1) or a Gather with a constant index, the ranges not all of
// one width. Rewritten, per distinct range [a, b):
//
//   y_ab = Reshape(MatMul(x, W[:, a*D : b*D]), [..., b-a, D])
//
// each Slice reading [a, b) becomes an Identity of y_ab, each Gather reads y_ab
// at its index minus a. The fused MatMul and Reshape are removed. The numbers are
// the same: each output column is the same dot product.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Partition.h"

#include "ExporterIdioms.h"

#include <algorithm>
#include <map>

#include "llvm/ADT/STLExtras.h"

namespace qn {
namespace {

struct Reader {
  Node *node;
  int64_t a, b; // the range of the parts axis it reads
};

/// The range of the parts axis `axis` (size `parts`) that `n` reads of its
/// input 0, if it is a Slice with constant bounds of that axis alone (step 1)
/// or a Gather on it with a constant index.
bool readRange(const Node &n, int64_t axis, int64_t rank, int64_t parts, int64_t &a,
               int64_t &b) {
  std::vector<int64_t> v;
  if (n.opType() == "Gather") {
    int64_t ax = attrInt(n.proto, "axis", 0);
    if (ax < 0)
      ax += rank;
    if (ax != axis || !constantInts(n.input(1), v) || v.size() != 1)
      return false;
    int64_t i = v[0] < 0 ? v[0] + parts : v[0];
    if (i < 0 || i >= parts)
      return false;
    a = i, b = i + 1;
    return true;
  }
  if (n.opType() != "Slice" || n.inputs.size() < 4)
    return false;
  std::vector<int64_t> starts, ends, axes, steps;
  if (!constantInts(n.input(1), starts) || !constantInts(n.input(2), ends) ||
      !constantInts(n.input(3), axes) || starts.size() != 1 || ends.size() != 1 ||
      axes.size() != 1)
    return false;
  if (n.input(4) && (!constantInts(n.input(4), steps) || steps.size() != 1 || steps[0] != 1))
    return false;
  int64_t ax = axes[0] < 0 ? axes[0] + rank : axes[0];
  if (ax != axis)
    return false;
  auto clamp = [&](int64_t x) {
    if (x < 0)
      x += parts;
    return std::max<int64_t>(0, std::min(x, parts));
  };
  a = clamp(starts[0]), b = clamp(ends[0]);
  return a < b;
}

/// Removes nodes none of whose outputs is read or a graph output.
void removeDeadNodes(Graph &g) {
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = g.nodes.size(); i-- > 0;) {
      Node *n = g.nodes[i].get();
      bool dead = llvm::all_of(n->outputs, [](const Value *o) {
        return !o || (o->uses.empty() && !o->isGraphOutput);
      });
      if (!dead)
        continue;
      for (Value *o : n->outputs)
        if (o)
          o->producer = nullptr;
      g.nodes.erase(g.nodes.begin() + i);
      g.rebuildUses();
      changed = true;
    }
  }
}

} // namespace

llvm::Error defuseUnequalProjections(Graph &g) {
  for (size_t idx = 0; idx < g.nodes.size(); ++idx) {
    Node *mm = g.nodes[idx].get();
    if (mm->opType() != "MatMul" || !mm->domain().empty() || mm->inputs.size() != 2 ||
        !mm->inputs[0] || !mm->inputs[1] || !mm->outputs[0])
      continue;
    Value *x = mm->inputs[0], *w = mm->inputs[1], *v = mm->outputs[0];
    if (x->constant || !w->constant || w->constant->dims_size() != 2 ||
        !w->constant->has_raw_data() || v->isGraphOutput || !v->hasShape)
      continue;
    // v's readers: the Reshape, and Shapes read only for leading entries
    // (the target's batch and sequence), which every part has too.
    Node *rs = nullptr;
    std::vector<Node *> shapes;
    bool readersOk = true;
    for (auto &[user, i] : v->uses) {
      if (user->opType() == "Reshape" && i == 0 && !rs) {
        rs = user;
        continue;
      }
      bool leading = user->opType() == "Shape" && user->proto.attribute().empty() &&
                     user->outputs[0] && !user->outputs[0]->uses.empty();
      for (auto &[g2, j] : leading ? user->outputs[0]->uses : decltype(user->outputs[0]->uses)()) {
        int64_t e = 0;
        leading &= g2->opType() == "Gather" && j == 0 && constantScalar(g2->input(1), e) &&
                   (e < 0 ? e + v->rank() : e) < v->rank() - 1 && e >= -v->rank();
      }
      if (!leading) {
        readersOk = false;
        break;
      }
      shapes.push_back(user);
    }
    if (!readersOk || !rs || !rs->outputs[0] || !rs->outputs[0]->hasShape ||
        rs->outputs[0]->isGraphOutput)
      continue;
    Value *y = rs->outputs[0];
    const int64_t rank = y->rank(), N = w->constant->dims(1);
    if (rank < 2)
      continue;
    const int64_t P = y->dimSize(rank - 2), D = y->dimSize(rank - 1);
    if (P < 2 || D < 1 || P * D != N)
      continue;
    // The target: a constant or a Concat whose piece at P is a constant.
    const Value *target = rs->input(1);
    if (!target)
      continue;
    std::vector<Reader> readers;
    bool ok = !y->uses.empty();
    for (auto &[user, i] : y->uses) {
      int64_t a = 0, b = 0;
      if (i != 0 || !readRange(*user, rank - 2, rank, P, a, b)) {
        ok = false;
        break;
      }
      readers.push_back({user, a, b});
    }
    if (!ok)
      continue;
    std::map<std::pair<int64_t, int64_t>, int> ranges;
    for (const Reader &r : readers)
      ranges[{r.a, r.b}] = 0;
    // Disjoint ranges of more than one width (equal parts are the blocked
    // placement's job).
    int64_t end = 0, width = -1;
    bool unequal = false;
    for (auto &[ab, _] : ranges) {
      if (ab.first < end) {
        ok = false;
        break;
      }
      end = ab.second;
      unequal |= width >= 0 && ab.second - ab.first != width;
      width = ab.second - ab.first;
    }
    if (!ok || !unequal || ranges.size() < 2)
      continue;
    // The new targets: the Reshape target with P replaced.
    std::vector<int64_t> targetConst;
    const Node *concat = nullptr;
    unsigned pieceAt = 0;
    int64_t pieceOffset = 0;
    if (!constantInts(target, targetConst)) {
      concat = target->producer;
      if (!concat || concat->opType() != "Concat")
        continue;
      int64_t pos = 0;
      bool found = false;
      for (unsigned ci = 0; ci < concat->inputs.size() && !found; ++ci) {
        const Value *piece = concat->inputs[ci];
        int64_t len = piece && piece->hasShape && piece->rank() == 1 ? piece->dimSize(0) : -1;
        if (len < 0)
          break;
        if (rank - 2 >= pos && rank - 2 < pos + len) {
          std::vector<int64_t> vals;
          if (!constantInts(piece, vals))
            break;
          pieceAt = ci, pieceOffset = rank - 2 - pos, targetConst = vals, found = true;
        }
        pos += len;
      }
      if (!found)
        continue;
    }
    if (static_cast<int64_t>(targetConst.size()) <= (concat ? pieceOffset : rank - 2))
      continue;

    // Rewrite, one part per range, inserted where the Reshape was.
    const size_t elem = elemTypeSize(w->constant->data_type());
    const int64_t K = w->constant->dims(0);
    const std::string &raw = w->constant->raw_data();
    // The part MatMuls right after the fused one (the Shapes that read it
    // come next); the targets and Reshapes right after the fused Reshape.
    size_t mmAt = g.indexOf(mm) + 1;
    std::map<std::pair<int64_t, int64_t>, Value *> partOut;
    Value *firstPart = nullptr;
    for (auto &[ab, _] : ranges) {
      auto [a, b] = ab;
      std::string tag = "__qn_part" + std::to_string(a) + "_" + std::to_string(b);
      onnx::TensorProto wp;
      wp.set_name(g.uniqueName(w->name + tag));
      wp.set_data_type(w->constant->data_type());
      wp.add_dims(K);
      wp.add_dims((b - a) * D);
      std::string bytes;
      bytes.reserve(K * (b - a) * D * elem);
      for (int64_t k = 0; k < K; ++k)
        bytes.append(raw, (k * N + a * D) * elem, (b - a) * D * elem);
      wp.set_raw_data(std::move(bytes));
      Value *wv = g.addConstant(std::move(wp));
      std::string mmOut = g.uniqueName(v->name + tag);
      Node *nm = g.insertNode(
          mmAt++, makeNodeProto("MatMul", mm->label() + tag, {x->name, wv->name}, mmOut));
      g.projectionParts.push_back(nm);
      if (!firstPart)
        firstPart = nm->outputs[0];
      nm->outputs[0]->elemType = v->elemType;
      nm->outputs[0]->hasShape = v->hasShape;
      nm->outputs[0]->shape = v->shape;
      if (v->hasShape)
        nm->outputs[0]->shape.back() = Dim{(b - a) * D, {}};
      size_t at = g.indexOf(rs) + 1;
      // The target.
      std::vector<int64_t> t = targetConst;
      t[concat ? pieceOffset : rank - 2] = b - a;
      Value *tv = g.addConstant(int64Tensor(g.uniqueName(target->name + tag), t, false));
      std::string targetName = tv->name;
      if (concat) {
        onnx::NodeProto c = concat->proto;
        c.set_name(concat->label() + tag);
        c.set_input(pieceAt, tv->name);
        c.clear_output();
        c.add_output(g.uniqueName(target->name + tag + "_target"));
        targetName = c.output(0);
        Node *nc = g.insertNode(at++, std::move(c));
        nc->outputs[0]->elemType = onnx::TensorProto::INT64;
        nc->outputs[0]->hasShape = true;
        nc->outputs[0]->shape = {Dim{rank, {}}};
      }
      onnx::NodeProto r = rs->proto;
      r.set_name(rs->label() + tag);
      r.set_input(0, mmOut);
      r.set_input(1, targetName);
      r.clear_output();
      r.add_output(g.uniqueName(y->name + tag));
      Node *nr = g.insertNode(at++, std::move(r));
      Value *yo = nr->outputs[0];
      yo->elemType = y->elemType;
      yo->hasShape = true;
      yo->shape = y->shape;
      yo->shape[rank - 2] = Dim{b - a, {}};
      partOut[ab] = yo;
    }
    // The readers read their part, their bounds shifted.
    for (const Reader &r : readers) {
      Value *part = partOut[{r.a, r.b}];
      Node *n = r.node;
      n->inputs[0] = part;
      std::string tag = "__qn_shift";
      if (n->opType() == "Gather") {
        std::vector<int64_t> iv;
        constantInts(n->input(1), iv);
        bool scalar = n->input(1)->constant && n->input(1)->constant->dims_size() == 0;
        int64_t i = (iv[0] < 0 ? iv[0] + P : iv[0]) - r.a;
        n->inputs[1] = g.addConstant(
            int64Tensor(g.uniqueName(n->input(1)->name + tag), {i}, scalar));
      } else { // the Slice read exactly its part: it becomes an Identity
        n->proto.set_op_type("Identity");
        n->proto.mutable_input()->DeleteSubrange(1, n->proto.input_size() - 1);
        n->inputs.resize(1);
      }
    }
    // The Shapes read the first part (the same leading dims).
    for (Node *sh : shapes)
      sh->inputs[0] = firstPart;
    // The fused MatMul and Reshape go (their values lose their producer).
    v->producer = nullptr;
    y->producer = nullptr;
    g.nodes.erase(std::remove_if(g.nodes.begin(), g.nodes.end(),
                                 [&](const std::unique_ptr<Node> &n) {
                                   return n.get() == mm || n.get() == rs;
                                 }),
                  g.nodes.end());
    g.rebuildUses();
    removeDeadNodes(g); // the old target's Concat, if nothing else reads it
    idx = 0; // indices moved: start over (each rewrite removes a candidate)
  }
  return llvm::Error::success();
}

void privatizeShapeProducts(Graph &g) {
  // Mul(entry, constant), and the Unsqueeze/Squeeze/Cast steps after it:
  // from the last node back, so that cloning a later step gives the
  // earlier one several readers in turn.
  auto fromProduct = [&](const Node *n) {
    for (int depth = 0; n && depth < 8; ++depth) {
      int64_t c = 0;
      if (n->opType() == "Mul")
        return n->inputs.size() == 2 && n->inputs[0] && !n->inputs[0]->constant &&
               constantScalar(n->inputs[1], c);
      if (!idioms::isShapeStep(n->opType()) || !n->inputs[0])
        return false;
      n = n->inputs[0]->producer;
    }
    return false;
  };
  // A Concat-built Reshape/Expand target shared by several readers (the
  // dynamo exporter's graph optimiser merges equal ones: one
  // [batch, seq, heads, head_dim] for every layer's query view).
  auto sharedTarget = [](const Node *n, const Value *y) {
    return n->opType() == "Concat" && y->rank() == 1 &&
           llvm::any_of(y->uses, [](const std::pair<Node *, unsigned> &u) {
             return u.second == 1 && u.first->domain().empty() &&
                    (u.first->opType() == "Reshape" || u.first->opType() == "Expand");
           });
  };
  for (size_t i = g.nodes.size(); i-- > 0;) {
    Node *n = g.nodes[i].get();
    Value *y = n->outputs.empty() ? nullptr : n->outputs[0];
    if (!n->domain().empty() || !y || y->uses.size() < 2 || y->isGraphOutput ||
        y->elemType != onnx::TensorProto::INT64 || !y->hasShape)
      continue;
    if (!(y->numElements() == 1 && fromProduct(n)) && !sharedTarget(n, y))
      continue;
    auto uses = y->uses; // copied: inserting rebuilds them
    for (size_t k = 1; k < uses.size(); ++k) {
      onnx::NodeProto copy = n->proto;
      copy.set_output(0, g.uniqueName(y->name + "__qn_private"));
      copy.set_name(g.uniqueName(n->label() + "__qn_private"));
      Node *m = g.insertNode(i + k, std::move(copy));
      Value *my = m->outputs[0];
      my->elemType = y->elemType;
      my->hasShape = y->hasShape;
      my->shape = y->shape;
      uses[k].first->inputs[uses[k].second] = my;
    }
    g.rebuildUses();
  }
}

} // namespace qn
