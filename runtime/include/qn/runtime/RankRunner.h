//===- RankRunner.h - what one rank of qn-run does --------------*- C++ -*-===//
//
// The runtime's side of qn-run, driven by a plain struct (tools/qn-run.cpp
// owns the flags and tools/Launcher.cpp spawns the rank processes): load the
// rank's program before the rendezvous, join the communicator, run, check
// that replicated outputs agree across ranks, write the outputs (aside, then
// renamed), and optionally time more runs.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "qn/runtime/Plan.h"
#include "qn/runtime/Tensor.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace qn::rt {

class Communicator;
class KernelRegistry;
class Runner;

/// --profile's work (RankRunner.cpp): `runs` more runs of `runner` on
/// `inputs` timed node by node; rank 0 prints every rank's summary and
/// writes `tracePath` (a Chrome trace) when not empty.
llvm::Error profile(Runner &runner, const llvm::StringMap<Tensor> &inputs, int rank, int world,
                    Communicator *comm, int runs, const std::string &tracePath,
                    std::mutex &printMu);

/// The device every rank runs on.
enum class RunDevice { Cpu, Cuda };
/// How ranks communicate. A RankRunner needs it resolved (not Auto): Gloo
/// (CPU rank processes), Nccl (GPU rank processes) or Local (threads).
enum class CommEngine { Auto, Gloo, Nccl, Local };
/// Whether ranks spin while waiting in a collective; Auto spins when this
/// host has a CPU for each of its ranks (LOCAL_WORLD_SIZE, else the world).
enum class BusyPoll { Auto, On, Off };

struct RunOptions {
  /// The plan folder qn-compile wrote.
  std::string planDir;
  /// Graph inputs, each "NAME=FILE.npy".
  std::vector<std::string> inputs;
  /// Where the outputs go, one NAME.npy each (NAME.rankK.npy for an output
  /// the plan leaves sharded).
  std::string outputDir = "qn-out";
  RunDevice device = RunDevice::Cpu;
  CommEngine comm = CommEngine::Auto;
  /// cuda: float32 GEMMs may use TF32 tensor cores.
  bool allowTf32 = false;
  /// cuda: replay repeated runs through CUDA graphs.
  bool cudaGraphs = true;
  /// cuda: chains of elementwise nodes run as one kernel.
  bool fuseElementwise = true;
  /// After the run, time this many more and print the median latency and
  /// the time spent in collectives ("bench rank=R ...", stdout).
  int benchRuns = 0;
  /// After the run (and the bench), time this many more node by node (CPU
  /// device): rank 0 prints, for every rank, the time per op kind, the ten
  /// slowest nodes and the collectives split into transfer and waiting for
  /// the slowest rank ("profile rank=R ...", stdout).
  int profileRuns = 0;
  /// With profileRuns: rank 0 also writes the last profiled run of every
  /// rank here as a Chrome trace (JSON; chrome://tracing, Perfetto).
  std::string profileTrace;
  /// BLAS (and oneDNN) threads per rank; at least 1.
  int threadsPerRank = 1;
  /// Bound on rendezvous and on each collective (NCCL: each run's GPU work).
  double timeoutSec = 60;
  /// No "wrote ..." lines.
  bool quiet = false;
  BusyPoll busyPoll = BusyPoll::Auto;

  // Training (a plan compiled with qn-compile --train). `inputs` then name
  // dataset files (.npy, MNIST IDX, optionally .gz) whose axis 0 holds the
  // samples: the model's data input(s) and the labels.
  bool train = false;
  int64_t batch = 32;
  /// Exactly one of epochs and steps is positive.
  int64_t epochs = 0, steps = 0;
  /// Shuffle the samples every epoch with this seed (-1: in file order).
  int64_t shuffleSeed = -1;
  /// Evaluation datasets ("NAME=FILE", as `inputs`): after every epoch (and
  /// at the end) rank 0 prints their mean loss and accuracy.
  std::vector<std::string> evalInputs;
  /// CSV of "step,loss" per step (rank 0).
  std::string lossLog;
  /// Checkpoints: every `checkpointEvery` steps (and after the last) each
  /// rank writes its state to DIR/step-S/rankK.bin and rank 0 a manifest,
  /// written aside and renamed, then DIR/latest names it.
  std::string checkpointDir;
  int64_t checkpointEvery = 0;
  /// Continue from the latest checkpoint in this folder.
  std::string resumeDir;
  /// After training: the source model (plan.json's source_model) with the
  /// trained parameters, unsharded, written here by rank 0.
  std::string saveModel;
};

/// Where a rank process meets its peers (torchrun's RANK, WORLD_SIZE,
/// MASTER_ADDR, MASTER_PORT).
struct RankEndpoint {
  int rank = 0;
  int worldSize = 1;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 0;
};

/// Runs a plan as one rank process, or as every rank on threads of this
/// process (the local engine). Errors carry the message for the user.
class RankRunner {
public:
  explicit RankRunner(RunOptions opts) : opts_(std::move(opts)) {}
  const RunOptions &options() const { return opts_; }

  /// Reads every input file, then checks the set against the plan.
  llvm::Expected<llvm::StringMap<Tensor>> readInputs(const PlanManifest &plan) const;

  /// This process as rank `at.rank` of `at.worldSize`: loads the plan, the
  /// inputs and its program (before the rendezvous, so that a damaged rank
  /// fails before its peers wait for it), joins the others through Gloo or
  /// NCCL (options().comm) when there are several, runs, compares output
  /// digests, writes, benches, leaves. With several ranks the error is
  /// prefixed "rank R: ".
  llvm::Error runProcess(const RankEndpoint &at);

  /// The local engine: ranks 0..n-1 as threads of this process. A rank that
  /// fails stops the others; the error names the first rank that failed
  /// ("rank R: ...").
  llvm::Error runThreads(const PlanManifest &plan, const llvm::StringMap<Tensor> &inputs, int n);

private:
  llvm::Error runRank(int rank, int world, const PlanManifest &plan,
                      const llvm::StringMap<Tensor> &inputs, Communicator *comm,
                      llvm::Expected<RankProgram> program);
  /// The training loop of `--train` (TrainLoop.cpp).
  llvm::Error trainRank(int rank, int world, const PlanManifest &plan,
                        const llvm::StringMap<Tensor> &datasets, Communicator *comm,
                        RankProgram program);
  /// The training datasets, and the evaluation ones under "eval/NAME".
  llvm::Expected<llvm::StringMap<Tensor>> readDatasets(const PlanManifest &plan) const;
  llvm::Expected<llvm::StringMap<Tensor>> readDatasetList(const PlanManifest &plan,
                                                          llvm::ArrayRef<std::string> args,
                                                          llvm::StringRef flag) const;
  llvm::Error writeOutputs(const std::vector<std::string> &names, const std::vector<Tensor> &outs,
                           const std::vector<bool> &which, const std::vector<std::string> &suffix);
  int gpuOf(int rank) const;
  /// Rank `rank`'s runner on the chosen device (`kernels`, which the CPU
  /// executor refers to, must outlive it).
  llvm::Expected<std::unique_ptr<Runner>> makeRunner(int rank, RankProgram program,
                                                     Communicator *comm,
                                                     KernelRegistry &kernels) const;
  bool shouldBusyPoll(int world) const;
  void setBlasThreads() const;

  RunOptions opts_;
  /// Ranks of the local engine are threads: one message at a time.
  std::mutex printMu_;
};

} // namespace qn::rt
