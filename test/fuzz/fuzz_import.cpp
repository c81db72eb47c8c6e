//===- fuzz_import.cpp - libFuzzer target: model import and partitioning --===//
//
// Built twice: QN_FUZZ_TEXT=0 feeds the bytes as a binary .onnx model,
// QN_FUZZ_TEXT=1 as an .onnxtext model. Whatever imports is also partitioned
// for tp 2 and its rank models are materialised and verified, so the passes
// see hostile graphs too. Errors are fine; crashes, hangs and sanitizer
// reports are findings.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  auto g = qn::importModelFromBuffer(bytes, QN_FUZZ_TEXT ? "fuzz/model.onnxtext"
                                                         : "fuzz/model.onnx");
  if (!g) {
    llvm::consumeError(g.takeError());
    return 0;
  }
  qn::PartitionOptions opts;
  opts.tp = 2;
  opts.replicateBelowBytes = 0;
  auto plan = qn::partition(**g, opts);
  if (!plan) {
    llvm::consumeError(plan.takeError());
    return 0;
  }
  std::vector<onnx::ModelProto> ranks;
  for (int k = 0; k < opts.tp; ++k) {
    auto m = qn::materializeRank(*plan, **g, k);
    if (!m) {
      llvm::consumeError(m.takeError());
      return 0;
    }
    ranks.push_back(std::move(*m));
  }
  llvm::consumeError(qn::verifyRanks(ranks));
  return 0;
}
