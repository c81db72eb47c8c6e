//===- MatMulTest.cpp - CUDA MatMul and Gemm against the CPU kernels -------===//
//
// Layout tests use small integers (-3..3) with small K, for which every path
// (cuBLAS, cuBLASLt, TF32, float16, bfloat16, the CPU's float32 GEMM) is exact:
// any indexing / transposition / broadcasting mistake shows as a mismatch.
// Precision tests use uniform random values with tolerances per dtype.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace qn::rt::testing {
namespace {

const DType kFloatTypes[] = {DType::Float, DType::Double, DType::Float16, DType::BFloat16};

/// Integers uniform in [-3, 3] as `dt`.
Tensor intTensor(DType dt, std::vector<int64_t> shape, unsigned seed) {
  Tensor t = Tensor::zeros(dt, shape);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-3, 3);
  for (int64_t i = 0; i < t.numel(); ++i)
    setFloatElement(t, i, static_cast<float>(u(rng)));
  return t;
}

/// A tensor of `dt` filled with `v`.
Tensor filled(DType dt, std::vector<int64_t> shape, float v) {
  Tensor t = Tensor::zeros(dt, shape);
  for (int64_t i = 0; i < t.numel(); ++i)
    setFloatElement(t, i, v);
  return t;
}

double rtolFor(DType dt) {
  switch (dt) {
  case DType::Double: return 1e-10;
  case DType::Float16: return 5e-3;
  case DType::BFloat16: return 3e-2;
  default: return 1e-4; // float32, TF32 off
  }
}

std::string tag(DType dt) { return dtypeName(dt); }

/// GPU == CPU exactly.
void expectExact(const Node &node, std::vector<Tensor> ins, const CudaOptions &opts = {}) {
  auto cpu = runN(node, ins);
  ASSERT_TRUE(static_cast<bool>(cpu)) << llvm::toString(cpu.takeError());
  auto gpu = runGpuN(node, ins, 1, 17, opts);
  ASSERT_TRUE(static_cast<bool>(gpu)) << llvm::toString(gpu.takeError());
  ASSERT_EQ(gpu->size(), 1u);
  EXPECT_TRUE(closeTo((*gpu)[0], (*cpu)[0], 0, 0)) << node.proto().op_type();
}

/// GPU close to CPU: rtol relative, and an absolute slack of rtol * sqrt(K)
/// (times `atolScale`) for results that cancel to near zero.
void expectClose(const Node &node, std::vector<Tensor> ins, DType dt, int64_t K,
                 const CudaOptions &opts = {}, double rtol = -1, double atolScale = 1) {
  double rt = rtol < 0 ? rtolFor(dt) : rtol;
  double at = rt * std::sqrt(static_cast<double>(std::max<int64_t>(K, 1))) * atolScale;
  auto cpu = runN(node, ins);
  ASSERT_TRUE(static_cast<bool>(cpu)) << llvm::toString(cpu.takeError());
  auto gpu = runGpuN(node, ins, 1, 17, opts);
  ASSERT_TRUE(static_cast<bool>(gpu)) << llvm::toString(gpu.takeError());
  ASSERT_EQ(gpu->size(), 1u);
  EXPECT_TRUE(closeTo((*gpu)[0], (*cpu)[0], rt, at)) << node.proto().op_type() << " " << tag(dt);
}

Node matmul() { return Node("MatMul"); }
Node gemm(int ta = 0, int tb = 0, float alpha = 1.0f, float beta = 1.0f) {
  Node n("Gemm");
  n.i("transA", ta).i("transB", tb).f("alpha", alpha).f("beta", beta);
  return n;
}

//===----------------------------------------------------------------------===//
// MatMul: layouts (exact)
//===----------------------------------------------------------------------===//

/// [A shape, B shape] pairs, exact in every dtype (K <= 6).
struct Shapes {
  std::vector<int64_t> a, b;
};

void exactAllTypes(const std::vector<Shapes> &cases) {
  unsigned seed = 1;
  for (DType dt : kFloatTypes)
    for (const Shapes &s : cases) {
      SCOPED_TRACE(tag(dt) + " A" + std::to_string(s.a.size()) + "-D, B" +
                   std::to_string(s.b.size()) + "-D, seed " + std::to_string(seed));
      expectExact(matmul(), {intTensor(dt, s.a, seed), intTensor(dt, s.b, seed + 1000)});
      ++seed;
    }
}

