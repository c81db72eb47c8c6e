//===- ShapeTest.cpp - CUDA shape and data-movement kernels vs the CPU ----===//
//
// Transpose, Slice, Concat, Split, Expand, Gather, Trilu and the
// metadata-only ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Shape,
// Constant). Data movement is exact: every output must equal the CPU's bit
// for bit, in every element size (bool/int8/uint8, float16/bfloat16,
// float32/int32, float64/int64). Values are distinct across positions so
// that an indexing mistake shows. Shapes exercise each path of the strided
// copy: contiguous (one memcpy), widened 16/8/4-byte words, the generic
// kernel, shared-memory transpose tiles, ranks above 8, and 32/64-bit index
// arithmetic.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include "qn/runtime/TensorProto.h"

#include <numeric>
#include <string>
#include <vector>

namespace qn::rt::testing {
namespace {

const DType kAllTypes[] = {DType::Float, DType::Float16, DType::BFloat16, DType::Double,
                           DType::Int64, DType::Int32,   DType::Int8,     DType::UInt8,
                           DType::Bool};

/// Position-dependent values of `dt` (distinct for neighbours).
Tensor values(DType dt, std::vector<int64_t> shape, unsigned seed = 0) {
  Tensor t = Tensor::zeros(dt, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t h = (i * 7919 + seed * 104729) % 251 - 125; // in [-125, 125]
    float f = static_cast<float>(h) + 0.25f * static_cast<float>(i % 4);
    switch (dt) {
    case DType::Float: t.data<float>()[i] = f; break;
    case DType::Double: t.data<double>()[i] = f + 1e-9 * static_cast<double>(i); break;
    case DType::Float16: t.data<uint16_t>()[i] = floatToHalf(f); break;
    case DType::BFloat16: t.data<uint16_t>()[i] = floatToBf16(static_cast<float>(h)); break;
    case DType::Int64: t.data<int64_t>()[i] = i * 1000003 + seed - (int64_t(1) << 40); break;
    case DType::Int32: t.data<int32_t>()[i] = static_cast<int32_t>(i * 7 + seed) - 1000; break;
    case DType::Int8: t.data<int8_t>()[i] = static_cast<int8_t>(h); break;
    case DType::UInt8: t.data<uint8_t>()[i] = static_cast<uint8_t>(i * 37 + seed); break;
    case DType::Bool: t.data<uint8_t>()[i] = (i * 7 + seed) % 3 == 0; break;
    default: break;
    }
  }
  return t;
}

/// GPU == CPU exactly, output by output.
void exact(const Node &node, std::vector<Tensor> ins, size_t nOut = 1, int opset = 17) {
  expectGpuMatchesCpu(node, std::move(ins), nOut, 0, 0, opset);
}

Node transpose(std::vector<int64_t> perm) {
  Node n("Transpose");
  n.ints("perm", perm);
  return n;
}

//===----------------------------------------------------------------------===//
// Transpose
//===----------------------------------------------------------------------===//

TEST(CudaTranspose, AllPermutationsRank3) {
  for (DType dt : kAllTypes) {
    std::vector<int64_t> perm = {0, 1, 2};
    do {
      SCOPED_TRACE(std::string(dtypeName(dt)) + " perm " + str(perm));
      exact(transpose(perm), {values(dt, {2, 3, 5})});
    } while (std::next_permutation(perm.begin(), perm.end()));
  }
}

TEST(CudaTranspose, DefaultPermAndNegativeAxes) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    exact(Node("Transpose"), {values(dt, {3, 4})});
    exact(Node("Transpose"), {values(dt, {2, 3, 4, 5})});
    exact(transpose({-1, 0, -2}), {values(dt, {2, 3, 4})});
  }
}

