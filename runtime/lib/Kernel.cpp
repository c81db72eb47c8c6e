//===- Kernel.cpp - Kernel registry and attribute helpers -----------------===//
#include "qn/runtime/Kernel.h"

#include <algorithm>

#include "onnx/onnx_pb.h"

namespace qn::rt {

/// "ai.onnx" is the ONNX domain as well.
static llvm::StringRef canonicalDomain(llvm::StringRef domain) {
  return domain == "ai.onnx" ? llvm::StringRef() : domain;
}

static std::string key(llvm::StringRef domain, llvm::StringRef opType) {
  domain = canonicalDomain(domain);
  if (domain.empty())
    return opType.str();
  return (domain + "::" + opType).str();
}

void KernelRegistry::add(llvm::StringRef domain, llvm::StringRef opType, KernelFn fn,
                         uint32_t hostInputs) {
  fns_[key(domain, opType)] = Entry{std::move(fn), hostInputs};
}

const KernelFn *KernelRegistry::lookup(llvm::StringRef domain, llvm::StringRef opType) const {
  auto it = fns_.find(key(domain, opType));
  return it == fns_.end() ? nullptr : &it->second.fn;
}

uint32_t KernelRegistry::hostInputs(llvm::StringRef domain, llvm::StringRef opType) const {
  auto it = fns_.find(key(domain, opType));
  return it == fns_.end() ? 0 : it->second.hostInputs;
}

std::vector<std::string> KernelRegistry::names() const {
  std::vector<std::string> r;
  r.reserve(fns_.size());
  for (const auto &e : fns_)
    r.push_back(e.getKey().str());
  std::sort(r.begin(), r.end());
  return r;
}

static const onnx::AttributeProto *findAttr(const onnx::NodeProto &n, llvm::StringRef name) {
  for (const onnx::AttributeProto &a : n.attribute())
    if (a.name() == name)
      return &a;
  return nullptr;
}

bool hasAttr(const onnx::NodeProto &n, llvm::StringRef name) { return findAttr(n, name); }

int64_t attrInt(const onnx::NodeProto &n, llvm::StringRef name, int64_t dflt) {
  const onnx::AttributeProto *a = findAttr(n, name);
  if (!a)
    return dflt;
  if (a->type() == onnx::AttributeProto::INT || (a->type() == 0 && a->has_i()))
    return a->i();
  return dflt;
}

float attrFloat(const onnx::NodeProto &n, llvm::StringRef name, float dflt) {
  const onnx::AttributeProto *a = findAttr(n, name);
  if (!a)
    return dflt;
  if (a->type() == onnx::AttributeProto::FLOAT || (a->type() == 0 && a->has_f()))
    return a->f();
  if (a->type() == onnx::AttributeProto::INT)
    return static_cast<float>(a->i());
  return dflt;
}

std::string attrString(const onnx::NodeProto &n, llvm::StringRef name, llvm::StringRef dflt) {
  const onnx::AttributeProto *a = findAttr(n, name);
  if (!a)
    return dflt.str();
  if (a->type() == onnx::AttributeProto::STRING || (a->type() == 0 && a->has_s()))
    return a->s();
  return dflt.str();
}

std::vector<int64_t> attrInts(const onnx::NodeProto &n, llvm::StringRef name) {
  const onnx::AttributeProto *a = findAttr(n, name);
  if (!a)
    return {};
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

std::string nodeLabel(const onnx::NodeProto &n) {
  std::string s = n.op_type();
  if (!n.name().empty())
    return s + " '" + n.name() + "'";
  if (n.output_size() > 0 && !n.output(0).empty())
    return s + " (output '" + n.output(0) + "')";
  return s + " <unnamed>";
}

} // namespace qn::rt