TEST(CudaMatMul, TwoD) {
  exactAllTypes({{{5, 6}, {6, 3}}, {{1, 6}, {6, 7}}, {{9, 4}, {4, 1}}, {{1, 1}, {1, 1}},
                 {{5, 1}, {1, 3}}, {{33, 5}, {5, 17}}, {{2, 3}, {3, 300}}, {{300, 2}, {2, 3}}});
}

TEST(CudaMatMul, OneD) {
  exactAllTypes({{{6}, {6, 4}},          // 1-D x 2-D: [4]
                 {{5, 6}, {6}},          // 2-D x 1-D: [5]
                 {{6}, {6}},             // 1-D x 1-D: scalar
                 {{1}, {1}},             // K = 1
                 {{4}, {2, 4, 3}},       // 1-D x 3-D: [2,3] (strided, A stride 0)
                 {{2, 3, 4}, {4}},       // 3-D x 1-D: [2,3] (folded, N = 1)
                 {{4}, {2, 3, 4, 5}},    // 1-D x 4-D
                 {{2, 3, 5, 4}, {4}}});  // 4-D x 1-D
}

TEST(CudaMatMul, ActivationTimesWeight) {
  // The folded path: A's batch into M.
  exactAllTypes({{{2, 5, 6}, {6, 3}},
                 {{3, 2, 5, 6}, {6, 7}},
                 {{2, 5, 6}, {1, 6, 3}},    // B's batch dims all 1
                 {{2, 1, 5, 6}, {1, 1, 6, 3}},
                 {{1, 5, 6}, {6, 3}},
                 {{7, 1, 6}, {6, 3}}});     // M = 1 per batch
}

TEST(CudaMatMul, AttentionLike) {
  exactAllTypes({{{2, 4, 9, 6}, {2, 4, 6, 9}},   // Q K^T
                 {{2, 4, 9, 5}, {2, 4, 5, 6}},   // scores V
                 {{1, 3, 1, 6}, {1, 3, 6, 11}},  // one query token
                 {{2, 4, 9, 6}, {1, 4, 6, 9}},   // leading broadcast (stride 0 on B over dim 0)
                 {{2, 1, 9, 6}, {2, 4, 6, 9}}}); // A broadcast over heads
}

TEST(CudaMatMul, BroadcastBatch) {
  exactAllTypes({{{2, 1, 3, 4}, {1, 3, 4, 5}},   // not one stride per operand: outer loop
                 {{1, 3, 3, 4}, {2, 1, 4, 5}},
                 {{3, 4}, {2, 4, 5}},            // A shared
                 {{1, 3, 4}, {2, 4, 5}},
                 {{2, 3, 4}, {1, 4, 5}},
                 {{2, 1, 3, 4}, {3, 4, 5}},
                 {{3, 1, 3, 4}, {1, 2, 4, 5}},
                 {{4, 1, 2, 3, 4}, {1, 3, 1, 4, 5}},
                 {{2, 3, 2, 3, 4}, {3, 1, 4, 5}},
                 {{2, 1, 2, 3, 4}, {2, 3, 1, 4, 5}},
                 {{1, 1, 3, 4}, {1, 1, 4, 5}},
                 {{2, 3, 1, 1, 6}, {1, 1, 5, 6, 1}}}); // M = N = 1
}

TEST(CudaMatMul, EmptyDims) {
  exactAllTypes({{{0, 4}, {4, 3}},
                 {{3, 4}, {4, 0}},
                 {{3, 0}, {0, 4}},          // K = 0: zeros
                 {{0}, {0}},                // K = 0, 1-D: scalar 0
                 {{2, 3, 0}, {0, 5}},       // K = 0 with batch
                 {{2, 0, 3, 4}, {4, 5}},    // empty batch
                 {{2, 0, 3, 4}, {1, 4, 5}},
                 {{0, 3, 4}, {2, 1, 4, 5}}, // empty batch, broadcast
                 {{2, 3, 4}, {2, 4, 0}}});
}

