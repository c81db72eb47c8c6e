//===- Placement.h - R, S(d), P on the 1-D tensor-parallel mesh -*- C++ -*-===//
#pragma once
#include <string>

namespace qn {

/// Where a tensor lives on the N ranks of the tensor-parallel mesh.
///   R     every rank holds the full tensor;
///   S(d)  rank k holds the k-th of N equal slices of axis d;
///   P     every rank holds a full-shaped partial value; the true value is the
///         sum over ranks.
struct Placement {
  enum class Kind { Replicated, Shard, Partial };
  Kind kind = Kind::Replicated;
  int axis = -1; // only for Shard; non-negative once normalised
  /// Only for Shard: the axis holds `blocks` equal blocks (a fused Q|K|V
  /// projection) and rank k holds the k-th slice of each block, side by
  /// side. 1 for an ordinary shard.
  /// A negative value -n marks a merged (batch*heads) axis: blocks of n
  /// elements each (the heads of one batch row), as many as the batch has
  /// (unknown here), rank k holding the k-th slice of each block. Written
  /// S(d)/n. OPT's and GPT-NeoX's attention flatten [B, H, T, D] into
  /// [B*H, T, D] for their batched MatMuls; with H sharded, each rank holds
  /// B*H/tp rows. Rules that only know ordinary shards test blocks != 1.
  int blocks = 1;

  static Placement R() { return {Kind::Replicated, -1, 1}; }
  static Placement S(int d, int blocks = 1) { return {Kind::Shard, d, blocks}; }
  /// S(d)/n: axis d merges an unknown count of n-element blocks.
  static Placement Merged(int d, int n) { return {Kind::Shard, d, -n}; }
  bool isMerged() const { return kind == Kind::Shard && blocks < 0; }
  /// For S(d)/n: n.
  int blockSize() const { return -blocks; }
  static Placement P() { return {Kind::Partial, -1, 1}; }

  bool isReplicated() const { return kind == Kind::Replicated; }
  bool isShard() const { return kind == Kind::Shard; }
  bool isPartial() const { return kind == Kind::Partial; }
  bool operator==(const Placement &o) const {
    return kind == o.kind && (kind != Kind::Shard || (axis == o.axis && blocks == o.blocks));
  }
  bool operator!=(const Placement &o) const { return !(*this == o); }
  /// "R", "S(1)", "S(2)x3" (blocked), "S(0)/16" (merged), "P".
  std::string str() const;
  /// The inverse of str(): "R", "P", "S(d)", "S(d)xk" or "S(d)/n" with
  /// d >= 0, k >= 1 and n >= 1; false for anything else.
  static bool parse(const std::string &text, Placement &out);
};

/// How to move a value from one placement to another (DESIGN.md's
/// redistribution table). The only place collectives are born.
enum class Redistribution {
  None,          // same placement
  AllReduce,     // P -> R
  ReduceScatter, // P -> S(d)
  AllGather,     // S(d) -> R
  LocalSlice,    // R -> S(d), no communication
  GatherSlice,   // S(a) -> S(b), a != b: AllGather(a) then local slice (b)
  Invalid,       // R or S -> P: never needed, never produced
};

Redistribution redistribution(const Placement &from, const Placement &to);
const char *redistributionName(Redistribution r);

/// Bytes each rank sends for a redistribution of a tensor of `bytes` (full
/// size) over `tp` ranks with ring algorithms (for the report and the cost
/// model).
double redistributionBytesPerRank(Redistribution r, double bytes, int tp);

} // namespace qn
