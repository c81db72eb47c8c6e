//===- FusionTest.cpp - Elementwise fusion groups and their programs ------===//
//
// Groups are checked on graphs written as exporters write them (GPT-2's tanh
// GELU, a bias add before it, a residual add after); every group's program is
// then evaluated on the host (the GPU kernel's indexing and evalFused) and
// compared with its member nodes run one by one with the CPU kernels.
//
//===----------------------------------------------------------------------===//
#include "../../../runtime/lib/Fusion.h"
#include "qn/ops/OpTable.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/Kernel.h"
#include "qn/runtime/TensorProto.h"

#include <onnx/defs/parser.h>

#include <random>

#include "gtest/gtest.h"

using namespace qn::rt;

namespace {

/// A rank program from ONNX text; initializers become constants.
RankProgram parse(const char *text) {
  RankProgram p;
  auto status = onnx::OnnxParser::Parse(p.model, text);
  EXPECT_TRUE(status.IsOK()) << status.ErrorMessage();
  for (const onnx::TensorProto &t : p.model.graph().initializer()) {
    auto v = tensorFromProto(t);
    if (!v) {
      ADD_FAILURE() << llvm::toString(v.takeError());
      continue;
    }
    p.constants[t.name()] = *v;
  }
  return p;
}

struct Fixture {
  RankProgram prog;
  Schedule sched;
  std::vector<FusionGroup> groups;
  std::vector<Tensor> constants; // by value id
};

Fixture analyse(const char *text) {
  Fixture f;
  f.prog = parse(text);
  auto s = buildSchedule(f.prog);
  if (!s) {
    ADD_FAILURE() << llvm::toString(s.takeError());
    return f;
  }
  f.sched = std::move(*s);
  f.constants.resize(f.sched.numValues);
  for (auto &[id, name] : f.sched.constantIds)
    f.constants[id] = f.prog.constants[name];
  f.groups = findFusionGroups(f.sched, [&](int v, float &x) {
    const Tensor &t = f.constants[v];
    if (!t.defined() || t.numel() != 1 || t.dtype() != DType::Float)
      return false;
    x = t.data<float>()[0];
    return true;
  });
  return f;
}

std::vector<std::string> opsOf(const Fixture &f, const FusionGroup &g) {
  std::vector<std::string> ops;
  for (size_t si : g.steps)
    ops.push_back(f.sched.steps[si].node->op_type());
  return ops;
}

const KernelRegistry &cpu() {
  static KernelRegistry r = [] {
    KernelRegistry k;
    registerCpuKernels(k);
    return k;
  }();
  return r;
}

/// Runs the group's member nodes one by one on the CPU.
Tensor runMembers(const Fixture &f, const FusionGroup &g, const std::vector<Tensor> &inputs) {
  std::vector<Tensor> values = f.constants;
  for (size_t k = 0; k < g.inputs.size(); ++k)
    values[g.inputs[k]] = inputs[k];
  for (size_t si : g.steps) {
    const Schedule::Step &s = f.sched.steps[si];
    std::vector<const Tensor *> ins;
    for (int v : s.inputs)
      ins.push_back(&values[v]);
    std::vector<Tensor> outs(1);
    KernelContext ctx{*s.node, ins, outs, nullptr, s.opset};
    llvm::Error e = (*cpu().lookup("", s.node->op_type()))(ctx);
    EXPECT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
    values[s.outputs[0]] = outs[0];
  }
  return values[g.output];
}

Tensor random(std::vector<int64_t> shape, unsigned seed, float lo = -3, float hi = 3) {
  Tensor t = Tensor::empty(DType::Float, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = u(rng);
  return t;
}

void expectNear(const Tensor &got, const Tensor &want, float rtol) {
  ASSERT_EQ(got.shape(), want.shape());
  float scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    scale = std::max(scale, std::fabs(want.data<float>()[i]));
  for (int64_t i = 0; i < want.numel(); ++i) {
    float a = got.data<float>()[i], b = want.data<float>()[i];
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a)) << "element " << i;
      continue;
    }
    ASSERT_NEAR(a, b, rtol * scale) << "element " << i;
  }
}

// GPT-2's MLP as torch.onnx.export writes it: MatMul, bias Add, NewGELU
// (0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))), MatMul, bias,
// residual Add.
const char *kGpt2Mlp = R"(
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[B,T,8] x, float[8,32] w1, float[32] b1, float[32,8] w2, float[8] b2) => (float[B,T,8] y)
    <float half = {0.5}, float three = {3.0}, float k = {0.044715}, float s = {0.7978845608}, float one = {1.0}> {
  h = MatMul(x, w1)
  hb = Add(h, b1)
  a = Mul(hb, half)
  p = Pow(hb, three)
  q = Mul(p, k)
  r = Add(hb, q)
  t = Mul(r, s)
  u = Tanh(t)
  v = Add(u, one)
  g = Mul(a, v)
  o = MatMul(g, w2)
  ob = Add(o, b2)
  y = Add(ob, x)
}
)";

