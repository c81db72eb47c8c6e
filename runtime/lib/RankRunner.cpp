//===- RankRunner.cpp - one rank of qn-run, or all of them as threads -----===//
//
// tools/qn-run.cpp owns the flags and tools/Launcher.cpp spawns the rank
// processes; this is what each rank does, driven by RunOptions.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/RankRunner.h"

#include <algorithm>
#include <cblas.h>
#ifdef QN_HAVE_ONEDNN
#include <omp.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <sched.h>

#include "qn/runtime/Communicator.h"
#include "qn/runtime/Cuda.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/Npy.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

namespace qn::rt {
namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

std::string sanitize(llvm::StringRef name) {
  std::string s;
  for (char c : name)
    s += (llvm::isAlnum(c) || c == '_' || c == '-' || c == '.') ? c : '_';
  if (s.empty() || s == "." || s == "..")
    s = "_" + s;
  return s;
}

std::string digest(const Tensor &t) {
  llvm::SHA256 h;
  h.update(t.describe());
  h.update(llvm::ArrayRef<uint8_t>(static_cast<const uint8_t *>(t.raw()), t.nbytes()));
  return llvm::toHex(h.final(), true);
}

/// "bench rank=R runs=K median_ms=X collective_ms=Y collective_share=Z%".
llvm::Error bench(Runner &runner, const llvm::StringMap<Tensor> &inputs, int rank, int benchRuns,
                  std::mutex &printMu) {
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto timeRuns = [&](std::vector<double> &total, std::vector<double> &coll,
                      std::vector<double> &dev) -> llvm::Error {
    for (int i = 0; i < 2; ++i) // warm-up beyond the first run
      if (auto o = runner.run(inputs); !o)
        return o.takeError();
    for (int i = 0; i < benchRuns; ++i) {
      RunStats st;
      auto o = runner.run(inputs, &st);
      if (!o)
        return o.takeError();
      total.push_back(st.totalMs);
      coll.push_back(st.collectiveMs);
      dev.push_back(st.deviceMs);
    }
    return llvm::Error::success();
  };
  std::vector<double> total, coll, dev;
  if (auto e = timeRuns(total, coll, dev))
    return e;
  double t = median(total), d = median(dev), c = median(coll);
  // Inside a CUDA graph the collectives cannot be timed apart: measure their
  // share in as many eager runs, and apply it to the graph runs.
  double base = d > 0 ? d : t, share = base > 0 ? c / base : 0;
  if (c < 0) {
    std::vector<double> t2, c2, d2;
    runner.setProfiling(true);
    llvm::Error e = timeRuns(t2, c2, d2);
    runner.setProfiling(false);
    if (e)
      return e;
    double eager = median(d2) > 0 ? median(d2) : median(t2);
    share = eager > 0 ? median(c2) / eager : 0;
    c = share * base;
  }
  char line[256];
  int len = std::snprintf(line, sizeof(line),
                          "bench rank=%d runs=%d median_ms=%.3f collective_ms=%.3f "
                          "collective_share=%.1f%%",
                          rank, benchRuns, t, c, 100 * share);
  if (d > 0 && len > 0 && static_cast<size_t>(len) < sizeof(line))
    std::snprintf(line + len, sizeof(line) - len, " device_ms=%.3f", d);
  std::lock_guard<std::mutex> lock(printMu);
  llvm::outs() << line << "\n";
  llvm::outs().flush();
  return llvm::Error::success();
}

} // namespace

/// Spinning pays only when no two ranks of this host share a CPU.
bool RankRunner::shouldBusyPoll(int world) const {
  if (opts_.busyPoll != BusyPoll::Auto)
    return opts_.busyPoll == BusyPoll::On;
  int local = world;
  if (const char *v = std::getenv("LOCAL_WORLD_SIZE"))
    llvm::StringRef(v).getAsInteger(10, local);
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  return local >= 1 && local <= cpus;
}

llvm::Expected<llvm::StringMap<Tensor>> RankRunner::readInputs(const PlanManifest &plan) const {
  llvm::StringMap<Tensor> inputs;
  for (const std::string &arg : opts_.inputs) {
    auto [name, file] = llvm::StringRef(arg).split('=');
    if (name.empty() || file.empty())
      return fail("--input '" + arg + "' is not NAME=FILE.npy");
    if (inputs.count(name))
      return fail("input '" + name + "' is given twice");
    auto t = readNpy(file);
    if (!t)
      return fail("input '" + name + "': " + llvm::toString(t.takeError()));
    inputs[name] = std::move(*t);
  }
  if (auto err = checkInputs(plan, inputs))
    return err;
  return inputs;
}