TEST(CudaTranspose, TiledPaths) {
  // Innermost axis moves: shared-memory tiles, sizes not multiples of 32.
  struct Case {
    std::vector<int64_t> shape, perm;
  };
  const Case cases[] = {
      {{33, 65}, {1, 0}},
      {{64, 128}, {1, 0}},
      {{3, 40, 50}, {0, 2, 1}},
      {{2, 3, 17, 100}, {0, 1, 3, 2}},   // attention K^T
      {{2, 17, 3, 19}, {3, 1, 0, 2}},
      {{5, 16, 7, 16}, {3, 2, 1, 0}},
      {{16, 3, 16}, {2, 1, 0}},
      {{31, 2, 33}, {2, 0, 1}},
  };
  for (DType dt : kAllTypes)
    for (const Case &c : cases) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + " " + str(c.shape) + " perm " + str(c.perm));
      exact(transpose(c.perm), {values(dt, c.shape)});
    }
}

TEST(CudaTranspose, HeadsLayout) {
  // [B, S, H, D] -> [B, H, S, D]: rows of D stay contiguous (widened words).
  for (DType dt : {DType::Float, DType::Float16, DType::BFloat16, DType::Int8})
    for (int64_t d : {1, 3, 8, 64}) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + " D " + std::to_string(d));
      exact(transpose({0, 2, 1, 3}), {values(dt, {2, 7, 4, d})});
    }
}

TEST(CudaTranspose, SizeOneAxesRankZeroAndEmpty) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    exact(transpose({1, 0, 2}), {values(dt, {4, 1, 5})}); // same order: a view
    exact(transpose({2, 1, 0}), {values(dt, {1, 1, 1})});
    exact(transpose({}), {values(dt, {})});
    exact(transpose({1, 0}), {values(dt, {0, 3})});
    exact(transpose({2, 0, 1}), {values(dt, {3, 0, 2})});
  }
}

TEST(CudaTranspose, RankAboveEight) {
  // Nine axes of size 2 reversed: nothing merges, more dims than one kernel
  // launch takes.
  std::vector<int64_t> shape(9, 2), perm(9);
  for (int i = 0; i < 9; ++i)
    perm[i] = 8 - i;
  for (DType dt : {DType::Float, DType::Float16, DType::Int8, DType::Int64})
    exact(transpose(perm), {values(dt, shape)});
  std::vector<int64_t> shape10 = {2, 3, 2, 3, 2, 3, 2, 3, 2, 3};
  std::vector<int64_t> perm10 = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8};
  exact(transpose(perm10), {values(DType::Float, shape10)});
}

TEST(CudaTranspose, Large) {
  exact(transpose({1, 0}), {values(DType::Float, {1000, 1537})});
  exact(transpose({0, 2, 1}), {values(DType::Float16, {3, 515, 1029})});
  exact(transpose({2, 0, 1}), {values(DType::Int8, {64, 70, 129})});
}

TEST(CudaTranspose, Errors) {
  Tensor x = values(DType::Float, {2, 3});
  bothFail(transpose({0}), {x}, 1, 17, "does not match the rank");
  bothFail(transpose({0, 0}), {x}, 1, 17, "repeats an axis");
  bothFail(transpose({0, 2}), {x}, 1, 17, "is not a permutation");
  bothFail(transpose({1, 0}), {}, 1, 17, "missing");
  bothFail(transpose({1, 0}), {x, x}, 1, 17, "at most 1");
}

//===----------------------------------------------------------------------===//
// Slice
//===----------------------------------------------------------------------===//

struct SliceCase {
  std::vector<int64_t> shape, starts, ends, axes, steps;
};

std::vector<Tensor> sliceInputs(const Tensor &x, const SliceCase &c, bool int32 = false) {
  auto ints = [&](const std::vector<int64_t> &v) {
    if (!int32)
      return I64v(v);
    std::vector<int32_t> w(v.begin(), v.end());
    return I32({static_cast<int64_t>(w.size())}, w);
  };
  std::vector<Tensor> ins = {x, ints(c.starts), ints(c.ends)};
  if (!c.axes.empty() || !c.steps.empty())
    ins.push_back(c.axes.empty() ? Tensor() : ints(c.axes));
  if (!c.steps.empty())
    ins.push_back(ints(c.steps));
  return ins;
}

