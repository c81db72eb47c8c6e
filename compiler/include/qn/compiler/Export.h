//===- Export.h - Writing a plan folder -------------------------*- C++ -*-===//
#pragma once
#include <string>
#include <vector>

#include "qn/compiler/Partition.h"
#include "llvm/Support/Error.h"

namespace qn {

struct ExportSummary {
  std::string planId;
  std::vector<int64_t> rankParamBytes;
  int64_t modelParamBytes = 0;
  int64_t replicatedParamBytes = 0; // held whole by every rank
};

/// Materialises and verifies every rank, then writes `dir`/plan.json,
/// rank{K}.onnx and rank{K}.bin (weights as ONNX external data, offsets
/// aligned to 64 bytes). Everything is written into a temporary sibling
/// folder that is renamed into place at the end: `dir` appears whole or not
/// at all. An existing `dir` is replaced only if it holds a QuintNet plan
/// (plan.json) or is empty.
llvm::Expected<ExportSummary> writePlanDirectory(const Plan &plan, const Graph &g,
                                                 llvm::StringRef dir);

} // namespace qn
