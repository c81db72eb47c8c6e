//===- TensorTest.cpp - Tensor, half/bfloat16 conversions, TensorProto ----===//
#include "qn/runtime/Tensor.h"
#include "qn/runtime/TensorProto.h"

#include <cfenv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "onnx/onnx_pb.h"
#include "gtest/gtest.h"

using namespace qn::rt;

namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float fromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Reference decoding of an IEEE binary16 from its fields.
double refHalfValue(uint16_t h) {
  int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v;
  if (exp == 0)
    v = std::ldexp(static_cast<double>(man), -24);
  else if (exp == 31)
    v = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    v = std::ldexp(1.0 + man / 1024.0, exp - 15);
  return sign ? -v : v;
}

/// Reference float -> half value (as a double): round |f| to the binary16
/// grid with ties to even, overflow to infinity.
double refRoundToHalf(float f) {
  double x = f;
  if (std::isnan(x) || std::isinf(x))
    return x;
  double a = std::fabs(x);
  if (a == 0)
    return x;
  int e = std::ilogb(a);
  if (e < -14)
    e = -14; // subnormal quantum 2^-24
  double q = std::ldexp(1.0, e - 10);
  double r = std::nearbyint(a / q) * q; // FE_TONEAREST: ties to even
  if (r > 65504.0)
    r = std::numeric_limits<double>::infinity();
  return std::copysign(r, x);
}

/// Reference float -> bfloat16 bits: pick the nearer of the two neighbours
/// on the bf16 grid (ties to the even one).
uint16_t refBf16(float f) {
  uint32_t x = bits(f);
  uint32_t lo = x & 0xffff0000u;
  uint32_t hi = lo + 0x10000u;
  double vx = std::fabs(static_cast<double>(f));
  double vlo = std::fabs(static_cast<double>(fromBits(lo)));
  // The neighbour above the largest finite bf16 is infinity; it counts as 2^128.
  double vhi = (hi & 0x7fffffffu) == 0x7f800000u ? std::ldexp(1.0, 128)
                                                 : std::fabs(static_cast<double>(fromBits(hi)));
  double dlo = vx - vlo, dhi = vhi - vx;
  if (dlo < dhi)
    return static_cast<uint16_t>(lo >> 16);
  if (dhi < dlo)
    return static_cast<uint16_t>(hi >> 16);
  return static_cast<uint16_t>(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

bool isHalfNaN(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

} // namespace

TEST(Half, DecodesEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = halfToFloat(static_cast<uint16_t>(h));
    double ref = refHalfValue(static_cast<uint16_t>(h));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), ref) << "h=0x" << std::hex << h;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
  }
}

TEST(Half, RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    uint16_t hh = static_cast<uint16_t>(h);
    uint16_t back = floatToHalf(halfToFloat(hh));
    if (isHalfNaN(hh)) {
      ASSERT_TRUE(isHalfNaN(back)) << h;
      ASSERT_EQ(back & 0x8000, hh & 0x8000);
    } else {
      ASSERT_EQ(back, hh) << "h=0x" << std::hex << h;
    }
  }
}

TEST(Half, EdgeCases) {
  EXPECT_EQ(floatToHalf(0.0f), 0x0000);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);   // max finite
  EXPECT_EQ(floatToHalf(65519.996f), 0x7bff); // just below the rounding boundary
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);   // tie to even -> inf
  EXPECT_EQ(floatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(floatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(floatToHalf(INFINITY), 0x7c00);
  EXPECT_EQ(floatToHalf(-INFINITY), 0xfc00);
  EXPECT_TRUE(isHalfNaN(floatToHalf(NAN)));
  EXPECT_TRUE(isHalfNaN(floatToHalf(fromBits(0x7f800001u)))); // signalling NaN, low payload
  EXPECT_TRUE(isHalfNaN(floatToHalf(fromBits(0xffc00000u))));
  EXPECT_EQ(floatToHalf(fromBits(0xffc00000u)) & 0x8000, 0x8000);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -14)), 0x0400);    // smallest normal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -24)), 0x0001);    // smallest subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1023.0f, -24)), 0x03ff); // largest subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000);    // tie -> even (0)
  EXPECT_EQ(floatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(floatToHalf(std::ldexp(1.5f, -24)), 0x0002);    // tie -> even (2)
  EXPECT_EQ(floatToHalf(std::ldexp(2.5f, -24)), 0x0002);    // tie -> even (2)
  EXPECT_EQ(floatToHalf(std::ldexp(1023.5f, -24)), 0x0400); // rounds up into the normals
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(floatToHalf(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);     // tie -> even
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02); // tie -> even
  EXPECT_EQ(floatToHalf(fromBits(0x00000001u)), 0x0000);            // float subnormal
  EXPECT_EQ(halfToFloat(0x7c00), INFINITY);
  EXPECT_EQ(halfToFloat(0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7e00)));
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::signbit(halfToFloat(0x8000)));
}

