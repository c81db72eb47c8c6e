//===- Executor.cpp -------------------------------------------------------===//
#include "qn/runtime/Executor.h"

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

llvm::Expected<std::unique_ptr<Executor>>
Executor::create(RankProgram program, const KernelRegistry &kernels, Communicator *comm) {
  auto ex = std::unique_ptr<Executor>(new Executor());
  ex->program_ = std::move(program);
  ex->comm_ = comm;
  const onnx::GraphProto &g = ex->program_.model.graph();
  llvm::StringMap<int> ids;
  auto idOf = [&](const std::string &name) {
    auto [it, inserted] = ids.insert({name, ex->numValues_});
    if (inserted)
      ++ex->numValues_;
    return it->second;
  };
  llvm::StringMap<int> opsets;
  for (const auto &op : ex->program_.model.opset_import())
    opsets[op.domain() == "ai.onnx" ? "" : op.domain()] = static_cast<int>(op.version());

  for (auto &kv : ex->program_.constants)
    idOf(kv.getKey().str());
  for (const auto &vi : g.input())
    if (!ex->program_.constants.count(vi.name()))
      ex->inputIds_.push_back({vi.name(), idOf(vi.name())});
  for (const onnx::NodeProto &n : g.node()) {
    Step s;
    s.node = &n;
    s.kernel = kernels.lookup(n.domain() == "ai.onnx" ? "" : n.domain(), n.op_type());
    if (!s.kernel)
      return fail("no CPU kernel for " + (n.domain().empty() ? "" : n.domain() + ".") +
                  n.op_type() + " (node '" + n.name() + "')");
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
    auto op = opsets.find(n.domain() == "ai.onnx" ? "" : n.domain());
    s.opset = op == opsets.end() ? 1 : op->second;
    ex->steps_.push_back(std::move(s));
  }
  for (const auto &vi : g.output()) {
    auto it = ids.find(vi.name());
    if (it == ids.end())
      return fail("graph output '" + vi.name() + "' is never produced");
    ex->outputIds_.push_back(it->second);
    ex->outputNames_.push_back(vi.name());
  }
  ex->constants_.resize(ex->numValues_);
  for (auto &kv : ex->program_.constants)
    ex->constants_[ids[kv.getKey()]] = kv.getValue();
  // Lifetimes: release a non-constant, non-output value after its last use.
  std::vector<int> lastUse(ex->numValues_, -1);
  for (size_t i = 0; i < ex->steps_.size(); ++i) {
    for (int v : ex->steps_[i].inputs)
      if (v >= 0)
        lastUse[v] = static_cast<int>(i);
    for (int v : ex->steps_[i].outputs)
      if (v >= 0 && lastUse[v] < static_cast<int>(i))
        lastUse[v] = static_cast<int>(i); // produced but never read
  }
  for (int v : ex->outputIds_)
    lastUse[v] = -1;
  for (int v = 0; v < ex->numValues_; ++v)
    if (lastUse[v] >= 0 && !ex->constants_[v].defined())
      ex->steps_[lastUse[v]].release.push_back(v);
  return ex;
}

llvm::Expected<std::vector<Tensor>> Executor::run(const llvm::StringMap<Tensor> &inputs,
                                                  RunStats *stats) {
  auto start = Clock::now();
  std::vector<Tensor> values = constants_;
  for (const auto &[name, id] : inputIds_) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return fail("missing input '" + name + "'");
    values[id] = it->second;
  }
  double collectiveMs = 0;
  std::vector<const Tensor *> ins;
  std::vector<Tensor> outs;
  for (const Step &s : steps_) {
    ins.clear();
    for (int v : s.inputs)
      ins.push_back(v >= 0 ? &values[v] : nullptr);
    outs.assign(s.outputs.size(), Tensor());
    KernelContext ctx{*s.node, ins, outs, comm_, s.opset};
    auto t0 = Clock::now();
    if (auto err = (*s.kernel)(ctx))
      return err;
    if (s.collective)
      collectiveMs += msSince(t0);
    for (size_t i = 0; i < s.outputs.size(); ++i)
      if (s.outputs[i] >= 0)
        values[s.outputs[i]] = std::move(outs[i]);
    for (int v : s.release)
      values[v] = Tensor();
  }
  std::vector<Tensor> result;
  for (int v : outputIds_)
    result.push_back(values[v]);
  if (stats) {
    stats->totalMs = msSince(start);
    stats->collectiveMs = collectiveMs;
  }
  return result;
}

} // namespace qn::rt
