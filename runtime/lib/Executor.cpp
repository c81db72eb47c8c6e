//===- Executor.cpp -------------------------------------------------------===//
#include "qn/runtime/Executor.h"

#include <cstring>

#include <chrono>

#include "llvm/ADT/StringMap.h"

namespace qn::rt {
namespace {
llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}
using Clock = std::chrono::steady_clock;
double msSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}
} // namespace

Runner::~Runner() = default;

llvm::Expected<Schedule> buildSchedule(const RankProgram &program) {
  Schedule sc;
  const onnx::GraphProto &g = program.model.graph();
  llvm::StringMap<int> ids;
  auto idOf = [&](const std::string &name) {
    auto [it, inserted] = ids.insert({name, sc.numValues});
    if (inserted)
      ++sc.numValues;
    return it->second;
  };
  llvm::StringMap<int> opsets;
  for (const auto &op : program.model.opset_import())
    opsets[op.domain() == "ai.onnx" ? "" : op.domain()] = static_cast<int>(op.version());

  for (auto &kv : program.constants)
    sc.constantIds.push_back({idOf(kv.getKey().str()), kv.getKey().str()});
  for (const auto &vi : g.input())
    if (!program.constants.count(vi.name()))
      sc.inputIds.push_back({vi.name(), idOf(vi.name())});
  for (const onnx::NodeProto &n : g.node()) {
    Schedule::Step s;
    s.node = &n;
    s.domain = n.domain() == "ai.onnx" ? "" : n.domain();
    for (const std::string &in : n.input()) {
      if (in.empty()) {
        s.inputs.push_back(-1);
        continue;
      }
      auto it = ids.find(in);
      if (it == ids.end())
        return fail("node '" + n.name() + "' reads '" + in + "', which nothing produces");
      s.inputs.push_back(it->second);
    }
    for (const std::string &out : n.output())
      s.outputs.push_back(out.empty() ? -1 : idOf(out));
    s.collective = n.domain() == "ai.quintnet";
    auto op = opsets.find(s.domain);
    s.opset = op == opsets.end() ? 1 : op->second;
    sc.steps.push_back(std::move(s));
  }
  for (const auto &vi : g.output()) {
    auto it = ids.find(vi.name());
    if (it == ids.end())
      return fail("graph output '" + vi.name() + "' is never produced");
    sc.outputIds.push_back(it->second);
    sc.outputNames.push_back(vi.name());
  }
  std::vector<bool> isConstant(sc.numValues, false);
  for (auto &c : sc.constantIds)
    isConstant[c.first] = true;
  // Lifetimes: release a non-constant, non-output value after its last use.
  std::vector<int> lastUse(sc.numValues, -1);
  for (size_t i = 0; i < sc.steps.size(); ++i) {
    for (int v : sc.steps[i].inputs)
      if (v >= 0)
        lastUse[v] = static_cast<int>(i);
    for (int v : sc.steps[i].outputs)
      if (v >= 0 && lastUse[v] < static_cast<int>(i))
        lastUse[v] = static_cast<int>(i); // produced but never read
  }
  for (int v : sc.outputIds)
    lastUse[v] = -1;
  for (int v = 0; v < sc.numValues; ++v)
    if (lastUse[v] >= 0 && !isConstant[v])
      sc.steps[lastUse[v]].release.push_back(v);
  return sc;
}

llvm::Expected<std::unique_ptr<Executor>>
Executor::create(RankProgram program, const KernelRegistry &kernels, Communicator *comm) {
  auto ex = std::unique_ptr<Executor>(new Executor());
  ex->program_ = std::move(program);
  ex->comm_ = comm;
  auto sched = buildSchedule(ex->program_);
  if (!sched)
    return sched.takeError();
  ex->sched_ = std::move(*sched);
  for (const Schedule::Step &s : ex->sched_.steps) {
    const KernelFn *k = kernels.lookup(s.domain, s.node->op_type());
    if (!k)
      return fail("no CPU kernel for " + (s.domain.empty() ? "" : s.domain + ".") +
                  s.node->op_type() + " (node '" + s.node->name() + "')");
    ex->kernels_.push_back(k);
  }
  ex->constants_.resize(ex->sched_.numValues);
  for (auto &[id, name] : ex->sched_.constantIds)
    ex->constants_[id] = ex->program_.constants[name];
  ex->outputNames_ = ex->sched_.outputNames;
  return ex;
}

