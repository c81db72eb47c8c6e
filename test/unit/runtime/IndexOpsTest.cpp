//===- IndexOpsTest.cpp - CumSum, GatherND, ScatterND against references ---===//
//
// Each expected value is computed here from the ONNX operator definitions
// (naive loops over multi-indices, in double or int64), independently of the
// kernels: CumSum's sums over j < i / j <= i (j > i / j >= i reversed),
// GatherND's and ScatterND's reference implementations of the ONNX spec.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Kernel.h"

#include "KernelTestUtil.h"

#include <cmath>
#include <algorithm>
#include <functional>
#include <random>

#include "gtest/gtest.h"

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {

std::vector<int64_t> unravel(int64_t i, const std::vector<int64_t> &shape) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t k = static_cast<int64_t>(shape.size()) - 1; k >= 0; --k) {
    idx[k] = i % shape[k];
    i /= shape[k];
  }
  return idx;
}

int64_t ravel(const std::vector<int64_t> &idx, const std::vector<int64_t> &shape) {
  int64_t o = 0;
  for (size_t k = 0; k < shape.size(); ++k)
    o = o * shape[k] + idx[k];
  return o;
}

int64_t numel(const std::vector<int64_t> &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

double at(const Tensor &t, int64_t i) {
  switch (t.dtype()) {
  case DType::Float: return t.data<float>()[i];
  case DType::Double: return t.data<double>()[i];
  case DType::Float16: return halfToFloat(t.data<uint16_t>()[i]);
  case DType::BFloat16: return bf16ToFloat(t.data<uint16_t>()[i]);
  case DType::Int64: return static_cast<double>(t.data<int64_t>()[i]);
  case DType::Int32: return t.data<int32_t>()[i];
  case DType::UInt8:
  case DType::Bool: return t.data<uint8_t>()[i];
  default: return NAN;
  }
}

/// A tensor of `dt` with small integer values (exact in every dtype) from `seed`.
Tensor smallInts(DType dt, std::vector<int64_t> shape, unsigned seed, int lo = -4, int hi = 4) {
  Tensor t = Tensor::zeros(dt, shape);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) {
    int v = u(rng);
    switch (dt) {
    case DType::Float: t.data<float>()[i] = static_cast<float>(v); break;
    case DType::Double: t.data<double>()[i] = v; break;
    case DType::Float16: t.data<uint16_t>()[i] = floatToHalf(static_cast<float>(v)); break;
    case DType::BFloat16: t.data<uint16_t>()[i] = floatToBf16(static_cast<float>(v)); break;
    case DType::Int64: t.data<int64_t>()[i] = v; break;
    case DType::Int32: t.data<int32_t>()[i] = v; break;
    case DType::UInt8:
    case DType::Bool: t.data<uint8_t>()[i] = static_cast<uint8_t>(v & 1); break;
    default: break;
    }
  }
  return t;
}

llvm::Expected<Tensor> run1(const Node &n, std::vector<Tensor> ins, int opset = 17) {
  auto r = runN(n, std::move(ins), 1, opset);
  if (!r)
    return r.takeError();
  return (*r)[0];
}

Tensor mustRun(const Node &n, std::vector<Tensor> ins, int opset = 17) {
  auto r = run1(n, std::move(ins), opset);
  if (!r) {
    ADD_FAILURE() << llvm::toString(r.takeError());
    return Tensor();
  }
  return *r;
}

/// The node must fail with a message naming it and containing `needle`.
void mustFail(const Node &n, std::vector<Tensor> ins, const std::string &needle,
              int opset = 17) {
  auto r = run1(n, std::move(ins), opset);
  ASSERT_FALSE(static_cast<bool>(r)) << n.proto().op_type() << " succeeded";
  std::string m = llvm::toString(r.takeError());
  EXPECT_NE(m.find(n.proto().op_type() + " 'n_"), std::string::npos) << m;
  EXPECT_NE(m.find(needle), std::string::npos) << m;
}

void expectValues(const Tensor &got, DType dt, const std::vector<int64_t> &shape,
                  const std::vector<double> &want, double tol, const std::string &what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.dtype(), dt) << what;
  ASSERT_EQ(got.shape(), shape) << what << ": " << got.describe();
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(at(got, static_cast<int64_t>(i)), want[i], tol) << what << " [" << i << "]";
}

//===----------------------------------------------------------------------===//
// CumSum
//===----------------------------------------------------------------------===//

