//===- PlacementTest.cpp - placement algebra and weight slicing -----------===//
#include "qn/compiler/Partition.h"
#include "qn/compiler/Placement.h"

#include <gtest/gtest.h>

using namespace qn;

TEST(Placement, Printing) {
  EXPECT_EQ(Placement::R().str(), "R");
  EXPECT_EQ(Placement::P().str(), "P");
  EXPECT_EQ(Placement::S(2).str(), "S(2)");
}

TEST(Placement, Equality) {
  EXPECT_EQ(Placement::S(1), Placement::S(1));
  EXPECT_NE(Placement::S(1), Placement::S(0));
  EXPECT_NE(Placement::R(), Placement::P());
  EXPECT_NE(Placement::S(0), Placement::R());
}

TEST(Placement, RedistributionTable) {
  // DESIGN.md's table: P->R AllReduce, P->S(d) ReduceScatter, S(d)->R
  // AllGather, R->S(d) local slice.
  EXPECT_EQ(redistribution(Placement::P(), Placement::R()), Redistribution::AllReduce);
  EXPECT_EQ(redistribution(Placement::P(), Placement::S(1)), Redistribution::ReduceScatter);
  EXPECT_EQ(redistribution(Placement::S(1), Placement::R()), Redistribution::AllGather);
  EXPECT_EQ(redistribution(Placement::R(), Placement::S(0)), Redistribution::LocalSlice);
  EXPECT_EQ(redistribution(Placement::S(0), Placement::S(1)), Redistribution::GatherSlice);
  EXPECT_EQ(redistribution(Placement::S(1), Placement::S(1)), Redistribution::None);
  EXPECT_EQ(redistribution(Placement::R(), Placement::R()), Redistribution::None);
  EXPECT_EQ(redistribution(Placement::P(), Placement::P()), Redistribution::None);
  EXPECT_EQ(redistribution(Placement::R(), Placement::P()), Redistribution::Invalid);
  EXPECT_EQ(redistribution(Placement::S(0), Placement::P()), Redistribution::Invalid);
}

TEST(Placement, RingBytes) {
  // A ring AllReduce sends 2(N-1)/N of the tensor per rank; AllGather (N-1)/N.
  EXPECT_DOUBLE_EQ(redistributionBytesPerRank(Redistribution::AllReduce, 1000, 4), 1500);
  EXPECT_DOUBLE_EQ(redistributionBytesPerRank(Redistribution::AllGather, 1000, 4), 750);
  EXPECT_DOUBLE_EQ(redistributionBytesPerRank(Redistribution::LocalSlice, 1000, 4), 0);
  EXPECT_DOUBLE_EQ(redistributionBytesPerRank(Redistribution::AllReduce, 1000, 1), 0);
}

namespace {
onnx::TensorProto iota(std::vector<int64_t> dims) {
  onnx::TensorProto t;
  t.set_name("w");
  t.set_data_type(onnx::TensorProto::FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) {
    t.add_dims(d);
    n *= d;
  }
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i)
    v[i] = static_cast<float>(i);
  t.set_raw_data(std::string(reinterpret_cast<char *>(v.data()), v.size() * 4));
  return t;
}
std::vector<float> values(const onnx::TensorProto &t) {
  std::vector<float> v(t.raw_data().size() / 4);
  memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  return v;
}
} // namespace

TEST(SliceTensor, EveryAxisEveryRankReassembles) {
  // A [4,6,2] tensor sliced over 2 ranks along each axis: each piece has the
  // expected dims and elements w[i,j,k] = (i*6 + j)*2 + k of its range.
  onnx::TensorProto t = iota({4, 6, 2});
  for (int axis = 0; axis < 3; ++axis) {
    for (int rank = 0; rank < 2; ++rank) {
      onnx::TensorProto s = sliceTensor(t, axis, rank, 2);
      std::vector<int64_t> dims(s.dims().begin(), s.dims().end());
      std::vector<int64_t> want = {4, 6, 2};
      want[axis] /= 2;
      ASSERT_EQ(dims, want);
      std::vector<float> got = values(s);
      size_t idx = 0;
      for (int64_t i = 0; i < want[0]; ++i)
        for (int64_t j = 0; j < want[1]; ++j)
          for (int64_t k = 0; k < want[2]; ++k) {
            int64_t gi = i + (axis == 0 ? rank * want[0] : 0);
            int64_t gj = j + (axis == 1 ? rank * want[1] : 0);
            int64_t gk = k + (axis == 2 ? rank * want[2] : 0);
            EXPECT_EQ(got[idx++], static_cast<float>((gi * 6 + gj) * 2 + gk))
                << "axis " << axis << " rank " << rank;
          }
    }
  }
}

