//===- CpuKernelsTest.cpp - CPU kernels against naive references ----------===//
//
// Every expected value is computed here, independently of the kernels: naive
// loops over multi-indices with explicit broadcasting.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Communicator.h"
#include "qn/runtime/Kernel.h"
#include "qn/runtime/TensorProto.h"

#include "KernelTestUtil.h"
#include "qn/ops/OpTable.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "onnx/onnx_pb.h"
#include "gtest/gtest.h"

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//



/// Runs one node; undefined tensors in `ins` are left-out inputs.
llvm::Expected<Tensor> run(const Node &node, std::vector<Tensor> ins, int opset = 17,
                           Communicator *comm = nullptr) {
  auto outs = runN(node, std::move(ins), 1, opset, comm);
  if (!outs)
    return outs.takeError();
  return (*outs)[0];
}

/// Runs a node that must fail; returns the message.
std::string runError(const Node &node, std::vector<Tensor> ins, int opset = 17,
                     Communicator *comm = nullptr) {
  auto r = run(node, std::move(ins), opset, comm);
  if (r) {
    ADD_FAILURE() << node.proto().op_type() << " unexpectedly succeeded: " << r->describe();
    return "";
  }
  std::string msg = llvm::toString(r.takeError());
  EXPECT_NE(msg.find(node.proto().op_type() + " 'n_"), std::string::npos)
      << "error does not name the node: " << msg;
  return msg;
}

Tensor mustRun(const Node &node, std::vector<Tensor> ins, int opset = 17,
               Communicator *comm = nullptr) {
  auto r = run(node, std::move(ins), opset, comm);
  if (!r) {
    ADD_FAILURE() << llvm::toString(r.takeError());
    return Tensor();
  }
  return *r;
}

int64_t numelOf(const std::vector<int64_t> &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}


Tensor randF(std::vector<int64_t> shape, unsigned seed, float lo = -1, float hi = 1) {
  Tensor t = Tensor::zeros(DType::Float, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = d(rng);
  return t;
}
Tensor randD(std::vector<int64_t> shape, unsigned seed) {
  Tensor t = Tensor::zeros(DType::Double, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> d(-1, 1);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<double>()[i] = d(rng);
  return t;
}
Tensor toHalf(const Tensor &f) {
  Tensor h = Tensor::zeros(DType::Float16, f.shape());
  for (int64_t i = 0; i < f.numel(); ++i)
    h.data<uint16_t>()[i] = floatToHalf(f.data<float>()[i]);
  return h;
}

/// Value of element `i` of any numeric tensor as double.
double at(const Tensor &t, int64_t i) {
  switch (t.dtype()) {
  case DType::Float:
    return t.data<float>()[i];
  case DType::Double:
    return t.data<double>()[i];
  case DType::Float16:
    return halfToFloat(t.data<uint16_t>()[i]);
  case DType::BFloat16:
    return bf16ToFloat(t.data<uint16_t>()[i]);
  case DType::Int64:
    return static_cast<double>(t.data<int64_t>()[i]);
  case DType::Int32:
    return t.data<int32_t>()[i];
  case DType::Int8:
    return t.data<int8_t>()[i];
  case DType::UInt8:
  case DType::Bool:
    return t.data<uint8_t>()[i];
  default:
    return NAN;
  }
}

/// Element of `t` at the multi-index `idx` of a broadcast output of rank
/// idx.size() (NumPy rules: align right, size-1 dims read index 0).
int64_t bcastOffset(const std::vector<int64_t> &shape, const std::vector<int64_t> &idx) {
  size_t r = idx.size(), off = r - shape.size();
  int64_t o = 0;
  for (size_t k = 0; k < shape.size(); ++k)
    o = o * shape[k] + (shape[k] == 1 ? 0 : idx[off + k]);
  return o;
}

std::vector<int64_t> unravel(int64_t i, const std::vector<int64_t> &shape) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t k = static_cast<int64_t>(shape.size()) - 1; k >= 0; --k) {
    idx[k] = shape[k] ? i % shape[k] : 0;
    i = shape[k] ? i / shape[k] : 0;
  }
  return idx;
}

void expectClose(const Tensor &got, const std::vector<int64_t> &shape,
                 const std::vector<double> &want, double rtol, double atol,
                 const std::string &what = "") {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.shape(), shape) << what << " got " << got.describe();
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    double g = at(got, static_cast<int64_t>(i)), w = want[i];
    if (std::isnan(w)) {
      EXPECT_TRUE(std::isnan(g)) << what << " [" << i << "]";
      continue;
    }
    if (std::isinf(w)) {
      EXPECT_EQ(g, w) << what << " [" << i << "]";
      continue;
    }
    ASSERT_NEAR(g, w, atol + rtol * std::fabs(w)) << what << " [" << i << "]";
  }
}

std::string shapeString(const std::vector<int64_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

//===----------------------------------------------------------------------===//
// MatMul / Gemm
//===----------------------------------------------------------------------===//

/// numpy.matmul by definition.
std::vector<double> refMatMul(const Tensor &a, const Tensor &b, std::vector<int64_t> &outShape) {
  std::vector<int64_t> as = a.shape(), bs = b.shape();
  bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1)
    as.insert(as.begin(), 1);
  if (b1)
    bs.push_back(1);
  int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  std::vector<int64_t> ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  size_t r = std::max(ab.size(), bb.size());
  std::vector<int64_t> batch(r);
  for (size_t k = 0; k < r; ++k) {
    int64_t da = k < r - ab.size() ? 1 : ab[k - (r - ab.size())];
    int64_t db = k < r - bb.size() ? 1 : bb[k - (r - bb.size())];
    batch[k] = std::max(da, db);
  }
  outShape = batch;
  if (!a1)
    outShape.push_back(M);
  if (!b1)
    outShape.push_back(N);
  std::vector<double> out;
  int64_t nb = numelOf(batch);
  for (int64_t bi = 0; bi < nb; ++bi) {
    auto idx = unravel(bi, batch);
    int64_t oa = bcastOffset(ab, idx), ob = bcastOffset(bb, idx);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += at(a, (oa * M + m) * K + k) * at(b, (ob * K + k) * N + n);
        out.push_back(s);
      }
  }
  return out;
}

TEST(CpuMatMul, MatchesNaiveReference) {
  struct Case {
    std::vector<int64_t> a, b;
  };
  const std::vector<Case> cases = {
      {{3, 4}, {4, 5}},
      {{4}, {4, 5}},
      {{3, 4}, {4}},
      {{4}, {4}},
      {{2, 3, 3, 4}, {4, 5}},
      {{3, 4}, {2, 4, 5}},
      {{2, 1, 3, 4}, {1, 3, 4, 5}},
      {{3, 2, 4}, {3, 4, 6}},
      {{1, 3, 4}, {2, 4, 2}},
      {{4}, {2, 4, 5}},
      {{2, 3, 4}, {4}},
      {{1, 1}, {1, 1}},
      {{17, 33}, {33, 9}},
      {{2, 2, 3, 4}, {2, 1, 4, 5}},
  };
  unsigned seed = 1;
  for (const Case &c : cases) {
    Tensor a = randF(c.a, seed++), b = randF(c.b, seed++);
    std::vector<int64_t> shape;
    auto want = refMatMul(a, b, shape);
    std::string what = "MatMul " + shapeString(c.a) + " x " + shapeString(c.b);
    expectClose(mustRun(Node("MatMul"), {a, b}), shape, want, 1e-5, 1e-5, what);

    Tensor ad = randD(c.a, seed++), bd = randD(c.b, seed++);
    auto wantD = refMatMul(ad, bd, shape);
    expectClose(mustRun(Node("MatMul"), {ad, bd}), shape, wantD, 1e-12, 1e-12, what + " f64");

    Tensor ah = toHalf(a), bh = toHalf(b);
    auto wantH = refMatMul(ah, bh, shape);
    expectClose(mustRun(Node("MatMul"), {ah, bh}), shape, wantH, 2e-3, 2e-3, what + " f16");
  }
}

