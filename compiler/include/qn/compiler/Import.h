//===- Import.h - Reading ONNX models into the IR ---------------*- C++ -*-===//
#pragma once
#include <memory>

#include "qn/compiler/Graph.h"
#include "llvm/Support/Error.h"

namespace qn {

/// Reads a binary `.onnx` model (with external data beside it) or an
/// `.onnxtext` model (ONNX text syntax), checks it with the ONNX checker,
/// folds Constant nodes into initializers, infers shapes (symbolic dims are
/// kept) and builds the IR. Errors name the file and what is wrong with it.
llvm::Expected<std::unique_ptr<Graph>> importModel(llvm::StringRef path);

/// Same, from bytes in memory (`path` names them and anchors external data).
llvm::Expected<std::unique_ptr<Graph>> importModelFromBuffer(llvm::StringRef bytes,
                                                             llvm::StringRef path);

/// Stores the typed data fields of `t` (float_data, int64_data, ...) as
/// raw_data, so later passes see one representation.
llvm::Error normalizeToRawData(onnx::TensorProto &t);

/// Fills the shapes ONNX's inference leaves out (run-time Slice bounds,
/// unknown dims under broadcasting, run-time Reshape targets); see
/// ShapeCompletion.cpp. Part of import.
void completeShapes(Graph &g);

/// Registers the ai.quintnet collective schemas with ONNX (idempotent), so the
/// ONNX checker and shape inference accept rank plans.
void registerQuintNetSchemas();

} // namespace qn
