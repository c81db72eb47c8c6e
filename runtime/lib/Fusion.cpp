//===- Fusion.cpp - Chains of elementwise nodes run as one kernel ---------===//
#include "Fusion.h"

#include <algorithm>
#include <map>
#include <set>

#include "onnx/onnx_pb.h"
#include "OpSemantics.h"
#include "qn/ops/OpTable.h"
#include "qn/runtime/Kernel.h"

namespace qn::rt {
namespace {

/// The instruction (opcode, Activations.h op and attributes) and arity of a
/// fusable node, or false. Fusable: an op the op table marks OF_Fusable, of
/// one output, with its inputs all given (Max/Min: two).
bool fusableOp(const onnx::NodeProto &n, FuseInstr &instr, int &arity) {
  const ops::OpInfo *info = ops::findOp(n.domain(), n.op_type());
  if (!info || info->domain != ops::OD_Onnx || n.output_size() != 1 || n.output(0).empty())
    return false;
  for (const std::string &in : n.input())
    if (in.empty())
      return false;
  instr = FuseInstr{};
  if (n.op_type() == "Gelu") {
    std::string a = attrString(n, "approximate", "none");
    if (a != "none" && a != "tanh")
      return false;
    instr.op = a == "none" ? FO_GeluErf : FO_GeluTanh;
    arity = 1;
    return n.input_size() == 1;
  }
  if (!info->has(ops::OF_Fusable))
    return false;
  arity = info->kind == ops::OK_Unary ? 1 : 2;
  if (n.input_size() != arity)
    return false;
  if (const ActInfo *act = cpu::findAct(n.op_type())) {
    instr.op = FO_Act;
    instr.act = static_cast<uint8_t>(act->act);
    instr.c = act->attrA ? attrFloat(n, act->attrA, act->defaultA) : 0.f;
    instr.d = act->attrB ? attrFloat(n, act->attrB, act->defaultB) : 0.f;
    return true;
  }
  instr.op = fuseOpOfTableIndex(static_cast<int>(info - ops::kOps));
  return true;
}

struct Builder {
  FusionGroup g;
  std::map<int, int> reg; // value id -> register
  std::set<int> produced;

  /// Register of value v, loading or folding it if external.
  int regOf(int v, const std::function<bool(int, float &)> &scalarConstant) {
    auto it = reg.find(v);
    if (it != reg.end())
      return it->second;
    FuseInstr in;
    float c;
    if (scalarConstant(v, c)) {
      in.op = FO_Const;
      in.c = c;
    } else {
      in.op = FO_Load;
      in.a = static_cast<uint8_t>(g.inputs.size());
      g.inputs.push_back(v);
    }
    int r = g.program.numInstrs++;
    g.program.ins[r] = in;
    reg[v] = r;
    return r;
  }

  /// Room for a member with `arity` inputs, counting its new external inputs.
  bool fits(const Schedule::Step &s, const std::function<bool(int, float &)> &scalarConstant) {
    int loads = 0, newInputs = 0;
    for (int v : s.inputs)
      if (!reg.count(v)) {
        ++loads;
        float c;
        if (!scalarConstant(v, c))
          ++newInputs;
      }
    return g.program.numInstrs + loads + 1 <= kFuseMaxInstrs &&
           static_cast<int>(g.inputs.size()) + newInputs <= kFuseMaxInputs;
  }

  /// Appends `src` (another open group whose output a node of this group is
  /// about to read): its instructions renumbered, its loads deduplicated
  /// against this group's. False (nothing changed) when it does not fit.
  bool absorb(const Builder &src) {
    int extra = 0;
    for (int v : src.g.inputs)
      if (!reg.count(v))
        ++extra;
    if (g.program.numInstrs + src.g.program.numInstrs > kFuseMaxInstrs ||
        static_cast<int>(g.inputs.size()) + extra > kFuseMaxInputs)
      return false;
    std::vector<int> map(src.g.program.numInstrs);
    for (int i = 0; i < src.g.program.numInstrs; ++i) {
      FuseInstr in = src.g.program.ins[i];
      if (in.op == FO_Load) {
        int v = src.g.inputs[in.a];
        auto it = reg.find(v);
        if (it != reg.end()) {
          map[i] = it->second;
          continue;
        }
        in.a = static_cast<uint8_t>(g.inputs.size());
        g.inputs.push_back(v);
        reg[v] = g.program.numInstrs;
      } else if (in.op != FO_Const) {
        in.a = static_cast<uint8_t>(map[in.a]);
        in.b = static_cast<uint8_t>(map[in.b]);
      }
      map[i] = g.program.numInstrs;
      g.program.ins[g.program.numInstrs++] = in;
    }
    for (const auto &[v, r] : src.reg)
      if (!reg.count(v))
        reg[v] = map[r];
    g.steps.insert(g.steps.end(), src.g.steps.begin(), src.g.steps.end());
    std::sort(g.steps.begin(), g.steps.end());
    g.intermediates.insert(g.intermediates.end(), src.g.intermediates.begin(),
                           src.g.intermediates.end());
    g.intermediates.push_back(src.g.output); // read only by the node being added
    return true;
  }