TEST(CpuMatMul, EmptyDims) {
  // K = 0: all zeros.
  Tensor y = mustRun(Node("MatMul"),
                     {Tensor::zeros(DType::Float, {2, 0}), Tensor::zeros(DType::Float, {0, 3})});
  expectClose(y, {2, 3}, std::vector<double>(6, 0.0), 0, 0);
  Tensor z = mustRun(Node("MatMul"), {Tensor::zeros(DType::Float, {0, 4}), randF({4, 3}, 1)});
  EXPECT_EQ(z.describe(), "float32[0,3]");
  Tensor w = mustRun(Node("MatMul"), {randF({2, 0, 3, 4}, 1), randF({4, 5}, 2)});
  EXPECT_EQ(w.describe(), "float32[2,0,3,5]");
}

TEST(CpuMatMul, Errors) {
  std::string m = runError(Node("MatMul"), {randF({3, 4}, 1), randF({5, 2}, 2)});
  EXPECT_NE(m.find("[3,4]"), std::string::npos) << m;
  EXPECT_NE(m.find("[5,2]"), std::string::npos) << m;
  runError(Node("MatMul"), {randF({2, 3, 4}, 1), randF({3, 4, 2}, 2)}); // batch 2 vs 3
  runError(Node("MatMul"), {randF({3, 4}, 1), randD({4, 2}, 2)});       // dtypes
  runError(Node("MatMul"), {I64({1, 1}, {1}), I64({1, 1}, {1})});       // int
  runError(Node("MatMul"), {F({}, {1}), randF({1, 2}, 2)});             // 0-d
  runError(Node("MatMul"), {randF({3, 4}, 1)});                         // arity
  runError(Node("MatMul"), {randF({3, 4}, 1), Tensor()});
}

TEST(CpuMatMul, Deterministic) {
  Tensor a = randF({64, 300}, 5), b = randF({300, 70}, 6);
  Tensor y1 = mustRun(Node("MatMul"), {a, b});
  Tensor y2 = mustRun(Node("MatMul"), {a, b});
  ASSERT_EQ(y1.nbytes(), y2.nbytes());
  EXPECT_EQ(std::memcmp(y1.raw(), y2.raw(), y1.nbytes()), 0);
}

TEST(CpuGemm, AllTransposesAndBiasShapes) {
  const int64_t M = 5, N = 7, K = 6;
  const std::vector<std::vector<int64_t>> cShapes = {{}, {N}, {1, N}, {M, 1}, {M, N}, {1, 1}, {1}};
  unsigned seed = 10;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int ci = -1; ci < static_cast<int>(cShapes.size()); ++ci)
        for (DType dt : {DType::Float, DType::Double, DType::Float16}) {
          std::vector<int64_t> as = ta ? std::vector<int64_t>{K, M} : std::vector<int64_t>{M, K};
          std::vector<int64_t> bs = tb ? std::vector<int64_t>{N, K} : std::vector<int64_t>{K, N};
          Tensor a = randF(as, seed++), b = randF(bs, seed++), c;
          if (ci >= 0)
            c = randF(cShapes[ci], seed++);
          if (dt == DType::Double) {
            auto conv = [](const Tensor &f) {
              Tensor d = Tensor::zeros(DType::Double, f.shape());
              for (int64_t i = 0; i < f.numel(); ++i)
                d.data<double>()[i] = f.data<float>()[i];
              return d;
            };
            a = conv(a);
            b = conv(b);
            if (c.defined())
              c = conv(c);
          } else if (dt == DType::Float16) {
            a = toHalf(a);
            b = toHalf(b);
            if (c.defined())
              c = toHalf(c);
          }
          const double alpha = 0.5, beta = 2.0;
          std::vector<double> want(M * N);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double s = 0;
              for (int64_t k = 0; k < K; ++k) {
                double av = ta ? at(a, k * M + m) : at(a, m * K + k);
                double bv = tb ? at(b, n * K + k) : at(b, k * N + n);
                s += av * bv;
              }
              double cv = 0;
              if (c.defined()) {
                auto cs = c.shape();
                int64_t r0 = cs.size() == 2 && cs[0] != 1 ? m : 0;
                int64_t c1 = cs.empty() ? 1 : cs.back();
                cv = at(c, r0 * c1 + (c1 == 1 ? 0 : n));
              }
              want[m * N + n] = alpha * s + beta * cv;
            }
          Node g("Gemm");
          g.i("transA", ta).i("transB", tb).f("alpha", 0.5f).f("beta", 2.0f);
          std::vector<Tensor> ins = {a, b};
          if (c.defined())
            ins.push_back(c);
          double tol = dt == DType::Float16 ? 1e-2 : 1e-5;
          expectClose(mustRun(g, ins), {M, N}, want, tol, tol,
                      "Gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " C=" +
                          (ci >= 0 ? shapeString(cShapes[ci]) : "none") + " " + dtypeName(dt));
        }
}

TEST(CpuGemm, DefaultsAndErrors) {
  // Defaults alpha = beta = 1.
  Tensor y = mustRun(Node("Gemm"), {F({1, 2}, {1, 2}), F({2, 1}, {3, 4}), F({1}, {10})});
  expectClose(y, {1, 1}, {21}, 0, 0);
  // K = 0 with C: Y = beta * C.
  Node g0("Gemm");
  g0.f("beta", 3.0f);
  expectClose(mustRun(g0, {Tensor::zeros(DType::Float, {2, 0}), Tensor::zeros(DType::Float, {0, 2}),
                           F({2}, {1, 2})}),
              {2, 2}, {3, 6, 3, 6}, 0, 0);
  std::string m = runError(Node("Gemm"), {randF({3, 4}, 1), randF({4, 5}, 2), randF({2, 5}, 3)});
  EXPECT_NE(m.find("[2,5]"), std::string::npos) << m;
  runError(Node("Gemm"), {randF({3, 4}, 1), randF({5, 4}, 2)});
  Node t("Gemm");
  t.i("transB", 1);
  EXPECT_TRUE(bool(run(t, {randF({3, 4}, 1), randF({5, 4}, 2)})));
  runError(Node("Gemm"), {randF({2, 3, 4}, 1), randF({4, 5}, 2)});
  runError(Node("Gemm"), {randF({3, 4}, 1), randF({4, 5}, 2), randF({3, 5, 1}, 3)});
  runError(Node("Gemm"), {randF({3, 4}, 1), randD({4, 5}, 2)});
}

//===----------------------------------------------------------------------===//
// Binary elementwise
//===----------------------------------------------------------------------===//

std::vector<int64_t> refBroadcast(const std::vector<int64_t> &a, const std::vector<int64_t> &b) {
  size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> o(r);
  for (size_t k = 0; k < r; ++k) {
    int64_t da = k < r - a.size() ? 1 : a[k - (r - a.size())];
    int64_t db = k < r - b.size() ? 1 : b[k - (r - b.size())];
    o[k] = da == 1 ? db : da;
  }
  return o;
}

std::vector<double> refBinary(const Tensor &a, const Tensor &b, std::vector<int64_t> &shape,
                              const std::function<double(double, double)> &f) {
  shape = refBroadcast(a.shape(), b.shape());
  std::vector<double> out;
  for (int64_t i = 0; i < numelOf(shape); ++i) {
    auto idx = unravel(i, shape);
    out.push_back(f(at(a, bcastOffset(a.shape(), idx)), at(b, bcastOffset(b.shape(), idx))));
  }
  return out;
}

