//===- qn-run.cpp - qn-run's command line ---------------------------------===//
//
// The flags, the help text and the checks of qn-run. Each rank's work is
// qn::rt::RankRunner (runtime/include/qn/runtime/RankRunner.h); spawning the
// rank processes is Launcher.cpp.
//
//===----------------------------------------------------------------------===//
#include "Launcher.h"

#include "qn/runtime/Cuda.h"
#include "qn/runtime/Plan.h"
#include "qn/runtime/RankRunner.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <csignal>
#include <cstdlib>

namespace cl = llvm::cl;
using qn::rt::BusyPoll;
using qn::rt::CommEngine;
using qn::rt::RunDevice;

namespace {

cl::OptionCategory category("qn-run options");
cl::opt<std::string> planDir(cl::Positional, cl::desc("<plan folder>"),
                             cl::cat(category));
cl::opt<int> nproc("nproc",
                   cl::desc("Ranks to launch on this host (default: the plan's tp). Without it, "
                            "and with RANK set, run as that one rank (torchrun convention: "
                            "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)"),
                   cl::init(0), cl::value_desc("N"), cl::cat(category));
cl::list<std::string> inputArgs("input", cl::desc("Bind a graph input to a .npy file"),
                                cl::value_desc("NAME=FILE.npy"), cl::cat(category));
cl::opt<std::string> outputDir("output-dir",
                               cl::desc("Folder for the outputs, one NAME.npy each (rank 0 "
                                        "writes them; default: qn-out)"),
                               cl::init("qn-out"), cl::value_desc("DIR"), cl::cat(category));
cl::opt<RunDevice> device("device", cl::desc("Device the ranks run on"), cl::init(RunDevice::Cpu),
                          cl::values(clEnumValN(RunDevice::Cpu, "cpu",
                                                "CPU kernels, a real BLAS (default)"),
                                     clEnumValN(RunDevice::Cuda, "cuda",
                                                "one GPU per rank (cuBLAS, own kernels)")),
                          cl::cat(category));
cl::opt<CommEngine> commEngine(
    "comm", cl::desc("How ranks communicate"), cl::init(CommEngine::Auto),
    cl::values(clEnumValN(CommEngine::Auto, "auto",
                          "gloo on cpu; on cuda nccl when this host has a GPU per rank, "
                          "else local (default)"),
               clEnumValN(CommEngine::Gloo, "gloo", "one process per rank, Gloo over TCP (cpu)"),
               clEnumValN(CommEngine::Nccl, "nccl", "one process per GPU, NCCL (cuda)"),
               clEnumValN(CommEngine::Local, "local",
                          "every rank a thread of this process (on cuda: all on GPU 0)")),
    cl::cat(category));
cl::opt<bool> allowTf32("allow-tf32",
                        cl::desc("Let float32 GEMMs use TF32 tensor cores (cuda; faster, "
                                 "about 1e-3 relative error)"),
                        cl::cat(category));
cl::opt<bool> noGraphs("no-cuda-graphs",
                       cl::desc("Run every kernel eagerly instead of replaying CUDA graphs"),
                       cl::cat(category));
cl::opt<bool> noFusion("no-fusion",
                       cl::desc("Run every elementwise node as its own kernel (cuda)"),
                       cl::cat(category));
cl::opt<bool> listDevices("list-devices",
                          cl::desc("Print the CUDA GPUs this process sees (cuda:K NAME), one per "
                                   "line, and exit"),
                          cl::cat(category));
cl::opt<int> benchRuns("bench",
                       cl::desc("After the run, time K more runs and print per rank the median "
                                "latency and the time spent in collectives"),
                       cl::init(0), cl::value_desc("K"), cl::cat(category));
cl::opt<int> profileRuns(
    "profile",
    cl::desc("After the run, time K more runs node by node (cpu) and print, for every rank, "
             "the time per op kind, the ten slowest nodes and the time in collectives split "
             "into transfer and waiting for the slowest rank"),
    cl::init(0), cl::value_desc("K"), cl::cat(category));
cl::opt<std::string> profileTrace(
    "profile-trace",
    cl::desc("With --profile (10 runs if not given): write every rank's last profiled run as a "
             "Chrome trace (JSON for chrome://tracing or ui.perfetto.dev)"),
    cl::value_desc("FILE.json"), cl::cat(category));
cl::opt<int> threads("threads-per-rank", cl::desc("BLAS threads per rank (default 1)"), cl::init(1),
                     cl::cat(category));
cl::opt<double> timeoutSec("timeout",
                           cl::desc("Seconds to wait for rendezvous and for each collective; "
                                    "with NCCL, for each run's GPU work (default 60)"),
                           cl::init(60), cl::cat(category));
cl::opt<bool> quiet("quiet", cl::desc("No progress messages"), cl::cat(category));
cl::opt<BusyPoll> busyPoll(
    "busy-poll", cl::desc("Whether ranks spin while waiting in a collective"),
    cl::init(BusyPoll::Auto),
    cl::values(clEnumValN(BusyPoll::Auto, "auto",
                          "spin when this host has a CPU for each of its ranks (default)"),
               clEnumValN(BusyPoll::On, "on", "always spin (lowest latency)"),
               clEnumValN(BusyPoll::Off, "off", "sleep until data arrives")),
    cl::cat(category));

cl::OptionCategory trainCategory("qn-run training options (a plan from qn-compile --train)");
cl::opt<bool> train("train",
                    cl::desc("Train: the plan is a training step (qn-compile --train) and each "
                             "--input NAME=FILE names a dataset (.npy, MNIST IDX, optionally .gz; "
                             "axis 0 = samples) for a data input or the labels"),
                    cl::cat(category));
cl::opt<int64_t> batch("batch", cl::desc("Samples per step (default 32)"), cl::init(32),
                       cl::cat(trainCategory));
cl::opt<int64_t> epochs("epochs", cl::desc("Passes over the data"), cl::init(0),
                        cl::cat(trainCategory));
cl::opt<int64_t> steps("steps", cl::desc("Optimizer steps (instead of --epochs)"), cl::init(0),
                       cl::cat(trainCategory));
cl::opt<int64_t> shuffle("shuffle",
                         cl::desc("Shuffle the samples every epoch with this seed (default: "
                                  "file order); every rank draws the same order"),
                         cl::init(-1), cl::value_desc("SEED"), cl::cat(trainCategory));
cl::list<std::string> evalArgs("eval",
                               cl::desc("An evaluation dataset for a data input or the labels, as "
                                        "--input; after every epoch the loss and accuracy on it "
                                        "are printed. Repeatable"),
                               cl::value_desc("NAME=FILE"), cl::cat(trainCategory));
cl::opt<std::string> checkpointDir(
    "checkpoint",
    cl::desc("Write checkpoints here (each rank's parameters and optimizer state, and the "
             "step), every --checkpoint-every steps and after the last"),
    cl::value_desc("DIR"), cl::cat(trainCategory));
cl::opt<int64_t> checkpointEvery("checkpoint-every",
                                 cl::desc("Steps between checkpoints (default: only after the "
                                          "last step)"),
                                 cl::init(0), cl::value_desc("K"), cl::cat(trainCategory));
cl::opt<std::string> resumeDir("resume",
                               cl::desc("Continue from the latest checkpoint in DIR (same plan, "
                                        "--batch and --shuffle); the loss trace continues as "
                                        "if never interrupted"),
                               cl::value_desc("DIR"), cl::cat(trainCategory));
cl::opt<std::string> saveModel("save",
                               cl::desc("After training, write the source model with the trained "
                                        "parameters (unsharded) to this file: ONNX Runtime runs "
                                        "it and qn-compile partitions it at any tp"),
                               cl::value_desc("trained.onnx"), cl::cat(trainCategory));
cl::opt<std::string> lossLog("loss-log", cl::desc("Write step,loss per step to this CSV file"),
                             cl::value_desc("FILE.csv"), cl::cat(trainCategory));

int error(const llvm::Twine &msg) {
  llvm::WithColor::error(llvm::errs(), "qn-run") << msg << "\n";
  return 1;
}

int error(llvm::Error e) { return error(llvm::toString(std::move(e))); }

/// The flags as RunOptions, with the engine already resolved.
qn::rt::RunOptions runOptions(CommEngine comm) {
  qn::rt::RunOptions o;
  o.planDir = planDir;
  o.inputs.assign(inputArgs.begin(), inputArgs.end());
  o.outputDir = outputDir;
  o.device = device;
  o.comm = comm;
  o.allowTf32 = allowTf32;
  o.cudaGraphs = !noGraphs;
  o.fuseElementwise = !noFusion;
  o.benchRuns = benchRuns;
  o.profileRuns = profileTrace.empty() || profileRuns > 0 ? profileRuns : 10;
  o.profileTrace = profileTrace;
  o.threadsPerRank = threads;
  o.timeoutSec = timeoutSec;
  o.quiet = quiet;
  o.busyPoll = busyPoll;
  o.train = train;
  o.batch = batch;
  o.epochs = epochs;
  o.steps = steps;
  o.shuffleSeed = shuffle;
  o.lossLog = lossLog;
  o.saveModel = saveModel;
  o.checkpointDir = checkpointDir;
  o.checkpointEvery = checkpointEvery;
  o.resumeDir = resumeDir;
  o.evalInputs.assign(evalArgs.begin(), evalArgs.end());
  return o;
}

/// This process's arguments for the rank processes: all but --nproc.
std::vector<std::string> rankArguments(int argc, char **argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    llvm::StringRef a(argv[i]);
    if (a.startswith("--nproc") || a.startswith("-nproc")) {
      if (!a.contains('=') && i + 1 < argc)
        ++i; // drop its value too
      continue;
    }
    args.push_back(a.str());
  }
  return args;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // A peer that dies closes its sockets; writing to them must be an error
  // we report (EPIPE), not a silent death by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  cl::HideUnrelatedOptions({&category, &trainCategory});
  cl::ParseCommandLineOptions(
      argc, argv,
      "QuintNet runner: runs a plan written by qn-compile on N ranks.\n\n"
      "  qn-run plan/ --nproc 2 --input x=x.npy --output-dir out/\n"
      "  RANK=1 WORLD_SIZE=2 MASTER_ADDR=host0 MASTER_PORT=29500 qn-run plan/ --input x=x.npy\n");
  if (listDevices) {
    for (int d = 0; d < qn::rt::cudaDeviceCount(); ++d)
      llvm::outs() << "cuda:" << d << " " << qn::rt::cudaDeviceName(d) << "\n";
    return 0;
  }
  if (planDir.empty())
    return error("no plan folder given (qn-run PLAN ...; see --help)");
  if (device == RunDevice::Cuda && qn::rt::cudaDeviceCount() == 0)
    return error("--device cuda: " + qn::rt::cudaUnavailableReason());
  CommEngine comm = commEngine;
  if (comm == CommEngine::Auto && device == RunDevice::Cpu)
    comm = CommEngine::Gloo;
  if (comm == CommEngine::Nccl && device != RunDevice::Cuda)
    return error("--comm nccl needs --device cuda (on cpu use gloo or local)");
  if (comm == CommEngine::Gloo && device != RunDevice::Cpu)
    return error("--comm gloo runs CPU ranks only (with --device cuda use nccl or local)");
  if (threads < 1)
    return error("--threads-per-rank must be at least 1");
  if (benchRuns < 0 || profileRuns < 0)
    return error(llvm::Twine(benchRuns < 0 ? "--bench" : "--profile") +
                 " must be a number of runs, 0 or more");
  if ((profileRuns > 0 || !profileTrace.empty()) && device == RunDevice::Cuda)
    return error("--profile times nodes on the CPU device only (on cuda, --bench gives the run "
                 "and collective times)");
  if (timeoutSec <= 0)
    return error("--timeout must be positive");
  if (!train && (batch.getNumOccurrences() || epochs.getNumOccurrences() ||
                 steps.getNumOccurrences() || shuffle.getNumOccurrences() ||
                 lossLog.getNumOccurrences() || saveModel.getNumOccurrences() ||
                 evalArgs.getNumOccurrences() || checkpointDir.getNumOccurrences() ||
                 checkpointEvery.getNumOccurrences() || resumeDir.getNumOccurrences()))
    return error("--batch, --epochs, --steps, --shuffle, --eval, --loss-log, --save, "
                 "--checkpoint, --checkpoint-every and --resume need --train");
  if (checkpointEvery < 0 || (checkpointEvery > 0 && checkpointDir.empty()))
    return error("--checkpoint-every needs --checkpoint DIR and a positive number of steps");
  if (train) {
    if ((epochs > 0) == (steps > 0) || epochs < 0 || steps < 0)
      return error("--train needs exactly one of --epochs N and --steps N (positive)");
    if (batch < 1)
      return error("--batch must be at least 1");
    if (device != RunDevice::Cpu && profileRuns > 0)
      return error("--profile times steps node by node on --device cpu only");
    if (benchRuns > 0)
      return error("--bench times inference runs; with --train, --profile K times K steps");
  }
  auto envInt = [](const char *name, int &out) -> bool {
    const char *v = std::getenv(name);
    return v && !llvm::StringRef(v).getAsInteger(10, out);
  };
  int rank = -1, world = -1, port = -1;
  bool launched = std::getenv("QN_LAUNCHED") != nullptr;
  bool rankEnv = std::getenv("RANK") != nullptr;
  if ((launched || (rankEnv && nproc == 0)) && comm == CommEngine::Local)
    return error("--comm local runs every rank in this one process: start qn-run once, "
                 "without RANK/WORLD_SIZE");
  if (launched || (rankEnv && nproc == 0)) {
    if (comm == CommEngine::Auto)
      comm = CommEngine::Nccl; // a rank process of a GPU job
    if (!envInt("RANK", rank) || !envInt("WORLD_SIZE", world) || rank < 0 || world < 1 ||
        rank >= world)
      return error("RANK and WORLD_SIZE must be integers with 0 <= RANK < WORLD_SIZE");
    std::string addr = std::getenv("MASTER_ADDR") ? std::getenv("MASTER_ADDR") : "127.0.0.1";
    port = 29500;
    if (std::getenv("MASTER_PORT") && (!envInt("MASTER_PORT", port) || port <= 0 || port > 65535))
      return error("MASTER_PORT must be a TCP port number");
    qn::rt::RankRunner runner(runOptions(comm));
    if (llvm::Error e = runner.runProcess({rank, world, addr, port}))
      return error(std::move(e));
    return 0;
  }
  auto plan = qn::rt::loadManifest(planDir);
  if (!plan)
    return error(plan.takeError());
  int n = nproc ? nproc.getValue() : plan->tp;
  if (n != plan->tp)
    return error("--nproc " + llvm::Twine(n) + " does not match the plan, which was compiled for " +
                 llvm::Twine(plan->tp) + " ranks (qn-compile --tp " + llvm::Twine(n) +
                 " makes a plan for " + llvm::Twine(n) + ")");
  if (comm == CommEngine::Auto) // cuda: a GPU per rank, else all ranks on GPU 0
    comm = qn::rt::cudaDeviceCount() >= n ? CommEngine::Nccl : CommEngine::Local;
  qn::rt::RankRunner runner(runOptions(comm));
  // Check the inputs once here, so that a mistake is reported before any
  // rank starts.
  auto inputs = runner.readInputs(*plan);
  if (!inputs)
    return error(inputs.takeError());
  if (device == RunDevice::Cuda && comm == CommEngine::Nccl && qn::rt::cudaDeviceCount() < n)
    return error("--comm nccl needs a GPU per rank: " + llvm::Twine(n) + " ranks but " +
                 llvm::Twine(qn::rt::cudaDeviceCount()) +
                 " GPU(s) visible (--comm local runs them all on GPU 0)");
  llvm::Error e = n == 1                      ? runner.runProcess({0, 1, "127.0.0.1", 0})
                  : comm == CommEngine::Local ? runner.runThreads(*plan, *inputs, n)
                                              : qn::tools::launchRanks(
                                                    argv[0], rankArguments(argc, argv), n, threads);
  if (e)
    return error(std::move(e));
  return 0;
}
