//===- Lower.cpp - Redistributions and rank constants ---------------------===//
//
// Walks the nodes in order; wherever a node needs an input in a placement
// other than the one it has, inserts the redistribution of DESIGN.md's table
// (the only place collectives are born). One redistribution of a value serves
// every consumer that needs the same placement. Constants that a node needs
// sliced become sliced rank constants; graph outputs are made replicated.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Partition.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSwitch.h"

namespace qn {
namespace {


onnx::TensorProto int64Vector(const std::string &name, std::vector<int64_t> values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::INT64);
  t.add_dims(static_cast<int64_t>(values.size()));
  t.set_raw_data(std::string(reinterpret_cast<const char *>(values.data()),
                             values.size() * sizeof(int64_t)));
  return t;
}

struct Lowering {
  Graph &g;
  const PartitionOptions &opts;
  const RewriteState &state;
  Plan plan;
  llvm::StringMap<std::string> redistributed; // "value|placement" -> name
  llvm::StringMap<std::string> usedNames;
  // Constants: source name -> (placement string -> rank constant name).
  llvm::StringMap<llvm::StringMap<std::string>> constantNames;
  int counter = 0;

  std::string fresh(llvm::StringRef base) {
    std::string name = base.str();
    while (g.lookup(name) || usedNames.count(name))
      name = (base + "_" + llvm::Twine(++counter)).str();
    usedNames[name] = "";
    return name;
  }

  std::string constantName(const Value *v, Placement p) {
    auto &variants = constantNames[v->name];
    std::string key = p.str();
    if (auto it = variants.find(key); it != variants.end())
      return it->second;
    // The first variant keeps the source name; others get a suffix.
    std::string name = variants.empty()
                           ? v->name
                           : fresh(v->name + "__qn_" + (p.isShard() ? "shard" + std::to_string(p.axis) : std::string("full")));
    variants[key] = name;
    RankConstant rc;
    rc.name = name;
    rc.source = v->constant;
    rc.shardAxis = p.isShard() ? p.axis : -1;
    rc.blocks = p.isShard() ? p.blocks : 1;
    if (auto it = state.rankDependent.find(v->name); it != state.rankDependent.end())
      rc.generate = it->second;
    plan.constants.push_back(std::move(rc));
    return name;
  }

  PlannedNode collective(llvm::StringRef op, llvm::StringRef in, llvm::StringRef out, int axis,
                         Placement from, Placement to, const Value *v) {
    PlannedNode pn;
    pn.role = "collective";
    // Bytes per token of the whole (unsharded) tensor: the product of its
    // known dims; the symbolic ones (batch, sequence) count the tokens.
    double bytes = static_cast<double>(elemTypeSize(v->elemType));
    for (const Dim &d : v->shape)
      if (d.known())
        bytes *= static_cast<double>(d.size);
    CollectiveStats &st = plan.collectiveStats[op.str()];
    st.count += 1;
    st.bytesPerTokenPerRank += redistributionBytesPerRank(
        llvm::StringSwitch<Redistribution>(op)
            .Case("AllReduce", Redistribution::AllReduce)
            .Case("AllGather", Redistribution::AllGather)
            .Default(Redistribution::ReduceScatter),
        bytes, opts.tp);
    pn.proto.set_op_type(op.str());
    pn.proto.set_domain("ai.quintnet");
    pn.proto.set_name(("qn/" + op + "_" + llvm::Twine(plan.collectiveCounts[op.str()]++)).str());
    pn.proto.add_input(in.str());
    pn.proto.add_output(out.str());
    if (axis >= 0) {
      auto *a = pn.proto.add_attribute();
      a->set_name("axis");
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(axis);
    }
    pn.in.push_back(from);
    pn.out.push_back(to);
    return pn;
  }

