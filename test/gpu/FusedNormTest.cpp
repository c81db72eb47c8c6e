//===- FusedNormTest.cpp - Residual + LayerNormalization in one kernel ----===//
//
// Small graphs through the CUDA executor: a bias Add and a residual Add (one
// fusion group) feeding a LayerNormalization, which the executor runs as one
// kernel (Fusion.h, findNormFusions). The outputs must match the same graph
// run with fusion off (the group's nodes, then the LayerNormalization kernel)
// for every float dtype, both row kernels (warp and block per row), the
// sum written or not, and the shapes that fall back.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include "qn/runtime/Executor.h"
#include "qn/runtime/TensorProto.h"

#include <onnx/defs/parser.h>

#include "gtest/gtest.h"

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {

std::string typeName(DType dt) {
  switch (dt) {
  case DType::Float16: return "float16";
  case DType::BFloat16: return "bfloat16";
  default: return "float";
  }
}

/// h + b + x (x broadcast over the leading axis), LayerNormalization of the
/// sum along `axis`; with `residual` the sum is read again after it (z).
std::string graphText(DType dt, int64_t c, bool residual, int axis = -1) {
  std::string t = typeName(dt), C = std::to_string(c);
  std::string s = "<ir_version: 8, opset_import: [\"\" : 17]>\n"
                  "g (" + t + "[3,5," + C + "] h, " + t + "[" + C + "] b, " + t + "[5," + C +
                  "] x, " + t + "[" + C + "] s, " + t + "[" + C + "] c) => (" + t + "[3,5," + C +
                  "] n" + (residual ? ", " + t + "[3,5," + C + "] z" : std::string()) + ") {\n"
                  "  hb = Add(h, b)\n"
                  "  r = Add(hb, x)\n"
                  "  n = LayerNormalization <axis = " + std::to_string(axis) +
                  ", epsilon = 0.00001> (r, s, c)\n";
  if (residual)
    s += "  z = Add(r, n)\n";
  return s + "}\n";
}

std::vector<Tensor> runGraph(const std::string &text, const llvm::StringMap<Tensor> &feeds,
                             bool fuse) {
  RankProgram p;
  auto status = onnx::OnnxParser::Parse(p.model, text.c_str());
  EXPECT_TRUE(status.IsOK()) << status.ErrorMessage();
  CudaOptions opts;
  opts.fuseElementwise = fuse;
  auto ex = createCudaExecutor(std::move(p), opts, nullptr);
  if (!ex) {
    ADD_FAILURE() << llvm::toString(ex.takeError());
    return {};
  }
  std::vector<Tensor> last;
  for (int run = 0; run < 3; ++run) { // eager, captured, replayed
    auto r = (*ex)->run(feeds);
    if (!r) {
      ADD_FAILURE() << llvm::toString(r.takeError());
      return {};
    }
    if (run > 0) {
      EXPECT_EQ(r->size(), last.size());
      for (size_t k = 0; k < r->size() && k < last.size(); ++k)
        for (int64_t i = 0; i < last[k].numel(); ++i)
          EXPECT_EQ(elementAt((*r)[k], i), elementAt(last[k], i)) << "run " << run;
    }
    last = std::move(*r);
  }
  return last;
}

void check(DType dt, int64_t c, bool residual, int axis = -1) {
  SCOPED_TRACE(typeName(dt) + " cols " + std::to_string(c) + (residual ? " residual" : "") +
               " axis " + std::to_string(axis));
  llvm::StringMap<Tensor> feeds;
  feeds["h"] = randomTensor(dt, {3, 5, c}, 1);
  feeds["b"] = randomTensor(dt, {c}, 2);
  feeds["x"] = randomTensor(dt, {5, c}, 3);
  feeds["s"] = randomTensor(dt, {c}, 4, 0.5, 1.5);
  feeds["c"] = randomTensor(dt, {c}, 5);
  std::string text = graphText(dt, c, residual, axis);
  std::vector<Tensor> fused = runGraph(text, feeds, true), plain = runGraph(text, feeds, false);
  ASSERT_EQ(fused.size(), residual ? 2u : 1u);
  ASSERT_EQ(plain.size(), fused.size());
  // Only the order of the float sums differs: an ulp or so of the output.
  double tol = dt == DType::Float ? 2e-5 : dt == DType::Float16 ? 4e-3 : 3e-2;
  for (size_t k = 0; k < fused.size(); ++k) {
    ASSERT_EQ(fused[k].shape(), plain[k].shape());
    ASSERT_EQ(fused[k].dtype(), dt);
    int bad = 0;
    for (int64_t i = 0; i < plain[k].numel() && bad < 5; ++i) {
      double a = elementAt(fused[k], i), e = elementAt(plain[k], i);
      if (!(std::fabs(a - e) <= tol * std::max(1.0, std::fabs(e)))) {
        ADD_FAILURE() << "output " << k << " element " << i << ": " << a << " vs " << e;
        ++bad;
      }
    }
  }
}

TEST(CudaFusedLayerNorm, MatchesTheUnfusedNodes) {
  for (DType dt : {DType::Float, DType::Float16, DType::BFloat16})
    for (bool residual : {true, false}) {
      check(dt, 40, residual);  // warp per row
      check(dt, 700, residual); // block per row
    }
}

TEST(CudaFusedLayerNorm, FallsBack) {
  check(DType::Float, 5000, true);   // longer rows than the fused kernel holds
  check(DType::Float, 40, true, 1);  // normalised over two axes
}

} // namespace
