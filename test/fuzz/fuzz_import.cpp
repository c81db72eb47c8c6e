//===- fuzz_import.cpp - libFuzzer target: model import and partitioning --===//
// Built twice: QN_FUZZ_TEXT=0 reads the bytes as a binary .onnx model,
// QN_FUZZ_TEXT=1 as an .onnxtext model.
#define QN_FUZZ_COMPILER
#include "FuzzTargets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qn::fuzz::importAndPartition(llvm::StringRef(reinterpret_cast<const char *>(data), size),
                               QN_FUZZ_TEXT);
  return 0;
}