const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> kBroadcastCases = {
    {{2, 3}, {2, 3}},    // same
    {{}, {2, 3}},        // scalar A
    {{4, 5}, {}},        // scalar B
    {{4, 5}, {1}},       // size-1 B
    {{2, 3, 8}, {8}},    // bias over the last axis
    {{8}, {2, 3, 8}},    // bias as A
    {{2, 3, 8}, {3, 8}}, // bias over the last two axes
    {{2, 3, 8}, {1, 1, 8}},
    {{4, 6}, {4, 1}}, // column broadcast
    {{4, 1}, {4, 6}},
    {{2, 3, 4}, {2, 3, 1}},
    {{2, 1, 4}, {3, 1}}, // general: both broadcast
    {{1, 3, 1}, {2, 1, 5}},
    {{2, 3, 4, 5}, {3, 1, 5}},
    {{2, 1, 4, 1}, {1, 3, 1, 6}},
    {{0, 3}, {3}}, // empty
    {{5, 1, 3}, {1, 0, 3}},
};

TEST(CpuBinary, FloatOpsBroadcast) {
  struct Op {
    const char *name;
    std::function<double(double, double)> f;
  };
  const std::vector<Op> ops = {
      {"Add", [](double x, double y) { return x + y; }},
      {"Sub", [](double x, double y) { return x - y; }},
      {"Mul", [](double x, double y) { return x * y; }},
      {"Div", [](double x, double y) { return x / y; }},
      {"Pow", [](double x, double y) { return std::pow(x, y); }},
  };
  unsigned seed = 100;
  for (const Op &op : ops)
    for (const auto &c : kBroadcastCases) {
      Tensor a = randF(c.first, seed++, 0.5f, 2.0f), b = randF(c.second, seed++, -2.0f, 2.0f);
      std::vector<int64_t> shape;
      auto want = refBinary(a, b, shape, op.f);
      std::string what =
          std::string(op.name) + " " + shapeString(c.first) + " " + shapeString(c.second);
      expectClose(mustRun(Node(op.name), {a, b}), shape, want, 1e-6, 1e-6, what);
      Tensor ad = randD(c.first, seed++), bd = randD(c.second, seed++);
      for (int64_t i = 0; i < ad.numel(); ++i)
        ad.data<double>()[i] = std::fabs(ad.data<double>()[i]) + 0.5;
      want = refBinary(ad, bd, shape, op.f);
      expectClose(mustRun(Node(op.name), {ad, bd}), shape, want, 1e-14, 1e-14, what + " f64");
      Tensor ah = toHalf(a), bh = toHalf(b);
      want = refBinary(ah, bh, shape, op.f);
      expectClose(mustRun(Node(op.name), {ah, bh}), shape, want, 1e-3, 1e-3, what + " f16");
    }
}

TEST(CpuBinary, IntegerOps) {
  Tensor a = I64({2, 3}, {7, -7, 100, int64_t(1) << 40, -9, 0});
  Tensor b = I64({3}, {2, 3, -7});
  std::vector<int64_t> shape;
  expectClose(mustRun(Node("Add"), {a, b}), {2, 3},
              refBinary(a, b, shape, [](double x, double y) { return x + y; }), 0, 0);
  expectClose(mustRun(Node("Sub"), {a, b}), {2, 3},
              refBinary(a, b, shape, [](double x, double y) { return x - y; }), 0, 0);
  expectClose(mustRun(Node("Mul"), {a, b}), {2, 3},
              refBinary(a, b, shape, [](double x, double y) { return x * y; }), 0, 0);
  // Integer division truncates toward zero.
  expectClose(mustRun(Node("Div"), {a, b}), {2, 3},
              refBinary(a, b, shape, [](double x, double y) { return std::trunc(x / y); }), 0, 0);
  Tensor a32 = I32({4}, {7, -7, 9, std::numeric_limits<int32_t>::min()});
  Tensor b32 = I32({4}, {-2, 2, 9, -1});
  Tensor d = mustRun(Node("Div"), {a32, b32});
  ASSERT_EQ(d.dtype(), DType::Int32);
  EXPECT_EQ(d.data<int32_t>()[0], -3);
  EXPECT_EQ(d.data<int32_t>()[1], -3);
  EXPECT_EQ(d.data<int32_t>()[2], 1);
  EXPECT_EQ(d.data<int32_t>()[3], std::numeric_limits<int32_t>::min()); // wraps, no trap
  Tensor s = mustRun(Node("Add"), {I32({1}, {std::numeric_limits<int32_t>::max()}), I32({1}, {1})});
  EXPECT_EQ(s.data<int32_t>()[0], std::numeric_limits<int32_t>::min()); // wraps
  std::string m = runError(Node("Div"), {a, I64({3}, {1, 0, 2})});
  EXPECT_NE(m.find("division by zero"), std::string::npos) << m;
  runError(Node("Pow"), {a, b}); // integer Pow unsupported
}

TEST(CpuBinary, PowSpecialExponents) {
  Tensor x = randF({3, 4}, 7, -3, 3);
  for (float e : {2.0f, 3.0f, 0.5f, -1.0f}) {
    std::vector<int64_t> shape;
    Tensor ex = F({}, {e});
    auto want = refBinary(x, ex, shape, [](double a, double b) { return std::pow(a, b); });
    expectClose(mustRun(Node("Pow"), {x, ex}), {3, 4}, want, 1e-6, 1e-6,
                "Pow e=" + std::to_string(e));
  }
  // Integer exponent tensor.
  Tensor y = mustRun(Node("Pow"), {F({3}, {2, -3, 0.5f}), I64({3}, {3, 2, -2})});
  expectClose(y, {3}, {8, 9, 4}, 1e-6, 0);
  runError(Node("Pow"), {x, make<uint8_t>(DType::Bool, {1}, {1})});
}

TEST(CpuBinary, Compare) {
  struct Op {
    const char *name;
    std::function<double(double, double)> f;
  };
  const std::vector<Op> ops = {
      {"Equal", [](double x, double y) { return double(x == y); }},
      {"Less", [](double x, double y) { return double(x < y); }},
      {"Greater", [](double x, double y) { return double(x > y); }},
  };
  Tensor a = F({2, 3}, {1, 2, 3, 4, 5, NAN}), b = F({3}, {2, 2, 2});
  Tensor ai = I64({2, 3}, {1, 2, 3, 4, 5, 6}), bi = I64({3}, {2, 2, 6});
  for (const Op &op : ops) {
    std::vector<int64_t> shape;
    Tensor y = mustRun(Node(op.name), {a, b});
    EXPECT_EQ(y.dtype(), DType::Bool);
    expectClose(y, {2, 3}, refBinary(a, b, shape, op.f), 0, 0, op.name);
    expectClose(mustRun(Node(op.name), {ai, bi}), {2, 3}, refBinary(ai, bi, shape, op.f), 0, 0,
                op.name);
  }
  Tensor bb = make<uint8_t>(DType::Bool, {3}, {1, 0, 1});
  expectClose(mustRun(Node("Equal"), {bb, make<uint8_t>(DType::Bool, {1}, {1})}), {3}, {1, 0, 1}, 0,
              0);
  runError(Node("Less"), {bb, bb});
  // int8 and uint8 order (as GreaterOrEqual/LessOrEqual do); no arithmetic.
  Tensor i8 = make<int8_t>(DType::Int8, {3}, {-3, 0, 5});
  expectClose(mustRun(Node("Less"), {i8, make<int8_t>(DType::Int8, {1}, {0})}), {3}, {1, 0, 0}, 0,
              0);
  Tensor u8 = make<uint8_t>(DType::UInt8, {3}, {200, 0, 5});
  expectClose(mustRun(Node("Greater"), {u8, make<uint8_t>(DType::UInt8, {1}, {5})}), {3},
              {1, 0, 0}, 0, 0);
  runError(Node("Add"), {i8, i8});
}

TEST(CpuBinary, Errors) {
  std::string m = runError(Node("Add"), {randF({2, 3}, 1), randF({4}, 2)});
  EXPECT_NE(m.find("[2,3]"), std::string::npos) << m;
  EXPECT_NE(m.find("[4]"), std::string::npos) << m;
  runError(Node("Mul"), {randF({2, 3, 4}, 1), randF({3, 3, 4}, 2)});
  runError(Node("Add"), {randF({2}, 1), I64({2}, {1, 2})});
  runError(Node("Add"),
           {make<uint8_t>(DType::Bool, {1}, {1}), make<uint8_t>(DType::Bool, {1}, {1})});
  runError(Node("Sub"), {randF({2}, 1)});
}

