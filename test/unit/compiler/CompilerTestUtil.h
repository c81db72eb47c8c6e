//===- CompilerTestUtil.h - Shared helpers of the compiler tests -*- C++ -*-===//
#pragma once
#include "qn/compiler/Import.h"

#include <gtest/gtest.h>

namespace qn::testing {

/// The graph of an .onnxtext model, or null (a test failure) when it does
/// not import.
inline std::unique_ptr<Graph> parse(const std::string &text) {
  auto g = importModelFromBuffer(text, "test.onnxtext");
  if (!g) {
    ADD_FAILURE() << llvm::toString(g.takeError());
    return nullptr;
  }
  return std::move(*g);
}

/// A Linear pair, W1[2,4] = 0..7, b1[4] = 10..13, W2[4,2] = 20..27,
/// b2[2] = 30, 31.
inline const char *const kPair = R"(<ir_version: 8, opset_import: ["" : 17]>
pair (float[B,2] x) => (float[B,2] y)
<float[2,4] W1 = {0, 1, 2, 3, 4, 5, 6, 7}, float[4] b1 = {10, 11, 12, 13},
 float[4,2] W2 = {20, 21, 22, 23, 24, 25, 26, 27}, float[2] b2 = {30, 31}>
{
  h = MatMul (x, W1)
  hb = Add (h, b1)
  a = Relu (hb)
  o = MatMul (a, W2)
  y = Add (o, b2)
}
)";

} // namespace qn::testing