llvm::Expected<Tensor> Executor::state(llvm::StringRef name) {
  if (!program_.state.contains(name))
    return fail("'" + name + "' is not mutable state of this rank program" +
                (program_.constants.count(name) ? " (a mapped, read-only weight)" : ""));
  // constants_ shares the buffer: writes through it reach the next run.
  return program_.constants[name];
}

llvm::Error Executor::bindUpdate(llvm::StringRef output, llvm::StringRef name) {
  auto buf = state(name);
  if (!buf)
    return buf.takeError();
  for (size_t k = 0; k < outputNames_.size(); ++k)
    if (outputNames_[k] == output) {
      updates_.push_back({k, *buf});
      return llvm::Error::success();
    }
  return fail("the rank program has no output '" + output + "' (the update of '" + name + "')");
}

llvm::Error Executor::writeState(llvm::StringRef name, const Tensor &value) {
  auto buf = state(name);
  if (!buf)
    return buf.takeError();
  if (value.dtype() != buf->dtype() || value.nbytes() != buf->nbytes())
    return fail("state '" + name + "' is " + buf->describe() + ", not " + value.describe());
  if (value.raw() != buf->raw())
    std::memcpy(buf->raw(), value.raw(), value.nbytes());
  return llvm::Error::success();
}

llvm::Expected<std::vector<Tensor>> Executor::run(const llvm::StringMap<Tensor> &inputs,
                                                  RunStats *stats) {
  auto start = Clock::now();
  std::vector<Tensor> values = constants_;
  for (const auto &[name, id] : sched_.inputIds) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return fail("missing input '" + name + "'");
    values[id] = it->second;
  }
  double collectiveMs = 0;
  std::vector<RunStats::NodeTime> *nodeTimes = stats ? stats->nodes : nullptr;
  if (nodeTimes)
    nodeTimes->assign(sched_.steps.size(), {});
  std::vector<const Tensor *> ins;
  std::vector<Tensor> outs;
  for (size_t si = 0; si < sched_.steps.size(); ++si) {
    const Schedule::Step &s = sched_.steps[si];
    ins.clear();
    for (int v : s.inputs)
      ins.push_back(v >= 0 ? &values[v] : nullptr);
    outs.assign(s.outputs.size(), Tensor());
    KernelContext ctx{*s.node, ins, outs, comm_, s.opset};
    auto t0 = Clock::now();
    if (auto err = (*kernels_[si])(ctx))
      return err;
    if (s.collective || nodeTimes) {
      double ms = msSince(t0);
      if (s.collective)
        collectiveMs += ms;
      if (nodeTimes)
        (*nodeTimes)[si] = {std::chrono::duration<double, std::milli>(t0 - start).count(), ms};
    }
    for (size_t i = 0; i < s.outputs.size(); ++i)
      if (s.outputs[i] >= 0)
        values[s.outputs[i]] = std::move(outs[i]);
    for (int v : s.release)
      values[v] = Tensor();
  }
  std::vector<Tensor> result;
  for (int v : sched_.outputIds)
    result.push_back(values[v]);
  for (auto &[k, buf] : updates_) {
    if (!commitUpdates_)
      break;
    Tensor &u = result[k];
    if (u.dtype() != buf.dtype() || u.nbytes() != buf.nbytes())
      return fail("the update '" + outputNames_[k] + "' is " + u.describe() +
                  " but its state is " + buf.describe());
    if (u.raw() != buf.raw())
      std::memcpy(buf.raw(), u.raw(), u.nbytes());
    u = Tensor();
  }
  if (stats) {
    stats->totalMs = msSince(start);
    stats->collectiveMs = collectiveMs;
  }
  return result;
}

} // namespace qn::rt