//===----------------------------------------------------------------------===//
// Unary
//===----------------------------------------------------------------------===//

TEST(CpuUnary, FloatOps) {
  const double kSqrt2 = std::sqrt(2.0), kPi = std::acos(-1.0);
  struct Op {
    const char *name;
    std::function<double(double)> f;
    bool positive; // domain
  };
  const std::vector<Op> ops = {
      {"Relu", [](double x) { return x > 0 ? x : 0; }, false},
      {"Tanh", [](double x) { return std::tanh(x); }, false},
      {"Sigmoid", [](double x) { return 1 / (1 + std::exp(-x)); }, false},
      {"Erf", [](double x) { return std::erf(x); }, false},
      {"Exp", [](double x) { return std::exp(x); }, false},
      {"Log", [](double x) { return std::log(x); }, true},
      {"Sqrt", [](double x) { return std::sqrt(x); }, true},
      {"Neg", [](double x) { return -x; }, false},
      {"Abs", [](double x) { return std::fabs(x); }, false},
      {"Reciprocal", [](double x) { return 1 / x; }, true},
      {"Gelu", [=](double x) { return 0.5 * x * (1 + std::erf(x / kSqrt2)); }, false},
      {"Identity", [](double x) { return x; }, false},
  };
  unsigned seed = 300;
  for (const Op &op : ops) {
    Tensor x = op.positive ? randF({3, 17}, seed++, 0.01f, 5) : randF({3, 17}, seed++, -6, 6);
    std::vector<double> want;
    for (int64_t i = 0; i < x.numel(); ++i)
      want.push_back(op.f(at(x, i)));
    expectClose(mustRun(Node(op.name), {x}), {3, 17}, want, 2e-6, 2e-6, op.name);
    Tensor xd = Tensor::zeros(DType::Double, {3, 17});
    for (int64_t i = 0; i < x.numel(); ++i)
      xd.data<double>()[i] = x.data<float>()[i];
    expectClose(mustRun(Node(op.name), {xd}), {3, 17}, want, 1e-13, 1e-13,
                std::string(op.name) + " f64");
    Tensor xh = toHalf(x);
    want.clear();
    for (int64_t i = 0; i < xh.numel(); ++i)
      want.push_back(op.f(at(xh, i)));
    expectClose(mustRun(Node(op.name), {xh}), {3, 17}, want, 1e-3, 1e-3,
                std::string(op.name) + " f16");
  }
  // Gelu, tanh approximation.
  Tensor x = randF({40}, 1, -5, 5);
  std::vector<double> want;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double v = at(x, i);
    want.push_back(0.5 * v * (1 + std::tanh(std::sqrt(2 / kPi) * (v + 0.044715 * v * v * v))));
  }
  Node g("Gelu");
  g.s("approximate", "tanh");
  expectClose(mustRun(g, {x}), {40}, want, 1e-6, 1e-6, "Gelu tanh");
  Node bad("Gelu");
  bad.s("approximate", "fast");
  runError(bad, {x});
  // Sigmoid does not overflow for large |x|.
  Tensor big = mustRun(Node("Sigmoid"), {F({4}, {-1000, -100, 100, 1000})});
  expectClose(big, {4}, {0, 1 / (1 + std::exp(100.0)), 1, 1}, 1e-6, 1e-30);
  // Edge values.
  Tensor e = mustRun(Node("Relu"), {F({3}, {-0.0f, NAN, -INFINITY})});
  EXPECT_EQ(e.data<float>()[2], 0.0f);
  EXPECT_TRUE(std::isnan(e.data<float>()[1]));
  expectClose(mustRun(Node("Log"), {F({2}, {0, -1})}), {2}, {-INFINITY, NAN}, 0, 0);
}

TEST(CpuUnary, IntegerAndErrors) {
  Tensor x = I64({4}, {-5, 0, 7, std::numeric_limits<int64_t>::min()});
  Tensor r = mustRun(Node("Relu"), {x});
  expectClose(r, {4}, {0, 0, 7, 0}, 0, 0);
  Tensor n = mustRun(Node("Neg"), {I32({3}, {-5, 0, 7})});
  EXPECT_EQ(n.dtype(), DType::Int32);
  expectClose(n, {3}, {5, 0, -7}, 0, 0);
  expectClose(mustRun(Node("Abs"), {I32({2}, {-3, 3})}), {2}, {3, 3}, 0, 0);
  std::string m = runError(Node("Sqrt"), {x});
  EXPECT_NE(m.find("int64"), std::string::npos) << m;
  runError(Node("Exp"), {make<uint8_t>(DType::Bool, {1}, {1})});
  runError(Node("Tanh"), {});
  // Identity keeps any dtype.
  Tensor b = mustRun(Node("Identity"), {make<uint8_t>(DType::Bool, {2}, {1, 0})});
  EXPECT_EQ(b.describe(), "bool[2]");
}

//===----------------------------------------------------------------------===//
// Softmax / LogSoftmax
//===----------------------------------------------------------------------===//

std::vector<double> refSoftmax(const Tensor &x, int64_t outer, int64_t n, int64_t inner, bool log) {
  std::vector<double> out(x.numel());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      double mx = -INFINITY;
      for (int64_t i = 0; i < n; ++i)
        mx = std::max(mx, at(x, (o * n + i) * inner + j));
      double s = 0;
      for (int64_t i = 0; i < n; ++i)
        s += std::exp(at(x, (o * n + i) * inner + j) - mx);
      for (int64_t i = 0; i < n; ++i) {
        double v = at(x, (o * n + i) * inner + j) - mx;
        out[(o * n + i) * inner + j] = log ? v - std::log(s) : std::exp(v) / s;
      }
    }
  return out;
}

TEST(CpuSoftmax, Axes) {
  Tensor x = randF({2, 3, 5}, 3, -10, 10);
  for (bool log : {false, true}) {
    const char *op = log ? "LogSoftmax" : "Softmax";
    expectClose(mustRun(Node(op), {x}), {2, 3, 5}, refSoftmax(x, 6, 5, 1, log), 1e-5, 1e-6, op);
    Node a1(op);
    a1.i("axis", 1);
    expectClose(mustRun(a1, {x}), {2, 3, 5}, refSoftmax(x, 2, 3, 5, log), 1e-5, 1e-6, op);
    Node a0(op);
    a0.i("axis", -3);
    expectClose(mustRun(a0, {x}), {2, 3, 5}, refSoftmax(x, 1, 2, 15, log), 1e-5, 1e-6, op);
    // Opset 11: coerced to 2-D at axis (default 1).
    expectClose(mustRun(Node(op), {x}, 11), {2, 3, 5}, refSoftmax(x, 2, 15, 1, log), 1e-5, 1e-6,
                std::string(op) + " opset 11");
    // Large values: stable.
    Tensor big = F({1, 3}, {1000, 1001, 1002});
    expectClose(mustRun(Node(op), {big}), {1, 3}, refSoftmax(big, 1, 3, 1, log), 1e-5, 1e-6);
    // float16 and float64.
    Tensor xh = toHalf(x);
    expectClose(mustRun(Node(op), {xh}), {2, 3, 5}, refSoftmax(xh, 6, 5, 1, log), 5e-3, 5e-3);
    Tensor xd = randD({4, 7}, 9);
    expectClose(mustRun(Node(op), {xd}), {4, 7}, refSoftmax(xd, 4, 7, 1, log), 1e-13, 1e-13);
    Node bad(op);
    bad.i("axis", 3);
    runError(bad, {x});
    runError(Node(op), {I64({2}, {1, 2})});
  }
}

