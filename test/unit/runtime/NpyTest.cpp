//===- NpyTest.cpp - .npy reading and writing ----------------------------===//
#include "qn/runtime/Npy.h"

#include <cstring>
#include <fstream>
#include <string>

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "gtest/gtest.h"

using namespace qn::rt;

namespace {

/// Builds .npy bytes by hand, the way NumPy lays them out.
std::string makeNpy(const std::string &dict, const std::string &data, int major = 1,
                    bool pad = true) {
  std::string header = dict;
  size_t prefix = major == 1 ? 10 : 12;
  if (pad) {
    size_t total = prefix + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
  }
  header += '\n';
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  size_t n = header.size();
  out.push_back(static_cast<char>(n & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  if (major != 1) {
    out.push_back(static_cast<char>((n >> 16) & 0xff));
    out.push_back(static_cast<char>((n >> 24) & 0xff));
  }
  return out + header + data;
}

template <class T> std::string bytesOf(std::initializer_list<T> v) {
  std::string s(v.size() * sizeof(T), '\0');
  std::memcpy(&s[0], v.begin(), s.size());
  return s;
}

class TempDir {
public:
  TempDir() {
    llvm::SmallString<128> p;
    EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("qn-npy-test", p));
    path_ = std::string(p.str());
  }
  ~TempDir() { llvm::sys::fs::remove_directories(path_); }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Fills a tensor with distinct, dtype-appropriate values.
Tensor sample(DType dt, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(dt, shape);
  int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    switch (dt) {
    case DType::Float:
      t.data<float>()[i] = 0.5f * static_cast<float>(i) - 3.25f;
      break;
    case DType::Float16:
      t.data<uint16_t>()[i] = floatToHalf(0.25f * static_cast<float>(i) - 1.0f);
      break;
    case DType::Double:
      t.data<double>()[i] = 1e-300 * static_cast<double>(i + 1);
      break;
    case DType::Int64:
      t.data<int64_t>()[i] = (int64_t(1) << 40) * (i % 3) - i;
      break;
    case DType::Int32:
      t.data<int32_t>()[i] = -1000000 * static_cast<int32_t>(i) + 17;
      break;
    case DType::Int8:
      t.data<int8_t>()[i] = static_cast<int8_t>(-128 + 37 * i);
      break;
    case DType::UInt8:
      t.data<uint8_t>()[i] = static_cast<uint8_t>(255 - 29 * i);
      break;
    case DType::Bool:
      t.data<uint8_t>()[i] = (i % 3) == 1;
      break;
    default:
      break;
    }
  }
  return t;
}

std::string errorOf(llvm::Expected<Tensor> t) {
  if (t)
    return "";
  return llvm::toString(t.takeError());
}

} // namespace

TEST(Npy, RoundTripsEveryDType) {
  TempDir dir;
  const DType all[] = {DType::Float, DType::Float16, DType::Double, DType::Int64,
                       DType::Int32, DType::Int8,    DType::UInt8,  DType::Bool};
  const std::vector<std::vector<int64_t>> shapes = {{2, 3}, {}, {0}, {3, 0, 2}, {5}, {1, 1, 7}};
  int k = 0;
  for (DType dt : all) {
    for (const auto &shape : shapes) {
      Tensor t = sample(dt, shape);
      std::string path = dir.file("t" + std::to_string(k++) + ".npy");
      ASSERT_FALSE(bool(writeNpy(path, t)));
      auto back = readNpy(path);
      ASSERT_TRUE(bool(back)) << llvm::toString(back.takeError());
      EXPECT_EQ(back->describe(), t.describe());
      ASSERT_EQ(back->nbytes(), t.nbytes());
      if (t.nbytes()) {
        EXPECT_EQ(std::memcmp(back->raw(), t.raw(), t.nbytes()), 0) << t.describe();
      }

      std::string bytes = serializeNpy(t);
      uint16_t hlen = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
      EXPECT_EQ((10 + hlen) % 64, 0u) << "data must start on a 64-byte boundary";
      EXPECT_EQ(bytes[10 + hlen - 1], '\n');
      EXPECT_EQ(bytes.size(), 10 + hlen + t.nbytes());
    }
  }
}

TEST(Npy, HeaderLooksLikeNumPys) {
  std::string b = serializeNpy(sample(DType::Float, {2, 3}));
  EXPECT_EQ(b.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(b.substr(10, 59), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  std::string v = serializeNpy(sample(DType::Int8, {4}));
  EXPECT_NE(v.find("'descr': '|i1'"), std::string::npos);
  EXPECT_NE(v.find("'shape': (4,)"), std::string::npos);
  std::string s = serializeNpy(sample(DType::Bool, {}));
  EXPECT_NE(s.find("'descr': '|b1'"), std::string::npos);
  EXPECT_NE(s.find("'shape': ()"), std::string::npos);
}

TEST(Npy, ReadsHandMadeFiles) {
  // As numpy.save writes it.
  auto t = parseNpy(makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                            bytesOf<float>({1.f, 2.f, 3.f, -4.f})),
                    "a.npy");
  ASSERT_TRUE(bool(t)) << llvm::toString(t.takeError());
  EXPECT_EQ(t->describe(), "float32[2,2]");
  EXPECT_EQ(t->data<float>()[3], -4.f);

  // Other key order, double quotes, no trailing comma, no padding, Python 2 'L'.
  auto u = parseNpy(makeNpy("{\"shape\": (3L,), \"fortran_order\": False, \"descr\": \"<i8\"}",
                            bytesOf<int64_t>({7, -8, 9}), 1, false),
                    "b.npy");
  ASSERT_TRUE(bool(u)) << llvm::toString(u.takeError());
  EXPECT_EQ(u->describe(), "int64[3]");
  EXPECT_EQ(u->data<int64_t>()[1], -8);

  // Version 2.0 header.
  auto v = parseNpy(makeNpy("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }",
                            bytesOf<int32_t>({-5}), 2),
                    "c.npy");
  ASSERT_TRUE(bool(v)) << llvm::toString(v.takeError());
  EXPECT_EQ(v->data<int32_t>()[0], -5);

  // One-byte types with '<' / '|' spellings; bool bytes are normalised.
  for (const char *d : {"<i1", "|i1", "<u1", "|u1", "<b1", "|b1"}) {
    auto w = parseNpy(
        makeNpy(std::string("{'descr': '") + d + "', 'fortran_order': False, 'shape': (2,), }",
                std::string("\x02\xff", 2)),
        "d.npy");
    ASSERT_TRUE(bool(w)) << d << ": " << llvm::toString(w.takeError());
    if (d[1] == 'b') {
      EXPECT_EQ(w->dtype(), DType::Bool);
      EXPECT_EQ(w->data<uint8_t>()[0], 1);
    } else if (d[1] == 'u') {
      EXPECT_EQ(w->data<uint8_t>()[1], 255);
    } else {
      EXPECT_EQ(w->data<int8_t>()[1], -1);
    }
  }
  // float16 and float64.
  auto h = parseNpy(makeNpy("{'descr': '<f2', 'fortran_order': False, 'shape': (), }",
                            bytesOf<uint16_t>({0x3c00})),
                    "e.npy");
  ASSERT_TRUE(bool(h));
  EXPECT_EQ(h->rank(), 0);
  EXPECT_EQ(halfToFloat(h->data<uint16_t>()[0]), 1.0f);
  // Trailing bytes after the data are ignored.
  auto g = parseNpy(makeNpy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                            bytesOf<double>({2.5}) + "xyz"),
                    "f.npy");
  ASSERT_TRUE(bool(g));
  EXPECT_EQ(g->data<double>()[0], 2.5);
}

TEST(Npy, RejectsHostileFiles) {
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string data = bytesOf<float>({1.f, 2.f});
  struct Case {
    std::string bytes;
    std::string needle;
  };
  std::string longHeader = makeNpy(good, data);
  longHeader[8] = '\xff';
  longHeader[9] = '\x7f'; // header length 32767, far past the end
  std::string v2Long = makeNpy(good, data, 2);
  v2Long[11] = '\x7f';
  std::string version9 = makeNpy(good, data);
  version9[6] = 9;
  const std::vector<Case> cases = {
      {"", "bad magic"},
      {"\x93NUMP", "bad magic"},
      {"PK\x03\x04 this is a zip", "bad magic"},
      {std::string("\x93NUMPY\x01\x00", 8), "truncated"},
      {std::string("\x93NUMPY\x02\x00\x10\x00", 10), "truncated"},
      {version9, "version"},
      {longHeader, "past the end"},
      {v2Long, "past the end"},
      {makeNpy("", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ", data), "malformed"},
      {makeNpy("{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,)}", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (a,)}", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False}", data), "missing key 'shape'"},
      {makeNpy("{'fortran_order': False, 'shape': (2,)}", data), "missing key 'descr'"},
      {makeNpy("{'descr': '<f4', 'shape': (2,)}", data), "missing key 'fortran_order'"},
      {makeNpy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", data),
       "duplicate"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", data),
       "unexpected key"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", data), "trailing"},
      {makeNpy("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", data), "malformed"},
      {makeNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", data), "Fortran"},
      {makeNpy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", data), "big-endian"},
      {makeNpy("{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }", data), "big-endian"},
      {makeNpy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", data),
       "unsupported dtype"},
      {makeNpy("{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }", data),
       "unsupported dtype"},
      {makeNpy("{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }", data), "invalid dtype"},
      {makeNpy("{'descr': 'f', 'fortran_order': False, 'shape': (2,), }", data),
       "unsupported dtype"},
      {makeNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data),
       "unsupported dtype"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", data), "negative"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", data), "negative"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
               data),
       "overflows int64"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
               data),
       "overflows"},
      {makeNpy("{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,), }", data),
       "overflows"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data),
       "truncated data"},
      {makeNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data.substr(0, 7)),
       "truncated data"},
      {makeNpy("{'descr': '<i8', 'fortran_order': False, 'shape': (1000000, 1000000), }", data),
       "truncated data"},
  };
  int i = 0;
  for (const Case &c : cases) {
    std::string name = "hostile" + std::to_string(i++) + ".npy";
    std::string msg = errorOf(parseNpy(c.bytes, name));
    ASSERT_FALSE(msg.empty()) << "case " << name << " was accepted";
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.needle), std::string::npos) << name << ": " << msg;
  }
}

