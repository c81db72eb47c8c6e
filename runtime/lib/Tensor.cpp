//===- Tensor.cpp - Host tensors of the QuintNet runtime ------------------===//
#include "qn/runtime/Tensor.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include "llvm/Support/ErrorHandling.h"

namespace qn::rt {

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::Float:
  case DType::Int32:
    return 4;
  case DType::UInt8:
  case DType::Int8:
  case DType::Bool:
    return 1;
  case DType::Int64:
  case DType::Double:
    return 8;
  case DType::Float16:
  case DType::BFloat16:
    return 2;
  case DType::Undefined:
    return 0;
  }
  return 0;
}

const char *dtypeName(DType t) {
  switch (t) {
  case DType::Float:
    return "float32";
  case DType::UInt8:
    return "uint8";
  case DType::Int8:
    return "int8";
  case DType::Int32:
    return "int32";
  case DType::Int64:
    return "int64";
  case DType::Bool:
    return "bool";
  case DType::Float16:
    return "float16";
  case DType::Double:
    return "float64";
  case DType::BFloat16:
    return "bfloat16";
  case DType::Undefined:
    return "undefined";
  }
  return "unknown";
}

bool isSupported(DType t) { return t != DType::Undefined && dtypeSize(t) != 0; }

bool checkedNumel(llvm::ArrayRef<int64_t> shape, size_t elemSize, int64_t &numel) {
  int64_t n = 1;
  bool zero = false;
  for (int64_t d : shape) {
    if (d < 0)
      return false;
    if (d == 0)
      zero = true;
    // Keep checking the remaining dims for negativity, but a zero dim makes
    // the product 0 whatever the others are.
    if (!zero && __builtin_mul_overflow(n, d, &n))
      return false;
  }
  if (zero)
    n = 0;
  int64_t bytes;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(elemSize == 0 ? 1 : elemSize), &bytes))
    return false;
  numel = n;
  return true;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_)
    n *= d;
  return n;
}

static constexpr size_t kAlign = 64;

//===----------------------------------------------------------------------===//
// Buffer cache. A model run allocates the same large buffers again and again;
// handing them back to the C library returns them to the kernel (mmap /
// trim), and every reuse then pays a page fault per 4 KiB. Large freed buffers
// are kept (up to a budget) and reused for requests of about the same size,
// like ONNX Runtime's arena. Disabled under AddressSanitizer so that it still
// sees use-after-free.
//===----------------------------------------------------------------------===//

namespace {
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCacheEnabled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCacheEnabled = false;
#else
constexpr bool kCacheEnabled = true;
#endif
#else
constexpr bool kCacheEnabled = true;
#endif
constexpr size_t kCacheMinBytes = size_t(256) << 10; // smaller buffers: plain malloc
constexpr size_t kCacheBudget = size_t(1) << 30;     // bytes kept at most

class BufferCache {
public:
  /// A cached block of at least `bytes` (at most 1/8 more; its size in
  /// `size`), or null.
  void *take(size_t bytes, size_t &size) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > bytes + bytes / 8)
      return nullptr;
    void *p = it->second;
    size = it->first;
    cached_ -= it->first;
    free_.erase(it);
    return p;
  }
  /// Keeps `p` for reuse; false when over budget (the caller frees it).
  bool give(void *p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + bytes > kCacheBudget)
      return false;
    free_.emplace(bytes, p);
    cached_ += bytes;
    return true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto &e : free_)
      std::free(e.second);
    free_.clear();
    cached_ = 0;
  }

private:
  std::mutex mu_;
  std::multimap<size_t, void *> free_;
  size_t cached_ = 0;
};

BufferCache &bufferCache() {
  // Never destroyed: tensors may outlive static destruction.
  static BufferCache *c = new BufferCache;
  return *c;
}

std::shared_ptr<void> allocateBuffer(size_t bytes) {
  // aligned_alloc needs a multiple of the alignment; never 0 bytes so that
  // data() is non-null even for empty tensors.
  size_t alloc = (bytes + kAlign - 1) / kAlign * kAlign;
  if (alloc == 0)
    alloc = kAlign;
  if (kCacheEnabled && alloc >= kCacheMinBytes) {
    alloc = (alloc + 4095) / 4096 * 4096;
    size_t size = alloc;
    void *p = bufferCache().take(alloc, size);
    if (!p) {
      p = std::aligned_alloc(kAlign, alloc);
      if (!p)
        llvm::report_bad_alloc_error("Tensor: out of memory");
    }
    return std::shared_ptr<void>(p, [size](void *q) {
      if (!bufferCache().give(q, size))
        std::free(q);
    });
  }
  void *p = std::aligned_alloc(kAlign, alloc);
  if (!p)
    llvm::report_bad_alloc_error("Tensor: out of memory");
  return std::shared_ptr<void>(p, [](void *q) { std::free(q); });
}
} // namespace

