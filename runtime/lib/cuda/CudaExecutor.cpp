//===- CudaExecutor.cpp - Runs one rank's graph on a GPU ------------------===//
//
// Where each node runs. Graph inputs are uploaded; weights were uploaded once
// at start-up and keep their host copies. A node whose inputs all have host
// forms (constants, and values computed from them and from tensor shapes:
// the Shape -> Gather -> Concat chains of exported models, masks cut to the
// sequence length, rotary tables) runs on the host with the CPU kernel; every
// other node runs on the GPU, its host-read inputs (shapes, axes, bounds)
// handed over on the host and the rest on the device. Host values that a GPU
// kernel reads are uploaded once per input signature and reused: they depend
// only on constants and on the input shapes, so they are the same in every run
// with the same shapes (checked byte for byte before reuse).
//
// Runs with one input signature (names, dtypes, shapes):
//   1st  eager; the allocator records every allocation's size and lifetime,
//        then places them all in one arena (CudaDevice.h, Allocator);
//   2nd  the same kernels with the arena's fixed addresses, captured into a
//        CUDA graph (when the communicator allows capture: NCCL or none), then
//        launched;
//   3rd+ copy the inputs into their arena slots, launch the graph, copy the
//        outputs out: no kernel launch overhead, no allocation.
// A run that needs a device value on the host mid-way (a rare op whose host
// input was computed on the GPU) cannot be captured: that signature stays
// eager (with the arena).
//
//===----------------------------------------------------------------------===//
#include "CudaDevice.h"
#include "CudaFused.h"
#include "../Fusion.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "llvm/Support/raw_ostream.h"

#include "../OpSemantics.h"
#include "../StrCat.h"
#include "qn/runtime/Communicator.h"
#include "qn/runtime/Cuda.h"

#include "onnx/onnx_pb.h"

