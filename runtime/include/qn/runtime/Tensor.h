//===- Tensor.h - Host tensors of the QuintNet runtime ---------*- C++ -*-===//
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llvm/ADT/ArrayRef.h"

namespace qn::rt {

/// Element types, numbered as ONNX's TensorProto::DataType.
enum class DType : int32_t {
  Undefined = 0,
  Float = 1,
  UInt8 = 2,
  Int8 = 3,
  Int32 = 6,
  Int64 = 7,
  Bool = 9,
  Float16 = 10,
  Double = 11,
  BFloat16 = 16,
};

/// Where a tensor's bytes live. Host tensors are what the CPU kernels, .npy
/// I/O and plan loading see; Cuda tensors hold a device pointer (of the
/// current rank's GPU) and are only touched by the CUDA device's kernels.
enum class Location : uint8_t { Host = 0, Cuda = 1 };

/// Bytes per element; 0 for Undefined or an unsupported type.
size_t dtypeSize(DType t);
/// "float32", "float16", "int64", ... (NumPy's names).
const char *dtypeName(DType t);
/// True for a DType this runtime knows.
bool isSupported(DType t);

/// A dense, row-major (C order) tensor in host memory. Cheap to copy: the
/// buffer is shared. A view may point into memory owned by someone else (a
/// mapped weights file), kept alive by `owner`.
class Tensor {
public:
  Tensor() = default;
  /// A new zero-filled tensor that owns its buffer.
  static Tensor zeros(DType dtype, llvm::ArrayRef<int64_t> shape);
  /// A new tensor that owns its (64-byte aligned) buffer, contents
  /// uninitialised: for kernels that overwrite every element.
  static Tensor empty(DType dtype, llvm::ArrayRef<int64_t> shape);
  /// A view over `data`, which `owner` keeps alive (may be null when the
  /// caller guarantees the lifetime).
  static Tensor view(DType dtype, llvm::ArrayRef<int64_t> shape, void *data,
                     std::shared_ptr<void> owner, Location location = Location::Host);

  bool defined() const { return dtype_ != DType::Undefined; }
  DType dtype() const { return dtype_; }
  Location location() const { return location_; }
  bool onHost() const { return location_ == Location::Host; }
  const std::vector<int64_t> &shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtypeSize(dtype_); }

  void *raw() { return data_; }
  const void *raw() const { return data_; }
  template <typename T> T *data() { return static_cast<T *>(data_); }
  template <typename T> const T *data() const { return static_cast<const T *>(data_); }

  /// Same buffer, new shape (numel must match).
  Tensor reshaped(llvm::ArrayRef<int64_t> shape) const;
  /// A deep copy that owns its (host) buffer; the tensor must be on the host.
  Tensor clone() const;
  /// "float32[2,3]".
  std::string describe() const;

private:
  DType dtype_ = DType::Undefined;
  Location location_ = Location::Host;
  std::vector<int64_t> shape_;
  std::shared_ptr<void> owner_;
  void *data_ = nullptr;
};

/// Product of `shape`; false when a dim is negative or the product (or the
/// byte count for `elemSize`-byte elements) overflows int64.
bool checkedNumel(llvm::ArrayRef<int64_t> shape, size_t elemSize, int64_t &numel);

/// Large tensor buffers (256 KiB and up) are kept after their last tensor goes
/// away and reused for later requests of about the same size (up to 1 GiB in
/// all), which spares the page faults of fresh memory on every run. This frees
/// the buffers kept.
void releaseTensorBufferCache();

/// IEEE half <-> float conversions (round to nearest even).
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);
float bf16ToFloat(uint16_t h);
uint16_t floatToBf16(float f);

} // namespace qn::rt