  void add(size_t si, const Schedule::Step &s, const FuseInstr &op,
           const std::function<bool(int, float &)> &scalarConstant) {
    int a = regOf(s.inputs[0], scalarConstant);
    int b = s.inputs.size() > 1 ? regOf(s.inputs[1], scalarConstant) : a;
    FuseInstr in = op;
    in.a = static_cast<uint8_t>(a);
    in.b = static_cast<uint8_t>(b);
    int r = g.program.numInstrs++;
    g.program.ins[r] = in;
    if (g.output >= 0)
      g.intermediates.push_back(g.output);
    g.output = s.outputs[0];
    reg[g.output] = r;
    g.steps.push_back(si);
  }
};

} // namespace

namespace {

struct Analysis {
  const Schedule &sched;
  const std::function<bool(int, float &)> &scalarConstant;
  std::vector<std::set<size_t>> readers; // steps reading each value
  std::vector<bool> isOutput;
  std::vector<int> producer;  // step producing each value, -1 for none
  std::vector<int> opOf;      // FuseOp of each fusable step, -1 otherwise
  std::vector<FuseInstr> instrOf; // its instruction (operands unset)

  Analysis(const Schedule &s, const std::function<bool(int, float &)> &sc)
      : sched(s), scalarConstant(sc), readers(s.numValues), isOutput(s.numValues, false),
        producer(s.numValues, -1), opOf(s.steps.size(), -1), instrOf(s.steps.size()) {
    for (size_t i = 0; i < s.steps.size(); ++i) {
      for (int v : s.steps[i].inputs)
        if (v >= 0)
          readers[v].insert(i);
      for (int v : s.steps[i].outputs)
        if (v >= 0)
          producer[v] = static_cast<int>(i);
      FuseInstr op;
      int arity;
      if (fusableOp(*s.steps[i].node, op, arity) && s.steps[i].outputs[0] >= 0) {
        opOf[i] = op.op;
        instrOf[i] = op;
      }
    }
    for (int v : s.outputIds)
      isOutput[v] = true;
  }

  /// A value whose readers are all fusable and which is no graph output may
  /// live in registers.
  bool internal(int v) const {
    if (isOutput[v] || readers[v].empty())
      return false;
    for (size_t r : readers[v])
      if (opOf[r] < 0)
        return false;
    return true;
  }

  void finish(Builder &b, std::vector<FusionGroup> &out) const {
    if (b.g.steps.size() < 2)
      return;
    FusionGroup &g = b.g;
    g.program.numInputs = static_cast<int>(g.inputs.size());
    out.push_back(std::move(g));
  }

