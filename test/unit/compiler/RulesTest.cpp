//===- RulesTest.cpp - op table, rule registries, required output placements ===//
#include "../../../compiler/lib/grad/GradRules.h"
#include "../../../compiler/lib/rules/Rules.h"
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"
#include "qn/ops/OpTable.h"

#include "CompilerTestUtil.h"

#include <gtest/gtest.h>

using namespace qn;
using namespace qn::testing;

namespace {


int countOps(const Plan &plan, llvm::StringRef op) {
  int n = 0;
  for (const PlannedNode &pn : plan.nodes)
    n += pn.proto.op_type() == op;
  return n;
}

// A lone column-parallel Linear (with --replicate-below=0) whose output is a
// graph output, and a replicated value z (Relu of the input) beside it.
const char *kLone = R"(<ir_version: 8, opset_import: ["" : 17]>
lone (float[B,4] x) => (float[B,8] y, float[B,4] z, float[B,6] w)
<float[4,8] W = {0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31},
 float[4,6] V = {0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23}>
{
  y = MatMul (x, W)
  z = Relu (x)
  w = MatMul (x, V)
}
)";

} // namespace

TEST(OpTable, NamesAreUniquePerDomain) {
  for (const ops::OpInfo &a : ops::kOps) {
    EXPECT_EQ(ops::findOp(ops::domainName(a.domain), a.name), &a) << a.name;
    EXPECT_LE(a.minInputs, a.maxInputs) << a.name;
    EXPECT_LE(a.minOutputs, a.maxOutputs) << a.name;
  }
  EXPECT_EQ(ops::findOp("ai.onnx", "Relu"), ops::findOp("", "Relu"));
  EXPECT_EQ(ops::findOp("com.example", "Relu"), nullptr);
  EXPECT_EQ(ops::findOp("", "AllReduce"), nullptr);
  EXPECT_NE(ops::findOp("ai.quintnet", "AllReduce"), nullptr);
}

// The compiler shards only ops that the op table knows and that every
// device can run (a sharded op runs on the activations, on the CPU or the
// GPU). The runtime tests check each device's registry against the table.
TEST(RuleRegistry, ShardsOnlyOpsEveryDeviceRuns) {
  std::vector<std::string> ruled = rules::shardingRules().ops();
  EXPECT_GT(ruled.size(), 40u);
  for (const std::string &op : ruled) {
    const ops::OpInfo *info = ops::findOp("", op);
    ASSERT_NE(info, nullptr) << "a sharding rule for '" << op << "', which the op table lacks";
    EXPECT_TRUE(info->runsOn(ops::OV_Cpu))
        << "the compiler shards '" << op << "' but the CPU device has no kernel for it";
    // A source made from a shape (ConstantOfShape) runs on the host with
    // the CPU kernel on either device (CudaExecutor.cpp: its only input
    // has a host form).
    EXPECT_TRUE(info->runsOn(ops::OV_Cuda) || op == "ConstantOfShape")
        << "the compiler shards '" << op << "' but the CUDA device has no kernel for it";
  }
  // Families come from the table's kinds: every unary op has the unary rule.
  for (const ops::OpInfo &op : ops::kOps)
    if (op.domain == ops::OD_Onnx && op.kind == ops::OK_Unary) {
      const auto *e = rules::shardingRules().lookup(op.name);
      ASSERT_NE(e, nullptr) << op.name;
      EXPECT_EQ(e->family, "elementwise") << op.name;
    }
  EXPECT_EQ(rules::shardingRules().lookup("Reshape")->family, "reshape");
  EXPECT_EQ(rules::shardingRules().lookup("NoSuchOp"), nullptr);
}

TEST(GradRuleRegistry, KnowsOnlyTableOps) {
  std::vector<std::string> ops = grad::gradRules().ops();
  EXPECT_GE(ops.size(), 35u);
  for (const std::string &op : ops) {
    EXPECT_NE(ops::findOp("", op), nullptr) << op;
    EXPECT_FALSE(grad::gradRules().lookup(op)->family.empty()) << op;
  }
  // Every op of the MLP, the transformer blocks, the ViT and GPT-2.
  for (const char *op : {"MatMul", "Gemm", "Add", "Mul", "Div", "Pow", "Relu", "Tanh", "Erf",
                         "Softmax", "LayerNormalization", "Reshape", "Transpose", "Split",
                         "Concat", "Gather", "Where", "Conv", "Expand", "ReduceMean"})
    EXPECT_NE(grad::gradRules().lookup(op), nullptr) << op;
  EXPECT_EQ(grad::gradRules().lookup("Abs"), nullptr);
}

TEST(OutputPlacements, RequiredShardKeepsColumnOutputSharded) {
  auto g = parse(kLone);
  ASSERT_TRUE(g);
  PartitionOptions o;
  o.tp = 2;
  o.replicateBelowBytes = 0;
  auto gathered = partition(*g, o);
  ASSERT_TRUE(bool(gathered)) << llvm::toString(gathered.takeError());
  EXPECT_EQ(gathered->collectiveCounts["AllGather"], 2);
  EXPECT_EQ(gathered->outputPlacements["y"], Placement::R());

  g = parse(kLone);
  o.outputPlacements["y"] = Placement::S(1);
  auto plan = partition(*g, o);
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  EXPECT_EQ(plan->collectiveCounts["AllGather"], 1); // w's only
  EXPECT_EQ(plan->outputPlacements["y"], Placement::S(1));
  EXPECT_EQ(plan->outputPlacements["w"], Placement::R());
}

TEST(OutputPlacements, ReplicatedValueRequiredShardedIsSlicedLocally) {
  auto g = parse(kLone);
  ASSERT_TRUE(g);
  PartitionOptions o;
  o.tp = 2;
  o.replicateBelowBytes = 0;
  o.outputPlacements["z"] = Placement::S(1);
  auto plan = partition(*g, o);
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  EXPECT_EQ(plan->outputPlacements["z"], Placement::S(1));
  EXPECT_EQ(countOps(*plan, "Slice"), 1);
  EXPECT_EQ(plan->collectiveCounts["AllGather"], 2);
}

TEST(OutputPlacements, BadRequestsAreErrors) {
  struct Case {
    const char *output;
    Placement want;
    const char *message;
  } cases[] = {
      {"nope", Placement::S(0), "'nope', which is not a graph output"},
      {"y", Placement::P(), "only R, S(d) or a blocked S(d)xk can be required, not P"},
      {"y", Placement::Merged(1, 2), "only R, S(d) or a blocked S(d)xk can be required, not S(1)/2"},
      {"w", Placement::S(1), "cannot be S(1) over --tp 4: its axis 1 has size 6"},
      {"y", Placement::S(0), "cannot be S(0) over --tp 4: its axis 0 has no static size"},
  };
  for (const Case &c : cases) {
    auto g = parse(kLone);
    ASSERT_TRUE(g);
    PartitionOptions o;
    o.tp = 4;
    o.replicateBelowBytes = 0;
    o.outputPlacements[c.output] = c.want;
    auto plan = partition(*g, o);
    ASSERT_FALSE(bool(plan)) << c.output;
    std::string msg = llvm::toString(plan.takeError());
    EXPECT_NE(msg.find(c.message), std::string::npos) << msg;
  }
}