TEST(Fusion, Gpt2MlpFusesBiasAndGeluIntoOneGroup) {
  Fixture f = analyse(kGpt2Mlp);
  ASSERT_EQ(f.groups.size(), 2u);
  const FusionGroup &gelu = f.groups[0];
  EXPECT_EQ(opsOf(f, gelu), (std::vector<std::string>{"Add", "Mul", "Pow", "Mul", "Add", "Mul",
                                                      "Tanh", "Add", "Mul"}));
  // Inputs: the MatMul's output and the bias; the scalars are immediates.
  ASSERT_EQ(gelu.inputs.size(), 2u);
  EXPECT_EQ(gelu.intermediates.size(), 8u);
  const FusionGroup &tail = f.groups[1];
  EXPECT_EQ(opsOf(f, tail), (std::vector<std::string>{"Add", "Add"}));
  EXPECT_EQ(tail.inputs.size(), 3u); // o, b2, x
  EXPECT_EQ(f.sched.steps[tail.steps.back()].outputs[0], f.sched.outputIds[0]);
}

TEST(Fusion, ProgramsMatchTheNodesOneByOne) {
  Fixture f = analyse(kGpt2Mlp);
  ASSERT_EQ(f.groups.size(), 2u);
  // The GELU group on [2,3,32] and its bias [32] (broadcast).
  {
    const FusionGroup &g = f.groups[0];
    std::vector<Tensor> in = {random({2, 3, 32}, 1), random({32}, 2)};
    if (f.sched.steps[g.steps[0]].inputs[0] != g.inputs[0])
      std::swap(in[0], in[1]);
    expectNear(evalFusionGroupOnHost(g, in), runMembers(f, g, in), 1e-5f);
  }
  {
    const FusionGroup &g = f.groups[1];
    // o and x are [2,3,8], the bias b2 is [8].
    std::vector<Tensor> in;
    int b2 = -1;
    for (auto &[name, id] : f.sched.inputIds)
      if (name == "b2")
        b2 = id;
    for (size_t k = 0; k < g.inputs.size(); ++k)
      in.push_back(g.inputs[k] == b2 ? random({8}, 9) : random({2, 3, 8}, 10 + k));
    expectNear(evalFusionGroupOnHost(g, in), runMembers(f, g, in), 1e-6f);
  }
}

TEST(Fusion, EveryFusableOpAgreesWithItsKernel) {
  // One chain through every op (positive operands where the op needs them).
  const char *text = R"(
<ir_version: 8, opset_import: ["" : 20]>
chain (float[4,5] x, float[5] z) => (float[4,5] y) {
  a = Abs(x)
  b = Add(a, z)
  c = Sqrt(b)
  d = Log(c)
  e = Exp(d)
  f = Sigmoid(e)
  g = Tanh(f)
  h = Erf(g)
  i = Sin(h)
  j = Cos(i)
  k = Neg(j)
  l = Relu(k)
  m = Sub(l, x)
  n = Div(m, z)
  o = Max(n, x)
  p = Min(o, z)
  q = Reciprocal(p)
  r = Gelu <approximate = "tanh"> (q)
  y = Gelu(r)
}
)";
  Fixture f = analyse(text);
  ASSERT_EQ(f.groups.size(), 1u);
  const FusionGroup &g = f.groups[0];
  EXPECT_EQ(g.steps.size(), 19u);
  EXPECT_EQ(g.inputs.size(), 2u);
  std::vector<Tensor> in(2);
  for (size_t k = 0; k < 2; ++k)
    in[k] = g.inputs[k] == f.sched.inputIds[0].second ? random({4, 5}, 3)
                                                      : random({5}, 4, 0.5f, 3.f); // z > 0
  expectNear(evalFusionGroupOnHost(g, in), runMembers(f, g, in), 2e-5f);
}