//===----------------------------------------------------------------------===//
// Shape ops
//===----------------------------------------------------------------------===//

TEST(CpuShape, Reshape) {
  Tensor x = randF({2, 3, 4}, 1);
  Tensor y = mustRun(Node("Reshape"), {x, I64v({0, -1})});
  EXPECT_EQ(y.describe(), "float32[2,12]");
  EXPECT_EQ(std::memcmp(y.raw(), x.raw(), x.nbytes()), 0);
  EXPECT_EQ(mustRun(Node("Reshape"), {x, I64v({4, 0, 2})}).describe(), "float32[4,3,2]");
  EXPECT_EQ(mustRun(Node("Reshape"), {x, I64v({-1})}).describe(), "float32[24]");
  EXPECT_EQ(mustRun(Node("Reshape"), {F({1}, {5}), I64v({})}).describe(), "float32[]");
  Node az("Reshape");
  az.i("allowzero", 1);
  EXPECT_EQ(mustRun(az, {Tensor::zeros(DType::Float, {0, 3}), I64v({3, 0})}).describe(),
            "float32[3,0]");
  runError(az, {Tensor::zeros(DType::Float, {0, 3}), I64v({0, -1})});
  std::string m = runError(Node("Reshape"), {x, I64v({5, -1})});
  EXPECT_NE(m.find("[2,3,4]"), std::string::npos) << m;
  runError(Node("Reshape"), {x, I64v({-1, -1})});
  runError(Node("Reshape"), {x, I64v({2, 3, 4, 0})});
  runError(Node("Reshape"), {x, I64v({-2, 12})});
  runError(Node("Reshape"), {x, I64v({5, 5})});
  runError(Node("Reshape"), {x, randF({2}, 1)});
  runError(Node("Reshape"), {x, I64({1, 2}, {2, 12})});
}

TEST(CpuShape, Flatten) {
  Tensor x = randF({2, 3, 4}, 1);
  EXPECT_EQ(mustRun(Node("Flatten"), {x}).describe(), "float32[2,12]");
  Node a0("Flatten"), a3("Flatten"), an("Flatten"), bad("Flatten");
  a0.i("axis", 0);
  a3.i("axis", 3);
  an.i("axis", -1);
  bad.i("axis", 4);
  EXPECT_EQ(mustRun(a0, {x}).describe(), "float32[1,24]");
  EXPECT_EQ(mustRun(a3, {x}).describe(), "float32[24,1]");
  EXPECT_EQ(mustRun(an, {x}).describe(), "float32[6,4]");
  runError(bad, {x});
}

TEST(CpuShape, Transpose) {
  struct Case {
    std::vector<int64_t> shape, perm;
  };
  const std::vector<Case> cases = {{{3, 5}, {}},
                                   {{2, 3, 4}, {}},
                                   {{2, 3, 4}, {0, 2, 1}},
                                   {{2, 3, 4, 5}, {2, 0, 3, 1}},
                                   {{2, 3, 4, 5}, {0, 2, 1, 3}},
                                   {{1, 7, 1, 3}, {3, 1, 0, 2}},
                                   {{4}, {0}},
                                   {{2, 0, 3}, {2, 1, 0}}};
  for (const Case &c : cases) {
    for (DType dt : {DType::Float, DType::Int64, DType::Float16, DType::Bool}) {
      Tensor x = Tensor::zeros(dt, c.shape);
      for (int64_t i = 0; i < x.numel(); ++i)
        std::memcpy(static_cast<char *>(x.raw()) + i * dtypeSize(dt), &i, dtypeSize(dt));
      Node n("Transpose");
      std::vector<int64_t> perm = c.perm;
      if (!perm.empty())
        n.ints("perm", perm);
      else
        for (int64_t k = static_cast<int64_t>(c.shape.size()) - 1; k >= 0; --k)
          perm.push_back(k);
      std::vector<int64_t> outShape;
      for (int64_t p : perm)
        outShape.push_back(c.shape[p]);
      Tensor y = mustRun(n, {x});
      ASSERT_EQ(y.shape(), outShape);
      ASSERT_EQ(y.dtype(), dt);
      for (int64_t i = 0; i < y.numel(); ++i) {
        auto oi = unravel(i, outShape);
        std::vector<int64_t> ii(c.shape.size());
        for (size_t k = 0; k < perm.size(); ++k)
          ii[perm[k]] = oi[k];
        int64_t src = 0;
        for (size_t k = 0; k < ii.size(); ++k)
          src = src * c.shape[k] + ii[k];
        ASSERT_EQ(std::memcmp(static_cast<char *>(y.raw()) + i * dtypeSize(dt),
                              static_cast<char *>(x.raw()) + src * dtypeSize(dt), dtypeSize(dt)),
                  0)
            << shapeString(c.shape) << " perm " << shapeString(perm) << " at " << i;
      }
    }
  }
  Node bad("Transpose"), rep("Transpose");
  bad.ints("perm", {0, 1});
  rep.ints("perm", {0, 0, 1});
  runError(bad, {randF({2, 3, 4}, 1)});
  runError(rep, {randF({2, 3, 4}, 1)});
}

TEST(CpuShape, SqueezeUnsqueeze) {
  Tensor x = randF({1, 3, 1, 2}, 1);
  EXPECT_EQ(mustRun(Node("Squeeze"), {x}).describe(), "float32[3,2]");
  EXPECT_EQ(mustRun(Node("Squeeze"), {x, I64v({-2})}).describe(), "float32[1,3,2]");
  Node old("Squeeze");
  old.ints("axes", {0});
  EXPECT_EQ(mustRun(old, {x}, 11).describe(), "float32[3,1,2]");
  std::string m = runError(Node("Squeeze"), {x, I64v({1})});
  EXPECT_NE(m.find("[1,3,1,2]"), std::string::npos) << m;
  runError(Node("Squeeze"), {x, I64v({4})});
  runError(Node("Squeeze"), {x, I64v({0, 0})});

  Tensor v = randF({3, 4}, 2);
  EXPECT_EQ(mustRun(Node("Unsqueeze"), {v, I64v({0})}).describe(), "float32[1,3,4]");
  EXPECT_EQ(mustRun(Node("Unsqueeze"), {v, I64v({-1, 1})}).describe(), "float32[3,1,4,1]");
  EXPECT_EQ(mustRun(Node("Unsqueeze"), {F({}, {1}), I64v({0})}).describe(), "float32[1]");
  Node oldU("Unsqueeze");
  oldU.ints("axes", {2, 0});
  EXPECT_EQ(mustRun(oldU, {v}, 11).describe(), "float32[1,3,1,4]");
  runError(Node("Unsqueeze"), {v, I64v({3})});
  runError(Node("Unsqueeze"), {v, I64v({1, 1})});
  runError(Node("Unsqueeze"), {v});
  Tensor u = mustRun(Node("Unsqueeze"), {v, I64v({0})});
  EXPECT_EQ(std::memcmp(u.raw(), v.raw(), v.nbytes()), 0);
}

TEST(CpuShape, Concat) {
  Tensor a = randF({2, 3, 4}, 1), b = randF({2, 1, 4}, 2), c = randF({2, 2, 4}, 3);
  for (int64_t axisAttr : {1, -2}) {
    Node n("Concat");
    n.i("axis", axisAttr);
    Tensor y = mustRun(n, {a, b, c});
    ASSERT_EQ(y.describe(), "float32[2,6,4]");
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 6; ++j)
        for (int64_t k = 0; k < 4; ++k) {
          float want = j < 3   ? a.data<float>()[(i * 3 + j) * 4 + k]
                       : j < 4 ? b.data<float>()[(i * 1 + j - 3) * 4 + k]
                               : c.data<float>()[(i * 2 + j - 4) * 4 + k];
          ASSERT_EQ(y.data<float>()[(i * 6 + j) * 4 + k], want);
        }
  }
  Node n0("Concat");
  n0.i("axis", 0);
  Tensor y0 = mustRun(n0, {I64v({1, 2}), I64v({}), I64v({3})});
  expectClose(y0, {3}, {1, 2, 3}, 0, 0);
  std::string m = runError(n0, {a, c});
  EXPECT_NE(m.find("[2,2,4]"), std::string::npos) << m;
  runError(n0, {a, I64({1}, {1})});
  runError(Node("Concat"), {a, a}); // no axis
  Node n3("Concat");
  n3.i("axis", 3);
  runError(n3, {a, a});
}