TEST(CudaMatMul, Repeated) {
  // Same node and shapes several times (no state kept between calls).
  for (int rep = 0; rep < 3; ++rep)
    expectExact(matmul(), {intTensor(DType::Float, {2, 1, 3, 4}, 7 + rep),
                           intTensor(DType::Float, {1, 3, 4, 5}, 17 + rep)});
}

//===----------------------------------------------------------------------===//
// MatMul: precision
//===----------------------------------------------------------------------===//

TEST(CudaMatMul, RandomValues) {
  std::vector<Shapes> cases = {{{33, 65}, {65, 17}},
                               {{4, 31, 96}, {96, 40}},
                               {{2, 4, 17, 32}, {2, 4, 32, 17}},
                               {{2, 1, 16, 24}, {1, 3, 24, 8}},
                               {{128}, {128, 20}},
                               {{3, 20, 128}, {128}},
                               {{70, 1}, {1, 50}}};
  unsigned seed = 100;
  for (DType dt : kFloatTypes)
    for (const Shapes &s : cases) {
      SCOPED_TRACE(tag(dt) + " seed " + std::to_string(seed));
      int64_t K = s.a.back();
      expectClose(matmul(), {randomTensor(dt, s.a, seed), randomTensor(dt, s.b, seed + 1)}, dt, K);
      seed += 2;
    }
}

TEST(CudaMatMul, LargeFloat32NoTf32) {
  // TF32 off: float32 must be float32-accurate also for a larger K.
  Tensor a = randomTensor(DType::Float, {96, 512}, 5), b = randomTensor(DType::Float, {512, 80}, 6);
  expectClose(matmul(), {a, b}, DType::Float, 512);
}

TEST(CudaMatMul, Tf32Allowed) {
  CudaOptions opts;
  opts.allowTf32 = true;
  Tensor a = randomTensor(DType::Float, {64, 256}, 8), b = randomTensor(DType::Float, {256, 48}, 9);
  expectClose(matmul(), {a, b}, DType::Float, 256, opts, 5e-3, 2);
  Tensor a4 = randomTensor(DType::Float, {2, 3, 16, 64}, 10),
         b4 = randomTensor(DType::Float, {2, 3, 64, 16}, 11);
  expectClose(matmul(), {a4, b4}, DType::Float, 64, opts, 5e-3, 2);
  // Exact integers stay exact with TF32.
  expectExact(matmul(), {intTensor(DType::Float, {2, 9, 6}, 12), intTensor(DType::Float, {6, 5}, 13)},
              opts);
  // Gemm with a bias (cuBLASLt) and with a broadcast C (cuBLAS).
  Tensor ga = randomTensor(DType::Float, {40, 128}, 14), gb = randomTensor(DType::Float, {128, 24}, 15);
  expectClose(gemm(), {ga, gb, randomTensor(DType::Float, {24}, 16)}, DType::Float, 128, opts, 5e-3,
              2);
  expectClose(gemm(0, 0, 1.0f, 0.5f), {ga, gb, randomTensor(DType::Float, {40, 1}, 17)},
              DType::Float, 128, opts, 5e-3, 2);
}

//===----------------------------------------------------------------------===//
// MatMul: errors (as on the CPU)
//===----------------------------------------------------------------------===//

TEST(CudaMatMul, Errors) {
  bothFail(matmul(), {F({2, 3}, {1, 2, 3, 4, 5, 6}), F({2, 2}, {1, 2, 3, 4})},
           "inner dimensions differ");
  bothFail(matmul(), {F({2, 2, 3}, std::vector<float>(12, 1)),
                      F({3, 3, 2}, std::vector<float>(18, 1))},
           "batch dimensions do not broadcast");
  bothFail(matmul(), {F({}, {1}), F({1}, {2})}, "rank >= 1");
  bothFail(matmul(), {F({2, 2}, {1, 2, 3, 4}), filled(DType::Double, {2, 2}, 1)},
           "input dtypes differ");
  bothFail(matmul(), {I64({2, 2}, {1, 2, 3, 4}), I64({2, 2}, {1, 2, 3, 4})}, "int64");
  bothFail(matmul(), {F({2, 2}, {1, 2, 3, 4})}, "");
}

//===----------------------------------------------------------------------===//
// Gemm
//===----------------------------------------------------------------------===//

