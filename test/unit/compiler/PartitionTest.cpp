//===- PartitionTest.cpp - strategies and per-rank weights ----------------===//
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"

#include "CompilerTestUtil.h"

#include <gtest/gtest.h>

using namespace qn;
using namespace qn::testing;

namespace {


std::vector<float> floats(const onnx::TensorProto &t) {
  std::vector<float> v(t.raw_data().size() / 4);
  memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  return v;
}

const onnx::TensorProto *initializer(const onnx::ModelProto &m, const std::string &name) {
  for (const auto &t : m.graph().initializer())
    if (t.name() == name)
      return &t;
  return nullptr;
}

std::vector<std::string> opTypes(const onnx::ModelProto &m) {
  std::vector<std::string> ops;
  for (const auto &n : m.graph().node())
    ops.push_back(n.op_type());
  return ops;
}


} // namespace

TEST(Partition, MegatronPairStrategies) {
  auto g = parse(kPair);
  ASSERT_TRUE(g);
  auto plan = partition(*g, PartitionOptions{2, 0});
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  ASSERT_EQ(plan->linears.size(), 2u);
  EXPECT_EQ(plan->linears[0].strategy, LinearStrategy::Column);
  EXPECT_EQ(plan->linears[1].strategy, LinearStrategy::Row);
  EXPECT_EQ(plan->collectiveCounts["AllReduce"], 1);
  EXPECT_EQ(plan->collectiveCounts["AllGather"], 0);
}

TEST(Partition, EachRankHoldsItsSlices) {
  auto g = parse(kPair);
  ASSERT_TRUE(g);
  auto plan = partition(*g, PartitionOptions{2, 0});
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  for (int rank = 0; rank < 2; ++rank) {
    auto m = materializeRank(*plan, *g, rank);
    ASSERT_TRUE(bool(m)) << llvm::toString(m.takeError());
    // Column-parallel W1 [2,4]: columns [2k, 2k+2) of each row.
    const auto *w1 = initializer(*m, "W1");
    ASSERT_TRUE(w1);
    std::vector<float> want1;
    for (int r = 0; r < 2; ++r)
      for (int c = 2 * rank; c < 2 * rank + 2; ++c)
        want1.push_back(static_cast<float>(r * 4 + c));
    EXPECT_EQ(floats(*w1), want1) << "rank " << rank;
    EXPECT_EQ(floats(*initializer(*m, "b1")),
              (std::vector<float>{10.f + 2 * rank, 11.f + 2 * rank}));
    // Row-parallel W2 [4,2]: rows [2k, 2k+2).
    std::vector<float> want2;
    for (int r = 2 * rank; r < 2 * rank + 2; ++r)
      for (int c = 0; c < 2; ++c)
        want2.push_back(static_cast<float>(20 + r * 2 + c));
    EXPECT_EQ(floats(*initializer(*m, "W2")), want2);
    // The bias of the row layer stays whole, added once after the AllReduce.
    EXPECT_EQ(floats(*initializer(*m, "b2")), (std::vector<float>{30, 31}));
    EXPECT_EQ(opTypes(*m), (std::vector<std::string>{"MatMul", "Add", "Relu", "MatMul",
                                                     "AllReduce", "Add"}));
  }
}

TEST(Partition, RowGemmBiasIsScaledByBetaAndAddedOnce) {
  auto g = parse(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[B,2] x) => (float[B,2] y)
<float[4,2] W1 = {1, 2, 3, 4, 5, 6, 7, 8}, float[2,4] W2 = {1, 2, 3, 4, 5, 6, 7, 8},
 float[2] c = {3, -5}>
{
  h = Gemm <transB = 1> (x, W1)
  a = Relu (h)
  y = Gemm <transB = 1, beta = 0.5> (a, W2, c)
}
)");
  ASSERT_TRUE(g);
  auto plan = partition(*g, PartitionOptions{2, 0});
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  auto m = materializeRank(*plan, *g, 1);
  ASSERT_TRUE(bool(m)) << llvm::toString(m.takeError());
  const auto &nodes = m->graph().node();
  ASSERT_EQ(nodes.size(), 5);
  EXPECT_EQ(nodes[2].op_type(), "Gemm");
  EXPECT_EQ(nodes[2].input_size(), 2) << "the row Gemm must not add C";
  for (const auto &a : nodes[2].attribute())
    EXPECT_NE(a.name(), "beta");
  EXPECT_EQ(nodes[3].op_type(), "AllReduce");
  EXPECT_EQ(nodes[4].op_type(), "Add");
  const auto *bias = initializer(*m, nodes[4].input(1));
  ASSERT_TRUE(bias);
  EXPECT_EQ(floats(*bias), (std::vector<float>{1.5f, -2.5f}));
}

TEST(Partition, IndivisibleInnerDimensionNamesNodesAndTpValues) {
  auto g = parse(kPair);
  ASSERT_TRUE(g);
  auto plan = partition(*g, PartitionOptions{3, 0});
  ASSERT_FALSE(bool(plan));
  std::string msg = llvm::toString(plan.takeError());
  EXPECT_NE(msg.find("MatMul_0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MatMul_3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tp values that work for these layers: 1, 2, 4"), std::string::npos) << msg;
}

TEST(Partition, TpOneReplicatesEverything) {
  auto g = parse(kPair);
  ASSERT_TRUE(g);
  auto plan = partition(*g, PartitionOptions{1, 0});
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  for (const auto &li : plan->linears)
    EXPECT_EQ(li.strategy, LinearStrategy::Replicate);
  for (const auto &kv : plan->collectiveCounts)
    EXPECT_EQ(kv.second, 0) << kv.first;
}

TEST(Partition, SharedWeightWithTwoPlacementsGetsTwoNames) {
  // W feeds a column-parallel layer and, replicated, a lone small layer.
  auto g = parse(R"(<ir_version: 8, opset_import: ["" : 17]>
t (float[B,4] x) => (float[B,4] y, float[B,4] z)
<float[4,4] W = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
 float[4,4] V = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}>
{
  h = MatMul (x, W)
  a = Relu (h)
  y = MatMul (a, V)
  z = MatMul (x, W)
}
)");
  ASSERT_TRUE(g);
  auto plan = partition(*g, PartitionOptions{2, 1 << 20});
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  auto m = materializeRank(*plan, *g, 0);
  ASSERT_TRUE(bool(m)) << llvm::toString(m.takeError());
  std::set<std::string> names;
  for (const auto &t : m->graph().initializer())
    EXPECT_TRUE(names.insert(t.name()).second) << "duplicate initializer " << t.name();
  std::string columnW, replicatedW;
  for (const auto &n : m->graph().node()) {
    if (n.op_type() == "MatMul" && n.output(0) == "h")
      columnW = n.input(1);
    if (n.op_type() == "MatMul" && n.output(0) == "z")
      replicatedW = n.input(1);
  }
  ASSERT_FALSE(columnW.empty());
  ASSERT_FALSE(replicatedW.empty());
  EXPECT_NE(columnW, replicatedW);
  EXPECT_EQ(initializer(*m, columnW)->dims(1), 2);     // sliced copy
  EXPECT_EQ(initializer(*m, replicatedW)->dims(1), 4); // whole copy
}
