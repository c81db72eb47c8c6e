//===- NormTest.cpp - CUDA LayerNormalization, Reduce*, Softmax vs the CPU -===//
//
// LayerNormalization, ReduceMean/ReduceSum/ReduceMax, Softmax/LogSoftmax.
// Shapes exercise every launch path of CudaNorm.cu: warp per row and block
// per row with 16-byte vector loads (row length a multiple of the vector) or
// scalar loads (odd lengths), the global-memory loop for long rows, the
// strided Softmax for inner axes, and for the reductions the row and column
// kernels, with and without the two-pass split of long reductions, a
// transposed copy for non-contiguous axis sets, and size-1 axes. Tolerances
// are per dtype (both devices compute half types in float and round once).
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace qn::rt::testing {
namespace {

const DType kFloatTypes[] = {DType::Float, DType::Float16, DType::BFloat16, DType::Double};
const DType kReduceTypes[] = {DType::Float,  DType::Float16, DType::BFloat16,
                              DType::Double, DType::Int32,   DType::Int64};

/// LayerNormalization: float32 accumulates in float on the GPU, double on the CPU;
/// half types round a float result once on both (one ulp may differ).
Tol lnTol(DType dt) {
  switch (dt) {
  case DType::Double:
    return {1e-12, 1e-12};
  case DType::Float16:
    return {2e-3, 2e-3};
  case DType::BFloat16:
    return {1.6e-2, 1.6e-2};
  default:
    return {1e-4, 2e-5};
  }
}
/// Softmax: exp/log differ by an ulp or two between the devices; small
/// absolute tolerances (outputs are small, float16's are subnormal below 6e-5).
Tol smTol(DType dt) {
  switch (dt) {
  case DType::Double:
    return {1e-11, 1e-13};
  case DType::Float16:
    return {2e-3, 1e-5};
  case DType::BFloat16:
    return {1.6e-2, 1e-5};
  default:
    return {1e-4, 1e-6};
  }
}
/// Reductions: sums in double on both devices, integers exact.
Tol reduceTol(DType dt) {
  switch (dt) {
  case DType::Double:
    return {1e-12, 1e-12};
  case DType::Float16:
    return {2e-3, 2e-3};
  case DType::BFloat16:
    return {1.6e-2, 1.6e-2};
  case DType::Float:
    return {1e-5, 1e-5};
  default:
    return {0, 0};
  }
}

void match(const Node &node, std::vector<Tensor> ins, size_t nOut, Tol t, int opset = 17) {
  expectGpuMatchesCpu(node, std::move(ins), nOut, t.rtol, t.atol, opset);
}

/// `dt` tensor with the given float values.
Tensor valuesOf(DType dt, std::vector<int64_t> shape, const std::vector<float> &v) {
  Tensor t = Tensor::zeros(dt, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float f = v[static_cast<size_t>(i) % v.size()];
    switch (dt) {
    case DType::Float:
      t.data<float>()[i] = f;
      break;
    case DType::Double:
      t.data<double>()[i] = f;
      break;
    case DType::Float16:
      t.data<uint16_t>()[i] = floatToHalf(f);
      break;
    case DType::BFloat16:
      t.data<uint16_t>()[i] = floatToBf16(f);
      break;
    case DType::Int32:
      t.data<int32_t>()[i] = static_cast<int32_t>(f);
      break;
    case DType::Int64:
      t.data<int64_t>()[i] = static_cast<int64_t>(f);
      break;
    default:
      break;
    }
  }
  return t;
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

//===----------------------------------------------------------------------===//
// LayerNormalization
//===----------------------------------------------------------------------===//

Node layerNorm(int64_t axis = -1) {
  Node n("LayerNormalization");
  n.i("axis", axis);
  return n;
}

TEST(CudaLayerNorm, PathsAndDtypes) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t axis;
  };
  const Case cases[] = {
      {{2, 3, 768}, -1}, // transformer rows: warp (f16) / block (f32) per row, vectors
      {{4, 4096}, -1},   // long rows, block per row
      {{3, 1001}, -1},   // odd length: scalar loads, block per row
      {{5, 64}, -1},     // short rows, warp per row, vectors
      {{7, 33}, -1},     // short odd rows, warp per row, scalar
      {{2, 20000}, -1},  // longer than the registers hold: global-memory loop
      {{3, 5000}, -1},   // scalar loads, loop
      {{2, 3, 4, 5}, 1}, // normalise over the last three axes
      {{6, 5}, 0},       // one row
      {{9, 1}, -1},      // one column
      {{300, 128}, -1},  // many rows
  };
  for (DType dt : kFloatTypes)
    for (const Case &c : cases) {
      SCOPED_TRACE(std::string(dtypeName(dt)) + " " + str(c.shape) + " axis " +
                   std::to_string(c.axis));
      Tensor x = randomTensor(dt, c.shape, 1, -3, 5);
      int64_t ax = c.axis < 0 ? c.axis + static_cast<int64_t>(c.shape.size()) : c.axis;
      std::vector<int64_t> norm(c.shape.begin() + ax, c.shape.end());
      Tensor s = randomTensor(dt, norm, 2, 0.5, 1.5), b = randomTensor(dt, norm, 3);
      match(layerNorm(c.axis), {x, s, b}, 3, lnTol(dt));
      match(layerNorm(c.axis), {x}, 1, lnTol(dt));
    }
}

TEST(CudaLayerNorm, BroadcastScaleAndBias) {
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = randomTensor(dt, {2, 3, 8}, 4);
    // normalised shape [3, 8]: Scale / B broadcast from [8], [1, 8], [1], [3, 1]
    match(layerNorm(1), {x, randomTensor(dt, {8}, 5), randomTensor(dt, {1, 8}, 6)}, 3, lnTol(dt));
    match(layerNorm(1), {x, randomTensor(dt, {1}, 7), randomTensor(dt, {3, 1}, 8)}, 3, lnTol(dt));
    match(layerNorm(-1), {x, randomTensor(dt, {1}, 9)}, 1, lnTol(dt));
    Tensor xl = randomTensor(dt, {4, 2, 1024}, 10);
    match(layerNorm(1), {xl, randomTensor(dt, {1024}, 11), randomTensor(dt, {2, 1}, 12)}, 3,
          lnTol(dt));
  }
}

