//===- Npy.cpp - NumPy .npy files -----------------------------------------===//
//
// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//   "\x93NUMPY" major minor, header length (uint16 LE for 1.0, uint32 LE for
//   2.0/3.0), then an ASCII (3.0: UTF-8) Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//   padded with spaces and ended by '\n', then the raw data.
//
// Every length and count read from the file is checked before use: the
// parser must never read past the buffer nor allocate absurd amounts.
//===----------------------------------------------------------------------===//
#include "qn/runtime/Npy.h"
#include "StrCat.h"

#include <cstring>
#include <optional>

#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

namespace qn::rt {
namespace {

llvm::Error npyError(llvm::StringRef what, const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), (what + ": " + msg).str());
}

/// A tiny parser for the Python literal subset used by .npy headers.
class HeaderParser {
public:
  explicit HeaderParser(llvm::StringRef s) : s_(s) {}

  void skipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool atEnd() {
    skipSpace();
    return pos_ >= s_.size();
  }
  bool consume(char c) {
    skipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool peek(char c) {
    skipSpace();
    return pos_ < s_.size() && s_[pos_] == c;
  }
  /// A quoted string ('...' or "..."), no escapes supported (none occur in
  /// valid headers).
  std::optional<std::string> string() {
    skipSpace();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"'))
      return std::nullopt;
    char q = s_[pos_++];
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\' || s_[pos_] == '\n')
        return std::nullopt;
      ++pos_;
    }
    if (pos_ >= s_.size())
      return std::nullopt;
    std::string r = s_.substr(start, pos_ - start).str();
    ++pos_;
    return r;
  }
  /// True or False.
  std::optional<bool> boolean() {
    skipSpace();
    llvm::StringRef rest = s_.drop_front(pos_);
    if (rest.startswith("True")) {
      pos_ += 4;
      return true;
    }
    if (rest.startswith("False")) {
      pos_ += 5;
      return false;
    }
    return std::nullopt;
  }
  /// A non-negative decimal integer (an optional Python 2 'L' suffix is
  /// accepted). Sets `negative` when a '-' sign was seen, `overflow` when the
  /// value does not fit int64.
  std::optional<int64_t> integer(bool &negative, bool &overflow) {
    skipSpace();
    negative = overflow = false;
    if (pos_ < s_.size() && (s_[pos_] == '-' || s_[pos_] == '+')) {
      negative = s_[pos_] == '-';
      ++pos_;
    }
    size_t start = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      int digit = s_[pos_] - '0';
      if (__builtin_mul_overflow(v, int64_t(10), &v) || __builtin_add_overflow(v, digit, &v))
        overflow = true;
      ++pos_;
    }
    if (pos_ == start)
      return std::nullopt;
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l'))
      ++pos_;
    return negative ? -v : v;
  }
  size_t pos() const { return pos_; }

private:
  llvm::StringRef s_;
  size_t pos_ = 0;
};

struct Descr {
  DType dtype;
  size_t size;
};

/// Maps a descr string to a dtype; sets `why` on failure.
std::optional<Descr> parseDescr(llvm::StringRef d, std::string &why) {
  if (d.size() < 2) {
    why = strCat("unsupported dtype '", d, "'");
    return std::nullopt;
  }
  char order = d[0];
  llvm::StringRef kind = d.drop_front();
  if (order != '<' && order != '>' && order != '|' && order != '=') {
    why = strCat("unsupported dtype '", d, "'");
    return std::nullopt;
  }
  struct Entry {
    const char *kind;
    DType dtype;
    size_t size;
  };
  static const Entry table[] = {
      {"f4", DType::Float, 4}, {"f2", DType::Float16, 2}, {"f8", DType::Double, 8},
      {"i8", DType::Int64, 8}, {"i4", DType::Int32, 4},   {"i1", DType::Int8, 1},
      {"u1", DType::UInt8, 1}, {"b1", DType::Bool, 1},
  };
  for (const Entry &e : table) {
    if (kind != e.kind)
      continue;
    if (e.size > 1) {
      if (order == '>') {
        why = strCat("big-endian dtype '", d, "' is not supported");
        return std::nullopt;
      }
      if (order == '|') {
        why = strCat("invalid dtype '", d, "' (multi-byte type without byte order)");
        return std::nullopt;
      }
    }
    return Descr{e.dtype, e.size};
  }
  why = strCat("unsupported dtype '", d, "'");
  return std::nullopt;
}

