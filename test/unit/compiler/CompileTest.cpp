//===- CompileTest.cpp - compileModel driven by CompileOptions ------------===//
#include "qn/compiler/Compile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "CompilerTestUtil.h"

#include <gtest/gtest.h>

using namespace qn;
using namespace qn::testing;

namespace {


class TempDir {
public:
  TempDir() {
    llvm::SmallString<128> p;
    EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("qn-compile-test", p));
    path_ = std::string(p);
  }
  ~TempDir() { llvm::sys::fs::remove_directories(path_); }
  std::string file(llvm::StringRef name) const {
    llvm::SmallString<256> p(path_);
    llvm::sys::path::append(p, name);
    return std::string(p);
  }

private:
  std::string path_;
};

std::string writeModel(const TempDir &dir) {
  std::string path = dir.file("pair.onnxtext");
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  EXPECT_FALSE(ec) << ec.message();
  os << kPair;
  return path;
}

CompileOptions options(const std::string &model, int tp) {
  CompileOptions opts;
  opts.modelPath = model;
  opts.partition.tp = tp;
  opts.partition.replicateBelowBytes = 0;
  return opts;
}

} // namespace

TEST(Compile, WritesPlanWithProgressAndReport) {
  TempDir dir;
  CompileOptions opts = options(writeModel(dir), 2);
  opts.outDir = dir.file("plan");
  opts.report = true;
  std::vector<std::string> progress;
  opts.progress = [&](const llvm::Twine &msg) { progress.push_back(msg.str()); };
  std::string out;
  llvm::raw_string_ostream os(out);
  llvm::Error e = compileModel(opts, os);
  ASSERT_FALSE(bool(e)) << llvm::toString(std::move(e));
  os.flush();
  EXPECT_TRUE(llvm::sys::fs::exists(dir.file("plan/plan.json")));
  EXPECT_TRUE(llvm::sys::fs::exists(dir.file("plan/rank1.onnx")));
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.front().rfind("read ", 0), 0u) << progress.front();
  EXPECT_EQ(progress.back().rfind("wrote ", 0), 0u) << progress.back();
  EXPECT_NE(out.find("report: tp 2"), std::string::npos) << out;
}

TEST(Compile, AnnotatedPrintsAndWritesNothing) {
  TempDir dir;
  CompileOptions opts = options(writeModel(dir), 2);
  opts.emit = CompileEmit::Annotated;
  int progressLines = 0;
  opts.progress = [&](const llvm::Twine &) { ++progressLines; };
  std::string out;
  llvm::raw_string_ostream os(out);
  llvm::Error e = compileModel(opts, os);
  ASSERT_FALSE(bool(e)) << llvm::toString(std::move(e));
  os.flush();
  EXPECT_NE(out.find("[collective]"), std::string::npos) << out;
  EXPECT_EQ(progressLines, 0);
}

TEST(Compile, PartitionErrorNamesTheModel) {
  TempDir dir;
  std::string model = writeModel(dir);
  CompileOptions opts = options(model, 3); // 4 columns do not split 3 ways
  opts.emit = CompileEmit::Annotated;
  std::string out;
  llvm::raw_string_ostream os(out);
  llvm::Error e = compileModel(opts, os);
  ASSERT_TRUE(bool(e));
  std::string msg = llvm::toString(std::move(e));
  EXPECT_EQ(msg.rfind(model + ": ", 0), 0u) << msg;
}

TEST(Compile, MissingModelIsAnError) {
  TempDir dir;
  CompileOptions opts = options(dir.file("none.onnx"), 2);
  opts.outDir = dir.file("plan");
  std::string out;
  llvm::raw_string_ostream os(out);
  llvm::Error e = compileModel(opts, os);
  ASSERT_TRUE(bool(e));
  llvm::consumeError(std::move(e));
  EXPECT_FALSE(llvm::sys::fs::exists(dir.file("plan")));
}