/// A, B shaped for (transA, transB) with op(A) [M,K], op(B) [K,N].
std::vector<int64_t> shapeA(int ta, int64_t M, int64_t K) {
  return ta ? std::vector<int64_t>{K, M} : std::vector<int64_t>{M, K};
}
std::vector<int64_t> shapeB(int tb, int64_t K, int64_t N) {
  return tb ? std::vector<int64_t>{N, K} : std::vector<int64_t>{K, N};
}

/// Every C shape Gemm accepts for [M,N] (empty: no C).
std::vector<std::vector<int64_t>> cShapes(int64_t M, int64_t N) {
  return {{}, {1}, {N}, {1, N}, {M, 1}, {M, N}, {1, 1}};
}

TEST(CudaGemm, TransposesExact) {
  const int64_t M = 7, N = 5, K = 6;
  unsigned seed = 200;
  for (DType dt : kFloatTypes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        SCOPED_TRACE(tag(dt) + " transA=" + std::to_string(ta) + " transB=" + std::to_string(tb));
        Tensor a = intTensor(dt, shapeA(ta, M, K), seed), b = intTensor(dt, shapeB(tb, K, N), seed + 1);
        expectExact(gemm(ta, tb), {a, b});                                     // no C
        expectExact(gemm(ta, tb), {a, b, intTensor(dt, {N}, seed + 2)});       // bias (Lt)
        expectExact(gemm(ta, tb), {a, b, intTensor(dt, {1, N}, seed + 3)});    // bias (Lt)
        expectExact(gemm(ta, tb), {a, b, intTensor(dt, {M, N}, seed + 4)});    // full C
        expectExact(gemm(ta, tb, 0.5f, -2.0f), {a, b, intTensor(dt, {M, 1}, seed + 5)});
        seed += 6;
      }
}

TEST(CudaGemm, EveryCShapeExact) {
  const int64_t M = 6, N = 9, K = 4;
  unsigned seed = 300;
  for (DType dt : kFloatTypes)
    for (float beta : {1.0f, 2.0f, -0.5f, 0.0f})
      for (const auto &cs : cShapes(M, N)) {
        SCOPED_TRACE(tag(dt) + " beta=" + std::to_string(beta) + " C rank " +
                     std::to_string(cs.size()));
        for (int ta = 0; ta < 2; ++ta) {
          Tensor a = intTensor(dt, shapeA(ta, M, K), seed), b = intTensor(dt, shapeB(1 - ta, K, N), seed + 1);
          expectExact(gemm(ta, 1 - ta, 1.0f, beta), {a, b, intTensor(dt, cs, seed + 2)});
          expectExact(gemm(ta, 1 - ta, 0.25f, beta), {a, b, intTensor(dt, cs, seed + 3)});
          seed += 4;
        }
      }
}

TEST(CudaGemm, BetaZeroIgnoresC) {
  // beta == 0: C is not read (a NaN in C does not reach Y).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(tag(dt));
    Tensor a = intTensor(dt, {4, 3}, 1), b = intTensor(dt, {3, 5}, 2);
    expectExact(gemm(0, 0, 1.0f, 0.0f), {a, b, filled(dt, {5}, nan)});
    expectExact(gemm(0, 0, 2.0f, 0.0f), {a, b, filled(dt, {4, 5}, nan)});
  }
}

TEST(CudaGemm, LeftOutC) {
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(tag(dt));
    Tensor a = intTensor(dt, {4, 3}, 3), b = intTensor(dt, {3, 5}, 4);
    expectExact(gemm(0, 0, 1.0f, 1.0f), {a, b, Tensor()}); // empty name: no C
    expectExact(gemm(0, 0, -1.5f, 3.0f), {a, b});
  }
}