/// The indices one axis of Slice selects, by the ONNX spec's rules (as
/// Python's range, except that a start below the axis is clamped to 0 for
/// negative steps).
std::vector<int64_t> refSliceIndices(int64_t dim, int64_t start, int64_t end, int64_t step) {
  int64_t s = start < 0 ? start + dim : start, e = end < 0 ? end + dim : end;
  std::vector<int64_t> r;
  if (step > 0) {
    s = std::min(std::max<int64_t>(s, 0), dim);
    e = std::min(std::max<int64_t>(e, 0), dim);
    for (int64_t i = s; i<e; i = e - i> step ? i + step : e) // no overflow for huge steps
      r.push_back(i);
  } else {
    s = std::min(std::max<int64_t>(s, 0), dim - 1);
    e = std::min(std::max<int64_t>(e, -1), dim - 1);
    for (int64_t i = s; i > e; i = i - e > -step ? i + step : e)
      r.push_back(i);
  }
  return r;
}

TEST(CpuShape, Slice) {
  const std::vector<int64_t> shape = {4, 5, 6};
  Tensor x = randF(shape, 1);
  struct Case {
    std::vector<int64_t> starts, ends, axes, steps;
  };
  const int64_t BIG = std::numeric_limits<int64_t>::max(),
                SMALL = std::numeric_limits<int64_t>::min();
  const std::vector<Case> cases = {
      {{1}, {3}, {}, {}},
      {{0, 1}, {2, 4}, {}, {}},
      {{1, -3}, {BIG, -1}, {0, 2}, {}},
      {{-100}, {100}, {1}, {2}},
      {{0, 0, 0}, {4, 5, 6}, {0, 1, 2}, {3, 2, 4}},
      {{2}, {2}, {2}, {}},
      {{5}, {1}, {2}, {}},
      {{-1}, {SMALL}, {1}, {-1}},
      {{4}, {0}, {-1}, {-2}},
      {{BIG}, {SMALL}, {0}, {-3}},
      {{3}, {-100}, {0}, {-1}},
      {{-100}, {SMALL}, {1}, {-1}},
      {{0}, {SMALL}, {1}, {-2}},
      {{1, 1}, {3, 100}, {-1, 1}, {1, BIG}},
  };
  for (const Case &c : cases) {
    std::vector<Tensor> ins = {x, I64v(c.starts), I64v(c.ends)};
    if (!c.axes.empty() || !c.steps.empty())
      ins.push_back(c.axes.empty() ? Tensor() : I64v(c.axes));
    if (!c.steps.empty())
      ins.push_back(I64v(c.steps));
    std::vector<std::vector<int64_t>> idx(3);
    for (int64_t k = 0; k < 3; ++k)
      for (int64_t i = 0; i < shape[k]; ++i)
        idx[k].push_back(i);
    for (size_t i = 0; i < c.starts.size(); ++i) {
      int64_t a = c.axes.empty() ? static_cast<int64_t>(i) : c.axes[i];
      if (a < 0)
        a += 3;
      int64_t st = c.steps.empty() ? 1 : c.steps[i];
      idx[a] = refSliceIndices(shape[a], c.starts[i], c.ends[i], st);
    }
    std::vector<int64_t> outShape = {(int64_t)idx[0].size(), (int64_t)idx[1].size(),
                                     (int64_t)idx[2].size()};
    std::vector<double> want;
    for (int64_t i : idx[0])
      for (int64_t j : idx[1])
        for (int64_t k : idx[2])
          want.push_back(at(x, (i * 5 + j) * 6 + k));
    std::string what = "Slice starts " + shapeString(c.starts) + " ends " + shapeString(c.ends) +
                       " axes " + shapeString(c.axes) + " steps " + shapeString(c.steps);
    expectClose(mustRun(Node("Slice"), ins), outShape, want, 0, 0, what);
  }
  // int32 indices.
  Tensor y = mustRun(Node("Slice"), {x, I32({1}, {1}), I32({1}, {2})});
  EXPECT_EQ(y.describe(), "float32[1,5,6]");
  // Opset 1 attributes.
  Node old("Slice");
  old.ints("starts", {1}).ints("ends", {3}).ints("axes", {1});
  EXPECT_EQ(mustRun(old, {x}, 9).describe(), "float32[4,2,6]");
  // Errors.
  std::string m = runError(Node("Slice"), {x, I64v({0}), I64v({1}), I64v({0}), I64v({0})});
  EXPECT_NE(m.find("step"), std::string::npos) << m;
  runError(Node("Slice"), {x, I64v({0, 1}), I64v({1})});
  runError(Node("Slice"), {x, I64v({0}), I64v({1}), I64v({3})});
  runError(Node("Slice"), {x, I64v({0, 0}), I64v({1, 1}), I64v({1, 1})});
  runError(Node("Slice"), {x, randF({1}, 1), I64v({1})});
}

TEST(CpuShape, ShapeAndConstant) {
  Tensor x = randF({2, 3, 4}, 1);
  Tensor s = mustRun(Node("Shape"), {x});
  EXPECT_EQ(s.describe(), "int64[3]");
  expectClose(s, {3}, {2, 3, 4}, 0, 0);
  Node sl("Shape");
  sl.i("start", 1).i("end", -1);
  expectClose(mustRun(sl, {x}), {1}, {3}, 0, 0);
  Node sc("Shape");
  sc.i("start", -10).i("end", 10);
  expectClose(mustRun(sc, {x}), {3}, {2, 3, 4}, 0, 0);
  EXPECT_EQ(mustRun(Node("Shape"), {F({}, {1})}).describe(), "int64[0]");

  Tensor v = randF({2, 2}, 4);
  Node c("Constant");
  c.tensor("value", tensorToProto(v, "c"));
  Tensor cv = mustRun(c, {});
  ASSERT_EQ(cv.describe(), "float32[2,2]");
  EXPECT_EQ(std::memcmp(cv.raw(), v.raw(), v.nbytes()), 0);
  Node cf("Constant");
  cf.f("value_float", 2.5f);
  expectClose(mustRun(cf, {}), {}, {2.5}, 0, 0);
  Node cfs("Constant");
  cfs.floats("value_floats", {1, 2});
  expectClose(mustRun(cfs, {}), {2}, {1, 2}, 0, 0);
  Node ci("Constant");
  ci.i("value_int", -7);
  Tensor civ = mustRun(ci, {});
  EXPECT_EQ(civ.describe(), "int64[]");
  expectClose(civ, {}, {-7}, 0, 0);
  Node cis("Constant");
  cis.ints("value_ints", {4, 5, 6});
  expectClose(mustRun(cis, {}), {3}, {4, 5, 6}, 0, 0);
  Node cs("Constant");
  cs.s("value_string", "x");
  runError(cs, {});
  onnx::TensorProto ext = tensorToProto(v, "w");
  ext.clear_raw_data();
  ext.set_data_location(onnx::TensorProto::EXTERNAL);
  Node ce("Constant");
  ce.tensor("value", ext);
  std::string m = runError(ce, {});
  EXPECT_NE(m.find("'w'"), std::string::npos) << m;
}

//===----------------------------------------------------------------------===//
// Cast
//===----------------------------------------------------------------------===//

