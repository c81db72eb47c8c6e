//===- LocalCommTest.cpp - The local engine (ranks as threads) on the host ===//
//
// Every rank holds rank-dependent data; results are compared with sums and
// concatenations computed here, in rank order, and must be bitwise identical
// across ranks. Failures: a rank that aborts, a rank that never comes, shapes
// that differ between ranks.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Communicator.h"
#include "qn/runtime/Tensor.h"

#include <cstring>
#include <functional>
#include <thread>

#include "gtest/gtest.h"

using namespace qn::rt;
using namespace std::chrono_literals;

namespace {

/// Runs body(rank, comm) on n threads; returns each rank's error text ("" ok).
std::vector<std::string> onRanks(int n, std::function<llvm::Error(int, Communicator &)> body,
                                 std::chrono::milliseconds timeout = 5000ms) {
  auto comms = createLocalCommunicators(n, timeout);
  std::vector<std::string> errs(n);
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      if (llvm::Error e = body(r, *comms[r])) {
        errs[r] = llvm::toString(std::move(e));
        abortLocalGroup(*comms[r], "rank " + std::to_string(r) + " failed");
      }
    });
  for (auto &t : ts)
    t.join();
  return errs;
}

float valueAt(int rank, int64_t i) { return 0.25f * static_cast<float>(rank + 1) + 0.001f * i; }

Tensor rankTensor(int rank, std::vector<int64_t> shape) {
  Tensor t = Tensor::empty(DType::Float, shape);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = valueAt(rank, i);
  return t;
}

class LocalComm : public ::testing::TestWithParam<int> {};

TEST_P(LocalComm, AllReduceInAndOutOfPlace) {
  int n = GetParam();
  std::vector<Tensor> results(n);
  auto errs = onRanks(n, [&](int r, Communicator &c) -> llvm::Error {
    EXPECT_EQ(c.rank(), r);
    EXPECT_EQ(c.size(), n);
    EXPECT_STREQ(c.engine(), "local");
    Tensor t = rankTensor(r, {3, 5});
    if (auto e = c.allReduceSum(t))
      return e;
    Tensor in = rankTensor(r, {3, 5}), out = Tensor::zeros(DType::Float, {3, 5});
    if (auto e = c.allReduceSum(in, out))
      return e;
    EXPECT_EQ(std::memcmp(t.raw(), out.raw(), t.nbytes()), 0);
    results[r] = t;
    return llvm::Error::success();
  });
  for (int r = 0; r < n; ++r)
    ASSERT_EQ(errs[r], "");
  for (int64_t i = 0; i < 15; ++i) {
    float want = valueAt(0, i);
    for (int r = 1; r < n; ++r)
      want += valueAt(r, i); // rank order, as the engine sums
    for (int r = 0; r < n; ++r)
      EXPECT_EQ(results[r].data<float>()[i], want) << "rank " << r << " element " << i;
  }
}

TEST_P(LocalComm, AllGatherEveryAxis) {
  int n = GetParam();
  for (int axis = 0; axis < 3; ++axis) {
    std::vector<Tensor> results(n);
    auto errs = onRanks(n, [&](int r, Communicator &c) -> llvm::Error {
      return c.allGather(rankTensor(r, {2, 3, 4}), results[r], axis);
    });
    for (int r = 0; r < n; ++r)
      ASSERT_EQ(errs[r], "");
    std::vector<int64_t> s = {2, 3, 4};
    s[axis] *= n;
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(results[r].shape(), s);
      // out[i0,i1,i2] comes from rank i_axis / d at index i_axis % d.
      int64_t d = axis == 0 ? 2 : axis == 1 ? 3 : 4;
      for (int64_t i0 = 0; i0 < s[0]; ++i0)
        for (int64_t i1 = 0; i1 < s[1]; ++i1)
          for (int64_t i2 = 0; i2 < s[2]; ++i2) {
            int64_t idx[3] = {i0, i1, i2};
            int src = static_cast<int>(idx[axis] / d);
            idx[axis] %= d;
            float want = valueAt(src, (idx[0] * 3 + idx[1]) * 4 + idx[2]);
            EXPECT_EQ(results[r].data<float>()[(i0 * s[1] + i1) * s[2] + i2], want);
          }
    }
  }
}

