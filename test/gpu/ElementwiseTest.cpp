//===- ElementwiseTest.cpp - CUDA elementwise kernels vs the CPU ----------===//
//
// Add Sub Mul Div Pow Equal Less Greater GreaterOrEqual LessOrEqual And Or Not
// Relu Neg Abs Tanh Sigmoid Erf Exp Log Sqrt Reciprocal Sin Cos Gelu Cast
// Where Max Min, in every dtype each supports. Broadcast shapes exercise every
// index mode of the N-ary kernel: contiguous (same shape), rank 1 (scalar
// operand), rank 2 (row / column vector), general, rank 0, empty tensors,
// sizes that are not a multiple of the block, and a layout that keeps more
// than 8 dims after coalescing (one launch per leading index). Error cases
// must fail on both devices with the same message, naming the node.
//
// Tolerances: arithmetic, comparisons, selection and casts are exact (both
// devices compute in float for float16/bfloat16 and round once); the
// transcendental functions allow fp32 1e-4, fp16 1e-3, bf16 1e-2 relative.
//
//===----------------------------------------------------------------------===//
#include "GpuTestUtil.h"
#include "../../runtime/lib/Activations.h"
#include "qn/ops/OpTable.h"

#include <algorithm>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace qn::rt::testing {
namespace {

using Shape = std::vector<int64_t>;

const DType kFloatTypes[] = {DType::Float, DType::Float16, DType::BFloat16, DType::Double};
const DType kArithTypes[] = {DType::Float, DType::Float16, DType::BFloat16,
                             DType::Double, DType::Int32,   DType::Int64};
const DType kNumericTypes[] = {DType::Float, DType::Float16, DType::BFloat16, DType::Double,
                               DType::Int32, DType::Int64,   DType::Int8,     DType::UInt8};
const DType kAllTypes[] = {DType::Float, DType::Float16, DType::BFloat16,
                           DType::Double, DType::Int64,   DType::Int32,
                           DType::Int8,  DType::UInt8,   DType::Bool};

/// Pairs of broadcast shapes covering each index mode.
const std::pair<Shape, Shape> kBinaryShapes[] = {
    {{3, 5}, {3, 5}},             // same shape: contiguous
    {{}, {}},                     // rank 0
    {{4, 7}, {}},                 // tensor op scalar: rank 1, stride 0
    {{}, {4, 7}},                 // scalar op tensor
    {{1}, {2, 3}},                // one-element operand of rank 1
    {{2, 3, 257}, {257}},         // row vector: rank 2
    {{257}, {2, 3, 257}},         //
    {{5, 1}, {5, 6}},             // column vector: rank 2
    {{2, 1, 4}, {3, 1}},          // both broadcast: general
    {{2, 3, 4, 5}, {3, 1, 5}},    // general
    {{6, 1, 1, 7}, {1, 1, 5, 1}}, // size-1 dims dropped
    {{0, 3}, {3}},                // empty
    {{1031}, {1031}},             // not a multiple of the block size
    {{2, 1, 2, 1, 2, 1, 2, 1, 2, 1}, {1, 2, 1, 2, 1, 2, 1, 2, 1, 2}}, // 10 dims after coalescing
};

/// Exact for results that both devices round once from the same float value.
Tol exactTol() { return {0, 0}; }
/// Transcendental functions (libm vs CUDA's math library).
Tol mathTol(DType dt) {
  switch (dt) {
  case DType::Float: return {1e-4, 1e-6};
  case DType::Double: return {1e-10, 1e-12};
  case DType::Float16: return {1e-3, 1e-4};
  case DType::BFloat16: return {1e-2, 1e-3};
  default: return {0, 0};
  }
}

void match(const Node &node, std::vector<Tensor> ins, Tol tol, const std::string &what = "") {
  SCOPED_TRACE(node.proto().op_type() + " " + what);
  expectGpuMatchesCpu(node, std::move(ins), 1, tol.rtol, tol.atol);
}

/// A tensor of `dt` from float values (converted as the CPU's Cast does not
/// matter here: every value is representable or rounded once).
Tensor fromFloats(DType dt, Shape shape, const std::vector<double> &v) {
  Tensor t = Tensor::zeros(dt, shape);
  EXPECT_EQ(static_cast<int64_t>(v.size()), t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) {
    double x = v[static_cast<size_t>(i)];
    switch (dt) {
    case DType::Float: t.data<float>()[i] = static_cast<float>(x); break;
    case DType::Double: t.data<double>()[i] = x; break;
    case DType::Float16: t.data<uint16_t>()[i] = floatToHalf(static_cast<float>(x)); break;
    case DType::BFloat16: t.data<uint16_t>()[i] = floatToBf16(static_cast<float>(x)); break;
    case DType::Int64: t.data<int64_t>()[i] = static_cast<int64_t>(x); break;
    case DType::Int32: t.data<int32_t>()[i] = static_cast<int32_t>(x); break;
    case DType::Int8: t.data<int8_t>()[i] = static_cast<int8_t>(x); break;
    case DType::UInt8: t.data<uint8_t>()[i] = static_cast<uint8_t>(x); break;
    case DType::Bool: t.data<uint8_t>()[i] = x != 0; break;
    default: break;
    }
  }
  return t;
}

/// Small integers (so that comparisons tie often) in `dt`: [-3, 3], [0, 3]
/// for uint8, 0/1 for bool.
Tensor smallInts(DType dt, Shape shape, unsigned seed) {
  Tensor r = randomTensor(DType::Int32, shape, seed, -3, 3.999);
  std::vector<double> v;
  for (int64_t i = 0; i < r.numel(); ++i) {
    int32_t x = r.data<int32_t>()[i];
    v.push_back(dt == DType::UInt8 ? (x < 0 ? -x : x) : dt == DType::Bool ? (x > 0) : x);
  }
  return fromFloats(dt, shape, v);
}

/// Non-zero integers in [-9, 9] of an integer dtype, or values of magnitude
/// [0.5, 2) with either sign of a float dtype (divisors).
Tensor divisors(DType dt, Shape shape, unsigned seed) {
  Tensor m = randomTensor(DType::Double, shape, seed, 0.5, 2);
  Tensor s = randomTensor(DType::Bool, shape, seed + 1);
  Tensor k = randomTensor(DType::Int32, shape, seed + 2, 1, 9.999);
  std::vector<double> v;
  bool isInt = dt == DType::Int32 || dt == DType::Int64;
  for (int64_t i = 0; i < m.numel(); ++i) {
    double x = isInt ? k.data<int32_t>()[i] : m.data<double>()[i];
    v.push_back(s.data<uint8_t>()[i] ? -x : x);
  }
  return fromFloats(dt, shape, v);
}

Tensor rnd(DType dt, Shape shape, unsigned seed, double lo = -2, double hi = 2) {
  if (dt == DType::Int32 || dt == DType::Int64 || dt == DType::Int8)
    return randomTensor(dt, shape, seed, -100, 100);
  if (dt == DType::UInt8)
    return randomTensor(dt, shape, seed, 0, 255);
  return randomTensor(dt, shape, seed, lo, hi);
}

//===----------------------------------------------------------------------===//
// Add Sub Mul Div
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, ArithmeticBroadcast) {
  for (const char *op : {"Add", "Sub", "Mul", "Div"})
    for (DType dt : kArithTypes)
      for (const auto &[sa, sb] : kBinaryShapes) {
        unsigned seed = static_cast<unsigned>(sa.size() * 31 + sb.size());
        Tensor a = rnd(dt, sa, seed);
        Tensor b = std::string(op) == "Div" ? divisors(dt, sb, seed + 7) : rnd(dt, sb, seed + 7);
        match(Node(op), {a, b}, exactTol(),
              std::string(dtypeName(dt)) + " " + str(sa) + " " + str(sb));
      }
}

