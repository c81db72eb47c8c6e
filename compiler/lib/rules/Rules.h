//===- Rules.h - The sharding-rule registry ----------------------*- C++ -*-===//
//
// One rule per op family, one file each (rules/<Family>.cpp), registered by
// op name. A rule is a function from the placements of a node's inputs (and
// of the values its shape chains read) to:
//   - the placement the node needs of each input (a constant that needs
//     S(d) is sliced; any other mismatch becomes a redistribution, Lower.cpp),
//   - the placement of each output,
//   - constant rewrites, returned as data (a Reshape target whose sharded
//     entry becomes the local size); the propagation pass names and adds them.
// Rules neither change the graph nor know about the planner's dry runs:
// Propagate.cpp walks the graph, applies what they return and, in a dry run,
// observes them. Ops without a rule need every input replicated.
//
// Which ops a family covers comes from the op table (qn/ops/Ops.def) where
// it follows from the op's kind (every OK_Unary op gets the unary rule);
// the rest register by name.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <string>

#include "qn/compiler/Partition.h"
#include "qn/ops/OpTable.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

namespace qn::rules {

/// A constant input replaced by a rule.
struct ConstantRewrite {
  const Node *node = nullptr; // whose input is replaced: the rule's node, or
                              // the Concat that builds its target shape
  unsigned input = 0;
  onnx::TensorProto tensor;   // the new contents (named by the pass)
  std::string source;         // the constant it replaces (the new name's stem)
};

/// What a rule returns.
struct RuleResult {
  /// in/out (constantOverrides are filled by the pass from `rewrites`).
  NodePlacements placements;
  llvm::SmallVector<ConstantRewrite, 1> rewrites;
  /// Linear rule in a dry run: this undecided Linear was taken as the
  /// group's row partner.
  bool tentativeRow = false;
  /// A Reshape/Expand would use a local size read at run time from a
  /// sharded tensor without keeping its shard (a wrong plan).
  std::string localReadProblem;
};

/// The placement of v in `placements` (constants, omitted inputs and values
/// not placed yet, such as graph inputs: R).
inline Placement placementIn(const llvm::DenseMap<const Value *, Placement> &placements,
                             const Value *v) {
  if (!v)
    return Placement::R();
  // Constants are R unless pinned (PartitionOptions::constantPlacements).
  auto it = placements.find(v);
  return it == placements.end() ? Placement::R() : it->second;
}

/// What a rule may read besides the node.
struct RuleContext {
  const Graph &g;
  int tp = 1;
  int64_t opset = 17;
  /// The node's Linear (MatMul/Gemm with a constant weight), else null.
  const LinearInfo *linear = nullptr;
  /// A planner's dry run (the group taken as column-parallel), else null.
  const DryRun *dry = nullptr;

  /// The placements given so far (graph inputs and constants are R).
  const llvm::DenseMap<const Value *, Placement> &placements;
  /// PartitionOptions::blockedConcat.
  bool blockedConcat = false;

  /// The placement of v so far (constants and omitted inputs: R).
  Placement of(const Value *v) const { return placementIn(placements, v); }
};

using ShardingRule = llvm::Error (*)(const RuleContext &, const Node &, RuleResult &);

class RuleRegistry {
public:
  struct Entry {
    ShardingRule rule;
    std::string family; // "elementwise", "matmul", ... (the file it lives in)
  };
  /// Registers `rule` for `op` (ONNX domain); a second rule for an op is an
  /// internal error (asserted).
  void add(llvm::StringRef op, ShardingRule rule, llvm::StringRef family);
  /// Registers `rule` for every op of the table of kind `kind`.
  void addKind(ops::OpKind kind, ShardingRule rule, llvm::StringRef family);
  const Entry *lookup(llvm::StringRef op) const;
  std::vector<std::string> ops() const;

private:
  llvm::StringMap<Entry> rules_;
};

/// The registry, built on first use from the families below.
const RuleRegistry &shardingRules();

void registerElementwiseRules(RuleRegistry &r); // rules/Elementwise.cpp
void registerMatMulRules(RuleRegistry &r);      // rules/MatMul.cpp
void registerReshapeRules(RuleRegistry &r);     // rules/Reshape.cpp
void registerShapeOpRules(RuleRegistry &r);     // rules/ShapeOps.cpp
void registerSoftmaxNormRules(RuleRegistry &r); // rules/SoftmaxNorm.cpp
void registerReductionRules(RuleRegistry &r);   // rules/Reduction.cpp
void registerGatherRules(RuleRegistry &r);      // rules/Gather.cpp

// --- helpers shared by the families -------------------------------------------

/// Every input and output replicated (the default).
void allReplicated(const Node &n, RuleResult &r);
/// A rule that needs every input whole.
llvm::Error replicatedRule(const RuleContext &, const Node &n, RuleResult &r);

/// The target shape `shape` of a Reshape or Expand (input `index` of node
/// `n`) holds, at `axis`, the global size of a sharded axis: asks for that
/// entry to become the local size (a rewrite of the constant, or of the
/// constant piece of the Concat that builds the target at run time).
/// `zeroIsWrong`: a 0 ("copy the input's dim") there would copy an unsharded
/// dim. False if the entry cannot be localised.
bool localizeShapeEntry(const RuleContext &ctx, const Node &n, const Value *shape, int64_t axis,
                        bool zeroIsWrong, unsigned index, RuleResult &r);
/// Whether the entry `piece` of a target is a run-time read of a sharded
/// axis (which then holds the local size).
bool readsShardedAxis(const RuleContext &ctx, const Value *piece);
/// Whether the entry `piece` reads, at run time, the local size of a
/// merged (batch*heads) axis of n heads: batch * heads from a tensor
/// sharded on its heads axis, or the axis of a tensor placed S(d)/n.
bool readsMergedSize(const RuleContext &ctx, const Value *piece, int64_t n);
/// Expand(x, Shape(t)) with t sharded on axis d and x (read replicated) of
/// size 1 on the aligned axis (a mask broadcast over heads, DistilBERT's
/// `mask.view(bs, 1, 1, k).expand_as(scores)`): every rank reads t's local
/// shape at run time, so the output is t's local slice, sharded on the
/// output's aligned axis. Returns that axis, or -1.
int expandOfShardedShape(const RuleContext &ctx, const Node &expand);

} // namespace qn::rules
