//===- qn-compile.cpp - qn-compile's command line -------------------------===//
//
// The flags, the help text and the messages of qn-compile; the work is
// qn::compileModel (compiler/include/qn/compiler/Compile.h).
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Compile.h"
#include "qn/compiler/Train.h"

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

cl::OptionCategory trainCategory("qn-compile training options (with --train)");
cl::opt<bool> train("train",
                    cl::desc("Compile a training step: forward, softmax cross-entropy loss on the "
                             "logits (adds an int64 input 'labels'), backward and optimizer update; "
                             "run it with qn-run --train"),
                    cl::cat(category));
cl::opt<std::string> loss("loss", cl::desc("Loss (default softmax-cross-entropy, the only one)"),
                          cl::init("softmax-cross-entropy"), cl::cat(trainCategory));
cl::opt<std::string> logits("logits",
                            cl::desc("The graph output holding the logits (default: the only one)"),
                            cl::value_desc("NAME"), cl::cat(trainCategory));
cl::opt<int64_t> ignoreIndex("ignore-index",
                             cl::desc("Labels equal to this do not count (default -100)"),
                             cl::init(-100), cl::cat(trainCategory));
cl::opt<qn::OptimizerKind> optimizer(
    "optimizer", cl::desc("Optimizer, as torch.optim"), cl::init(qn::OptimizerKind::Sgd),
    cl::values(clEnumValN(qn::OptimizerKind::Sgd, "sgd", "SGD (default)"),
               clEnumValN(qn::OptimizerKind::AdamW, "adamw", "AdamW")),
    cl::cat(trainCategory));
cl::opt<double> lr("lr", cl::desc("Learning rate (default 1e-3)"), cl::init(1e-3),
                   cl::cat(trainCategory));
cl::opt<double> momentum("momentum", cl::desc("SGD momentum (default 0)"), cl::init(0),
                         cl::cat(trainCategory));
cl::opt<double> weightDecay("weight-decay",
                            cl::desc("Weight decay (default: 0 for SGD, 0.01 for AdamW)"),
                            cl::init(std::numeric_limits<double>::quiet_NaN()),
                            cl::cat(trainCategory));
cl::opt<double> beta1("beta1", cl::desc("AdamW beta1 (default 0.9)"), cl::init(0.9),
                      cl::cat(trainCategory));
cl::opt<double> beta2("beta2", cl::desc("AdamW beta2 (default 0.999)"), cl::init(0.999),
                      cl::cat(trainCategory));
cl::opt<double> eps("eps", cl::desc("AdamW eps (default 1e-8)"), cl::init(1e-8),
                    cl::cat(trainCategory));
cl::opt<qn::LrSchedule> lrSchedule(
    "lr-schedule", cl::desc("Learning-rate schedule, applied by qn-run per step"),
    cl::init(qn::LrSchedule::Constant),
    cl::values(clEnumValN(qn::LrSchedule::Constant, "constant", "constant (default)"),
               clEnumValN(qn::LrSchedule::Cosine, "cosine",
                          "cosine decay to 0 over the run's steps, after the warm-up")),
    cl::cat(trainCategory));
cl::opt<int64_t> warmupSteps("warmup-steps",
                             cl::desc("Linear warm-up from 0 over this many steps (default 0)"),
                             cl::init(0), cl::cat(trainCategory));
cl::opt<double> clipGradNorm("clip-grad-norm",
                             cl::desc("Clip the global gradient norm to this (default: off)"),
                             cl::init(0), cl::cat(trainCategory));
cl::list<std::string> freeze("freeze", cl::desc("Initializers not to train"),
                             cl::value_desc("NAME,..."), cl::CommaSeparated,
                             cl::cat(trainCategory));

int error(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "qn-compile") << msg << "\n";
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions({&category, &trainCategory});
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
  bool trainFlagGiven = false;
  for (cl::Option *o : {static_cast<cl::Option *>(&loss), static_cast<cl::Option *>(&logits),
                        static_cast<cl::Option *>(&ignoreIndex), static_cast<cl::Option *>(&optimizer),
                        static_cast<cl::Option *>(&lr), static_cast<cl::Option *>(&momentum),
                        static_cast<cl::Option *>(&weightDecay), static_cast<cl::Option *>(&beta1),
                        static_cast<cl::Option *>(&beta2), static_cast<cl::Option *>(&eps),
                        static_cast<cl::Option *>(&lrSchedule),
                        static_cast<cl::Option *>(&warmupSteps),
                        static_cast<cl::Option *>(&clipGradNorm)})
    if (o->getNumOccurrences())
      trainFlagGiven = true;
  if (freeze.getNumOccurrences())
    trainFlagGiven = true;
  if (trainFlagGiven && !train)
    return error("training options (--optimizer, --lr, ...) need --train");
  if (train) {
    if (loss != "softmax-cross-entropy")
      return error("--loss '" + loss + "': the only loss is softmax-cross-entropy");
    if (!(lr > 0))
      return error("--lr must be positive");
    if (momentum < 0 || warmupSteps < 0 || clipGradNorm < 0 || eps <= 0 || beta1 < 0 ||
        beta1 >= 1 || beta2 < 0 || beta2 >= 1)
      return error("--momentum, --warmup-steps and --clip-grad-norm must not be negative, --eps "
                   "must be positive and --beta1/--beta2 in [0, 1)");
    if (!keepLogitsSharded.getNumOccurrences() && outputPlacements.empty()) {
      qn::TrainOptions t;
      t.logits = logits;
      t.ignoreIndex = ignoreIndex;
      t.optimizer = optimizer;
      t.lr = lr;
      t.momentum = momentum;
      t.weightDecay = weightDecay;
      t.beta1 = beta1;
      t.beta2 = beta2;
      t.eps = eps;
      t.schedule = lrSchedule;
      t.warmupSteps = warmupSteps;
      t.clipGradNorm = clipGradNorm;
      t.freeze.assign(freeze.begin(), freeze.end());
      opts.train = t;
    } else {
      return error("--train takes neither --keep-logits-sharded nor --output-placement");
    }
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