const SliceCase kSliceCases[] = {
    {{6, 7}, {1}, {4}, {}, {}},
    {{6, 7}, {1, 2}, {4, 6}, {}, {}},
    {{6, 7}, {0}, {100}, {1}, {}},
    {{6, 7}, {-3}, {-1}, {-1}, {}},
    {{6, 7}, {5}, {0}, {0}, {-1}},
    {{6, 7}, {-1, -1}, {-100, -100}, {0, 1}, {-2, -3}},
    {{6, 7}, {6}, {-100}, {1}, {-1}},
    {{6, 7}, {0, 1}, {6, 7}, {0, 1}, {2, 3}},
    {{6, 7}, {0}, {7}, {1}, {100}},
    {{6, 7}, {3}, {3}, {0}, {}},          // empty
    {{6, 7}, {0, 0}, {6, 7}, {}, {}},     // everything: a view
    {{6, 7}, {0}, {3}, {0}, {}},          // leading rows: one memcpy
    {{2, 3, 4, 5}, {1, -2}, {3, 100}, {1, 3}, {1, 1}},
    {{2, 3, 4, 5}, {0, 3, 1}, {2, 0, 5}, {0, 2, 3}, {1, -1, 2}},
    {{2, 3, 4, 5}, {-1}, {-5}, {-1}, {-1}},
    {{8, 64}, {4}, {36}, {1}, {}},         // aligned 128-byte rows: widened
    {{8, 64}, {1}, {33}, {1}, {}},         // unaligned rows
    {{8, 64}, {2}, {34}, {1}, {}},         // 8-byte aligned
    {{4, 5, 16}, {0, 8}, {4, 16}, {0, 2}, {}},
    {{0, 5}, {0}, {3}, {1}, {}},
    {{5}, {-100}, {100}, {0}, {}},
};

TEST(CudaSlice, Cases) {
  for (DType dt : kAllTypes)
    for (const SliceCase &c : kSliceCases) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + " shape " + str(c.shape) + " starts " +
                   str(c.starts) + " ends " + str(c.ends) + " axes " + str(c.axes) + " steps " +
                   str(c.steps));
      exact(Node("Slice"), sliceInputs(values(dt, c.shape), c));
    }
}

TEST(CudaSlice, Int32BoundsAndLegacyAttributes) {
  Tensor x = values(DType::Float, {4, 6});
  exact(Node("Slice"), sliceInputs(x, {{4, 6}, {1, -1}, {3, 0}, {0, 1}, {1, -2}}, true));
  Node old("Slice");
  old.ints("starts", {1, 0}).ints("ends", {3, 5}).ints("axes", {1, 0});
  exact(old, {x}, 1, 9);
  Node old2("Slice");
  old2.ints("starts", {1}).ints("ends", {100});
  exact(old2, {x}, 1, 9);
}

TEST(CudaSlice, CausalMaskCut) {
  // The exporters' mask[:, :, :S, :S] of a [1, 1, 128, 128] buffer.
  Tensor mask = values(DType::Bool, {1, 1, 128, 128});
  exact(Node("Slice"), {mask, I64v({0, 0}), I64v({37, 37}), I64v({2, 3})});
  Tensor f = values(DType::Float16, {1, 1, 128, 128});
  exact(Node("Slice"), {f, I64v({0, 0}), I64v({37, 37}), I64v({2, 3})});
}

TEST(CudaSlice, FusedQkvThirds) {
  Tensor qkv = values(DType::Float16, {2, 9, 3 * 48});
  for (int64_t k = 0; k < 3; ++k)
    exact(Node("Slice"), {qkv, I64v({k * 48}), I64v({(k + 1) * 48}), I64v({-1})});
}

