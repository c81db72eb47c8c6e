//===- Partition.h - From one model to N rank plans -------------*- C++ -*-===//
//
// The passes, in order (one file each under compiler/lib/):
//   Linear.cpp     recognise Linear layers and choose a strategy per Linear
//                  (Megatron column->row pairs, lone column, replicate);
//                  split a row-parallel Gemm's bias off so it is added once
//   Propagate.cpp  per-op sharding rules: placements of every value and the
//                  placement each node needs of its inputs
//   Lower.cpp      insert redistributions (the only source of collectives),
//                  name the sliced constants
//   Materialize.cpp  rank K's ONNX model; Verify: checker, shape inference,
//                  same collective sequence on every rank
//   Export.cpp     plan folder: plan.json, rankK.onnx, rankK.bin (atomic)
//
//===----------------------------------------------------------------------===//
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qn/compiler/Graph.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

namespace qn {

struct TrainingInfo;

struct PartitionOptions {
  int tp = 2;
  /// A Linear that is not part of a column/row pair is sharded column-wise
  /// (then gathered) only when its weight has at least this many bytes;
  /// smaller ones stay replicated (the gather would cost more than the
  /// compute it saves).
  int64_t replicateBelowBytes = 256 * 1024;
  /// Graph outputs produced sharded (the logits of a vocab-parallel LM head)
  /// stay sharded instead of being gathered, for a vocab-parallel consumer.
  bool keepLogitsSharded = false;
  /// Placements that named graph outputs must have in the rank plans
  /// (otherwise R, or as produced with keepLogitsSharded): R or S(d), e.g. a
  /// weight gradient that stays sharded like its weight. An output left
  /// sharded is written by qn-run as one NAME.rankK.npy per rank.
  std::map<std::string, Placement> outputPlacements = {};
  /// Placements pinned on named constants, seen by every consumer as if the
  /// constant were produced so (training: a parameter and its optimizer
  /// state keep the placement the forward plan gave the parameter, so the
  /// update writes the same shard every consumer reads). A consumer that
  /// needs another placement gets a redistribution of it.
  std::map<std::string, Placement> constantPlacements = {};
  /// A Concat of k equal inputs sharded on the concatenated axis gives the
  /// blocked S(axis)xk instead of gathering them (training: the gradient of
  /// a fused Q|K|V projection, which its weight's blocked gradient reads).
  /// Off for inference, where no collective could gather such a value.
  bool blockedConcat = false;
};

enum class LinearStrategy { Replicate, Column, Row };
const char *strategyName(LinearStrategy s);

/// A Linear layer: MatMul(x, W) with a constant 2-D W, or Gemm(A, B, C?) with
/// a constant B.
struct LinearInfo {
  Node *node = nullptr;
  bool isGemm = false;
  int weightKAxis = 0, weightNAxis = 1; // axes of the weight
  int actKAxis = -1;                    // axis of the activation holding K
  int64_t K = 0, N = 0;
  int64_t weightBytes = 0;
  LinearStrategy strategy = LinearStrategy::Replicate;
  std::string pairedWith; // label of the partner Linear of a Megatron pair
  /// > 1 for a fused projection (Q|K|V, gate|up) whose output is cut into
  /// this many equal parts (by a Split or by Slices): column-parallel, it is
  /// sliced part by part (head-wise).
  int fusedParts = 1;
  /// Why the planner could not pair it (the first violation a tentative
  /// column-parallel run of its group met), for the warning on a replicated
  /// Linear above --replicate-below.
  std::string whyNotPaired;
  /// Set where the planner keeps it replicated by design (multi-query
  /// attention's single K/V head): no warning; --report says why.
  std::string keptWhole;
};

/// Placements a node needs of its inputs and gives its outputs.
struct NodePlacements {
  llvm::SmallVector<Placement, 4> in;
  llvm::SmallVector<Placement, 2> out;
  /// Constant inputs replaced by a rule (input index -> new constant's
  /// name), e.g. a Reshape's target shape with the sharded dim divided by tp.
  llvm::SmallVector<std::pair<unsigned, std::string>, 1> constantOverrides;
};

/// An embedding lookup: Gather(table[V,H] constant, ids) on axis 0.
/// An LM head whose output features were padded to a multiple of tp
/// (Pad.cpp: padUnevenHeads).
struct PaddedLinear {
  const Node *node = nullptr;
  std::string weight; // the source weight's name
  int64_t N = 0, paddedN = 0;
};

struct EmbeddingInfo {
  Node *node = nullptr;
  int64_t V = 0, H = 0;
  /// V rounded up to a multiple of tp (the table padded with zero rows when
  /// vocab-parallel); V when it divides.
  int64_t paddedV = 0;
  int64_t tableBytes = 0;
  bool vocabParallel = false;
};

/// What rewrites leave for the later passes: placements they fixed for the
/// nodes they created, and constants whose value depends on the rank.
struct RewriteState {
  llvm::DenseMap<const Node *, NodePlacements> fixed;
  llvm::StringMap<std::function<onnx::TensorProto(int rank, int tp)>> rankDependent;
  llvm::DenseMap<const Node *, std::string> roles; // for --emit=annotated
};

/// A constant of the rank graphs: a replicated or sliced copy of a source
/// initializer, or a rank-dependent generated tensor.
struct RankConstant {
  std::string name;
  const onnx::TensorProto *source = nullptr;
  int shardAxis = -1; // -1: replicated copy
  int blocks = 1;     // blocked slicing (see Placement::blocks)
  std::function<onnx::TensorProto(int rank, int tp)> generate;
};

struct PlannedNode {
  onnx::NodeProto proto;
  std::string role; // "column", "row", "replicated", "collective", "local-slice" or ""
  llvm::SmallVector<Placement, 4> in;
  llvm::SmallVector<Placement, 2> out;
};

/// Per kind of collective: how many the plan issues per run and the bytes
/// each rank sends per token (ring algorithms) over all of them.
struct CollectiveStats {
  int count = 0;
  double bytesPerTokenPerRank = 0;
};

/// The rank-independent result of partitioning: every rank runs the same
/// node list; only the constants differ by rank.
struct Plan {
  int tp = 1;
  std::vector<PlannedNode> nodes;
  std::vector<RankConstant> constants;
  std::vector<LinearInfo> linears;
  std::vector<EmbeddingInfo> embeddings;
  std::vector<PaddedLinear> padded;
  std::map<std::string, int> collectiveCounts; // by op type
  std::map<std::string, CollectiveStats> collectiveStats;
  /// Placement of each graph output in the rank plans (R unless kept sharded).
  std::map<std::string, Placement> outputPlacements = {};
  /// A training plan's loss, inputs and mutable state (Train.h), else null.
  std::shared_ptr<const TrainingInfo> training;
};

/// What a user expecting Megatron's plan should hear about `plan`: Linears
/// above `replicateBelowBytes` left replicated (naming the node and value
/// where propagation lost the shard) and AllGathers that land before the
/// graph's outputs (naming the value gathered and its consumer).
std::vector<std::string> planWarnings(const Plan &plan, const PartitionOptions &opts);

/// Splits each fused projection whose output is cut into parts of unequal
/// width (Falcon's multi-query query_key_value) into one Linear per part
/// (Defuse.cpp), so that the planner treats its parts as separate q/k/v.
llvm::Error defuseUnequalProjections(Graph &g);
/// Gives each reader of a shape product Mul(entry, constant) with several
/// readers (OPT's `bsz * num_heads`, shared by the q/k/v/scores reshape
/// targets) its own copy (Defuse.cpp), so that a Reshape rule may make
/// its own copy's constant the local head count; likewise each reader of a
/// Concat-built Reshape/Expand target that several read (the dynamo
/// exporter shares one [batch, seq, heads, head_dim] among the layers).
void privatizeShapeProducts(Graph &g);
/// Pads the output features of each LM head whose count tp does not divide
/// (a Linear reaching a graph output through bias Adds, Casts and
/// Identities) with zero columns to the next multiple of tp, and slices the
/// padding off before the graph output (Pad.cpp).
std::vector<PaddedLinear> padUnevenHeads(Graph &g, const PartitionOptions &opts);
/// The padding of Linear `node` in `plan`, or null (plan.json, --report).
const PaddedLinear *paddedOf(const Plan &plan, const Node *node);

/// Recognises the Linear layers of `g` (in topological order).
std::vector<LinearInfo> findLinears(const Graph &g);
/// Chooses a strategy per Linear; fails on a dimension that tp does not
/// divide, naming the node and the tp values that work.
llvm::Error planStrategies(Graph &g, std::vector<LinearInfo> &linears,
                           const PartitionOptions &opts);
/// Rewrites each row-parallel Gemm with a bias C into Gemm (no C) followed by
/// Add(beta*C), so the bias is added once after the reduction.
llvm::Error splitRowGemmBias(Graph &g, std::vector<LinearInfo> &linears);
/// Recognises embedding lookups and chooses vocab-parallel (tp divides V
/// and the table has at least --replicate-below bytes) or replicated.
std::vector<EmbeddingInfo> findEmbeddings(const Graph &g, const PartitionOptions &opts);
/// Rewrites each vocab-parallel Gather: rank k holds rows [kV/N, (k+1)V/N),
/// looks up ids shifted into its range with out-of-range ids masked to zero,
/// giving a partial sum P (the AllReduce comes from the redistributions).
llvm::Error rewriteVocabParallel(Graph &g, std::vector<EmbeddingInfo> &embeddings,
                                 RewriteState &state);
/// A tentative propagation used by the planner: `group` (Linears reading the
/// same activation, e.g. Q, K and V) is taken as column-parallel; an
/// undecided Linear whose activation arrives sharded on K is taken as its row
/// partner. A sharded value derived from the group that would have to be
/// gathered, or reaches a graph output, is a violation.
struct DryRun {
  llvm::SmallVector<const Node *, 4> group;
  llvm::SmallVector<const Node *, 4> rows;
  std::string violation; // empty: the group and its rows need no gather
  /// The first run-time read of a local size where the reader stays whole:
  /// unlike a needed gather, no redistribution fixes it.
  std::string localRead;
  /// The first head-wise blocked or merged value (S(d)xk, S(d)/n) that a
  /// node or a graph output needs otherwise: no collective moves those.
  std::string ungatherable;
};

/// Assigns a placement to every value and records what each node needs.
/// With `dry`, a tentative propagation for the planner (see DryRun).
llvm::Error propagatePlacements(Graph &g, const std::vector<LinearInfo> &linears,
                                const PartitionOptions &opts, const RewriteState &state,
                                llvm::DenseMap<const Node *, NodePlacements> &out,
                                DryRun *dry = nullptr);
/// Builds the plan: nodes with redistributions inserted, constants named.
llvm::Expected<Plan> lower(Graph &g, std::vector<LinearInfo> linears,
                           std::vector<EmbeddingInfo> embeddings,
                           const llvm::DenseMap<const Node *, NodePlacements> &placements,
                           const RewriteState &state, const PartitionOptions &opts);

/// All of the above.
llvm::Expected<Plan> partition(Graph &g, const PartitionOptions &opts);

/// Rank `rank`'s ONNX model, initializers inline.
llvm::Expected<onnx::ModelProto> materializeRank(const Plan &plan, const Graph &g, int rank);
/// ONNX checker and shape inference on each rank model; same collective
/// sequence on every rank.
llvm::Error verifyRanks(const std::vector<onnx::ModelProto> &ranks);

/// One line per node with each value's placement (for FileCheck).
void printAnnotated(const Plan &plan, const Graph &g, llvm::raw_ostream &os);

/// Slices `t` (raw data) along `axis` into `parts` equal pieces and returns
/// piece `index`. With `blocks` > 1 the axis is first cut into that many
/// equal blocks and the piece is the concatenation of each block's `index`-th
/// slice (head-wise slicing of a fused Q|K|V weight). The caller checks
/// divisibility.
onnx::TensorProto sliceTensor(const onnx::TensorProto &t, int axis, int index, int parts,
                              int blocks = 1);

/// "1, 2, 4, 8" (at most `limit` values, then "...").
std::string divisorsList(int64_t n, int limit = 12);

} // namespace qn