TEST(CpuCast, Conversions) {
  const std::vector<double> values = {0, 1, -1, 2.75, -2.75, 100, -100, 127, 200, 0.5};
  struct T {
    DType dt;
    int onnx;
  };
  const std::vector<T> types = {
      {DType::Float, onnx::TensorProto::FLOAT},      {DType::Double, onnx::TensorProto::DOUBLE},
      {DType::Float16, onnx::TensorProto::FLOAT16},  {DType::Int64, onnx::TensorProto::INT64},
      {DType::Int32, onnx::TensorProto::INT32},      {DType::Int8, onnx::TensorProto::INT8},
      {DType::UInt8, onnx::TensorProto::UINT8},      {DType::Bool, onnx::TensorProto::BOOL},
      {DType::BFloat16, onnx::TensorProto::BFLOAT16}};
  auto representable = [](DType dt, double v) {
    switch (dt) {
    case DType::Int8:
      return v >= -128 && v <= 127;
    case DType::UInt8:
    case DType::Bool:
      return v >= 0 && v <= 255;
    default:
      return true;
    }
  };
  auto store = [](Tensor &t, int64_t i, double v) {
    switch (t.dtype()) {
    case DType::Float:
      t.data<float>()[i] = static_cast<float>(v);
      break;
    case DType::Double:
      t.data<double>()[i] = v;
      break;
    case DType::Float16:
      t.data<uint16_t>()[i] = floatToHalf(static_cast<float>(v));
      break;
    case DType::BFloat16:
      t.data<uint16_t>()[i] = floatToBf16(static_cast<float>(v));
      break;
    case DType::Int64:
      t.data<int64_t>()[i] = static_cast<int64_t>(v);
      break;
    case DType::Int32:
      t.data<int32_t>()[i] = static_cast<int32_t>(v);
      break;
    case DType::Int8:
      t.data<int8_t>()[i] = static_cast<int8_t>(v);
      break;
    case DType::UInt8:
      t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
      break;
    case DType::Bool:
      t.data<uint8_t>()[i] = v != 0;
      break;
    default:
      break;
    }
  };
  for (const T &from : types)
    for (const T &to : types) {
      std::vector<double> in;
      for (double v : values) {
        bool isInt = from.dt != DType::Float && from.dt != DType::Double &&
                     from.dt != DType::Float16 && from.dt != DType::BFloat16;
        double vv = isInt ? std::trunc(v) : v;
        if (from.dt == DType::Bool)
          vv = v != 0;
        if (representable(from.dt, vv))
          in.push_back(vv);
      }
      Tensor x = Tensor::zeros(from.dt, {static_cast<int64_t>(in.size())});
      for (size_t i = 0; i < in.size(); ++i)
        store(x, static_cast<int64_t>(i), in[i]);
      bool fromFloat = from.dt == DType::Float || from.dt == DType::Double ||
                       from.dt == DType::Float16 || from.dt == DType::BFloat16;
      std::vector<double> want;
      for (size_t i = 0; i < in.size(); ++i) {
        double v = at(x, static_cast<int64_t>(i));
        double w;
        // Integer targets: floats truncate toward zero and saturate;
        // integers wrap modulo 2^bits.
        auto toInt = [&](double lo, double hi) {
          if (fromFloat)
            return std::min(std::max(std::trunc(v), lo), hi);
          double span = hi - lo + 1;
          double m = std::fmod(v - lo, span);
          if (m < 0)
            m += span;
          return m + lo;
        };
        switch (to.dt) {
        case DType::Float:
        case DType::Double:
          w = v;
          break;
        case DType::Float16:
          w = halfToFloat(floatToHalf(static_cast<float>(v)));
          break;
        case DType::BFloat16:
          w = bf16ToFloat(floatToBf16(static_cast<float>(v)));
          break;
        case DType::Bool:
          w = v != 0;
          break;
        case DType::Int8:
          w = toInt(-128, 127);
          break;
        case DType::UInt8:
          w = toInt(0, 255);
          break;
        case DType::Int32:
          w = toInt(-2147483648.0, 2147483647.0);
          break;
        default: // int64: every test value fits
          w = fromFloat ? std::trunc(v) : v;
        }
        want.push_back(w);
      }
      Node n("Cast");
      n.i("to", to.onnx);
      Tensor y = mustRun(n, {x});
      ASSERT_EQ(y.dtype(), to.dt) << dtypeName(from.dt) << "->" << dtypeName(to.dt);
      expectClose(y, x.shape(), want, 0, 0,
                  std::string("Cast ") + dtypeName(from.dt) + "->" + dtypeName(to.dt));
    }
  // Float -> int: truncation toward zero, NaN -> 0, saturation.
  Node toI("Cast");
  toI.i("to", onnx::TensorProto::INT32);
  Tensor y = mustRun(toI, {F({5}, {-2.9f, 2.9f, NAN, 1e20f, -1e20f})});
  expectClose(y, {5}, {-2, 2, 0, 2147483647.0, -2147483648.0}, 0, 0);
  Node toU("Cast");
  toU.i("to", onnx::TensorProto::UINT8);
  expectClose(mustRun(toU, {F({3}, {-5, 300, 254.9f})}), {3}, {0, 255, 254}, 0, 0);
  Node toB("Cast");
  toB.i("to", onnx::TensorProto::BOOL);
  expectClose(mustRun(toB, {F({3}, {0, -0.0f, NAN})}), {3}, {0, 0, 1}, 0, 0);
  Node bad("Cast");
  bad.i("to", onnx::TensorProto::STRING);
  runError(bad, {F({1}, {1})});
  runError(Node("Cast"), {F({1}, {1})});
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

/// Pretends to be rank 0 of 2 whose peer holds `peer` (same shape as the
/// input): sums and concatenations are computed with it.
class FakeComm : public Communicator {
public:
  explicit FakeComm(Tensor peer) : peer_(std::move(peer)) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  llvm::Error allReduceSum(Tensor &t) override {
    ++calls;
    if (fail)
      return llvm::createStringError(llvm::inconvertibleErrorCode(), "peer went away");
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<float>()[i] += peer_.data<float>()[i];
    return llvm::Error::success();
  }
  llvm::Error allGather(const Tensor &in, Tensor &out, int axis) override {
    ++calls;
    lastAxis = axis;
    std::vector<int64_t> s = in.shape();
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < axis; ++k)
      outer *= s[k];
    for (size_t k = axis + 1; k < s.size(); ++k)
      inner *= s[k];
    int64_t d = s[axis];
    s[axis] *= 2;
    out = Tensor::zeros(in.dtype(), s);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < 2 * d * inner; ++j)
        out.data<float>()[o * 2 * d * inner + j] =
            j < d * inner ? in.data<float>()[o * d * inner + j]
                          : peer_.data<float>()[o * d * inner + j - d * inner];
    return llvm::Error::success();
  }
  llvm::Error reduceScatterSum(const Tensor &in, Tensor &out, int axis) override {
    ++calls;
    lastAxis = axis;
    std::vector<int64_t> s = in.shape();
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < axis; ++k)
      outer *= s[k];
    for (size_t k = axis + 1; k < s.size(); ++k)
      inner *= s[k];
    int64_t d = s[axis] / 2;
    s[axis] = d;
    out = Tensor::zeros(in.dtype(), s);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < d * inner; ++j) // rank 0: the first half
        out.data<float>()[o * d * inner + j] =
            in.data<float>()[o * 2 * d * inner + j] + peer_.data<float>()[o * 2 * d * inner + j];
    return llvm::Error::success();
  }
  llvm::Expected<std::vector<std::string>> exchange(llvm::StringRef, llvm::StringRef v) override {
    return std::vector<std::string>{v.str(), v.str()};
  }
  int calls = 0;
  int lastAxis = -100;
  bool fail = false;

private:
  Tensor peer_;
};