TEST(Half, RoundsRandomFloatsToNearestEven) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t u = any(rng);
    // Bias half the samples into the half-precision range.
    if (i & 1)
      u = (u & 0x807fffffu) | ((100u + (u >> 23) % 50u) << 23);
    float f = fromBits(u);
    if (std::isnan(f))
      continue;
    double ref = refRoundToHalf(f);
    float got = halfToFloat(floatToHalf(f));
    ASSERT_EQ(static_cast<double>(got), ref) << "f=" << f << " bits=0x" << std::hex << u;
    ASSERT_EQ(std::signbit(got), std::signbit(f));
  }
  // Every midpoint between consecutive positive halves.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    double lo = refHalfValue(static_cast<uint16_t>(h)),
           hi = refHalfValue(static_cast<uint16_t>(h + 1));
    float mid = static_cast<float>((lo + hi) / 2); // exact in float
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    uint16_t want = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    ASSERT_EQ(floatToHalf(mid), want) << h;
    ASSERT_EQ(floatToHalf(std::nextafter(mid, 1e9f)), h + 1) << h;
    ASSERT_EQ(floatToHalf(std::nextafter(mid, 0.0f)), h) << h;
  }
}

TEST(BFloat16, DecodeAndRound) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16ToFloat(static_cast<uint16_t>(h));
    ASSERT_EQ(bits(f), h << 16);
    bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
    if (!nan) {
      ASSERT_EQ(floatToBf16(f), h);
    }
  }
  std::mt19937 rng(99);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 2000000; ++i) {
    float f = fromBits(any(rng));
    if (std::isnan(f)) {
      uint16_t b = floatToBf16(f);
      ASSERT_TRUE((b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0);
      continue;
    }
    ASSERT_EQ(floatToBf16(f), refBf16(f)) << "bits=0x" << std::hex << bits(f);
  }
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(fromBits(0x3f808000u)), 0x3f80); // tie -> even
  EXPECT_EQ(floatToBf16(fromBits(0x3f818000u)), 0x3f82); // tie -> even
  EXPECT_EQ(floatToBf16(fromBits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(floatToBf16(fromBits(0x7f7fffffu)), 0x7f80); // FLT_MAX -> inf
  EXPECT_EQ(floatToBf16(INFINITY), 0x7f80);
  EXPECT_EQ(floatToBf16(-INFINITY), 0xff80);
  EXPECT_EQ(floatToBf16(fromBits(0x00000001u)), 0x0000); // subnormal tie-ish -> 0
  EXPECT_EQ(floatToBf16(fromBits(0x00018000u)), 0x0002); // subnormal tie -> even
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  uint16_t n = floatToBf16(fromBits(0x7f800001u)); // NaN with only low payload bits
  EXPECT_TRUE((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
}

TEST(Tensor, Basics) {
  Tensor t = Tensor::zeros(DType::Float, {2, 3});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(t.rank(), 2);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(t.data<float>()[i], 0.0f);
  EXPECT_EQ(t.describe(), "float32[2,3]");

  Tensor r = t.reshaped({3, 2});
  EXPECT_EQ(r.raw(), t.raw());
  EXPECT_EQ(r.describe(), "float32[3,2]");
  Tensor c = t.clone();
  EXPECT_NE(c.raw(), t.raw());
  t.data<float>()[0] = 5;
  EXPECT_EQ(r.data<float>()[0], 5);
  EXPECT_EQ(c.data<float>()[0], 0);

  Tensor s = Tensor::zeros(DType::Int64, {});
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.describe(), "int64[]");
  Tensor e = Tensor::zeros(DType::Float16, {3, 0});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.nbytes(), 0u);
  EXPECT_NE(e.raw(), nullptr);
  Tensor u;
  EXPECT_FALSE(u.defined());
  EXPECT_FALSE(u.clone().defined());

  for (DType d : {DType::Float, DType::UInt8, DType::Int8, DType::Int32, DType::Int64, DType::Bool,
                  DType::Float16, DType::Double, DType::BFloat16}) {
    Tensor a = Tensor::empty(d, {7, 5});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw()) % 64, 0u) << dtypeName(d);
    EXPECT_TRUE(isSupported(d));
  }
  EXPECT_FALSE(isSupported(DType::Undefined));
  EXPECT_EQ(dtypeSize(DType::Double), 8u);
  EXPECT_EQ(dtypeSize(DType::BFloat16), 2u);
  EXPECT_STREQ(dtypeName(DType::Double), "float64");
  EXPECT_STREQ(dtypeName(DType::Bool), "bool");
}