TEST(CudaLayerNorm, OptionalInputsAndOutputs) {
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = randomTensor(dt, {6, 96}, 13);
    Tensor s = randomTensor(dt, {96}, 14), b = randomTensor(dt, {96}, 15);
    match(layerNorm(), {x, s}, 1, lnTol(dt));           // no B
    match(layerNorm(), {x, Tensor(), b}, 2, lnTol(dt)); // no Scale, Mean only
    match(layerNorm(), {x, s, b}, 3, lnTol(dt));
  }
}

TEST(CudaLayerNorm, EpsilonAndConstantRows) {
  Tensor x = randomTensor(DType::Float, {4, 256}, 16);
  Node n = layerNorm();
  n.f("epsilon", 0.5f);
  match(n, {x}, 3, lnTol(DType::Float));
  // Constant rows: variance 0, epsilon 0 -> inf InvStdDev, NaN outputs.
  Node z = layerNorm();
  z.f("epsilon", 0.0f);
  for (DType dt : kFloatTypes)
    match(z, {valuesOf(dt, {3, 8}, {1.0f})}, 3, lnTol(dt));
  // Large offset: the two-pass variance keeps its precision.
  Tensor off = randomTensor(DType::Float, {4, 1024}, 17, 1000, 1001);
  match(layerNorm(), {off}, 3, {2e-3, 2e-3});
}

TEST(CudaLayerNorm, Empty) {
  for (DType dt : kFloatTypes) {
    SCOPED_TRACE(dtypeName(dt));
    match(layerNorm(), {randomTensor(dt, {0, 8}, 1)}, 3, lnTol(dt));
    match(layerNorm(), {randomTensor(dt, {3, 0}, 1)}, 3,
          lnTol(dt)); // Mean 0, InvStdDev 1/sqrt(eps)
    match(layerNorm(0), {randomTensor(dt, {2, 0}, 1)}, 3, lnTol(dt));
  }
}