  /// R -> S(d): a standard Slice with rank-dependent bounds.
  llvm::Expected<PlannedNode> localSlice(const Value *v, llvm::StringRef in, llvm::StringRef out,
                                         int axis, Placement from) {
    int64_t extent = v->dimSize(axis);
    if (extent <= 0)
      return fail("cannot slice '" + v->name + "' along axis " + llvm::Twine(axis) +
                  ": its size is not known at compile time");
    if (extent % opts.tp)
      return fail("cannot slice '" + v->name + "' along axis " + llvm::Twine(axis) +
                  ": size " + llvm::Twine(extent) + " is not divisible by --tp " +
                  llvm::Twine(opts.tp) + "; tp values that work: " + divisorsList(extent));
    std::string base = fresh(v->name + "__qn_slice");
    std::string starts = base + "_starts", ends = base + "_ends", axes = base + "_axes";
    usedNames[starts] = usedNames[ends] = usedNames[axes] = "";
    int64_t chunk = extent / opts.tp;
    plan.constants.push_back(
        {starts, nullptr, -1, 1, [starts, chunk](int rank, int) { return int64Vector(starts, {rank * chunk}); }});
    plan.constants.push_back({ends, nullptr, -1, 1, [ends, chunk](int rank, int) {
                                return int64Vector(ends, {(rank + 1) * chunk});
                              }});
    plan.constants.push_back(
        {axes, nullptr, -1, 1, [axes, axis](int, int) { return int64Vector(axes, {axis}); }});
    PlannedNode pn;
    pn.role = "local-slice";
    pn.proto.set_op_type("Slice");
    pn.proto.set_name(("qn/Slice_" + llvm::Twine(counter++)).str());
    for (const std::string &s : {in.str(), starts, ends, axes})
      pn.proto.add_input(s);
    pn.proto.add_output(out.str());
    pn.in = {from, Placement::R(), Placement::R(), Placement::R()};
    pn.out = {Placement::S(axis)};
    return pn;
  }

  /// Emits what moves `v` (available under `have`) from its placement to
  /// `to`, writing the result to `outName` (fresh when empty). Returns the
  /// name holding `v` in placement `to`.
  llvm::Expected<std::string> redistribute(const Value *v, llvm::StringRef have, Placement to,
                                           std::string outName, const Node *consumer) {
    Placement from = v->placement;
    std::string key = (v->name + "|" + to.str());
    if (outName.empty())
      if (auto it = redistributed.find(key); it != redistributed.end())
        return it->second;
    auto name = [&](llvm::StringRef suffix) {
      return outName.empty() ? fresh((v->name + "__qn_" + suffix).str()) : outName;
    };
    std::string result;
    if (from != to && from.isShard() && from.blocks != 1)
      return fail("internal: '" + (consumer ? consumer->label() : std::string("graph output")) +
                  "' needs the head-wise " + (from.isMerged() ? "merged" : "blocked") +
                  " value '" + v->name + "' (" + from.str() + ") as " + to.str());
    switch (redistribution(from, to)) {
    case Redistribution::None:
      return have.str();
    case Redistribution::AllReduce:
      result = name("allreduce");
      plan.nodes.push_back(collective("AllReduce", have, result, -1, from, to, v));
      break;
    case Redistribution::ReduceScatter:
      result = name("reducescatter");
      plan.nodes.push_back(collective("ReduceScatter", have, result, to.axis, from, to, v));
      break;
    case Redistribution::AllGather:
      result = name("allgather");
      plan.nodes.push_back(collective("AllGather", have, result, from.axis, from, to, v));
      break;
    case Redistribution::LocalSlice: {
      result = name("slice");
      auto pn = localSlice(v, have, result, to.axis, from);
      if (!pn)
        return pn.takeError();
      plan.nodes.push_back(std::move(*pn));
      break;
    }
    case Redistribution::GatherSlice: {
      std::string full = fresh(v->name + "__qn_allgather");
      plan.nodes.push_back(collective("AllGather", have, full, from.axis, from, Placement::R(), v));
      result = name("slice");
      auto pn = localSlice(v, full, result, to.axis, Placement::R());
      if (!pn)
        return pn.takeError();
      plan.nodes.push_back(std::move(*pn));
      break;
    }
    case Redistribution::Invalid:
      return fail("internal: '" + (consumer ? consumer->label() : std::string("graph output")) +
                  "' asks for a partial value of '" + v->name + "'");
    }
    redistributed[key] = result;
    return result;
  }