TEST(Npy, FileErrorsNameTheFile) {
  TempDir dir;
  std::string missing = dir.file("nope.npy");
  std::string msg = errorOf(readNpy(missing));
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  std::string bad = dir.file("bad.npy");
  writeFile(bad, makeNpy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                         bytesOf<float>({1.f})));
  msg = errorOf(readNpy(bad));
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  EXPECT_NE(msg.find("Fortran"), std::string::npos) << msg;

  llvm::Error e = writeNpy(dir.file("no/such/dir/x.npy"), sample(DType::Float, {1}));
  ASSERT_TRUE(bool(e));
  EXPECT_NE(llvm::toString(std::move(e)).find("x.npy"), std::string::npos);
  llvm::Error u = writeNpy(dir.file("u.npy"), Tensor());
  ASSERT_TRUE(bool(u));
  llvm::consumeError(std::move(u));
}

TEST(Npy, BFloat16IsWidenedToFloat32) {
  Tensor t = Tensor::zeros(DType::BFloat16, {3});
  t.data<uint16_t>()[0] = floatToBf16(1.5f);
  t.data<uint16_t>()[1] = floatToBf16(-2.0f);
  t.data<uint16_t>()[2] = floatToBf16(1e30f);
  auto back = parseNpy(serializeNpy(t), "bf16");
  ASSERT_TRUE(bool(back));
  EXPECT_EQ(back->dtype(), DType::Float);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(back->data<float>()[i], bf16ToFloat(t.data<uint16_t>()[i]));
}
