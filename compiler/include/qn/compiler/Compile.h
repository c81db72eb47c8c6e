//===- Compile.h - the compiler as one call ---------------------*- C++ -*-===//
//
// What qn-compile does after parsing its command line (tools/qn-compile.cpp):
// import, partition, verify, then write the plan folder or print the
// annotated graph, driven by a plain struct.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "qn/compiler/Partition.h"
#include "qn/compiler/Train.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <functional>
#include <optional>
#include <string>

namespace qn {

/// The device the plan is for: every op of the model must have a kernel
/// there (the op table, qn/ops/Ops.def).
enum class CompileDevice { Cpu, Cuda };

enum class CompileEmit {
  Plan,      ///< the plan folder (needs outDir)
  Annotated, ///< the partitioned graph, printed
};

struct CompileOptions {
  /// .onnx or .onnxtext.
  std::string modelPath;
  /// tp, replicate-below, keep-logits-sharded.
  PartitionOptions partition;
  CompileEmit emit = CompileEmit::Plan;
  CompileDevice device = CompileDevice::Cpu;
  /// The plan folder (written atomically); used with CompileEmit::Plan.
  std::string outDir;
  /// After writing the plan, print each Linear's and embedding's strategy,
  /// per rank the parameter bytes, and the collectives by kind to `out`.
  bool report = false;
  /// Set: compile a training step (Train.h) instead of inference.
  std::optional<TrainOptions> train;
  /// Receives the progress lines while writing a plan ("read ...",
  /// "wrote ..."); none when empty.
  std::function<void(const llvm::Twine &)> progress;
  /// Receives the plan's warnings (planWarnings: Linears left replicated,
  /// AllGathers inside the graph), also for --emit=annotated; none when empty.
  std::function<void(const std::string &)> warn;
};

/// Imports `opts.modelPath`, partitions it for `opts.partition.tp` ranks,
/// verifies every rank, then writes the plan folder (and the report, to `out`)
/// or prints the annotated graph to `out`. Errors carry the message for the
/// user (a partitioning failure is prefixed with the model's path).
llvm::Error compileModel(const CompileOptions &opts, llvm::raw_ostream &out);

} // namespace qn
