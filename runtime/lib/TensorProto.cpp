//===- TensorProto.cpp - ONNX TensorProto <-> Tensor ----------------------===//
#include "qn/runtime/TensorProto.h"
#include "StrCat.h"

#include <cstring>

#include "onnx/onnx_pb.h"

namespace qn::rt {

DType dtypeFromOnnx(int32_t t) {
  switch (t) {
  case onnx::TensorProto::FLOAT:
    return DType::Float;
  case onnx::TensorProto::UINT8:
    return DType::UInt8;
  case onnx::TensorProto::INT8:
    return DType::Int8;
  case onnx::TensorProto::INT32:
    return DType::Int32;
  case onnx::TensorProto::INT64:
    return DType::Int64;
  case onnx::TensorProto::BOOL:
    return DType::Bool;
  case onnx::TensorProto::FLOAT16:
    return DType::Float16;
  case onnx::TensorProto::DOUBLE:
    return DType::Double;
  case onnx::TensorProto::BFLOAT16:
    return DType::BFloat16;
  default:
    return DType::Undefined;
  }
}

static std::string tensorName(const onnx::TensorProto &p) {
  return p.name().empty() ? std::string("<unnamed>") : p.name();
}

static llvm::Error protoError(const onnx::TensorProto &p, const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 ("tensor '" + tensorName(p) + "': " + msg).str());
}

static std::string shapeString(llvm::ArrayRef<int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i)
      s += ',';
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

llvm::Expected<Tensor> tensorFromProto(const onnx::TensorProto &p) {
  if (p.data_location() == onnx::TensorProto::EXTERNAL || p.external_data_size() > 0)
    return protoError(p, "data is stored externally (data_location EXTERNAL); it must be "
                         "resolved by the plan loader");
  if (p.has_segment())
    return protoError(p, "segmented tensors are not supported");
  DType dt = dtypeFromOnnx(p.data_type());
  if (dt == DType::Undefined) {
    const char *name = onnx::TensorProto_DataType_IsValid(p.data_type())
                           ? onnx::TensorProto_DataType_Name(
                                 static_cast<onnx::TensorProto_DataType>(p.data_type()))
                                 .c_str()
                           : "invalid";
    return protoError(p, strCat("unsupported data type ", p.data_type(), " (", name, ")"));
  }
  std::vector<int64_t> dims(p.dims().begin(), p.dims().end());
  size_t es = dtypeSize(dt);
  int64_t numel = 0;
  if (!checkedNumel(dims, es, numel))
    return protoError(p, "invalid dims " + shapeString(dims) +
                             " (negative or overflowing element count)");

  size_t nbytes = static_cast<size_t>(numel) * es;
  auto countMismatch = [&](llvm::StringRef field, size_t have) {
    return protoError(p, strCat(field, " holds ", have, " elements but dims ", shapeString(dims),
                                " (", dtypeName(dt), ") need ", numel));
  };
  // Check what is stored against the dims before allocating: hostile dims
  // may ask for far more memory than the data they come with.
  if (p.has_raw_data()) {
    if (p.raw_data().size() != nbytes)
      return protoError(p, strCat("raw_data holds ", p.raw_data().size(), " bytes but dims ",
                                  shapeString(dims), " (", dtypeName(dt), ") need ", nbytes));
  } else {
    int64_t stored = dt == DType::Float    ? p.float_data_size()
                     : dt == DType::Double ? p.double_data_size()
                     : dt == DType::Int64  ? p.int64_data_size()
                                           : p.int32_data_size();
    if (stored != numel)
      return countMismatch(dt == DType::Float    ? "float_data"
                           : dt == DType::Double ? "double_data"
                           : dt == DType::Int64  ? "int64_data"
                                                 : "int32_data",
                           static_cast<size_t>(stored));
  }

  Tensor t = Tensor::empty(dt, dims);
  if (p.has_raw_data()) {
    const std::string &raw = p.raw_data();
    if (nbytes)
      std::memcpy(t.raw(), raw.data(), nbytes);
    if (dt == DType::Bool) {
      uint8_t *b = t.data<uint8_t>();
      for (int64_t i = 0; i < numel; ++i)
        b[i] = b[i] != 0;
    }
    return t;
  }

  switch (dt) {
  case DType::Float: {
    if (p.float_data_size() != numel)
      return countMismatch("float_data", p.float_data_size());
    if (numel)
      std::memcpy(t.raw(), p.float_data().data(), nbytes);
    break;
  }
  case DType::Double: {
    if (p.double_data_size() != numel)
      return countMismatch("double_data", p.double_data_size());
    if (numel)
      std::memcpy(t.raw(), p.double_data().data(), nbytes);
    break;
  }
  case DType::Int64: {
    if (p.int64_data_size() != numel)
      return countMismatch("int64_data", p.int64_data_size());
    if (numel)
      std::memcpy(t.raw(), p.int64_data().data(), nbytes);
    break;
  }
  case DType::Int32:
  case DType::Int8:
  case DType::UInt8:
  case DType::Bool:
  case DType::Float16:
  case DType::BFloat16: {
    if (p.int32_data_size() != numel)
      return countMismatch("int32_data", p.int32_data_size());
    const int32_t *src = p.int32_data().data();
    for (int64_t i = 0; i < numel; ++i) {
      int32_t v = src[i];
      switch (dt) {
      case DType::Int32:
        t.data<int32_t>()[i] = v;
        break;
      case DType::Int8:
        t.data<int8_t>()[i] = static_cast<int8_t>(v);
        break;
      case DType::UInt8:
        t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
        break;
      case DType::Bool:
        t.data<uint8_t>()[i] = v != 0;
        break;
      default: // float16 / bfloat16: the low 16 bits are the bit pattern
        t.data<uint16_t>()[i] = static_cast<uint16_t>(v & 0xffff);
        break;
      }
    }
    break;
  }
  default:
    return protoError(p, strCat("unsupported data type ", dtypeName(dt)));
  }
  return t;
}

onnx::TensorProto tensorToProto(const Tensor &t, llvm::StringRef name) {
  onnx::TensorProto p;
  p.set_name(name.str());
  p.set_data_type(static_cast<int32_t>(t.dtype()));
  for (int64_t d : t.shape())
    p.add_dims(d);
  if (t.nbytes())
    p.set_raw_data(std::string(static_cast<const char *>(t.raw()), t.nbytes()));
  else
    p.set_raw_data(std::string());
  return p;
}

} // namespace qn::rt