TEST(Tensor, ReusedBuffersAreZeroedAndDistinct) {
  const int64_t n = 1 << 20; // 4 MiB: goes through the buffer cache
  const void *first;
  {
    Tensor a = Tensor::empty(DType::Float, {n});
    first = a.raw();
    std::memset(a.raw(), 0xff, a.nbytes());
  }
  Tensor b = Tensor::zeros(DType::Float, {n});
  Tensor c = Tensor::zeros(DType::Float, {n});
  EXPECT_NE(b.raw(), c.raw());
  EXPECT_TRUE(b.raw() == first || c.raw() != first);
  for (const Tensor *t : {&b, &c}) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->raw()) % 64, 0u);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(t->data<float>()[i], 0.0f) << i;
  }
  // A slightly smaller request may reuse a larger block; a much smaller one
  // gets its own.
  Tensor d = Tensor::empty(DType::Float, {n - 1000});
  std::memset(d.raw(), 1, d.nbytes());
  releaseTensorBufferCache();
  Tensor e = Tensor::zeros(DType::Float, {n});
  EXPECT_EQ(e.data<float>()[n - 1], 0.0f);
}

TEST(Tensor, ViewKeepsOwnerAlive) {
  auto buf = std::make_shared<std::vector<float>>(4, 1.5f);
  std::weak_ptr<std::vector<float>> weak = buf;
  Tensor v = Tensor::view(DType::Float, {4}, buf->data(), buf);
  buf.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(v.data<float>()[3], 1.5f);
  v = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(Tensor, CheckedNumel) {
  int64_t n;
  EXPECT_TRUE(checkedNumel({2, 3}, 4, n));
  EXPECT_EQ(n, 6);
  EXPECT_TRUE(checkedNumel({}, 4, n));
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(checkedNumel({0, INT64_MAX, 5}, 4, n));
  EXPECT_EQ(n, 0);
  EXPECT_FALSE(checkedNumel({-1, 3}, 4, n));
  EXPECT_FALSE(checkedNumel({0, -1}, 4, n));
  EXPECT_FALSE(checkedNumel({INT64_MAX / 2, 3}, 1, n));
  EXPECT_FALSE(checkedNumel({INT64_MAX / 4}, 8, n)); // bytes overflow
}

//===----------------------------------------------------------------------===//
// TensorProto
//===----------------------------------------------------------------------===//

TEST(TensorProto, RawData) {
  onnx::TensorProto p;
  p.set_name("w");
  p.set_data_type(onnx::TensorProto::FLOAT);
  p.add_dims(2);
  p.add_dims(2);
  float v[4] = {1, -2, 3.5f, 4};
  p.set_raw_data(std::string(reinterpret_cast<char *>(v), 16));
  auto t = tensorFromProto(p);
  ASSERT_TRUE(bool(t)) << llvm::toString(t.takeError());
  EXPECT_EQ(t->describe(), "float32[2,2]");
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(t->data<float>()[i], v[i]);

  p.set_raw_data(std::string(reinterpret_cast<char *>(v), 12));
  auto bad = tensorFromProto(p);
  ASSERT_FALSE(bool(bad));
  std::string msg = llvm::toString(bad.takeError());
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("12 bytes"), std::string::npos) << msg;
}