TEST(Fusion, EveryOpTheTableMarksFusableFusesAndAgreesWithItsKernel) {
  // For each OF_Fusable op of the op table: Op then Add (a unary op) or Op
  // then Neg (a binary one) is one group, whose program matches the CPU
  // kernels node by node. Operands in (0.5, 3): every op is defined there.
  int checked = 0;
  for (const qn::ops::OpInfo &op : qn::ops::kOps) {
    if (!op.has(qn::ops::OF_Fusable))
      continue;
    SCOPED_TRACE(op.name);
    bool unary = op.kind == qn::ops::OK_Unary;
    std::string text = std::string(R"(<ir_version: 8, opset_import: ["" : 20]>
g (float[4,5] x, float[5] z) => (float[4,5] y) {
)") + (unary ? std::string("  a = ") + op.name + "(x)\n  y = Add(a, z)\n"
             : std::string("  a = ") + op.name + "(x, z)\n  y = Neg(a)\n") + "}\n";
    Fixture f = analyse(text.c_str());
    ASSERT_EQ(f.groups.size(), 1u);
    const FusionGroup &g = f.groups[0];
    ASSERT_EQ(opsOf(f, g), (std::vector<std::string>{op.name, unary ? "Add" : "Neg"}));
    std::vector<Tensor> in(g.inputs.size());
    for (size_t k = 0; k < in.size(); ++k)
      in[k] = g.inputs[k] == f.sched.inputIds[0].second ? random({4, 5}, 7, 0.5f, 3.f)
                                                        : random({5}, 8, 0.5f, 3.f);
    expectNear(evalFusionGroupOnHost(g, in), runMembers(f, g, in), 2e-6f);
    ++checked;
  }
  EXPECT_GE(checked, 29);
}

TEST(Fusion, ValuesWithOtherReadersAreNotSwallowed) {
  // b is read by the Mul and is a graph output: the Add and the Mul may not
  // share a group through it. c has two readers, both fusable: it may live in
  // registers, read twice within one group.
  const char *text = R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[3] x) => (float[3] b, float[3] e) {
  a = Relu(x)
  b = Add(a, x)
  c = Mul(b, x)
  d = Neg(c)
  d2 = Abs(c)
  e = Add(d, d2)
}
)";
  Fixture f = analyse(text);
  std::vector<std::vector<std::string>> groups;
  for (const FusionGroup &g : f.groups)
    groups.push_back(opsOf(f, g));
  EXPECT_EQ(groups, (std::vector<std::vector<std::string>>{{"Relu", "Add"},
                                                           {"Mul", "Neg", "Abs", "Add"}}));
  for (const FusionGroup &g : f.groups) {
    std::vector<Tensor> in;
    for (size_t k = 0; k < g.inputs.size(); ++k)
      in.push_back(random({3}, 20 + k));
    expectNear(evalFusionGroupOnHost(g, in), runMembers(f, g, in), 1e-6f);
  }
}

TEST(Fusion, LimitsSplitLongChains) {
  // 40 unary nodes: more than one program's worth of instructions.
  std::string text = "<ir_version: 8, opset_import: [\"\" : 17]>\ng (float[2] x) => (float[2] y) {\n";
  std::string prev = "x";
  for (int i = 0; i < 40; ++i) {
    std::string out = i == 39 ? "y" : "v" + std::to_string(i);
    text += "  " + out + " = Neg(" + prev + ")\n";
    prev = out;
  }
  text += "}\n";
  Fixture f = analyse(text.c_str());
  size_t members = 0;
  for (const FusionGroup &g : f.groups) {
    EXPECT_LE(g.program.numInstrs, kFuseMaxInstrs);
    members += g.steps.size();
  }
  EXPECT_GE(f.groups.size(), 2u);
  EXPECT_EQ(members, 40u);
}

TEST(Fusion, InputsLiveUntilTheGroupRuns) {
  // x is read by the group's first member (Relu, step 0) and last by the
  // Shape (step 1), which is no member; the group runs at its last member
  // (step 2), so x must be released after step 2, not step 1.
  const char *text = R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[3] x) => (float[3] y, int64[1] s) {
  a = Relu(x)
  s = Shape(x)
  y = Neg(a)
}
)";
  Fixture f = analyse(text);
  ASSERT_EQ(f.groups.size(), 1u);
  int x = f.sched.inputIds[0].second;
  auto plain = releaseListsWithGroups(f.sched, {});
  auto fused = releaseListsWithGroups(f.sched, f.groups);
  EXPECT_EQ(plain[1], std::vector<int>{x});
  EXPECT_TRUE(fused[1].empty());
  ASSERT_FALSE(fused[2].empty());
  EXPECT_NE(std::find(fused[2].begin(), fused[2].end(), x), fused[2].end());
  // Without groups the lists are the schedule's own.
  for (size_t si = 0; si < f.sched.steps.size(); ++si) {
    auto want = f.sched.steps[si].release;
    std::sort(want.begin(), want.end());
    auto got = plain[si];
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << "step " << si;
  }
}

