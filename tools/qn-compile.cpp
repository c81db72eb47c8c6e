//===- qn-compile.cpp - qn-compile's command line -------------------------===//
//
// The flags, the help text and the messages of qn-compile; the work is
// qn::compileModel (compiler/include/qn/compiler/Compile.h).
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Compile.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

namespace cl = llvm::cl;

namespace {
cl::OptionCategory category("qn-compile options");
cl::opt<std::string> modelPath(cl::Positional, cl::Required, cl::desc("<model.onnx|model.onnxtext>"),
                               cl::cat(category));
cl::opt<int> tp("tp", cl::Required, cl::desc("Tensor-parallel size: the number of ranks"),
                cl::value_desc("N"), cl::cat(category));
cl::opt<std::string> outDir("o", cl::desc("Output plan folder (written atomically)"),
                            cl::value_desc("DIR"), cl::cat(category));
cl::opt<qn::CompileEmit> emit(
    "emit", cl::desc("What to produce"), cl::init(qn::CompileEmit::Plan),
    cl::values(clEnumValN(qn::CompileEmit::Plan, "plan", "the plan folder (default; needs -o)"),
               clEnumValN(qn::CompileEmit::Annotated, "annotated",
                          "print the partitioned graph with every value's "
                          "placement and the inserted collectives")),
    cl::cat(category));
cl::opt<qn::CompileDevice> device(
    "device", cl::desc("The device the plan will run on: every op of the model must have a kernel "
                       "there"),
    cl::init(qn::CompileDevice::Cpu),
    cl::values(clEnumValN(qn::CompileDevice::Cpu, "cpu", "the CPU device (default)"),
               clEnumValN(qn::CompileDevice::Cuda, "cuda", "the CUDA device")),
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
cl::list<std::string> outputPlacements(
    "output-placement",
    cl::desc("Require graph output NAME to have PLACEMENT in the rank plans: R (the default) or "
             "S(d), its axis d split across the ranks (qn-run then writes one NAME.rankK.npy per "
             "rank). Repeatable"),
    cl::value_desc("NAME=PLACEMENT"), cl::cat(category));
cl::opt<bool> report("report",
                     cl::desc("Print each Linear's and embedding's strategy, per rank the parameter bytes "
                              "and their share of the model, and the collectives by kind with "
                              "the bytes each rank sends per token (also in plan.json)"),
                     cl::cat(category));

int error(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "qn-compile") << msg << "\n";
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "QuintNet compiler: partitions an ONNX model for tensor-parallel execution on N ranks.\n\n"
      "  qn-compile model.onnx --tp 2 -o plan/\n"
      "  qn-compile model.onnxtext --tp 4 --emit=annotated\n");
  if (tp < 1)
    return error("--tp must be at least 1 (got " + llvm::Twine(tp) + ")");
  if (emit == qn::CompileEmit::Plan && outDir.empty())
    return error("missing output folder: pass -o DIR (or --emit=annotated to print the plan)");
  qn::CompileOptions opts;
  opts.modelPath = modelPath;
  opts.partition.tp = tp;
  opts.partition.replicateBelowBytes = replicateBelow;
  opts.partition.keepLogitsSharded = keepLogitsSharded;
  for (const std::string &spec : outputPlacements) {
    size_t eq = spec.rfind('=');
    qn::Placement p;
    if (eq == std::string::npos || eq == 0 || !qn::Placement::parse(spec.substr(eq + 1), p))
      return error("--output-placement '" + spec + "': expected NAME=R or NAME=S(d)");
    opts.partition.outputPlacements[spec.substr(0, eq)] = p;
  }
  opts.emit = emit;
  opts.device = device;
  opts.outDir = outDir;
  opts.report = report;
  if (!quiet)
    opts.progress = [](const llvm::Twine &msg) { llvm::errs() << "qn-compile: " << msg << "\n"; };
  opts.warn = [](const std::string &msg) { llvm::errs() << "qn-compile: warning: " << msg << "\n"; };
  if (llvm::Error e = qn::compileModel(opts, llvm::outs()))
    return error(llvm::toString(std::move(e)));
  return 0;
}
