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
  /// Wall time of the run, transfers to and from a device included.
  double totalMs = 0;
  /// Time in collectives; negative when the run could not measure it (a
  /// CUDA graph replay: see Runner::setProfiling).
  double collectiveMs = 0;
  /// On a GPU: device time from the first kernel to the last (input uploads
  /// and output downloads excluded); 0 on the CPU.
  double deviceMs = 0;
  /// When set and the runner times nodes (Runner::timesNodes: the CPU
  /// executor), filled with one entry per schedule step: its start (ms since
  /// the run began) and its duration.
  struct NodeTime {
    double startMs = 0, ms = 0;
  };
  std::vector<NodeTime> *nodes = nullptr;
};

/// A rank graph numbered for execution: every value gets an id (constants
/// first), steps follow the node order (ONNX graphs are topologically sorted),
/// and each step lists the values whose last use it is.
struct Schedule {
  struct Step {
    const onnx::NodeProto *node;
    std::vector<int> inputs;  // value ids, -1 for omitted
    std::vector<int> outputs; // value ids, -1 for omitted
    std::vector<int> release; // non-constant values whose last use is this step
    bool collective;          // an ai.quintnet node
    int opset;                // of the node's domain
    std::string domain;       // "" for ONNX
  };
  std::vector<Step> steps;
  std::vector<std::pair<std::string, int>> inputIds; // graph inputs (not constants)
  std::vector<int> outputIds;
  std::vector<std::string> outputNames;
  std::vector<std::pair<int, std::string>> constantIds; // id, initializer name
  int numValues = 0;
};
/// Numbers `program` (which must outlive the schedule: steps point into it).
llvm::Expected<Schedule> buildSchedule(const RankProgram &program);

/// What runs one rank's graph: the CPU Executor below, or the CUDA executor
/// (qn/runtime/Cuda.h).
class Runner {
public:
  virtual ~Runner();
  /// Runs the graph on `inputs` (host tensors, already checked against the
  /// plan) and returns the graph outputs in order, as host tensors.
  virtual llvm::Expected<std::vector<Tensor>> run(const llvm::StringMap<Tensor> &inputs,
                                                  RunStats *stats = nullptr) = 0;
  virtual const std::vector<std::string> &outputNames() const = 0;
  /// Runs measure their collectives even where that costs speed (the CUDA
  /// device then runs eagerly instead of replaying a CUDA graph).
  virtual void setProfiling(bool) {}
  /// The schedule whose steps RunStats::nodes times, or null where the
  /// runner cannot time nodes one by one.
  virtual const Schedule *timesNodes() const { return nullptr; }

  // Training: mutable state (RankProgram::makeState) lives where the runner
  // computes (host memory, or the GPU) across runs.
  /// After every run, graph output `output` is written into mutable state
  /// `state` where it lives; the run returns an empty tensor in its place.
  virtual llvm::Error bindUpdate(llvm::StringRef output, llvm::StringRef state) = 0;
  /// While false, runs leave the state alone (evaluation, profiling: the
  /// updates are computed and dropped).
  void setCommitUpdates(bool on) { commitUpdates_ = on; }
  /// The current value of mutable state `name` on the host (the CPU device:
  /// its live buffer; a GPU: a copy).
  virtual llvm::Expected<Tensor> readState(llvm::StringRef name) = 0;
  /// Replaces mutable state `name` with `value` (same dtype and size).
  virtual llvm::Error writeState(llvm::StringRef name, const Tensor &value) = 0;

protected:
  bool commitUpdates_ = true;
};

/// Runs the nodes of a rank graph in order (ONNX graphs are topologically
/// sorted) with the kernels of one device. Values are numbered once at
/// construction; a value's buffer is released after its last use.
class Executor : public Runner {
public:
  static llvm::Expected<std::unique_ptr<Executor>>
  create(RankProgram program, const KernelRegistry &kernels, Communicator *comm);

  /// Runs the graph on `inputs` (already checked against the plan) and
  /// returns the graph outputs in order.
  llvm::Expected<std::vector<Tensor>> run(const llvm::StringMap<Tensor> &inputs,
                                          RunStats *stats = nullptr) override;
  const std::vector<std::string> &outputNames() const override { return outputNames_; }
  const Schedule *timesNodes() const override { return &sched_; }

  /// The buffer of mutable state `name` (RankProgram::makeState): what is
  /// written into it is what the next run reads. An error for a name that is
  /// not mutable state (a mapped weight cannot be written).
  llvm::Expected<Tensor> state(llvm::StringRef name);
  llvm::Error bindUpdate(llvm::StringRef output, llvm::StringRef state) override;
  llvm::Expected<Tensor> readState(llvm::StringRef name) override { return state(name); }
  llvm::Error writeState(llvm::StringRef name, const Tensor &value) override;

private:
  /// bindUpdate's pairs: output index, state buffer.
  std::vector<std::pair<size_t, Tensor>> updates_;
  RankProgram program_;
  Communicator *comm_ = nullptr;
  Schedule sched_;
  std::vector<const KernelFn *> kernels_; // by step
  std::vector<Tensor> constants_;         // by value id (undefined for non-constants)
  std::vector<std::string> outputNames_;
};

} // namespace qn::rt
