//===- CpuTransformerTest.cpp - Transformer-op CPU kernels vs references --===//
//
// Expected values are computed here with naive loops over multi-indices
// (explicit broadcasting), independently of the kernels.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Kernel.h"
#include "qn/runtime/TensorProto.h"

#include "KernelTestUtil.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "onnx/onnx_pb.h"
#include "gtest/gtest.h"

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {



std::vector<Tensor> mustRunN(const Node &node, std::vector<Tensor> ins, size_t nOut,
                             int opset = 17) {
  auto r = runN(node, std::move(ins), nOut, opset);
  if (!r) {
    ADD_FAILURE() << llvm::toString(r.takeError());
    return std::vector<Tensor>(nOut);
  }
  return *r;
}

Tensor mustRun(const Node &node, std::vector<Tensor> ins, int opset = 17) {
  return mustRunN(node, std::move(ins), 1, opset)[0];
}

/// Runs a node that must fail; checks that the error names the node.
std::string runError(const Node &node, std::vector<Tensor> ins, size_t nOut = 1,
                     int opset = 17) {
  auto r = runN(node, std::move(ins), nOut, opset);
  if (r) {
    ADD_FAILURE() << node.proto().op_type() << " unexpectedly succeeded";
    return "";
  }
  std::string msg = llvm::toString(r.takeError());
  EXPECT_NE(msg.find(node.proto().op_type() + " 'n_"), std::string::npos)
      << "error does not name the node: " << msg;
  return msg;
}

Tensor B(std::vector<int64_t> s, std::vector<uint8_t> v) { return make<uint8_t>(DType::Bool, s, v); }
Tensor I64s(int64_t v) { return I64({}, {v}); }

Tensor randF(std::vector<int64_t> shape, unsigned seed, float lo = -2, float hi = 2) {
  Tensor t = Tensor::zeros(DType::Float, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = d(rng);
  return t;
}
Tensor toHalf(const Tensor &f) {
  Tensor h = Tensor::zeros(DType::Float16, f.shape());
  for (int64_t i = 0; i < f.numel(); ++i)
    h.data<uint16_t>()[i] = floatToHalf(f.data<float>()[i]);
  return h;
}

double at(const Tensor &t, int64_t i) {
  switch (t.dtype()) {
  case DType::Float:
    return t.data<float>()[i];
  case DType::Double:
    return t.data<double>()[i];
  case DType::Float16:
    return halfToFloat(t.data<uint16_t>()[i]);
  case DType::Int64:
    return static_cast<double>(t.data<int64_t>()[i]);
  case DType::Int32:
    return t.data<int32_t>()[i];
  case DType::Bool:
  case DType::UInt8:
    return t.data<uint8_t>()[i];
  default:
    ADD_FAILURE() << "at(): unhandled dtype";
    return 0;
  }
}

int64_t numelOf(const std::vector<int64_t> &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

/// Flat index into a tensor of shape `in` that broadcasts to `out`, for
/// output flat index `flat`.
int64_t bIndex(const std::vector<int64_t> &in, const std::vector<int64_t> &out, int64_t flat) {
  int64_t idx = 0, stride = 1;
  int64_t r = static_cast<int64_t>(out.size()), ri = static_cast<int64_t>(in.size());
  for (int64_t k = r - 1; k >= 0; --k) {
    int64_t c = flat % out[k];
    flat /= out[k];
    int64_t ki = k - (r - ri);
    if (ki < 0)
      continue;
    if (in[ki] != 1)
      idx += c * stride;
    stride *= in[ki];
  }
  return idx;
}

void expectShape(const Tensor &t, std::vector<int64_t> shape) {
  EXPECT_EQ(t.shape(), shape) << t.describe();
}

void expectValues(const Tensor &t, const std::vector<double> &want, double tol = 0) {
  ASSERT_EQ(t.numel(), static_cast<int64_t>(want.size())) << t.describe();
  for (int64_t i = 0; i < t.numel(); ++i)
    EXPECT_NEAR(at(t, i), want[i], tol) << "element " << i << " of " << t.describe();
}

//===----------------------------------------------------------------------===//
// LayerNormalization
//===----------------------------------------------------------------------===//

/// Two-pass reference: normalises over dims [axis, rank).
void refLayerNorm(const Tensor &x, int64_t axis, const std::vector<float> *scale,
                  const std::vector<float> *bias, float eps, std::vector<double> &y,
                  std::vector<double> &mean, std::vector<double> &inv) {
  int64_t cols = 1;
  for (int64_t k = axis; k < x.rank(); ++k)
    cols *= x.dim(k);
  int64_t rows = x.numel() / cols;
  y.assign(x.numel(), 0);
  mean.assign(rows, 0);
  inv.assign(rows, 0);
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0;
    for (int64_t c = 0; c < cols; ++c)
      m += at(x, r * cols + c);
    m /= cols;
    double v = 0;
    for (int64_t c = 0; c < cols; ++c)
      v += (at(x, r * cols + c) - m) * (at(x, r * cols + c) - m);
    v /= cols;
    double is = 1 / std::sqrt(v + eps);
    for (int64_t c = 0; c < cols; ++c) {
      double t = (at(x, r * cols + c) - m) * is;
      y[r * cols + c] = t * (scale ? (*scale)[c % scale->size()] : 1.0) +
                        (bias ? (*bias)[c % bias->size()] : 0.0);
    }
    mean[r] = m;
    inv[r] = is;
  }
}

std::vector<float> vecOf(const Tensor &t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(CpuTransformer, LayerNormLastAxisWithOutputs) {
  Tensor x = randF({2, 3, 8}, 1), s = randF({8}, 2), b = randF({8}, 3);
  auto outs = mustRunN(Node("LayerNormalization"), {x, s, b}, 3);
  std::vector<float> sv = vecOf(s), bv = vecOf(b);
  std::vector<double> y, m, inv;
  refLayerNorm(x, 2, &sv, &bv, 1e-5f, y, m, inv);
  expectShape(outs[0], {2, 3, 8});
  expectValues(outs[0], y, 1e-5);
  expectShape(outs[1], {2, 3, 1});
  expectValues(outs[1], m, 1e-5);
  expectShape(outs[2], {2, 3, 1});
  expectValues(outs[2], inv, 1e-4);
}

TEST(CpuTransformer, LayerNormAxisBroadcastScaleNoBiasEpsilon) {
  // axis=1 normalises over [3,4]; Scale [4] broadcasts to [3,4].
  Tensor x = randF({2, 3, 4}, 4), s = randF({4}, 5);
  Tensor y = mustRun(Node("LayerNormalization").i("axis", 1).f("epsilon", 0.5f), {x, s});
  std::vector<float> sv = vecOf(s);
  std::vector<double> want, m, inv;
  refLayerNorm(x, 1, &sv, nullptr, 0.5f, want, m, inv);
  expectValues(y, want, 1e-5);
  // Negative axis, no Scale and no B.
  Tensor y2 = mustRun(Node("LayerNormalization").i("axis", -2), {x});
  refLayerNorm(x, 1, nullptr, nullptr, 1e-5f, want, m, inv);
  expectValues(y2, want, 1e-5);
}

TEST(CpuTransformer, LayerNormFloat16) {
  Tensor xf = randF({3, 16}, 6), sf = randF({16}, 7), bf = randF({16}, 8);
  Tensor x = toHalf(xf), s = toHalf(sf), b = toHalf(bf);
  Tensor y = mustRun(Node("LayerNormalization"), {x, s, b});
  EXPECT_EQ(y.dtype(), DType::Float16);
  std::vector<float> sv(16), bv(16);
  for (int i = 0; i < 16; ++i) {
    sv[i] = static_cast<float>(at(s, i));
    bv[i] = static_cast<float>(at(b, i));
  }
  std::vector<double> want, m, inv;
  refLayerNorm(x, 1, &sv, &bv, 1e-5f, want, m, inv);
  expectValues(y, want, 1e-2);
}

TEST(CpuTransformer, LayerNormErrors) {
  Tensor x = randF({2, 4}, 9);
  runError(Node("LayerNormalization"), {x, randF({3}, 1)});                 // bad Scale
  runError(Node("LayerNormalization"), {x, randF({4}, 1), randF({2, 4}, 2)}); // bad B
  runError(Node("LayerNormalization").i("axis", 2), {x});
  runError(Node("LayerNormalization"), {I64({2}, {1, 2})});
  runError(Node("LayerNormalization"), {F({}, {1})});
}

//===----------------------------------------------------------------------===//
// Reduce*
//===----------------------------------------------------------------------===//

enum class Red { Mean, Sum, Max };

/// Reference reduction of `x` over `axes` (empty = all).
std::vector<double> refReduce(const Tensor &x, std::vector<int64_t> axes, Red kind) {
  int64_t r = x.rank();
  std::vector<bool> red(r, axes.empty());
  for (int64_t a : axes)
    red[a < 0 ? a + r : a] = true;
  std::vector<int64_t> keptShape;
  for (int64_t k = 0; k < r; ++k)
    keptShape.push_back(red[k] ? 1 : x.dim(k));
  int64_t n = numelOf(keptShape);
  std::vector<double> acc(n, kind == Red::Max ? -INFINITY : 0.0);
  std::vector<int64_t> cnt(n, 0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t rem = i, o = 0, stride = 1;
    for (int64_t k = r - 1; k >= 0; --k) {
      int64_t c = rem % x.dim(k);
      rem /= x.dim(k);
      if (!red[k])
        o += c * stride;
      stride *= keptShape[k];
    }
    double v = at(x, i);
    acc[o] = kind == Red::Max ? std::max(acc[o], v) : acc[o] + v;
    ++cnt[o];
  }
  if (kind == Red::Mean)
    for (int64_t o = 0; o < n; ++o)
      acc[o] /= cnt[o];
  return acc;
}

TEST(CpuTransformer, ReduceMeanAttributeAxes) {
  Tensor x = randF({2, 3, 4}, 10);
  Tensor y = mustRun(Node("ReduceMean").ints("axes", {1}), {x});
  expectShape(y, {2, 1, 4});
  expectValues(y, refReduce(x, {1}, Red::Mean), 1e-6);
  Tensor y2 = mustRun(Node("ReduceMean").ints("axes", {0, -1}).i("keepdims", 0), {x});
  expectShape(y2, {3});
  expectValues(y2, refReduce(x, {0, 2}, Red::Mean), 1e-6);
  Tensor y3 = mustRun(Node("ReduceMean"), {x}); // all axes
  expectShape(y3, {1, 1, 1});
  expectValues(y3, refReduce(x, {}, Red::Mean), 1e-6);
  // Opset 18: axes as an input.
  Tensor y4 = mustRun(Node("ReduceMean").i("keepdims", 0), {x, I64v({-1})}, 18);
  expectShape(y4, {2, 3});
  expectValues(y4, refReduce(x, {2}, Red::Mean), 1e-6);
}

TEST(CpuTransformer, ReduceSumInputAxes) {
  Tensor x = randF({3, 2, 5}, 11);
  Tensor y = mustRun(Node("ReduceSum"), {x, I64v({0, 2})}, 13);
  expectShape(y, {1, 2, 1});
  expectValues(y, refReduce(x, {0, 2}, Red::Sum), 1e-5);
  Tensor all = mustRun(Node("ReduceSum").i("keepdims", 0), {x}, 13);
  expectShape(all, {});
  expectValues(all, refReduce(x, {}, Red::Sum), 1e-5);
  Tensor noop = mustRun(Node("ReduceSum").i("noop_with_empty_axes", 1), {x, I64({0}, {})}, 13);
  expectShape(noop, {3, 2, 5});
  std::vector<double> same;
  for (int64_t i = 0; i < x.numel(); ++i)
    same.push_back(at(x, i));
  expectValues(noop, same);
  Tensor xi = I64({2, 3}, {1, 2, 3, -4, 5, 60});
  Tensor yi = mustRun(Node("ReduceSum").i("keepdims", 0), {xi, I64v({1})}, 13);
  EXPECT_EQ(yi.dtype(), DType::Int64);
  expectValues(yi, {6, 61});
  // Opset 11: axes attribute.
  Tensor y11 = mustRun(Node("ReduceSum").ints("axes", {1}), {x}, 11);
  expectValues(y11, refReduce(x, {1}, Red::Sum), 1e-5);
}

TEST(CpuTransformer, ReduceMax) {
  Tensor x = randF({4, 3, 2}, 12);
  Tensor y = mustRun(Node("ReduceMax").ints("axes", {0, 2}), {x});
  expectShape(y, {1, 3, 1});
  expectValues(y, refReduce(x, {0, 2}, Red::Max));
  Tensor y18 = mustRun(Node("ReduceMax").i("keepdims", 0), {x, I64v({1})}, 18);
  expectShape(y18, {4, 2});
  expectValues(y18, refReduce(x, {1}, Red::Max));
  Tensor xi = I32({2, 2}, {-5, -7, 3, 2});
  expectValues(mustRun(Node("ReduceMax").ints("axes", {1}), {xi}), {-5, 3});
  // Over an empty set: -inf, or the lowest integer (opset 18's rule).
  Tensor ef = mustRun(Node("ReduceMax"), {Tensor::zeros(DType::Float, {2, 0}), I64v({1})}, 18);
  expectShape(ef, {2, 1});
  EXPECT_EQ(ef.data<float>()[0], -std::numeric_limits<float>::infinity());
  Tensor ei = mustRun(Node("ReduceMax"), {Tensor::zeros(DType::Int32, {2, 0}), I64v({1})}, 18);
  EXPECT_EQ(ei.data<int32_t>()[1], std::numeric_limits<int32_t>::min());
}

TEST(CpuTransformer, ReduceErrors) {
  Tensor x = randF({2, 3}, 13);
  runError(Node("ReduceMean").ints("axes", {2}), {x});
  runError(Node("ReduceMean").ints("axes", {1, -1}), {x});
  runError(Node("ReduceSum"), {x, F({1}, {1})}, 1, 13);
  runError(Node("ReduceMean"), {Tensor::zeros(DType::Int32, {2, 0}), I64v({1})}, 1, 18);
  runError(Node("ReduceMean"), {B({2}, {1, 0})});
}

//===----------------------------------------------------------------------===//
// Where, Expand
//===----------------------------------------------------------------------===//

TEST(CpuTransformer, WhereBroadcasts) {
  Tensor c = B({2, 1}, {1, 0});
  Tensor x = F({1, 3}, {1, 2, 3});
  Tensor y = F({}, {-1});
  Tensor out = mustRun(Node("Where"), {c, x, y});
  expectShape(out, {2, 3});
  expectValues(out, {1, 2, 3, -1, -1, -1});
  // int64, all three broadcasting to [2,2,3].
  Tensor c2 = B({2, 1, 3}, {1, 0, 1, 0, 1, 0});
  Tensor x2 = I64({2, 1}, {10, 20});
  Tensor y2 = I64({3}, {-1, -2, -3});
  Tensor out2 = mustRun(Node("Where"), {c2, x2, y2});
  expectShape(out2, {2, 2, 3});
  std::vector<int64_t> os = {2, 2, 3};
  std::vector<double> want;
  for (int64_t i = 0; i < 12; ++i)
    want.push_back(at(c2, bIndex(c2.shape(), os, i)) ? at(x2, bIndex(x2.shape(), os, i))
                                                     : at(y2, bIndex(y2.shape(), os, i)));
  expectValues(out2, want);
  // float16 passes through bit-exactly.
  Tensor h = mustRun(Node("Where"), {B({2}, {0, 1}), toHalf(F({2}, {1.5f, 2.5f})),
                                     toHalf(F({2}, {-1, -2}))});
  EXPECT_EQ(h.dtype(), DType::Float16);
  expectValues(h, {-1, 2.5});
}

TEST(CpuTransformer, WhereErrors) {
  runError(Node("Where"), {F({2}, {1, 0}), F({2}, {1, 2}), F({2}, {3, 4})});
  runError(Node("Where"), {B({2}, {1, 0}), F({3}, {1, 2, 3}), F({2}, {3, 4})});
  runError(Node("Where"), {B({2}, {1, 0}), F({2}, {1, 2}), I64({2}, {3, 4})});
  runError(Node("Where"), {B({2}, {1, 0}), F({2}, {1, 2})});
}

TEST(CpuTransformer, Expand) {
  Tensor x = F({3, 1}, {1, 2, 3});
  Tensor y = mustRun(Node("Expand"), {x, I64v({2, 1, 4})});
  expectShape(y, {2, 3, 4});
  std::vector<double> want;
  for (int64_t i = 0; i < 24; ++i)
    want.push_back(at(x, bIndex(x.shape(), {2, 3, 4}, i)));
  expectValues(y, want);
  // A shape of lower rank / with 1s keeps the input's dims.
  Tensor y2 = mustRun(Node("Expand"), {x, I64v({1})});
  expectShape(y2, {3, 1});
  Tensor y3 = mustRun(Node("Expand"), {I64({}, {7}), I64v({2, 2})});
  expectShape(y3, {2, 2});
  expectValues(y3, {7, 7, 7, 7});
  runError(Node("Expand"), {x, I64v({2, 4})});
  runError(Node("Expand"), {x, I64v({-1, 1})});
  runError(Node("Expand"), {x, F({1}, {2})});
}

//===----------------------------------------------------------------------===//
// Range, ConstantOfShape
//===----------------------------------------------------------------------===//

TEST(CpuTransformer, Range) {
  Tensor f = mustRun(Node("Range"), {F({}, {1}), F({}, {2}), F({}, {0.25f})});
  EXPECT_EQ(f.dtype(), DType::Float);
  expectValues(f, {1, 1.25, 1.5, 1.75});
  Tensor f2 = mustRun(Node("Range"), {F({}, {0}), F({}, {1}), F({}, {0.3f})});
  expectShape(f2, {4});
  for (int i = 0; i < 4; ++i)
    EXPECT_FLOAT_EQ(f2.data<float>()[i], 0.0f + static_cast<float>(i) * 0.3f);
  Tensor i64 = mustRun(Node("Range"), {I64s(10), I64s(3), I64s(-3)});
  EXPECT_EQ(i64.dtype(), DType::Int64);
  expectValues(i64, {10, 7, 4});
  Tensor i32 = mustRun(Node("Range"), {I32({}, {0}), I32({}, {5}), I32({}, {2})});
  EXPECT_EQ(i32.dtype(), DType::Int32);
  expectValues(i32, {0, 2, 4});
  Tensor empty = mustRun(Node("Range"), {I64s(5), I64s(1), I64s(1)});
  expectShape(empty, {0});
  runError(Node("Range"), {I64s(0), I64s(5), I64s(0)});
  runError(Node("Range"), {I64s(0), F({}, {5}), I64s(1)});
  runError(Node("Range"), {I64v({0, 1}), I64s(5), I64s(1)});
}

TEST(CpuTransformer, ConstantOfShape) {
  Tensor y = mustRun(Node("ConstantOfShape"), {I64v({2, 3})});
  EXPECT_EQ(y.dtype(), DType::Float);
  expectShape(y, {2, 3});
  expectValues(y, std::vector<double>(6, 0.0));
  Tensor v = I64({1}, {-7});
  Tensor y2 = mustRun(Node("ConstantOfShape").tensor("value", tensorToProto(v, "value")),
                      {I64v({4})});
  EXPECT_EQ(y2.dtype(), DType::Int64);
  expectValues(y2, {-7, -7, -7, -7});
  Tensor scalar = mustRun(Node("ConstantOfShape"), {I64({0}, {})});
  expectShape(scalar, {});
  Tensor two = F({2}, {1, 2});
  runError(Node("ConstantOfShape").tensor("value", tensorToProto(two, "value")), {I64v({2})});
  runError(Node("ConstantOfShape"), {I64v({2, -1})});
  runError(Node("ConstantOfShape"), {F({1}, {2})});
}

//===----------------------------------------------------------------------===//
// Split, Trilu
//===----------------------------------------------------------------------===//

/// Reference: the slice [from, from+len) of axis `axis` of x.
std::vector<double> refSlice(const Tensor &x, int64_t axis, int64_t from, int64_t len) {
  int64_t outer = 1, inner = 1, d = x.dim(axis);
  for (int64_t k = 0; k < axis; ++k)
    outer *= x.dim(k);
  for (int64_t k = axis + 1; k < x.rank(); ++k)
    inner *= x.dim(k);
  std::vector<double> v;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = from; j < from + len; ++j)
      for (int64_t i = 0; i < inner; ++i)
        v.push_back(at(x, (o * d + j) * inner + i));
  return v;
}

TEST(CpuTransformer, SplitEqualAndSizes) {
  Tensor x = randF({2, 6, 3}, 14);
  auto outs = mustRunN(Node("Split").i("axis", 1), {x}, 3, 13);
  for (int k = 0; k < 3; ++k) {
    expectShape(outs[k], {2, 2, 3});
    expectValues(outs[k], refSlice(x, 1, 2 * k, 2));
  }
  auto outs2 = mustRunN(Node("Split").i("axis", -2), {x, I64v({1, 0, 5})}, 3, 13);
  expectShape(outs2[1], {2, 0, 3});
  expectValues(outs2[0], refSlice(x, 1, 0, 1));
  expectValues(outs2[2], refSlice(x, 1, 1, 5));
  // Default axis 0; opset 11 attribute.
  auto outs3 = mustRunN(Node("Split").ints("split", {1, 1}), {x}, 2, 11);
  expectValues(outs3[1], refSlice(x, 0, 1, 1));
  // Opset 18 num_outputs with an uneven last chunk: 5 over 3 -> 2, 2, 1.
  Tensor x5 = randF({5}, 15);
  auto outs4 = mustRunN(Node("Split").i("num_outputs", 3), {x5}, 3, 18);
  expectShape(outs4[0], {2});
  expectShape(outs4[2], {1});
  expectValues(outs4[2], refSlice(x5, 0, 4, 1));
}

TEST(CpuTransformer, SplitErrors) {
  Tensor x = randF({2, 5}, 16);
  runError(Node("Split").i("axis", 1), {x}, 2, 13);               // 5 not divisible by 2
  runError(Node("Split").i("axis", 1), {x, I64v({2, 2})}, 2, 13); // sums to 4
  runError(Node("Split").i("axis", 1), {x, I64v({5})}, 2, 13);    // count mismatch
  runError(Node("Split").i("axis", 2), {x}, 2, 13);
  runError(Node("Split").i("axis", 1), {x, I64v({6, -1})}, 2, 13);
}

std::vector<double> refTrilu(const Tensor &x, bool upper, int64_t k) {
  int64_t rows = x.dim(-2), cols = x.dim(-1);
  std::vector<double> v(x.numel());
  for (int64_t e = 0; e < x.numel(); ++e) {
    int64_t j = e % cols, i = (e / cols) % rows;
    bool keep = upper ? j - i >= k : j - i <= k;
    v[e] = keep ? at(x, e) : 0.0;
  }
  return v;
}

TEST(CpuTransformer, Trilu) {
  Tensor x = randF({2, 3, 4}, 17);
  expectValues(mustRun(Node("Trilu"), {x}), refTrilu(x, true, 0));
  expectValues(mustRun(Node("Trilu"), {x, I64s(1)}), refTrilu(x, true, 1));
  expectValues(mustRun(Node("Trilu").i("upper", 0), {x}), refTrilu(x, false, 0));
  expectValues(mustRun(Node("Trilu").i("upper", 0), {x, I64s(-1)}), refTrilu(x, false, -1));
  expectValues(mustRun(Node("Trilu").i("upper", 0), {x, I64s(-10)}), refTrilu(x, false, -10));
  expectValues(mustRun(Node("Trilu"), {x, I64s(10)}), refTrilu(x, true, 10));
  Tensor b = B({3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 1}); // causal mask
  expectValues(mustRun(Node("Trilu").i("upper", 0), {b}), {1, 0, 0, 1, 1, 0, 1, 1, 1});
  runError(Node("Trilu"), {F({3}, {1, 2, 3})});
  runError(Node("Trilu"), {x, F({}, {1})});
}

//===----------------------------------------------------------------------===//
// Sin, Cos, Not, And, Or, GreaterOrEqual, LessOrEqual, Max, Min
//===----------------------------------------------------------------------===//

TEST(CpuTransformer, SinCos) {
  Tensor x = randF({3, 5}, 18, -4, 4);
  std::vector<double> s, c;
  for (int64_t i = 0; i < x.numel(); ++i) {
    s.push_back(std::sin(at(x, i)));
    c.push_back(std::cos(at(x, i)));
  }
  expectValues(mustRun(Node("Sin"), {x}), s, 1e-6);
  expectValues(mustRun(Node("Cos"), {x}), c, 1e-6);
  Tensor h = mustRun(Node("Sin"), {toHalf(x)});
  EXPECT_EQ(h.dtype(), DType::Float16);
  expectValues(h, s, 5e-3);
  runError(Node("Sin"), {I64v({1})});
  runError(Node("Cos"), {I64v({1})});
}

TEST(CpuTransformer, Logic) {
  expectValues(mustRun(Node("Not"), {B({3}, {1, 0, 1})}), {0, 1, 0});
  Tensor a = B({2, 1}, {1, 0}), b = B({3}, {1, 0, 1});
  Tensor y = mustRun(Node("And"), {a, b});
  expectShape(y, {2, 3});
  EXPECT_EQ(y.dtype(), DType::Bool);
  expectValues(y, {1, 0, 1, 0, 0, 0});
  expectValues(mustRun(Node("Or"), {a, b}), {1, 1, 1, 1, 0, 1});
  expectValues(mustRun(Node("Or"), {B({2}, {0, 0}), B({}, {1})}), {1, 1});
  runError(Node("Not"), {F({1}, {1})});
  runError(Node("And"), {a, F({3}, {1, 0, 1})});
  runError(Node("Or"), {B({2}, {1, 0}), B({3}, {1, 0, 1})});
}

TEST(CpuTransformer, GreaterOrEqualLessOrEqual) {
  Tensor a = F({2, 3}, {1, 2, 3, 4, 5, 6}), b = F({3}, {2, 2, 7});
  Tensor ge = mustRun(Node("GreaterOrEqual"), {a, b});
  EXPECT_EQ(ge.dtype(), DType::Bool);
  expectShape(ge, {2, 3});
  std::vector<double> wge, wle;
  for (int64_t i = 0; i < 6; ++i) {
    double x = at(a, i), y = at(b, bIndex({3}, {2, 3}, i));
    wge.push_back(x >= y);
    wle.push_back(x <= y);
  }
  expectValues(ge, wge);
  expectValues(mustRun(Node("LessOrEqual"), {a, b}), wle);
  expectValues(mustRun(Node("LessOrEqual"), {I64s(3), I64v({2, 3, 4})}), {0, 1, 1});
  expectValues(mustRun(Node("GreaterOrEqual"), {I32({2}, {-1, 5}), I32({1}, {5})}), {0, 1});
  runError(Node("GreaterOrEqual"), {a, I64v({1, 2, 3})});
  runError(Node("LessOrEqual"), {a, F({4}, {1, 2, 3, 4})});
  runError(Node("LessOrEqual"), {B({1}, {1}), B({1}, {0})});
}

TEST(CpuTransformer, MaxMin) {
  Tensor a = randF({2, 3}, 19), b = randF({3}, 20), c = randF({2, 1}, 21);
  std::vector<int64_t> os = {2, 3};
  std::vector<double> wmax, wmin;
  for (int64_t i = 0; i < 6; ++i) {
    double x = at(a, i), y = at(b, bIndex(b.shape(), os, i)), z = at(c, bIndex(c.shape(), os, i));
    wmax.push_back(std::max({x, y, z}));
    wmin.push_back(std::min({x, y, z}));
  }
  Tensor mx = mustRun(Node("Max"), {a, b, c});
  expectShape(mx, {2, 3});
  expectValues(mx, wmax);
  expectValues(mustRun(Node("Min"), {b, c, a}), wmin);
  expectValues(mustRun(Node("Max"), {I32({3}, {1, -5, 9}), I32({}, {0})}), {1, 0, 9});
  expectValues(mustRun(Node("Min"), {I64v({4, -2})}), {4, -2});
  Tensor nan = mustRun(Node("Max"), {F({2}, {NAN, 1}), F({2}, {0, 2})});
  EXPECT_TRUE(std::isnan(nan.data<float>()[0]));
  EXPECT_EQ(nan.data<float>()[1], 2.0f);
  runError(Node("Max"), {a, I64v({1, 2, 3})});
  runError(Node("Min"), {a, F({4}, {1, 2, 3, 4})});
  runError(Node("Max"), {});
}

} // namespace
