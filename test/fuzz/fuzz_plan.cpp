//===- fuzz_plan.cpp - libFuzzer target: plan.json and rank model loading -===//
//
// The input is split at the first NUL byte: the part before is plan.json's
// text, the part after is rank 0's ONNX model, loaded against a fixed
// weights buffer. An input without NUL is only a manifest.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Plan.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  auto [json, model] = bytes.split('\0');
  auto plan = qn::rt::parseManifest(json, "fuzz", "fuzz/plan.json");
  if (!plan) {
    llvm::consumeError(plan.takeError());
    return 0;
  }
  if (model.empty())
    return 0;
  static const std::string weights(4096, '\x01');
  std::shared_ptr<llvm::MemoryBuffer> bin(
      llvm::MemoryBuffer::getMemBuffer(weights, "rank0.bin", false));
  auto prog = qn::rt::loadRankFromBuffers(*plan, 0, model, bin);
  if (!prog)
    llvm::consumeError(prog.takeError());
  return 0;
}