TEST(CudaElementwise, IntegerArithmeticWrapsAndTruncates) {
  const int64_t mn = std::numeric_limits<int64_t>::min(), mx = std::numeric_limits<int64_t>::max();
  Tensor a = I64({6}, {mx, mn, mn, 7, -7, mx});
  Tensor b = I64({6}, {1, -1, -1, 2, 2, -1});
  for (const char *op : {"Add", "Sub", "Mul", "Div"})
    match(Node(op), {a, b}, exactTol(), "int64 extremes");
  const int32_t mn32 = std::numeric_limits<int32_t>::min(),
                mx32 = std::numeric_limits<int32_t>::max();
  Tensor c = I32({6}, {mx32, mn32, mn32, 7, -7, -8});
  Tensor d = I32({6}, {1, -1, -1, -2, 2, 3});
  for (const char *op : {"Add", "Sub", "Mul", "Div"})
    match(Node(op), {c, d}, exactTol(), "int32 extremes");
}

TEST(CudaElementwise, FloatSpecialValues) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  for (DType dt : kFloatTypes) {
    Tensor a = fromFloats(dt, {8}, {inf, -inf, nan, 0.0, -0.0, 1.0, inf, 3.0});
    Tensor b = fromFloats(dt, {8}, {inf, 1.0, 2.0, 0.0, 0.0, 0.0, -inf, nan});
    for (const char *op : {"Add", "Sub", "Mul", "Div"})
      match(Node(op), {a, b}, exactTol(), dtypeName(dt));
  }
}

