//===- Propagate.cpp - Placements through the graph ------------------------===//
//
// Walks the nodes in order and asks each node's sharding rule (rules/, the
// registry keyed by op name) for the placement it needs of each input and
// the placements of its outputs. What a rule returns as data is applied
// here: constant rewrites become new constants named <source>__qn_local
// and overrides of the node's (or its target Concat's) input. Ops without a
// rule, ops of other domains and nodes without a first input need every
// input replicated. Nodes a rewrite created (the vocab-parallel lookup)
// carry fixed placements.
//
// The pass keeps placements in its own map and writes them to the values
// (Value::placement) only in a real run: a planner's dry run (DryRun) changes
// nothing in the graph. It observes the rules: the
// values derived from the group under test are tainted up to its tentative
// row partners, and a tainted sharded value that a node needs otherwise, a
// local size read without its shard, or a tainted graph output left sharded
// is the run's violation.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Partition.h"

#include "rules/Rules.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"

namespace qn {

llvm::Error propagatePlacements(Graph &g, const std::vector<LinearInfo> &linears,
                                const PartitionOptions &opts, const RewriteState &state,
                                llvm::DenseMap<const Node *, NodePlacements> &out, DryRun *dry) {
  const rules::RuleRegistry &registry = rules::shardingRules();
  llvm::DenseMap<const Node *, const LinearInfo *> linearOf;
  for (const LinearInfo &li : linears)
    linearOf[li.node] = &li;
  // Placements of node outputs so far (graph inputs and constants are R).
  llvm::DenseMap<const Value *, Placement> placed;
  // What the rules see: `placed`, except that a partial value which some
  // consumer needs whole anyway is shown whole to all of its consumers (a
  // ReduceSum of it would otherwise stay partial and need an AllReduce of
  // its own: training's LayerNorm bias gradient beside the input gradient).
  llvm::DenseMap<const Value *, Placement> seen;
  llvm::DenseSet<const Value *> reducedAnyway;
  auto of = [&](const Value *v) { return rules::placementIn(placed, v); };
  // In a dry run: the values derived from the group, up to its row partners.
  llvm::DenseSet<const Value *> tainted;
  // A real run walks twice: the first walk finds reducedAnyway and makes no
  // rewrites.
  auto walk = [&](bool final) -> llvm::Error {
  placed.clear();
  seen.clear();
  tainted.clear();
  out.clear();
  for (const auto &[name, pin] : opts.constantPlacements)
    if (const Value *v = g.lookup(name); v && v->constant)
      placed[v] = seen[v] = pin;
  for (auto &np : g.nodes) {
    const Node *n = np.get();
    rules::RuleResult result;
    if (auto it = state.fixed.find(n); it != state.fixed.end()) {
      result.placements = it->second;
    } else {
      rules::RuleContext ctx{g, opts.tp, g.opsetVersion(), nullptr, dry, seen,
                             opts.blockedConcat};
      if (auto it = linearOf.find(n); it != linearOf.end())
        ctx.linear = it->second;
      const rules::RuleRegistry::Entry *rule = nullptr;
      if (ctx.linear || (n->domain().empty() && !n->inputs.empty() && n->inputs[0]))
        rule = registry.lookup(n->opType());
      if (!rule)
        rules::allReplicated(*n, result);
      else if (auto err = rule->rule(ctx, *n, result))
        return err;
    }
    NodePlacements &p = result.placements;
    // A dry run only observes: its rewrites are not made.
    for (rules::ConstantRewrite &rw : result.rewrites) {
      if (dry || !final)
        break;
      std::string name = g.uniqueName(rw.source + "__qn_local");
      rw.tensor.set_name(name);
      g.addConstant(std::move(rw.tensor));
      (rw.node == n ? p : out[rw.node]).constantOverrides.push_back({rw.input, name});
    }
    if (dry && result.tentativeRow)
      dry->rows.push_back(n);
    if (!result.localReadProblem.empty()) {
      if (!dry)
        return fail("internal: " + result.localReadProblem);
      if (dry->violation.empty())
        dry->violation = result.localReadProblem;
      if (dry->localRead.empty())
        dry->localRead = result.localReadProblem;
    }
    if (dry && dry->ungatherable.empty())
      for (unsigned i = 0; i < np->inputs.size() && i < p.in.size(); ++i) {
        const Value *v = np->inputs[i];
        Placement have = of(v);
        if (v && !v->constant && have.isShard() && have.blocks != 1 && p.in[i] != have)
          dry->ungatherable = "'" + n->label() + "' (" + n->opType() + ") needs '" + v->name +
                              "' as " + p.in[i].str() + " but it is " + have.str();
      }
    if (dry && dry->violation.empty()) {
      bool isRow = result.tentativeRow;
      bool touched = llvm::is_contained(dry->group, n);
      for (unsigned i = 0; i < np->inputs.size(); ++i) {
        const Value *v = np->inputs[i];
        if (!v || v->constant || !tainted.count(v))
          continue;
        touched = true;
        Placement have = of(v);
        if (have.isShard() && i < p.in.size() && p.in[i] != have)
          dry->violation = "'" + n->label() + "' (" + n->opType() + ") needs '" + v->name +
                           "' as " + p.in[i].str() + " but it is " + have.str();
      }
      if (touched && !isRow)
        for (const Value *v : np->outputs)
          if (v)
            tainted.insert(v);
    }
    for (unsigned i = 0; i < np->outputs.size(); ++i)
      if (const Value *v = np->outputs[i]) {
        placed[v] = p.out[i];
        seen[v] = reducedAnyway.count(v) ? Placement::R() : p.out[i];
      }
    out[n] = std::move(p);
  }
  return llvm::Error::success();
  };
  if (!dry) {
    if (auto err = walk(false))
      return err;
    for (auto &np : g.nodes) {
      const NodePlacements &p = out[np.get()];
      for (unsigned i = 0; i < np->inputs.size() && i < p.in.size(); ++i)
        if (const Value *v = np->inputs[i]; v && of(v).isPartial() && p.in[i].isReplicated())
          reducedAnyway.insert(v);
    }
  }
  if (auto err = walk(true))
    return err;
  if (dry) {
    for (const Value *v : g.outputs)
      if (dry->ungatherable.empty() && of(v).isShard() && of(v).blocks != 1)
        dry->ungatherable = "graph output '" + v->name + "' would be " + of(v).str();
    if (dry->violation.empty())
      for (const Value *v : g.outputs)
        if (tainted.count(v) && of(v).isShard())
          dry->violation = "graph output '" + v->name + "' would be " + of(v).str();
    return llvm::Error::success();
  }
  // The real run: every value carries its placement for the later passes.
  for (Value *v : g.inputs)
    v->placement = Placement::R();
  for (auto &np : g.nodes) {
    for (Value *v : np->inputs)
      if (v && v->constant)
        v->placement = of(v); // R unless pinned
    for (Value *v : np->outputs)
      if (v)
        v->placement = of(v);
  }
  return llvm::Error::success();
}

} // namespace qn
