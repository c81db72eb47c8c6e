//===- Executor.h - Runs one rank's graph -----------------------*- C++ -*-===//
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "qn/runtime/Kernel.h"
#include "qn/runtime/Plan.h"
#include "llvm/Support/Error.h"

namespace qn::rt {
class Communicator;

struct RunStats {
  double totalMs = 0;
  double collectiveMs = 0;
};

/// Runs the nodes of a rank graph in order (ONNX graphs are topologically
/// sorted) with the kernels of one device. Values are numbered once at
/// construction; a value's buffer is released after its last use.
class Executor {
public:
  static llvm::Expected<std::unique_ptr<Executor>>
  create(RankProgram program, const KernelRegistry &kernels, Communicator *comm);

  /// Runs the graph on `inputs` (already checked against the plan) and
  /// returns the graph outputs in order.
  llvm::Expected<std::vector<Tensor>> run(const llvm::StringMap<Tensor> &inputs,
                                          RunStats *stats = nullptr);
  const std::vector<std::string> &outputNames() const { return outputNames_; }

private:
  struct Step {
    const onnx::NodeProto *node;
    const KernelFn *kernel;
    std::vector<int> inputs;  // value ids, -1 for omitted
    std::vector<int> outputs; // value ids, -1 for omitted
    std::vector<int> release; // values whose last use is this step
    bool collective;
    int opset;
  };
  RankProgram program_;
  Communicator *comm_ = nullptr;
  std::vector<Step> steps_;
  std::vector<Tensor> constants_; // by value id (undefined for non-constants)
  std::vector<std::pair<std::string, int>> inputIds_;
  std::vector<int> outputIds_;
  std::vector<std::string> outputNames_;
  int numValues_ = 0;
};

} // namespace qn::rt
