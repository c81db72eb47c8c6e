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

} // namespace

llvm::Expected<Tensor> loadDataset(llvm::StringRef path) {
  auto bytes = readMaybeGzip(path);
  if (!bytes)
    return bytes.takeError();
  if (bytes->size() >= 6 && bytes->compare(0, 6, "\x93NUMPY") == 0)
    return parseNpy(*bytes, path);
  if (llvm::StringRef(path).contains("-idx") || (bytes->size() >= 2 && (*bytes)[0] == 0 && (*bytes)[1] == 0))
    return parseIdx(*bytes, path);
  return fail("'" + path + "' is neither a .npy nor an IDX file");
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