TEST(SliceTensor, FourRanksOfAColumnParallelWeight) {
  // Gemm weight [N=8, K=3] (transB=1) column-parallel over 4 ranks: rank k
  // holds rows [2k, 2k+2).
  onnx::TensorProto t = iota({8, 3});
  for (int rank = 0; rank < 4; ++rank) {
    auto v = values(sliceTensor(t, 0, rank, 4));
    ASSERT_EQ(v.size(), 6u);
    for (int i = 0; i < 6; ++i)
      EXPECT_EQ(v[i], static_cast<float>(rank * 6 + i));
  }
}

TEST(Divisors, ListsTheTpValuesThatWork) {
  EXPECT_EQ(divisorsList(12), "1, 2, 3, 4, 6, 12");
  EXPECT_EQ(divisorsList(7), "1, 7");
  EXPECT_EQ(divisorsList(512, 4), "1, 2, 4, 8, ...");
}

TEST(SliceTensor, HeadWiseBlocksOfAFusedQKVWeight) {
  // W[2, 12] = Q|K|V, 4 columns each; over 2 ranks rank k takes columns
  // [2k, 2k+2) of each of the three blocks, side by side.
  onnx::TensorProto t = iota({2, 12});
  for (int rank = 0; rank < 2; ++rank) {
    onnx::TensorProto s = sliceTensor(t, 1, rank, 2, 3);
    ASSERT_EQ(s.dims(0), 2);
    ASSERT_EQ(s.dims(1), 6);
    std::vector<float> want;
    for (int r = 0; r < 2; ++r)
      for (int b = 0; b < 3; ++b)
        for (int c = 0; c < 2; ++c)
          want.push_back(static_cast<float>(r * 12 + b * 4 + rank * 2 + c));
    EXPECT_EQ(values(s), want) << "rank " << rank;
  }
}

TEST(Placement, BlockedShardPrintsAndCompares) {
  EXPECT_EQ(Placement::S(2, 3).str(), "S(2)x3");
  EXPECT_NE(Placement::S(2, 3), Placement::S(2));
  EXPECT_EQ(Placement::S(2, 1), Placement::S(2));
}

TEST(Placement, MergedShardPrintsAndCompares) {
  Placement m = Placement::Merged(0, 16);
  EXPECT_EQ(m.str(), "S(0)/16");
  EXPECT_TRUE(m.isMerged());
  EXPECT_EQ(m.blockSize(), 16);
  EXPECT_FALSE(Placement::S(0, 16).isMerged());
  EXPECT_NE(m, Placement::S(0));
  EXPECT_NE(m, Placement::S(0, 16));
  EXPECT_NE(m, Placement::Merged(0, 8));
  // No collective moves it: a redistribution would be an internal error.
  EXPECT_EQ(redistribution(m, m), Redistribution::None);
}

TEST(Placement, ParseIsTheInverseOfStr) {
  for (Placement p : {Placement::R(), Placement::P(), Placement::S(0), Placement::S(3),
                      Placement::S(2, 3), Placement::Merged(1, 4)}) {
    Placement q;
    ASSERT_TRUE(Placement::parse(p.str(), q)) << p.str();
    EXPECT_EQ(q, p) << p.str();
  }
  Placement q;
  for (const char *bad : {"", "S", "S()", "S(-1)", "S(1", "S(1)x", "S(1)x0", "S(1)y", "r",
                          "S(1)x2z", " R", "S(a)", "S(0)/", "S(0)/0", "S(0)/-2", "S(0)/4x"})
    EXPECT_FALSE(Placement::parse(bad, q)) << bad;
}
