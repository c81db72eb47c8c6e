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

#include "qn/ops/OpTable.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <chrono>

namespace qn {

/// Every node's op must have a kernel on the chosen device (the op table).
/// The CUDA executor runs CPU-only ops that make values from shapes
/// (OK_Source: Range, ConstantOfShape) on the host.
static llvm::Error checkDevice(const Graph &g, CompileDevice device, llvm::StringRef path) {
  const char *name = device == CompileDevice::Cpu ? "cpu" : "cuda";
  for (const auto &n : g.nodes) {
    const ops::OpInfo *op = ops::findOp(n->domain(), n->opType());
    bool runs = op && (device == CompileDevice::Cpu
                           ? op->runsOn(ops::OV_Cpu)
                           : op->runsOn(ops::OV_Cuda) ||
                                 (op->kind == ops::OK_Source && op->runsOn(ops::OV_Cpu)));
    if (runs)
      continue;
    std::string opName = (n->domain().empty() ? "" : n->domain() + ".") + n->opType();
    std::string other;
    if (op && device == CompileDevice::Cpu && op->runsOn(ops::OV_Cuda))
      other = " (the cuda device has one: --device cuda)";
    else if (op && device == CompileDevice::Cuda && op->runsOn(ops::OV_Cpu))
      other = " (the cpu device has one: --device cpu)";
    return fail(path + ": node '" + n->label() + "': the " + name + " device has no kernel for " +
                opName + other + (op ? "" : "; QuintNet does not know this op yet"));
  }
  return llvm::Error::success();
}

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
  if (auto err = checkDevice(g, opts.device, opts.modelPath))
    return err;
  std::unique_ptr<Graph> trainGraph;
  auto plan = opts.train ? partitionTraining(g, opts.partition, *opts.train, trainGraph)
                         : partition(g, opts.partition);
  if (!plan)
    return fail(opts.modelPath + ": " + llvm::toString(plan.takeError()));
  const Graph &pg = trainGraph ? *trainGraph : g;
  if (plan->training)
    progress(llvm::formatv("training step: {0} parameter tensors, loss '{1}', labels input '{2}'",
                           llvm::count_if(plan->training->state,
                                          [](const TrainState &s) { return s.kind == "param"; }),
                           plan->training->loss, plan->training->labels));
  if (opts.warn)
    for (const std::string &w : planWarnings(*plan, opts.partition))
      opts.warn(w);
  if (opts.emit == CompileEmit::Annotated) {
    printAnnotated(*plan, pg, out);
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
  auto summary = writePlanDirectory(*plan, pg, opts.outDir);
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
    for (const LinearInfo &li : plan->linears) {
      const PaddedLinear *p = paddedOf(*plan, li.node);
      std::string n = p ? llvm::formatv("{0} padded to {1}", p->N, p->paddedN).str()
                        : std::to_string(li.N);
      out << llvm::formatv("  linear '{0}' ({1}, K {2}, N {3}): {4}{5}{6}\n", li.node->label(),
                           li.node->opType(), li.K, n, strategyName(li.strategy),
                           li.fusedParts > 1 ? llvm::formatv(", {0} fused parts", li.fusedParts).str()
                                             : std::string(),
                           li.pairedWith.empty() ? std::string()
                                                 : ", paired with '" + li.pairedWith + "'");
      if (!li.keptWhole.empty())
        out << "    kept whole: " << li.keptWhole << "\n";
    }
    for (const EmbeddingInfo &e : plan->embeddings)
      out << llvm::formatv("  embedding '{0}' (V {1}, H {2}): {3}\n", e.node->label(), e.V, e.H,
                           !e.vocabParallel ? std::string("replicated")
                           : e.paddedV != e.V
                               ? llvm::formatv("vocab-parallel, padded to {0} rows", e.paddedV).str()
                               : std::string("vocab-parallel"));
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
