//===- Reduction.cpp - Sharding rules of reductions -----------------------===//
//
// Reductions (every OK_Reduce op of the table) need their input whole for
// now. (A reduction over other axes could keep the shard, and a ReduceSum
// over the sharded axis could give P: left for the rules that need them.)
//
//===----------------------------------------------------------------------===//
#include "Rules.h"

namespace qn::rules {

void registerReductionRules(RuleRegistry &r) {
  r.addKind(ops::OK_Reduce, replicatedRule, "reduction");
}

} // namespace qn::rules
