//===- GradRules.h - The gradient-rule registry ------------------*- C++ -*-===//
//
// Training (DESIGN.md, "backward is propagation too") puts two passes in
// front of placement: autodiff over the unsharded graph, then the
// optimizer. Autodiff asks one gradient rule per op for the nodes that
// compute the gradients of a node's inputs from the gradients of its
// outputs, as the sharding rules (rules/) are asked for placements: same
// shape of registry, keyed by op name, one file per op family under grad/,
// rules that return what to add as data and change nothing themselves.
// Empty until training lands: an op without a rule cannot be differentiated
// and autodiff will say so naming the node.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <string>
#include <vector>

#include "qn/compiler/Graph.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

namespace qn::grad {

/// What a gradient rule may read: the forward node, and the names of the
/// gradients of its outputs ("" where an output has none).
struct GradContext {
  const Graph &g;
  llvm::ArrayRef<std::string> outputGrads;
};

/// What a rule returns: the nodes to add (ONNX NodeProtos over forward
/// values, the output gradients and fresh names) and, per input, the name
/// of its gradient ("" for an input with none: ids, shapes).
struct GradResult {
  std::vector<onnx::NodeProto> nodes;
  std::vector<std::string> inputGrads;
};

using GradRule = llvm::Error (*)(const GradContext &, const Node &, GradResult &);

class GradRuleRegistry {
public:
  struct Entry {
    GradRule rule;
    std::string family;
  };
  void add(llvm::StringRef op, GradRule rule, llvm::StringRef family);
  const Entry *lookup(llvm::StringRef op) const;
  std::vector<std::string> ops() const;

private:
  llvm::StringMap<Entry> rules_;
};

/// The registry, built on first use (no families yet).
const GradRuleRegistry &gradRules();

} // namespace qn::grad
