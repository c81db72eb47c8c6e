//===- KernelTestUtil.h - Shared helpers of the CPU kernel tests -*- C++ -*-===//
#pragma once
#include "qn/runtime/Communicator.h"
#include "qn/runtime/Kernel.h"

#include <cstring>
#include <string>
#include <vector>

#include "onnx/onnx_pb.h"
#include "gtest/gtest.h"

namespace qn::rt::testing {

/// Builds one ONNX node named "n_<Op>" with output "y".
class Node {
public:
  explicit Node(const std::string &op, const std::string &domain = "") {
    n_.set_op_type(op);
    n_.set_name("n_" + op);
    n_.set_domain(domain);
    n_.add_output("y");
  }
  Node &i(const std::string &name, int64_t v) {
    auto *a = n_.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
    return *this;
  }
  Node &f(const std::string &name, float v) {
    auto *a = n_.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
    return *this;
  }
  Node &s(const std::string &name, const std::string &v) {
    auto *a = n_.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
    return *this;
  }
  Node &ints(const std::string &name, std::vector<int64_t> v) {
    auto *a = n_.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v)
      a->add_ints(x);
    return *this;
  }
  Node &floats(const std::string &name, std::vector<float> v) {
    auto *a = n_.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOATS);
    for (float x : v)
      a->add_floats(x);
    return *this;
  }
  Node &tensor(const std::string &name, const onnx::TensorProto &t) {
    auto *a = n_.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::TENSOR);
    *a->mutable_t() = t;
    return *this;
  }
  const onnx::NodeProto &proto() const { return n_; }

private:
  onnx::NodeProto n_;
};

/// The CPU kernel registry, built once.
inline const KernelRegistry &registry() {
  static KernelRegistry reg = [] {
    KernelRegistry r;
    registerCpuKernels(r);
    return r;
  }();
  return reg;
}

/// Runs one node with `nOut` output slots; undefined tensors in `ins` are
/// left-out inputs.
inline llvm::Expected<std::vector<Tensor>> runN(const Node &node, std::vector<Tensor> ins,
                                                size_t nOut = 1, int opset = 17,
                                                Communicator *comm = nullptr) {
  const onnx::NodeProto &n = node.proto();
  const KernelFn *fn = registry().lookup(n.domain(), n.op_type());
  if (!fn)
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "no kernel");
  std::vector<const Tensor *> ptrs;
  for (const Tensor &t : ins)
    ptrs.push_back(t.defined() ? &t : nullptr);
  std::vector<Tensor> outs(nOut);
  KernelContext ctx{n, ptrs, outs, comm, opset};
  if (llvm::Error e = (*fn)(ctx))
    return e;
  return outs;
}

template <class T> Tensor make(DType dt, std::vector<int64_t> shape, std::vector<T> v) {
  Tensor t = Tensor::zeros(dt, shape);
  EXPECT_EQ(static_cast<int64_t>(v.size()), t.numel());
  if (!v.empty())
    std::memcpy(t.raw(), v.data(), v.size() * sizeof(T));
  return t;
}
inline Tensor F(std::vector<int64_t> s, std::vector<float> v) {
  return make<float>(DType::Float, s, v);
}
inline Tensor I64(std::vector<int64_t> s, std::vector<int64_t> v) {
  return make<int64_t>(DType::Int64, s, v);
}
inline Tensor I32(std::vector<int64_t> s, std::vector<int32_t> v) {
  return make<int32_t>(DType::Int32, s, v);
}
inline Tensor I64v(std::vector<int64_t> v) { return I64({static_cast<int64_t>(v.size())}, v); }

} // namespace qn::rt::testing
