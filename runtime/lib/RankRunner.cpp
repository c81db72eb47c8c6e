//===- Driver.cpp - qn-run: launcher and rank main ------------------------===//
#include "qn/runtime/Driver.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cblas.h>
#ifdef QN_HAVE_ONEDNN
#include <omp.h>
#endif
#include <csignal>
#include <mutex>
#include <thread>
#include <sched.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qn/runtime/Communicator.h"
#include "qn/runtime/Cuda.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/Npy.h"
#include "qn/runtime/Plan.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

extern char **environ;

namespace qn::rt {
namespace cl = llvm::cl;
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
enum class Dev { Cpu, Cuda };
cl::opt<Dev> device("device", cl::desc("Device the ranks run on"), cl::init(Dev::Cpu),
                    cl::values(clEnumValN(Dev::Cpu, "cpu", "CPU kernels, a real BLAS (default)"),
                               clEnumValN(Dev::Cuda, "cuda",
                                          "one GPU per rank (cuBLAS, own kernels)")),
                    cl::cat(category));
enum class Comm { Auto, Gloo, Nccl, Local };
cl::opt<Comm> commEngine(
    "comm", cl::desc("How ranks communicate"), cl::init(Comm::Auto),
    cl::values(clEnumValN(Comm::Auto, "auto",
                          "gloo on cpu; on cuda nccl when this host has a GPU per rank, "
                          "else local (default)"),
               clEnumValN(Comm::Gloo, "gloo", "one process per rank, Gloo over TCP (cpu)"),
               clEnumValN(Comm::Nccl, "nccl", "one process per GPU, NCCL (cuda)"),
               clEnumValN(Comm::Local, "local",
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
cl::opt<int> threads("threads-per-rank", cl::desc("BLAS threads per rank (default 1)"), cl::init(1),
                     cl::cat(category));
cl::opt<double> timeoutSec("timeout",
                           cl::desc("Seconds to wait for rendezvous and for each collective; "
                                    "with NCCL, for each run's GPU work (default 60)"),
                           cl::init(60), cl::cat(category));
cl::opt<bool> quiet("quiet", cl::desc("No progress messages"), cl::cat(category));
enum class Spin { Auto, On, Off };
cl::opt<Spin> busyPoll(
    "busy-poll", cl::desc("Whether ranks spin while waiting in a collective"),
    cl::init(Spin::Auto),
    cl::values(clEnumValN(Spin::Auto, "auto",
                          "spin when this host has a CPU for each of its ranks (default)"),
               clEnumValN(Spin::On, "on", "always spin (lowest latency)"),
               clEnumValN(Spin::Off, "off", "sleep until data arrives")),
    cl::cat(category));

/// Spinning pays only when no two ranks of this host share a CPU.
bool shouldBusyPoll(int world) {
  if (busyPoll != Spin::Auto)
    return busyPoll == Spin::On;
  int local = world;
  if (const char *v = std::getenv("LOCAL_WORLD_SIZE"))
    llvm::StringRef(v).getAsInteger(10, local);
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  return local >= 1 && local <= cpus;
}

/// Ranks of the local engine are threads: one message at a time.
std::mutex printMu;

int error(const llvm::Twine &msg) {
  std::lock_guard<std::mutex> lock(printMu);
  llvm::WithColor::error(llvm::errs(), "qn-run") << msg << "\n";
  return 1;
}

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

/// Reads every --input, then checks the set against the plan.
llvm::Expected<llvm::StringMap<Tensor>> readInputs(const PlanManifest &plan) {
  llvm::StringMap<Tensor> inputs;
  for (const std::string &arg : inputArgs) {
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

std::string digest(const Tensor &t) {
  llvm::SHA256 h;
  h.update(t.describe());
  h.update(llvm::ArrayRef<uint8_t>(static_cast<const uint8_t *>(t.raw()), t.nbytes()));
  return llvm::toHex(h.final(), true);
}

/// Writes `outs[i]` as OUT/<names[i]>.npy (or <names[i]>.rank<K>.npy for a
/// sharded output) for every i with `which[i]`.
llvm::Error writeOutputs(const std::vector<std::string> &names, const std::vector<Tensor> &outs,
                         const std::vector<bool> &which, const std::vector<std::string> &suffix) {
  if (std::error_code ec = llvm::sys::fs::create_directories(outputDir))
    return fail("cannot create output folder '" + outputDir + "': " + ec.message());
  // Write every file aside first, then rename them all: no half-written set.
  std::vector<std::pair<std::string, std::string>> done;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!which[i])
      continue;
    llvm::SmallString<256> path(outputDir.getValue());
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
  std::lock_guard<std::mutex> lock(printMu);
  if (!quiet)
    for (size_t i = 0; i < names.size(); ++i)
      if (which[i])
        llvm::errs() << "qn-run: wrote " << outputDir << "/" << sanitize(names[i]) << suffix[i]
                     << ".npy " << outs[i].describe() << "\n";
  return llvm::Error::success();
}

/// "bench rank=R runs=K median_ms=X collective_ms=Y collective_share=Z%".
llvm::Error bench(Runner &runner, const llvm::StringMap<Tensor> &inputs, int rank) {
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
                          rank, benchRuns.getValue(), t, c, 100 * share);
  if (d > 0 && len > 0 && static_cast<size_t>(len) < sizeof(line))
    std::snprintf(line + len, sizeof(line) - len, " device_ms=%.3f", d);
  std::lock_guard<std::mutex> lock(printMu);
  llvm::outs() << line << "\n";
  llvm::outs().flush();
  return llvm::Error::success();
}

/// The GPU of a rank of this host: LOCAL_RANK (or the rank) modulo the GPUs
/// visible; every rank of the local engine shares GPU 0.
int gpuOf(int rank) {
  if (commEngine == Comm::Local)
    return 0;
  int local = rank;
  if (const char *v = std::getenv("LOCAL_RANK"))
    llvm::StringRef(v).getAsInteger(10, local);
  int n = std::max(1, cudaDeviceCount());
  return local % n;
}

/// One rank with its communicator (null for a single rank): load, run, check
/// that replicated outputs agree across ranks, write, bench.
llvm::Error runRank(int rank, int world, const PlanManifest &plan,
                    const llvm::StringMap<Tensor> &inputs, Communicator *comm,
                    llvm::Expected<RankProgram> program) {
  if (!program)
    return program.takeError();
  KernelRegistry kernels;
  std::unique_ptr<Runner> runner;
  if (device == Dev::Cuda) {
    CudaOptions co;
    co.device = gpuOf(rank);
    co.allowTf32 = allowTf32;
    co.useGraphs = !noGraphs;
    co.fuseElementwise = !noFusion;
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
  if (benchRuns > 0)
    if (auto e = bench(*runner, inputs, rank))
      return e;
  return llvm::Error::success();
}

void setBlasThreads() {
  openblas_set_num_threads(std::max(1, threads.getValue()));
#ifdef QN_HAVE_ONEDNN
  omp_set_num_threads(std::max(1, threads.getValue())); // oneDNN's threads
#endif
}

/// One rank process: rendezvous (Gloo or NCCL), then runRank.
int rankMain(int rank, int world, const std::string &masterAddr, int masterPort) {
  auto fails = [&](const llvm::Twine &msg) {
    return error(world > 1 ? "rank " + llvm::Twine(rank) + ": " + msg : msg);
  };
  setBlasThreads();
  auto plan = loadManifest(planDir);
  if (!plan)
    return fails(llvm::toString(plan.takeError()));
  if (world != plan->tp)
    return fails("the plan in '" + planDir + "' is for " + llvm::Twine(plan->tp) +
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
    ro.masterAddr = masterAddr;
    ro.masterPort = masterPort;
    ro.planId = plan->planId;
    ro.busyPoll = shouldBusyPoll(world);
    ro.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSec * 1000));
    auto c = commEngine == Comm::Nccl ? createNcclCommunicator(ro, gpuOf(rank))
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
  return 0;
}

/// The local engine: every rank a thread of this process. A rank that fails
/// stops the others (their collectives fail at once) and is named.
int runThreads(const PlanManifest &plan, const llvm::StringMap<Tensor> &inputs, int n) {
  setBlasThreads();
  auto comms = createLocalCommunicators(
      n, std::chrono::milliseconds(static_cast<int64_t>(timeoutSec * 1000)));
  std::vector<std::string> errors(n);
  std::vector<std::thread> ranks;
  for (int r = 0; r < n; ++r)
    ranks.emplace_back([&, r] {
#ifdef QN_HAVE_ONEDNN
      omp_set_num_threads(std::max(1, threads.getValue()));
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
      return error("rank " + llvm::Twine(r) + ": " + errors[r]);
  for (int r = 0; r < n; ++r)
    if (!errors[r].empty())
      return error("rank " + llvm::Twine(r) + ": " + errors[r]);
  return 0;
}

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

/// Spawns `n` copies of this program as ranks 0..n-1 and waits for them. When
/// one fails, the others are stopped and the failure is reported.
int launch(int argc, char **argv, int n) {
  int port = freePort();
  if (port < 0)
    return error("cannot find a free TCP port on 127.0.0.1 for the rendezvous");
  std::string exe = llvm::sys::fs::getMainExecutable(argv[0], (void *)&freePort);
  std::vector<std::string> baseEnv;
  for (char **e = environ; *e; ++e) {
    llvm::StringRef kv(*e);
    if (kv.startswith("RANK=") || kv.startswith("WORLD_SIZE=") || kv.startswith("MASTER_ADDR=") ||
        kv.startswith("MASTER_PORT=") || kv.startswith("LOCAL_RANK=") ||
        kv.startswith("LOCAL_WORLD_SIZE=") ||
        kv.startswith("OPENBLAS_NUM_THREADS=") || kv.startswith("OMP_NUM_THREADS="))
      continue;
    baseEnv.push_back(kv.str());
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> env = baseEnv;
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(n));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(n));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    env.push_back("OPENBLAS_NUM_THREADS=" + std::to_string(std::max(1, threads.getValue())));
    env.push_back("OMP_NUM_THREADS=" + std::to_string(std::max(1, threads.getValue())));
    env.push_back("QN_LAUNCHED=1");
    std::vector<char *> envp, args;
    for (auto &s : env)
      envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string exeCopy = exe;
    args.push_back(exeCopy.data());
    for (int i = 1; i < argc; ++i) {
      llvm::StringRef a(argv[i]);
      if (a.startswith("--nproc") || a.startswith("-nproc")) {
        if (!a.contains('=') && i + 1 < argc)
          ++i; // drop its value too
        continue;
      }
      args.push_back(argv[i]);
    }
    args.push_back(nullptr);
    pid_t pid;
    if (int rc = posix_spawn(&pid, exe.c_str(), nullptr, nullptr, args.data(), envp.data())) {
      for (pid_t p : pids)
        ::kill(p, SIGKILL);
      return error("cannot start rank " + llvm::Twine(r) + ": " + std::strerror(rc));
    }
    pids.push_back(pid);
  }
  int failures = 0;
  std::string firstFailure;
  size_t alive = pids.size();
  while (alive > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end())
      continue;
    int r = static_cast<int>(it - pids.begin());
    *it = -1;
    --alive;
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok)
      continue;
    std::string why = WIFSIGNALED(status)
                          ? "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                strsignal(WTERMSIG(status)) + ")"
                          : "exited with code " + std::to_string(WEXITSTATUS(status));
    if (failures++ == 0) {
      firstFailure = "rank " + std::to_string(r) + " " + why;
      // Stop the others: they would otherwise wait in a collective until the
      // timeout.
      for (pid_t p : pids)
        if (p > 0)
          ::kill(p, SIGTERM);
    }
  }
  if (failures)
    return error(firstFailure + "; stopped the other ranks");
  return 0;
}

} // namespace

