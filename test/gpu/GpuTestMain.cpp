//===- GpuTestMain.cpp - main of the CUDA kernel tests ---------------------===//
//
// Without a GPU (or without CUDA in this build) every test would fail at its
// first launch; instead the binary says why and exits 77, which ctest reports
// as "Skipped" (SKIP_RETURN_CODE), never as passed.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Cuda.h"

#include <cstdio>

#include "gtest/gtest.h"

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (qn::rt::cudaDeviceCount() == 0) {
    std::printf("SKIPPED: %d GPU tests not run: %s\n",
                ::testing::UnitTest::GetInstance()->total_test_count(),
                qn::rt::cudaUnavailableReason().c_str());
    return 77;
  }
  std::printf("GPU: %s\n", qn::rt::cudaDeviceName(0).c_str());
  return RUN_ALL_TESTS();
}
