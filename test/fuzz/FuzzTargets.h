//===- FuzzTargets.h - what each fuzz target does with its bytes -*- C++ -*-===//
//
// Shared by the libFuzzer targets (fuzz_*.cpp, built with clang and
// -DQN_FUZZ=ON) and by the unit tests that replay the regression inputs under
// test/fuzz/regressions/ in every build. Errors are fine; crashes, hangs and
// sanitizer reports are findings.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <string>
#include <vector>

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#ifdef QN_FUZZ_COMPILER
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"

namespace qn::fuzz {
/// Imports the bytes as a binary (.onnx) or text (.onnxtext) model; whatever
/// imports is partitioned for tp 2 and its rank models materialised and
/// verified, so the passes see hostile graphs too.
inline void importAndPartition(llvm::StringRef bytes, bool text) {
  auto g = importModelFromBuffer(bytes, text ? "fuzz/model.onnxtext" : "fuzz/model.onnx");
  if (!g) {
    llvm::consumeError(g.takeError());
    return;
  }
  PartitionOptions opts;
  opts.tp = 2;
  opts.replicateBelowBytes = 0;
  auto plan = partition(**g, opts);
  if (!plan) {
    llvm::consumeError(plan.takeError());
    return;
  }
  std::vector<onnx::ModelProto> ranks;
  for (int k = 0; k < opts.tp; ++k) {
    auto m = materializeRank(*plan, **g, k);
    if (!m) {
      llvm::consumeError(m.takeError());
      return;
    }
    ranks.push_back(std::move(*m));
  }
  llvm::consumeError(verifyRanks(ranks));
}
} // namespace qn::fuzz
#endif

#ifdef QN_FUZZ_RUNTIME
#include "qn/runtime/Npy.h"
#include "qn/runtime/Plan.h"

namespace qn::fuzz {
/// Bytes before the first NUL are plan.json's text; the bytes after it are
/// rank 0's ONNX model, loaded against a fixed 4 KiB weights buffer.
inline void loadPlan(llvm::StringRef bytes) {
  auto [json, model] = bytes.split('\0');
  auto plan = rt::parseManifest(json, "fuzz", "fuzz/plan.json");
  if (!plan) {
    llvm::consumeError(plan.takeError());
    return;
  }
  if (model.empty())
    return;
  static const std::string weights(4096, '\x01');
  std::shared_ptr<llvm::MemoryBuffer> bin(
      llvm::MemoryBuffer::getMemBuffer(weights, "rank0.bin", false));
  auto prog = rt::loadRankFromBuffers(*plan, 0, model, bin);
  if (!prog)
    llvm::consumeError(prog.takeError());
}

/// Parses .npy bytes; what parses is serialised again.
inline void parseNpy(llvm::StringRef bytes) {
  auto t = rt::parseNpy(bytes, "fuzz.npy");
  if (!t) {
    llvm::consumeError(t.takeError());
    return;
  }
  volatile size_t n = rt::serializeNpy(*t).size();
  (void)n;
}
} // namespace qn::fuzz
#endif
