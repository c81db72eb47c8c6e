//===- Registry.cpp - The sharding-rule registry --------------------------===//
#include "Rules.h"

#include <algorithm>
#include <cassert>

namespace qn::rules {

void RuleRegistry::add(llvm::StringRef op, ShardingRule rule, llvm::StringRef family) {
  bool inserted = rules_.try_emplace(op, Entry{rule, family.str()}).second;
  assert(inserted && "two sharding rules for one op");
  (void)inserted;
}

void RuleRegistry::addKind(ops::OpKind kind, ShardingRule rule, llvm::StringRef family) {
  // An op that only some devices run (the CPU-only reductions) gets no
  // rule: it reads its inputs whole, so a plan with it stays valid on any
  // device that has it, and never shards it where a device lacks it.
  for (const ops::OpInfo &op : ops::kOps)
    if (op.domain == ops::OD_Onnx && op.kind == kind && op.runsOn(ops::OV_Cpu) &&
        op.runsOn(ops::OV_Cuda))
      add(op.name, rule, family);
}

const RuleRegistry::Entry *RuleRegistry::lookup(llvm::StringRef op) const {
  auto it = rules_.find(op);
  return it == rules_.end() ? nullptr : &it->second;
}

std::vector<std::string> RuleRegistry::ops() const {
  std::vector<std::string> out;
  for (const auto &e : rules_)
    out.push_back(e.getKey().str());
  std::sort(out.begin(), out.end());
  return out;
}

const RuleRegistry &shardingRules() {
  static const RuleRegistry registry = [] {
    RuleRegistry r;
    registerElementwiseRules(r);
    registerMatMulRules(r);
    registerReshapeRules(r);
    registerShapeOpRules(r);
    registerSoftmaxNormRules(r);
    registerReductionRules(r);
    registerGatherRules(r);
    return r;
  }();
  return registry;
}

void allReplicated(const Node &n, RuleResult &r) {
  r.placements.in.assign(n.inputs.size(), Placement::R());
  r.placements.out.assign(n.outputs.size(), Placement::R());
}

llvm::Error replicatedRule(const RuleContext &, const Node &n, RuleResult &r) {
  allReplicated(n, r);
  return llvm::Error::success();
}

} // namespace qn::rules
