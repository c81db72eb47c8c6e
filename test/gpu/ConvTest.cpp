//===- ConvTest.cpp - CUDA Conv against the CPU kernel ---------------------===//
//
// Small integers (-3..3) with small K: im2col + GEMM is exact on both devices
// in every dtype (float16 / bfloat16 accumulate in float32 and round once on
// both), so any indexing mistake shows as a mismatch. One random-valued case
// per dtype checks precision.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include <random>
#include <string>
#include <vector>

namespace qn::rt::testing {
namespace {

const DType kFloatTypes[] = {DType::Float, DType::Double, DType::Float16, DType::BFloat16};

Tensor intTensor(DType dt, std::vector<int64_t> shape, unsigned seed) {
  Tensor t = Tensor::zeros(dt, shape);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-3, 3);
  for (int64_t i = 0; i < t.numel(); ++i)
    setFloatElement(t, i, static_cast<float>(u(rng)));
  return t;
}

struct Case {
  std::string name;
  std::vector<int64_t> x, w;
  bool bias;
  Node node;
};

Node conv() { return Node("Conv"); }

std::vector<Case> cases() {
  std::vector<Case> cs;
  cs.push_back({"1d", {2, 3, 11}, {4, 3, 3}, true, conv()});
  cs.push_back({"1d strided padded dilated", {2, 4, 17}, {6, 4, 5}, false,
                std::move(conv().ints("strides", {2}).ints("dilations", {2}).ints("pads", {3, 1}))});
  cs.push_back({"1d pointwise", {2, 5, 9}, {3, 5, 1}, true, conv()});
  cs.push_back({"2d", {2, 3, 7, 6}, {5, 3, 3, 2}, true, conv()});
  cs.push_back({"2d pads", {1, 2, 8, 8}, {4, 2, 3, 3}, true,
                std::move(conv().ints("pads", {1, 1, 1, 1}))});
  cs.push_back({"2d strides dilations", {2, 3, 9, 10}, {4, 3, 3, 3}, false,
                std::move(conv().ints("strides", {2, 3}).ints("dilations", {2, 1}).ints("pads", {1, 0, 2, 2}))});
  cs.push_back({"patch embedding", {2, 3, 16, 16}, {8, 3, 4, 4}, true,
                std::move(conv().ints("strides", {4, 4}).ints("kernel_shape", {4, 4}))});
  cs.push_back({"3d", {1, 2, 5, 6, 4}, {3, 2, 2, 3, 2}, true,
                std::move(conv().ints("strides", {1, 2, 1}).ints("pads", {1, 0, 1, 0, 1, 1}))});
  cs.push_back({"groups", {2, 4, 9}, {6, 2, 3}, true,
                std::move(conv().i("group", 2).ints("pads", {1, 1}))});
  cs.push_back({"depthwise", {2, 6, 7, 7}, {6, 1, 3, 3}, true,
                std::move(conv().i("group", 6).ints("strides", {2, 2}).ints("pads", {1, 1, 1, 1}))});
  cs.push_back({"groups pointwise", {2, 6, 5, 5}, {9, 2, 1, 1}, false,
                std::move(conv().i("group", 3))});
  cs.push_back({"same upper", {1, 2, 7, 9}, {3, 2, 3, 4}, true,
                std::move(conv().s("auto_pad", "SAME_UPPER").ints("strides", {2, 2}))});
  cs.push_back({"same lower", {1, 2, 7, 9}, {3, 2, 3, 4}, true,
                std::move(conv().s("auto_pad", "SAME_LOWER").ints("strides", {2, 2}))});
  cs.push_back({"valid", {1, 2, 7, 9}, {3, 2, 3, 4}, false,
                std::move(conv().s("auto_pad", "VALID"))});
  return cs;
}

TEST(CudaConv, MatchesCpuExactly) {
  unsigned seed = 1;
  for (DType dt : kFloatTypes)
    for (const Case &c : cases()) {
      SCOPED_TRACE(c.name + " " + dtypeName(dt));
      std::vector<Tensor> ins = {intTensor(dt, c.x, seed), intTensor(dt, c.w, seed + 100)};
      if (c.bias)
        ins.push_back(intTensor(dt, {c.w[0]}, seed + 200));
      expectGpuMatchesCpu(c.node, ins, 1, 0, 0);
      ++seed;
    }
}

TEST(CudaConv, RandomValues) {
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtypeName(dt));
    double tol = dt == DType::Double ? 1e-10 : dt == DType::Float ? 1e-4 : dt == DType::Float16 ? 5e-3 : 3e-2;
    Node n = conv();
    n.ints("strides", {2, 2}).ints("pads", {1, 1, 1, 1});
    expectGpuMatchesCpu(n,
                        {randomTensor(dt, {2, 8, 12, 12}, 3), randomTensor(dt, {16, 8, 3, 3}, 4),
                         randomTensor(dt, {16}, 5)},
                        1, tol, tol * 10);
  }
}

TEST(CudaConv, EmptyAndNoChannels) {
  expectGpuMatchesCpu(conv(), {Tensor::zeros(DType::Float, {0, 2, 5}),
                               Tensor::zeros(DType::Float, {3, 2, 2})});
  expectGpuMatchesCpu(conv(), {Tensor::zeros(DType::Float, {2, 0, 5}),
                               Tensor::zeros(DType::Float, {3, 0, 2}), intTensor(DType::Float, {3}, 1)});
}

TEST(CudaConv, ErrorsAsOnCpu) {
  Tensor x = Tensor::zeros(DType::Float, {1, 4, 8, 8});
  Tensor w = Tensor::zeros(DType::Float, {6, 4, 3, 3});
  bothFail(conv(), {x, Tensor::zeros(DType::Float, {6, 3, 3, 3})}, "input channels");
  bothFail(std::move(conv().i("group", 3)), {x, w}, "group=3");
  bothFail(std::move(conv().s("auto_pad", "FULL")), {x, w}, "auto_pad");
  bothFail(conv(), {x, w, Tensor::zeros(DType::Float, {5})}, "B ");
  bothFail(std::move(conv().ints("dilations", {4, 1})), {x, w}, "does not fit");
}

} // namespace
} // namespace qn::rt::testing
