//===- ConvTest.cpp - The CPU Conv kernel against a naive convolution ------===//
#include "KernelTestUtil.h"

#include "qn/runtime/Tensor.h"

#include <cmath>
#include <random>

namespace qn::rt::testing {
namespace {

struct ConvCase {
  std::vector<int64_t> x = {}, w = {}; // shapes
  std::vector<int64_t> strides = {}, dilations = {}, padsBegin = {}, padsEnd = {};
  int64_t group = 1;
};

/// The ONNX definition, one output element at a time, in double.
std::vector<double> refConv(const ConvCase &c, const std::vector<double> &x,
                            const std::vector<double> &w, const std::vector<double> *b,
                            std::vector<int64_t> &outShape) {
  const size_t nd = c.x.size() - 2;
  const int64_t N = c.x[0], C = c.x[1], M = c.w[0], G = c.group, Cg = C / G, Mg = M / G;
  std::vector<int64_t> st(nd, 1), dl(nd, 1), pb(nd, 0), pe(nd, 0), out(nd);
  for (size_t i = 0; i < nd; ++i) {
    if (!c.strides.empty())
      st[i] = c.strides[i];
    if (!c.dilations.empty())
      dl[i] = c.dilations[i];
    if (!c.padsBegin.empty())
      pb[i] = c.padsBegin[i], pe[i] = c.padsEnd[i];
    out[i] = (c.x[2 + i] + pb[i] + pe[i] - (c.w[2 + i] - 1) * dl[i] - 1) / st[i] + 1;
  }
  outShape = {N, M};
  outShape.insert(outShape.end(), out.begin(), out.end());
  int64_t P = 1, KS = 1, IS = 1;
  for (size_t i = 0; i < nd; ++i)
    P *= out[i], KS *= c.w[2 + i], IS *= c.x[2 + i];
  std::vector<double> y(static_cast<size_t>(N * M * P));
  std::vector<int64_t> o(nd), k(nd);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t op = 0; op < P; ++op) {
        for (int64_t r = op, i = static_cast<int64_t>(nd) - 1; i >= 0; --i)
          o[i] = r % out[i], r /= out[i];
        double acc = b ? (*b)[m] : 0.0;
        int64_t g = m / Mg;
        for (int64_t cc = 0; cc < Cg; ++cc)
          for (int64_t kp = 0; kp < KS; ++kp) {
            for (int64_t r = kp, i = static_cast<int64_t>(nd) - 1; i >= 0; --i)
              k[i] = r % c.w[2 + i], r /= c.w[2 + i];
            int64_t xi = 0;
            bool inside = true;
            for (size_t i = 0; i < nd; ++i) {
              int64_t pos = o[i] * st[i] + k[i] * dl[i] - pb[i];
              inside &= pos >= 0 && pos < c.x[2 + i];
              xi = xi * c.x[2 + i] + pos;
            }
            if (!inside)
              continue;
            acc += x[(n * C + g * Cg + cc) * IS + xi] * w[(m * Cg + cc) * KS + kp];
          }
        y[(n * M + m) * P + op] = acc;
      }
  return y;
}

std::vector<double> randoms(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> v(n);
  for (double &d : v)
    d = u(rng);
  return v;
}

int64_t numelOf(const std::vector<int64_t> &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

Tensor fromDoubles(DType dt, std::vector<int64_t> shape, const std::vector<double> &v) {
  Tensor t = Tensor::zeros(dt, shape);
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::Double)
      t.data<double>()[i] = v[i];
    else if (dt == DType::Float)
      t.data<float>()[i] = static_cast<float>(v[i]);
    else if (dt == DType::Float16)
      t.data<uint16_t>()[i] = floatToHalf(static_cast<float>(v[i]));
    else
      t.data<uint16_t>()[i] = floatToBf16(static_cast<float>(v[i]));
  }
  return t;
}

double elem(const Tensor &t, int64_t i) {
  switch (t.dtype()) {
  case DType::Double: return t.data<double>()[i];
  case DType::Float: return t.data<float>()[i];
  case DType::Float16: return halfToFloat(t.data<uint16_t>()[i]);
  default: return bf16ToFloat(t.data<uint16_t>()[i]);
  }
}

Node convNode(const ConvCase &c, bool withAttrs = true) {
  Node n("Conv");
  if (!withAttrs)
    return n;
  if (!c.strides.empty())
    n.ints("strides", c.strides);
  if (!c.dilations.empty())
    n.ints("dilations", c.dilations);
  if (!c.padsBegin.empty()) {
    std::vector<int64_t> pads = c.padsBegin;
    pads.insert(pads.end(), c.padsEnd.begin(), c.padsEnd.end());
    n.ints("pads", pads);
  }
  if (c.group != 1)
    n.i("group", c.group);
  return n;
}