TEST(TensorProto, TypedFields) {
  {
    onnx::TensorProto p;
    p.set_data_type(onnx::TensorProto::FLOAT);
    p.add_dims(3);
    for (float f : {1.f, 2.f, 3.f})
      p.add_float_data(f);
    auto t = tensorFromProto(p);
    ASSERT_TRUE(bool(t));
    EXPECT_EQ(t->data<float>()[2], 3.f);
  }
  {
    onnx::TensorProto p;
    p.set_data_type(onnx::TensorProto::INT64);
    p.add_dims(2);
    p.add_int64_data(-5);
    p.add_int64_data(int64_t(1) << 40);
    auto t = tensorFromProto(p);
    ASSERT_TRUE(bool(t));
    EXPECT_EQ(t->data<int64_t>()[1], int64_t(1) << 40);
  }
  {
    onnx::TensorProto p;
    p.set_data_type(onnx::TensorProto::DOUBLE);
    p.add_double_data(0.25); // 0-d
    auto t = tensorFromProto(p);
    ASSERT_TRUE(bool(t));
    EXPECT_EQ(t->rank(), 0);
    EXPECT_EQ(t->data<double>()[0], 0.25);
  }
  struct Case {
    int type;
    DType dt;
  };
  for (Case c :
       {Case{onnx::TensorProto::INT32, DType::Int32}, Case{onnx::TensorProto::INT8, DType::Int8},
        Case{onnx::TensorProto::UINT8, DType::UInt8}, Case{onnx::TensorProto::BOOL, DType::Bool},
        Case{onnx::TensorProto::FLOAT16, DType::Float16},
        Case{onnx::TensorProto::BFLOAT16, DType::BFloat16}}) {
    onnx::TensorProto p;
    p.set_data_type(c.type);
    p.add_dims(2);
    int32_t a, b;
    if (c.dt == DType::Float16) {
      a = floatToHalf(1.5f);
      b = floatToHalf(-3.0f);
    } else if (c.dt == DType::BFloat16) {
      a = floatToBf16(1.5f);
      b = floatToBf16(-3.0f);
    } else if (c.dt == DType::Bool) {
      a = 1;
      b = 0;
    } else if (c.dt == DType::UInt8) {
      a = 200;
      b = 7;
    } else {
      a = -100;
      b = 77;
    }
    p.add_int32_data(a);
    p.add_int32_data(b);
    auto t = tensorFromProto(p);
    ASSERT_TRUE(bool(t)) << llvm::toString(t.takeError());
    EXPECT_EQ(t->dtype(), c.dt);
    switch (c.dt) {
    case DType::Int32:
      EXPECT_EQ(t->data<int32_t>()[0], -100);
      break;
    case DType::Int8:
      EXPECT_EQ(t->data<int8_t>()[0], -100);
      EXPECT_EQ(t->data<int8_t>()[1], 77);
      break;
    case DType::UInt8:
      EXPECT_EQ(t->data<uint8_t>()[0], 200);
      break;
    case DType::Bool:
      EXPECT_EQ(t->data<uint8_t>()[0], 1);
      EXPECT_EQ(t->data<uint8_t>()[1], 0);
      break;
    case DType::Float16:
      EXPECT_EQ(halfToFloat(t->data<uint16_t>()[1]), -3.0f);
      break;
    case DType::BFloat16:
      EXPECT_EQ(bf16ToFloat(t->data<uint16_t>()[0]), 1.5f);
      break;
    default:
      break;
    }
    // Wrong element count.
    p.add_int32_data(1);
    EXPECT_FALSE(bool(tensorFromProto(p)));
    llvm::consumeError(tensorFromProto(p).takeError());
  }
}

TEST(TensorProto, Errors) {
  auto expectErr = [](const onnx::TensorProto &p, const char *needle) {
    auto t = tensorFromProto(p);
    ASSERT_FALSE(bool(t));
    std::string msg = llvm::toString(t.takeError());
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find("'bad'"), std::string::npos) << msg;
  };
  onnx::TensorProto ext;
  ext.set_name("bad");
  ext.set_data_type(onnx::TensorProto::FLOAT);
  ext.add_dims(4);
  ext.set_data_location(onnx::TensorProto::EXTERNAL);
  auto *kv = ext.add_external_data();
  kv->set_key("location");
  kv->set_value("w.bin");
  expectErr(ext, "EXTERNAL");

  onnx::TensorProto str;
  str.set_name("bad");
  str.set_data_type(onnx::TensorProto::STRING);
  str.add_dims(1);
  str.add_string_data("x");
  expectErr(str, "unsupported data type");

  onnx::TensorProto neg;
  neg.set_name("bad");
  neg.set_data_type(onnx::TensorProto::FLOAT);
  neg.add_dims(-2);
  expectErr(neg, "invalid dims");

  onnx::TensorProto none;
  none.set_name("bad");
  none.set_data_type(onnx::TensorProto::FLOAT);
  none.add_dims(3);
  expectErr(none, "float_data holds 0");

  onnx::TensorProto huge;
  huge.set_name("bad");
  huge.set_data_type(onnx::TensorProto::FLOAT);
  huge.add_dims(int64_t(1) << 40);
  huge.add_dims(int64_t(1) << 40);
  expectErr(huge, "invalid dims");
}

TEST(TensorProto, RoundTrip) {
  Tensor t = Tensor::zeros(DType::Int32, {2, 3});
  for (int i = 0; i < 6; ++i)
    t.data<int32_t>()[i] = i * 7 - 10;
  onnx::TensorProto p = tensorToProto(t, "x");
  EXPECT_EQ(p.name(), "x");
  EXPECT_EQ(p.data_type(), onnx::TensorProto::INT32);
  ASSERT_EQ(p.dims_size(), 2);
  auto back = tensorFromProto(p);
  ASSERT_TRUE(bool(back));
  EXPECT_EQ(back->describe(), "int32[2,3]");
  EXPECT_EQ(std::memcmp(back->raw(), t.raw(), t.nbytes()), 0);

  Tensor empty = Tensor::zeros(DType::Float, {0, 4});
  auto e = tensorFromProto(tensorToProto(empty, "e"));
  ASSERT_TRUE(bool(e));
  EXPECT_EQ(e->describe(), "float32[0,4]");
}
