//===- ActivationTest.cpp - Parametric unary ops, IsNaN, Clip, Dropout (CPU) ===//
//
// Each op of Activations.h against a reference written here from the ONNX
// operator definitions in double precision, in float32, float64 and
// float16, with its attributes defaulted and set.
//
//===----------------------------------------------------------------------===//
#include "../../../runtime/lib/Activations.h"
#include "../../../runtime/lib/FastMath.h"
#include "KernelTestUtil.h"

#include <cmath>
#include <functional>
#include <limits>

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {

struct RefCase {
  const char *op;
  std::function<double(double)> ref; // with the default attributes
};

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const std::vector<double> kXs = {-30.0, -6.5, -3.0, -1.0, -0.5, -0.25, 0.0, 0.25,
                                 0.5,   1.0,  2.5,  3.0,  6.5,  20.0,  40.0};

double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

const RefCase kRefs[] = {
    {"Softplus", [](double x) { return std::log(1.0 + std::exp(x)); }},
    {"LeakyRelu", [](double x) { return x < 0 ? double(0.01f) * x : x; }},
    {"Elu", [](double x) { return x < 0 ? std::exp(x) - 1.0 : x; }},
    {"Selu",
     [](double x) {
       const double a = double(1.67326319217681884765625f), g = double(1.05070102214813232421875f);
       return x <= 0 ? g * (a * std::exp(x) - a) : g * x;
     }},
    {"HardSigmoid", [](double x) { return clamp01(double(0.2f) * x + 0.5); }},
    {"HardSwish", [](double x) { return x * clamp01(x / 6.0 + 0.5); }},
    {"Floor", [](double x) { return std::floor(x); }},
    {"Ceil", [](double x) { return std::ceil(x); }},
    {"Round", [](double x) { return x - std::floor(x) == 0.5 ? 2 * std::round(x / 2) : std::round(x); }},
    {"Sign", [](double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }},
};

template <class T> Tensor tensorOf(DType dt, const std::vector<double> &xs) {
  std::vector<T> v(xs.begin(), xs.end());
  return make<T>(dt, {static_cast<int64_t>(v.size())}, v);
}

} // namespace

TEST(Activations, EveryOpOfTheTableHasAReference) {
  for (const ActInfo &a : kActs) {
    bool found = false;
    for (const RefCase &r : kRefs)
      found |= std::string(r.op) == a.name;
    EXPECT_TRUE(found) << a.name << " has no reference in this test";
  }
}

TEST(Activations, MatchReferenceFloat32AndFloat64) {
  for (const RefCase &r : kRefs) {
    SCOPED_TRACE(r.op);
    auto f32 = runN(Node(r.op), {tensorOf<float>(DType::Float, kXs)});
    ASSERT_TRUE(bool(f32)) << llvm::toString(f32.takeError());
    auto f64 = runN(Node(r.op), {tensorOf<double>(DType::Double, kXs)});
    ASSERT_TRUE(bool(f64)) << llvm::toString(f64.takeError());
    ASSERT_EQ((*f32)[0].dtype(), DType::Float);
    ASSERT_EQ((*f64)[0].dtype(), DType::Double);
    for (size_t i = 0; i < kXs.size(); ++i) {
      double want = r.ref(kXs[i]);
      // float32: the op's float math (a few ulp); float64: 1e-12 relative.
      EXPECT_NEAR((*f32)[0].data<float>()[i], want, 2e-6 * std::max(1.0, std::fabs(want)))
          << "x = " << kXs[i];
      EXPECT_NEAR((*f64)[0].data<double>()[i], want, 1e-12 * std::max(1.0, std::fabs(want)))
          << "x = " << kXs[i];
    }
  }
}