// The CPU kernel rejects an integer divisor of zero before computing; the
// CUDA kernel finds it while computing and reports it through the fault word
// (CudaFault.h). Float division by zero is no error on either device.
TEST(CudaElementwise, IntegerDivisionByZero) {
  Node n("Div");
  for (DType dt : {DType::Int64, DType::Int32}) {
    SCOPED_TRACE(dtypeName(dt));
    Tensor a = Tensor::zeros(dt, {3}), b = Tensor::zeros(dt, {3});
    const int64_t av[] = {5, -5, 0}, bv[] = {1, 0, 2};
    for (int k = 0; k < 3; ++k) {
      if (dt == DType::Int64) {
        a.data<int64_t>()[k] = av[k];
        b.data<int64_t>()[k] = bv[k];
      } else {
        a.data<int32_t>()[k] = static_cast<int32_t>(av[k]);
        b.data<int32_t>()[k] = static_cast<int32_t>(bv[k]);
      }
    }
    auto cpu = runN(n, {a, b});
    ASSERT_FALSE(static_cast<bool>(cpu));
    EXPECT_NE(llvm::toString(cpu.takeError()).find("division by zero"), std::string::npos);
    auto gpu = runGpuN(n, {a, b});
    ASSERT_FALSE(static_cast<bool>(gpu));
    std::string m = llvm::toString(gpu.takeError());
    EXPECT_NE(m.find("division by zero"), std::string::npos) << m;
    EXPECT_NE(m.find("Div"), std::string::npos) << m;
  }
  // Cleared with its run: a valid division next succeeds.
  match(n, {I64({3}, {5, -5, 0}), I64({3}, {2, 2, 3})}, exactTol(), "after the fault");
}

TEST(CudaElementwise, ArithmeticErrors) {
  bothFail(Node("Add"), {F({2}, {1, 2}), I64({2}, {1, 2})}, "input dtypes differ");
  bothFail(Node("Mul"), {F({2, 3}, {1, 2, 3, 4, 5, 6}), F({2}, {1, 2})}, "do not broadcast");
  bothFail(Node("Sub"), {make<uint8_t>(DType::Bool, {2}, {1, 0}),
                         make<uint8_t>(DType::Bool, {2}, {1, 1})},
           "bool");
  bothFail(Node("Div"), {make<int8_t>(DType::Int8, {1}, {1}), make<int8_t>(DType::Int8, {1}, {1})},
           "int8");
  bothFail(Node("Add"), {F({1}, {1})}, "");
}

