//===- ArenaPlan.h - Placing buffers of known lifetimes in one arena -*- C++ -*-===//
//
// Internal to the runtime (the CUDA allocator plans with it; host code, so that
// it is tested without a GPU).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qn::rt {

/// A buffer: `size` bytes, live from tick `born` to tick `died` (exclusive;
/// UINT64_MAX when it outlives the run).
struct BufferLife {
  size_t size;
  uint64_t born, died;
};

/// Offsets such that two buffers whose lifetimes overlap never share a byte,
/// and the arena size (the largest offset + size). Greedy by size, largest
/// first, each at the lowest offset free of already placed buffers that are
/// live at the same time (as TFLite's arena planner). Offsets keep the
/// alignment of the sizes (a size that is a multiple of 256 keeps 256-byte
/// alignment).
std::vector<size_t> planArena(const std::vector<BufferLife> &buffers, size_t &arenaBytes);

} // namespace qn::rt
