//===- Dataset.cpp - Training data files ----------------------------------===//
#include "qn/runtime/Dataset.h"

#include "qn/runtime/Npy.h"

#include "llvm/ADT/Twine.h"

#include <cstring>
#include <zlib.h>

namespace qn::rt {
namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

/// The whole file, decompressed where it is gzip (zlib reads plain files
/// as they are).
llvm::Expected<std::string> readMaybeGzip(llvm::StringRef path) {
  gzFile f = gzopen(path.str().c_str(), "rb");
  if (!f)
    return fail("cannot open '" + path + "': " + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      return fail("'" + path + "' is damaged: " + msg);
    }
    if (n == 0)
      break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (size_t(1) << 36))
      return fail("'" + path + "' is larger than 64 GiB decompressed");
  }
  gzclose(f);
  return out;
}

uint32_t bigEndian32(const unsigned char *p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

llvm::Expected<Tensor> parseIdx(const std::string &bytes, llvm::StringRef path) {
  const auto *p = reinterpret_cast<const unsigned char *>(bytes.data());
  if (bytes.size() < 4 || p[0] != 0 || p[1] != 0)
    return fail("'" + path + "' is not an IDX file (bad magic number)");
  int type = p[2], ndims = p[3];
  if (type != 0x08 || ndims < 1 || ndims > 4)
    return fail("'" + path + "': IDX element type " + llvm::Twine(type) + " with " +
                llvm::Twine(ndims) + " dims is not supported (unsigned bytes, 1 to 4 dims)");
  if (bytes.size() < 4 + 4 * size_t(ndims))
    return fail("'" + path + "' is truncated (header)");
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (int i = 0; i < ndims; ++i) {
    shape.push_back(bigEndian32(p + 4 + 4 * i));
    numel *= shape.back();
  }
  size_t header = 4 + 4 * size_t(ndims);
  if (bytes.size() != header + size_t(numel))
    return fail("'" + path + "' holds " + llvm::Twine(bytes.size() - header) +
                " data bytes but its header says " + llvm::Twine(numel));
  const unsigned char *data = p + header;
  if (ndims == 1) { // labels
    Tensor t = Tensor::empty(DType::Int64, shape);
    for (int64_t i = 0; i < numel; ++i)
      t.data<int64_t>()[i] = data[i];
    return t;
  }
  Tensor t = Tensor::empty(DType::Float, shape);
  for (int64_t i = 0; i < numel; ++i)
    t.data<float>()[i] = static_cast<float>(data[i]) / 255.0f;
  return t;
}

uint32_t le32(const unsigned char *p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint16_t le16(const unsigned char *p) { return uint16_t(p[0] | (p[1] << 8)); }

/// The members of a .npz (a zip of .npy files, stored or deflated), by name
/// without ".npy", read through the central directory.
llvm::Expected<std::vector<std::pair<std::string, std::string>>>
npzMembers(const std::string &zip, llvm::StringRef path) {
  const auto *b = reinterpret_cast<const unsigned char *>(zip.data());
  size_t n = zip.size();
  // End of central directory: the last "PK\5\6" (a comment may follow it).
  size_t eocd = std::string::npos;
  for (size_t i = n >= 22 ? n - 22 : 0; i + 22 <= n; --i) {
    if (le32(b + i) == 0x06054b50) {
      eocd = i;
      break;
    }
    if (i == 0 || n - i > 22 + 65535)
      break;
  }
  if (eocd == std::string::npos)
    return fail("'" + path + "' is not a .npz file (no zip directory)");
  uint16_t count = le16(b + eocd + 10);
  size_t dir = le32(b + eocd + 16);
  std::vector<std::pair<std::string, std::string>> out;
  for (uint16_t k = 0; k < count; ++k) {
    if (dir + 46 > n || le32(b + dir) != 0x02014b50)
      return fail("'" + path + "': damaged zip directory");
    uint16_t method = le16(b + dir + 10), nameLen = le16(b + dir + 28),
             extraLen = le16(b + dir + 30), commentLen = le16(b + dir + 32);
    uint32_t csize = le32(b + dir + 20), usize = le32(b + dir + 24), local = le32(b + dir + 42);
    if (csize == 0xffffffffu || usize == 0xffffffffu || local == 0xffffffffu)
      return fail("'" + path + "': zip64 members (over 4 GiB) are not supported");
    if (dir + 46 + nameLen > n)
      return fail("'" + path + "': damaged zip directory");
    std::string name(zip.data() + dir + 46, nameLen);
    dir += 46 + nameLen + extraLen + commentLen;
    if (size_t(local) + 30 > n || le32(b + local) != 0x04034b50)
      return fail("'" + path + "': damaged zip member '" + name + "'");
    size_t data = local + 30 + le16(b + local + 26) + le16(b + local + 28);
    if (data + csize > n)
      return fail("'" + path + "': member '" + name + "' is truncated");
    std::string bytes;
    if (method == 0) {
      bytes.assign(zip.data() + data, csize);
    } else if (method == 8) {
      bytes.resize(usize);
      z_stream zs{};
      if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
        return fail("'" + path + "': zlib failed");
      zs.next_in = const_cast<Bytef *>(b + data);
      zs.avail_in = csize;
      zs.next_out = reinterpret_cast<Bytef *>(bytes.data());
      zs.avail_out = usize;
      int rc = inflate(&zs, Z_FINISH);
      inflateEnd(&zs);
      if (rc != Z_STREAM_END || zs.total_out != usize)
        return fail("'" + path + "': member '" + name + "' does not inflate");
    } else {
      return fail("'" + path + "': member '" + name + "' uses zip method " +
                  llvm::Twine(method) + " (stored and deflated are supported)");
    }
    llvm::StringRef key(name);
    key.consume_back(".npy");
    out.push_back({key.str(), std::move(bytes)});
  }
  return out;
}

} // namespace

llvm::Expected<Tensor> loadDataset(llvm::StringRef spec) {
  // FILE.npz:KEY picks an array of a .npz; FILE.npz alone needs exactly one.
  llvm::StringRef path = spec, key;
  if (size_t at = spec.rfind(".npz:"); at != llvm::StringRef::npos) {
    path = spec.take_front(at + 4);
    key = spec.drop_front(at + 5);
  }
  auto bytes = readMaybeGzip(path);
  if (!bytes)
    return bytes.takeError();
  if (bytes->size() >= 4 && bytes->compare(0, 4, "PK\x03\x04") == 0) {
    auto members = npzMembers(*bytes, path);
    if (!members)
      return members.takeError();
    std::string names;
    for (auto &[name, data] : *members) {
      names += (names.empty() ? "" : ", ") + name;
      if (name == key || (key.empty() && members->size() == 1))
        return parseNpy(data, (path + ":" + name).str());
    }
    return fail("'" + path + "' holds the arrays " + names + ": name one as " + path +
                ":NAME" + (key.empty() ? "" : " ('" + key + "' is not among them)"));
  }
  if (bytes->size() >= 6 && bytes->compare(0, 6, "\x93NUMPY") == 0)
    return parseNpy(*bytes, path);
  if (llvm::StringRef(path).contains("-idx") || (bytes->size() >= 2 && (*bytes)[0] == 0 && (*bytes)[1] == 0))
    return parseIdx(*bytes, path);
  return fail("'" + path + "' is neither a .npy, a .npz nor an IDX file");
}

Tensor gatherRows(const Tensor &data, llvm::ArrayRef<int64_t> rows) {
  std::vector<int64_t> shape = data.shape();
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out = Tensor::empty(data.dtype(), shape);
  size_t row = data.numel() / std::max<int64_t>(1, data.dim(0)) * dtypeSize(data.dtype());
  const char *src = static_cast<const char *>(data.raw());
  char *dst = static_cast<char *>(out.raw());
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(dst + i * row, src + size_t(rows[i]) * row, row);
  return out;
}

} // namespace qn::rt