//===----------------------------------------------------------------------===//
// Pow
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, PowExponentTypes) {
  const DType expTypes[] = {DType::Float, DType::Double, DType::Int32,
                            DType::Int64, DType::Float16, DType::BFloat16};
  for (DType bt : kFloatTypes)
    for (DType et : expTypes)
      for (const auto &[sa, sb] : kBinaryShapes) {
        Tensor a = randomTensor(bt, sa, 3, 0.1, 3);
        Tensor b = (et == DType::Int32 || et == DType::Int64) ? randomTensor(et, sb, 4, -3, 3)
                                                              : randomTensor(et, sb, 4, -2, 3);
        match(Node("Pow"), {a, b}, mathTol(bt),
              std::string(dtypeName(bt)) + "^" + dtypeName(et) + " " + str(sa) + " " + str(sb));
      }
}

TEST(CudaElementwise, PowNegativeBaseAndSquareCube) {
  for (DType bt : kFloatTypes) {
    Tensor a = randomTensor(bt, {4, 33}, 5, -3, 3);
    for (double e : {2.0, 3.0, 0.5, -1.0, 0.0}) {
      match(Node("Pow"), {a, fromFloats(DType::Float, {}, {e})}, mathTol(bt),
            std::string(dtypeName(bt)) + " scalar exponent " + std::to_string(e));
      match(Node("Pow"), {a, fromFloats(DType::Int64, {1}, {e})}, mathTol(bt), "int64 exponent");
    }
    // Integer exponents of negative bases, 0^negative (inf), NaN.
    Tensor c = fromFloats(bt, {6}, {-2, -2, 0, -0.0, std::nan(""), 1});
    Tensor d = fromFloats(DType::Int32, {6}, {3, -2, -1, -1, 2, 0});
    match(Node("Pow"), {c, d}, mathTol(bt), "special");
  }
}

TEST(CudaElementwise, PowErrors) {
  bothFail(Node("Pow"), {I64({2}, {1, 2}), I64({2}, {1, 2})}, "int64");
  bothFail(Node("Pow"), {F({2}, {1, 2}), make<uint8_t>(DType::Bool, {2}, {1, 0})},
           "unsupported exponent dtype");
  bothFail(Node("Pow"), {F({2}, {1, 2}), F({3}, {1, 2, 3})}, "do not broadcast");
}

//===----------------------------------------------------------------------===//
// Comparisons, And, Or, Not
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, Compare) {
  struct Case {
    const char *op;
    std::vector<DType> types;
  };
  const Case cases[] = {
      {"Equal", std::vector<DType>(std::begin(kAllTypes), std::end(kAllTypes))},
      {"Less", std::vector<DType>(std::begin(kNumericTypes), std::end(kNumericTypes))},
      {"Greater", std::vector<DType>(std::begin(kNumericTypes), std::end(kNumericTypes))},
      {"GreaterOrEqual", std::vector<DType>(std::begin(kNumericTypes), std::end(kNumericTypes))},
      {"LessOrEqual", std::vector<DType>(std::begin(kNumericTypes), std::end(kNumericTypes))},
  };
  for (const Case &c : cases)
    for (DType dt : c.types)
      for (const auto &[sa, sb] : kBinaryShapes)
        match(Node(c.op), {smallInts(dt, sa, 11), smallInts(dt, sb, 12)}, exactTol(),
              std::string(dtypeName(dt)) + " " + str(sa) + " " + str(sb));
}

TEST(CudaElementwise, CompareNaN) {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  for (DType dt : kFloatTypes) {
    Tensor a = fromFloats(dt, {6}, {nan, 1, nan, -0.0, inf, -inf});
    Tensor b = fromFloats(dt, {6}, {nan, nan, 1, 0.0, inf, inf});
    for (const char *op : {"Equal", "Less", "Greater", "GreaterOrEqual", "LessOrEqual"})
      match(Node(op), {a, b}, exactTol(), dtypeName(dt));
  }
}

