//===- FuzzRegressionTest.cpp - replays fuzzer findings (runtime) ---------===//
#define QN_FUZZ_RUNTIME
#include "../../fuzz/FuzzTargets.h"

#include <gtest/gtest.h>

#include "llvm/Support/FileSystem.h"

// Each input once crashed plan loading (see the file names): now an error.
TEST(FuzzRegression, PlanLoading) {
  std::error_code ec;
  std::string dir = std::string(QN_SOURCE_DIR) + "/test/fuzz/regressions/plan";
  int count = 0;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto buf = llvm::MemoryBuffer::getFile(it->path());
    ASSERT_TRUE(bool(buf)) << it->path();
    auto [json, model] = (*buf)->getBuffer().split('\0');
    auto plan = qn::rt::parseManifest(json, "fuzz", "plan.json");
    ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
    std::shared_ptr<llvm::MemoryBuffer> bin(
        llvm::MemoryBuffer::getMemBuffer(std::string(4096, '\x01'), "rank0.bin", true));
    auto prog = qn::rt::loadRankFromBuffers(*plan, 0, model, bin);
    EXPECT_FALSE(bool(prog)) << it->path() << " loads";
    if (!prog)
      llvm::consumeError(prog.takeError());
    qn::fuzz::loadPlan((*buf)->getBuffer());
    ++count;
  }
  EXPECT_GT(count, 0);
}