void releaseTensorBufferCache() { bufferCache().release(); }

static Tensor allocate(DType dtype, llvm::ArrayRef<int64_t> shape, bool zero) {
  int64_t n = 0;
  size_t es = dtypeSize(dtype);
  if (es == 0)
    llvm::report_fatal_error("Tensor: cannot allocate a tensor of undefined dtype");
  if (!checkedNumel(shape, es, n))
    llvm::report_fatal_error("Tensor: invalid shape (negative dim or size overflow)");
  size_t bytes = static_cast<size_t>(n) * es;
  std::shared_ptr<void> owner = allocateBuffer(bytes);
  void *p = owner.get();
  if (zero && bytes)
    std::memset(p, 0, bytes);
  return Tensor::view(dtype, shape, p, std::move(owner));
}

Tensor Tensor::zeros(DType dtype, llvm::ArrayRef<int64_t> shape) {
  return allocate(dtype, shape, /*zero=*/true);
}

Tensor Tensor::empty(DType dtype, llvm::ArrayRef<int64_t> shape) {
  return allocate(dtype, shape, /*zero=*/false);
}

Tensor Tensor::view(DType dtype, llvm::ArrayRef<int64_t> shape, void *data,
                    std::shared_ptr<void> owner, Location location) {
  Tensor t;
  t.dtype_ = dtype;
  t.location_ = location;
  t.shape_.assign(shape.begin(), shape.end());
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::reshaped(llvm::ArrayRef<int64_t> shape) const {
  int64_t n = 0;
  if (!checkedNumel(shape, dtypeSize(dtype_), n) || n != numel())
    llvm::report_fatal_error("Tensor::reshaped: element count mismatch");
  Tensor t = *this;
  t.shape_.assign(shape.begin(), shape.end());
  return t;
}

Tensor Tensor::clone() const {
  if (!defined())
    return Tensor();
  if (!onHost())
    llvm::report_fatal_error("Tensor::clone: a device tensor reached host code (a runtime bug)");
  Tensor t = empty(dtype_, shape_);
  if (nbytes())
    std::memcpy(t.raw(), data_, nbytes());
  return t;
}

std::string Tensor::describe() const {
  std::string s = dtypeName(dtype_);
  s += '[';
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i)
      s += ',';
    s += std::to_string(shape_[i]);
  }
  s += ']';
  return s;
}

//===----------------------------------------------------------------------===//
// half / bfloat16
//===----------------------------------------------------------------------===//

static inline uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float floatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0)
      return floatOf(sign);
    // Subnormal: man * 2^-24, exact in float.
    float v = static_cast<float>(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31)
    return floatOf(sign | 0x7f800000u | (man << 13));
  return floatOf(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t floatToHalf(float f) {
  uint32_t x = bitsOf(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {
    if (a > 0x7f800000u) // NaN: keep the top payload bits, force quiet.
      return sign | 0x7e00u | static_cast<uint16_t>((a >> 13) & 0x3ffu);
    return sign | 0x7c00u;
  }
  if (a >= 0x477ff000u) // >= 65520 rounds to infinity
    return sign | 0x7c00u;
  if (a < 0x38800000u) {  // below 2^-14: half subnormal or zero
    if (a <= 0x33000000u) // <= 2^-25 rounds (ties to even) to zero
      return sign;
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; // 14..24
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u)))
      ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = (a - 0x38000000u) >> 13;
  uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
    ++r;
  return sign | static_cast<uint16_t>(r);
}

float bf16ToFloat(uint16_t h) { return floatOf(static_cast<uint32_t>(h) << 16); }

uint16_t floatToBf16(float f) {
  uint32_t x = bitsOf(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) // NaN: keep sign and payload top, force quiet
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return static_cast<uint16_t>(x >> 16);
}

} // namespace qn::rt
