//===- Npy.h - NumPy .npy files --------------------------------*- C++ -*-===//
#pragma once
#include "qn/runtime/Tensor.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace qn::rt {

/// Reads a .npy file (format 1.0, 2.0 or 3.0, C order, little-endian):
/// float32, float16, float64, int64, int32, int8, uint8, bool. Errors name the
/// file and say what is wrong (not a .npy file, Fortran order, big-endian,
/// unsupported dtype, truncated data, ...).
llvm::Expected<Tensor> readNpy(llvm::StringRef path);
/// Parses .npy bytes already in memory; `what` names them in errors.
llvm::Expected<Tensor> parseNpy(llvm::StringRef bytes, llvm::StringRef what);
/// Writes `t` as a .npy (format 1.0) file, the header padded so that the data
/// starts on a 64-byte boundary. bfloat16 (no NumPy dtype) is widened exactly
/// to float32; an undefined tensor is an error.
llvm::Error writeNpy(llvm::StringRef path, const Tensor &t);
/// Serialises `t` as .npy bytes (as writeNpy; empty for an undefined tensor).
std::string serializeNpy(const Tensor &t);

} // namespace qn::rt