TEST(CudaElementwise, CompareErrors) {
  Tensor t = make<uint8_t>(DType::Bool, {2}, {1, 0});
  Tensor i8 = make<int8_t>(DType::Int8, {2}, {1, 0});
  bothFail(Node("Less"), {t, t}, "bool");
  bothFail(Node("Greater"), {t, t}, "bool");
  bothFail(Node("Add"), {i8, i8}, "int8");
  bothFail(Node("GreaterOrEqual"), {t, t}, "bool");
  bothFail(Node("LessOrEqual"), {F({2}, {1, 2}), I64({2}, {1, 2})}, "differ in dtype");
  bothFail(Node("Equal"), {F({2}, {1, 2}), I64({2}, {1, 2})}, "input dtypes differ");
  bothFail(Node("LessOrEqual"), {F({2}, {1, 2}), F({3}, {1, 2, 3})}, "do not broadcast");
}

TEST(CudaElementwise, Logic) {
  for (const char *op : {"And", "Or"})
    for (const auto &[sa, sb] : kBinaryShapes)
      match(Node(op), {randomTensor(DType::Bool, sa, 21), randomTensor(DType::Bool, sb, 22)},
            exactTol(), str(sa) + " " + str(sb));
  for (Shape s : {Shape{}, Shape{0}, Shape{3, 5}, Shape{1031}})
    match(Node("Not"), {randomTensor(DType::Bool, s, 23)}, exactTol(), str(s));
  bothFail(Node("And"), {F({2}, {1, 0}), make<uint8_t>(DType::Bool, {2}, {1, 0})}, "bool");
  bothFail(Node("Or"), {make<uint8_t>(DType::Bool, {2}, {1, 0}), F({2}, {1, 0})}, "bool");
  bothFail(Node("Not"), {F({2}, {1, 0})}, "bool");
  bothFail(Node("And"),
           {make<uint8_t>(DType::Bool, {2}, {1, 0}), make<uint8_t>(DType::Bool, {3}, {1, 0, 1})},
           "do not broadcast");
}

//===----------------------------------------------------------------------===//
// Unary ops, Gelu
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, Unary) {
  struct Case {
    const char *op;
    double lo, hi;
    bool exact;
  };
  const Case cases[] = {
      {"Relu", -2, 2, true},       {"Neg", -2, 2, true},       {"Abs", -2, 2, true},
      {"Tanh", -3, 3, false},      {"Sigmoid", -8, 8, false},  {"Erf", -5, 5, false},
      {"Exp", -5, 5, false},       {"Log", 0.01, 10, false},   {"Sqrt", 0, 10, true},
      {"Reciprocal", -2, 2, true}, {"Sin", -10, 10, false},    {"Cos", -10, 10, false},
  };
  for (const Case &c : cases)
    for (DType dt : kFloatTypes)
      for (Shape s : {Shape{}, Shape{0}, Shape{3, 5}, Shape{1031}, Shape{2, 1, 257}}) {
        Tensor x = randomTensor(dt, s, 31, c.lo, c.hi);
        match(Node(c.op), {x}, c.exact ? exactTol() : mathTol(dt),
              std::string(dtypeName(dt)) + " " + str(s));
      }
}

TEST(CudaElementwise, UnarySpecialValues) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  for (DType dt : kFloatTypes) {
    Tensor x = fromFloats(dt, {9}, {inf, -inf, nan, 0.0, -0.0, 1e-3, -1e-3, 20, -20});
    for (const char *op : {"Relu", "Neg", "Abs", "Sqrt", "Reciprocal"})
      match(Node(op), {x}, exactTol(), dtypeName(dt));
    for (const char *op : {"Tanh", "Sigmoid", "Erf", "Exp", "Log", "Sin", "Cos"})
      match(Node(op), {x}, mathTol(dt), dtypeName(dt));
  }
}

