//===- ExporterIdioms.h - The shape chains exporters write ------*- C++ -*-===//
//
// PyTorch's exporters build the targets of Reshape and Expand at run time
// for dynamic batch and sequence sizes: Shape(x) -> Gather(i) -> Unsqueeze ->
// Concat with constant pieces, sometimes Mul by a constant (kv_heads *
// n_rep), and for expand(sizes) Where(Equal(s, -1), 1, s) around
// Reshape(Concat(...), [-1]). Shape completion (ShapeCompletion.cpp) reads
// the dims such a target holds; the sharding rules (rules/) check which of
// its entries read a sharded axis. Both recognise the idioms here.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>
#include <vector>

#include "qn/compiler/Graph.h"

namespace qn::idioms {

/// One entry of a shape read at run time: `v` is Shape(tensor)[index]
/// (times `factor`), through Unsqueeze/Squeeze/Cast, a Gather of a constant
/// index or a one-element Slice of the Shape, and Mul by a constant.
struct ShapeEntry {
  const Value *tensor = nullptr; // null: `v` is not such an entry
  int64_t index = -1;            // normalised to [0, rank) when tensor has a shape
  /// Product of the int64 one-element constants multiplied in; 0 when a Mul
  /// by anything else is on the way.
  int64_t factor = 1;
};
ShapeEntry traceShapeEntry(const Value *v);
/// The ops a one-element shape entry passes through unchanged on its way
/// to a target: Unsqueeze, Squeeze, Cast, Reshape.
bool isShapeStep(llvm::StringRef op);
/// A product of two run-time entries, Mul(a, b) (through Unsqueeze/Squeeze/
/// Cast): GPT-NeoX's `batch * heads` read from the query's shape. False
/// when `v` is not one.
bool traceShapeProduct(const Value *v, ShapeEntry &a, ShapeEntry &b);

/// The exporter writes expand(sizes) targets as Where(Equal(s, -1), 1, s)
/// with s = Reshape(Concat(...), [-1]): returns the Concat's output (or `v`
/// itself when it is not wrapped).
const Value *unwrapShapeTarget(const Value *v);

/// The Concat node that builds the target `v` (after unwrapShapeTarget), or
/// null.
const Node *targetConcat(const Value *v);

/// Whether the Shape value `v` only feeds the target shapes of
/// Reshape/Expand (through the ops exporters build them with), and only as
/// single entries taken out by a Gather or Slice. A whole shape used as a
/// target, or anything on the way that is a graph output, returns false.
bool feedsOnlyShapeTargets(const Value *v);
/// Whether `v`, a run of several entries of a shape vector, reaches only
/// Reshape/Expand targets (as a Concat piece), whose rules check where each
/// entry lands.
bool feedsOnlyShapeTargetPieces(const Value *v);
/// A run of entries of a tensor's shape: `Shape(t) <start, end>`, or a Slice
/// of it with constant bounds (step 1), read as dims [first, first + len)
/// of t. False for anything else.
bool traceShapeRange(const Value *v, const Value *&tensor, int64_t &first, int64_t &len);

/// The int64/int32 value `v` (at most a vector), computed from constants and
/// Shape reads of `x` only (through Gather, Slice, Squeeze, Unsqueeze,
/// Reshape, Cast, Identity, Concat, Add, Sub, Mul, Div), with x's axis
/// `axis` taken to be `size` and its other dims their static sizes: how
/// torch's chunk(k, dim=-1) computes its bounds (Shape -> Gather -> Add ->
/// Div -> Mul). False when `v` is anything else or reads an unknown dim.
bool evalShapeInts(const Value *v, const Value *x, int64_t axis, int64_t size,
                   std::vector<int64_t> &out);

/// The range [start, end) that the Slice `n` (step 1) takes of axis `axis`
/// of its data input when that axis has `size` elements (bounds normalised
/// and clamped as ONNX does; bounds computed at run time evaluated with
/// evalShapeInts). False when `axis` is not sliced, a step is not 1, or a
/// bound is not known. `entry`, if given, receives the position of `axis`
/// in the Slice's axes (the entry of its starts and ends).
bool sliceRange(const Node &n, int64_t axis, int64_t size, int64_t &start, int64_t &end,
                size_t *entry = nullptr);

/// Whether the value `v` (a Shape of `x`, or a value computed from one)
/// reaches only the bounds (inputs 1 and 2) of Slices whose data input is
/// `x`, through the ops evalShapeInts follows; those Slices are added to
/// `slices`. Anything else on the way (another reader, a graph output)
/// returns false.
bool feedsOnlySliceBounds(const Value *v, const Value *x,
                          llvm::SmallVectorImpl<const Node *> &slices);

} // namespace qn::idioms