TEST(Activations, AttributesAreRead) {
  Node leaky("LeakyRelu"), elu("Elu"), hs("HardSigmoid"), selu("Selu");
  leaky.f("alpha", 0.5f);
  elu.f("alpha", 2.0f);
  hs.f("alpha", 0.5f).f("beta", 0.25f);
  selu.f("alpha", 2.0f).f("gamma", 3.0f);
  Tensor x = F({3}, {-2.0f, 0.5f, 4.0f});
  auto expect = [&](const Node &n, std::vector<float> want) {
    auto y = runN(n, {x});
    ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR((*y)[0].data<float>()[i], want[i], 1e-6) << n.proto().op_type() << " " << i;
  };
  expect(leaky, {-1.0f, 0.5f, 4.0f});
  expect(elu, {2.0f * std::expm1(-2.0f), 0.5f, 4.0f});
  expect(hs, {0.0f, 0.5f, 1.0f});
  expect(selu, {3.0f * 2.0f * std::expm1(-2.0f), 1.5f, 12.0f});
}

TEST(Activations, HalfTypesAndIntegersAndNaN) {
  // float16 in, float16 out, computed in float32.
  Tensor h = Tensor::zeros(DType::Float16, {2});
  h.data<uint16_t>()[0] = 0xC000; // -2
  h.data<uint16_t>()[1] = 0x3C00; // 1
  auto y = runN(Node("HardSwish"), {h});
  ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
  ASSERT_EQ((*y)[0].dtype(), DType::Float16);
  EXPECT_NEAR(halfToFloat((*y)[0].data<uint16_t>()[0]), -2.0 * clamp01(-2.0 / 6 + 0.5), 1e-3);
  EXPECT_NEAR(halfToFloat((*y)[0].data<uint16_t>()[1]), clamp01(1.0 / 6 + 0.5), 1e-3);
  // Sign takes integers; the others do not.
  auto s = runN(Node("Sign"), {I64v({-7, 0, 9})});
  ASSERT_TRUE(bool(s)) << llvm::toString(s.takeError());
  EXPECT_EQ((*s)[0].data<int64_t>()[0], -1);
  EXPECT_EQ((*s)[0].data<int64_t>()[1], 0);
  EXPECT_EQ((*s)[0].data<int64_t>()[2], 1);
  auto bad = runN(Node("Softplus"), {I64v({1})});
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("Softplus 'n_Softplus'"), std::string::npos);
  // NaN stays NaN; IsNaN finds it.
  Tensor n = F({2}, {float(kNaN), 1.0f});
  for (const char *op : {"Softplus", "Sign", "Round", "HardSigmoid"}) {
    auto v = runN(Node(op), {n});
    ASSERT_TRUE(bool(v)) << op;
    EXPECT_TRUE(std::isnan((*v)[0].data<float>()[0])) << op;
  }
  auto isnan = runN(Node("IsNaN"), {n});
  ASSERT_TRUE(bool(isnan)) << llvm::toString(isnan.takeError());
  ASSERT_EQ((*isnan)[0].dtype(), DType::Bool);
  EXPECT_EQ((*isnan)[0].data<uint8_t>()[0], 1);
  EXPECT_EQ((*isnan)[0].data<uint8_t>()[1], 0);
}

TEST(Clip, BoundsFromInputsAttributesOrNone) {
  Tensor x = F({5}, {-3.0f, -0.5f, 0.25f, 2.0f, float(kNaN)});
  auto both = runN(Node("Clip"), {x, F({}, {-1.0f}), F({}, {1.0f})});
  ASSERT_TRUE(bool(both)) << llvm::toString(both.takeError());
  const float *b = (*both)[0].data<float>();
  EXPECT_EQ(b[0], -1.0f);
  EXPECT_EQ(b[1], -0.5f);
  EXPECT_EQ(b[2], 0.25f);
  EXPECT_EQ(b[3], 1.0f);
  EXPECT_TRUE(std::isnan(b[4]));
  auto hiOnly = runN(Node("Clip"), {x, Tensor(), F({}, {0.0f})});
  ASSERT_TRUE(bool(hiOnly)) << llvm::toString(hiOnly.takeError());
  EXPECT_EQ((*hiOnly)[0].data<float>()[0], -3.0f);
  EXPECT_EQ((*hiOnly)[0].data<float>()[3], 0.0f);
  Node old("Clip");
  old.f("min", 0.0f).f("max", 0.5f);
  auto v6 = runN(old, {x}, 1, 6);
  ASSERT_TRUE(bool(v6)) << llvm::toString(v6.takeError());
  EXPECT_EQ((*v6)[0].data<float>()[0], 0.0f);
  EXPECT_EQ((*v6)[0].data<float>()[3], 0.5f);
  auto ints = runN(Node("Clip"), {I64v({-5, 3, 9}), I64({}, {0}), I64({}, {4})});
  ASSERT_TRUE(bool(ints)) << llvm::toString(ints.takeError());
  EXPECT_EQ((*ints)[0].data<int64_t>()[0], 0);
  EXPECT_EQ((*ints)[0].data<int64_t>()[1], 3);
  EXPECT_EQ((*ints)[0].data<int64_t>()[2], 4);
  auto wrong = runN(Node("Clip"), {x, I64({}, {0})});
  ASSERT_FALSE(bool(wrong));
  EXPECT_NE(llvm::toString(wrong.takeError()).find("min must be a one-element tensor"),
            std::string::npos);
}

