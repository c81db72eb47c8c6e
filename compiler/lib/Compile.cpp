//===- Driver.cpp - qn-compile ---------------------------------------------===//
#include "qn/compiler/Driver.h"

#include "qn/compiler/Export.h"
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

namespace qn {
namespace cl = llvm::cl;

namespace {
cl::OptionCategory category("qn-compile options");
cl::opt<std::string> modelPath(cl::Positional, cl::Required, cl::desc("<model.onnx|model.onnxtext>"),
                               cl::cat(category));
cl::opt<int> tp("tp", cl::Required, cl::desc("Tensor-parallel size: the number of ranks"),
                cl::value_desc("N"), cl::cat(category));
cl::opt<std::string> outDir("o", cl::desc("Output plan folder (written atomically)"),
                            cl::value_desc("DIR"), cl::cat(category));
enum class Emit { Plan, Annotated };
cl::opt<Emit> emit("emit", cl::desc("What to produce"), cl::init(Emit::Plan),
                   cl::values(clEnumValN(Emit::Plan, "plan", "the plan folder (default; needs -o)"),
                              clEnumValN(Emit::Annotated, "annotated",
                                         "print the partitioned graph with every value's "
                                         "placement and the inserted collectives")),
                   cl::cat(category));
cl::opt<int64_t> replicateBelow(
    "replicate-below",
    cl::desc("A Linear outside a column/row pair is sharded only if its weight has at least "
             "this many bytes (default 262144)"),
    cl::init(256 * 1024), cl::value_desc("BYTES"), cl::cat(category));
cl::opt<bool> quiet("quiet", cl::desc("No progress messages"), cl::cat(category));
cl::opt<bool> keepLogitsSharded(
    "keep-logits-sharded",
    cl::desc("Leave graph outputs that are produced sharded (the logits of a vocab-parallel LM "
             "head) split across the ranks instead of gathering them; qn-run then writes one "
             "NAME.rankK.npy per rank"),
    cl::cat(category));
cl::opt<bool> report("report",
                     cl::desc("Print, per rank, the parameter bytes and their share of the "
                              "model, and the collectives by kind with the bytes each rank "
                              "sends per token (also in plan.json)"),
                     cl::cat(category));

int error(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "qn-compile") << msg << "\n";
  return 1;
}
} // namespace

int compilerMain(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "QuintNet compiler: partitions an ONNX model for tensor-parallel execution on N ranks.\n\n"
      "  qn-compile model.onnx --tp 2 -o plan/\n"
      "  qn-compile model.onnxtext --tp 4 --emit=annotated\n");
  if (tp < 1)
    return error("--tp must be at least 1 (got " + llvm::Twine(tp) + ")");
  if (emit == Emit::Plan && outDir.empty())
    return error("missing output folder: pass -o DIR (or --emit=annotated to print the plan)");
  auto progress = [&](const llvm::Twine &msg) {
    if (!quiet && emit == Emit::Plan)
      llvm::errs() << "qn-compile: " << msg << "\n";
  };
  auto start = std::chrono::steady_clock::now();
  auto graph = importModel(modelPath);
  if (!graph)
    return error(llvm::toString(graph.takeError()));
  Graph &g = **graph;
  progress(llvm::formatv("read {0}: {1} nodes, {2} initializers", modelPath, g.nodes.size(),
                         g.model.graph().initializer_size()));
  PartitionOptions opts;
  opts.tp = tp;
  opts.replicateBelowBytes = replicateBelow;
  opts.keepLogitsSharded = keepLogitsSharded;
  auto plan = partition(g, opts);
  if (!plan)
    return error(modelPath + ": " + llvm::toString(plan.takeError()));
  if (emit == Emit::Annotated) {
    printAnnotated(*plan, g, llvm::outs());
    return 0;
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
  auto summary = writePlanDirectory(*plan, g, outDir);
  if (!summary)
    return error(llvm::toString(summary.takeError()));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int k = 0; k < tp; ++k)
    progress(llvm::formatv("rank {0}: {1} parameter bytes ({2:P1} of the model)", k,
                           summary->rankParamBytes[k],
                           summary->modelParamBytes
                               ? double(summary->rankParamBytes[k]) / summary->modelParamBytes
                               : 0.0));
  progress(llvm::formatv("wrote {0}/ (tp {1}, plan {2}) in {3:F2} s", outDir, tp,
                         summary->planId.substr(0, 12), secs));
  if (report) {
    auto &os = llvm::outs();
    os << llvm::formatv("report: tp {0}, model parameters {1} bytes, replicated on every rank "
                        "{2} bytes\n",
                        tp, summary->modelParamBytes, summary->replicatedParamBytes);
    for (int k = 0; k < tp; ++k) {
      double share = summary->modelParamBytes
                         ? double(summary->rankParamBytes[k]) / summary->modelParamBytes
                         : 0.0;
      double ideal = tp ? double(summary->modelParamBytes - summary->replicatedParamBytes) / tp +
                              summary->replicatedParamBytes
                        : 0.0;
      os << llvm::formatv("  rank {0}: {1} parameter bytes, {2:P1} of the model "
                          "(model/N + replicated = {3:F0})\n",
                          k, summary->rankParamBytes[k], share, ideal);
    }
    for (const auto &kv : plan->collectiveStats)
      os << llvm::formatv("  {0}: {1} per run, {2:F0} bytes sent per token per rank\n", kv.first,
                          kv.second.count, kv.second.bytesPerTokenPerRank);
  }
  return 0;
}

} // namespace qn