TEST(CpuCollectives, SingleRankIsIdentity) {
  Tensor x = randF({2, 4}, 1);
  for (const char *op : {"AllReduce", "AllGather", "ReduceScatter"}) {
    Node n(op, "ai.quintnet");
    if (std::string(op) != "AllReduce")
      n.i("axis", 1);
    Tensor y = mustRun(n, {x});
    ASSERT_EQ(y.describe(), "float32[2,4]") << op;
    EXPECT_EQ(std::memcmp(y.raw(), x.raw(), x.nbytes()), 0) << op;
  }
}

TEST(CpuCollectives, CallTheCommunicator) {
  Tensor x = randF({2, 4}, 1), peer = randF({2, 4}, 2);
  Tensor xCopy = x.clone();
  FakeComm comm(peer);

  Tensor r = mustRun(Node("AllReduce", "ai.quintnet"), {x}, 1, &comm);
  std::vector<double> want;
  for (int64_t i = 0; i < 8; ++i)
    want.push_back(static_cast<double>(x.data<float>()[i] + peer.data<float>()[i]));
  expectClose(r, {2, 4}, want, 0, 0, "AllReduce");
  EXPECT_EQ(std::memcmp(x.raw(), xCopy.raw(), x.nbytes()), 0) << "AllReduce mutated its input";
  EXPECT_NE(r.raw(), x.raw());

  Node g("AllGather", "ai.quintnet");
  g.i("axis", -1);
  Tensor ag = mustRun(g, {x}, 1, &comm);
  EXPECT_EQ(comm.lastAxis, 1);
  ASSERT_EQ(ag.describe(), "float32[2,8]");
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 8; ++j)
      EXPECT_EQ(ag.data<float>()[i * 8 + j],
                j < 4 ? x.data<float>()[i * 4 + j] : peer.data<float>()[i * 4 + j - 4]);

  Node rs("ReduceScatter", "ai.quintnet");
  rs.i("axis", 0);
  Tensor sc = mustRun(rs, {x}, 1, &comm);
  EXPECT_EQ(comm.lastAxis, 0);
  ASSERT_EQ(sc.describe(), "float32[1,4]");
  for (int64_t j = 0; j < 4; ++j)
    EXPECT_EQ(sc.data<float>()[j], x.data<float>()[j] + peer.data<float>()[j]);
  EXPECT_EQ(comm.calls, 3);

  // Errors: not divisible, bad axis, missing axis, communicator failure.
  Node rs3("ReduceScatter", "ai.quintnet");
  rs3.i("axis", 0);
  std::string m = runError(rs3, {randF({3, 4}, 3)}, 1, &comm);
  EXPECT_NE(m.find("divisible"), std::string::npos) << m;
  Node g5("AllGather", "ai.quintnet");
  g5.i("axis", 2);
  runError(g5, {x}, 1, &comm);
  runError(Node("AllGather", "ai.quintnet"), {x}, 1, &comm);
  comm.fail = true;
  m = runError(Node("AllReduce", "ai.quintnet"), {x}, 1, &comm);
  EXPECT_NE(m.find("peer went away"), std::string::npos) << m;
}

//===----------------------------------------------------------------------===//
// Registry and helpers
//===----------------------------------------------------------------------===//

TEST(KernelRegistry, LookupAndNames) {
  const KernelRegistry &r = registry();
  for (const char *op :
       {"MatMul",    "Gemm",    "Add",        "Sub",     "Mul",      "Div",        "Pow",
        "Equal",     "Less",    "Greater",    "Relu",    "Tanh",     "Sigmoid",    "Erf",
        "Exp",       "Log",     "Sqrt",       "Neg",     "Abs",      "Reciprocal", "Gelu",
        "Identity",  "Softmax", "LogSoftmax", "Reshape", "Flatten",  "Transpose",  "Squeeze",
        "Unsqueeze", "Concat",  "Slice",      "Shape",   "Constant", "Cast"})
    EXPECT_NE(r.lookup("", op), nullptr) << op;
  EXPECT_NE(r.lookup("ai.onnx", "MatMul"), nullptr);
  for (const char *op : {"AllReduce", "AllGather", "ReduceScatter"}) {
    EXPECT_NE(r.lookup("ai.quintnet", op), nullptr) << op;
    EXPECT_EQ(r.lookup("", op), nullptr) << op;
  }
  EXPECT_EQ(r.lookup("", "NoSuchOp"), nullptr);
  auto names = r.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_NE(std::find(names.begin(), names.end(), "MatMul"), names.end());

  KernelRegistry mine;
  mine.add("", "X", [](KernelContext &) { return llvm::Error::success(); });
  ASSERT_NE(mine.lookup("", "X"), nullptr);
  EXPECT_EQ(mine.lookup("other", "X"), nullptr);
}

TEST(KernelRegistry, CpuOpSetIsTheOpTables) {
  // The CPU registry holds exactly the ops the op table (qn/ops/Ops.def)
  // marks OV_Cpu: a kernel the table does not know, or a table entry
  // without its kernel, fails here.
  std::vector<std::string> want;
  for (const qn::ops::OpInfo &op : qn::ops::kOps)
    if (op.runsOn(qn::ops::OV_Cpu))
      want.push_back(op.domain == qn::ops::OD_Onnx ? std::string(op.name)
                                                  : std::string("ai.quintnet::") + op.name);
  std::sort(want.begin(), want.end());
  std::vector<std::string> have = registry().names();
  std::sort(have.begin(), have.end());
  EXPECT_EQ(have, want);
}

TEST(KernelHelpers, AttributesAndLabels) {
  Node n("Gemm");
  n.i("transA", 1).f("alpha", 0.25f).s("mode", "x").ints("perm", {2, 0, 1});
  const onnx::NodeProto &p = n.proto();
  EXPECT_EQ(attrInt(p, "transA", 0), 1);
  EXPECT_EQ(attrInt(p, "transB", 7), 7);
  EXPECT_EQ(attrFloat(p, "alpha", 1), 0.25f);
  EXPECT_EQ(attrFloat(p, "beta", 1), 1.0f);
  EXPECT_EQ(attrString(p, "mode", "y"), "x");
  EXPECT_EQ(attrString(p, "other", "y"), "y");
  EXPECT_EQ(attrInts(p, "perm"), (std::vector<int64_t>{2, 0, 1}));
  EXPECT_TRUE(attrInts(p, "none").empty());
  EXPECT_TRUE(hasAttr(p, "alpha"));
  EXPECT_FALSE(hasAttr(p, "beta"));
  EXPECT_EQ(nodeLabel(p), "Gemm 'n_Gemm'");
  onnx::NodeProto anon;
  anon.set_op_type("Relu");
  anon.add_output("h1");
  EXPECT_EQ(nodeLabel(anon), "Relu (output 'h1')");
}

} // namespace

TEST(CpuShape, GatherRowsAndInnerAxis) {
  // data[3,4] = 10*r + c.
  std::vector<float> v;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c)
      v.push_back(static_cast<float>(10 * r + c));
  Tensor data = F({3, 4}, v);
  // Axis 0 with 2-D int64 indices (an embedding lookup), including -1.
  Tensor y = mustRun(Node("Gather"), {data, I64({2, 2}, {2, 0, -1, 1})});
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 2, 4}));
  const int rows[] = {2, 0, 2, 1};
  for (int j = 0; j < 4; ++j)
    for (int c = 0; c < 4; ++c)
      EXPECT_EQ(y.data<float>()[j * 4 + c], static_cast<float>(10 * rows[j] + c));
  // Axis 1 with int32 indices.
  Tensor z = mustRun(Node("Gather").i("axis", 1), {data, I32({3}, {3, 3, 0})});
  ASSERT_EQ(z.shape(), (std::vector<int64_t>{3, 3}));
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(z.data<float>()[r * 3 + 0], static_cast<float>(10 * r + 3));
    EXPECT_EQ(z.data<float>()[r * 3 + 2], static_cast<float>(10 * r));
  }
  // An index out of range is an error naming the node.
  std::string msg = runError(Node("Gather"), {data, I64v({3})});
  EXPECT_NE(msg.find("index 3 is out of range"), std::string::npos) << msg;
}
