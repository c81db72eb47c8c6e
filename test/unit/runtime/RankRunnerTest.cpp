//===- RankRunnerTest.cpp - RankRunner driven by RunOptions ---------------===//
#include "qn/runtime/RankRunner.h"

#include <gtest/gtest.h>

using namespace qn::rt;

namespace {
std::string message(llvm::Error e) { return llvm::toString(std::move(e)); }
} // namespace

TEST(RankRunner, MissingPlanIsAnError) {
  RunOptions o;
  o.planDir = "/nonexistent/qn-plan";
  o.comm = CommEngine::Gloo;
  RankRunner runner(o);
  std::string single = message(runner.runProcess({0, 1, "127.0.0.1", 0}));
  EXPECT_NE(single.find("/nonexistent/qn-plan"), std::string::npos) << single;
  EXPECT_EQ(single.rfind("rank ", 0), std::string::npos) << single;
  // With several ranks the message names this one.
  std::string several = message(runner.runProcess({1, 2, "127.0.0.1", 0}));
  EXPECT_EQ(several.rfind("rank 1: ", 0), 0u) << several;
}

TEST(RankRunner, InputsAreNameEqualsFile) {
  PlanManifest plan;
  plan.tp = 1;
  RunOptions o;
  o.inputs = {"x"};
  std::string msg = message(RankRunner(o).readInputs(plan).takeError());
  EXPECT_EQ(msg, "--input 'x' is not NAME=FILE.npy");
}

TEST(RankRunner, NoInputsForAPlanWithoutInputs) {
  PlanManifest plan;
  plan.tp = 1;
  auto inputs = RankRunner(RunOptions()).readInputs(plan);
  ASSERT_TRUE(bool(inputs)) << message(inputs.takeError());
  EXPECT_TRUE(inputs->empty());
}
