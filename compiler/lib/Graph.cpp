//===- Graph.cpp ----------------------------------------------------------===//
#include "qn/compiler/Graph.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace qn {

std::string Dim::str() const {
  if (known())
    return std::to_string(size);
  return symbol.empty() ? "?" : symbol;
}

int64_t Value::dimSize(int64_t i) const {
  if (!hasShape)
    return -1;
  if (i < 0)
    i += rank();
  if (i < 0 || i >= rank())
    return -1;
  return shape[i].size;
}

int64_t Value::numElements() const {
  if (!hasShape)
    return -1;
  int64_t n = 1;
  for (const Dim &d : shape) {
    if (!d.known())
      return -1;
    n *= d.size;
  }
  return n;
}

std::string Node::label() const {
  if (!proto.name().empty())
    return proto.name();
  std::string s = proto.op_type() + " producing ";
  s += proto.output_size() ? proto.output(0) : std::string("nothing");
  return s;
}

Value *Graph::lookup(llvm::StringRef name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : it->second.get();
}

Value *Graph::getOrCreate(llvm::StringRef name) {
  auto &slot = values_[name];
  if (!slot) {
    slot = std::make_unique<Value>();
    slot->name = name.str();
  }
  return slot.get();
}

std::string Graph::uniqueName(llvm::StringRef base) {
  std::string name = base.str();
  while (values_.count(name))
    name = (base + "_" + llvm::Twine(++uniqueCounter_)).str();
  return name;
}

Value *Graph::addConstant(onnx::TensorProto tensor) {
  Value *v = getOrCreate(tensor.name());
  onnx::TensorProto *t = model.mutable_graph()->add_initializer();
  *t = std::move(tensor);
  v->constant = t;
  v->elemType = t->data_type();
  v->hasShape = true;
  v->shape.clear();
  for (int64_t d : t->dims())
    v->shape.push_back(Dim{d, {}});
  return v;
}

Node *Graph::insertNode(size_t pos, onnx::NodeProto proto) {
  auto node = std::make_unique<Node>();
  node->proto = std::move(proto);
  for (const std::string &in : node->proto.input())
    node->inputs.push_back(in.empty() ? nullptr : getOrCreate(in));
  for (const std::string &out : node->proto.output()) {
    Value *v = out.empty() ? nullptr : getOrCreate(out);
    if (v)
      v->producer = node.get();
    node->outputs.push_back(v);
  }
  Node *raw = node.get();
  nodes.insert(nodes.begin() + pos, std::move(node));
  rebuildUses();
  return raw;
}

void Graph::rebuildUses() {
  for (auto &kv : values_)
    kv.second->uses.clear();
  for (auto &n : nodes) {
    // Keep the proto's input names in sync with the IR edges.
    for (unsigned i = 0; i < n->inputs.size(); ++i) {
      Value *v = n->inputs[i];
      n->proto.set_input(i, v ? v->name : std::string());
      if (v)
        v->uses.push_back({n.get(), i});
    }
    for (unsigned i = 0; i < n->outputs.size(); ++i)
      if (Value *v = n->outputs[i])
        v->producer = n.get();
  }
}

size_t Graph::indexOf(const Node *n) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].get() == n)
      return i;
  assert(false && "node not in graph");
  return nodes.size();
}

int64_t Graph::opsetVersion() const {
  for (const auto &op : model.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx")
      return op.version();
  return 1;
}

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

int64_t attrInt(const onnx::NodeProto &n, llvm::StringRef name, int64_t dflt) {
  for (const auto &a : n.attribute())
    if (a.name() == name)
      return a.i();
  return dflt;
}

float attrFloat(const onnx::NodeProto &n, llvm::StringRef name, float dflt) {
  for (const auto &a : n.attribute())
    if (a.name() == name)
      return a.f();
  return dflt;
}

std::vector<int64_t> attrInts(const onnx::NodeProto &n, llvm::StringRef name) {
  for (const auto &a : n.attribute())
    if (a.name() == name)
      return std::vector<int64_t>(a.ints().begin(), a.ints().end());
  return {};
}

std::vector<int64_t> transposePerm(const Node &n, int64_t rank) {
  std::vector<int64_t> perm = attrInts(n.proto, "perm");
  if (perm.empty())
    for (int64_t i = rank - 1; i >= 0; --i)
      perm.push_back(i);
  return perm;
}

std::pair<int64_t, int64_t> shapeRange(const Node &n, int64_t rank) {
  auto clampTo = [rank](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t(0), rank); };
  return {clampTo(attrInt(n.proto, "start", 0)), clampTo(attrInt(n.proto, "end", rank))};
}