const char *descrOf(DType t) {
  switch (t) {
  case DType::Float:
    return "<f4";
  case DType::Float16:
    return "<f2";
  case DType::Double:
    return "<f8";
  case DType::Int64:
    return "<i8";
  case DType::Int32:
    return "<i4";
  case DType::Int8:
    return "|i1";
  case DType::UInt8:
    return "|u1";
  case DType::Bool:
    return "|b1";
  default:
    return nullptr;
  }
}

} // namespace

llvm::Expected<Tensor> parseNpy(llvm::StringRef bytes, llvm::StringRef what) {
  static const char kMagic[] = "\x93NUMPY";
  if (bytes.size() < 6 || std::memcmp(bytes.data(), kMagic, 6) != 0)
    return npyError(what, "not a .npy file (bad magic)");
  if (bytes.size() < 10)
    return npyError(what, "truncated .npy header");
  unsigned major = static_cast<uint8_t>(bytes[6]);
  unsigned minor = static_cast<uint8_t>(bytes[7]);
  uint64_t headerLen = 0;
  size_t headerStart = 0;
  if (major == 1) {
    headerLen = static_cast<uint8_t>(bytes[8]) |
                (static_cast<uint64_t>(static_cast<uint8_t>(bytes[9])) << 8);
    headerStart = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12)
      return npyError(what, "truncated .npy header");
    for (int i = 0; i < 4; ++i)
      headerLen |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
    headerStart = 12;
  } else {
    return npyError(what, strCat("unsupported .npy format version ", major, ".", minor));
  }
  if (headerLen > bytes.size() - headerStart)
    return npyError(what, strCat("header length ", headerLen, " runs past the end of the file (",
                                 bytes.size(), " bytes)"));
  llvm::StringRef header = bytes.substr(headerStart, headerLen);
  size_t dataOffset = headerStart + headerLen;

  auto malformed = [&](const llvm::Twine &why) {
    return npyError(what, "malformed .npy header: " + why);
  };

  HeaderParser p(header);
  if (!p.consume('{'))
    return malformed("expected '{'");
  std::optional<std::string> descr;
  std::optional<bool> fortran;
  std::optional<llvm::SmallVector<int64_t, 6>> shape;
  while (!p.consume('}')) {
    std::optional<std::string> key = p.string();
    if (!key)
      return malformed("expected a quoted key or '}'");
    if (!p.consume(':'))
      return malformed("expected ':' after key '" + *key + "'");
    if (*key == "descr") {
      if (descr)
        return malformed("duplicate key 'descr'");
      descr = p.string();
      if (!descr)
        return npyError(what, "unsupported dtype (descr is not a simple type string)");
    } else if (*key == "fortran_order") {
      if (fortran)
        return malformed("duplicate key 'fortran_order'");
      fortran = p.boolean();
      if (!fortran)
        return malformed("fortran_order must be True or False");
    } else if (*key == "shape") {
      if (shape)
        return malformed("duplicate key 'shape'");
      if (!p.consume('('))
        return malformed("shape must be a tuple");
      shape.emplace();
      while (!p.consume(')')) {
        bool negative, overflow;
        std::optional<int64_t> v = p.integer(negative, overflow);
        if (!v)
          return malformed("shape must be a tuple of integers");
        if (negative)
          return npyError(what, "negative dimension in shape");
        if (overflow)
          return npyError(what, "dimension in shape overflows int64");
        shape->push_back(*v);
        if (!p.consume(',')) {
          if (!p.consume(')'))
            return malformed("expected ',' or ')' in shape");
          break;
        }
      }
    } else {
      return malformed("unexpected key '" + *key + "'");
    }
    if (!p.consume(',')) {
      if (!p.consume('}'))
        return malformed("expected ',' or '}'");
      break;
    }
  }
  if (!p.atEnd())
    return malformed("trailing characters after the dict");
  if (!descr)
    return malformed("missing key 'descr'");
  if (!fortran)
    return malformed("missing key 'fortran_order'");
  if (!shape)
    return malformed("missing key 'shape'");
  if (*fortran)
    return npyError(what, "Fortran-order arrays are not supported (fortran_order is True)");
  std::string why;
  std::optional<Descr> d = parseDescr(*descr, why);
  if (!d)
    return npyError(what, why);

  int64_t numel = 0;
  if (!checkedNumel(*shape, d->size, numel))
    return npyError(what, "shape product overflows");
  uint64_t need = static_cast<uint64_t>(numel) * d->size;
  uint64_t have = bytes.size() - dataOffset;
  if (have < need)
    return npyError(what,
                    strCat("truncated data: shape needs ", need, " bytes, the file holds ", have));
  Tensor t = Tensor::empty(d->dtype, *shape);
  if (need)
    std::memcpy(t.raw(), bytes.data() + dataOffset, need);
  if (d->dtype == DType::Bool) {
    uint8_t *b = t.data<uint8_t>();
    for (int64_t i = 0; i < numel; ++i)
      b[i] = b[i] != 0;
  }
  return t;
}

