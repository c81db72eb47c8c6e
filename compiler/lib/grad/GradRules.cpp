//===- GradRules.cpp - The gradient-rule registry and the emitter ---------===//
#include "GradRules.h"

#include <algorithm>
#include <cassert>

namespace qn::grad {

void GradRuleRegistry::add(llvm::StringRef op, GradRule rule, llvm::StringRef family) {
  bool inserted = rules_.try_emplace(op, Entry{rule, family.str()}).second;
  assert(inserted && "two gradient rules for one op");
  (void)inserted;
}

const GradRuleRegistry::Entry *GradRuleRegistry::lookup(llvm::StringRef op) const {
  auto it = rules_.find(op);
  return it == rules_.end() ? nullptr : &it->second;
}

std::vector<std::string> GradRuleRegistry::ops() const {
  std::vector<std::string> out;
  for (const auto &e : rules_)
    out.push_back(e.getKey().str());
  std::sort(out.begin(), out.end());
  return out;
}

const GradRuleRegistry &gradRules() {
  static const GradRuleRegistry registry = [] {
    GradRuleRegistry r;
    registerLinearGradRules(r);
    registerElementwiseGradRules(r);
    registerShapeGradRules(r);
    registerNormGradRules(r);
    registerIndexGradRules(r);
    registerConvGradRules(r);
    return r;
  }();
  return registry;
}

onnx::AttributeProto iattr(llvm::StringRef name, int64_t v) {
  onnx::AttributeProto a;
  a.set_name(name.str());
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}

onnx::AttributeProto iattrs(llvm::StringRef name, llvm::ArrayRef<int64_t> v) {
  onnx::AttributeProto a;
  a.set_name(name.str());
  a.set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v)
    a.add_ints(x);
  return a;
}

onnx::AttributeProto fattr(llvm::StringRef name, float v) {
  onnx::AttributeProto a;
  a.set_name(name.str());
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(v);
  return a;
}

onnx::AttributeProto sattr(llvm::StringRef name, llvm::StringRef v) {
  onnx::AttributeProto a;
  a.set_name(name.str());
  a.set_type(onnx::AttributeProto::STRING);
  a.set_s(v.str());
  return a;
}

std::string Emitter::fresh(llvm::StringRef base) {
  std::string name = g_.uniqueName((prefix_ + base).str());
  g_.getOrCreate(name); // reserved
  return name;
}

std::string Emitter::op(llvm::StringRef opType, llvm::ArrayRef<std::string> inputs,
                        llvm::StringRef outBase, std::vector<onnx::AttributeProto> attrs) {
  std::string out = fresh(outBase);
  onnx::NodeProto n;
  n.set_op_type(opType.str());
  n.set_name((prefix_ + scope_ + "/" + opType + "_" + llvm::Twine(counter_++)).str());
  for (const std::string &in : inputs)
    n.add_input(in);
  n.add_output(out);
  for (auto &a : attrs)
    *n.add_attribute() = std::move(a);
  nodes.push_back(std::move(n));
  return out;
}

std::string Emitter::constant(onnx::TensorProto t) {
  std::string name = fresh(t.name().empty() ? std::string("const") : t.name());
  t.set_name(name);
  constants.push_back(std::move(t));
  return name;
}

std::string Emitter::ints(llvm::StringRef base, llvm::ArrayRef<int64_t> values) {
  return constant(int64Tensor(base.str(), values));
}

onnx::TensorProto Emitter::typed(llvm::StringRef name, llvm::ArrayRef<int64_t> dims,
                                 llvm::ArrayRef<double> values, int32_t type) const {
  onnx::TensorProto t;
  t.set_name(name.str());
  for (int64_t d : dims)
    t.add_dims(d);
  if ((type ? type : type_) == onnx::TensorProto::DOUBLE) {
    t.set_data_type(onnx::TensorProto::DOUBLE);
    t.set_raw_data(std::string(reinterpret_cast<const char *>(values.data()),
                               values.size() * sizeof(double)));
  } else {
    std::vector<float> f(values.begin(), values.end());
    t.set_data_type(onnx::TensorProto::FLOAT);
    t.set_raw_data(std::string(reinterpret_cast<const char *>(f.data()), f.size() * sizeof(float)));
  }
  return t;
}

std::string Emitter::scalar(llvm::StringRef base, double value, int32_t type) {
  return constant(typed(base, {}, {value}, type));
}

std::string Emitter::reduceSum(const std::string &x, llvm::ArrayRef<int64_t> axes, bool keepdims,
                               llvm::StringRef base) {
  if (opset() >= 13) {
    if (axes.empty())
      return op("ReduceSum", {x}, base, {iattr("keepdims", keepdims)});
    return op("ReduceSum", {x, ints("axes", axes)}, base, {iattr("keepdims", keepdims)});
  }
  std::vector<onnx::AttributeProto> attrs{iattr("keepdims", keepdims)};
  if (!axes.empty())
    attrs.push_back(iattrs("axes", axes));
  return op("ReduceSum", {x}, base, std::move(attrs));
}

std::string Emitter::reduceMean(const std::string &x, llvm::ArrayRef<int64_t> axes, bool keepdims,
                                llvm::StringRef base) {
  return reduce("ReduceMean", x, axes, keepdims, base);
}

std::string Emitter::reduce(llvm::StringRef opType, const std::string &x,
                            llvm::ArrayRef<int64_t> axes, bool keepdims, llvm::StringRef base) {
  if (opType == "ReduceSum")
    return reduceSum(x, axes, keepdims, base);
  if (opset() >= 18)
    return op(opType, {x, ints("axes", axes)}, base, {iattr("keepdims", keepdims)});
  return op(opType, {x}, base, {iattr("keepdims", keepdims), iattrs("axes", axes)});
}

std::string Emitter::unsqueeze(const std::string &x, llvm::ArrayRef<int64_t> axes,
                               llvm::StringRef base) {
  if (opset() >= 13)
    return op("Unsqueeze", {x, ints("axes", axes)}, base);
  return op("Unsqueeze", {x}, base, {iattrs("axes", axes)});
}

std::string Emitter::squeeze(const std::string &x, llvm::ArrayRef<int64_t> axes,
                             llvm::StringRef base) {
  if (opset() >= 13)
    return op("Squeeze", {x, ints("axes", axes)}, base);
  return op("Squeeze", {x}, base, {iattrs("axes", axes)});
}

std::string Emitter::transpose(const std::string &x, llvm::ArrayRef<int64_t> perm,
                               llvm::StringRef base) {
  return op("Transpose", {x}, base, {iattrs("perm", perm)});
}

} // namespace qn::grad
