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
#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"
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

/// --profile: `runs` more runs timed node by node. Each rank summarises its
/// own (the median of each node over the runs); the collectives' medians are
/// exchanged, so that a collective's transfer time is the shortest any rank
/// saw (the last rank to arrive waits for nobody) and the rest of each
/// rank's time in it is waiting for the slowest rank. Rank 0 prints every
/// rank's summary and writes the trace (each rank's last run, its own start
/// at 0).
llvm::Error profile(Runner &runner, const llvm::StringMap<Tensor> &inputs, int rank, int world,
                    Communicator *comm, int runs, const std::string &tracePath,
                    std::mutex &printMu) {
  const Schedule *sched = runner.timesNodes();
  if (!sched)
    return fail("--profile times nodes on the CPU device only (on cuda, --bench gives the "
                "run and collective times)");
  const size_t steps = sched->steps.size();
  for (int i = 0; i < 2; ++i) // warm-up beyond the first run
    if (auto o = runner.run(inputs); !o)
      return o.takeError();
  std::vector<std::vector<double>> perStep(steps);
  std::vector<double> totals;
  std::vector<RunStats::NodeTime> last;
  for (int i = 0; i < runs; ++i) {
    RunStats st;
    st.nodes = &last;
    if (auto o = runner.run(inputs, &st); !o)
      return o.takeError();
    totals.push_back(st.totalMs);
    for (size_t k = 0; k < steps && k < last.size(); ++k)
      perStep[k].push_back(last[k].ms);
  }
  auto median = [](std::vector<double> v) {
    if (v.empty())
      return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> ms(steps);
  for (size_t k = 0; k < steps; ++k)
    ms[k] = median(perStep[k]);
  const double total = median(totals);

  // Collectives: transfer = the least any rank spent in each.
  std::vector<size_t> coll;
  std::string mine;
  for (size_t k = 0; k < steps; ++k)
    if (sched->steps[k].collective) {
      coll.push_back(k);
      mine += llvm::formatv("{0:f6},", ms[k]).str();
    }
  std::vector<double> transfer(coll.size());
  for (size_t c = 0; c < coll.size(); ++c)
    transfer[c] = ms[coll[c]];
  if (comm && world > 1) {
    auto all = comm->exchange("qn/profile-collectives", mine);
    if (!all)
      return all.takeError();
    for (const std::string &theirs : *all) {
      llvm::SmallVector<llvm::StringRef, 16> parts;
      llvm::StringRef(theirs).split(parts, ',', -1, false);
      for (size_t c = 0; c < coll.size() && c < parts.size(); ++c) {
        double v = 0;
        if (!parts[c].getAsDouble(v))
          transfer[c] = std::min(transfer[c], v);
      }
    }
  }
  double collMs = 0, transferMs = 0;
  for (size_t c = 0; c < coll.size(); ++c) {
    collMs += ms[coll[c]];
    transferMs += transfer[c];
  }

  // This rank's summary.
  std::string text;
  llvm::raw_string_ostream os(text);
  auto share = [&](double v) { return total > 0 ? 100 * v / total : 0.0; };
  os << llvm::formatv("profile rank={0} runs={1} median_ms={2:f3} nodes={3}\n", rank, runs,
                      total, steps);
  llvm::StringMap<std::pair<double, int>> kinds;
  for (size_t k = 0; k < steps; ++k) {
    const onnx::NodeProto &n = *sched->steps[k].node;
    std::string kind = n.domain().empty() || n.domain() == "ai.onnx"
                           ? n.op_type()
                           : n.domain() + "." + n.op_type();
    auto &e = kinds[kind];
    e.first += ms[k];
    e.second += 1;
  }
  std::vector<std::pair<std::string, std::pair<double, int>>> byKind;
  for (auto &kv : kinds)
    byKind.push_back({kv.getKey().str(), kv.getValue()});
  std::sort(byKind.begin(), byKind.end(),
            [](const auto &a, const auto &b) { return a.second.first > b.second.first; });
  os << "  by op kind (ms per run, share of the run, nodes):\n";
  for (const auto &[kind, v] : byKind)
    os << llvm::formatv("    {0,-28} {1,9:f3} {2,6:f1}% {3,5}\n", kind, v.first, share(v.first),
                        v.second);
  std::vector<size_t> order(steps);
  for (size_t k = 0; k < steps; ++k)
    order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ms[a] > ms[b]; });
  os << "  slowest nodes (ms per run, share, op, node):\n";
  for (size_t i = 0; i < std::min<size_t>(10, steps); ++i) {
    const onnx::NodeProto &n = *sched->steps[order[i]].node;
    os << llvm::formatv("    {0,9:f3} {1,6:f1}%  {2,-14} {3}\n", ms[order[i]],
                        share(ms[order[i]]), n.op_type(), n.name());
  }
  os << llvm::formatv("  collectives: {0} taking {1:f3} ms ({2:f1}%) = transfer {3:f3} ms + "
                      "waiting for the slowest rank {4:f3} ms\n",
                      coll.size(), collMs, share(collMs), transferMs,
                      std::max(0.0, collMs - transferMs));
  os.flush();

  // The trace events of this rank's last run.
  std::string events;
  {
    llvm::raw_string_ostream es(events);
    llvm::json::OStream j(es);
    j.array([&] {
      j.object([&] {
        j.attribute("name", "process_name");
        j.attribute("ph", "M");
        j.attribute("pid", rank);
        j.attributeObject("args", [&] { j.attribute("name", "rank " + std::to_string(rank)); });
      });
      for (size_t k = 0; k < steps && k < last.size(); ++k) {
        const onnx::NodeProto &n = *sched->steps[k].node;
        j.object([&] {
          j.attribute("name", n.name());
          j.attribute("cat", n.op_type());
          j.attribute("ph", "X");
          j.attribute("pid", rank);
          j.attribute("tid", 0);
          j.attribute("ts", last[k].startMs * 1000);
          j.attribute("dur", last[k].ms * 1000);
        });
      }
    });
  }
  std::vector<std::string> texts = {text}, traces = {events};
  if (comm && world > 1) {
    auto t = comm->exchange("qn/profile-text", text);
    if (!t)
      return t.takeError();
    texts = std::move(*t);
    if (!tracePath.empty()) {
      auto e = comm->exchange("qn/profile-trace", events);
      if (!e)
        return e.takeError();
      traces = std::move(*e);
    }
  }
  if (rank != 0)
    return llvm::Error::success();
  {
    std::lock_guard<std::mutex> lock(printMu);
    for (const std::string &t : texts)
      llvm::outs() << t;
    llvm::outs().flush();
  }
  if (tracePath.empty())
    return llvm::Error::success();
  llvm::json::Array all;
  for (const std::string &t : traces) {
    auto parsed = llvm::json::parse(t);
    if (!parsed)
      return parsed.takeError();
    if (auto *arr = parsed->getAsArray())
      for (llvm::json::Value &v : *arr)
        all.push_back(std::move(v));
  }
  llvm::json::Object doc;
  doc["traceEvents"] = std::move(all);
  doc["displayTimeUnit"] = "ms";
  std::string tmp = tracePath + ".qn-tmp";
  {
    std::error_code ec;
    llvm::raw_fd_ostream f(tmp, ec);
    if (ec)
      return fail("cannot write the trace '" + tracePath + "': " + ec.message());
    f << llvm::json::Value(std::move(doc)) << "\n";
    f.close();
    if (f.has_error()) {
      f.clear_error();
      llvm::sys::fs::remove(tmp);
      return fail("cannot write the trace '" + tracePath + "'");
    }
  }
  if (std::error_code ec = llvm::sys::fs::rename(tmp, tracePath)) {
    llvm::sys::fs::remove(tmp);
    return fail("cannot write the trace '" + tracePath + "': " + ec.message());
  }
  return llvm::Error::success();
}

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
  if (opts_.train || plan.training)
    return readDatasets(plan);
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