llvm::Expected<Tensor> readNpy(llvm::StringRef path) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buf =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false, /*RequiresNullTerminator=*/false);
  if (!buf)
    return npyError(path, "cannot open: " + buf.getError().message());
  return parseNpy((*buf)->getBuffer(), path);
}

std::string serializeNpy(const Tensor &t) {
  // bfloat16 has no NumPy dtype: it is widened (exactly) to float32.
  if (t.dtype() == DType::BFloat16) {
    Tensor f = Tensor::empty(DType::Float, t.shape());
    const uint16_t *src = t.data<uint16_t>();
    float *dst = f.data<float>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      dst[i] = bf16ToFloat(src[i]);
    return serializeNpy(f);
  }
  const char *descr = descrOf(t.dtype());
  if (!descr)
    return std::string();
  std::string dict = "{'descr': '";
  dict += descr;
  dict += "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.shape().size(); ++i) {
    if (i)
      dict += ", ";
    dict += std::to_string(t.shape()[i]);
  }
  if (t.shape().size() == 1)
    dict += ",";
  dict += "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary; the header
  // ends with '\n'.
  size_t prefix = 10;
  unsigned major = 1;
  size_t total = prefix + dict.size() + 1;
  size_t padded = (total + 63) / 64 * 64;
  if (padded - prefix > 0xffff) { // too long for 1.0: use 2.0
    prefix = 12;
    major = 2;
    total = prefix + dict.size() + 1;
    padded = (total + 63) / 64 * 64;
  }
  size_t headerLen = padded - prefix;
  std::string out;
  out.reserve(padded + t.nbytes());
  out.append("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i)
    out.push_back(static_cast<char>((headerLen >> (8 * i)) & 0xff));
  out += dict;
  out.append(headerLen - dict.size() - 1, ' ');
  out.push_back('\n');
  if (t.nbytes())
    out.append(static_cast<const char *>(t.raw()), t.nbytes());
  return out;
}

llvm::Error writeNpy(llvm::StringRef path, const Tensor &t) {
  if (!t.defined() || (!descrOf(t.dtype()) && t.dtype() != DType::BFloat16))
    return npyError(path,
                    strCat("cannot write a tensor of dtype ", dtypeName(t.dtype()), " as .npy"));
  std::string bytes = serializeNpy(t);
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return npyError(path, "cannot open for writing: " + ec.message());
  os.write(bytes.data(), bytes.size());
  os.close();
  if (os.has_error()) {
    std::error_code wec = os.error();
    os.clear_error();
    return npyError(path, "write failed: " + wec.message());
  }
  return llvm::Error::success();
}

} // namespace qn::rt
