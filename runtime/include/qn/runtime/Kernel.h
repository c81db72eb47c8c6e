//===- Kernel.h - Kernel registry of a device -------------------*- C++ -*-===//
#pragma once
#include <functional>
#include <string>

#include "qn/runtime/Tensor.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

namespace onnx {
class NodeProto;
}

namespace qn::rt {
class Communicator;

/// What a kernel sees. Inputs that the node leaves out (empty names) are
/// null. The kernel allocates its outputs (Tensor::zeros) with the shapes it
/// computes; errors name the node.
struct KernelContext {
  const onnx::NodeProto &node;
  llvm::ArrayRef<const Tensor *> inputs;
  llvm::MutableArrayRef<Tensor> outputs;
  Communicator *comm = nullptr; // null when running a single rank
  int opsetVersion = 17;        // of the node's domain in this model
};

using KernelFn = std::function<llvm::Error(KernelContext &)>;

class KernelRegistry {
public:
  /// `domain` is "" for the ONNX domain, "ai.quintnet" for collectives.
  void add(llvm::StringRef domain, llvm::StringRef opType, KernelFn fn);
  const KernelFn *lookup(llvm::StringRef domain, llvm::StringRef opType) const;
  std::vector<std::string> names() const;

private:
  llvm::StringMap<KernelFn> fns_;
};

/// CPU kernels: the standard ops of the bundled models plus the ai.quintnet
/// collectives (AllReduce, AllGather, ReduceScatter) through KernelContext::comm.
void registerCpuKernels(KernelRegistry &reg);

/// Attribute helpers (ONNX NodeProto).
int64_t attrInt(const onnx::NodeProto &n, llvm::StringRef name, int64_t dflt);
float attrFloat(const onnx::NodeProto &n, llvm::StringRef name, float dflt);
std::string attrString(const onnx::NodeProto &n, llvm::StringRef name, llvm::StringRef dflt);
std::vector<int64_t> attrInts(const onnx::NodeProto &n, llvm::StringRef name);
bool hasAttr(const onnx::NodeProto &n, llvm::StringRef name);
/// "Gemm 'fc1'": for error messages.
std::string nodeLabel(const onnx::NodeProto &n);

} // namespace qn::rt