  llvm::Error run(const llvm::DenseMap<const Node *, NodePlacements> &placements,
                  const llvm::DenseMap<const Node *, const LinearInfo *> &linearOf) {
    // Graph outputs that are not replicated are produced under a local name
    // and redistributed into their own name at the end.
    llvm::StringMap<std::string> localName;
    // The placement each graph output has in the rank plans: as required,
    // else kept sharded (--keep-logits-sharded), else R.
    auto target = [&](const Value *v) {
      if (auto it = opts.outputPlacements.find(v->name); it != opts.outputPlacements.end())
        return it->second;
      if (opts.keepLogitsSharded && !v->constant && v->placement.isShard())
        return v->placement;
      return Placement::R();
    };
    for (const auto &[name, want] : opts.outputPlacements) {
      const Value *v = g.lookup(name);
      if (!v || !llvm::is_contained(g.outputs, v))
        return fail("a placement is required of '" + name + "', which is not a graph output");
      if (v->constant && !want.isReplicated())
        return fail("graph output '" + name + "' is a constant: it can only be R");
      if (want.isPartial() || want.isMerged())
        return fail("graph output '" + name + "': only R, S(d) or a blocked S(d)xk can be "
                    "required, not " + want.str());
      if (want.isShard()) {
        int64_t extent = v->hasShape && want.axis >= 0 && want.axis < v->rank()
                             ? v->dimSize(want.axis)
                             : -1;
        if (extent <= 0 || extent % (opts.tp * std::max(1, want.blocks)))
          return fail("graph output '" + name + "' cannot be " + want.str() + " over --tp " +
                      llvm::Twine(opts.tp) + ": its axis " + llvm::Twine(want.axis) +
                      (extent < 0 ? " has no static size" : " has size " + llvm::Twine(extent)));
      }
    }
    for (const Value *v : g.outputs) {
      plan.outputPlacements[v->name] = target(v);
      if (v->placement != target(v) && !v->constant)
        localName[v->name] = fresh(v->name + "__qn_local");
    }
    auto nameOf = [&](const Value *v) {
      auto it = localName.find(v->name);
      return it == localName.end() ? v->name : it->second;
    };
    for (const auto &np : g.nodes) {
      const Node *n = np.get();
      const NodePlacements &p = placements.find(n)->second;
      PlannedNode pn;
      pn.proto = n->proto;
      if (auto it = linearOf.find(n); it != linearOf.end())
        pn.role = strategyName(it->second->strategy);
      else if (auto r = state.roles.find(n); r != state.roles.end())
        pn.role = r->second;
      for (unsigned i = 0; i < n->inputs.size(); ++i) {
        const Value *v = n->inputs[i];
        Placement need = i < p.in.size() ? p.in[i] : Placement::R();
        pn.in.push_back(need);
        if (!v)
          continue;
        bool overridden = false;
        for (const auto &[idx, name] : p.constantOverrides)
          if (idx == i) {
            pn.proto.set_input(i, constantName(g.lookup(name), Placement::R()));
            overridden = true;
          }
        if (overridden)
          continue;
        if (auto pin = opts.constantPlacements.find(v->name);
            v->constant && pin != opts.constantPlacements.end()) {
          // A pinned constant (training's parameters and optimizer state):
          // one rank constant in its placement; a consumer that needs
          // another gets it redistributed, never a second copy that the
          // update would not write.
          std::string have = constantName(v, pin->second);
          if (need == pin->second) {
            pn.proto.set_input(i, have);
            continue;
          }
          auto name = redistribute(v, have, need, "", n);
          if (!name)
            return name.takeError();
          pn.proto.set_input(i, *name);
          continue;
        }
        if (v->constant) {
          if (need.isShard()) {
            int64_t extent = v->dimSize(need.axis);
            if (extent % opts.tp)
              return fail("'" + n->label() + "': cannot slice constant '" + v->name +
                          "' along axis " + llvm::Twine(need.axis) + " (size " +
                          llvm::Twine(extent) + ") into --tp " + llvm::Twine(opts.tp) +
                          " parts; tp values that work: " + divisorsList(extent));
          }
          pn.proto.set_input(i, constantName(v, need));
          continue;
        }
        auto name = redistribute(v, nameOf(v), need, "", n);
        if (!name)
          return name.takeError();
        pn.proto.set_input(i, *name);
      }
      for (unsigned i = 0; i < n->outputs.size(); ++i) {
        pn.out.push_back(p.out[i]);
        if (const Value *v = n->outputs[i])
          pn.proto.set_output(i, nameOf(v));
      }
      plan.nodes.push_back(std::move(pn));
    }
    for (const Value *v : g.outputs) {
      if (v->constant) {
        constantName(v, Placement::R());
        continue;
      }
      if (v->placement == target(v))
        continue;
      auto name = redistribute(v, nameOf(v), target(v), v->name, nullptr);
      if (!name)
        return name.takeError();
    }
    return llvm::Error::success();
  }
};

} // namespace

