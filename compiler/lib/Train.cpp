//===- Train.cpp - Training plans: autodiff, loss, optimizer --------------===//
//
// partitionTraining, in order:
//   1. plan the forward graph as for inference (Linear strategies, the
//      row-parallel Gemm bias split) and propagate it: each parameter's
//      placement is the one its forward consumers need (R where they
//      disagree);
//   2. append the loss (softmax cross-entropy, mean over the labels that are
//      not ignore_index) and its gradient w.r.t. the logits;
//   3. autodiff: walk the forward nodes backwards, asking each op's gradient
//      rule (grad/) for its inputs' gradients; contributions to one value are
//      summed as they are (while still P where sharded), broadcasting undone
//      once here;
//   4. the optimizer update (torch.optim.SGD / AdamW semantics) per
//      parameter, with its state as new initializers;
//   5. re-import the training graph (shape inference) and partition it with
//      the parameters and their state pinned to the parameter's placement
//      and the updates required in it: every backward collective is a
//      redistribution the rules asked for.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Train.h"

#include "grad/GradRules.h"
#include "qn/compiler/Import.h"

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <cmath>
#include <cstring>
#include <optional>

namespace qn {
namespace {

struct Autodiff {
  Graph &g;
  grad::Emitter &e;
  llvm::DenseSet<const Value *> needs;           // values that need a gradient
  llvm::StringMap<std::vector<std::string>> parts; // gradient contributions by value

  std::string sum(const std::vector<std::string> &ps, llvm::StringRef base) {
    std::string acc = ps[0];
    for (size_t i = 1; i < ps.size(); ++i)
      acc = e.op("Add", {acc, ps[i]}, base);
    return acc;
  }

  /// `grad`, in the shape of `out`, summed down to the shape of `in`.
  llvm::Expected<std::string> unbroadcast(const std::string &grad, const Value *out,
                                          const Value *in, const Node &n) {
    if (!in->hasShape || !out->hasShape)
      return fail("autodiff: node '" + n.label() + "' (" + n.opType() + "): the shape of '" +
                  (in->hasShape ? out->name : in->name) + "' is not known");
    int64_t ro = out->rank(), ri = in->rank();
    if (ri > ro)
      return grad; // the rule gave it in the input's own shape
    std::vector<int64_t> axes, lead;
    for (int64_t i = 0; i < ro; ++i) {
      int64_t j = i - (ro - ri);
      if (j < 0) {
        axes.push_back(i);
        lead.push_back(i);
        continue;
      }
      const Dim &di = in->shape[j], &dout = out->shape[i];
      if (di.known() && di.size == 1 && !(dout.known() && dout.size == 1))
        axes.push_back(i);
    }
    if (axes.empty())
      return grad;
    std::string r = e.reduceSum(grad, axes, true, in->name + "_grad_sum");
    if (!lead.empty())
      r = e.squeeze(r, lead, in->name + "_grad_sq");
    return r;
  }

  llvm::Error run(const Value *seed, const std::string &seedGrad,
                  const llvm::DenseSet<const Value *> &params) {
    const grad::GradRuleRegistry &rules = grad::gradRules();
    needs = params;
    for (auto &np : g.nodes) {
      bool any = llvm::any_of(np->inputs, [&](const Value *v) { return v && needs.count(v); });
      if (!any)
        continue;
      for (const Value *v : np->outputs)
        if (v && (v->elemType == onnx::TensorProto::FLOAT ||
                  v->elemType == onnx::TensorProto::DOUBLE ||
                  v->elemType == onnx::TensorProto::FLOAT16))
          needs.insert(v);
    }
    parts[seed->name].push_back(seedGrad);
    for (auto it = g.nodes.rbegin(); it != g.nodes.rend(); ++it) {
      const Node &n = **it;
      std::vector<std::string> outGrads(n.outputs.size());
      bool anyOut = false;
      for (unsigned i = 0; i < n.outputs.size(); ++i)
        if (const Value *v = n.outputs[i]; v && parts.count(v->name)) {
          e.setScope(n.label());
          outGrads[i] = sum(parts[v->name], v->name + "_grad_total");
          anyOut = true;
        }
      if (!anyOut)
        continue;
      std::vector<char> wantsStore(n.inputs.size());
      bool anyIn = false;
      for (unsigned i = 0; i < n.inputs.size(); ++i)
        anyIn |= (wantsStore[i] = n.inputs[i] && needs.count(n.inputs[i]));
      if (!anyIn)
        continue;
      const grad::GradRuleRegistry::Entry *rule =
          n.domain().empty() ? rules.lookup(n.opType()) : nullptr;
      if (!rule)
        return fail("autodiff: node '" + n.label() + "' (" + n.opType() +
                    ") has no gradient rule; ops that have one: " +
                    llvm::join(rules.ops(), ", "));
      llvm::SmallVector<bool, 4> wants(wantsStore.begin(), wantsStore.end());
      e.setScope(n.label());
      if (const Value *o = n.outputs.empty() ? nullptr : n.outputs[0];
          o && (o->elemType == onnx::TensorProto::FLOAT || o->elemType == onnx::TensorProto::DOUBLE))
        e.setType(o->elemType);
      grad::GradContext ctx{g, outGrads, wants, e};
      grad::GradResult res;
      if (auto err = rule->rule(ctx, n, res))
        return fail("autodiff: " + llvm::toString(std::move(err)));
      for (unsigned i = 0; i < n.inputs.size() && i < res.inputGrads.size(); ++i) {
        if (!wants[i] || res.inputGrads[i].empty())
          continue;
        std::string gi = res.inputGrads[i];
        if (res.unbroadcast[i]) {
          auto r = unbroadcast(gi, n.outputs[0], n.inputs[i], n);
          if (!r)
            return r.takeError();
          gi = *r;
        }
        parts[n.inputs[i]->name].push_back(gi);
      }
    }
    return llvm::Error::success();
  }