TEST(CudaLayerNorm, Errors) {
  Tensor x = randomTensor(DType::Float, {2, 4}, 1);
  bothFail(layerNorm(), {x, randomTensor(DType::Float, {3}, 1)}, 1, 17, "Scale");
  bothFail(layerNorm(),
           {x, randomTensor(DType::Float, {4}, 1), randomTensor(DType::Float, {2, 4}, 2)}, 1, 17,
           "B ");
  bothFail(layerNorm(), {x, randomTensor(DType::Float16, {4}, 1)}, 1, 17, "Scale");
  bothFail(layerNorm(2), {x}, 1, 17, "out of range");
  bothFail(layerNorm(), {randomTensor(DType::Int64, {2, 4}, 1)}, 1, 17, "unsupported dtype");
  bothFail(layerNorm(), {randomTensor(DType::Float, {}, 1)}, 1, 17, "rank");
  Node n = layerNorm();
  n.f("epsilon", -1.0f);
  bothFail(n, {x}, 1, 17, "epsilon");
  bothFail(layerNorm(), {}, 1, 17, "missing");
}

//===----------------------------------------------------------------------===//
// ReduceMean / ReduceSum / ReduceMax
//===----------------------------------------------------------------------===//

const char *const kReduceOps[] = {"ReduceMean", "ReduceSum", "ReduceMax"};

/// The node and inputs of a reduction over `axes` (empty: none given) at
/// `opset`: axes as the attribute or as the second input, as the op's
/// version takes them.
struct Reduce {
  Node node;
  std::vector<Tensor> ins;
};
bool axesAsInput(const std::string &op, int opset) {
  return opset >= 18 || (op == "ReduceSum" && opset >= 13);
}
Reduce reduce(const std::string &op, const Tensor &x, const std::vector<int64_t> &axes,
              int64_t keepdims, int opset) {
  Reduce r{Node(op), {x}};
  r.node.i("keepdims", keepdims);
  if (axesAsInput(op, opset)) {
    if (!axes.empty())
      r.ins.push_back(I64v(axes));
  } else if (!axes.empty()) {
    r.node.ints("axes", axes);
  }
  return r;
}

void matchReduce(const std::string &op, const Tensor &x, const std::vector<int64_t> &axes, Tol t,
                 int64_t keepdims = 1, int opset = 17) {
  Reduce r = reduce(op, x, axes, keepdims, opset);
  match(r.node, r.ins, 1, t, opset);
}

/// Integer inputs in a range where Mean's division and sums matter; float
/// inputs uniform in [-2, 2].
Tensor reduceInput(DType dt, std::vector<int64_t> shape, unsigned seed) {
  if (dt == DType::Int32 || dt == DType::Int64)
    return randomTensor(dt, shape, seed, -1000, 1000);
  return randomTensor(dt, shape, seed);
}

TEST(CudaReduce, PathsDtypesKeepdims) {
  struct Case {
    std::vector<int64_t> shape, axes;
  };
  const Case cases[] = {
      {{4, 768}, {-1}},       // rows, warp per row
      {{3, 5000}, {1}},       // rows, block per row
      {{2, 100000}, {1}},     // long rows: split in two passes
      {{300000}, {}},         // everything: split rows
      {{2, 3, 4, 5}, {}},     // everything, small
      {{64, 3, 5}, {0}},      // columns
      {{20000, 7}, {0}},      // long columns: split in two passes
      {{3, 2000, 5}, {1}},    // columns with outer > 1, split
      {{2, 3, 4, 5}, {1, 2}}, // a run of axes in the middle
      {{2, 3, 4, 5}, {0, 2}}, // not a run: transposed copy
      {{2, 3, 4, 5}, {3, 0}}, // not a run, unsorted
      {{2, 1, 4}, {1}},       // only a size-1 axis: elementwise
      {{3, 1, 5, 1}, {0, 2}}, // a run once size-1 axes are dropped
      {{5, 1, 3}, {-3, -1}},  // not a run, negative axes
      {{1, 1}, {0, 1}},       // a single element
      {{7}, {0}},             // rank 1
      {{257, 33}, {1}},       // odd sizes
      {{}, {}},               // rank 0
  };
  for (const char *op : kReduceOps)
    for (DType dt : kReduceTypes)
      for (const Case &c : cases)
        for (int64_t keep : {0, 1}) {
          SCOPED_TRACE(std::string(op) + " " + dtypeName(dt) + " " + str(c.shape) + " axes " +
                       str(c.axes) + " keepdims " + std::to_string(keep));
          Tensor x = reduceInput(dt, c.shape, 21);
          Reduce r = reduce(op, x, c.axes, keep, 17);
          match(r.node, r.ins, 1, reduceTol(dt), 17);
        }
}