/// Runs `node` (Conv, its attributes describing `c`) and compares it with refConv.
void check(const Node &node, const ConvCase &c, bool bias, DType dt = DType::Float,
           unsigned seed = 1) {
  SCOPED_TRACE(::testing::PrintToString(c.x) + " * " + ::testing::PrintToString(c.w) + " " +
               dtypeName(dt));
  auto xv = randoms(numelOf(c.x), seed), wv = randoms(numelOf(c.w), seed + 1),
       bv = randoms(c.w[0], seed + 2);
  // Round the operands to the dtype first, so that the reference sees what the kernel sees.
  Tensor X = fromDoubles(dt, c.x, xv), W = fromDoubles(dt, c.w, wv), B = fromDoubles(dt, {c.w[0]}, bv);
  for (size_t i = 0; i < xv.size(); ++i)
    xv[i] = elem(X, i);
  for (size_t i = 0; i < wv.size(); ++i)
    wv[i] = elem(W, i);
  for (size_t i = 0; i < bv.size(); ++i)
    bv[i] = elem(B, i);
  std::vector<int64_t> outShape;
  auto ref = refConv(c, xv, wv, bias ? &bv : nullptr, outShape);
  std::vector<Tensor> ins = {X, W};
  if (bias)
    ins.push_back(B);
  auto out = runN(node, ins);
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  const Tensor &y = (*out)[0];
  ASSERT_EQ(y.dtype(), dt);
  ASSERT_EQ(y.shape(), outShape);
  double tol = dt == DType::Double ? 1e-12 : dt == DType::Float ? 1e-5 : dt == DType::Float16 ? 1e-2 : 6e-2;
  for (int64_t i = 0; i < y.numel(); ++i)
    ASSERT_NEAR(elem(y, i), ref[i], tol * (1 + std::fabs(ref[i]))) << "element " << i;
}

void check(const ConvCase &c, bool bias, DType dt = DType::Float, unsigned seed = 1) {
  check(convNode(c), c, bias, dt, seed);
}

TEST(Conv, OneD) {
  check({{2, 3, 11}, {4, 3, 3}}, false);
  check({{2, 3, 11}, {4, 3, 3}}, true);
  check({{1, 2, 9}, {3, 2, 1}}, true); // pointwise: X is the column matrix
  check({{2, 4, 17}, {6, 4, 5}, {2}, {2}, {3}, {1}}, true);
}

TEST(Conv, TwoD) {
  check({{2, 3, 7, 6}, {5, 3, 3, 2}}, true);
  check({{1, 2, 8, 8}, {4, 2, 3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}}, true);
  check({{2, 3, 9, 10}, {4, 3, 3, 3}, {2, 3}, {2, 1}, {1, 0}, {2, 2}}, false);
  check({{1, 3, 6, 5}, {2, 3, 1, 1}}, true);
}

TEST(Conv, PatchEmbedding) {
  // kernel == stride, no pads (ViT): and a size the patches do not divide.
  check({{2, 3, 16, 16}, {8, 3, 4, 4}, {4, 4}}, true);
  check({{1, 3, 18, 17}, {8, 3, 4, 4}, {4, 4}}, true);
}

TEST(Conv, ThreeD) {
  check({{1, 2, 5, 6, 4}, {3, 2, 2, 3, 2}, {1, 2, 1}, {2, 1, 1}, {1, 0, 1}, {0, 1, 1}}, true);
}

TEST(Conv, Groups) {
  check({{2, 4, 9}, {6, 2, 3}, {}, {}, {1}, {1}, 2}, true);
  check({{1, 6, 7, 7}, {6, 1, 3, 3}, {2, 2}, {}, {1, 1}, {1, 1}, 6}, true); // depthwise
  check({{1, 6, 5, 5}, {12, 2, 2, 2}, {}, {2, 2}, {}, {}, 3}, false);
}

TEST(Conv, DTypes) {
  ConvCase c{{1, 3, 8, 7}, {4, 3, 3, 3}, {2, 1}, {1, 1}, {1, 1}, {1, 0}};
  for (DType dt : {DType::Float, DType::Double, DType::Float16, DType::BFloat16})
    check(c, true, dt);
}