TEST(CudaSlice, Errors) {
  Tensor x = values(DType::Float, {2, 3});
  bothFail(Node("Slice"), {x, I64v({0}), I64v({1}), I64v({0}), I64v({0})}, 1, 17, "step");
  bothFail(Node("Slice"), {x, I64v({0, 1}), I64v({1})}, 1, 17, "differ in length");
  bothFail(Node("Slice"), {x, I64v({0}), I64v({1}), I64v({3})}, 1, 17, "out of range");
  bothFail(Node("Slice"), {x, I64v({0, 0}), I64v({1, 1}), I64v({1, 1})}, 1, 17, "repeat");
  bothFail(Node("Slice"), {x, F({1}, {1}), I64v({1})}, 1, 17, "int64");
  bothFail(Node("Slice"), {x, I64v({0})}, 1, 17, "missing");
}

//===----------------------------------------------------------------------===//
// Concat
//===----------------------------------------------------------------------===//

Node concat(int64_t axis) {
  Node n("Concat");
  n.i("axis", axis);
  return n;
}

TEST(CudaConcat, Axes) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor a = values(dt, {2, 3, 4}, 1), b = values(dt, {2, 5, 4}, 2), c = values(dt, {2, 1, 4}, 3);
    exact(concat(1), {a, b, c});
    exact(concat(-2), {a, b});
    exact(concat(0), {a, values(dt, {3, 3, 4}, 4)}); // outer 1: memcpys
    exact(concat(2), {a, values(dt, {2, 3, 7}, 5), values(dt, {2, 3, 1}, 6)});
    exact(concat(-1), {values(dt, {5}, 7), values(dt, {3}, 8)});
    exact(concat(1), {a}); // one input
  }
}

TEST(CudaConcat, EmptyInputsAndOutputs) {
  for (DType dt : {DType::Float, DType::Float16, DType::Bool}) {
    SCOPED_TRACE(dtypeName(dt));
    exact(concat(1), {values(dt, {2, 3}), values(dt, {2, 0}), values(dt, {2, 4})});
    exact(concat(1), {values(dt, {2, 0}), values(dt, {2, 0})});
    exact(concat(1), {values(dt, {0, 3}), values(dt, {0, 2})});
  }
}

TEST(CudaConcat, WidenedAndUnalignedChunks) {
  // Chunks of 16 floats (64 bytes), 6 halves (12 bytes), 3 bytes.
  exact(concat(1), {values(DType::Float, {7, 16}, 1), values(DType::Float, {7, 32}, 2)});
  exact(concat(1), {values(DType::Float16, {7, 6}, 1), values(DType::Float16, {7, 10}, 2)});
  exact(concat(1), {values(DType::Float16, {7, 8}, 1), values(DType::Float16, {7, 3}, 2)});
  exact(concat(1), {values(DType::Int8, {5, 3}, 1), values(DType::Int8, {5, 13}, 2)});
  exact(concat(2), {values(DType::BFloat16, {3, 4, 64}, 1), values(DType::BFloat16, {3, 4, 64}, 2),
                    values(DType::BFloat16, {3, 4, 64}, 3)});
}

TEST(CudaConcat, ManyInputs) {
  // More inputs than one launch takes (32), with empty ones among them.
  for (int n : {31, 32, 33, 70}) {
    std::vector<Tensor> ins;
    for (int i = 0; i < n; ++i)
      ins.push_back(values(DType::Float, {3, i % 5, 2}, i));
    SCOPED_TRACE(n);
    exact(concat(1), ins);
    std::vector<Tensor> rows;
    for (int i = 0; i < n; ++i)
      rows.push_back(values(DType::Int64, {1 + i % 3, 4}, i));
    exact(concat(0), rows);
  }
}

TEST(CudaConcat, ShapeChainsInt64) {
  exact(concat(0), {I64v({2}), I64v({-1}), I64v({12, 64})});
  exact(concat(0), {I64v({}), I64v({3})});
}

TEST(CudaConcat, Large) {
  exact(concat(1), {values(DType::Float16, {64, 1000}, 1), values(DType::Float16, {64, 3000}, 2)});
  exact(concat(2), {values(DType::Float, {2, 300, 257}, 1), values(DType::Float, {2, 300, 3}, 2)});
}

