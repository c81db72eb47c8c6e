//===- Gather.cpp - Sharding rules of Gather ------------------------------===//
//
// A vocab-parallel embedding (Embedding.cpp) is rewritten before
// propagation and its nodes carry fixed placements (RewriteState::fixed):
// the Gather on the sliced table gives P. Any other Gather needs its inputs
// whole.
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

namespace qn::rules {

void registerGatherRules(RuleRegistry &r) { r.add("Gather", replicatedRule, "gather"); }

} // namespace qn::rules
