//===- fuzz_plan.cpp - libFuzzer target: plan.json and rank model loading -===//
#define QN_FUZZ_RUNTIME
#include "FuzzTargets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qn::fuzz::loadPlan(llvm::StringRef(reinterpret_cast<const char *>(data), size));
  return 0;
}