TEST(CudaConcat, Errors) {
  Tensor a = values(DType::Float, {2, 3});
  bothFail(concat(0), {a, values(DType::Float16, {2, 3})}, 1, 17, "do not concatenate");
  bothFail(concat(0), {a, values(DType::Float, {2, 4})}, 1, 17, "do not concatenate");
  bothFail(concat(0), {a, values(DType::Float, {2, 3, 1})}, 1, 17, "do not concatenate");
  bothFail(Node("Concat"), {a, a}, 1, 17, "axis");
  bothFail(concat(2), {a, a}, 1, 17, "out of range");
  bothFail(concat(0), {values(DType::Float, {}), values(DType::Float, {})}, 1, 17, "0-d");
  bothFail(concat(0), {a, Tensor(), a}, 1, 17, "missing");
}

//===----------------------------------------------------------------------===//
// Split
//===----------------------------------------------------------------------===//

Node split(int64_t axis) {
  Node n("Split");
  n.i("axis", axis);
  return n;
}

TEST(CudaSplit, EqualAndSizes) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = values(dt, {2, 6, 5});
    exact(split(1), {x}, 3, 13);
    exact(split(0), {x}, 2, 13);
    exact(split(-1), {x}, 5, 13);
    exact(split(-2), {x, I64v({1, 0, 5})}, 3, 13);
    exact(split(2), {x, I64v({2, 3})}, 2, 13);
    exact(split(1), {x}, 1, 13); // one output: the input
  }
}

TEST(CudaSplit, LegacyAttributeAndNumOutputs) {
  Tensor x = values(DType::Float, {2, 3});
  Node old("Split");
  old.ints("split", {1, 2}).i("axis", 1);
  exact(old, {x}, 2, 11);
  Tensor x5 = values(DType::Float16, {5, 4});
  Node n18("Split");
  n18.i("num_outputs", 3);
  exact(n18, {x5}, 3, 18); // 2, 2, 1
  Node n18b("Split");
  n18b.i("num_outputs", 4).i("axis", 1);
  exact(n18b, {values(DType::Int32, {3, 4})}, 4, 18);
  Node n18c("Split");
  n18c.i("num_outputs", 3);
  exact(n18c, {values(DType::Int8, {2, 3})}, 3, 18); // 1, 1, 0
}

TEST(CudaSplit, FusedQkvAndWidened) {
  // [B, S, 3H] into Q, K, V along the last axis.
  for (DType dt : {DType::Float, DType::Float16, DType::BFloat16}) {
    SCOPED_TRACE(dtypeName(dt));
    exact(split(-1), {values(dt, {2, 9, 3 * 64})}, 3, 13);
    exact(split(-1), {values(dt, {2, 9, 3 * 5})}, 3, 13);
    exact(split(2), {values(dt, {2, 9, 17}), I64v({8, 1, 8})}, 3, 13);
  }
}

TEST(CudaSplit, Errors) {
  Tensor x = values(DType::Float, {2, 5});
  bothFail(split(1), {x}, 2, 13, "equal parts");
  bothFail(split(1), {x, I64v({2, 2})}, 2, 13, "sums to");
  bothFail(split(1), {x, I64v({5})}, 2, 13, "entries");
  bothFail(split(2), {x}, 2, 13, "out of range");
  bothFail(split(1), {x, I64v({6, -1})}, 2, 13, "negative");
  bothFail(split(0), {values(DType::Float, {})}, 1, 13, "0-d");
  Node n18("Split");
  n18.i("num_outputs", 3);
  bothFail(n18, {x}, 2, 18, "num_outputs");
}

//===----------------------------------------------------------------------===//
// Expand
//===----------------------------------------------------------------------===//