llvm::Expected<Plan> lower(Graph &g, std::vector<LinearInfo> linears,
                           std::vector<EmbeddingInfo> embeddings,
                           const llvm::DenseMap<const Node *, NodePlacements> &placements,
                           const RewriteState &state, const PartitionOptions &opts) {
  Lowering l{g, opts, state, {}, {}, {}, {}, 0};
  l.plan.tp = opts.tp;
  for (const char *op : {"AllReduce", "AllGather", "ReduceScatter"}) {
    l.plan.collectiveCounts[op] = 0;
    l.plan.collectiveStats[op] = CollectiveStats();
  }
  llvm::DenseMap<const Node *, const LinearInfo *> linearOf;
  for (const LinearInfo &li : linears)
    linearOf[li.node] = &li;
  if (auto err = l.run(placements, linearOf))
    return err;
  l.plan.linears = std::move(linears);
  l.plan.embeddings = std::move(embeddings);
  return std::move(l.plan);
}

llvm::Expected<Plan> partition(Graph &g, const PartitionOptions &opts) {
  if (opts.tp < 1)
    return fail("--tp must be at least 1 (got " + llvm::Twine(opts.tp) + ")");
  if (opts.tp > 1) {
    if (auto err = defuseUnequalProjections(g))
      return err;
    privatizeShapeProducts(g);
  }
  std::vector<PaddedLinear> padded = padUnevenHeads(g, opts);
  std::vector<LinearInfo> linears = findLinears(g);
  if (auto err = planStrategies(g, linears, opts))
    return err;
  if (auto err = splitRowGemmBias(g, linears))
    return err;
  RewriteState state;
  std::vector<EmbeddingInfo> embeddings = findEmbeddings(g, opts);
  // A tied LM head that reads a vocab-parallel table through a Transpose
  // node (the dynamo exporter's form; TorchScript writes a transposed copy,
  // a Linear of its own): the table is pinned S(0), so the Transpose gives
  // S(1), the head is column-parallel from the same shard, and the table is
  // held once per rank (as training does with every tie).
  PartitionOptions popts = opts;
  for (const EmbeddingInfo &em : embeddings) {
    const Value *table = em.node->inputs[0];
    if (!em.vocabParallel || em.paddedV != em.V || !table)
      continue;
    bool tiedHead = llvm::any_of(table->uses, [](const std::pair<Node *, unsigned> &u) {
      const Node *t = u.first;
      if (t->opType() != "Transpose" || !t->domain().empty() || !t->outputs[0])
        return false;
      return transposePerm(*t, 2) == std::vector<int64_t>{1, 0} &&
             llvm::any_of(t->outputs[0]->uses, [](const std::pair<Node *, unsigned> &v) {
               return v.second == 1 && (v.first->opType() == "MatMul" ||
                                        v.first->opType() == "Gemm");
             });
    });
    if (tiedHead)
      popts.constantPlacements[table->name] = Placement::S(0);
  }
  if (auto err = rewriteVocabParallel(g, embeddings, state))
    return err;
  llvm::DenseMap<const Node *, NodePlacements> placements;
  if (auto err = propagatePlacements(g, linears, popts, state, placements))
    return err;
  auto plan = lower(g, std::move(linears), std::move(embeddings), placements, state, popts);
  if (plan)
    plan->padded = std::move(padded);
  return plan;
}

} // namespace qn