namespace qn::rt {
namespace cuda {
namespace {

using Clock = std::chrono::steady_clock;
double msSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

/// A value's forms: on the host, on the device, or both.
struct Val {
  Tensor host, dev;
};

bool sameBytes(const Tensor &a, const Tensor &b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.raw() == b.raw() || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

constexpr size_t kMaxSignatures = 4;

/// Everything kept for one input signature.
struct SigState {
  std::unique_ptr<Allocator::Plan> plan;
  std::map<int, Val> uploads; // host values read on the device, by value id
  cudaGraphExec_t graph = nullptr;
  std::vector<Tensor> inDev;  // graph inputs' arena buffers (graph replay)
  std::vector<Val> outs;      // the outputs' forms (graph replay)
  bool graphable = true;
  uint64_t lastUse = 0;
  SigState() = default;
  SigState(const SigState &) = delete;
  ~SigState() { dropGraph(); }
  void dropGraph() {
    if (graph)
      cudaGraphExecDestroy(graph);
    graph = nullptr;
    inDev.clear();
    outs.clear();
  }
};

class CudaExecutor final : public Runner {
public:
  static llvm::Expected<std::unique_ptr<Runner>> create(RankProgram program,
                                                        const CudaOptions &opts,
                                                        Communicator *comm);
  ~CudaExecutor() override;

  llvm::Expected<std::vector<Tensor>> run(const llvm::StringMap<Tensor> &inputs,
                                          RunStats *stats) override;
  const std::vector<std::string> &outputNames() const override { return sched_.outputNames; }
  void setProfiling(bool on) override { profiling_ = on; }
  llvm::Error bindUpdate(llvm::StringRef output, llvm::StringRef state) override;
  llvm::Expected<Tensor> readState(llvm::StringRef name) override;
  llvm::Error writeState(llvm::StringRef name, const Tensor &value) override;

private:
  /// The value id of mutable state `name`, or an error.
  llvm::Expected<int> stateId(llvm::StringRef name) const;
  struct StepInfo {
    const KernelFn *cuda = nullptr, *cpu = nullptr;
    uint32_t hostMask = 0;
  };
  /// Per run.
  struct RunState {
    SigState *st = nullptr;
    bool capturing = false;
    bool abortCapture = false; // the run cannot be captured: rerun eagerly
    size_t eventsUsed = 0;
  };

  CudaExecutor() = default;
  llvm::Expected<std::vector<Tensor>> runOnce(const llvm::StringMap<Tensor> &inputs, SigState &st,
                                              bool capture, bool &aborted, RunStats *stats);
  llvm::Expected<std::vector<Tensor>> replay(const llvm::StringMap<Tensor> &inputs, SigState &st,
                                             RunStats *stats);
  llvm::Error execStep(size_t si, std::vector<Val> &values, RunState &rs);
  llvm::Error execGroup(const FusionGroup &g, std::vector<Val> &values, RunState &rs);
  llvm::Error execGroupNorm(const NormFusion &f, std::vector<Val> &values, RunState &rs,
                            bool &done);
  bool groupFuses(const FusionGroup &g, const std::vector<Val> &values, DType &dt,
                  std::vector<int64_t> &shape) const;
  llvm::Error groupInputs(const FusionGroup &g, std::vector<Val> &values, RunState &rs, int rank,
                          std::vector<Tensor> &ins, std::vector<const void *> &ptrs,
                          std::vector<int64_t> &strides);
  llvm::Expected<Tensor> deviceForm(int v, Val &val, RunState &rs);
  /// Waits for the stream, then turns a fault its kernels reported
  /// (CudaFault.h) into an error naming the node.
  llvm::Error syncAndCheckFault();
  /// With a communicator: its bounded wait for the run's end (runEnd_), so
  /// that a dead NCCL peer is an error, not a hang (Communicator::awaitDevice).
  llvm::Error awaitRun() {
    if (!comm_)
      return llvm::Error::success();
    return comm_->awaitDevice([this] { return cudaEventQuery(runEnd_) != cudaErrorNotReady; });
  }
  llvm::Expected<Tensor> hostForm(int v, Val &val, RunState &rs);
  llvm::Expected<std::vector<Tensor>> collectOutputs(const std::vector<Val> &outs);
  llvm::Error eventPair(size_t k, cudaEvent_t &a, cudaEvent_t &b);
  std::string signature(const llvm::StringMap<Tensor> &inputs) const;
  std::string valueName(int v) const;

  RankProgram program_;
  CudaOptions opts_;
  Communicator *comm_ = nullptr;
  std::unique_ptr<RankDevice> dev_;
  Schedule sched_;
  std::vector<StepInfo> info_;
  std::vector<FusionGroup> groups_;
  std::vector<int> groupOf_; // by step: the fusion group it belongs to, -1 for none
  /// LayerNormalizations run as one kernel with the group before them
  /// (findNormFusions); such a group runs at the LayerNormalization's step.
  std::vector<NormFusion> normFusions_;
  std::vector<int> normOf_;       // by step: index into normFusions_, -1 for none
  std::vector<bool> groupAtNorm_; // by group: runs at its normFusions_ step
  bool debugFusion_ = false;      // QN_DEBUG_FUSION: counts on stderr
  uint64_t normFused_ = 0, normFallback_ = 0;
  /// By step: the values to release after it. A fusion group runs at its last
  /// member's place, so its members' reads count from there.
  std::vector<std::vector<int>> releaseAt_;
  std::vector<Val> constants_; // by value id
  /// bindUpdate's pairs: output index, the state's value id. Mutable state
  /// has no host form (a host copy would go stale after the first update):
  /// every node reading it runs on the GPU.
  std::vector<std::pair<size_t, int>> updates_;
  std::vector<std::string> names_; // by value id
  std::map<std::string, std::unique_ptr<SigState>> sigs_;
  uint64_t useCounter_ = 0;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> events_; // collective timers
  cudaEvent_t runStart_ = nullptr, runEnd_ = nullptr;
  bool profiling_ = false;
};

llvm::Expected<std::unique_ptr<Runner>> CudaExecutor::create(RankProgram program,
                                                             const CudaOptions &opts,
                                                             Communicator *comm) {
  std::unique_ptr<CudaExecutor> ex(new CudaExecutor());
  ex->program_ = std::move(program);
  ex->opts_ = opts;
  ex->comm_ = comm;
  auto dev = RankDevice::create(opts.device, opts.allowTf32);
  if (!dev)
    return dev.takeError();
  ex->dev_ = std::move(*dev);
  auto sched = buildSchedule(ex->program_);
  if (!sched)
    return sched.takeError();
  ex->sched_ = std::move(*sched);
  const KernelRegistry &gpu = cudaRegistry(), &cpu = cpuRegistry();
  for (const Schedule::Step &s : ex->sched_.steps) {
    StepInfo i;
    i.cuda = gpu.lookup(s.domain, s.node->op_type());
    i.cpu = cpu.lookup(s.domain, s.node->op_type());
    i.hostMask = gpu.hostInputs(s.domain, s.node->op_type());
    if (!i.cuda && (!i.cpu || s.collective))
      return makeError("no CUDA kernel for " + (s.domain.empty() ? "" : s.domain + ".") +
                       s.node->op_type() + " (node '" + s.node->name() + "')");
    ex->info_.push_back(i);
  }
  ex->names_.resize(ex->sched_.numValues);
  for (const auto &[name, id] : ex->sched_.inputIds)
    ex->names_[id] = name;
  for (const Schedule::Step &s : ex->sched_.steps)
    for (size_t k = 0; k < s.outputs.size(); ++k)
      if (s.outputs[k] >= 0)
        ex->names_[s.outputs[k]] = s.node->output(static_cast<int>(k));
  ex->groupOf_.assign(ex->sched_.steps.size(), -1);
  if (opts.fuseElementwise) {
    ex->groups_ = findFusionGroups(ex->sched_, [&](int v, float &x) {
      for (auto &[id, name] : ex->sched_.constantIds)
        if (id == v) {
          if (ex->program_.state.contains(name))
            return false; // changes between runs: not a literal of the kernel
          const Tensor &t = ex->program_.constants[name];
          if (t.numel() != 1)
            return false;
          switch (t.dtype()) {
          case DType::Float: x = t.data<float>()[0]; return true;
          case DType::Float16: x = halfToFloat(t.data<uint16_t>()[0]); return true;
          case DType::BFloat16: x = bf16ToFloat(t.data<uint16_t>()[0]); return true;
          default: return false;
          }
        }
      return false;
    });
    for (size_t gi = 0; gi < ex->groups_.size(); ++gi)
      for (size_t si : ex->groups_[gi].steps)
        ex->groupOf_[si] = static_cast<int>(gi);
  }
  // Residual + LayerNormalization: the group feeding a LayerNormalization
  // runs in its kernel (execGroupNorm), at its step.
  ex->normFusions_ = findNormFusions(ex->sched_, ex->groups_);
  ex->normOf_.assign(ex->sched_.steps.size(), -1);
  ex->groupAtNorm_.assign(ex->groups_.size(), false);
  std::vector<size_t> runAt;
  for (const FusionGroup &g : ex->groups_)
    runAt.push_back(g.steps.back());
  for (size_t fi = 0; fi < ex->normFusions_.size(); ++fi) {
    const NormFusion &f = ex->normFusions_[fi];
    ex->normOf_[f.step] = static_cast<int>(fi);
    ex->groupAtNorm_[f.group] = true;
    runAt[f.group] = f.step;
  }
  ex->releaseAt_ = releaseListsWithGroups(ex->sched_, ex->groups_, runAt);
  if (const char *d = std::getenv("QN_DEBUG_FUSION"); d && *d && std::strcmp(d, "0") != 0) {
    ex->debugFusion_ = true;
    size_t members = 0;
    for (const FusionGroup &g : ex->groups_)
      members += g.steps.size();
    llvm::errs() << "qn: fusion: " << ex->groups_.size() << " elementwise groups (" << members
                 << " nodes), " << ex->normFusions_.size()
                 << " LayerNormalizations fused with the group before them\n";
  }
  if (comm)
    if (auto e = bindCommunicator(*comm, &ex->dev_->context()))
      return e;
  // Weights: uploaded once, host copies kept for the host-side nodes.
  ex->constants_.resize(ex->sched_.numValues);
  for (auto &[id, name] : ex->sched_.constantIds) {
    ex->names_[id] = name;
    const Tensor &h = ex->program_.constants[name];
    auto d = uploadPersistent(h, "weight '" + name + "'", ex->dev_->context().stream);
    if (!d)
      return d.takeError();
    ex->constants_[id] = Val{ex->program_.state.contains(name) ? Tensor() : h, std::move(*d)};
  }
  for (cudaEvent_t *e : {&ex->runStart_, &ex->runEnd_})
    if (cudaError_t err = cudaEventCreate(e); err != cudaSuccess)
      return cudaCallError(err, "cudaEventCreate");
  return std::unique_ptr<Runner>(std::move(ex));
}

CudaExecutor::~CudaExecutor() {
  if (debugFusion_)
    llvm::errs() << "qn: fusion: fused LayerNormalization kernels ran " << normFused_
                 << " times, fell back " << normFallback_ << " times\n";
  if (!dev_)
    return;
  cudaSetDevice(dev_->context().device);
  cudaStreamSynchronize(dev_->context().stream);
  sigs_.clear();
  constants_.clear();
  for (auto &[a, b] : events_) {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  if (runStart_)
    cudaEventDestroy(runStart_);
  if (runEnd_)
    cudaEventDestroy(runEnd_);
}

std::string CudaExecutor::valueName(int v) const {
  return v >= 0 && v < static_cast<int>(names_.size()) ? "'" + names_[v] + "'" : "<value>";
}

std::string CudaExecutor::signature(const llvm::StringMap<Tensor> &inputs) const {
  std::string s;
  for (const auto &[name, id] : sched_.inputIds) {
    auto it = inputs.find(name);
    s += name + "=" + (it == inputs.end() ? std::string("?") : it->second.describe()) + ";";
  }
  return s;
}

llvm::Error CudaExecutor::eventPair(size_t k, cudaEvent_t &a, cudaEvent_t &b) {
  while (events_.size() <= k) {
    cudaEvent_t x, y;
    if (cudaError_t e = cudaEventCreate(&x); e != cudaSuccess)
      return cudaCallError(e, "cudaEventCreate");
    if (cudaError_t e = cudaEventCreate(&y); e != cudaSuccess)
      return cudaCallError(e, "cudaEventCreate");
    events_.push_back({x, y});
  }
  a = events_[k].first;
  b = events_[k].second;
  return llvm::Error::success();
}

llvm::Expected<Tensor> CudaExecutor::deviceForm(int v, Val &val, RunState &rs) {
  if (val.dev.defined())
    return val.dev;
  auto it = rs.st->uploads.find(v);
  if (it != rs.st->uploads.end() && sameBytes(it->second.host, val.host)) {
    val.dev = it->second.dev;
    return val.dev;
  }
  if (rs.capturing) { // no synchronous copy inside a capture
    rs.abortCapture = true;
    return Tensor();
  }
  auto d = uploadPersistent(val.host, "value " + valueName(v), dev_->context().stream);
  if (!d)
    return d.takeError();
  rs.st->uploads[v] = Val{val.host, *d};
  val.dev = std::move(*d);
  return val.dev;
}

llvm::Expected<Tensor> CudaExecutor::hostForm(int v, Val &val, RunState &rs) {
  if (val.host.defined())
    return val.host;
  if (rs.capturing) { // a device -> host copy synchronises: not in a graph
    rs.abortCapture = true;
    rs.st->graphable = false;
    return Tensor();
  }
  auto h = download(val.dev, dev_->context().stream, "value " + valueName(v));
  if (!h)
    return h.takeError();
  val.host = std::move(*h);
  return val.host;
}

llvm::Error CudaExecutor::execStep(size_t si, std::vector<Val> &values, RunState &rs) {
  const Schedule::Step &s = sched_.steps[si];
  const StepInfo &info = info_[si];
  DeviceContext &dc = dev_->context();
  bool allHost = true;
  for (int v : s.inputs)
    if (v >= 0 && !values[v].host.defined())
      allHost = false;
  bool onHost = (!s.collective && allHost && info.cpu) || !info.cuda;
  std::vector<Tensor> ins(s.inputs.size());
  std::vector<const Tensor *> ptrs(s.inputs.size(), nullptr);
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    int v = s.inputs[i];
    if (v < 0)
      continue;
    bool wantHost = onHost || (i < 32 && (info.hostMask >> i & 1u));
    auto t = wantHost ? hostForm(v, values[v], rs) : deviceForm(v, values[v], rs);
    if (!t)
      return t.takeError();
    if (rs.abortCapture)
      return llvm::Error::success();
    ins[i] = std::move(*t);
    ptrs[i] = &ins[i];
  }
  std::vector<Tensor> outs(s.outputs.size());
  KernelContext ctx{*s.node, ptrs, outs, comm_, s.opset, onHost ? nullptr : &dc};
  bool timed = s.collective && comm_ && !rs.capturing;
  cudaEvent_t before = nullptr, after = nullptr;
  if (timed) {
    if (auto e = eventPair(rs.eventsUsed++, before, after))
      return e;
    cudaEventRecord(before, dc.stream);
  }
  if (auto e = (onHost ? *info.cpu : *info.cuda)(ctx))
    return e;
  if (timed)
    cudaEventRecord(after, dc.stream);
  for (size_t k = 0; k < s.outputs.size(); ++k) {
    int v = s.outputs[k];
    if (v < 0)
      continue;
    values[v] = Val();
    (outs[k].onHost() ? values[v].host : values[v].dev) = std::move(outs[k]);
  }
  return llvm::Error::success();
}

bool CudaExecutor::groupFuses(const FusionGroup &g, const std::vector<Val> &values, DType &dt,
                              std::vector<int64_t> &shape) const {
  // One kernel when every input is a float32/float16/bfloat16 tensor of one
  // dtype and some input lives on the device only; otherwise (shape
  // arithmetic on the host, integers, mixed dtypes) node by node.
  dt = DType::Undefined;
  bool fused = true, deviceOnly = false;
  std::vector<std::vector<int64_t>> shapes;
  for (int v : g.inputs) {
    const Val &x = values[v];
    const Tensor &t = x.dev.defined() ? x.dev : x.host;
    if (!t.defined() || (dt != DType::Undefined && t.dtype() != dt))
      fused = false;
    dt = t.dtype();
    fused &= dt == DType::Float || dt == DType::Float16 || dt == DType::BFloat16;
    deviceOnly |= !x.host.defined();
    shapes.push_back(t.shape());
  }
  return fused && deviceOnly && fusedShape(shapes, shape);
}

llvm::Error CudaExecutor::groupInputs(const FusionGroup &g, std::vector<Val> &values,
                                      RunState &rs, int rank, std::vector<Tensor> &ins,
                                      std::vector<const void *> &ptrs,
                                      std::vector<int64_t> &strides) {
  strides.assign(g.inputs.size() * rank, 0);
  for (size_t j = 0; j < g.inputs.size(); ++j) {
    auto t = deviceForm(g.inputs[j], values[g.inputs[j]], rs);
    if (!t)
      return t.takeError();
    if (rs.abortCapture)
      return llvm::Error::success();
    int64_t st = 1;
    for (int64_t k = t->rank() - 1; k >= 0; --k) {
      strides[j * rank + (rank - t->rank() + k)] = t->dim(k) == 1 ? 0 : st;
      st *= t->dim(k);
    }
    ptrs.push_back(t->raw());
    ins.push_back(std::move(*t));
  }
  return llvm::Error::success();
}

llvm::Error CudaExecutor::execGroup(const FusionGroup &g, std::vector<Val> &values, RunState &rs) {
  DType dt;
  std::vector<int64_t> shape;
  if (!groupFuses(g, values, dt, shape)) {
    for (size_t si : g.steps) {
      if (auto e = execStep(si, values, rs))
        return e;
      if (rs.abortCapture)
        return llvm::Error::success();
    }
    for (int v : g.intermediates)
      values[v] = Val();
    return llvm::Error::success();
  }
  DeviceContext &dc = dev_->context();
  int rank = static_cast<int>(shape.size());
  std::vector<Tensor> ins;
  std::vector<const void *> ptrs;
  std::vector<int64_t> strides;
  if (auto e = groupInputs(g, values, rs, rank, ins, ptrs, strides))
    return e;
  if (rs.abortCapture)
    return llvm::Error::success();
  Tensor out = dc.alloc(dt, shape);
  cudaError_t err;
  const onnx::NodeProto &last = *sched_.steps[g.steps.back()].node;
  if (!launchFused(g.program, ptrs.data(), strides.data(), shape.data(), rank, out.raw(),
                   static_cast<int32_t>(dt), dc.stream, err))
    return makeError(nodeLabel(last) + ": fused kernel: unsupported dtype");
  if (err != cudaSuccess)
    return cudaCallError(err, nodeLabel(last) + " (fused with " +
                                  llvm::Twine(g.steps.size() - 1) + " nodes before it)");
  values[g.output] = Val();
  values[g.output].dev = std::move(out);
  return llvm::Error::success();
}

llvm::Error CudaExecutor::execGroupNorm(const NormFusion &f, std::vector<Val> &values,
                                        RunState &rs, bool &done) {
  // One kernel when the group would fuse and the LayerNormalization
  // normalises its output along the last axis only (rows of at most
  // kFusedNormMaxCols), with Scale and B of `cols` elements; otherwise
  // (done = false) the caller runs the group, then the node.
  done = false;
  const FusionGroup &g = groups_[f.group];
  const Schedule::Step &s = sched_.steps[f.step];
  DType dt;
  std::vector<int64_t> shape;
  if (!groupFuses(g, values, dt, shape) || shape.empty())
    return llvm::Error::success();
  int rank = static_cast<int>(shape.size());
  int64_t cols = shape.back(), rows = 1;
  for (int k = 0; k + 1 < rank; ++k)
    rows *= shape[k];
  if (rows <= 0 || cols <= 0 || cols > kFusedNormMaxCols)
    return llvm::Error::success();
  // The node's checks (planLayerNorm) on X's shape: a view without data.
  Tensor xShape = Tensor::view(dt, shape, nullptr, nullptr, Location::Cuda);
  std::vector<const Tensor *> planIns(s.inputs.size(), nullptr);
  planIns[0] = &xShape;
  for (size_t k = 1; k < s.inputs.size(); ++k) {
    int v = s.inputs[k];
    if (v < 0)
      continue;
    const Val &x = values[v];
    planIns[k] = x.dev.defined() ? &x.dev : &x.host;
    if (!planIns[k]->defined())
      return llvm::Error::success();
  }
  std::vector<Tensor> planOuts(s.outputs.size());
  KernelContext pctx{*s.node, planIns, planOuts, comm_, s.opset, &dev_->context()};
  cpu::LayerNormPlan p;
  if (auto e = cpu::planLayerNorm(pctx, p)) { // the plain kernel reports it
    llvm::consumeError(std::move(e));
    return llvm::Error::success();
  }
  if (p.axis != rank - 1 || p.rows != rows || p.cols != cols)
    return llvm::Error::success();
  for (size_t k = 1; k < planIns.size() && k < 3; ++k)
    if (planIns[k] && planIns[k]->numel() != cols)
      return llvm::Error::success(); // a broadcast Scale/B: the plain kernel
  DeviceContext &dc = dev_->context();
  std::vector<Tensor> ins;
  std::vector<const void *> ptrs;
  std::vector<int64_t> strides;
  if (auto e = groupInputs(g, values, rs, rank, ins, ptrs, strides))
    return e;
  if (rs.abortCapture)
    return llvm::Error::success();
  Tensor sb[2];
  for (int k = 1; k <= 2; ++k) {
    if (k >= static_cast<int>(s.inputs.size()) || s.inputs[k] < 0)
      continue;
    auto t = deviceForm(s.inputs[k], values[s.inputs[k]], rs);
    if (!t)
      return t.takeError();
    if (rs.abortCapture)
      return llvm::Error::success();
    sb[k - 1] = std::move(*t);
  }
  Tensor x = f.writeX ? dc.alloc(dt, shape) : Tensor();
  Tensor y = dc.alloc(dt, shape);
  cudaError_t err;
  if (!launchFusedLayerNorm(g.program, ptrs.data(), strides.data(), shape.data(), rank,
                            x.defined() ? x.raw() : nullptr,
                            sb[0].defined() ? sb[0].raw() : nullptr,
                            sb[1].defined() ? sb[1].raw() : nullptr, y.raw(), p.eps,
                            static_cast<int32_t>(dt), dc.stream, err))
    return makeError(nodeLabel(*s.node) + ": fused LayerNormalization kernel: unsupported");
  if (err != cudaSuccess)
    return cudaCallError(err, nodeLabel(*s.node) + " (fused with the " +
                                  llvm::Twine(g.steps.size()) + " elementwise nodes before it)");
  values[g.output] = Val();
  if (f.writeX)
    values[g.output].dev = std::move(x);
  values[s.outputs[0]] = Val();
  values[s.outputs[0]].dev = std::move(y);
  done = true;
  return llvm::Error::success();
}

llvm::Expected<int> CudaExecutor::stateId(llvm::StringRef name) const {
  if (!program_.state.contains(name))
    return makeError("'" + name + "' is not mutable state of this rank program");
  for (const auto &[id, n] : sched_.constantIds)
    if (n == name)
      return id;
  return makeError("mutable state '" + name + "' is not read by the rank graph");
}

llvm::Error CudaExecutor::bindUpdate(llvm::StringRef output, llvm::StringRef name) {
  auto id = stateId(name);
  if (!id)
    return id.takeError();
  for (size_t k = 0; k < sched_.outputNames.size(); ++k)
    if (sched_.outputNames[k] == output) {
      updates_.push_back({k, *id});
      return llvm::Error::success();
    }
  return makeError("the rank program has no output '" + output + "' (the update of '" + name +
                   "')");
}

llvm::Expected<Tensor> CudaExecutor::readState(llvm::StringRef name) {
  auto id = stateId(name);
  if (!id)
    return id.takeError();
  if (auto e = dev_->makeCurrent())
    return std::move(e);
  auto h = download(constants_[*id].dev, dev_->context().stream, ("state '" + name + "'").str());
  if (!h)
    return h.takeError();
  if (cudaError_t e = cudaStreamSynchronize(dev_->context().stream); e != cudaSuccess)
    return cudaCallError(e, "reading state '" + name + "'");
  return h;
}

llvm::Error CudaExecutor::writeState(llvm::StringRef name, const Tensor &value) {
  auto id = stateId(name);
  if (!id)
    return id.takeError();
  Tensor &d = constants_[*id].dev;
  if (value.dtype() != d.dtype() || value.nbytes() != d.nbytes())
    return makeError("state '" + name + "' is " + d.describe() + ", not " + value.describe());
  if (auto e = dev_->makeCurrent())
    return e;
  if (auto e = uploadInto(value, d, dev_->context().stream, ("state '" + name + "'").str()))
    return e;
  if (cudaError_t e = cudaStreamSynchronize(dev_->context().stream); e != cudaSuccess)
    return cudaCallError(e, "writing state '" + name + "'");
  return llvm::Error::success();
}

llvm::Expected<std::vector<Tensor>> CudaExecutor::collectOutputs(const std::vector<Val> &outs) {
  std::vector<Tensor> result;
  std::vector<int> into(outs.size(), -1); // bound updates: the state's value id
  for (const auto &[k, id] : updates_)
    if (commitUpdates_)
      into[k] = id;
  for (size_t k = 0; k < outs.size(); ++k) {
    const Val &v = outs[k];
    if (into[k] >= 0) {
      // An update: written into its state on the device, after every
      // kernel of the run that reads the state (same stream).
      Tensor &d = constants_[into[k]].dev;
      const Tensor &u = v.dev.defined() ? v.dev : v.host;
      if (!u.defined())
        return makeError("graph output '" + sched_.outputNames[k] + "' was not computed");
      if (u.dtype() != d.dtype() || u.nbytes() != d.nbytes())
        return makeError("the update '" + sched_.outputNames[k] + "' is " + u.describe() +
                         " but its state is " + d.describe());
      if (v.dev.defined()) {
        if (u.raw() != d.raw() && u.nbytes())
          if (cudaError_t e = cudaMemcpyAsync(d.raw(), u.raw(), u.nbytes(),
                                              cudaMemcpyDeviceToDevice, dev_->context().stream);
              e != cudaSuccess)
            return cudaCallError(e, "updating state from '" + sched_.outputNames[k] + "'");
      } else if (auto e = uploadInto(u, d, dev_->context().stream,
                                     "update '" + sched_.outputNames[k] + "'")) {
        return std::move(e);
      }
      result.push_back(Tensor());
      continue;
    }
    if (v.host.defined()) {
      result.push_back(v.host);
      continue;
    }
    if (!v.dev.defined())
      return makeError("graph output '" + sched_.outputNames[k] + "' was not computed");
    auto h = download(v.dev, dev_->context().stream, "output '" + sched_.outputNames[k] + "'");
    if (!h)
      return h.takeError();
    result.push_back(std::move(*h));
  }
  return result;
}

llvm::Error CudaExecutor::syncAndCheckFault() {
  DeviceContext &dc = dev_->context();
  if (cudaError_t e = cudaStreamSynchronize(dc.stream); e != cudaSuccess)
    return cudaCallError(e, "running the plan");
  int32_t f = takeFault(dc);
  if (!f)
    return llvm::Error::success();
  size_t site = static_cast<size_t>(f / kFaultKinds);
  if (site == 0 || site > sched_.steps.size())
    return makeError(strCat("a CUDA kernel reported ", faultWhat(f), " at an unknown node"));
  return faultError(*sched_.steps[site - 1].node, f);
}

llvm::Expected<std::vector<Tensor>> CudaExecutor::runOnce(const llvm::StringMap<Tensor> &inputs,
                                                          SigState &st, bool capture,
                                                          bool &aborted, RunStats *stats) {
  auto t0 = Clock::now();
  aborted = false;
  DeviceContext &dc = dev_->context();
  Allocator &alloc = dev_->allocator();
  bool record = !st.plan;
  if (record)
    alloc.startRecord();
  else
    alloc.startReplay(st.plan.get());
  RunState rs;
  rs.st = &st;
  auto fail = [&](llvm::Error e) -> llvm::Error {
    if (rs.capturing) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(dc.stream, &g);
      if (g)
        cudaGraphDestroy(g);
      cudaGetLastError();
    }
    alloc.stop();
    cudaStreamSynchronize(dc.stream);
    cudaGetLastError();
    discardFault(dc);
    return e;
  };

  std::vector<Val> values = constants_;
  std::vector<Tensor> inDev;
  for (const auto &[name, id] : sched_.inputIds) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return fail(makeError("missing input '" + name + "'"));
    Tensor d = dc.alloc(it->second.dtype(), it->second.shape());
    if (auto e = uploadInto(it->second, d, dc.stream, "input '" + name + "'"))
      return fail(std::move(e));
    values[id].dev = d;
    inDev.push_back(std::move(d));
  }
  cudaEventRecord(runStart_, dc.stream);
  if (capture) {
    if (cudaError_t e = cudaStreamBeginCapture(dc.stream, cudaStreamCaptureModeThreadLocal);
        e != cudaSuccess)
      return fail(cudaCallError(e, "cudaStreamBeginCapture"));
    rs.capturing = true;
  }
  for (size_t si = 0; si < sched_.steps.size(); ++si) {
    dc.faultSite = static_cast<int32_t>(si + 1);
    if (int fi = normOf_[si]; fi >= 0) {
      const NormFusion &f = normFusions_[fi];
      bool done = false;
      if (auto e = execGroupNorm(f, values, rs, done))
        return fail(std::move(e));
      if (!done && !rs.abortCapture) { // the group, then the node
        if (auto e = execGroup(groups_[f.group], values, rs))
          return fail(std::move(e));
        if (!rs.abortCapture)
          if (auto e = execStep(si, values, rs))
            return fail(std::move(e));
      }
      if (!rs.abortCapture)
        ++(done ? normFused_ : normFallback_);
    } else if (int gi = groupOf_[si]; gi >= 0) {
      const FusionGroup &g = groups_[gi];
      if (si != g.steps.back() || groupAtNorm_[gi])
        continue; // runs with the group's last node (or its LayerNormalization)
      if (auto e = execGroup(g, values, rs))
        return fail(std::move(e));
    } else if (auto e = execStep(si, values, rs)) {
      return fail(std::move(e));
    }
    if (rs.abortCapture)
      break;
    for (int v : releaseAt_[si])
      values[v] = Val();
  }
  std::vector<Val> outs;
  for (int v : sched_.outputIds)
    outs.push_back(values[v]);
  if (capture) {
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(dc.stream, &g);
    rs.capturing = false;
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess && !rs.abortCapture)
      e = cudaGraphInstantiate(&exec, g, 0);
    if (g)
      cudaGraphDestroy(g);
    if (e != cudaSuccess || rs.abortCapture) {
      cudaGetLastError();
      alloc.stop();
      aborted = true; // the caller reruns eagerly
      st.graphable = false;
      return std::vector<Tensor>();
    }
    if (cudaError_t le = cudaGraphLaunch(exec, dc.stream); le != cudaSuccess) {
      cudaGraphExecDestroy(exec);
      return fail(cudaCallError(le, "cudaGraphLaunch"));
    }
    st.graph = exec;
    st.inDev = inDev;
    st.outs = outs;
  }
  cudaEventRecord(runEnd_, dc.stream);
  if (auto e = enqueueFaultRead(dc))
    return fail(std::move(e));
  if (auto e = awaitRun())
    return fail(std::move(e));
  auto result = collectOutputs(outs);
  if (!result)
    return fail(result.takeError());
  // A fault is returned after the bookkeeping below (the plan and the graph
  // stay valid: the fault depends on the input values).
  if (auto e = syncAndCheckFault())
    result = llvm::Expected<std::vector<Tensor>>(std::move(e));
  values.clear();
  outs.clear();
  inDev.clear();
  if (stats) {
    float ms = 0;
    cudaEventElapsedTime(&ms, runStart_, runEnd_);
    stats->deviceMs = ms;
    double coll = 0;
    for (size_t k = 0; k < rs.eventsUsed; ++k) {
      float c = 0;
      cudaEventElapsedTime(&c, events_[k].first, events_[k].second);
      coll += c;
    }
    stats->collectiveMs = coll;
  }
  if (record) {
    auto plan = alloc.finishRecord();
    if (!plan) {
      llvm::consumeError(result.takeError());
      return plan.takeError();
    }
    st.plan = std::move(*plan);
  } else {
    alloc.stop();
    if (alloc.replayBroken()) { // cannot happen for equal shapes; re-record
      st.dropGraph();
      st.plan.reset();
    }
  }
  if (stats)
    stats->totalMs = msSince(t0);
  return result;
}

llvm::Expected<std::vector<Tensor>> CudaExecutor::replay(const llvm::StringMap<Tensor> &inputs,
                                                         SigState &st, RunStats *stats) {
  auto t0 = Clock::now();
  DeviceContext &dc = dev_->context();
  for (size_t k = 0; k < sched_.inputIds.size(); ++k) {
    const std::string &name = sched_.inputIds[k].first;
    auto it = inputs.find(name);
    if (it == inputs.end())
      return makeError("missing input '" + name + "'");
    if (auto e = uploadInto(it->second, st.inDev[k], dc.stream, "input '" + name + "'"))
      return e;
  }
  cudaEventRecord(runStart_, dc.stream);
  if (cudaError_t e = cudaGraphLaunch(st.graph, dc.stream); e != cudaSuccess)
    return cudaCallError(e, "cudaGraphLaunch");
  cudaEventRecord(runEnd_, dc.stream);
  if (auto e = enqueueFaultRead(dc))
    return e;
  if (auto e = awaitRun())
    return e;
  auto result = collectOutputs(st.outs);
  if (!result)
    return result.takeError();
  if (auto e = syncAndCheckFault())
    return e;
  if (stats) {
    float ms = 0;
    cudaEventElapsedTime(&ms, runStart_, runEnd_);
    stats->deviceMs = ms;
    // Collectives inside a graph cannot be timed apart (setProfiling).
    stats->collectiveMs = comm_ ? -1 : 0;
    stats->totalMs = msSince(t0);
  }
  return result;
}

llvm::Expected<std::vector<Tensor>> CudaExecutor::run(const llvm::StringMap<Tensor> &inputs,
                                                      RunStats *stats) {
  if (auto e = dev_->makeCurrent())
    return e;
  std::string sig = signature(inputs);
  auto &slot = sigs_[sig];
  if (!slot) {
    if (sigs_.size() > kMaxSignatures) { // drop the least recently used
      auto victim = sigs_.end();
      for (auto it = sigs_.begin(); it != sigs_.end(); ++it)
        if (it->second && (victim == sigs_.end() || it->second->lastUse < victim->second->lastUse))
          victim = it;
      if (victim != sigs_.end()) {
        cudaStreamSynchronize(dev_->context().stream);
        sigs_.erase(victim);
      }
    }
    slot = std::make_unique<SigState>();
  }
  SigState &st = *sigs_[sig];
  st.lastUse = ++useCounter_;
  if (st.graph && !profiling_)
    return replay(inputs, st, stats);
  bool capture = st.plan && opts_.useGraphs && st.graphable && !profiling_ && !st.graph &&
                 (!comm_ || comm_->capturable());
  bool aborted = false;
  auto r = runOnce(inputs, st, capture, aborted, stats);
  if (r && aborted)
    r = runOnce(inputs, st, /*capture=*/false, aborted, stats);
  return r;
}

} // namespace

llvm::Expected<std::unique_ptr<Runner>> createExecutor(RankProgram program,
                                                       const CudaOptions &opts,
                                                       Communicator *comm) {
  return CudaExecutor::create(std::move(program), opts, comm);
}

} // namespace cuda

} // namespace qn::rt