llvm::Expected<std::unique_ptr<Runner>> RankRunner::makeRunner(int rank, RankProgram program,
                                                               Communicator *comm,
                                                               KernelRegistry &kernels) const {
  if (opts_.device == RunDevice::Cuda) {
    CudaOptions co;
    co.device = gpuOf(rank);
    co.allowTf32 = opts_.allowTf32;
    co.useGraphs = opts_.cudaGraphs;
    co.fuseElementwise = opts_.fuseElementwise;
    return createCudaExecutor(std::move(program), co, comm);
  }
  registerCpuKernels(kernels);
  auto r = Executor::create(std::move(program), kernels, comm);
  if (!r)
    return r.takeError();
  return std::unique_ptr<Runner>(std::move(*r));
}

/// One rank with its communicator (null for a single rank): load, run, check
/// that replicated outputs agree across ranks, write, bench.
llvm::Error RankRunner::runRank(int rank, int world, const PlanManifest &plan,
                                const llvm::StringMap<Tensor> &inputs, Communicator *comm,
                                llvm::Expected<RankProgram> program) {
  if (!program)
    return program.takeError();
  if (plan.training)
    return trainRank(rank, world, plan, inputs, comm, std::move(*program));
  KernelRegistry kernels;
  auto made = makeRunner(rank, std::move(*program), comm, kernels);
  if (!made)
    return made.takeError();
  std::unique_ptr<Runner> runner = std::move(*made);
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
  if (opts_.profileRuns > 0)
    if (auto e = profile(*runner, inputs, rank, world, comm, opts_.profileRuns,
                         opts_.profileTrace, printMu_))
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
