//===- Train.h - Training plans: autodiff, loss, optimizer ------*- C++ -*-===//
//
// qn-compile --train turns a forward model into per-rank training plans
// (Train.cpp): the forward graph is planned as for inference (the Linear
// strategies), differentiated on the unsharded graph (grad/ rules), given a
// loss and an optimizer update, and the whole step is partitioned with the
// same placement rules. Each parameter and its optimizer state keep the
// placement the forward plan gave the parameter; the backward collectives
// are whatever redistributions the rules ask for.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "qn/compiler/Partition.h"

namespace qn {

enum class OptimizerKind { Sgd, AdamW };
enum class LrSchedule { Constant, Cosine };

struct TrainOptions {
  /// The logits: a graph output ([B, C] or [B, T, C]); empty = the only one.
  std::string logits;
  int64_t ignoreIndex = -100;
  OptimizerKind optimizer = OptimizerKind::Sgd;
  /// As torch.optim: SGD lr 1e-3, momentum 0, weight decay 0; AdamW lr
  /// 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2 (NaN: default).
  double lr = 1e-3;
  double momentum = 0;
  double weightDecay = std::numeric_limits<double>::quiet_NaN();
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  LrSchedule schedule = LrSchedule::Constant;
  int64_t warmupSteps = 0;
  /// Clip the global gradient norm to this (0: off).
  double clipGradNorm = 0;
  /// Initializers kept fixed.
  std::vector<std::string> freeze;
};

/// A piece of mutable state of a training plan: a parameter or an optimizer
/// moment, the graph output that holds its value after a step, and the
/// source parameter it belongs to.
struct TrainState {
  std::string name, update, param;
  std::string kind; // "param", "momentum", "exp_avg", "exp_avg_sq"
  /// The source initializer a parameter came from and the factor it was
  /// scaled by (a row-parallel Gemm's bias is beta * C).
  std::string source;
  double sourceScale = 1.0;
  /// A vocabulary padded to a multiple of tp: the source's rows (the first
  /// ones of the parameter; the padding rows stay zero). -1 when not padded.
  int64_t sourceRows = -1;
};

/// What the runtime needs of a training plan (plan.json "training").
struct TrainingInfo {
  std::string loss, labels, logits, lrInput, stepInput;
  /// Output: how many samples' target logit is the largest (accuracy).
  std::string correct;
  int64_t classes = 0, ignoreIndex = -100;
  /// The loss reduces the class axis in this many groups (tp where the
  /// logits are vocab-sharded, else 1).
  int64_t classGroups = 1;
  /// Embedding lookups made vocab-parallel (node names).
  std::vector<std::string> vocabParallel;
  TrainOptions options;
  std::vector<TrainState> state;
  /// Source initializers that are the transpose of a trained parameter (a
  /// tied weight the exporter folded into a copy): (copy, parameter).
  std::vector<std::pair<std::string, std::string>> ties;
};

/// The training step of `g` partitioned over popts.tp ranks. The training
/// graph (which the plan's nodes refer to) is returned in `trainGraph`.
llvm::Expected<Plan> partitionTraining(Graph &g, const PartitionOptions &popts,
                                       const TrainOptions &topts,
                                       std::unique_ptr<Graph> &trainGraph);

} // namespace qn