bool constantInts(const Value *v, std::vector<int64_t> &out) {
  if (!v || !v->constant || v->constant->data_type() != onnx::TensorProto::INT64)
    return false;
  const std::string &raw = v->constant->raw_data();
  out.resize(raw.size() / sizeof(int64_t));
  if (!out.empty())
    std::memcpy(out.data(), raw.data(), out.size() * sizeof(int64_t));
  return true;
}

bool constantScalar(const Value *v, int64_t &out) {
  std::vector<int64_t> values;
  if (!constantInts(v, values) || values.size() != 1)
    return false;
  out = values[0];
  return true;
}

bool nodeAxes(const Node &n, unsigned input, std::vector<int64_t> &out) {
  for (const auto &a : n.proto.attribute())
    if (a.name() == "axes") {
      out.assign(a.ints().begin(), a.ints().end());
      return true;
    }
  return constantInts(n.input(input), out);
}

std::string elemTypeName(int32_t t) {
  switch (t) {
  case onnx::TensorProto::FLOAT: return "float";
  case onnx::TensorProto::FLOAT16: return "float16";
  case onnx::TensorProto::BFLOAT16: return "bfloat16";
  case onnx::TensorProto::DOUBLE: return "double";
  case onnx::TensorProto::INT64: return "int64";
  case onnx::TensorProto::INT32: return "int32";
  case onnx::TensorProto::INT8: return "int8";
  case onnx::TensorProto::UINT8: return "uint8";
  case onnx::TensorProto::BOOL: return "bool";
  default: return "type" + std::to_string(t);
  }
}

size_t elemTypeSize(int32_t t) {
  switch (t) {
  case onnx::TensorProto::FLOAT: case onnx::TensorProto::INT32: return 4;
  case onnx::TensorProto::FLOAT16: case onnx::TensorProto::BFLOAT16: return 2;
  case onnx::TensorProto::DOUBLE: case onnx::TensorProto::INT64: return 8;
  case onnx::TensorProto::INT8: case onnx::TensorProto::UINT8: case onnx::TensorProto::BOOL: return 1;
  default: return 0;
  }
}

int64_t tensorNumElements(const onnx::TensorProto &t) {
  int64_t n = 1;
  for (int64_t d : t.dims())
    n *= d;
  return n;
}

onnx::NodeProto makeNodeProto(llvm::StringRef op, llvm::StringRef name,
                              llvm::ArrayRef<std::string> inputs, llvm::StringRef output) {
  onnx::NodeProto n;
  n.set_op_type(op.str());
  n.set_name(name.str());
  for (const std::string &i : inputs)
    n.add_input(i);
  n.add_output(output.str());
  return n;
}

onnx::TensorProto int64Tensor(const std::string &name, llvm::ArrayRef<int64_t> values,
                              bool scalar) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::INT64);
  if (!scalar)
    t.add_dims(static_cast<int64_t>(values.size()));
  t.set_raw_data(std::string(reinterpret_cast<const char *>(values.data()),
                             values.size() * sizeof(int64_t)));
  return t;
}

onnx::TensorProto intScalar(const std::string &name, int32_t type, int64_t value) {
  if (type != onnx::TensorProto::INT32)
    return int64Tensor(name, {value}, /*scalar=*/true);
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(type);
  int32_t v = static_cast<int32_t>(value);
  t.set_raw_data(std::string(reinterpret_cast<const char *>(&v), 4));
  return t;
}

} // namespace qn