/// Writes `outs[i]` as OUT/<names[i]>.npy (or <names[i]>.rank<K>.npy for a
/// sharded output) for every i with `which[i]`.
llvm::Error RankRunner::writeOutputs(const std::vector<std::string> &names,
                                     const std::vector<Tensor> &outs,
                                     const std::vector<bool> &which,
                                     const std::vector<std::string> &suffix) {
  const std::string &outputDir = opts_.outputDir;
  if (std::error_code ec = llvm::sys::fs::create_directories(outputDir))
    return fail("cannot create output folder '" + outputDir + "': " + ec.message());
  // Write every file aside first, then rename them all: no half-written set.
  std::vector<std::pair<std::string, std::string>> done;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!which[i])
      continue;
    llvm::SmallString<256> path(outputDir);
    llvm::sys::path::append(path, sanitize(names[i]) + suffix[i] + ".npy");
    std::string tmp = (path + ".qn-tmp").str();
    if (auto err = writeNpy(tmp, outs[i])) {
      for (auto &d : done)
        llvm::sys::fs::remove(d.first);
      llvm::sys::fs::remove(tmp);
      return err;
    }
    done.push_back({tmp, path.str().str()});
  }
  for (auto &d : done)
    if (std::error_code ec = llvm::sys::fs::rename(d.first, d.second))
      return fail("cannot write '" + d.second + "': " + ec.message());
  std::lock_guard<std::mutex> lock(printMu_);
  if (!opts_.quiet)
    for (size_t i = 0; i < names.size(); ++i)
      if (which[i])
        llvm::errs() << "qn-run: wrote " << outputDir << "/" << sanitize(names[i]) << suffix[i]
                     << ".npy " << outs[i].describe() << "\n";
  return llvm::Error::success();
}

/// The GPU of a rank of this host: LOCAL_RANK (or the rank) modulo the GPUs
/// visible; every rank of the local engine shares GPU 0.
int RankRunner::gpuOf(int rank) const {
  if (opts_.comm == CommEngine::Local)
    return 0;
  int local = rank;
  if (const char *v = std::getenv("LOCAL_RANK"))
    llvm::StringRef(v).getAsInteger(10, local);
  int n = std::max(1, cudaDeviceCount());
  return local % n;
}

/// One rank with its communicator (null for a single rank): load, run, check
/// that replicated outputs agree across ranks, write, bench.
llvm::Error RankRunner::runRank(int rank, int world, const PlanManifest &plan,
                                const llvm::StringMap<Tensor> &inputs, Communicator *comm,
                                llvm::Expected<RankProgram> program) {
  if (!program)
    return program.takeError();
  KernelRegistry kernels;
  std::unique_ptr<Runner> runner;
  if (opts_.device == RunDevice::Cuda) {
    CudaOptions co;
    co.device = gpuOf(rank);
    co.allowTf32 = opts_.allowTf32;
    co.useGraphs = opts_.cudaGraphs;
    co.fuseElementwise = opts_.fuseElementwise;
    auto r = createCudaExecutor(std::move(*program), co, comm);
    if (!r)
      return r.takeError();
    runner = std::move(*r);
  } else {
    registerCpuKernels(kernels);
    auto r = Executor::create(std::move(*program), kernels, comm);
    if (!r)
      return r.takeError();
    runner = std::move(*r);
  }
  auto outs = runner->run(inputs);
  if (!outs)
    return outs.takeError();
  const auto &names = runner->outputNames();
  // Outputs the plan leaves sharded are written by every rank, one file
  // each; replicated ones by rank 0, after checking that all ranks agree.
  std::vector<bool> sharded(names.size(), false), mineToWrite(names.size());
  std::vector<std::string> suffix(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    for (const PlanValue &pv : plan.outputs)
      if (pv.name == names[i] && !pv.replicated())
        sharded[i] = true;
    suffix[i] = sharded[i] ? ".rank" + std::to_string(rank) : "";
    mineToWrite[i] = sharded[i] || rank == 0;
  }
  if (comm) {
    // Replicated outputs must be bitwise identical on every rank.
    std::string mine;
    for (size_t i = 0; i < outs->size(); ++i)
      if (!sharded[i])
        mine += digest((*outs)[i]) + ";";
    auto all = comm->exchange("qn/outputs", mine);
    if (!all)
      return all.takeError();
    for (int r = 1; r < world; ++r)
      if ((*all)[r] != (*all)[0])
        return fail("outputs differ between rank 0 and rank " + llvm::Twine(r) +
                    "; replicated outputs must be identical (a bug: please report it)");
  }
  if (auto err = writeOutputs(names, *outs, mineToWrite, suffix))
    return err;
  if (opts_.benchRuns > 0)
    if (auto e = bench(*runner, inputs, rank, opts_.benchRuns, printMu_))
      return e;
  return llvm::Error::success();
}