  /// The gradient of `v` ("" if nothing reached it).
  std::string gradOf(const Value *v) {
    auto it = parts.find(v->name);
    if (it == parts.end())
      return "";
    return sum(it->second, v->name + "_grad_total");
  }
};

onnx::TensorProto zerosLike(const onnx::TensorProto &t, const std::string &name) {
  onnx::TensorProto z;
  z.set_name(name);
  z.set_data_type(t.data_type());
  for (int64_t d : t.dims())
    z.add_dims(d);
  z.set_raw_data(std::string(t.raw_data().size(), '\0'));
  return z;
}

onnx::ValueInfoProto scalarInput(const std::string &name, int32_t type) {
  onnx::ValueInfoProto vi;
  vi.set_name(name);
  auto *tt = vi.mutable_type()->mutable_tensor_type();
  tt->set_elem_type(type);
  tt->mutable_shape(); // 0-d
  return vi;
}

/// Whether `v` is the table of an embedding lookup (Gather on axis 0).
bool isLookupTable(const Value *v) {
  return llvm::any_of(v->uses, [](const auto &use) {
    return use.second == 0 && use.first->opType() == "Gather" && use.first->domain().empty() &&
           attrInt(use.first->proto, "axis", 0) == 0;
  });
}

/// Replaces each source initializer B that equals the transpose of another
/// source initializer A (2-D, same type, not all one value) by Transpose(A);
/// returns (B, A). An embedding table is never the copy: it stays the
/// parameter, so it can be vocab-parallel (a lookup of a Transpose could
/// not), and the LM head reads it transposed.
std::vector<std::pair<std::string, std::string>> tieTransposedCopies(Graph &g) {
  std::vector<std::pair<std::string, std::string>> ties;
  std::vector<Value *> mats;
  for (const std::string &name : g.sourceInitializers)
    if (Value *v = g.lookup(name); v && v->constant && v->rank() == 2 &&
                                   (v->elemType == onnx::TensorProto::FLOAT ||
                                    v->elemType == onnx::TensorProto::DOUBLE) &&
                                   !v->uses.empty())
      mats.push_back(v);
  llvm::DenseSet<const Value *> replaced;
  for (Value *b : mats) {
    if (isLookupTable(b))
      continue;
    for (Value *a : mats) {
      if (a == b || replaced.count(a) || a->elemType != b->elemType ||
          a->dimSize(0) != b->dimSize(1) || a->dimSize(1) != b->dimSize(0) ||
          a->dimSize(0) == a->dimSize(1))
        continue;
      const std::string &ra = a->constant->raw_data(), &rb = b->constant->raw_data();
      size_t es = elemTypeSize(a->elemType);
      int64_t R = a->dimSize(0), Cc = a->dimSize(1);
      if (ra.size() != rb.size() || ra.size() != size_t(R * Cc) * es)
        continue;
      // A constant matrix (all zeros, say) equals any transpose of its
      // shape by coincidence: not a tie.
      bool uniform = true;
      for (size_t k = es; uniform && k < ra.size(); k += es)
        uniform = std::memcmp(ra.data(), ra.data() + k, es) == 0;
      if (uniform)
        continue;
      bool equal = true;
      for (int64_t i = 0; equal && i < R; ++i)
        for (int64_t j = 0; equal && j < Cc; ++j)
          equal = std::memcmp(ra.data() + (i * Cc + j) * es, rb.data() + (j * R + i) * es, es) == 0;
      if (!equal)
        continue;
      std::string out = g.uniqueName(b->name + "__tied");
      auto uses = b->uses;
      Node *t = g.insertNode(0, makeNodeProto("Transpose", "qn/tied/" + b->name, {a->name}, out));
      auto *perm = t->proto.add_attribute();
      perm->set_name("perm");
      perm->set_type(onnx::AttributeProto::INTS);
      perm->add_ints(1);
      perm->add_ints(0);
      Value *tv = g.lookup(out);
      tv->elemType = b->elemType;
      tv->hasShape = true;
      tv->shape = b->shape;
      for (auto [user, idx] : uses)
        user->inputs[idx] = tv;
      g.rebuildUses();
      replaced.insert(b);
      ties.push_back({b->name, a->name});
      break;
    }
  }
  return ties;
}

/// `m` (a model built from `from`'s graph) imported again, for the shapes
/// ONNX infers; it keeps `from`'s source path, hash and parameter bytes.
llvm::Expected<std::unique_ptr<Graph>> reimport(const onnx::ModelProto &m, const Graph &from,
                                                const std::string &what) {
  std::string bytes;
  if (!m.SerializeToString(&bytes))
    return fail("internal: " + what + " does not serialize (over 2 GiB?)");
  auto g = importModelFromBuffer(bytes, from.sourcePath + " (" + what + ")");
  if (!g)
    return fail("internal: " + what + " does not import: " + llvm::toString(g.takeError()));
  (*g)->sourcePath = from.sourcePath;
  (*g)->sourceSha256 = from.sourceSha256;
  (*g)->sourceParamBytes = from.sourceParamBytes;
  return std::move(*g);
}

/// The graph `g` (ties made) with the table of every vocab-parallel lookup
/// whose vocabulary tp does not divide padded with zero rows to a multiple
/// of tp (Megatron pads the vocabulary), re-imported so that the shapes after
/// it (a tied LM head's logits) have the padded size; its ids are wrapped
/// first (a negative id counts from the true vocabulary). Null when nothing
/// needs padding. `rows`: each padded table's true row count.
llvm::Expected<std::unique_ptr<Graph>> padVocabularies(Graph &g, const PartitionOptions &popts,
                                                       llvm::StringMap<int64_t> &rows) {
  std::vector<EmbeddingInfo> pads;
  for (const EmbeddingInfo &em : findEmbeddings(g, popts))
    if (em.vocabParallel && em.paddedV != em.V && !rows.count(em.node->inputs[0]->name)) {
      rows[em.node->inputs[0]->name] = em.V;
      pads.push_back(em);
    }
  if (pads.empty())
    return nullptr;
  onnx::ModelProto m = g.model;
  onnx::GraphProto &gp = *m.mutable_graph();
  gp.clear_node();
  gp.clear_value_info();
  for (auto &out : *gp.mutable_output()) // the logits grow: their sizes inferred again
    for (auto &d : *out.mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim())
      d.clear_dim_value();
  llvm::StringMap<std::string> wrappedIds; // lookup -> its wrapped ids
  for (const EmbeddingInfo &em : pads) {
    const Value *ids = em.node->inputs[1];
    std::string base = g.uniqueName(ids->name + "__qn_wrapped");
    g.getOrCreate(base);
    *gp.add_initializer() = intScalar(base + "_zero", ids->elemType, 0);
    *gp.add_initializer() = intScalar(base + "_vocab", ids->elemType, em.V);
    wrappedIds[em.node->label()] = base;
    // The table, padded in place (same name: it stays the source's parameter).
    for (auto &init : *gp.mutable_initializer())
      if (init.name() == em.node->inputs[0]->name) {
        const onnx::TensorProto &t = *em.node->inputs[0]->constant; // raw data
        std::string raw = t.raw_data();
        raw.resize(static_cast<size_t>(em.paddedV * em.H) * elemTypeSize(t.data_type()), '\0');
        init = t;
        init.set_raw_data(std::move(raw));
        init.set_dims(0, em.paddedV);
      }
  }
  for (const auto &np : g.nodes) {
    onnx::NodeProto n = np->proto;
    if (auto it = wrappedIds.find(np->label()); it != wrappedIds.end()) {
      const std::string &w = it->second, ids = n.input(1);
      *gp.add_node() = makeNodeProto("Less", np->label() + "/qn_negative", {ids, w + "_zero"},
                                     w + "_negative");
      *gp.add_node() = makeNodeProto("Add", np->label() + "/qn_from_end", {ids, w + "_vocab"},
                                     w + "_from_end");
      *gp.add_node() = makeNodeProto("Where", np->label() + "/qn_wrapped",
                                     {w + "_negative", w + "_from_end", ids}, w);
      n.set_input(1, w);
    }
    *gp.add_node() = std::move(n);
  }
  auto padded = reimport(m, g, "the model with padded vocabularies");
  if (!padded)
    return padded.takeError();
  (*padded)->sourceInitializers = g.sourceInitializers; // not the constants import folded
  return std::move(*padded);
}

} // namespace

llvm::Expected<Plan> partitionTraining(Graph &gIn, const PartitionOptions &popts,
                                       const TrainOptions &topts,
                                       std::unique_ptr<Graph> &trainGraph) {
  if (popts.tp < 1)
    return fail("--tp must be at least 1 (got " + llvm::Twine(popts.tp) + ")");
  // 0. Tied weights: the exporter folds the Transpose of a shared weight (GPT-2's
  // token embedding used by its LM head) into an initializer of its own. A
  // source initializer equal to the transpose of another is read as that
  // Transpose again, so the shared weight gets one gradient (both uses').
  std::vector<std::pair<std::string, std::string>> ties = tieTransposedCopies(gIn);
  // Vocabularies tp does not divide: padded (the parameter with them).
  llvm::StringMap<int64_t> paddedRows;
  std::unique_ptr<Graph> paddedGraph;
  if (popts.tp > 1) {
    auto pg = padVocabularies(gIn, popts, paddedRows);
    if (!pg)
      return pg.takeError();
    paddedGraph = std::move(*pg);
  }
  Graph &g = paddedGraph ? *paddedGraph : gIn;
  // 1. The forward plan.
  if (popts.tp > 1) {
    if (auto err = defuseUnequalProjections(g))
      return err;
    privatizeShapeProducts(g);
  }
  std::vector<LinearInfo> linears = findLinears(g);
  if (auto err = planStrategies(g, linears, popts))
    return err;
  llvm::StringMap<std::pair<std::string, double>> biasSource; // split bias -> (C, beta)
  for (const LinearInfo &li : linears)
    if (li.isGemm && li.strategy == LinearStrategy::Row && li.node->inputs.size() > 2 &&
        li.node->inputs[2])
      biasSource[li.node->label()] = {li.node->inputs[2]->name,
                                      attrFloat(li.node->proto, "beta", 1.0f)};
  if (auto err = splitRowGemmBias(g, linears))
    return err;
  llvm::StringMap<std::pair<std::string, double>> paramSource;
  for (const auto &np : g.nodes)
    if (np->opType() == "Add" && llvm::StringRef(np->label()).endswith("/bias_once")) {
      std::string owner = llvm::StringRef(np->label()).drop_back(strlen("/bias_once")).str();
      if (auto it = biasSource.find(owner); it != biasSource.end())
        paramSource[np->inputs[1]->name] = it->second;
    }
  // Vocab-parallel lookups, chosen as for inference (their tables padded
  // above where tp does not divide the vocabulary): the table is pinned
  // S(0), so a tied LM head reading it transposed is column-parallel and
  // the logits arrive vocab-sharded.
  PartitionOptions fopts = popts;
  llvm::StringSet<> vocabLookups;
  llvm::StringSet<> vocabTables;
  for (const EmbeddingInfo &em : findEmbeddings(g, popts)) {
    if (!em.vocabParallel || em.paddedV != em.V)
      continue; // a table padVocabularies could not pad
    vocabLookups.insert(em.node->label());
    vocabTables.insert(em.node->inputs[0]->name);
    fopts.constantPlacements[em.node->inputs[0]->name] = Placement::S(0);
  }
  RewriteState fstate;
  llvm::DenseMap<const Node *, NodePlacements> fplaced;
  if (auto err = propagatePlacements(g, linears, fopts, fstate, fplaced))
    return err;

  // The logits and the parameters.
  const Value *logits = nullptr;
  if (topts.logits.empty()) {
    if (g.outputs.size() != 1)
      return fail("the model has " + llvm::Twine(g.outputs.size()) +
                  " outputs: name the logits with --logits");
    logits = g.outputs[0];
  } else {
    for (const Value *v : g.outputs)
      if (v->name == topts.logits)
        logits = v;
    if (!logits) {
      std::vector<std::string> names;
      for (const Value *v : g.outputs)
        names.push_back(v->name);
      return fail("--logits '" + topts.logits + "' is not a graph output; outputs: " +
                  llvm::join(names, ", "));
    }
  }
  bool floatLogits = logits->elemType == onnx::TensorProto::FLOAT ||
                     logits->elemType == onnx::TensorProto::DOUBLE;
  if (!floatLogits || !logits->hasShape || logits->rank() < 2 || logits->dimSize(-1) <= 0)
    return fail("logits '" + logits->name +
                "' must be float32 or float64 of rank >= 2 with a static class axis (last); "
                "got " +
                elemTypeName(logits->elemType) +
                (logits->hasShape ? " of rank " + std::to_string(logits->rank()) : ""));
  const int64_t C = logits->dimSize(-1);
  // The true class count where a padded table widened the logits (a tied
  // LM head): the padded classes are masked out of the loss.
  int64_t realC = C;
  if (&g != &gIn)
    if (const Value *orig = gIn.lookup(logits->name);
        orig && orig->hasShape && orig->rank() >= 1 && orig->dimSize(-1) > 0)
      realC = orig->dimSize(-1);
  llvm::StringSet<> source;
  for (const std::string &s : g.sourceInitializers)
    source.insert(s);
  llvm::StringSet<> frozen;
  for (const std::string &f : topts.freeze) {
    if (!source.contains(f))
      return fail("--freeze '" + f + "' is not an initializer of the model");
    frozen.insert(f);
  }
  llvm::DenseSet<const Value *> params;
  std::vector<const Value *> paramOrder;
  llvm::DenseSet<const Value *> seen;
  for (const auto &np : g.nodes)
    for (const Value *v : np->inputs) {
      if (!v || !v->constant ||
          (v->elemType != onnx::TensorProto::FLOAT && v->elemType != onnx::TensorProto::DOUBLE) ||
          !seen.insert(v).second)
        continue;
      bool isSource = source.contains(v->name) || paramSource.count(v->name);
      std::string src = paramSource.count(v->name) ? paramSource[v->name].first : v->name;
      if (!isSource || frozen.contains(src))
        continue;
      // A 0-d initializer is an exporter's scalar constant (the dynamo
      // exporter writes GELU's 0.5, 3.0, 0.044715 as initializers), not a
      // module parameter: PyTorch does not train it.
      if (v->hasShape && v->shape.empty())
        continue;
      params.insert(v);
      paramOrder.push_back(v);
    }

  // 2. The loss.
  auto info = std::make_shared<TrainingInfo>();
  info->options = topts;
  info->classes = realC;
  info->ignoreIndex = topts.ignoreIndex;
  info->logits = logits->name;
  grad::Emitter e(g, "");
  e.setScope("qn/loss");
  e.setType(logits->elemType);
  auto freshInput = [&](llvm::StringRef base) {
    std::string name = g.uniqueName(base);
    g.getOrCreate(name);
    return name;
  };
  info->labels = freshInput("labels");
  info->lrInput = freshInput("qn_lr");
  if (topts.optimizer == OptimizerKind::AdamW)
    info->stepInput = freshInput("qn_step");
  const std::string &L = logits->name;
  int64_t opset = g.opsetVersion();
  if (opset < 13)
    return fail("--train needs a model of opset 13 or newer (this one is opset " +
                llvm::Twine(opset) + ")");
  auto toFloat = [&](const std::string &x, llvm::StringRef base) {
    return e.op("Cast", {x}, base, {grad::iattr("to", logits->elemType)});
  };
  // The class axis is split into G groups of C/G classes, G = tp where the
  // logits arrive vocab-sharded (a tied or column-parallel LM head), else 1:
  // each rank reduces its own group (max, log-sum-exp, target logit), the
  // groups' (max, lse) pairs are gathered (one AllGather of 2G values per
  // row, where Megatron's vocab-parallel cross-entropy spends a max and a
  // sum AllReduce) and combined locally, the target logit is summed (one
  // AllReduce), and the gradient softmax - onehot stays sharded. Written
  // over the unsharded graph; propagation finds the two collectives.
  const int64_t rank = logits->rank();
  std::string classGroupIds;
  const Placement lp = logits->placement;
  const int64_t G = lp.isShard() && lp.blocks == 1 && lp.axis == rank - 1 && C % popts.tp == 0
                        ? popts.tp
                        : 1;
  info->classGroups = G;
  std::vector<int64_t> grouped(static_cast<size_t>(rank - 1), 0), whole(grouped);
  grouped.push_back(G);
  grouped.push_back(C / G);
  whole.push_back(C);
  std::string Lg = e.op("Reshape", {L, e.ints("class_groups", grouped)}, L + "_grouped");
  std::string classMask;
  if (realC < C) {
    // Padded classes: a large negative logit (not -inf: 0 * -inf is NaN in
    // the one-hot product), so their softmax, gradient and accuracy are 0.
    std::vector<double> mask(static_cast<size_t>(C), 0.0);
    for (int64_t k = realC; k < C; ++k)
      mask[k] = -1e9;
    classMask = e.constant(e.typed("padded_classes", {G, C / G}, mask));
    Lg = e.op("Add", {Lg, classMask}, L + "_grouped_masked");
  }
  std::string valid = toFloat(
      e.op("Not", {e.op("Equal", {info->labels, e.ints("ignore_index", {topts.ignoreIndex})},
                        "labels_ignored")},
           "labels_kept"),
      "labels_valid");
  std::string count = e.reduceSum(valid, {}, false, "labels_count");
  std::string valid2 = e.unsqueeze(valid, {-2, -1}, "labels_valid_2");
  std::vector<int64_t> classIds(C);
  for (int64_t i = 0; i < C; ++i)
    classIds[i] = i;
  onnx::TensorProto classT = int64Tensor("classes", classIds);
  classT.clear_dims();
  classT.add_dims(G);
  classT.add_dims(C / G);
  // Pinned S(0) where the logits are sharded: each rank compares the labels
  // with its own classes, the one-hot is never whole.
  classGroupIds = e.constant(classT);
  std::string onehot =
      e.op("Mul",
           {toFloat(e.op("Equal", {e.unsqueeze(info->labels, {-2, -1}, "labels_2"),
                                   classGroupIds},
                         "labels_match"),
                    "labels_onehot_all"),
            valid2},
           "labels_onehot");
  // Per group: max and log-sum-exp.
  std::string gmax = e.reduce("ReduceMax", Lg, {-1}, true, L + "_group_max");
  std::string gsum = e.reduceSum(e.op("Exp", {e.op("Sub", {Lg, gmax}, L + "_shifted")}, L + "_exp"),
                                 {-1}, true, L + "_group_sumexp");
  std::string glse = e.op("Add", {e.op("Log", {gsum}, L + "_group_logsum"), gmax}, L + "_group_lse");
  std::string stats = e.op("Concat", {gmax, glse}, L + "_group_stats", {grad::iattr("axis", -1)});
  auto pick = [&](int64_t k, llvm::StringRef base) {
    return e.op("Gather", {stats, e.ints("stat", {k})}, base, {grad::iattr("axis", -1)});
  };
  std::string allMax = pick(0, L + "_groups_max");  // [..., G, 1]
  std::string allLse = pick(1, L + "_groups_lse");
  std::string best = e.reduce("ReduceMax", allMax, {-2}, true, L + "_max"); // [..., 1, 1]
  std::string lse = e.op(
      "Add",
      {e.op("Log",
            {e.reduceSum(e.op("Exp", {e.op("Sub", {allLse, best}, L + "_lse_shifted")}, L + "_lse_exp"),
                         {-2}, true, L + "_lse_sum")},
            L + "_lse_log"),
       best},
      L + "_lse"); // [..., 1, 1]
  std::string target = e.reduceSum(e.op("Mul", {onehot, Lg}, "target_logit_all"), {-2, -1}, true,
                                    "target_logit"); // [..., 1, 1]
  std::string picked = e.op("Mul", {e.op("Sub", {target, lse}, "target_logp_all"), valid2},
                            "target_logp");
  info->loss = e.op("Div", {e.op("Neg", {e.reduceSum(picked, {}, false, "loss_sum")}, "loss_neg"),
                            count},
                    "loss");
  // Accuracy: samples whose target logit is the largest (ties count).
  info->correct = e.reduceSum(
      e.op("Mul", {toFloat(e.op("Equal", {target, best}, "target_is_max"), "target_is_max_f"), valid2},
           "correct_each"),
      {}, false, "correct");
  // d loss / d logits = (softmax * valid - onehot) / count
  std::string probs = e.op("Exp", {e.op("Sub", {Lg, lse}, L + "_logp")}, L + "_probs");
  std::string dgrouped = e.op(
      "Div",
      {e.op("Sub", {e.op("Mul", {probs, valid2}, "probs_kept"), onehot}, "probs_minus_onehot"),
       count},
      L + "_grouped_grad");
  std::string dlogits = e.op("Reshape", {dgrouped, e.ints("class_axis", whole)}, L + "_grad");

  // 3. Autodiff.
  Autodiff ad{g, e, {}, {}};
  if (auto err = ad.run(logits, dlogits, params))
    return err;
  std::vector<std::pair<const Value *, std::string>> grads;
  for (const Value *p : paramOrder) {
    e.setScope("qn/grad/" + p->name);
    std::string gp = ad.gradOf(p);
    if (!gp.empty())
      grads.push_back({p, gp});
  }
  // Each gradient has its parameter's shape: told to shape inference, which
  // may not find it through every rule's output (a Reshape to a computed
  // shape), so the optimizer and the clipping norm see static shapes.
  std::vector<std::pair<std::string, const Value *>> gradShapes;
  for (const auto &[p, gp] : grads)
    gradShapes.push_back({gp, p});
  if (grads.empty())
    return fail("nothing to train: no float initializer reaches the logits '" + L + "'" +
                (topts.freeze.empty() ? "" : " (all are frozen)"));

  // Pins: what the forward consumers of each parameter need (R where they
  // disagree); its gradient and optimizer state will be placed alike.
  llvm::StringMap<Placement> pinOf;
  for (const auto &[p, gpName] : grads) {
    std::optional<Placement> pin;
    bool agree = true;
    for (const auto &[user, idx] : p->uses) {
      auto it = fplaced.find(user);
      if (it == fplaced.end() || idx >= it->second.in.size())
        continue;
      Placement need = it->second.in[idx];
      if (pin && *pin != need)
        agree = false;
      pin = need;
    }
    Placement pl = pin && agree ? *pin : Placement::R();
    if (vocabTables.contains(p->name))
      pl = Placement::S(0);
    if (pl.isMerged())
      pl = Placement::R();
    if (pl.isPartial())
      pl = Placement::R();
    pinOf[p->name] = pl;
  }

  // 4. The optimizer, in the parameters' element type (the lr and step
  // inputs are float32, cast where the parameters are float64).
  e.setScope("qn/optimizer");
  const int32_t ptype = grads[0].first->elemType;
  for (const auto &[p, gpName] : grads)
    if (p->elemType != ptype)
      return fail("training: parameters '" + grads[0].first->name + "' (" +
                  elemTypeName(ptype) + ") and '" + p->name + "' (" + elemTypeName(p->elemType) +
                  ") differ in element type; mixed precision is not supported yet");
  e.setType(ptype);
  auto asParamType = [&](const std::string &x) {
    return ptype == onnx::TensorProto::FLOAT
               ? x
               : e.op("Cast", {x}, x + "_cast", {grad::iattr("to", ptype)});
  };
  const TrainOptions &o = topts;
  double wd = std::isnan(o.weightDecay) ? (o.optimizer == OptimizerKind::AdamW ? 1e-2 : 0.0)
                                        : o.weightDecay;
  info->options.weightDecay = wd;
  if (o.clipGradNorm > 0) {
    // torch.nn.utils.clip_grad_norm_: coef = min(1, max / (norm + 1e-6)).
    // Sharded squares summed while partial, then reduced once with the
    // replicated ones added after: each replicated gradient counts once.
    std::vector<std::string> sharded, whole;
    for (auto &[p, gp] : grads)
      (pinOf[p->name].isShard() ? sharded : whole)
          .push_back(e.reduceSum(e.op("Mul", {gp, gp}, p->name + "_grad_sq"), {}, false,
                                 p->name + "_grad_sqsum"));
    std::vector<std::string> sq;
    if (!sharded.empty())
      sq.push_back(ad.sum(sharded, "grad_sqsum_sharded"));
    if (!whole.empty())
      sq.push_back(ad.sum(whole, "grad_sqsum_whole"));
    std::string norm = e.op("Sqrt", {ad.sum(sq, "grad_sqsum")}, "grad_norm");
    std::string coef = e.op(
        "Min",
        {e.scalar("one", 1.0),
         e.op("Div", {e.scalar("max_norm", o.clipGradNorm),
                      e.op("Add", {norm, e.scalar("tiny", 1e-6)}, "grad_norm_eps")},
              "clip_coef_raw")},
        "clip_coef");
    for (auto &[p, gp] : grads)
      gp = e.op("Mul", {gp, coef}, p->name + "_grad_clipped");
  }
  const std::string lr = asParamType(info->lrInput);
  std::vector<onnx::TensorProto> stateInits;
  auto addState = [&](const Value *p, llvm::StringRef kind) {
    std::string name = g.uniqueName(p->name + "__" + kind.str());
    g.getOrCreate(name);
    stateInits.push_back(zerosLike(*p->constant, name));
    return name;
  };
  auto record = [&](const Value *p, const std::string &name, const std::string &update,
                    llvm::StringRef kind) {
    TrainState s;
    s.name = name;
    s.update = update;
    s.param = p->name;
    s.kind = kind.str();
    if (auto it = paramSource.find(p->name); it != paramSource.end()) {
      s.source = it->second.first;
      s.sourceScale = it->second.second;
    } else {
      s.source = p->name;
    }
    if (auto it = paddedRows.find(p->name); it != paddedRows.end())
      s.sourceRows = it->second;
    info->state.push_back(std::move(s));
  };
  // AdamW's per-step scalars, once: bias corrections from the step input.
  struct {
    std::string decay, stepSize, bc2Sqrt;
  } adam;
  if (o.optimizer == OptimizerKind::AdamW) {
    const std::string step = asParamType(info->stepInput);
    std::string one = e.scalar("one", 1.0);
    adam.decay = e.op("Sub", {one, e.op("Mul", {lr, e.scalar("weight_decay", wd)}, "lr_wd")},
                      "decay_factor");
    std::string bc1 = e.op("Sub", {one, e.op("Pow", {e.scalar("beta1", o.beta1), step}, "beta1_pow")},
                           "bias_correction1");
    std::string bc2 = e.op("Sub", {one, e.op("Pow", {e.scalar("beta2", o.beta2), step}, "beta2_pow")},
                           "bias_correction2");
    adam.stepSize = e.op("Div", {lr, bc1}, "step_size");
    adam.bc2Sqrt = e.op("Sqrt", {bc2}, "bc2_sqrt");
  }
  for (auto &[p, gp] : grads) {
    const std::string &pn = p->name;
    if (o.optimizer == OptimizerKind::Sgd) {
      std::string d = gp;
      if (wd != 0)
        d = e.op("Add", {d, e.op("Mul", {pn, e.scalar("weight_decay", wd)}, pn + "_decay")},
                 pn + "_grad_wd");
      std::string momName;
      if (o.momentum != 0) {
        momName = addState(p, "momentum");
        d = e.op("Add", {e.op("Mul", {momName, e.scalar("momentum", o.momentum)}, pn + "_mom_scaled"),
                         d},
                 momName + "__updated");
      }
      std::string updated =
          e.op("Sub", {pn, e.op("Mul", {d, lr}, pn + "_step")}, pn + "__updated");
      record(p, pn, updated, "param");
      if (!momName.empty())
        record(p, momName, d, "momentum");
    } else {
      std::string m = addState(p, "exp_avg"), v = addState(p, "exp_avg_sq");
      std::string decayed = wd != 0 ? e.op("Mul", {pn, adam.decay}, pn + "_decayed") : pn;
      std::string m1 = e.op(
          "Add",
          {m, e.op("Mul", {e.op("Sub", {gp, m}, m + "_delta"), e.scalar("one_minus_beta1", 1 - o.beta1)},
                   m + "_lerp")},
          m + "__updated");
      std::string v1 = e.op(
          "Add",
          {e.op("Mul", {v, e.scalar("beta2", o.beta2)}, v + "_scaled"),
           e.op("Mul", {e.op("Mul", {gp, gp}, pn + "_grad_sq"), e.scalar("one_minus_beta2", 1 - o.beta2)},
                v + "_new")},
          v + "__updated");
      std::string denom =
          e.op("Add",
               {e.op("Div", {e.op("Sqrt", {v1}, v + "_sqrt"), adam.bc2Sqrt},
                     v + "_corrected"),
                e.scalar("eps", o.eps)},
               pn + "_denom");
      std::string updated = e.op(
          "Sub",
          {decayed, e.op("Mul", {e.op("Div", {m1, denom}, pn + "_ratio"), adam.stepSize}, pn + "_step")},
          pn + "__updated");
      record(p, pn, updated, "param");
      record(p, m, m1, "exp_avg");
      record(p, v, v1, "exp_avg_sq");
    }
  }

  // 5. The training graph, re-imported for its shapes, then partitioned.
  onnx::ModelProto m = g.model;
  onnx::GraphProto &gp = *m.mutable_graph();
  gp.clear_node();
  gp.clear_value_info();
  gp.clear_output();
  for (const auto &np : g.nodes)
    *gp.add_node() = np->proto;
  for (auto &n : e.nodes)
    *gp.add_node() = n;
  for (auto &t : e.constants)
    *gp.add_initializer() = t;
  for (auto &t : stateInits)
    *gp.add_initializer() = t;
  {
    onnx::ValueInfoProto labels;
    labels.set_name(info->labels);
    auto *tt = labels.mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::INT64);
    auto *shape = tt->mutable_shape();
    for (int64_t i = 0; i + 1 < logits->rank(); ++i) {
      auto *d = shape->add_dim();
      const Dim &ld = logits->shape[i];
      if (ld.known())
        d->set_dim_value(ld.size);
      else if (!ld.symbol.empty())
        d->set_dim_param(ld.symbol);
    }
    *gp.add_input() = labels;
    *gp.add_input() = scalarInput(info->lrInput, onnx::TensorProto::FLOAT);
    if (!info->stepInput.empty())
      *gp.add_input() = scalarInput(info->stepInput, onnx::TensorProto::FLOAT);
  }
  *gp.add_output() = scalarInput(info->loss, logits->elemType);
  *gp.add_output() = scalarInput(info->correct, logits->elemType);
  for (const auto &[name, p] : gradShapes) {
    onnx::ValueInfoProto *vi = gp.add_value_info();
    vi->set_name(name);
    auto *tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(p->elemType);
    auto *shape = tt->mutable_shape();
    for (int64_t d : p->constant->dims())
      shape->add_dim()->set_dim_value(d);
  }
  for (const TrainState &s : info->state) {
    onnx::ValueInfoProto vi;
    vi.set_name(s.update);
    auto *tt = vi.mutable_type()->mutable_tensor_type();
    tt->set_elem_type(g.lookup(s.param)->elemType);
    auto *shape = tt->mutable_shape();
    for (int64_t d : g.lookup(s.param)->constant->dims())
      shape->add_dim()->set_dim_value(d);
    *gp.add_output() = vi;
  }
  // Unused initializers (rewrites' leftovers) go.
  {
    llvm::StringSet<> used;
    for (const auto &n : gp.node())
      for (const auto &in : n.input())
        used.insert(in);
    auto *inits = gp.mutable_initializer();
    for (int i = inits->size() - 1; i >= 0; --i)
      if (!used.contains(inits->Get(i).name()))
        inits->DeleteSubrange(i, 1);
  }
  auto tg = reimport(m, g, "the training graph");
  if (!tg)
    return tg.takeError();
  trainGraph = std::move(*tg);
  Graph &t = *trainGraph;

