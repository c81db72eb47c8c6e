//===- fuzz_npy.cpp - libFuzzer target: .npy parsing ----------------------===//
#define QN_FUZZ_RUNTIME
#include "FuzzTargets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qn::fuzz::parseNpy(llvm::StringRef(reinterpret_cast<const char *>(data), size));
  return 0;
}
