//===- ExecutorStateTest.cpp - Parameters as mutable state -------------------===//
#include "KernelTestUtil.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/Plan.h"

#include <onnx/defs/parser.h>

using namespace qn::rt;
using namespace qn::rt::testing;

namespace {

/// y = x + w, with w a "mapped" weight: a view of read-only memory (as
/// rankK.bin's mapping is).
RankProgram program(const float *weights) {
  RankProgram p;
  onnx::OnnxParser parser(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[3] x) => (float[3] y) {
  y = Add(x, w)
}
)");
  EXPECT_TRUE(parser.Parse(p.model).IsOK());
  onnx::TensorProto *w = p.model.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(3);
  p.constants["w"] = Tensor::view(DType::Float, {3}, const_cast<float *>(weights), nullptr);
  return p;
}

std::vector<float> values(const Tensor &t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

} // namespace

TEST(ExecutorState, WritesToStateReachTheNextRun) {
  static const float mapped[3] = {1, 2, 3};
  RankProgram p = program(mapped);
  ASSERT_FALSE(bool(p.makeState("w")));
  auto ex = Executor::create(std::move(p), registry(), nullptr);
  ASSERT_TRUE(bool(ex)) << llvm::toString(ex.takeError());
  llvm::StringMap<Tensor> in;
  in["x"] = F({3}, {10, 20, 30});
  auto y = (*ex)->run(in);
  ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
  EXPECT_EQ(values((*y)[0]), (std::vector<float>{11, 22, 33}));
  auto w = (*ex)->state("w");
  ASSERT_TRUE(bool(w)) << llvm::toString(w.takeError());
  w->data<float>()[1] = 100; // an optimizer step, say
  y = (*ex)->run(in);
  ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
  EXPECT_EQ(values((*y)[0]), (std::vector<float>{11, 120, 33}));
  // The mapped weights are untouched: the state owns a copy.
  EXPECT_EQ(mapped[1], 2.0f);
}

TEST(ExecutorState, OnlyStateIsWritable) {
  static const float mapped[3] = {1, 2, 3};
  RankProgram p = program(mapped);
  llvm::Error e = p.makeState("nope");
  ASSERT_TRUE(bool(e));
  EXPECT_NE(llvm::toString(std::move(e)).find("no initializer of that name"), std::string::npos);
  auto ex = Executor::create(std::move(p), registry(), nullptr);
  ASSERT_TRUE(bool(ex)) << llvm::toString(ex.takeError());
  auto w = (*ex)->state("w");
  ASSERT_FALSE(bool(w));
  EXPECT_NE(llvm::toString(w.takeError()).find("'w' is not mutable state of this rank program "
                                               "(a mapped, read-only weight)"),
            std::string::npos);
}