TEST(CudaElementwise, UnaryIntegers) {
  for (const char *op : {"Relu", "Neg", "Abs"}) {
    match(Node(op), {I64({5}, {0, -3, 4, std::numeric_limits<int64_t>::min(),
                               std::numeric_limits<int64_t>::max()})},
          exactTol(), "int64");
    match(Node(op), {I32({5}, {0, -3, 4, std::numeric_limits<int32_t>::min(),
                               std::numeric_limits<int32_t>::max()})},
          exactTol(), "int32");
    match(Node(op), {make<int8_t>(DType::Int8, {5}, {0, -3, 4, -128, 127})}, exactTol(), "int8");
    match(Node(op), {randomTensor(DType::Int32, {1031}, 41, -1000, 1000)}, exactTol(), "int32");
  }
}

TEST(CudaElementwise, UnaryErrors) {
  bothFail(Node("Tanh"), {I32({2}, {1, 2})}, "int32");
  bothFail(Node("Sin"), {I64({2}, {1, 2})}, "int64");
  bothFail(Node("Relu"), {make<uint8_t>(DType::Bool, {2}, {1, 0})}, "int8");
  bothFail(Node("Abs"), {make<uint8_t>(DType::UInt8, {2}, {1, 0})}, "uint8");
  bothFail(Node("Exp"), {F({1}, {1}), F({1}, {1})}, "");
}

TEST(CudaElementwise, Gelu) {
  for (const char *approx : {"", "none", "tanh"})
    for (DType dt : kFloatTypes)
      for (Shape s : {Shape{}, Shape{0}, Shape{4, 9}, Shape{1031}}) {
        Node n("Gelu");
        if (*approx)
          n.s("approximate", approx);
        match(n, {randomTensor(dt, s, 51, -6, 6)}, mathTol(dt),
              std::string(approx) + " " + dtypeName(dt) + " " + str(s));
      }
  Node bad("Gelu");
  bad.s("approximate", "fast");
  bothFail(bad, {F({1}, {1})}, "approximate");
  bothFail(Node("Gelu"), {I32({1}, {1})}, "int32");
}

//===----------------------------------------------------------------------===//
// Cast
//===----------------------------------------------------------------------===//

/// Values that probe rounding, saturation, NaN and bool rules, in `dt`.
Tensor castSource(DType dt) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  switch (dt) {
  case DType::Float:
  case DType::Double:
  case DType::Float16:
  case DType::BFloat16:
    return fromFloats(dt, {26},
                      {0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 127.9, 128, -129, 255.5, 256, 300,
                       -1, 3e9, -3e9, 1e20, -1e20, inf, -inf, nan, 65504, 70000, 1e-8,
                       1.00048828125, 3.14159265358979});
  case DType::Int64:
    return I64({10}, {0, 1, -1, 127, 128, -129, 255, 256, (int64_t(1) << 40) + 1,
                      std::numeric_limits<int64_t>::min()});
  case DType::Int32:
    return I32({9}, {0, 1, -1, 127, 128, -129, 256, 16777217, std::numeric_limits<int32_t>::min()});
  case DType::Int8: return make<int8_t>(DType::Int8, {5}, {0, 1, -1, 127, -128});
  case DType::UInt8: return make<uint8_t>(DType::UInt8, {5}, {0, 1, 2, 128, 255});
  case DType::Bool: return make<uint8_t>(DType::Bool, {4}, {0, 1, 1, 0});
  default: return Tensor();
  }
}

int32_t onnxType(DType dt) { return static_cast<int32_t>(dt); } // DType numbers are ONNX's

TEST(CudaElementwise, CastAllPairs) {
  for (DType from : kAllTypes)
    for (DType to : kAllTypes) {
      Node n("Cast");
      n.i("to", onnxType(to));
      match(n, {castSource(from)}, exactTol(),
            std::string(dtypeName(from)) + " -> " + dtypeName(to));
      Node e("Cast");
      e.i("to", onnxType(to));
      match(e, {Tensor::zeros(from, {0, 3})}, exactTol(), "empty");
    }
  Node n("Cast");
  n.i("to", onnxType(DType::Float16));
  match(n, {randomTensor(DType::Float, {3, 1031}, 61, -70000, 70000)}, exactTol(), "large");
}