TEST(CudaExpand, Shapes) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    exact(Node("Expand"), {values(dt, {3, 1}), I64v({2, 1, 4})});
    exact(Node("Expand"), {values(dt, {3, 1}), I64v({1})});
    exact(Node("Expand"), {values(dt, {3, 4}), I64v({3, 4})}); // the input itself
    exact(Node("Expand"), {values(dt, {}), I64v({2, 2})});
    exact(Node("Expand"), {values(dt, {2, 3, 4}), I64v({3, 1})});
    exact(Node("Expand"), {values(dt, {1, 5, 1}), I64v({4, 5, 3})});
    exact(Node("Expand"), {values(dt, {1, 8}), I64v({6, 8})}); // widened rows
    exact(Node("Expand"), {values(dt, {3}), I64v({0, 3})});    // empty
    exact(Node("Expand"), {values(dt, {1, 1, 37, 37}), I64v({2, 4, 37, 37})});
  }
}

TEST(CudaExpand, Int32ShapeAndLarge) {
  exact(Node("Expand"), {values(DType::Float, {1, 768}), I32({2}, {512, 768})});
  exact(Node("Expand"), {values(DType::Float16, {64, 1}), I64v({64, 1000})});
}

TEST(CudaExpand, Errors) {
  Tensor x = values(DType::Float, {2, 3});
  bothFail(Node("Expand"), {x, I64v({2, 4})}, 1, 17, "cannot expand");
  bothFail(Node("Expand"), {x, I64v({-1, 1})}, 1, 17, "negative");
  bothFail(Node("Expand"), {x, F({1}, {2})}, 1, 17, "int64");
  bothFail(Node("Expand"), {x}, 1, 17, "missing");
}

//===----------------------------------------------------------------------===//
// Gather
//===----------------------------------------------------------------------===//

Node gather(int64_t axis) {
  Node n("Gather");
  n.i("axis", axis);
  return n;
}

/// `count` indices in [-n, n), both signs, as int64 or int32.
Tensor indices(std::vector<int64_t> shape, int64_t n, bool int32, unsigned seed) {
  Tensor t = Tensor::zeros(int32 ? DType::Int32 : DType::Int64, shape);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> u(-n, n - 1);
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t v = u(rng);
    if (int32)
      t.data<int32_t>()[i] = static_cast<int32_t>(v);
    else
      t.data<int64_t>()[i] = v;
  }
  return t;
}

TEST(CudaGather, Axes) {
  for (DType dt : kAllTypes)
    for (bool i32 : {false, true}) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + (i32 ? " int32" : " int64"));
      Tensor data = values(dt, {4, 5, 6});
      exact(gather(0), {data, indices({2, 3}, 4, i32, 1)});
      exact(gather(1), {data, indices({7}, 5, i32, 2)});
      exact(gather(2), {data, indices({2, 2}, 6, i32, 3)});
      exact(gather(-1), {data, indices({3}, 6, i32, 4)});
      exact(gather(-3), {data, indices({}, 4, i32, 5)}); // scalar index: the axis goes
      exact(gather(1), {data, indices({0}, 5, i32, 6)}); // no indices
      exact(gather(0), {values(dt, {5}), indices({4}, 5, i32, 7)});
    }
}

TEST(CudaGather, ShapeChain) {
  // Shape -> Gather(axis 0, scalar index) -> Unsqueeze -> Concat.
  exact(gather(0), {I64v({2, 7, 768}), I64({}, {1})});
  exact(gather(0), {I64v({2, 7, 768}), I64({}, {-1})});
  exact(gather(0), {I64v({2, 7, 768}), I64v({0, 1})});
}

TEST(CudaGather, EmbeddingTables) {
  // Token embeddings: a large table, many ids; rows of 768 halves (widened
  // to 16-byte words), 100 floats (8-byte words), 3 halves (2-byte words).
  for (bool i32 : {false, true}) {
    SCOPED_TRACE(i32 ? "int32 ids" : "int64 ids");
    exact(gather(0), {values(DType::Float16, {5000, 768}), indices({4, 129}, 5000, i32, 1)});
    exact(gather(0), {values(DType::BFloat16, {3001, 64}), indices({2, 333}, 3001, i32, 2)});
    exact(gather(0), {values(DType::Float, {1000, 100}), indices({1000}, 1000, i32, 3)});
    exact(gather(0), {values(DType::Float16, {257, 3}), indices({3, 50}, 257, i32, 4)});
    exact(gather(0), {values(DType::Double, {300, 17}), indices({64}, 300, i32, 5)});
  }
}