TEST(Dropout, InferenceIsIdentityWithTrueMask) {
  Tensor x = F({3}, {1.0f, -2.0f, 3.0f});
  Node d("Dropout");
  d.proto();
  auto y = runN(d, {x});
  ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
  EXPECT_EQ((*y)[0].data<float>()[1], -2.0f);
  // With a mask output: all true.
  onnx::NodeProto twoOut = d.proto();
  twoOut.add_output("mask");
  const KernelFn *fn = registry().lookup("", "Dropout");
  ASSERT_NE(fn, nullptr);
  std::vector<const Tensor *> ins = {&x};
  std::vector<Tensor> outs(2);
  KernelContext ctx{twoOut, ins, outs, nullptr, 17};
  ASSERT_FALSE(bool((*fn)(ctx)));
  ASSERT_EQ(outs[1].dtype(), DType::Bool);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(outs[1].data<uint8_t>()[i], 1);
  // training_mode true with a ratio above 0: refused, naming the node.
  Tensor train = Tensor::zeros(DType::Bool, {});
  train.data<uint8_t>()[0] = 1;
  auto t = runN(d, {x, F({}, {0.1f}), train});
  ASSERT_FALSE(bool(t));
  EXPECT_NE(llvm::toString(t.takeError()).find("Dropout 'n_Dropout': training_mode is true"),
            std::string::npos);
  Tensor zero = F({}, {0.0f});
  EXPECT_TRUE(bool(runN(d, {x, zero, train})));
}

// The CPU's float32 tanh (FastMath.h: fastTanh, a vectorisable polynomial in
// place of a libm call per element) against tanh in double, densely over the
// whole float range that matters, and at its special values.
TEST(FastMath, TanhMatchesLibm) {
  double maxAbs = 0, maxRel = 0;
  for (double v = -12; v <= 12; v += 3e-5) {
    const float x = static_cast<float>(v);
    const double want = std::tanh(static_cast<double>(x));
    const double err = std::fabs(qn::rt::fastTanh(x) - want);
    maxAbs = std::max(maxAbs, err);
    if (want != 0)
      maxRel = std::max(maxRel, err / std::fabs(want));
  }
  EXPECT_LT(maxAbs, 1.5e-7);
  EXPECT_LT(maxRel, 2.5e-7);
  for (float tiny : {1e-30f, -1e-20f, 3e-8f, -1e-4f})
    EXPECT_NEAR(qn::rt::fastTanh(tiny), std::tanh(static_cast<double>(tiny)),
                std::fabs(tiny) * 2e-7);
  EXPECT_TRUE(std::isnan(qn::rt::fastTanh(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(qn::rt::fastTanh(std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_EQ(qn::rt::fastTanh(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_EQ(qn::rt::fastTanh(20.0f), 1.0f);
  EXPECT_TRUE(std::signbit(qn::rt::fastTanh(-0.0f)));
  EXPECT_EQ(qn::rt::fastTanh(0.0f), 0.0f);
}