// GPT-2's residual stream: bias Add, residual Add, then the next block's
// LayerNormalization reads the sum (which the residual Add after it reads too).
TEST(Fusion, LayerNormRunsWithTheGroupBeforeIt) {
  const char *text = R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] x, float[2,4] h, float[4] b, float[4] s, float[4] c) => (float[2,4] z, int64[2] k) {
  hb = Add(h, b)
  r = Add(hb, x)
  k = Shape(x)
  n = LayerNormalization(r, s, c)
  z = Add(r, n)
}
)";
  Fixture f = analyse(text);
  ASSERT_EQ(f.groups.size(), 1u);
  EXPECT_EQ(opsOf(f, f.groups[0]), (std::vector<std::string>{"Add", "Add"}));
  auto norms = findNormFusions(f.sched, f.groups);
  ASSERT_EQ(norms.size(), 1u);
  EXPECT_EQ(norms[0].group, 0u);
  EXPECT_EQ(f.sched.steps[norms[0].step].node->op_type(), "LayerNormalization");
  EXPECT_GT(norms[0].step, f.groups[0].steps.back());
  EXPECT_TRUE(norms[0].writeX); // z reads r too
  // The group runs at the LayerNormalization's step: its inputs (x, read last
  // by the Shape in between; h, b) live until then.
  int x = f.sched.inputIds[0].second, h = f.sched.inputIds[1].second;
  std::vector<size_t> runAt{norms[0].step};
  auto atLast = releaseListsWithGroups(f.sched, f.groups);
  auto atNorm = releaseListsWithGroups(f.sched, f.groups, runAt);
  size_t last = f.groups[0].steps.back(), shapeStep = last + 1, ln = norms[0].step;
  ASSERT_EQ(shapeStep + 1, ln);
  auto has = [](const std::vector<int> &l, int v) {
    return std::find(l.begin(), l.end(), v) != l.end();
  };
  EXPECT_TRUE(has(atLast[last], h));
  EXPECT_TRUE(has(atLast[shapeStep], x));
  EXPECT_TRUE(atNorm[last].empty());
  EXPECT_FALSE(has(atNorm[shapeStep], x));
  EXPECT_TRUE(has(atNorm[ln], x));
  EXPECT_TRUE(has(atNorm[ln], h));
  // With the default positions the overload is the two-argument one.
  std::vector<size_t> lastPos{last};
  EXPECT_EQ(releaseListsWithGroups(f.sched, f.groups, lastPos), atLast);
  // Every value is released exactly once either way.
  std::vector<int> a, b;
  for (auto &l : atLast)
    a.insert(a.end(), l.begin(), l.end());
  for (auto &l : atNorm)
    b.insert(b.end(), l.begin(), l.end());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
}

TEST(Fusion, LayerNormFusionNeedsItsGroupUnreadInBetween) {
  // BERT's post-norm: the sum is read by the LayerNormalization only.
  Fixture post = analyse(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] x, float[2,4] h, float[4] b, float[4] s, float[4] c) => (float[2,4] n) {
  hb = Add(h, b)
  r = Add(hb, x)
  n = LayerNormalization(r, s, c)
}
)");
  auto norms = findNormFusions(post.sched, post.groups);
  ASSERT_EQ(norms.size(), 1u);
  EXPECT_FALSE(norms[0].writeX);
  // The sum is a graph output: written.
  Fixture out = analyse(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] x, float[2,4] h, float[4] b, float[4] s) => (float[2,4] n, float[2,4] r) {
  hb = Add(h, b)
  r = Add(hb, x)
  n = LayerNormalization(r, s)
}
)");
  norms = findNormFusions(out.sched, out.groups);
  ASSERT_EQ(norms.size(), 1u);
  EXPECT_TRUE(norms[0].writeX);
  // A reader between the group and the node: the group runs at its place.
  Fixture between = analyse(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] x, float[2,4] h, float[4] b, float[4] s) => (float[2,4] n, int64[2] k) {
  hb = Add(h, b)
  r = Add(hb, x)
  k = Shape(r)
  n = LayerNormalization(r, s)
}
)");
  ASSERT_EQ(between.groups.size(), 1u);
  EXPECT_TRUE(findNormFusions(between.sched, between.groups).empty());
  // Mean / InvStdDev asked for: the plain kernel's.
  Fixture stats = analyse(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] x, float[2,4] h, float[4] b, float[4] s) => (float[2,4] n, float[2,1] m) {
  hb = Add(h, b)
  r = Add(hb, x)
  n, m = LayerNormalization(r, s)
}
)");
  ASSERT_EQ(stats.groups.size(), 1u);
  EXPECT_TRUE(findNormFusions(stats.sched, stats.groups).empty());
  // No groups (--no-fusion): nothing.
  EXPECT_TRUE(findNormFusions(post.sched, {}).empty());
}

TEST(Fusion, BroadcastShapes) {
  std::vector<int64_t> out;
  EXPECT_TRUE(fusedShape({{2, 1, 4}, {3, 1}, {4}}, out));
  EXPECT_EQ(out, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_FALSE(fusedShape({{2, 3}, {4}}, out));
  EXPECT_FALSE(fusedShape({std::vector<int64_t>(9, 1)}, out));
}

} // namespace
