//===- IndexOpsTest.cpp - CUDA CumSum, GatherND, ScatterND vs the CPU -----===//
//
// The CPU kernels (tested against the ONNX definitions in
// test/unit/runtime/IndexOpsTest.cpp) are the reference. All three agree bit
// for bit: GatherND and ScatterND without a reduction move elements; CumSum
// and the ScatterND reductions accumulate in the CPU kernels' order and
// arithmetic. Errors that depend only on shapes and attributes have the same
// message on both devices; an index out of range is found by the CUDA kernel
// while computing and reported through the fault word (CudaFault.h).
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include <algorithm>
#include <string>
#include <vector>

namespace qn::rt::testing {
namespace {

/// GPU == CPU exactly.
void exact(const Node &node, std::vector<Tensor> ins, int opset = 17) {
  expectGpuMatchesCpu(node, std::move(ins), 1, 0, 0, opset);
}

/// The CPU fails naming "out of range"; the GPU fails through its fault
/// word, naming the node; a valid run afterwards succeeds.
void faultsOutOfRange(const Node &node, std::vector<Tensor> bad, std::vector<Tensor> good,
                      int opset = 17) {
  auto cpu = runN(node, bad, 1, opset);
  ASSERT_FALSE(static_cast<bool>(cpu));
  std::string cm = llvm::toString(cpu.takeError());
  EXPECT_NE(cm.find("out of range"), std::string::npos) << cm;
  auto gpu = runGpuN(node, bad, 1, opset);
  ASSERT_FALSE(static_cast<bool>(gpu)) << node.proto().op_type() << ": GPU did not fail";
  std::string gm = llvm::toString(gpu.takeError());
  EXPECT_NE(gm.find("out of range"), std::string::npos) << gm;
  EXPECT_NE(gm.find(node.proto().name()), std::string::npos) << gm;
  exact(node, std::move(good), opset);
}

const DType kSumTypes[] = {DType::Float, DType::Double, DType::Float16, DType::BFloat16,
                           DType::Int32, DType::Int64};

//===----------------------------------------------------------------------===//
// CumSum
//===----------------------------------------------------------------------===//

Node cumSum(bool exclusive, bool reverse) {
  Node n("CumSum");
  n.i("exclusive", exclusive).i("reverse", reverse);
  return n;
}

TEST(CudaCumSum, AxesExclusiveReverse) {
  const std::vector<int64_t> shapes[] = {{37}, {3, 50}, {2, 3, 4}, {4, 1, 33, 2}};
  for (DType dt : kSumTypes)
    for (const auto &shape : shapes) {
      int64_t r = static_cast<int64_t>(shape.size());
      for (int64_t axis = -r; axis < r; ++axis)
        for (int flags = 0; flags < 4; ++flags) {
          SCOPED_TRACE(std::string(dtypeName(dt)) + " " + str(shape) + " axis " +
                       std::to_string(axis) + " flags " + std::to_string(flags));
          Tensor x = randomTensor(dt, shape, static_cast<unsigned>(axis + 10 * flags + 3), -100,
                                  100);
          Tensor a = flags % 2 ? I64({}, {axis}) : I32({1}, {static_cast<int32_t>(axis)});
          exact(cumSum(flags & 1, flags & 2), {x, a});
        }
    }
}

TEST(CudaCumSum, LongLinesEmptyAndErrors) {
  exact(cumSum(false, false), {randomTensor(DType::Float, {2, 5000}, 1), I64({}, {1})});
  exact(cumSum(true, true), {randomTensor(DType::Float16, {3000, 4}, 2), I64({}, {0})});
  exact(cumSum(false, false), {I32({3}, {2147483647, 1, 1}), I64({}, {0})}); // wraps
  exact(cumSum(false, false), {Tensor::zeros(DType::Float, {2, 0, 3}), I64({}, {1})});
  Tensor x = randomTensor(DType::Float, {2, 3}, 3);
  bothFail(cumSum(false, false), {x, I64({}, {2})}, "out of range for rank 2");
  bothFail(cumSum(false, false), {x, I64v({0, 1})}, "axis must be a 0-d or one-element");
  bothFail(cumSum(false, false), {Tensor::zeros(DType::Bool, {2}), I64({}, {0})},
           "unsupported dtype");
}

//===----------------------------------------------------------------------===//
// GatherND
//===----------------------------------------------------------------------===//

Node gatherND(int64_t b) {
  Node n("GatherND");
  n.i("batch_dims", b);
  return n;
}

/// Random tuples valid for data axes [b, b + k), both signs.
Tensor tuples(std::vector<int64_t> idxShape, const std::vector<int64_t> &dataShape, int64_t b,
              unsigned seed) {
  Tensor t = Tensor::zeros(DType::Int64, idxShape);
  int64_t k = idxShape.back();
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t d = dataShape[b + i % k];
    std::uniform_int_distribution<int64_t> u(-d, d - 1);
    t.data<int64_t>()[i] = u(rng);
  }
  return t;
}

TEST(CudaGatherND, ShapesAndBatchDims) {
  struct Case {
    std::vector<int64_t> data, idx;
    int64_t b;
  };
  const Case cases[] = {
      {{5}, {3, 1}, 0},          {{4, 3}, {2}, 0},          {{4, 3}, {2, 2}, 0},
      {{64, 16}, {2, 7, 1}, 0},  {{2, 3, 4}, {2, 2, 2}, 0}, {{2, 3, 4}, {3, 3}, 0},
      {{2, 3, 4}, {2, 5, 2}, 1}, {{2, 3, 4, 2}, {2, 3, 1}, 2},
  };
  for (DType dt : {DType::Float, DType::Float16, DType::Double, DType::Int32, DType::Bool})
    for (const Case &c : cases) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + " data " + str(c.data) + " indices " +
                   str(c.idx) + " b " + std::to_string(c.b));
      exact(gatherND(c.b), {randomTensor(dt, c.data, 7), tuples(c.idx, c.data, c.b, 8)});
    }
}

