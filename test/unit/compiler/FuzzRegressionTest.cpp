//===- FuzzRegressionTest.cpp - replays fuzzer findings (compiler) --------===//
#define QN_FUZZ_COMPILER
#include "../../fuzz/FuzzTargets.h"

#include <gtest/gtest.h>

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

namespace {
std::vector<std::string> inputs(const char *target) {
  std::vector<std::string> files;
  std::error_code ec;
  std::string dir = std::string(QN_SOURCE_DIR) + "/test/fuzz/regressions/" + target;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    files.push_back(it->path());
  return files;
}
} // namespace

// Each input once crashed qn-compile's import (see the file names); now each
// must import or fail cleanly, under the sanitizers too. The ones whose
// cause was the input itself must be refused.
TEST(FuzzRegression, BinaryImport) {
  auto files = inputs("import-onnx");
  ASSERT_FALSE(files.empty());
  for (const std::string &f : files) {
    auto buf = llvm::MemoryBuffer::getFile(f);
    ASSERT_TRUE(bool(buf)) << f;
    qn::fuzz::importAndPartition((*buf)->getBuffer(), false);
    if (llvm::StringRef(f).endswith("int-overflow-dims")) {
      auto g = qn::importModelFromBuffer((*buf)->getBuffer(), "model.onnx");
      ASSERT_FALSE(bool(g)) << f << " imports";
      std::string msg = llvm::toString(g.takeError());
      EXPECT_NE(msg.find("invalid dims"), std::string::npos) << msg;
    }
  }
}

TEST(FuzzRegression, TextImport) {
  auto files = inputs("import-text");
  ASSERT_FALSE(files.empty());
  for (const std::string &f : files) {
    auto buf = llvm::MemoryBuffer::getFile(f);
    ASSERT_TRUE(bool(buf)) << f;
    qn::fuzz::importAndPartition((*buf)->getBuffer(), true);
    if (llvm::StringRef(f).endswith("stof-out-of-range")) {
      auto g = qn::importModelFromBuffer((*buf)->getBuffer(), "model.onnxtext");
      ASSERT_FALSE(bool(g)) << f << " imports";
      std::string msg = llvm::toString(g.takeError());
      EXPECT_NE(msg.find("is not a valid ONNX text model"), std::string::npos) << msg;
    }
  }
}
