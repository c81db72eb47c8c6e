//===- ArenaPlanTest.cpp - Arena placement of buffers with lifetimes ------===//
//
// The property that matters: two buffers live at the same time never share a
// byte. Checked exhaustively on random lifetimes against a brute-force overlap
// test, plus bounds on the arena size.
//
//===----------------------------------------------------------------------===//
#include "../../../runtime/lib/ArenaPlan.h"

#include <algorithm>
#include <random>

#include "gtest/gtest.h"

using namespace qn::rt;

namespace {

bool liveTogether(const BufferLife &a, const BufferLife &b) {
  return a.born < b.died && b.born < a.died;
}

/// Peak of the sum of live sizes over all ticks: no arena can be smaller.
size_t peakLiveBytes(const std::vector<BufferLife> &bs) {
  size_t peak = 0;
  for (const BufferLife &x : bs) {
    size_t live = 0; // at tick x.born
    for (const BufferLife &y : bs)
      if (y.born <= x.born && x.born < y.died)
        live += y.size;
    peak = std::max(peak, live);
  }
  return peak;
}

void checkPlan(const std::vector<BufferLife> &bs) {
  size_t arena = 0;
  std::vector<size_t> off = planArena(bs, arena);
  ASSERT_EQ(off.size(), bs.size());
  size_t total = 0;
  for (size_t i = 0; i < bs.size(); ++i) {
    total += bs[i].size;
    EXPECT_LE(off[i] + bs[i].size, arena) << "buffer " << i << " past the arena";
    EXPECT_EQ(off[i] % 256, 0u) << "buffer " << i << " loses alignment";
    for (size_t j = 0; j < i; ++j)
      if (liveTogether(bs[i], bs[j])) {
        bool disjoint = off[i] + bs[i].size <= off[j] || off[j] + bs[j].size <= off[i];
        EXPECT_TRUE(disjoint) << "buffers " << i << " and " << j
                              << " are live together and overlap";
      }
  }
  EXPECT_LE(arena, total);
  EXPECT_GE(arena, peakLiveBytes(bs));
}

TEST(ArenaPlan, Empty) {
  size_t arena = 7;
  EXPECT_TRUE(planArena({}, arena).empty());
  EXPECT_EQ(arena, 0u);
}

TEST(ArenaPlan, ChainReusesMemory) {
  // x0 -> x1 -> x2 -> x3, each freed after the next is made: two buffers live
  // at a time, so the arena holds two, not four.
  std::vector<BufferLife> bs;
  for (uint64_t i = 0; i < 4; ++i)
    bs.push_back({1024, 2 * i, 2 * i + 3});
  size_t arena = 0;
  planArena(bs, arena);
  EXPECT_EQ(arena, 2048u);
  checkPlan(bs);
}

TEST(ArenaPlan, OutputsLiveToTheEnd) {
  std::vector<BufferLife> bs = {{512, 0, UINT64_MAX}, {256, 1, 2}, {256, 3, UINT64_MAX}};
  size_t arena = 0;
  planArena(bs, arena);
  EXPECT_EQ(arena, 768u); // the two temporaries share a slot beside the output
  checkPlan(bs);
}

TEST(ArenaPlan, RandomLifetimes) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    int n = 1 + static_cast<int>(rng() % 60);
    std::vector<BufferLife> bs;
    uint64_t tick = 0;
    for (int i = 0; i < n; ++i) {
      size_t size = 256 * (1 + rng() % 64);
      uint64_t born = tick++;
      uint64_t died = rng() % 8 == 0 ? UINT64_MAX : born + 1 + rng() % 20;
      bs.push_back({size, born, died});
    }
    checkPlan(bs);
    if (::testing::Test::HasFailure())
      return;
  }
}

} // namespace
