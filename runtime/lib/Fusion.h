//===- Fusion.h - Chains of elementwise nodes run as one kernel -*- C++ -*-===//
//
// Internal to the runtime. The CUDA executor runs each group found here as one
// fused kernel (runtime/lib/cuda/CudaFused.cu): intermediates live in
// registers, never in memory. Host code, tested without a GPU.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <functional>
#include <vector>

#include "FuseProgram.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/Tensor.h"

namespace qn::rt {

struct FusionGroup {
  /// Member steps in schedule order; the last produces `output`. Every other
  /// member's output is read only by later members (and is no graph output).
  std::vector<size_t> steps;
  /// External inputs (value ids) in program slot order. An executor that runs
  /// the group at its last member's place must keep them until then (their
  /// schedule release may come earlier).
  std::vector<int> inputs;
  int output = -1;
  /// Values produced by all members but the last (never materialised when
  /// fused; released after the group when it falls back to single nodes).
  std::vector<int> intermediates;
  FuseProgram program;
};

/// The groups of two or more fusable nodes (Add, Sub, Mul, Div, Pow, Max and
/// Min of two inputs; Relu, Neg, Abs, Tanh, Sigmoid, Erf, Exp, Log, Sqrt,
/// Reciprocal, Sin, Cos, Gelu) chained through values that have no other
/// reader. `scalarConstant(v, x)` says whether value v is a floating scalar
/// constant, and its value (folded into the program as an immediate).
std::vector<FusionGroup>
findFusionGroups(const Schedule &sched, const std::function<bool(int, float &)> &scalarConstant);

/// Per step, the values to release after it when every group runs at its last
/// member's place (members' reads count from there): constants and graph
/// outputs are never released.
std::vector<std::vector<int>> releaseListsWithGroups(const Schedule &sched,
                                                     const std::vector<FusionGroup> &groups);
/// The same when group gi runs at step runAt[gi] (its last member, or a later
/// step that runs it: a LayerNormalization fused with it, findNormFusions).
std::vector<std::vector<int>> releaseListsWithGroups(const Schedule &sched,
                                                     const std::vector<FusionGroup> &groups,
                                                     const std::vector<size_t> &runAt);

/// A LayerNormalization whose X is a group's output, run as one kernel with
/// the group (the group's program computes each row, which is normalised in
/// registers): the group then runs at the LayerNormalization's step.
struct NormFusion {
  size_t group = 0; // index into the groups
  size_t step = 0;  // the LayerNormalization's step (after the group's last member)
  /// The group's output has other readers or is a graph output: the fused
  /// kernel writes it too (otherwise it is never materialised).
  bool writeX = false;
};
/// The LayerNormalization steps (ONNX domain, without Mean/InvStdDev outputs)
/// whose input 0 is a group's output that no step between the group's last
/// member and the LayerNormalization reads (so nothing there, Scale and B
/// included, depends on the group) and that is not their Scale or B. At most
/// one per group (the first), ordered by step.
std::vector<NormFusion> findNormFusions(const Schedule &sched,
                                        const std::vector<FusionGroup> &groups);

/// Output shape of a group for its inputs' shapes (NumPy broadcasting), false
/// when they do not broadcast or the rank exceeds 8.
bool fusedShape(const std::vector<std::vector<int64_t>> &inputShapes, std::vector<int64_t> &out);

/// Reference evaluation on the host (float32 inputs in slot order), by the
/// same indexing and evalFused as the GPU kernel: the tests compare it with
/// the member nodes run one by one on the CPU.
Tensor evalFusionGroupOnHost(const FusionGroup &g, const std::vector<Tensor> &inputs);

} // namespace qn::rt
