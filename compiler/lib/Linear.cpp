//===- Linear.cpp - Recognising Linear layers and choosing strategies -----===//
#include "qn/compiler/Partition.h"

#include "ExporterIdioms.h"

#include <numeric>

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>

namespace qn {
const char *strategyName(LinearStrategy s) {
  switch (s) {
  case LinearStrategy::Replicate:
    return "replicated";
  case LinearStrategy::Column:
    return "column";
  case LinearStrategy::Row:
    return "row";
  }
  return "?";
}

std::string divisorsList(int64_t n, int limit) {
  std::string s;
  int count = 0;
  for (int64_t d = 1; d <= n; ++d) {
    if (n % d)
      continue;
    if (count == limit) {
      s += ", ...";
      break;
    }
    if (count++)
      s += ", ";
    s += std::to_string(d);
  }
  return s;
}

std::vector<LinearInfo> findLinears(const Graph &g) {
  std::vector<LinearInfo> out;
  for (const auto &np : g.nodes) {
    Node *n = np.get();
    if (!n->domain().empty() || n->inputs.size() < 2 || !n->inputs[0] || !n->inputs[1])
      continue;
    Value *x = n->inputs[0], *w = n->inputs[1];
    if (x->constant || !w->constant || w->constant->dims_size() != 2 || !x->hasShape ||
        x->rank() < 2 || !n->outputs[0])
      continue;
    LinearInfo li;
    li.node = n;
    if (n->opType() == "MatMul") {
      li.actKAxis = static_cast<int>(x->rank() - 1);
    } else if (n->opType() == "Gemm") {
      li.isGemm = true;
      bool transA = attrInt(n->proto, "transA", 0), transB = attrInt(n->proto, "transB", 0);
      li.actKAxis = transA ? 0 : 1;
      li.weightKAxis = transB ? 1 : 0;
      li.weightNAxis = transB ? 0 : 1;
    } else {
      continue;
    }
    li.K = w->constant->dims(li.weightKAxis);
    li.N = w->constant->dims(li.weightNAxis);
    li.weightBytes = tensorNumElements(*w->constant) *
                     static_cast<int64_t>(elemTypeSize(w->constant->data_type()));
    out.push_back(li);
  }
  return out;
}

/// Runs a tentative propagation with `group` column-parallel at `tp`.
static llvm::Expected<DryRun> dryRun(Graph &g, const std::vector<LinearInfo> &linears,
                                     const PartitionOptions &opts, int tp,
                                     llvm::ArrayRef<const Node *> group) {
  PartitionOptions o = opts;
  o.tp = tp;
  DryRun d;
  d.group.assign(group.begin(), group.end());
  RewriteState none;
  llvm::DenseMap<const Node *, NodePlacements> scratch;
  if (auto err = propagatePlacements(g, linears, o, none, scratch, &d))
    return err;
  return d;
}

static std::string labels(llvm::ArrayRef<const Node *> nodes) {
  std::string s;
  for (const Node *n : nodes)
    s += (s.empty() ? "'" : ", '") + n->label() + "' (" + n->opType() + ")";
  return s;
}

/// A fused projection cut by Slices (Phi-3's qkv_proj, and gate_up_proj cut
/// by torch's chunk, whose bounds are computed from the output's shape):
/// every reader of `v` is a Slice of its last axis (N wide) or a Shape that
/// only computes such Slices' bounds, each Slice takes one block [jN/k,
/// (j+1)N/k) and together they take all k. Returns k, or 1. Parts of
/// different widths (grouped-query attention's q|k|v) are not taken: one
/// block placement cannot hold them head by head. Nor are bounds computed
/// from the output's shape that would not come out as the local block from
/// the local shape at `tp` (N - 8 rather than N / 2): the Slice rule would
/// refuse them.
static int slicedParts(const Value *v, int64_t N, int tp) {
  if (v->isGraphOutput || v->uses.size() < 2)
    return 1;
  const int64_t last = v->rank() - 1;
  llvm::SmallVector<std::pair<int64_t, int64_t>, 4> ranges;
  llvm::SmallVector<const Node *, 4> computed; // Slices with a run-time bound
  for (const auto &[user, idx] : v->uses) {
    if (!user->domain().empty() || idx != 0)
      return 1;
    if (user->opType() == "Shape") {
      llvm::SmallVector<const Node *, 4> slices;
      if (!user->outputs[0] || !idioms::feedsOnlySliceBounds(user->outputs[0], v, slices))
        return 1;
      continue; // its Slices are readers of v too
    }
    int64_t s = 0, e = 0;
    if (user->opType() != "Slice" || !idioms::sliceRange(*user, last, N, s, e) || e <= s)
      return 1;
    ranges.push_back({s, e});
    if (!user->input(1)->constant || !user->input(2)->constant)
      computed.push_back(user);
  }
  if (ranges.empty())
    return 1;
  const int64_t w = ranges.front().second - ranges.front().first;
  if (N % w || N / w < 2)
    return 1;
  const int64_t k = N / w;
  llvm::SmallVector<bool, 4> taken(k, false);
  for (auto [s, e] : ranges) {
    if (e - s != w || s % w)
      return 1;
    taken[s / w] = true;
  }
  if (llvm::is_contained(taken, false))
    return 1;
  if (N % (k * tp) == 0) // else planStrategies says tp does not divide
    for (const Node *slice : computed) {
      int64_t s = 0, e = 0, gs = 0, ge = 0, L = N / tp;
      idioms::sliceRange(*slice, last, N, gs, ge);
      if (!idioms::sliceRange(*slice, last, L, s, e) ||
          (!slice->input(1)->constant && s != gs / tp) ||
          (!slice->input(2)->constant && e != ge / tp))
        return 1; // (a constant bound is rewritten)
    }
  return static_cast<int>(k);
}

/// A fused projection: the Linear's output (after an optional Add of a
/// constant bias) has one consumer, a Split of its last axis into k equal
/// parts, or is cut into k equal parts by Slices (slicedParts). Returns k,
/// or 1.
static int fusedParts(const LinearInfo &li, int tp) {
  const Value *v = li.node->outputs[0];
  if (!v || !v->hasShape || v->dimSize(-1) != li.N)
    return 1;
  if (v->uses.size() > 1)
    return slicedParts(v, li.N, tp);
  if (v->uses.size() != 1)
    return 1;
  const Node *user = v->uses[0].first;
  if (user->opType() == "Add" && user->inputs.size() == 2 &&
      (user->inputs[0] == v ? user->inputs[1] : user->inputs[0])->constant) {
    v = user->outputs[0];
    if (!v || !v->hasShape || v->dimSize(-1) != li.N)
      return 1;
    if (v->uses.size() > 1)
      return slicedParts(v, li.N, tp);
    if (v->uses.size() != 1)
      return 1;
    user = v->uses[0].first;
  }
  // A Reshape that keeps the last axis (HF's Conv1D: 2-D Gemm, then the
  // leading dims restored).
  if (user->opType() == "Reshape" && user->outputs[0] && user->outputs[0]->hasShape &&
      user->outputs[0]->dimSize(-1) == li.N && !user->outputs[0]->uses.empty()) {
    v = user->outputs[0];
    if (v->uses.size() > 1)
      return slicedParts(v, li.N, tp);
    user = v->uses[0].first;
  }
  if (user->opType() != "Split" || !user->domain().empty() || user->inputs[0] != v)
    return 1;
  int64_t axis = 0;
  for (const auto &a : user->proto.attribute())
    if (a.name() == "axis")
      axis = a.i();
  if (axis < 0)
    axis += v->rank();
  int k = static_cast<int>(user->outputs.size());
  if (axis != v->rank() - 1 || k < 2 || li.N % k)
    return 1;
  if (const Value *sizes = user->input(1)) {
    if (!sizes->constant || sizes->constant->data_type() != onnx::TensorProto::INT64)
      return 1;
    const std::string &raw = sizes->constant->raw_data();
    const int64_t *s = reinterpret_cast<const int64_t *>(raw.data());
    if (raw.size() != k * sizeof(int64_t))
      return 1;
    for (int i = 0; i < k; ++i)
      if (s[i] != li.N / k)
        return 1;
  }
  return k;
}

llvm::Error planStrategies(Graph &g, std::vector<LinearInfo> &linears,
                           const PartitionOptions &opts) {
  const int tp = opts.tp;
  if (tp == 1)
    return llvm::Error::success(); // everything stays replicated
  for (LinearInfo &li : linears)
    li.fusedParts = fusedParts(li, tp);
  llvm::DenseMap<const Node *, LinearInfo *> byNode;
  for (LinearInfo &li : linears)
    byNode[li.node] = &li;
  auto undecided = [](const LinearInfo &li) {
    return li.strategy == LinearStrategy::Replicate && li.pairedWith.empty();
  };
  for (LinearInfo &li : linears) {
    if (!undecided(li))
      continue;
    // The group: undecided Linears reading the same activation (Q, K, V).
    llvm::SmallVector<const Node *, 4> group;
    for (LinearInfo &other : linears)
      if (undecided(other) && other.node->inputs[0] == li.node->inputs[0] &&
          other.actKAxis == li.actKAxis)
        group.push_back(other.node);
    // Structure first (tp 1: no divisibility question): do the group's
    // shards reach row partners without a gather? Then the real tp. If the
    // whole group does not work, the Linear may still pair on its own (e.g.
    // the query projection of grouped-query attention with fewer KV heads
    // than ranks, K and V then staying whole).
    llvm::SmallVector<llvm::SmallVector<const Node *, 4>, 2> candidates = {group};
    if (group.size() > 1)
      candidates.push_back({li.node});
    bool committed = false;
    llvm::Optional<std::string> firstError;
    for (auto &cand : candidates) {
      int64_t common = 0;
      for (const Node *n : cand)
        common = std::gcd(common, byNode[n]->N);
      auto structural = dryRun(g, linears, opts, 1, cand);
      if (!structural)
        return structural.takeError();
      if (std::getenv("QN_DEBUG_PLAN"))
        llvm::errs() << "plan: group of '" << li.node->label() << "' (" << cand.size()
                     << "): " << (structural->violation.empty() ? "ok" : structural->violation)
                     << ", " << structural->rows.size() << " row partner(s)\n";
      if (!structural->violation.empty() || structural->rows.empty()) {
        // The Linear's own attempt (the last candidate) names its own path;
        // a plain graph output of a lone Linear is no lost shard.
        const std::string &v = structural->violation;
        if (!v.empty() && (li.whyNotPaired.empty() || cand.size() == 1))
          li.whyNotPaired = llvm::StringRef(v).startswith("graph output") ? "" : v;
        continue;
      }
      auto real = dryRun(g, linears, opts, tp, cand);
      if (!real)
        return real.takeError();
      if (common % (tp * li.fusedParts) || !real->violation.empty() ||
          real->rows != structural->rows) {
        if (firstError)
          continue;
        std::string works;
        for (int64_t t = 1; t <= common; ++t) {
          if (common % (t * li.fusedParts))
            continue;
          auto d = dryRun(g, linears, opts, static_cast<int>(t), cand);
          if (!d)
            return d.takeError();
          if (d->violation.empty() && d->rows == structural->rows)
            works += (works.empty() ? "" : ", ") + std::to_string(t);
        }
        std::string why = common % tp
                              ? llvm::formatv("{0} is not divisible by {1}", common, tp).str()
                              : real->violation.empty() ? std::string("the row layers change")
                                                        : real->violation;
        std::string features = cand.size() == 1
                                   ? llvm::formatv(", {0} output features", li.N).str()
                                   : std::string();
        firstError = "cannot split " +
                     (cand.size() == 1
                          ? "'" + li.node->label() + "' (" + li.node->opType() + features + ")"
                          : labels(cand)) +
                     " and " + labels(structural->rows) + " over --tp " + std::to_string(tp) +
                     ": " + why + "; tp values that work for these layers: " +
                     (works.empty() ? std::string("none") : works);
        continue;
      }
      for (const Node *n : cand) {
        LinearInfo *c = byNode[n];
        c->strategy = LinearStrategy::Column;
        c->pairedWith = structural->rows.front()->label();
      }
      for (const Node *n : structural->rows) {
        LinearInfo *r = byNode[n];
        r->strategy = LinearStrategy::Row;
        r->pairedWith = li.node->label();
      }
      committed = true;
      break;
    }
    if (committed)
      continue;
    if (firstError)
      return fail(*firstError);
    // A lone Linear: column-parallel then gathered, or replicated when the
    // weight is too small for sharding to pay, or tp does not divide N.
    if (li.N % tp == 0 && li.weightBytes >= opts.replicateBelowBytes) {
      // Unless a reader of its shard's shape would stay whole (a local size
      // read at run time, which no gather fixes).
      auto lone = dryRun(g, linears, opts, tp, {li.node});
      if (!lone)
        return lone.takeError();
      if (!lone->localRead.empty() || !lone->ungatherable.empty()) {
        li.whyNotPaired = lone->localRead.empty() ? lone->ungatherable : lone->localRead;
        continue;
      }
      // Nor, for a part of a fused projection (Defuse.cpp) that pairs with
      // no row layer (multi-query attention's single K/V head, which
      // Megatron keeps whole), where its shard would be gathered inside the
      // graph: an AllGather per layer for one head's weights.
      if (llvm::is_contained(g.projectionParts, li.node) && !lone->violation.empty() &&
          !llvm::StringRef(lone->violation).startswith("graph output")) {
        li.whyNotPaired = lone->violation;
        li.keptWhole = "a part of a fused projection without a row partner (a multi-query "
                       "K/V head), whose shard would be gathered inside the layer";
        continue;
      }
      li.strategy = LinearStrategy::Column;
      li.fusedParts = 1; // gathered: an ordinary contiguous shard
    }
  }
  return llvm::Error::success();
}

std::vector<std::string> planWarnings(const Plan &plan, const PartitionOptions &opts) {
  std::vector<std::string> out;
  if (plan.tp == 1)
    return out;
  for (const LinearInfo &li : plan.linears)
    if (li.strategy == LinearStrategy::Replicate && li.keptWhole.empty() &&
        (!li.whyNotPaired.empty() || li.weightBytes >= opts.replicateBelowBytes))
      out.push_back(llvm::formatv("Linear '{0}' ({1} weight bytes) stays replicated: {2}",
                                  li.node->label(), li.weightBytes,
                                  li.whyNotPaired.empty()
                                      ? llvm::formatv("tp {0} does not divide its {1} output "
                                                      "features",
                                                      plan.tp, li.N)
                                            .str()
                                      : "its shard would be lost where " + li.whyNotPaired)
                        .str());
  // AllGathers whose result feeds a node of the graph (not only its outputs).
  llvm::StringSet<> gathered;
  for (const PlannedNode &n : plan.nodes)
    if (n.role == "collective" && n.proto.op_type() == "AllGather")
      gathered.insert(n.proto.output(0));
  llvm::StringSet<> unpads; // the Slices that drop a padded head's padding
  for (const PaddedLinear &p : plan.padded)
    unpads.insert(p.node->label() + "/unpad");
  for (const PlannedNode &n : plan.nodes) {
    // The training loss gathers each rank's (max, log-sum-exp) by design.
    if (n.role == "collective" || unpads.count(n.proto.name()) ||
        (plan.training && llvm::StringRef(n.proto.name()).startswith("qn/loss/")))
      continue;
    for (const std::string &in : n.proto.input())
      if (gathered.count(in)) {
        out.push_back(("AllGather of '" + in.substr(0, in.find("__qn_")) + "' inside the graph, "
                       "for '" + n.proto.name() + "' (" + n.proto.op_type() +
                       "): a shard lost before the end of a layer"));
        gathered.erase(in); // once per value
      }
  }
  return out;
}

llvm::Error splitRowGemmBias(Graph &g, std::vector<LinearInfo> &linears) {
  for (LinearInfo &li : linears) {
    Node *n = li.node;
    if (!li.isGemm || li.strategy != LinearStrategy::Row || n->inputs.size() < 3 ||
        !n->inputs[2])
      continue;
    Value *c = n->inputs[2];
    if (!c->constant)
      return fail("row-parallel Gemm '" + n->label() +
                  "' has a non-constant bias C; not supported yet");
    float beta = attrFloat(n->proto, "beta", 1.0f);
    onnx::TensorProto bias = *c->constant;
    bias.set_name(g.uniqueName(c->name + "__qn_once"));
    if (beta != 1.0f) {
      if (bias.data_type() != onnx::TensorProto::FLOAT)
        return fail("Gemm '" + n->label() + "': beta != 1 with a non-float32 bias");
      std::string &raw = *bias.mutable_raw_data();
      float *p = reinterpret_cast<float *>(raw.data());
      for (size_t i = 0; i < raw.size() / 4; ++i)
        p[i] *= beta;
    }
    Value *biasValue = g.addConstant(std::move(bias));
    // Gemm(A, B) -> tmp; Add(tmp, beta*C) -> original output.
    Value *out = n->outputs[0];
    std::string tmpName = g.uniqueName(out->name + "__qn_nobias");
    Value *tmp = g.getOrCreate(tmpName);
    tmp->elemType = out->elemType;
    tmp->hasShape = out->hasShape;
    tmp->shape = out->shape;
    n->inputs.pop_back();
    n->proto.mutable_input()->RemoveLast();
    for (int i = 0; i < n->proto.attribute_size(); ++i)
      if (n->proto.attribute(i).name() == "beta") {
        n->proto.mutable_attribute()->DeleteSubrange(i, 1);
        break;
      }
    n->outputs[0] = tmp;
    n->proto.set_output(0, tmpName);
    tmp->producer = n;
    g.insertNode(g.indexOf(n) + 1, makeNodeProto("Add", n->label() + "/bias_once",
                                                  {tmpName, biasValue->name}, out->name));
  }
  return llvm::Error::success();
}

} // namespace qn