TEST(CudaGather, OutOfRangeIndexIsAnError) {
  // The CPU kernel rejects the node before computing; the CUDA kernel finds
  // the index while computing and reports it through the fault word
  // (CudaFault.h): both fail, naming the node.
  Tensor data = F({3, 2}, {1, 2, 3, 4, 5, 6});
  for (bool i32 : {false, true}) {
    for (int64_t bad : {3, -4, 1000}) {
      Tensor idx = Tensor::zeros(i32 ? DType::Int32 : DType::Int64, {3});
      for (int64_t k = 0; k < 3; ++k) {
        int64_t v = k == 1 ? bad : k;
        if (i32)
          idx.data<int32_t>()[k] = static_cast<int32_t>(v);
        else
          idx.data<int64_t>()[k] = v;
      }
      auto cpu = runN(gather(0), {data, idx});
      ASSERT_FALSE(static_cast<bool>(cpu));
      EXPECT_NE(llvm::toString(cpu.takeError()).find("out of range"), std::string::npos);
      auto gpu = runGpuN(gather(0), {data, idx});
      ASSERT_FALSE(static_cast<bool>(gpu)) << "index " << bad;
      std::string m = llvm::toString(gpu.takeError());
      EXPECT_NE(m.find("out of range"), std::string::npos) << m;
      EXPECT_NE(m.find("Gather"), std::string::npos) << m;
    }
  }
  // The fault does not outlive its run: the next, valid gather succeeds.
  exact(gather(0), {data, I64v({2, -3})});
}

TEST(CudaGather, Errors) {
  Tensor data = values(DType::Float, {3, 2});
  bothFail(gather(0), {data, F({1}, {0})}, 1, 17, "indices");
  bothFail(gather(2), {data, I64v({0})}, 1, 17, "out of range");
  bothFail(gather(0), {values(DType::Float, {}), I64v({0})}, 1, 17, "out of range");
  bothFail(gather(0), {data}, 1, 17, "missing");
}

//===----------------------------------------------------------------------===//
// Trilu
//===----------------------------------------------------------------------===//

Node trilu(int upper) {
  Node n("Trilu");
  n.i("upper", upper);
  return n;
}

TEST(CudaTrilu, UpperLowerAndK) {
  for (DType dt : kAllTypes)
    for (int upper : {0, 1}) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + (upper ? " upper" : " lower"));
      Tensor x = values(dt, {4, 5});
      exact(trilu(upper), {x});
      for (int64_t k : {-10, -5, -4, -1, 0, 1, 2, 4, 5, 10})
        exact(trilu(upper), {x, I64({}, {k})});
      exact(trilu(upper), {values(dt, {2, 3, 6, 4}), I64({}, {1})});
      exact(trilu(upper), {values(dt, {0, 3})});
      exact(trilu(upper), {values(dt, {3, 0})});
      exact(trilu(upper), {values(dt, {2, 0, 3, 3})});
    }
  exact(Node("Trilu"), {values(DType::Float, {3, 3}), I32({1}, {-1})});
  exact(Node("Trilu"), {values(DType::Float, {3, 3}), I64({}, {INT64_MAX})});
  exact(trilu(0), {values(DType::Float, {3, 3}), I64({}, {INT64_MIN})});
}

TEST(CudaTrilu, CausalMask) {
  exact(trilu(0), {values(DType::Bool, {1, 1, 128, 128})});
  exact(trilu(1), {values(DType::Float16, {512, 512}), I64({}, {1})});
}

TEST(CudaTrilu, Errors) {
  bothFail(Node("Trilu"), {F({3}, {1, 2, 3})}, 1, 17, "rank >= 2");
  bothFail(Node("Trilu"), {values(DType::Float, {2, 2}), F({}, {1})}, 1, 17, "int64");
  bothFail(Node("Trilu"), {values(DType::Float, {2, 2}), I64v({1, 2})}, 1, 17, "scalar");
}