/// ONNX CumSum: y[i] = sum of x[j] along `axis` over j <= i (j < i exclusive;
/// j >= i / j > i reversed).
std::vector<double> refCumSum(const Tensor &x, int64_t axis, bool exclusive, bool reverse) {
  std::vector<int64_t> s = x.shape();
  if (axis < 0)
    axis += static_cast<int64_t>(s.size());
  std::vector<double> y(static_cast<size_t>(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    std::vector<int64_t> idx = unravel(i, s);
    int64_t pos = idx[axis];
    double sum = 0;
    for (int64_t j = 0; j < s[axis]; ++j) {
      bool take = reverse ? (exclusive ? j > pos : j >= pos) : (exclusive ? j < pos : j <= pos);
      if (!take)
        continue;
      idx[axis] = j;
      sum += at(x, ravel(idx, s));
    }
    y[i] = sum;
  }
  return y;
}

Node cumSum(bool exclusive, bool reverse) {
  Node n("CumSum");
  if (exclusive)
    n.i("exclusive", 1);
  if (reverse)
    n.i("reverse", 1);
  return n;
}

TEST(CpuCumSum, ShapesAxesExclusiveReverse) {
  const std::vector<int64_t> shapes[] = {{7}, {3, 5}, {2, 3, 4}, {2, 1, 3, 2}};
  for (DType dt : {DType::Float, DType::Double, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64})
    for (const auto &shape : shapes) {
      int64_t r = static_cast<int64_t>(shape.size());
      for (int64_t axis = -r; axis < r; ++axis)
        for (int flags = 0; flags < 4; ++flags) {
          bool ex = flags & 1, rev = flags & 2;
          std::string what = std::string(dtypeName(dt)) + " shape rank " + std::to_string(r) +
                             " axis " + std::to_string(axis) + (ex ? " exclusive" : "") +
                             (rev ? " reverse" : "");
          Tensor x = smallInts(dt, shape, static_cast<unsigned>(r * 100 + axis + 7 * flags));
          // The axis as an int64 scalar, or a one-element int32 vector.
          Tensor a = flags % 2 ? I64({}, {axis}) : I32({1}, {static_cast<int32_t>(axis)});
          Tensor y = mustRun(cumSum(ex, rev), {x, a});
          expectValues(y, dt, shape, refCumSum(x, axis, ex, rev), 0, what);
        }
    }
}

TEST(CpuCumSum, FloatValuesAndPositionIds) {
  // Non-integer values: float32 within rounding of the double reference.
  Tensor x = Tensor::zeros(DType::Float, {4, 33});
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data<float>()[i] = u(rng);
  expectValues(mustRun(cumSum(false, false), {x, I64({}, {1})}), DType::Float, {4, 33},
               refCumSum(x, 1, false, false), 1e-5, "float32 rows");
  // OPT's position ids: cumsum(mask, 1) * mask - 1 with int64 masks.
  Tensor mask = I64({2, 5}, {1, 1, 1, 1, 1, 0, 0, 1, 1, 1});
  Tensor y = mustRun(cumSum(false, false), {mask, I64({}, {1})});
  EXPECT_EQ(std::vector<int64_t>(y.data<int64_t>(), y.data<int64_t>() + 10),
            (std::vector<int64_t>{1, 2, 3, 4, 5, 0, 0, 1, 2, 3}));
}

TEST(CpuCumSum, IntegersWrapAndEmpty) {
  Tensor x = I32({3}, {2147483647, 1, 1});
  Tensor y = mustRun(cumSum(false, false), {x, I64({}, {0})});
  EXPECT_EQ(y.data<int32_t>()[1], -2147483647 - 1);
  EXPECT_EQ(y.data<int32_t>()[2], -2147483647);
  Tensor e = mustRun(cumSum(true, true), {Tensor::zeros(DType::Float, {2, 0, 3}), I64({}, {1})});
  EXPECT_EQ(e.shape(), (std::vector<int64_t>{2, 0, 3}));
}

TEST(CpuCumSum, Errors) {
  Tensor x = F({2, 2}, {1, 2, 3, 4});
  mustFail(cumSum(false, false), {x, I64({}, {2})}, "axis 2 is out of range for rank 2");
  mustFail(cumSum(false, false), {x, I64({}, {-3})}, "axis -3 is out of range");
  mustFail(cumSum(false, false), {x, I64v({0, 1})}, "axis must be a 0-d or one-element");
  mustFail(cumSum(false, false), {x, F({}, {0})}, "axis must be a 0-d or one-element");
  mustFail(cumSum(false, false), {x}, "input 1 is missing");
  mustFail(cumSum(false, false), {Tensor::zeros(DType::Bool, {2}), I64({}, {0})},
           "unsupported dtype bool");
  mustFail(cumSum(false, false), {F({}, {1}), I64({}, {0})}, "out of range for rank 0");
}

//===----------------------------------------------------------------------===//
// GatherND
//===----------------------------------------------------------------------===//

/// ONNX GatherND (the spec's reference): for batch index bi over
/// data.shape[:b] and tuple index ti over indices.shape[b:-1], the output
/// slice [bi, ti, ...] = data[bi][indices[bi, ti]] (negative components count
/// from the end).
std::vector<double> refGatherND(const Tensor &data, const Tensor &idx, int64_t b,
                                std::vector<int64_t> &outShape) {
  std::vector<int64_t> ds = data.shape(), is = idx.shape();
  int64_t k = is.back();
  outShape.assign(is.begin(), is.end() - 1);
  outShape.insert(outShape.end(), ds.begin() + b + k, ds.end());
  std::vector<double> out;
  for (int64_t o = 0; o < numel(outShape); ++o) {
    std::vector<int64_t> oi = unravel(o, outShape);
    // oi = [batch (b), tuple (q - 1 - b), slice (r - b - k)]
    std::vector<int64_t> tupleAt(oi.begin(), oi.begin() + (is.size() - 1));
    std::vector<int64_t> di(oi.begin(), oi.begin() + b);
    for (int64_t m = 0; m < k; ++m) {
      std::vector<int64_t> ii = tupleAt;
      ii.push_back(m);
      int64_t v = idx.data<int64_t>()[ravel(ii, is)];
      di.push_back(v < 0 ? v + ds[b + m] : v);
    }
    di.insert(di.end(), oi.begin() + (is.size() - 1), oi.end());
    out.push_back(at(data, ravel(di, ds)));
  }
  return out;
}

/// Random int64 tuples valid for data axes [b, b + k), both signs.
Tensor randomTuples(const std::vector<int64_t> &idxShape, const std::vector<int64_t> &dataShape,
                    int64_t b, unsigned seed) {
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

Node gatherND(int64_t b) {
  Node n("GatherND");
  if (b)
    n.i("batch_dims", b);
  return n;
}

TEST(CpuGatherND, ShapesTuplesBatchDims) {
  struct Case {
    std::vector<int64_t> data, idx;
    int64_t b;
  };
  const Case cases[] = {
      {{5}, {3, 1}, 0},          {{4, 3}, {2}, 0},       {{4, 3}, {2, 2}, 0},
      {{4, 3}, {5, 1}, 0},       {{2, 3, 4}, {2, 2, 2}, 0}, {{2, 3, 4}, {3, 3}, 0},
      {{2, 3, 4}, {2, 1}, 1},    {{2, 3, 4}, {2, 5, 2}, 1}, {{2, 3, 4, 2}, {2, 3, 1}, 2},
      {{2, 3, 4}, {2, 3, 1}, 2}, {{6, 8}, {1, 1, 1, 2}, 0}, // rotary-table lookup: [T] -> rows
  };
  for (DType dt : {DType::Float, DType::Float16, DType::Double, DType::Int64, DType::Int32,
                   DType::Bool})
    for (const Case &c : cases) {
      std::string what = std::string(dtypeName(dt)) + " data rank " +
                         std::to_string(c.data.size()) + " idx rank " +
                         std::to_string(c.idx.size()) + " b " + std::to_string(c.b);
      Tensor data = smallInts(dt, c.data, 11);
      Tensor idx = randomTuples(c.idx, c.data, c.b, 5);
      std::vector<int64_t> shape;
      std::vector<double> want = refGatherND(data, idx, c.b, shape);
      expectValues(mustRun(gatherND(c.b), {data, idx}), dt, shape, want, 0, what);
    }
}

TEST(CpuGatherND, SpecExamples) {
  // The ONNX spec's examples 1, 3 and 5.
  Tensor d2 = I64({2, 2}, {0, 1, 2, 3});
  Tensor y = mustRun(gatherND(0), {d2, I64({2, 2}, {0, 0, 1, 1})});
  EXPECT_EQ(std::vector<int64_t>(y.data<int64_t>(), y.data<int64_t>() + 2),
            (std::vector<int64_t>{0, 3}));
  Tensor d3 = I64({2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  y = mustRun(gatherND(0), {d3, I64({2, 2}, {0, 1, 1, 0})});
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(std::vector<int64_t>(y.data<int64_t>(), y.data<int64_t>() + 4),
            (std::vector<int64_t>{2, 3, 4, 5}));
  y = mustRun(gatherND(1), {d3, I64({2, 1}, {1, 0})});
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(std::vector<int64_t>(y.data<int64_t>(), y.data<int64_t>() + 4),
            (std::vector<int64_t>{2, 3, 4, 5}));
}

TEST(CpuGatherND, Errors) {
  Tensor data = F({2, 3}, {0, 1, 2, 3, 4, 5});
  mustFail(gatherND(0), {data, I64({1, 2}, {1, 3})},
           "index 3 is out of range for axis 1 of size 3");
  mustFail(gatherND(0), {data, I64({1, 2}, {-3, 0})}, "index -3 is out of range for axis 0");
  mustFail(gatherND(1), {data, I64({2, 1}, {0, 7})}, "index 7 is out of range for axis 1");
  mustFail(gatherND(0), {data, I32({1, 2}, {0, 0})}, "int64 indices");
  mustFail(gatherND(0), {data, I64({1, 3}, {0, 0, 0})}, "last dim of indices");
  mustFail(gatherND(0), {data, I64({1, 0}, {})}, "last dim of indices");
  mustFail(gatherND(2), {data, I64({2, 1}, {0, 0})}, "batch_dims 2");
  mustFail(gatherND(1), {data, I64({3, 1}, {0, 0, 0})}, "(batch) dims");
  mustFail(gatherND(0), {data, I64({}, {0})}, "rank >= 1");
}

//===----------------------------------------------------------------------===//
// ScatterND
//===----------------------------------------------------------------------===//

/// ONNX ScatterND (the spec's reference): output = data; for each tuple
/// index t in order, output[indices[t]] = f(output[indices[t]], updates[t]).
std::vector<double> refScatterND(const Tensor &data, const Tensor &idx, const Tensor &upd,
                                 const std::string &red) {
  std::vector<int64_t> ds = data.shape(), is = idx.shape();
  int64_t k = is.back(), tuples = numel(is) / k;
  std::vector<int64_t> sliceShape(ds.begin() + k, ds.end());
  int64_t slice = numel(sliceShape);
  std::vector<double> out(static_cast<size_t>(data.numel()));
  for (int64_t i = 0; i < data.numel(); ++i)
    out[i] = at(data, i);
  for (int64_t t = 0; t < tuples; ++t) {
    std::vector<int64_t> di;
    for (int64_t m = 0; m < k; ++m) {
      int64_t v = idx.data<int64_t>()[t * k + m];
      di.push_back(v < 0 ? v + ds[m] : v);
    }
    di.resize(ds.size(), 0);
    int64_t base = ravel(di, ds);
    for (int64_t c = 0; c < slice; ++c) {
      double &o = out[base + c];
      double u = at(upd, t * slice + c);
      if (red == "add")
        o += u;
      else if (red == "mul")
        o *= u;
      else if (red == "max")
        o = std::max(o, u);
      else if (red == "min")
        o = std::min(o, u);
      else
        o = u;
    }
  }
  return out;
}

Node scatterND(const std::string &red) {
  Node n("ScatterND");
  if (!red.empty())
    n.s("reduction", red);
  return n;
}

/// `n` distinct tuples (no duplicates: the order of updates of one slice
/// without a reduction is unspecified by ONNX) for data axes [0, k).
Tensor distinctTuples(int64_t n, int64_t k, const std::vector<int64_t> &ds, unsigned seed) {
  std::vector<int64_t> space(ds.begin(), ds.begin() + k);
  std::vector<int64_t> all(static_cast<size_t>(numel(space)));
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<int64_t>(i);
  std::mt19937 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  Tensor t = Tensor::zeros(DType::Int64, {n, k});
  for (int64_t j = 0; j < n; ++j) {
    std::vector<int64_t> c = unravel(all[j], space);
    for (int64_t m = 0; m < k; ++m) // every other tuple negative
      t.data<int64_t>()[j * k + m] = j % 2 ? c[m] - space[m] : c[m];
  }
  return t;
}

TEST(CpuScatterND, ReductionsShapesAndDuplicates) {
  struct Case {
    std::vector<int64_t> data;
    int64_t tuples, k;
  };
  const Case cases[] = {{{8}, 3, 1}, {{4, 3}, 2, 1}, {{4, 3}, 5, 2}, {{2, 3, 4}, 4, 2},
                        {{2, 3, 4}, 3, 3}, {{3, 2, 2}, 2, 1}};
  for (DType dt : {DType::Float, DType::Double, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64})
    for (const Case &c : cases)
      for (const char *red : {"", "none", "add", "mul", "max", "min"}) {
        std::string what = std::string(dtypeName(dt)) + " data rank " +
                           std::to_string(c.data.size()) + " k " + std::to_string(c.k) +
                           " reduction '" + red + "'";
        Tensor data = smallInts(dt, c.data, 21);
        Tensor idx = distinctTuples(c.tuples, c.k, c.data, 4);
        std::vector<int64_t> us = {c.tuples};
        us.insert(us.end(), c.data.begin() + c.k, c.data.end());
        Tensor upd = smallInts(dt, us, 9);
        int opset = std::string(red) == "max" || std::string(red) == "min" ? 18 : 16;
        expectValues(mustRun(scatterND(red), {data, idx, upd}, opset), dt, c.data,
                     refScatterND(data, idx, upd, red), 0, what);
        // Duplicate tuples: the reductions combine them, in order.
        if (*red && std::string(red) != "none") {
          Tensor dup = Tensor::zeros(DType::Int64, {3, c.k});
          for (int64_t m = 0; m < c.k; ++m) {
            dup.data<int64_t>()[m] = 1;
            dup.data<int64_t>()[c.k + m] = 0;
            dup.data<int64_t>()[2 * c.k + m] = 1 - c.data[m]; // the same as 1
          }
          us[0] = 3;
          Tensor u3 = smallInts(dt, us, 13);
          expectValues(mustRun(scatterND(red), {data, dup, u3}, opset), dt, c.data,
                       refScatterND(data, dup, u3, red), 0, what + " duplicates");
        }
      }
}

TEST(CpuScatterND, AnyDTypeWithoutReductionAndMaskUpdate) {
  Tensor data = smallInts(DType::Bool, {2, 4}, 1);
  Tensor idx = I64({2, 2}, {0, 3, -1, 0});
  Tensor upd = smallInts(DType::Bool, {2}, 2);
  expectValues(mustRun(scatterND(""), {data, idx, upd}), DType::Bool, {2, 4},
               refScatterND(data, idx, upd, ""), 0, "bool");
  // A float mask row replaced (Llama's attention-mask update).
  Tensor mask = Tensor::zeros(DType::Float, {2, 1, 3, 3});
  Tensor rows = F({1, 3}, {-1e9f, -1e9f, 0});
  Tensor y = mustRun(scatterND(""), {mask, I64({1, 3}, {1, 0, 2}), rows});
  expectValues(y, DType::Float, {2, 1, 3, 3}, refScatterND(mask, I64({1, 3}, {1, 0, 2}), rows, ""),
               0, "mask");
}

TEST(CpuScatterND, Errors) {
  Tensor data = F({2, 3}, {0, 1, 2, 3, 4, 5});
  mustFail(scatterND(""), {data, I64({1, 2}, {0, 3}), F({1}, {9})},
           "index 3 is out of range for axis 1 of size 3");
  mustFail(scatterND(""), {data, I64({1, 1}, {-3}), F({1, 3}, {9, 9, 9})},
           "index -3 is out of range for axis 0");
  mustFail(scatterND(""), {data, I64({1, 1}, {0}), F({1, 2}, {9, 9})}, "updates float32[1,2]");
  mustFail(scatterND(""), {data, I64({1, 1}, {0}), I64({1, 3}, {9, 9, 9})}, "must be float32[1,3]");
  mustFail(scatterND(""), {data, I32({1, 1}, {0}), F({1, 3}, {9, 9, 9})}, "int64 indices");
  mustFail(scatterND(""), {data, I64({1, 3}, {0, 0, 0}), F({1}, {9})}, "last dim of indices");
  mustFail(scatterND("max"), {data, I64({1, 1}, {0}), F({1, 3}, {9, 9, 9})},
           "unsupported reduction 'max' (opset 16", 16);
  mustFail(scatterND("avg"), {data, I64({1, 1}, {0}), F({1, 3}, {9, 9, 9})},
           "unsupported reduction 'avg'", 18);
  Tensor b = Tensor::zeros(DType::Bool, {2});
  mustFail(scatterND("add"), {b, I64({1, 1}, {0}), Tensor::zeros(DType::Bool, {1})},
           "unsupported dtype bool");
  mustFail(scatterND(""), {data, I64({1, 1}, {0})}, "input 2 is missing");
}

} // namespace