TEST(CudaReduce, RankAboveEight) {
  // Every other axis of ten reduced: nothing merges, the transposed copy has
  // more axes than one launch takes.
  std::vector<int64_t> shape = {2, 3, 2, 3, 2, 3, 2, 3, 2, 3};
  for (DType dt : {DType::Float, DType::Float16, DType::Int64})
    for (const char *op : kReduceOps) {
      SCOPED_TRACE(std::string(op) + " " + dtypeName(dt));
      Tensor x = reduceInput(dt, shape, 26);
      matchReduce(op, x, {0, 2, 4, 6, 8}, reduceTol(dt));
      matchReduce(op, x, {9, 1, 5}, reduceTol(dt), 0);
    }
}

TEST(CudaReduce, AxesInputOpsets) {
  Tensor x = reduceInput(DType::Float, {3, 4, 5}, 22);
  for (const char *op : kReduceOps)
    for (int opset : {11, 13, 17, 18}) {
      SCOPED_TRACE(std::string(op) + " opset " + std::to_string(opset));
      for (const std::vector<int64_t> &axes :
           {std::vector<int64_t>{1}, std::vector<int64_t>{-1, 0}, std::vector<int64_t>{}}) {
        Reduce r = reduce(op, x, axes, 1, opset);
        match(r.node, r.ins, 1, reduceTol(DType::Float), opset);
      }
    }
  // int32 axes input
  Node n("ReduceMean");
  match(n, {x, I32({1}, {2})}, 1, reduceTol(DType::Float), 18);
}

TEST(CudaReduce, NoopWithEmptyAxes) {
  for (DType dt : kReduceTypes) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = reduceInput(dt, {3, 4}, 23);
    for (const char *op : kReduceOps) {
      Node n(op);
      n.i("noop_with_empty_axes", 1);
      match(n, {x}, 1, {0, 0}, 18);               // Y = X
      match(n, {x, I64({0}, {})}, 1, {0, 0}, 18); // empty axes input
      Node m(op);
      m.i("noop_with_empty_axes", 0);
      match(m, {x, I64({0}, {})}, 1, reduceTol(dt), 18); // reduce all
    }
  }
}

TEST(CudaReduce, IntegerSemantics) {
  // Mean truncates toward zero; sums wrap in the element type.
  Tensor neg = I64({2, 3}, {-7, -1, -1, 5, 2, 2});
  for (const char *op : kReduceOps)
    matchReduce(op, neg, {1}, {0, 0});
  Tensor big32 = randomTensor(DType::Int32, {4, 3000}, 24, -2e9, 2e9);
  Tensor big64 = Tensor::zeros(DType::Int64, {3, 100});
  for (int64_t i = 0; i < big64.numel(); ++i)
    big64.data<int64_t>()[i] = (i % 2 ? 1 : -1) * (int64_t(1) << 62) + i;
  for (const char *op : kReduceOps) {
    matchReduce(op, big32, {1}, {0, 0});
    matchReduce(op, big32, {0}, {0, 0});
    matchReduce(op, big64, {1}, {0, 0});
  }
}