  /// Chains through single-reader values only, within `steps` (in order).
  void greedy(const std::vector<size_t> &steps, std::vector<FusionGroup> &out) const {
    std::vector<Builder> open;          // groups being built
    std::map<int, size_t> openByOutput; // current output value -> index in `open`
    for (size_t si : steps) {
      const Schedule::Step &s = sched.steps[si];
      // Join the groups whose current outputs only this node reads (merging
      // them when it reads two).
      size_t join = SIZE_MAX;
      for (int v : s.inputs) {
        auto it = openByOutput.find(v);
        if (it == openByOutput.end() || readers[v].size() != 1 || isOutput[v])
          continue;
        size_t gi = it->second;
        if (join == SIZE_MAX) {
          if (!open[gi].fits(s, scalarConstant))
            continue;
          join = gi;
          openByOutput.erase(it);
        } else if (gi != join && open[join].absorb(open[gi])) {
          openByOutput.erase(it);
          open[gi] = Builder(); // emptied: dropped below
        }
      }
      if (join == SIZE_MAX) {
        join = open.size();
        open.emplace_back();
      }
      open[join].add(si, s, instrOf[si], scalarConstant);
      openByOutput[open[join].g.output] = join;
    }
    for (Builder &b : open)
      finish(b, out);
  }
};

size_t findRoot(std::vector<size_t> &parent, size_t i) {
  while (parent[i] != i)
    i = parent[i] = parent[parent[i]];
  return i;
}

} // namespace

std::vector<FusionGroup>
findFusionGroups(const Schedule &sched, const std::function<bool(int, float &)> &scalarConstant) {
  Analysis an(sched, scalarConstant);
  // Components: fusable steps joined through values that may live in
  // registers (every reader fusable; a value may have several readers).
  size_t n = sched.steps.size();
  std::vector<size_t> parent(n);
  for (size_t i = 0; i < n; ++i)
    parent[i] = i;
  for (int v = 0; v < sched.numValues; ++v) {
    int p = an.producer[v];
    if (p < 0 || an.opOf[p] < 0 || !an.internal(v))
      continue;
    for (size_t r : an.readers[v])
      parent[findRoot(parent, r)] = findRoot(parent, static_cast<size_t>(p));
  }
  std::map<size_t, std::vector<size_t>> components; // root -> steps in order
  for (size_t i = 0; i < n; ++i)
    if (an.opOf[i] >= 0)
      components[findRoot(parent, i)].push_back(i);

  std::vector<FusionGroup> groups;
  for (auto &[root, steps] : components) {
    if (steps.size() < 2)
      continue;
    // Whole component as one group when only its last step's value leaves it
    // and it fits one program; otherwise chains within it.
    std::set<size_t> members(steps.begin(), steps.end());
    bool ok = true;
    for (size_t si : steps) {
      int v = sched.steps[si].outputs[0];
      bool escapes = an.isOutput[v] || an.readers[v].empty();
      for (size_t r : an.readers[v])
        escapes |= !members.count(r);
      if (escapes && si != steps.back())
        ok = false;
    }
    Builder b;
    for (size_t si : steps) {
      if (!ok || !b.fits(sched.steps[si], scalarConstant)) {
        ok = false;
        break;
      }
      b.add(si, sched.steps[si], an.instrOf[si], scalarConstant);
    }
    if (ok)
      an.finish(b, groups);
    else
      an.greedy(steps, groups);
  }
  std::sort(groups.begin(), groups.end(), [](const FusionGroup &a, const FusionGroup &b) {
    return a.steps.back() < b.steps.back();
  });
  return groups;
}

std::vector<std::vector<int>> releaseListsWithGroups(const Schedule &sched,
                                                     const std::vector<FusionGroup> &groups) {
  std::vector<size_t> runAt;
  for (const FusionGroup &g : groups)
    runAt.push_back(g.steps.back());
  return releaseListsWithGroups(sched, groups, runAt);
}

std::vector<std::vector<int>> releaseListsWithGroups(const Schedule &sched,
                                                     const std::vector<FusionGroup> &groups,
                                                     const std::vector<size_t> &runAt) {
  size_t n = sched.steps.size();
  std::vector<int> at(n);
  for (size_t si = 0; si < n; ++si)
    at[si] = static_cast<int>(si);
  for (size_t gi = 0; gi < groups.size(); ++gi)
    for (size_t si : groups[gi].steps)
      at[si] = static_cast<int>(gi < runAt.size() ? runAt[gi] : groups[gi].steps.back());
  std::vector<int> lastUse(sched.numValues, -1);
  for (size_t si = 0; si < n; ++si) {
    for (int v : sched.steps[si].inputs)
      if (v >= 0)
        lastUse[v] = std::max(lastUse[v], at[si]);
    for (int v : sched.steps[si].outputs)
      if (v >= 0)
        lastUse[v] = std::max(lastUse[v], at[si]);
  }
  for (int v : sched.outputIds)
    lastUse[v] = -1;
  for (const auto &c : sched.constantIds)
    lastUse[c.first] = -1;
  std::vector<std::vector<int>> release(n);
  for (int v = 0; v < sched.numValues; ++v)
    if (lastUse[v] >= 0)
      release[lastUse[v]].push_back(v);
  return release;
}

std::vector<NormFusion> findNormFusions(const Schedule &sched,
                                        const std::vector<FusionGroup> &groups) {
  std::vector<int> groupOfValue(sched.numValues, -1);
  for (size_t gi = 0; gi < groups.size(); ++gi)
    if (groups[gi].output >= 0)
      groupOfValue[groups[gi].output] = static_cast<int>(gi);
  std::vector<bool> isOutput(sched.numValues, false);
  for (int v : sched.outputIds)
    isOutput[v] = true;
  std::vector<bool> taken(groups.size(), false);
  std::vector<NormFusion> found;
  for (size_t si = 0; si < sched.steps.size(); ++si) {
    const Schedule::Step &s = sched.steps[si];
    if (!s.domain.empty() || s.node->op_type() != "LayerNormalization" || s.inputs.empty() ||
        s.inputs[0] < 0)
      continue;
    int gi = groupOfValue[s.inputs[0]];
    if (gi < 0 || taken[gi])
      continue;
    const FusionGroup &g = groups[gi];
    int x = g.output;
    bool ok = g.steps.back() < si;
    for (size_t k = 1; k < s.inputs.size(); ++k)
      ok &= s.inputs[k] != x;
    for (size_t k = 1; k < s.outputs.size(); ++k)
      ok &= s.outputs[k] < 0; // Mean, InvStdDev: the plain kernel's
    for (size_t k = g.steps.back() + 1; ok && k < si; ++k)
      for (int v : sched.steps[k].inputs)
        ok &= v != x;
    if (!ok)
      continue;
    NormFusion f;
    f.group = static_cast<size_t>(gi);
    f.step = si;
    f.writeX = isOutput[x];
    for (size_t k = si + 1; !f.writeX && k < sched.steps.size(); ++k)
      for (int v : sched.steps[k].inputs)
        f.writeX |= v == x;
    taken[gi] = true;
    found.push_back(f);
  }
  return found;
}

bool fusedShape(const std::vector<std::vector<int64_t>> &inputShapes, std::vector<int64_t> &out) {
  out.clear();
  size_t rank = 0;
  for (const auto &s : inputShapes)
    rank = std::max(rank, s.size());
  if (rank > 8)
    return false;
  out.assign(rank, 1);
  for (const auto &s : inputShapes)
    for (size_t k = 0; k < s.size(); ++k) {
      int64_t d = s[s.size() - 1 - k], &o = out[rank - 1 - k];
      if (d == o || d == 1)
        continue;
      if (o != 1)
        return false;
      o = d;
    }
  return true;
}

Tensor evalFusionGroupOnHost(const FusionGroup &g, const std::vector<Tensor> &inputs) {
  std::vector<std::vector<int64_t>> shapes;
  for (const Tensor &t : inputs)
    shapes.push_back(t.shape());
  std::vector<int64_t> shape;
  if (!fusedShape(shapes, shape))
    return Tensor();
  Tensor out = Tensor::empty(DType::Float, shape);
  int64_t n = out.numel(), rank = static_cast<int64_t>(shape.size());
  // Broadcast strides of each input against the output shape.
  std::vector<std::vector<int64_t>> strides;
  for (const Tensor &t : inputs) {
    std::vector<int64_t> st(rank, 0);
    int64_t s = 1;
    for (int64_t k = t.rank() - 1; k >= 0; --k) {
      int64_t ok = rank - t.rank() + k;
      st[ok] = t.dim(k) == 1 ? 0 : s;
      s *= t.dim(k);
    }
    strides.push_back(st);
  }
  float vals[kFuseMaxInputs];
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i;
    int64_t off[kFuseMaxInputs] = {};
    for (int64_t k = rank - 1; k >= 0; --k) {
      int64_t idx = rem % shape[k];
      rem /= shape[k];
      for (size_t j = 0; j < inputs.size(); ++j)
        off[j] += idx * strides[j][k];
    }
    for (size_t j = 0; j < inputs.size(); ++j)
      vals[j] = inputs[j].data<float>()[off[j]];
    out.data<float>()[i] = evalFused(g.program, vals);
  }
  return out;
}

} // namespace qn::rt
