//===- fuzz_npy.cpp - libFuzzer target: .npy parsing ----------------------===//
#include "qn/runtime/Npy.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto t = qn::rt::parseNpy(llvm::StringRef(reinterpret_cast<const char *>(data), size),
                            "fuzz.npy");
  if (!t) {
    llvm::consumeError(t.takeError());
    return 0;
  }
  // Round trip what parsed: serialising must not read past the tensor.
  volatile size_t n = qn::rt::serializeNpy(*t).size();
  (void)n;
  return 0;
}
