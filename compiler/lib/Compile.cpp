//===- Compile.cpp - import, partition, verify, write ---------------------===//
//
// qn-compile's work after its command line (tools/qn-compile.cpp owns the
// flags): compileModel, driven by CompileOptions.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Compile.h"

#include "qn/compiler/Export.h"
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"

#include "llvm/Support/FormatVariadic.h"

#include <chrono>

namespace qn {

llvm::Error compileModel(const CompileOptions &opts, llvm::raw_ostream &out) {
  const int tp = opts.partition.tp;
  auto progress = [&](const llvm::Twine &msg) {
    if (opts.progress && opts.emit == CompileEmit::Plan)
      opts.progress(msg);
  };
  auto start = std::chrono::steady_clock::now();
  auto graph = importModel(opts.modelPath);
  if (!graph)
    return graph.takeError();
  Graph &g = **graph;
  progress(llvm::formatv("read {0}: {1} nodes, {2} initializers", opts.modelPath, g.nodes.size(),
                         g.model.graph().initializer_size()));
  auto plan = partition(g, opts.partition);
  if (!plan)
    return fail(opts.modelPath + ": " + llvm::toString(plan.takeError()));
  if (opts.emit == CompileEmit::Annotated) {
    printAnnotated(*plan, g, out);
    return llvm::Error::success();
  }
  int cols = 0, rows = 0, reps = 0;
  for (const LinearInfo &li : plan->linears)
    (li.strategy == LinearStrategy::Column ? cols
     : li.strategy == LinearStrategy::Row  ? rows
                                           : reps)++;
  int vocab = 0;
  for (const EmbeddingInfo &e : plan->embeddings)
    vocab += e.vocabParallel;
  if (!plan->embeddings.empty())
    progress(llvm::formatv("{0} embedding lookups: {1} vocab-parallel, {2} replicated",
                           plan->embeddings.size(), vocab, plan->embeddings.size() - vocab));
  progress(llvm::formatv("{0} Linear layers: {1} column-parallel, {2} row-parallel, {3} replicated; "
                         "collectives: {4} AllReduce, {5} AllGather, {6} ReduceScatter",
                         plan->linears.size(), cols, rows, reps,
                         plan->collectiveCounts["AllReduce"], plan->collectiveCounts["AllGather"],
                         plan->collectiveCounts["ReduceScatter"]));
  auto summary = writePlanDirectory(*plan, g, opts.outDir);
  if (!summary)
    return summary.takeError();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int k = 0; k < tp; ++k)
    progress(llvm::formatv("rank {0}: {1} parameter bytes ({2:P1} of the model)", k,
                           summary->rankParamBytes[k],
                           summary->modelParamBytes
                               ? double(summary->rankParamBytes[k]) / summary->modelParamBytes
                               : 0.0));
  progress(llvm::formatv("wrote {0}/ (tp {1}, plan {2}) in {3:F2} s", opts.outDir, tp,
                         summary->planId.substr(0, 12), secs));
  if (opts.report) {
    out << llvm::formatv("report: tp {0}, model parameters {1} bytes, replicated on every rank "
                         "{2} bytes\n",
                         tp, summary->modelParamBytes, summary->replicatedParamBytes);
    for (int k = 0; k < tp; ++k) {
      double share = summary->modelParamBytes
                         ? double(summary->rankParamBytes[k]) / summary->modelParamBytes
                         : 0.0;
      double ideal = tp ? double(summary->modelParamBytes - summary->replicatedParamBytes) / tp +
                              summary->replicatedParamBytes
                        : 0.0;
      out << llvm::formatv("  rank {0}: {1} parameter bytes, {2:P1} of the model "
                           "(model/N + replicated = {3:F0})\n",
                           k, summary->rankParamBytes[k], share, ideal);
    }
    for (const auto &kv : plan->collectiveStats)
      out << llvm::formatv("  {0}: {1} per run, {2:F0} bytes sent per token per rank\n", kv.first,
                           kv.second.count, kv.second.bytesPerTokenPerRank);
  }
  return llvm::Error::success();
}

} // namespace qn