TEST_P(LocalComm, ReduceScatter) {
  int n = GetParam();
  for (int axis = 0; axis < 2; ++axis) {
    std::vector<int64_t> shape = {axis == 0 ? 2 * n : 3, axis == 1 ? 4 * n : 2};
    std::vector<Tensor> results(n);
    auto errs = onRanks(n, [&](int r, Communicator &c) -> llvm::Error {
      return c.reduceScatterSum(rankTensor(r, shape), results[r], axis);
    });
    for (int r = 0; r < n; ++r)
      ASSERT_EQ(errs[r], "");
    for (int r = 0; r < n; ++r) {
      std::vector<int64_t> os = shape;
      os[axis] /= n;
      ASSERT_EQ(results[r].shape(), os);
      for (int64_t i = 0; i < os[0]; ++i)
        for (int64_t j = 0; j < os[1]; ++j) {
          int64_t gi = axis == 0 ? r * os[0] + i : i, gj = axis == 1 ? r * os[1] + j : j;
          float want = valueAt(0, gi * shape[1] + gj);
          for (int q = 1; q < n; ++q)
            want += valueAt(q, gi * shape[1] + gj);
          EXPECT_EQ(results[r].data<float>()[i * os[1] + j], want);
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalComm, ::testing::Values(1, 2, 3, 4));

TEST(LocalCommunicator, HalfAndIntegerSums) {
  auto errs = onRanks(3, [&](int r, Communicator &c) -> llvm::Error {
    Tensor h = Tensor::empty(DType::Float16, {4});
    Tensor i = Tensor::empty(DType::Int64, {4});
    for (int k = 0; k < 4; ++k) {
      h.data<uint16_t>()[k] = floatToHalf(0.5f * (r + 1));
      i.data<int64_t>()[k] = (int64_t(1) << 40) + r;
    }
    if (auto e = c.allReduceSum(h))
      return e;
    if (auto e = c.allReduceSum(i))
      return e;
    EXPECT_EQ(halfToFloat(h.data<uint16_t>()[2]), 3.0f);
    EXPECT_EQ(i.data<int64_t>()[3], 3 * (int64_t(1) << 40) + 3);
    return llvm::Error::success();
  });
  for (auto &e : errs)
    EXPECT_EQ(e, "");
}

TEST(LocalCommunicator, ExchangeInRankOrder) {
  auto errs = onRanks(3, [&](int r, Communicator &c) -> llvm::Error {
    auto all = c.exchange("k", "v" + std::to_string(r));
    if (!all)
      return all.takeError();
    EXPECT_EQ(*all, (std::vector<std::string>{"v0", "v1", "v2"}));
    return llvm::Error::success();
  });
  for (auto &e : errs)
    EXPECT_EQ(e, "");
}

TEST(LocalCommunicator, ShapeMismatchFailsOnEveryRank) {
  auto errs = onRanks(2, [&](int r, Communicator &c) -> llvm::Error {
    Tensor t = rankTensor(r, {r == 0 ? 4 : 5});
    return c.allReduceSum(t);
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(errs[r].find("all-reduce"), std::string::npos) << errs[r];
}

TEST(LocalCommunicator, AFailedRankStopsThePeers) {
  auto t0 = std::chrono::steady_clock::now();
  auto errs = onRanks(
      3,
      [&](int r, Communicator &c) -> llvm::Error {
        if (r == 1)
          return llvm::createStringError(llvm::inconvertibleErrorCode(), "kernel failed");
        Tensor t = rankTensor(r, {8});
        return c.allReduceSum(t);
      },
      30000ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "peers waited for the timeout";
  EXPECT_EQ(errs[1], "kernel failed");
  for (int r : {0, 2})
    EXPECT_NE(errs[r].find("rank 1 failed"), std::string::npos) << errs[r];
}

TEST(LocalCommunicator, AMissingRankTimesOut) {
  auto errs = onRanks(
      2,
      [&](int r, Communicator &c) -> llvm::Error {
        if (r == 1)
          return llvm::Error::success(); // never joins the collective
        Tensor t = rankTensor(r, {8});
        return c.allReduceSum(t);
      },
      200ms);
  EXPECT_NE(errs[0].find("--timeout"), std::string::npos) << errs[0];
}

TEST(LocalCommunicator, DeviceBindingIsExplicit) {
  auto comms = createLocalCommunicators(1, 1000ms);
  llvm::Error e = comms[0]->bindDevice(nullptr);
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_NE(llvm::toString(std::move(e)).find("setLocalDeviceBackend"), std::string::npos);
}

} // namespace