TEST(CudaElementwise, CastErrors) {
  bothFail(Node("Cast"), {F({1}, {1})}, "missing attribute 'to'");
  Node s("Cast");
  s.i("to", 8); // STRING
  bothFail(s, {F({1}, {1})}, "unsupported target type");
}

//===----------------------------------------------------------------------===//
// Where
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, Where) {
  const Shape shapes[][3] = {
      {{3, 4}, {3, 4}, {3, 4}},
      {{4}, {3, 4}, {}},
      {{2, 1, 5}, {1, 3, 1}, {5}},
      {{}, {}, {}},
      {{0, 2}, {2}, {1}},
      {{1031}, {}, {1031}},
      {{2, 1, 2, 1, 2, 1, 2, 1, 2}, {1, 2, 1, 2, 1, 2, 1, 2, 1}, {2, 2, 1, 1, 2, 2, 1, 1, 2}},
  };
  for (DType dt : kAllTypes)
    for (const auto &s : shapes)
      match(Node("Where"),
            {randomTensor(DType::Bool, s[0], 71), rnd(dt, s[1], 72), rnd(dt, s[2], 73)},
            exactTol(), std::string(dtypeName(dt)) + " " + str(s[0]) + str(s[1]) + str(s[2]));
  Tensor c = make<uint8_t>(DType::Bool, {2}, {1, 0});
  bothFail(Node("Where"), {F({2}, {1, 0}), F({2}, {1, 2}), F({2}, {3, 4})}, "bool condition");
  bothFail(Node("Where"), {c, F({2}, {1, 2}), I64({2}, {3, 4})}, "differ in dtype");
  bothFail(Node("Where"), {c, F({3}, {1, 2, 3}), F({2}, {3, 4})}, "do not broadcast");
  bothFail(Node("Where"), {c, F({2}, {1, 2})}, "");
}

//===----------------------------------------------------------------------===//
// Max, Min
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, MaxMin) {
  const std::vector<Shape> sets[] = {
      {{3, 5}},
      {{}},
      {{3, 5}, {3, 5}},
      {{4, 1}, {1, 6}},
      {{2, 3, 257}, {257}},
      {{7}, {}, {2, 1, 7}},
      {{2, 1, 4}, {3, 1}, {4}, {1, 1, 1}, {2, 3, 4}},
      {{0, 3}, {3}},
      {{2, 1, 2, 1, 2, 1, 2, 1, 2, 1}, {1, 2, 1, 2, 1, 2, 1, 2, 1, 2}, {2}},
  };
  for (const char *op : {"Max", "Min"})
    for (DType dt : kNumericTypes)
      for (const auto &set : sets) {
        std::vector<Tensor> ins;
        std::string what = dtypeName(dt);
        for (size_t i = 0; i < set.size(); ++i) {
          ins.push_back(smallInts(dt, set[i], 81 + static_cast<unsigned>(i)));
          what += " " + str(set[i]);
        }
        match(Node(op), ins, exactTol(), what);
      }
}

TEST(CudaElementwise, MaxMinNaN) {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  for (const char *op : {"Max", "Min"})
    for (DType dt : kFloatTypes) {
      Tensor a = fromFloats(dt, {6}, {nan, 1, 2, -inf, -0.0, 0.0});
      Tensor b = fromFloats(dt, {6}, {1, nan, 3, inf, 0.0, -0.0});
      Tensor c = fromFloats(dt, {1}, {2.5});
      match(Node(op), {a, b}, exactTol(), dtypeName(dt));
      match(Node(op), {a, b, c}, exactTol(), dtypeName(dt));
      match(Node(op), {c, a}, exactTol(), dtypeName(dt));
    }
}