TEST(CudaReduce, MaxNaNAndInfinities) {
  for (DType dt : {DType::Float, DType::Float16, DType::BFloat16, DType::Double}) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor x = valuesOf(dt, {4, 3}, {1, kNaN, 2, -kInf, -kInf, -kInf, kInf, 0, 1, 3, 2, kNaN});
    for (const char *op : kReduceOps) {
      matchReduce(op, x, {1}, reduceTol(dt));
      matchReduce(op, x, {0}, reduceTol(dt), 0);
    }
    Tensor big = randomTensor(dt, {50000}, 25);
    if (dt == DType::Float)
      big.data<float>()[31337] = kNaN;
    else if (dt == DType::Double)
      big.data<double>()[31337] = std::nan("");
    else
      big.data<uint16_t>()[31337] = dt == DType::Float16 ? 0x7e00 : 0x7fc0;
    match(Node("ReduceMax"), {big}, 1, {0, 0});
  }
}

TEST(CudaReduce, Empty) {
  for (DType dt : kReduceTypes) {
    SCOPED_TRACE(dtypeName(dt));
    bool isInt = dt == DType::Int32 || dt == DType::Int64;
    Tensor e0 = reduceInput(dt, {0, 3}, 1), e1 = reduceInput(dt, {3, 0}, 1);
    // Sum over nothing: 0; Mean: NaN (floats).
    matchReduce("ReduceSum", e0, {0}, {0, 0}, 1, 11);
    matchReduce("ReduceSum", e0, {0}, {0, 0}, 0, 18);
    if (!isInt)
      matchReduce("ReduceMean", e0, {0}, {0, 0});
    // Max over nothing: -inf, or the lowest integer (opset 18's rule).
    matchReduce("ReduceMax", e0, {0}, {0, 0});
    matchReduce("ReduceMax", e0, {0}, {0, 0}, 0, 18);
    // No outputs: fine for every kind.
    for (const char *op : kReduceOps)
      matchReduce(op, e1, {0}, {0, 0});
    matchReduce("ReduceSum", e0, {1}, {0, 0}, 0, 13);
    matchReduce("ReduceMax", e0, {1}, {0, 0}, 1, 18);
  }
}

TEST(CudaReduce, Errors) {
  Tensor x = reduceInput(DType::Float, {2, 3}, 1);
  bothFail(Node("ReduceMean").ints("axes", {0}), {reduceInput(DType::Int64, {0, 3}, 1)}, 1, 17,
           "empty set");
  bothFail(Node("ReduceSum").ints("axes", {0, -2}), {x}, 1, 11, "repeat");
  bothFail(Node("ReduceMean").ints("axes", {2}), {x}, 1, 17, "out of range");
  bothFail(Node("ReduceMean"), {x, I64v({-3})}, 1, 18, "out of range");
  bothFail(Node("ReduceMax"), {x, F({1}, {0})}, 1, 18, "axes input");
  bothFail(Node("ReduceMax"), {x, I64({1, 1}, {0})}, 1, 18, "axes input");
  bothFail(Node("ReduceMean"), {x, I64v({0})}, 1, 17, "at most 1");
  Tensor b = Tensor::zeros(DType::Bool, {2, 3});
  bothFail(Node("ReduceSum"), {b}, 1, 17, "unsupported dtype");
  bothFail(Node("ReduceMax"), {Tensor::zeros(DType::Int8, {2})}, 1, 17, "unsupported dtype");
}

//===----------------------------------------------------------------------===//
// Softmax / LogSoftmax
//===----------------------------------------------------------------------===//

const char *const kSoftmaxOps[] = {"Softmax", "LogSoftmax"};

