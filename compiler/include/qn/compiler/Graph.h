//===- Graph.h - QuintNet's graph IR over an ONNX model ---------*- C++ -*-===//
//
// The IR keeps the ONNX NodeProto of each node (attributes stay in ONNX's own
// representation) and adds what the passes need: values with element type,
// (symbolic) shape, producer, uses, constant data and placement, all held in
// LLVM ADT containers.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "qn/compiler/Placement.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"
#include <onnx/onnx_pb.h>

namespace qn {

struct Node;

/// One dimension: a known size, or a symbol ("batch"), or unknown.
struct Dim {
  int64_t size = -1;  // >= 0 when known
  std::string symbol; // dim_param when size is unknown
  bool known() const { return size >= 0; }
  std::string str() const;
};

struct Value {
  std::string name;
  int32_t elemType = 0; // onnx::TensorProto::DataType
  bool hasShape = false;
  llvm::SmallVector<Dim, 4> shape;
  Node *producer = nullptr;
  llvm::SmallVector<std::pair<Node *, unsigned>, 2> uses; // (node, input index)
  /// Constant data (an initializer or a folded Constant node), else null.
  const onnx::TensorProto *constant = nullptr;
  bool isGraphInput = false;
  bool isGraphOutput = false;
  Placement placement;

  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  /// Size of axis `i` (negative counts from the end), -1 if unknown.
  int64_t dimSize(int64_t i) const;
  /// Number of elements, -1 if any dim is unknown.
  int64_t numElements() const;
};

struct Node {
  onnx::NodeProto proto;
  llvm::SmallVector<Value *, 4> inputs;  // null for an omitted optional input
  llvm::SmallVector<Value *, 2> outputs; // null for an omitted optional output

  const std::string &opType() const { return proto.op_type(); }
  const std::string &domain() const { return proto.domain(); }
  /// The node's name, or "<OpType> #k" when it has none (for messages).
  std::string label() const;
  Value *input(unsigned i) const { return i < inputs.size() ? inputs[i] : nullptr; }
};

/// A model: the ONNX ModelProto it came from plus the IR of its main graph.
class Graph {
public:
  /// The imported model. Initializers hold their data inline (external data
  /// was read at import); nodes in `nodes` own their own NodeProto copies.
  onnx::ModelProto model;
  std::string sourcePath;
  std::string sourceSha256;
  /// Bytes of the imported model's initializers (before any rewrite adds one).
  int64_t sourceParamBytes = 0;
  /// Names of the source model's initializers (not the folded Constant
  /// nodes): the candidates for training's parameters.
  std::vector<std::string> sourceInitializers;

  std::vector<std::unique_ptr<Node>> nodes; // topological order
  std::vector<Value *> inputs;              // non-constant graph inputs
  std::vector<Value *> outputs;
  /// The MatMuls that defuseUnequalProjections (Defuse.cpp) made of one
  /// fused projection's parts.
  std::vector<const Node *> projectionParts;

  Value *lookup(llvm::StringRef name) const;
  Value *getOrCreate(llvm::StringRef name);
  /// A fresh value name based on `base` that no value uses yet.
  std::string uniqueName(llvm::StringRef base);
  /// Adds an initializer to `model` and a constant value for it.
  Value *addConstant(onnx::TensorProto tensor);
  /// Inserts `node` before position `pos` in `nodes` and wires its values.
  Node *insertNode(size_t pos, onnx::NodeProto proto);
  /// Rebuilds the uses of every value from the nodes (after rewrites).
  void rebuildUses();
  size_t indexOf(const Node *n) const;
  /// Opset version of the ONNX domain.
  int64_t opsetVersion() const;

private:
  llvm::StringMap<std::unique_ptr<Value>> values_;
  unsigned uniqueCounter_ = 0;
};

/// An llvm::Error carrying `msg` (the compiler's one way to make one).
llvm::Error fail(const llvm::Twine &msg);
/// Attribute `name` of `n`, or `dflt` when absent.
int64_t attrInt(const onnx::NodeProto &n, llvm::StringRef name, int64_t dflt);
float attrFloat(const onnx::NodeProto &n, llvm::StringRef name, float dflt);
/// An int-list attribute `name` of `n`, empty when absent.
std::vector<int64_t> attrInts(const onnx::NodeProto &n, llvm::StringRef name);
/// A Transpose's permutation of a rank-`rank` input: its `perm`, or the
/// reversal ONNX defaults to.
std::vector<int64_t> transposePerm(const Node &n, int64_t rank);
/// The dims [start, end) of its rank-`rank` input that a Shape node reads:
/// its `start`/`end` (opset 15+; negative ones count from the back,
/// clamped to [0, rank] as ONNX does), or all of them.
std::pair<int64_t, int64_t> shapeRange(const Node &n, int64_t rank);

/// The values of an int64 constant; false if `v` is not one.
bool constantInts(const Value *v, std::vector<int64_t> &out);
/// The value of a one-element int64 constant.
bool constantScalar(const Value *v, int64_t &out);
/// A node's axes: its `axes` attribute, else its constant input `input`
/// (the form opset 13 moved them to). False if it has neither.
bool nodeAxes(const Node &n, unsigned input, std::vector<int64_t> &out);

/// Element type name ("float", "int64", ...).
std::string elemTypeName(int32_t t);
/// Bytes per element of an ONNX data type, 0 if unknown.
size_t elemTypeSize(int32_t t);
/// Number of elements of a TensorProto from its dims.
int64_t tensorNumElements(const onnx::TensorProto &t);

/// A node `op` named `name` reading `inputs` and writing `output` (the
/// graph rewrites' nodes: Embedding, Defuse, Pad, Linear).
onnx::NodeProto makeNodeProto(llvm::StringRef op, llvm::StringRef name,
                              llvm::ArrayRef<std::string> inputs, llvm::StringRef output);
/// An int64 constant named `name`: a vector of `values`, or with `scalar`
/// a 0-d tensor of the one value.
onnx::TensorProto int64Tensor(const std::string &name, llvm::ArrayRef<int64_t> values,
                              bool scalar = false);
/// A 0-d int32 or int64 constant (`type`) named `name` holding `value`.
onnx::TensorProto intScalar(const std::string &name, int32_t type, int64_t value);

} // namespace qn