void RankRunner::setBlasThreads() const {
  openblas_set_num_threads(std::max(1, opts_.threadsPerRank));
#ifdef QN_HAVE_ONEDNN
  omp_set_num_threads(std::max(1, opts_.threadsPerRank)); // oneDNN's threads
#endif
}

llvm::Error RankRunner::runProcess(const RankEndpoint &at) {
  const int rank = at.rank, world = at.worldSize;
  auto fails = [&](const llvm::Twine &msg) {
    return fail(world > 1 ? "rank " + llvm::Twine(rank) + ": " + msg : msg);
  };
  setBlasThreads();
  auto plan = loadManifest(opts_.planDir);
  if (!plan)
    return fails(llvm::toString(plan.takeError()));
  if (world != plan->tp)
    return fails("the plan in '" + opts_.planDir + "' is for " + llvm::Twine(plan->tp) +
                 " ranks but WORLD_SIZE is " + llvm::Twine(world));
  auto inputs = readInputs(*plan);
  if (!inputs)
    return fails(llvm::toString(inputs.takeError()));
  // Loaded before the rendezvous: a damaged rank fails before its peers wait
  // for it in a collective.
  auto program = loadRank(*plan, rank);
  if (!program)
    return fails(llvm::toString(program.takeError()));
  std::unique_ptr<Communicator> comm;
  if (world > 1) {
    RendezvousOptions ro;
    ro.rank = rank;
    ro.worldSize = world;
    ro.masterAddr = at.masterAddr;
    ro.masterPort = at.masterPort;
    ro.planId = plan->planId;
    ro.busyPoll = shouldBusyPoll(world);
    ro.timeout = std::chrono::milliseconds(static_cast<int64_t>(opts_.timeoutSec * 1000));
    auto c = opts_.comm == CommEngine::Nccl ? createNcclCommunicator(ro, gpuOf(rank))
                                            : createGlooCommunicator(ro);
    if (!c)
      return fails(llvm::toString(c.takeError()));
    comm = std::move(*c);
  }
  if (auto e = runRank(rank, world, *plan, *inputs, comm.get(), std::move(program)))
    return fails(llvm::toString(std::move(e)));
  if (comm)
    if (auto e = comm->finish())
      return fails(llvm::toString(std::move(e)));
  return llvm::Error::success();
}

llvm::Error RankRunner::runThreads(const PlanManifest &plan, const llvm::StringMap<Tensor> &inputs,
                                   int n) {
  setBlasThreads();
  auto comms = createLocalCommunicators(
      n, std::chrono::milliseconds(static_cast<int64_t>(opts_.timeoutSec * 1000)));
  std::vector<std::string> errors(n);
  std::vector<std::thread> ranks;
  for (int r = 0; r < n; ++r)
    ranks.emplace_back([&, r] {
#ifdef QN_HAVE_ONEDNN
      omp_set_num_threads(std::max(1, opts_.threadsPerRank));
#endif
      if (llvm::Error e = runRank(r, n, plan, inputs, comms[r].get(), loadRank(plan, r))) {
        errors[r] = llvm::toString(std::move(e));
        abortLocalGroup(*comms[r], "rank " + std::to_string(r) + " failed");
      }
    });
  for (auto &t : ranks)
    t.join();
  // The first rank to fail is the cause; the others stopped because of it.
  for (int r = 0; r < n; ++r)
    if (!errors[r].empty() && errors[r].find("the local group stopped") == std::string::npos)
      return fail("rank " + llvm::Twine(r) + ": " + errors[r]);
  for (int r = 0; r < n; ++r)
    if (!errors[r].empty())
      return fail("rank " + llvm::Twine(r) + ": " + errors[r]);
  return llvm::Error::success();
}

} // namespace qn::rt