TEST(CudaGemm, DegenerateShapes) {
  unsigned seed = 400;
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(tag(dt));
    struct Case {
      int64_t M, N, K;
    };
    for (Case c : {Case{1, 5, 4}, Case{5, 1, 4}, Case{5, 4, 1}, Case{1, 1, 1}, Case{1, 1, 6},
                   Case{0, 4, 3}, Case{4, 0, 3}, Case{3, 4, 0}, Case{0, 0, 0}}) {
      SCOPED_TRACE("M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
                   " K=" + std::to_string(c.K));
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          Tensor a = intTensor(dt, shapeA(ta, c.M, c.K), seed),
                 b = intTensor(dt, shapeB(tb, c.K, c.N), seed + 1);
          expectExact(gemm(ta, tb), {a, b});
          expectExact(gemm(ta, tb, 1.0f, 1.0f), {a, b, intTensor(dt, {c.N}, seed + 2)});
          // K = 0: Y = beta * C (broadcast), exact for these values.
          expectExact(gemm(ta, tb, 0.5f, 2.0f), {a, b, intTensor(dt, {c.M, 1}, seed + 3)});
          expectExact(gemm(ta, tb, 0.5f, -0.5f), {a, b, intTensor(dt, {}, seed + 4)});
          seed += 5;
        }
    }
  }
}

TEST(CudaGemm, RandomValues) {
  const int64_t M = 45, N = 70, K = 96;
  unsigned seed = 500;
  for (DType dt : kFloatTypes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        SCOPED_TRACE(tag(dt) + " transA=" + std::to_string(ta) + " transB=" + std::to_string(tb));
        Tensor a = randomTensor(dt, shapeA(ta, M, K), seed), b = randomTensor(dt, shapeB(tb, K, N), seed + 1);
        expectClose(gemm(ta, tb), {a, b, randomTensor(dt, {N}, seed + 2)}, dt, K);       // Lt bias
        expectClose(gemm(ta, tb, 0.3f, 1.0f), {a, b, randomTensor(dt, {1, N}, seed + 3)}, dt, K);
        expectClose(gemm(ta, tb, 0.7f, 0.3f), {a, b, randomTensor(dt, {M, N}, seed + 4)}, dt, K);
        expectClose(gemm(ta, tb, 1.25f, -1.5f), {a, b, randomTensor(dt, {M, 1}, seed + 5)}, dt, K);
        expectClose(gemm(ta, tb, 1.0f, 0.5f), {a, b, randomTensor(dt, {}, seed + 6)}, dt, K);
        expectClose(gemm(ta, tb, 2.0f, 1.0f), {a, b}, dt, K);
        seed += 7;
      }
}

TEST(CudaGemm, LinearLayerSizes) {
  // Transformer-like projections (transB = 1 as exported by PyTorch), bias epilogue.
  unsigned seed = 600;
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(tag(dt));
    Tensor x = randomTensor(dt, {128, 256}, seed), w = randomTensor(dt, {192, 256}, seed + 1, -0.2, 0.2);
    Tensor bias = randomTensor(dt, {192}, seed + 2);
    for (int rep = 0; rep < 2; ++rep) // second time: cached heuristic
      expectClose(gemm(0, 1), {x, w, bias}, dt, 256, {}, -1, 0.2);
    seed += 3;
  }
}

TEST(CudaGemm, Errors) {
  Tensor a = F({2, 3}, {1, 2, 3, 4, 5, 6}), b = F({3, 2}, {1, 2, 3, 4, 5, 6});
  bothFail(gemm(), {a, F({2, 2}, {1, 2, 3, 4})}, "inner dimensions differ");
  bothFail(gemm(1, 0), {a, b}, "inner dimensions differ");
  bothFail(gemm(), {F({6}, {1, 2, 3, 4, 5, 6}), b}, "must be 2-D");
  bothFail(gemm(), {F({1, 2, 3}, {1, 2, 3, 4, 5, 6}), b}, "must be 2-D");
  bothFail(gemm(), {a, b, F({3}, {1, 2, 3})}, "does not broadcast");
  bothFail(gemm(), {a, b, F({3, 2}, {1, 2, 3, 4, 5, 6})}, "does not broadcast");
  bothFail(gemm(), {a, b, F({1, 1, 2}, {1, 2})}, "does not broadcast");
  bothFail(gemm(), {a, b, filled(DType::Double, {2}, 1)}, "input dtypes differ");
  bothFail(gemm(), {a, filled(DType::Float16, {3, 2}, 1)}, "input dtypes differ");
  bothFail(gemm(), {I64({2, 2}, {1, 2, 3, 4}), I64({2, 2}, {1, 2, 3, 4})}, "int64");
  bothFail(gemm(), {a}, "");
}

} // namespace
} // namespace qn::rt::testing