  // The forward Linears keep their strategies (by node name); products the
  // backward made with a constant operand are not Linears of the plan.
  llvm::StringMap<const LinearInfo *> byName;
  for (const LinearInfo &li : linears)
    byName[li.node->label()] = &li;
  std::vector<LinearInfo> tlinears;
  for (LinearInfo &li : findLinears(t)) {
    auto it = byName.find(li.node->label());
    if (it == byName.end())
      continue;
    const LinearInfo &f = *it->second;
    li.strategy = f.strategy;
    li.pairedWith = f.pairedWith;
    li.fusedParts = f.fusedParts;
    li.keptWhole = f.keptWhole;
    li.whyNotPaired = f.whyNotPaired;
    tlinears.push_back(li);
  }
  PartitionOptions topts2 = popts;
  topts2.blockedConcat = true;
  for (const TrainState &st : info->state) {
    Placement pl = pinOf[st.param];
    topts2.constantPlacements[st.name] = pl;
    topts2.outputPlacements[st.update] = pl;
  }
  if (G > 1) {
    topts2.constantPlacements[classGroupIds] = Placement::S(0);
    if (!classMask.empty())
      topts2.constantPlacements[classMask] = Placement::S(0);
  }
  RewriteState tstate;
  std::vector<EmbeddingInfo> tembeddings = findEmbeddings(t, popts);
  for (EmbeddingInfo &em : tembeddings) {
    em.vocabParallel = vocabLookups.contains(em.node->label());
    if (auto it = paddedRows.find(em.node->inputs[0]->name); it != paddedRows.end())
      em.V = it->second; // the padded rows are already in the parameter
    if (em.vocabParallel) {
      info->vocabParallel.push_back(em.node->label());
      topts2.constantPlacements[em.node->inputs[0]->name] = Placement::S(0); // frozen too
    }
  }
  if (auto err = rewriteVocabParallel(t, tembeddings, tstate))
    return err;
  llvm::DenseMap<const Node *, NodePlacements> tplaced;
  if (auto err = propagatePlacements(t, tlinears, topts2, tstate, tplaced))
    return err;
  auto plan = lower(t, std::move(tlinears), std::move(tembeddings), tplaced, tstate, topts2);
  if (!plan)
    return plan.takeError();
  info->ties = ties;
  plan->training = info;
  return plan;
}

} // namespace qn
