//===- GradRules.h - The gradient-rule registry ------------------*- C++ -*-===//
//
// Training (docs/ARCHITECTURE.md, "Training") puts autodiff in front of
// placement: Train.cpp walks the unsharded forward graph backwards and asks
// one gradient rule per op for the nodes that compute the gradients of a
// node's inputs from the gradients of its outputs, as the sharding rules
// (rules/) are asked for placements: same shape of registry, keyed by op
// name, one file per op family under grad/. Rules emit standard ONNX nodes
// through the Emitter and change nothing else. Broadcasting is undone once,
// by the engine: a rule that gives an input's gradient in the output's
// shape says so (GradResult::unbroadcast) and Train.cpp reduces it. An op
// without a rule cannot be differentiated; autodiff says so naming the node.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <string>
#include <vector>

#include "qn/compiler/Graph.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

namespace qn::grad {

/// Builds the nodes and constants of the backward graph. Names are reserved
/// in the forward graph so they never clash with its values.
class Emitter {
public:
  Emitter(Graph &g, std::string prefix) : g_(g), prefix_(std::move(prefix)) {}
  int64_t opset() const { return g_.opsetVersion(); }
  /// A fresh value name from `base`.
  std::string fresh(llvm::StringRef base);
  /// Node `op` over `inputs` with `attrs`; returns its (first) output, a
  /// fresh name from `outBase`.
  std::string op(llvm::StringRef op, llvm::ArrayRef<std::string> inputs,
                 llvm::StringRef outBase, std::vector<onnx::AttributeProto> attrs = {});
  /// Constants: an int64 vector, a 0-d float of the element type `type`.
  std::string ints(llvm::StringRef base, llvm::ArrayRef<int64_t> values);
  /// A 0-d constant of element type `type` (0: the current type, below).
  std::string scalar(llvm::StringRef base, double value, int32_t type = 0);
  /// The element type of the values being differentiated (float or double):
  /// the type of scalar() constants and casts of masks.
  void setType(int32_t type) { type_ = type; }
  int32_t type() const { return type_; }
  /// Adds a ready-made constant (its name is made fresh); returns the name.
  std::string constant(onnx::TensorProto t);
  /// A tensor of element type `type` (0: the current type; float or double)
  /// with `dims` holding `values`, not yet added.
  onnx::TensorProto typed(llvm::StringRef name, llvm::ArrayRef<int64_t> dims,
                          llvm::ArrayRef<double> values, int32_t type = 0) const;

  // The opset-dependent forms.
  std::string reduceSum(const std::string &x, llvm::ArrayRef<int64_t> axes, bool keepdims,
                        llvm::StringRef base);
  std::string reduceMean(const std::string &x, llvm::ArrayRef<int64_t> axes, bool keepdims,
                         llvm::StringRef base);
  /// ReduceMean, ReduceMax, ...: axes an attribute before opset 18.
  std::string reduce(llvm::StringRef op, const std::string &x, llvm::ArrayRef<int64_t> axes,
                     bool keepdims, llvm::StringRef base);
  std::string unsqueeze(const std::string &x, llvm::ArrayRef<int64_t> axes, llvm::StringRef base);
  std::string squeeze(const std::string &x, llvm::ArrayRef<int64_t> axes, llvm::StringRef base);
  std::string transpose(const std::string &x, llvm::ArrayRef<int64_t> perm, llvm::StringRef base);
  /// The node under differentiation's name prefixes the nodes emitted for it.
  void setScope(llvm::StringRef scope) { scope_ = scope.str(); }

  std::vector<onnx::NodeProto> nodes;
  std::vector<onnx::TensorProto> constants;

private:
  Graph &g_;
  std::string prefix_, scope_;
  unsigned counter_ = 0;
  int32_t type_ = onnx::TensorProto::FLOAT;
};

onnx::AttributeProto iattr(llvm::StringRef name, int64_t v);
onnx::AttributeProto iattrs(llvm::StringRef name, llvm::ArrayRef<int64_t> v);
onnx::AttributeProto fattr(llvm::StringRef name, float v);
onnx::AttributeProto sattr(llvm::StringRef name, llvm::StringRef v);

/// What a gradient rule may read: the forward graph, the gradients of the
/// node's outputs ("" where an output has none) and which inputs need one.
struct GradContext {
  const Graph &g;
  llvm::ArrayRef<std::string> outputGrads;
  llvm::ArrayRef<bool> wants; // per input
  Emitter &e;
  bool want(unsigned i) const { return i < wants.size() && wants[i]; }
};

/// What a rule returns: per input, the name of its gradient ("" for none),
/// and whether it is given in the shape of output 0 (broadcast: the engine
/// sums it down to the input's shape).
struct GradResult {
  std::vector<std::string> inputGrads;
  std::vector<bool> unbroadcast;
  void set(unsigned i, std::string grad, bool broadcast = false) {
    if (inputGrads.size() <= i) {
      inputGrads.resize(i + 1);
      unbroadcast.resize(i + 1);
    }
    inputGrads[i] = std::move(grad);
    unbroadcast[i] = broadcast;
  }
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

/// The registry, built on first use.
const GradRuleRegistry &gradRules();

// One per file under grad/.
void registerLinearGradRules(GradRuleRegistry &r);
void registerElementwiseGradRules(GradRuleRegistry &r);
void registerShapeGradRules(GradRuleRegistry &r);
void registerNormGradRules(GradRuleRegistry &r);
void registerIndexGradRules(GradRuleRegistry &r);
void registerConvGradRules(GradRuleRegistry &r);

/// `axis` counted from the front of a rank-`rank` tensor.
inline int64_t normAxis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

} // namespace qn::grad