TEST(Conv, KernelShapeAttribute) {
  ConvCase c{{1, 2, 6, 6}, {3, 2, 3, 3}};
  Node n("Conv");
  n.ints("kernel_shape", {3, 3});
  check(n, c, true);
}

TEST(Conv, AutoPad) {
  // SAME_UPPER / SAME_LOWER: out = ceil(in / stride); the odd pad goes at the
  // end (UPPER) or the beginning (LOWER).
  {
    ConvCase c{{1, 2, 7, 9}, {3, 2, 3, 4}, {2, 2}, {}, {1, 1}, {1, 2}};
    Node n("Conv");
    n.s("auto_pad", "SAME_UPPER").ints("strides", {2, 2});
    check(n, c, true);
  }
  {
    ConvCase c{{1, 2, 7, 9}, {3, 2, 3, 4}, {2, 2}, {}, {1, 2}, {1, 1}};
    Node n("Conv");
    n.s("auto_pad", "SAME_LOWER").ints("strides", {2, 2});
    check(n, c, true);
  }
  {
    ConvCase c{{1, 2, 10}, {3, 2, 4}, {}, {2}, {3}, {3}};
    Node n("Conv");
    n.s("auto_pad", "SAME_UPPER").ints("dilations", {2});
    check(n, c, false);
  }
  {
    ConvCase c{{1, 2, 7, 8}, {3, 2, 3, 4}, {2, 1}};
    Node n("Conv");
    n.s("auto_pad", "VALID").ints("strides", {2, 1});
    check(n, c, true);
  }
}

TEST(Conv, EmptyBatch) {
  auto out = runN(Node("Conv"), {Tensor::zeros(DType::Float, {0, 2, 5}),
                                  Tensor::zeros(DType::Float, {3, 2, 2})});
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  EXPECT_EQ((*out)[0].shape(), (std::vector<int64_t>{0, 3, 4}));
}

void expectError(const Node &n, std::vector<Tensor> ins, const std::string &what) {
  auto out = runN(n, ins);
  ASSERT_FALSE(static_cast<bool>(out)) << what;
  std::string msg = llvm::toString(out.takeError());
  EXPECT_NE(msg.find("n_Conv"), std::string::npos) << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << msg;
}

TEST(Conv, Errors) {
  Tensor x = Tensor::zeros(DType::Float, {1, 4, 8, 8});
  Tensor w = Tensor::zeros(DType::Float, {6, 4, 3, 3});
  expectError(Node("Conv"), {x}, "");
  expectError(Node("Conv"), {x, Tensor::zeros(DType::Float, {6, 3, 3, 3})}, "input channels");
  expectError(Node("Conv"), {x, Tensor::zeros(DType::Float, {6, 4, 3})}, "X's rank");
  expectError(Node("Conv"), {Tensor::zeros(DType::Float, {4, 8}), w}, "rank 3, 4 or 5");
  expectError(Node("Conv"), {x, Tensor::zeros(DType::Double, {6, 4, 3, 3})}, "dtypes differ");
  expectError(Node("Conv"), {Tensor::zeros(DType::Int32, {1, 4, 8, 8}),
                             Tensor::zeros(DType::Int32, {6, 4, 3, 3})}, "int32");
  expectError(Node("Conv"), {x, w, Tensor::zeros(DType::Float, {5})}, "B ");
  expectError(Node("Conv").i("group", 3), {x, w}, "group=3");
  expectError(Node("Conv").i("group", 0), {x, w}, "group");
  expectError(Node("Conv").ints("strides", {1}), {x, w}, "strides");
  expectError(Node("Conv").ints("strides", {0, 1}), {x, w}, "strides");
  expectError(Node("Conv").ints("dilations", {1, 1, 1}), {x, w}, "dilations");
  expectError(Node("Conv").ints("pads", {1, 1}), {x, w}, "pads");
  expectError(Node("Conv").ints("pads", {1, 1, -1, 0}), {x, w}, "pads");
  expectError(Node("Conv").ints("kernel_shape", {2, 2}), {x, w}, "kernel_shape");
  expectError(Node("Conv").s("auto_pad", "FULL"), {x, w}, "auto_pad");
  expectError(Node("Conv").s("auto_pad", "SAME_UPPER").ints("pads", {1, 1, 1, 1}), {x, w},
              "auto_pad");
  expectError(Node("Conv"), {x, Tensor::zeros(DType::Float, {6, 4, 9, 3})}, "does not fit");
  expectError(Node("Conv").ints("dilations", {4, 1}), {x, w}, "does not fit");
}

} // namespace
} // namespace qn::rt::testing
