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
/// A device's per-rank state, opaque to the CPU kernels (the CUDA device
/// defines it: stream, cuBLAS handles, allocator; runtime/lib/cuda).
struct DeviceContext;

/// What a kernel sees. Inputs that the node leaves out (empty names) are
/// null. The kernel allocates its outputs (Tensor::zeros) with the shapes it
/// computes; errors name the node.
struct KernelContext {
  const onnx::NodeProto &node;
  llvm::ArrayRef<const Tensor *> inputs;
  llvm::MutableArrayRef<Tensor> outputs;
  Communicator *comm = nullptr; // null when running a single rank
  int opsetVersion = 17;        // of the node's domain in this model
  DeviceContext *device = nullptr; // null for the CPU kernels
};

using KernelFn = std::function<llvm::Error(KernelContext &)>;

class KernelRegistry {
public:
  /// `domain` is "" for the ONNX domain, "ai.quintnet" for collectives.
  /// `hostInputs` has bit i set when the kernel reads input i on the host
  /// (shape, axes, bounds): a device registry's executor hands such inputs
  /// over in host memory and every other input in device memory.
  void add(llvm::StringRef domain, llvm::StringRef opType, KernelFn fn, uint32_t hostInputs = 0);
  const KernelFn *lookup(llvm::StringRef domain, llvm::StringRef opType) const;
  /// The `hostInputs` mask the op was registered with (0 when unknown).
  uint32_t hostInputs(llvm::StringRef domain, llvm::StringRef opType) const;
  std::vector<std::string> names() const;

private:
  struct Entry {
    KernelFn fn;
    uint32_t hostInputs = 0;
  };
  llvm::StringMap<Entry> fns_;
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