TEST(CudaSoftmax, PathsAndDtypes) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t axis;
  };
  const Case cases[] = {
      {{4, 768}, -1},     // attention rows, vectors
      {{3, 4096}, -1},    // long rows, block per row
      {{2, 3, 1001}, -1}, // odd rows, scalar loads
      {{5, 37}, -1},      // short odd rows: warp per row
      {{8, 16}, -1},      // short rows, vectors
      {{2, 50000}, -1},   // too long for registers: global-memory loop
      {{2, 5, 7}, 1},     // inner axis: strided
      {{2, 5, 7}, 0},     // inner axis: strided, one outer
      {{2, 4, 1}, 1},     // inner of size 1 after the axis
      {{3, 1}, -1},       // rows of one element
      {{700, 64}, -1},    // many rows
  };
  for (const char *op : kSoftmaxOps)
    for (DType dt : kFloatTypes)
      for (const Case &c : cases) {
        SCOPED_TRACE(std::string(op) + " " + dtypeName(dt) + " " + str(c.shape) + " axis " +
                     std::to_string(c.axis));
        Tensor x = randomTensor(dt, c.shape, 31, -8, 8);
        match(Node(op).i("axis", c.axis), {x}, 1, smTol(dt), 13);
        match(Node(op).i("axis", c.axis), {x}, 1, smTol(dt), 17);
      }
}

TEST(CudaSoftmax, LegacyFlattenAtAxis) {
  // opset < 13: X coerced to 2-D at axis (default 1), axis == rank allowed.
  for (const char *op : kSoftmaxOps)
    for (DType dt : kFloatTypes) {
      SCOPED_TRACE(std::string(op) + " " + dtypeName(dt));
      Tensor x = randomTensor(dt, {2, 3, 4}, 32, -8, 8);
      match(Node(op), {x}, 1, smTol(dt), 11);
      for (int64_t axis : {0, 1, 2, 3, -1, -3})
        match(Node(op).i("axis", axis), {x}, 1, smTol(dt), 11);
      Tensor big = randomTensor(dt, {2, 64, 96}, 33, -8, 8); // rows of 6144
      match(Node(op), {big}, 1, smTol(dt), 11);
    }
}

TEST(CudaSoftmax, ExtremeValues) {
  for (const char *op : kSoftmaxOps)
    for (DType dt : kFloatTypes) {
      SCOPED_TRACE(std::string(op) + " " + dtypeName(dt));
      // Large values (max subtracted), all -inf rows (NaN), a +inf (NaN), a NaN,
      // mixed -inf.
      Tensor x = valuesOf(
          dt, {5, 3}, {1000, 1001, 1002, -kInf, -kInf, -kInf, kInf, 0, 1, kNaN, 1, 2, -kInf, 0, 1});
      match(Node(op), {x}, 1, smTol(dt));
      match(Node(op).i("axis", 0), {x}, 1, smTol(dt));
      Tensor wide = valuesOf(dt, {2, 64}, {-kInf, 3, 1e4f, -1e4f});
      match(Node(op), {wide}, 1, smTol(dt));
    }
}

TEST(CudaSoftmax, Empty) {
  for (const char *op : kSoftmaxOps)
    for (DType dt : kFloatTypes) {
      match(Node(op), {randomTensor(dt, {0, 5}, 1)}, 1, {0, 0});
      match(Node(op), {randomTensor(dt, {3, 0}, 1)}, 1, {0, 0});
      match(Node(op).i("axis", 0), {randomTensor(dt, {3, 0, 2}, 1)}, 1, {0, 0});
    }
}

TEST(CudaSoftmax, Errors) {
  for (const char *op : kSoftmaxOps) {
    Tensor x = randomTensor(DType::Float, {2, 3}, 1);
    bothFail(Node(op).i("axis", 2), {x}, 1, 13, "out of range");
    bothFail(Node(op).i("axis", 3), {x}, 1, 11, "out of range");
    bothFail(Node(op).i("axis", -3), {x}, 1, 17, "out of range");
    bothFail(Node(op), {randomTensor(DType::Float, {}, 1)}, 1, 17, "rank");
    bothFail(Node(op), {randomTensor(DType::Int64, {2, 3}, 1)}, 1, 17, "unsupported dtype");
    bothFail(Node(op), {x, x}, 1, 17, "at most 1");
  }
}

} // namespace
} // namespace qn::rt::testing
