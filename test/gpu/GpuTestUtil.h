//===- GpuTestUtil.h - Helpers of the CUDA kernel tests ---------*- C++ -*-===//
//
// Each test runs one node on the CUDA device and on the CPU device (the
// reference, itself tested against naive loops in test/unit/runtime) and
// compares. The binary exits 77 (ctest: skipped) where no GPU is present.
//
//===----------------------------------------------------------------------===//
#pragma once
#include "../unit/runtime/KernelTestUtil.h"
#include "qn/runtime/Cuda.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace qn::rt::testing {

/// Runs `node` on the GPU; inputs/outputs are host tensors.
inline llvm::Expected<std::vector<Tensor>> runGpuN(const Node &node, std::vector<Tensor> ins,
                                                   size_t nOut = 1, int opset = 17,
                                                   const CudaOptions &opts = {}) {
  return runNodeOnCuda(node.proto(), ins, nOut, opset, opts);
}

/// Element i of a floating tensor (float32, float64, float16, bfloat16) set
/// to v (rounded to the dtype); false for other dtypes.
inline bool setFloatElement(Tensor &t, int64_t i, double v) {
  switch (t.dtype()) {
  case DType::Float: t.data<float>()[i] = static_cast<float>(v); return true;
  case DType::Double: t.data<double>()[i] = v; return true;
  case DType::Float16: t.data<uint16_t>()[i] = floatToHalf(static_cast<float>(v)); return true;
  case DType::BFloat16: t.data<uint16_t>()[i] = floatToBf16(static_cast<float>(v)); return true;
  default: return false;
  }
}

/// A random tensor: floats uniform in [lo, hi) (converted for float16 /
/// bfloat16 / float64), integers uniform in [lo, hi], bools 0/1.
inline Tensor randomTensor(DType dt, std::vector<int64_t> shape, unsigned seed, double lo = -2,
                           double hi = 2) {
  Tensor t = Tensor::zeros(dt, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    double v = u(rng);
    if (setFloatElement(t, i, v))
      continue;
    switch (dt) {
    case DType::Int64: t.data<int64_t>()[i] = static_cast<int64_t>(std::floor(v)); break;
    case DType::Int32: t.data<int32_t>()[i] = static_cast<int32_t>(std::floor(v)); break;
    case DType::Int8: t.data<int8_t>()[i] = static_cast<int8_t>(std::floor(v)); break;
    case DType::UInt8: t.data<uint8_t>()[i] = static_cast<uint8_t>(std::floor(std::fabs(v))); break;
    case DType::Bool: t.data<uint8_t>()[i] = v > (lo + hi) / 2 ? 1 : 0; break;
    default: break;
    }
  }
  return t;
}

/// Element i of a host tensor as double.
inline double elementAt(const Tensor &t, int64_t i) {
  switch (t.dtype()) {
  case DType::Float: return t.data<float>()[i];
  case DType::Double: return t.data<double>()[i];
  case DType::Float16: return halfToFloat(t.data<uint16_t>()[i]);
  case DType::BFloat16: return bf16ToFloat(t.data<uint16_t>()[i]);
  case DType::Int64: return static_cast<double>(t.data<int64_t>()[i]);
  case DType::Int32: return t.data<int32_t>()[i];
  case DType::Int8: return t.data<int8_t>()[i];
  case DType::UInt8:
  case DType::Bool: return t.data<uint8_t>()[i];
  default: return std::nan("");
  }
}

/// Same dtype and shape, and every element within atol + rtol * |ref|
/// (NaNs must match NaNs, infinities must match exactly).
inline ::testing::AssertionResult closeTo(const Tensor &got, const Tensor &ref, double rtol,
                                          double atol) {
  if (got.dtype() != ref.dtype() || got.shape() != ref.shape())
    return ::testing::AssertionFailure() << "got " << got.describe() << ", want " << ref.describe();
  int64_t bad = 0, first = -1;
  double worst = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    double a = elementAt(got, i), b = elementAt(ref, i);
    bool ok = (std::isnan(a) && std::isnan(b)) || a == b ||
              (std::isfinite(a) && std::isfinite(b) && std::fabs(a - b) <= atol + rtol * std::fabs(b));
    if (!ok) {
      if (first < 0)
        first = i;
      ++bad;
      worst = std::max(worst, std::fabs(a - b));
    }
  }
  if (bad == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << ref.numel() << " elements differ; first at " << first << ": got "
         << elementAt(got, first) << ", want " << elementAt(ref, first) << "; worst |diff| "
         << worst;
}

/// "[2,3]".
inline std::string str(const std::vector<int64_t> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

/// A tolerance: |got - want| <= atol + rtol * |want|.
struct Tol {
  double rtol, atol;
};

/// Both devices fail, with the same message (which names the node and
/// contains `needle`).
inline void bothFail(const Node &node, std::vector<Tensor> ins, size_t nOut, int opset = 17,
                     const std::string &needle = "") {
  auto cpu = runN(node, ins, nOut, opset);
  ASSERT_FALSE(static_cast<bool>(cpu)) << node.proto().op_type() << ": CPU did not fail";
  std::string cm = llvm::toString(cpu.takeError());
  auto gpu = runGpuN(node, ins, nOut, opset);
  ASSERT_FALSE(static_cast<bool>(gpu)) << node.proto().op_type() << ": GPU did not fail";
  std::string gm = llvm::toString(gpu.takeError());
  EXPECT_EQ(gm, cm);
  EXPECT_NE(gm.find(node.proto().name()), std::string::npos) << gm;
  EXPECT_NE(gm.find(needle), std::string::npos) << gm;
}
/// The same for one output at opset 17.
inline void bothFail(const Node &node, std::vector<Tensor> ins, const std::string &needle = "") {
  bothFail(node, std::move(ins), 1, 17, needle);
}

/// Runs `node` on both devices and compares output by output.
inline void expectGpuMatchesCpu(const Node &node, std::vector<Tensor> ins, size_t nOut = 1,
                                double rtol = 1e-5, double atol = 1e-6, int opset = 17) {
  auto cpu = runN(node, ins, nOut, opset);
  ASSERT_TRUE(static_cast<bool>(cpu)) << llvm::toString(cpu.takeError());
  auto gpu = runGpuN(node, ins, nOut, opset);
  ASSERT_TRUE(static_cast<bool>(gpu)) << llvm::toString(gpu.takeError());
  ASSERT_EQ(gpu->size(), cpu->size());
  for (size_t i = 0; i < nOut; ++i)
    EXPECT_TRUE(closeTo((*gpu)[i], (*cpu)[i], rtol, atol))
        << node.proto().op_type() << " output " << i;
}

} // namespace qn::rt::testing
