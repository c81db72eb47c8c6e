//===- TensorProto.h - ONNX TensorProto <-> Tensor -------------*- C++ -*-===//
#pragma once
#include "qn/runtime/Tensor.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace onnx {
class TensorProto;
}

namespace qn::rt {

/// The DType of an ONNX TensorProto::DataType value; Undefined when this
/// runtime does not support it.
DType dtypeFromOnnx(int32_t onnxDataType);

/// Converts a TensorProto with INLINE data (raw_data, or the typed fields:
/// float_data; int32_data for int32/int8/uint8/bool/float16/bfloat16;
/// int64_data; double_data) into a tensor that owns a copy of the data.
/// Errors (naming the tensor) for data_location EXTERNAL (the plan loader
/// resolves those), unsupported data types, negative dims, and a data size
/// that does not match the dims.
llvm::Expected<Tensor> tensorFromProto(const onnx::TensorProto &p);

/// A TensorProto named `name` holding `t` as raw_data (little-endian).
onnx::TensorProto tensorToProto(const Tensor &t, llvm::StringRef name);

} // namespace qn::rt