//===----------------------------------------------------------------------===//
// Metadata-only ops: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Shape,
// Constant
//===----------------------------------------------------------------------===//

TEST(CudaViews, Reshape) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = values(dt, {2, 3, 4});
    exact(Node("Reshape"), {x, I64v({6, 4})});
    exact(Node("Reshape"), {x, I64v({0, -1})});
    exact(Node("Reshape"), {x, I64v({-1})});
    exact(Node("Reshape"), {x, I32({3}, {4, 3, 2})});
    exact(Node("Reshape"), {values(dt, {}), I64v({1, 1})});
  }
  Node az("Reshape");
  az.i("allowzero", 1);
  exact(az, {values(DType::Float, {0, 3}), I64v({3, 0})});
  Node old("Reshape");
  old.ints("shape", {3, 8});
  exact(old, {values(DType::Float, {2, 3, 4})}, 1, 1);
  Tensor x = values(DType::Float, {2, 3, 4});
  bothFail(Node("Reshape"), {x, I64v({5, -1})}, 1, 17, "cannot reshape");
  bothFail(Node("Reshape"), {x, I64v({-1, -1})}, 1, 17, "more than one -1");
  bothFail(Node("Reshape"), {x}, 1, 17, "shape");
}

TEST(CudaViews, FlattenSqueezeUnsqueezeIdentity) {
  for (DType dt : kAllTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = values(dt, {2, 1, 3, 1});
    for (int64_t axis : {0, 1, 2, 4, -1}) {
      Node f("Flatten");
      f.i("axis", axis);
      exact(f, {x});
    }
    exact(Node("Squeeze"), {x});
    exact(Node("Squeeze"), {x, I64v({1})});
    exact(Node("Squeeze"), {x, I64v({-1, 1})});
    Node sq("Squeeze");
    sq.ints("axes", {3});
    exact(sq, {x}, 1, 11);
    exact(Node("Unsqueeze"), {x, I64v({0, 5})});
    exact(Node("Unsqueeze"), {values(dt, {}), I64v({0})});
    Node uq("Unsqueeze");
    uq.ints("axes", {-1});
    exact(uq, {x}, 1, 11);
    exact(Node("Identity"), {x});
  }
  Tensor x = values(DType::Float, {2, 1, 3});
  bothFail(Node("Squeeze"), {x, I64v({0})}, 1, 17, "its size is not 1");
  bothFail(Node("Squeeze"), {x, I64v({1, 1})}, 1, 17, "repeat");
  bothFail(Node("Unsqueeze"), {x}, 1, 17, "missing axes");
  bothFail(Node("Unsqueeze"), {x, I64v({9})}, 1, 17, "out of range");
  Node f("Flatten");
  f.i("axis", 5);
  bothFail(f, {x}, 1, 17, "out of range");
}

TEST(CudaViews, ShapeAndConstant) {
  Tensor x = values(DType::Float16, {2, 3, 4, 5});
  exact(Node("Shape"), {x});
  Node s("Shape");
  s.i("start", 1).i("end", -1);
  exact(s, {x});
  Node s2("Shape");
  s2.i("start", -10).i("end", 10);
  exact(s2, {values(DType::Bool, {})});

  Node c("Constant");
  c.tensor("value", tensorToProto(values(DType::Float, {2, 3}), "v"));
  exact(c, {});
  Node ch("Constant");
  ch.tensor("value", tensorToProto(values(DType::Float16, {5}), "v"));
  exact(ch, {});
  Node ci("Constant");
  ci.ints("value_ints", {3, -1, 7});
  exact(ci, {});
  Node cf("Constant");
  cf.f("value_float", 2.5f);
  exact(cf, {});
  Node bad("Constant");
  bad.s("value_string", "x");
  bothFail(bad, {}, 1, 17, "unsupported attribute");
}

} // namespace
} // namespace qn::rt::testing