int runnerMain(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // A peer that dies closes its sockets; writing to them must be an error
  // we report (EPIPE), not a silent death by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "QuintNet runner: runs a plan written by qn-compile on N ranks.\n\n"
      "  qn-run plan/ --nproc 2 --input x=x.npy --output-dir out/\n"
      "  RANK=1 WORLD_SIZE=2 MASTER_ADDR=host0 MASTER_PORT=29500 qn-run plan/ --input x=x.npy\n");
  if (listDevices) {
    for (int d = 0; d < cudaDeviceCount(); ++d)
      llvm::outs() << "cuda:" << d << " " << cudaDeviceName(d) << "\n";
    return 0;
  }
  if (planDir.empty())
    return error("no plan folder given (qn-run PLAN ...; see --help)");
  if (device == Dev::Cuda && cudaDeviceCount() == 0)
    return error("--device cuda: " + cudaUnavailableReason());
  if (commEngine == Comm::Auto && device == Dev::Cpu)
    commEngine = Comm::Gloo;
  if (commEngine == Comm::Nccl && device != Dev::Cuda)
    return error("--comm nccl needs --device cuda (on cpu use gloo or local)");
  if (commEngine == Comm::Gloo && device != Dev::Cpu)
    return error("--comm gloo runs CPU ranks only (with --device cuda use nccl or local)");
  if (threads < 1)
    return error("--threads-per-rank must be at least 1");
  if (timeoutSec <= 0)
    return error("--timeout must be positive");
  auto envInt = [](const char *name, int &out) -> bool {
    const char *v = std::getenv(name);
    return v && !llvm::StringRef(v).getAsInteger(10, out);
  };
  int rank = -1, world = -1, port = -1;
  bool launched = std::getenv("QN_LAUNCHED") != nullptr;
  bool rankEnv = std::getenv("RANK") != nullptr;
  if ((launched || (rankEnv && nproc == 0)) && commEngine == Comm::Local)
    return error("--comm local runs every rank in this one process: start qn-run once, "
                 "without RANK/WORLD_SIZE");
  if (launched || (rankEnv && nproc == 0)) {
    if (commEngine == Comm::Auto)
      commEngine = Comm::Nccl; // a rank process of a GPU job
    if (!envInt("RANK", rank) || !envInt("WORLD_SIZE", world) || rank < 0 || world < 1 ||
        rank >= world)
      return error("RANK and WORLD_SIZE must be integers with 0 <= RANK < WORLD_SIZE");
    std::string addr = std::getenv("MASTER_ADDR") ? std::getenv("MASTER_ADDR") : "127.0.0.1";
    port = 29500;
    if (std::getenv("MASTER_PORT") && (!envInt("MASTER_PORT", port) || port <= 0 || port > 65535))
      return error("MASTER_PORT must be a TCP port number");
    return rankMain(rank, world, addr, port);
  }
  auto plan = loadManifest(planDir);
  if (!plan)
    return error(llvm::toString(plan.takeError()));
  int n = nproc ? nproc.getValue() : plan->tp;
  if (n != plan->tp)
    return error("--nproc " + llvm::Twine(n) + " does not match the plan, which was compiled for " +
                 llvm::Twine(plan->tp) + " ranks (qn-compile --tp " + llvm::Twine(n) +
                 " makes a plan for " + llvm::Twine(n) + ")");
  // Check the inputs once here, so that a mistake is reported before any
  // rank starts.
  auto inputs = readInputs(*plan);
  if (!inputs)
    return error(llvm::toString(inputs.takeError()));
  if (commEngine == Comm::Auto) // cuda: a GPU per rank, else all ranks on GPU 0
    commEngine = cudaDeviceCount() >= n ? Comm::Nccl : Comm::Local;
  if (device == Dev::Cuda && commEngine == Comm::Nccl && cudaDeviceCount() < n)
    return error("--comm nccl needs a GPU per rank: " + llvm::Twine(n) + " ranks but " +
                 llvm::Twine(cudaDeviceCount()) +
                 " GPU(s) visible (--comm local runs them all on GPU 0)");
  if (n == 1)
    return rankMain(0, 1, "127.0.0.1", 0);
  if (commEngine == Comm::Local)
    return runThreads(*plan, *inputs, n);
  return launch(argc, argv, n);
}

} // namespace qn::rt