TEST(CudaElementwise, MaxMinErrors) {
  Tensor t = make<uint8_t>(DType::Bool, {2}, {1, 0});
  bothFail(Node("Max"), {t, t}, "bool");
  bothFail(Node("Min"), {F({2}, {1, 2}), I64({2}, {1, 2})}, "inputs differ in dtype");
  bothFail(Node("Max"), {F({2}, {1, 2}), F({3}, {1, 2, 3})}, "do not broadcast");
  bothFail(Node("Min"), {}, "at least one input");
  bothFail(Node("Max"), {F({2}, {1, 2}), Tensor()}, "");
}

} // namespace
} // namespace qn::rt::testing

//===----------------------------------------------------------------------===//
// Activations.h ops, IsNaN, Clip, Dropout; the registry against the op table
//===----------------------------------------------------------------------===//

namespace qn::rt::testing {
namespace {

TEST(CudaElementwise, Activations) {
  for (const ActInfo &a : kActs)
    for (DType dt : kFloatTypes)
      for (Shape s : {Shape{}, Shape{0}, Shape{3, 5}, Shape{1031}}) {
        Tensor x = randomTensor(dt, s, 37, -8, 8);
        bool exact = a.act == Act::Floor || a.act == Act::Ceil || a.act == Act::Round ||
                     a.act == Act::Sign || a.act == Act::LeakyRelu;
        match(Node(a.name), {x}, exact ? exactTol() : mathTol(dt),
              std::string(a.name) + " " + dtypeName(dt) + " " + str(s));
      }
  Node leaky("LeakyRelu"), hs("HardSigmoid");
  leaky.f("alpha", 0.25f);
  hs.f("alpha", 0.5f).f("beta", 0.125f);
  Tensor x = randomTensor(DType::Float, {257}, 5, -4, 4);
  match(leaky, {x}, exactTol(), "alpha");
  match(hs, {x}, mathTol(DType::Float), "alpha, beta");
  match(Node("Sign"), {randomTensor(DType::Int32, {1031}, 43, -1000, 1000)}, exactTol(), "int32");
  match(Node("Sign"), {I64({3}, {-7, 0, 9})}, exactTol(), "int64");
  bothFail(Node("Softplus"), {I32({2}, {1, 2})}, "int32");
}

TEST(CudaElementwise, IsNaNClipDropout) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  for (DType dt : kFloatTypes) {
    Tensor x = fromFloats(dt, {7}, {inf, -inf, nan, 0.0, -2.5, 1.5, 20});
    match(Node("IsNaN"), {x}, exactTol(), dtypeName(dt));
    Tensor lo = fromFloats(dt, {}, {-1.0}), hi = fromFloats(dt, {}, {2.0});
    match(Node("Clip"), {x, lo, hi}, exactTol(), dtypeName(dt));
    match(Node("Clip"), {x, Tensor(), hi}, exactTol(), dtypeName(dt));
    match(Node("Clip"), {x}, exactTol(), dtypeName(dt));
  }
  match(Node("Clip"), {I64({4}, {-9, 0, 3, 9}), I64({}, {-2}), I64({}, {4})}, exactTol(), "int64");
  match(Node("Clip"), {I32({4}, {-9, 0, 3, 9}), Tensor(), I32({}, {4})}, exactTol(), "int32");
  bothFail(Node("Clip"), {F({2}, {1, 2}), I64({}, {0})}, "min must be");
  match(Node("Dropout"), {randomTensor(DType::Float, {3, 5}, 9)}, exactTol(), "inference");
}

TEST(CudaRegistry, OpSetIsTheOpTables) {
  // The CUDA registry holds exactly the ops the op table marks OV_Cuda.
  KernelRegistry reg;
  registerCudaKernels(reg);
  std::vector<std::string> want;
  for (const qn::ops::OpInfo &op : qn::ops::kOps)
    if (op.runsOn(qn::ops::OV_Cuda))
      want.push_back(op.domain == qn::ops::OD_Onnx ? std::string(op.name)
                                                  : std::string("ai.quintnet::") + op.name);
  std::sort(want.begin(), want.end());
  std::vector<std::string> have = reg.names();
  std::sort(have.begin(), have.end());
  EXPECT_EQ(have, want);
}

} // namespace
} // namespace qn::rt::testing
