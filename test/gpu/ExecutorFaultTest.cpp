//===- ExecutorFaultTest.cpp - Faults found by kernels, through the executor ===//
//
// A Gather whose ids come from the run's inputs (an embedding lookup) and an
// integer Div by an input: the CUDA kernels find a bad id or a zero divisor
// only while computing and report it through the rank's fault word
// (runtime/lib/cuda/CudaFault.h). Through the executor, in every mode a run
// can take (eager and recording, captured into a CUDA graph, replayed), a
// faulty run must fail naming the node, and the runs around it must give the
// CPU executor's outputs.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include "qn/runtime/Executor.h"

#include <onnx/defs/parser.h>

#include "gtest/gtest.h"

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {

const char *kGraph = R"(<ir_version: 8, opset_import: ["" : 17]>
g (int64[2,3] ids, int64[2] num, int64[2] den) => (float[2,3,4] e, int64[2] q) {
  table = Constant <value = float[5,4] {
     0,  1,  2,  3,  4,  5,  6,  7,  8,  9,
    10, 11, 12, 13, 14, 15, 16, 17, 18, 19}> ()
  rows = Gather <axis = 0> (table, ids)
  e = Relu(rows)
  q = Div(num, den)
}
)";

RankProgram program() {
  RankProgram p;
  auto status = onnx::OnnxParser::Parse(p.model, kGraph);
  EXPECT_TRUE(status.IsOK()) << status.ErrorMessage();
  return p;
}

llvm::StringMap<Tensor> feeds(int64_t badId, int64_t den) {
  llvm::StringMap<Tensor> f;
  f["ids"] = I64({2, 3}, {0, 4, -1, 2, badId, 3});
  f["num"] = I64v({7, -9});
  f["den"] = I64v({2, den});
  return f;
}

/// Runs a sequence of feeds (good or faulty) through one CUDA executor and
/// checks each run: faulty ones fail naming the node and the fault, good ones
/// match the CPU executor.
void runSequence(const CudaOptions &opts) {
  KernelRegistry kernels;
  registerCpuKernels(kernels);
  auto cpu = Executor::create(program(), kernels, nullptr);
  ASSERT_TRUE(static_cast<bool>(cpu)) << llvm::toString(cpu.takeError());
  auto gpu = createCudaExecutor(program(), opts, nullptr);
  ASSERT_TRUE(static_cast<bool>(gpu)) << llvm::toString(gpu.takeError());
  struct Step {
    int64_t id, den;
    const char *needle; // null: a good run
  };
  // Run 1 records (eager), run 2 is captured, later ones replay the graph;
  // faults fall in each mode, and a good run follows each fault.
  const Step steps[] = {{1, 3, nullptr},         {5, 3, "out of range"},
                        {1, 3, nullptr},         {1, 3, nullptr},
                        {-6, 3, "out of range"}, {0, -4, nullptr},
                        {1, 0, "division by zero"}, {2, 5, nullptr}};
  int k = 0;
  for (const Step &s : steps) {
    SCOPED_TRACE("run " + std::to_string(++k));
    auto r = (*gpu)->run(feeds(s.id, s.den));
    if (s.needle) {
      ASSERT_FALSE(static_cast<bool>(r)) << "a faulty run succeeded";
      std::string m = llvm::toString(r.takeError());
      EXPECT_NE(m.find(s.needle), std::string::npos) << m;
      EXPECT_NE(m.find(std::string(s.needle) == "out of range" ? "Gather" : "Div"),
                std::string::npos)
          << m;
      continue;
    }
    ASSERT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
    auto ref = (*cpu)->run(feeds(s.id, s.den));
    ASSERT_TRUE(static_cast<bool>(ref)) << llvm::toString(ref.takeError());
    ASSERT_EQ(r->size(), ref->size());
    for (size_t o = 0; o < r->size(); ++o)
      EXPECT_TRUE(closeTo((*r)[o], (*ref)[o], 0, 0)) << "output " << o;
  }
}

TEST(CudaExecutorFaults, WithGraphs) { runSequence(CudaOptions{}); }

TEST(CudaExecutorFaults, Eager) {
  CudaOptions o;
  o.useGraphs = false;
  runSequence(o);
}

} // namespace
