//===- Plan.h - Loading a plan folder ---------------------------*- C++ -*-===//
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "qn/runtime/Tensor.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"
#include <onnx/onnx_pb.h>

namespace qn::rt {

/// A graph input or output as plan.json describes it.
struct PlanValue {
  std::string name;
  DType dtype = DType::Undefined;
  std::vector<int64_t> dims;        // -1 where symbolic or unknown
  std::vector<std::string> symbols; // the symbol where dims[i] == -1 ("" if unknown)
  /// "R", or "S(d)" for an output the plan leaves sharded (each rank holds
  /// its slice of axis d).
  std::string placement = "R";
  bool replicated() const { return placement == "R"; }
  /// "float32[batch,784]"
  std::string describe() const;
};

/// plan.json.
/// A training plan's step (plan.json "training", written by qn-compile
/// --train): which inputs the runtime feeds besides the data, the loss
/// output, and the mutable state with the output that updates it.
struct TrainingManifest {
  struct State {
    std::string name, update, param, kind, source;
    double sourceScale = 1.0;
    /// A padded vocabulary: the source's rows (the parameter's first rows);
    /// -1 when not padded.
    int64_t sourceRows = -1;
  };
  std::string loss, labels, logits, lrInput, stepInput, optimizer, schedule;
  /// Output: the batch's correctly classified samples (for --eval).
  std::string correct;
  int64_t classes = 0, ignoreIndex = -100, warmupSteps = 0;
  double lr = 0, momentum = 0, weightDecay = 0, clipGradNorm = 0;
  std::vector<State> state;
  /// Source initializers that are the transpose of a trained parameter
  /// (tied weights): (copy, parameter); --save writes them too.
  std::vector<std::pair<std::string, std::string>> tied;
  /// The learning rate of update `step` (1-based) of `total`: linear
  /// warm-up from 0 over warmupSteps, then constant or cosine decay to 0.
  double lrAt(int64_t step, int64_t total) const;
};

struct PlanManifest {
  std::string dir;
  int tp = 0;
  std::string planId;
  std::vector<std::string> rankModels, rankWeights;
  std::vector<PlanValue> inputs, outputs;
  /// The model qn-compile read (an absolute path; may be gone by now).
  std::string sourceModel;
  /// Set for a training plan.
  std::shared_ptr<TrainingManifest> training;
};

/// Reads and checks `dir`/plan.json (format, version, tp, file names that
/// stay inside the folder).
llvm::Expected<PlanManifest> loadManifest(llvm::StringRef dir);
/// The same from the manifest's text; `path` names it in errors.
llvm::Expected<PlanManifest> parseManifest(llvm::StringRef text, llvm::StringRef dir,
                                           llvm::StringRef path);

/// One rank's program: its ONNX graph and its weights, mapped from rankK.bin.
struct RankProgram {
  onnx::ModelProto model;
  /// Initializers: views of the read-only mapping of rankK.bin, except the
  /// mutable state (below), which owns a writable copy.
  llvm::StringMap<Tensor> constants;
  /// Parameters that are mutable state (training: the weights the optimizer
  /// updates and its moments), by name: each owns its buffer, and an
  /// executor built from the program sees what is written into it between
  /// runs (Executor::state).
  llvm::StringSet<> state;

  /// Makes initializer `name` mutable state: copies it out of the mapping
  /// into a buffer of its own. An error names an unknown initializer.
  llvm::Error makeState(llvm::StringRef name);
};

/// Loads rank `rank` of the plan: parses rankK.onnx, maps rankK.bin and
/// checks every external-data reference (file name, offset, length).
llvm::Expected<RankProgram> loadRank(const PlanManifest &plan, int rank);
/// The same from the rank model's bytes and its mapped weights.
llvm::Expected<RankProgram> loadRankFromBuffers(const PlanManifest &plan, int rank,
                                                llvm::StringRef modelBytes,
                                                std::shared_ptr<llvm::MemoryBuffer> bin);

/// Checks bound inputs against the plan: every input given once, no unknown
/// names, dtypes and static dims as declared, symbolic dims consistent.
/// Errors list what the plan expects.
llvm::Error checkInputs(const PlanManifest &plan, const llvm::StringMap<Tensor> &inputs);

} // namespace qn::rt