TEST(CudaGatherND, Errors) {
  Tensor data = randomTensor(DType::Float, {2, 3}, 1);
  faultsOutOfRange(gatherND(0), {data, I64({2, 2}, {1, 3, 0, 0})},
                   {data, I64({2, 2}, {1, 2, 0, -3})});
  faultsOutOfRange(gatherND(1), {data, I64({2, 1}, {0, -4})}, {data, I64({2, 1}, {0, -3})});
  bothFail(gatherND(0), {data, I64({1, 3}, {0, 0, 0})}, "last dim of indices");
  bothFail(gatherND(0), {data, I32({1, 2}, {0, 0})}, "int64 indices");
  bothFail(gatherND(1), {data, I64({3, 1}, {0, 0, 0})}, "(batch) dims");
}

//===----------------------------------------------------------------------===//
// ScatterND
//===----------------------------------------------------------------------===//

Node scatterND(const std::string &red) {
  Node n("ScatterND");
  n.s("reduction", red);
  return n;
}

/// `n` tuples of k components for data axes [0, k): distinct unless `dups`
/// (then every third repeats the one before it, written with negative
/// components).
Tensor scatterTuples(int64_t n, int64_t k, const std::vector<int64_t> &ds, bool dups,
                     unsigned seed) {
  std::vector<int64_t> space(ds.begin(), ds.begin() + k);
  int64_t cells = 1;
  for (int64_t d : space)
    cells *= d;
  std::vector<int64_t> all(static_cast<size_t>(cells));
  for (int64_t i = 0; i < cells; ++i)
    all[i] = i;
  std::mt19937 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  Tensor t = Tensor::zeros(DType::Int64, {n, k});
  for (int64_t j = 0; j < n; ++j) {
    bool repeat = dups && j % 3 == 2;
    int64_t cell = all[repeat ? j - 1 : j];
    for (int64_t m = k - 1; m >= 0; --m) {
      int64_t v = cell % space[m];
      cell /= space[m];
      t.data<int64_t>()[j * k + m] = repeat ? v - space[m] : v;
    }
  }
  return t;
}

TEST(CudaScatterND, ReductionsAndShapes) {
  struct Case {
    std::vector<int64_t> data;
    int64_t n, k;
  };
  const Case cases[] = {{{300}, 40, 1},      {{4, 3}, 3, 1},      {{6, 5}, 9, 2},
                        {{2, 3, 40}, 5, 2},  {{2, 3, 4}, 7, 3},   {{2, 1, 3, 3}, 2, 3}};
  for (DType dt : kSumTypes)
    for (const Case &c : cases)
      for (const char *red : {"none", "add", "mul", "max", "min"}) {
        bool dups = std::string(red) != "none"; // the order of duplicates is unspecified
        SCOPED_TRACE(std::string(dtypeName(dt)) + " data " + str(c.data) + " k " +
                     std::to_string(c.k) + " " + red + (dups ? " with duplicates" : ""));
        std::vector<int64_t> us = {c.n};
        us.insert(us.end(), c.data.begin() + c.k, c.data.end());
        exact(scatterND(red),
              {randomTensor(dt, c.data, 3), scatterTuples(c.n, c.k, c.data, dups, 4),
               randomTensor(dt, us, 5)},
              18);
      }
  // Without a reduction any dtype moves (bool: a mask).
  exact(scatterND("none"), {randomTensor(DType::Bool, {4, 6}, 1),
                            scatterTuples(3, 1, {4, 6}, false, 2),
                            randomTensor(DType::Bool, {3, 6}, 3)});
}

TEST(CudaScatterND, Errors) {
  Tensor data = randomTensor(DType::Float, {2, 3}, 1);
  Tensor u = randomTensor(DType::Float, {2, 3}, 2);
  faultsOutOfRange(scatterND("none"), {data, I64({2, 1}, {0, 2}), u},
                   {data, I64({2, 1}, {0, -1}), u});
  faultsOutOfRange(scatterND("add"), {data, I64({2, 1}, {-3, 1}), u},
                   {data, I64({2, 1}, {-2, 1}), u});
  bothFail(scatterND("none"), {data, I64({1, 1}, {0}), randomTensor(DType::Float, {1, 2}, 3)},
           "updates float32[1,2]");
  bothFail(scatterND("max"), {data, I64({1, 1}, {0}), randomTensor(DType::Float, {1, 3}, 3)}, 1,
           16, "unsupported reduction 'max'");
  bothFail(scatterND("add"),
           {Tensor::zeros(DType::Bool, {2}), I64({1, 1}, {0}), Tensor::zeros(DType::Bool, {1})},
           "unsupported dtype bool");
}

} // namespace
} // namespace qn::rt::testing
