//===- CommTest.cpp - Gloo communicator and TCP rendezvous store ---------===//
//
// Ranks run as threads of this process, each with its own communicator (its
// own store client, Gloo device and context), as separate processes would.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Communicator.h"
#include "qn/runtime/Tensor.h"

#include "../../../runtime/lib/comm/TcpStore.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"

using namespace qn::rt;
using namespace std::chrono;

namespace {

/// A port nobody listens on right now (bind port 0, read it back, close).
int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

RendezvousOptions options(int rank, int n, int port, std::string plan = "plan-abc",
                          milliseconds timeout = seconds(5)) {
  RendezvousOptions o;
  o.rank = rank;
  o.worldSize = n;
  o.masterAddr = "127.0.0.1";
  o.masterPort = port;
  o.planId = std::move(plan);
  o.timeout = timeout;
  return o;
}

/// Runs body(comm) on n rank threads; a rank whose communicator cannot be
/// created fails the test.
void runRanks(int n, const std::function<void(Communicator &)> &body, bool busyPoll = false) {
  int port = freePort();
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      RendezvousOptions o = options(r, n, port);
      o.busyPoll = busyPoll;
      auto comm = createGlooCommunicator(o);
      if (!comm) {
        ADD_FAILURE() << "rank " << r << ": " << llvm::toString(comm.takeError());
        return;
      }
      body(**comm);
      if (llvm::Error e = (*comm)->finish())
        ADD_FAILURE() << "rank " << r << " finish: " << llvm::toString(std::move(e));
    });
  for (auto &t : threads)
    t.join();
}

std::string errText(llvm::Error e) { return e ? llvm::toString(std::move(e)) : ""; }

bool sameBytes(const Tensor &a, const Tensor &b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

class CommGloo : public ::testing::TestWithParam<int> {};

TEST_P(CommGloo, AllReduceSumFloat32) {
  const int n = GetParam();
  // Small exact values (multiples of 0.25): the sum is exact in any order.
  const int64_t exactCount = 3 * 5;
  auto exactValue = [](int r, int64_t i) { return (r + 1) * 100.0 + i * 0.25 - r * 3; };
  // Many inexact values, enough for several ring segments per rank.
  const int64_t bigCount = 600000;
  auto bigValue = [](int r, int64_t i) {
    return std::sin(0.001 * i + r) * 1e3 / (1 + (i % 7)) + 0.1 * r;
  };
  std::vector<Tensor> exact(n), big(n);
  runRanks(n, [&](Communicator &c) {
    int r = c.rank();
    Tensor t = Tensor::zeros(DType::Float, {3, 5});
    for (int64_t i = 0; i < exactCount; ++i)
      t.data<float>()[i] = static_cast<float>(exactValue(r, i));
    EXPECT_FALSE(c.allReduceSum(t)) << "rank " << r;
    exact[r] = t;
    Tensor b = Tensor::zeros(DType::Float, {bigCount});
    for (int64_t i = 0; i < bigCount; ++i)
      b.data<float>()[i] = static_cast<float>(bigValue(r, i));
    if (llvm::Error e = c.allReduceSum(b))
      ADD_FAILURE() << llvm::toString(std::move(e));
    big[r] = b;
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(exact[r].defined());
    ASSERT_TRUE(big[r].defined());
    EXPECT_TRUE(sameBytes(exact[r], exact[0])) << "rank " << r;
    EXPECT_TRUE(sameBytes(big[r], big[0])) << "rank " << r << " differs bitwise";
  }
  for (int64_t i = 0; i < exactCount; ++i) {
    double want = 0;
    for (int r = 0; r < n; ++r)
      want += static_cast<float>(exactValue(r, i));
    EXPECT_EQ(exact[0].data<float>()[i], static_cast<float>(want)) << "element " << i;
  }
  for (int64_t i = 0; i < bigCount; i += 997) {
    double want = 0;
    for (int r = 0; r < n; ++r)
      want += static_cast<float>(bigValue(r, i));
    EXPECT_NEAR(big[0].data<float>()[i], want, 1e-3) << "element " << i;
  }
}

TEST_P(CommGloo, AllReduceSumIntegersAndOtherFloats) {
  const int n = GetParam();
  auto i64 = [](int r, int64_t i) -> int64_t {
    return (r + 1) * 1000000000007LL - i * 13 + (r % 2 ? -5 : 5);
  };
  std::vector<Tensor> a(n), b(n), h(n), d(n);
  runRanks(n, [&](Communicator &c) {
    int r = c.rank();
    Tensor t = Tensor::zeros(DType::Int64, {2, 2, 3});
    for (int64_t i = 0; i < 12; ++i)
      t.data<int64_t>()[i] = i64(r, i);
    EXPECT_FALSE(c.allReduceSum(t));
    a[r] = t;
    Tensor u = Tensor::zeros(DType::Int32, {7});
    for (int64_t i = 0; i < 7; ++i)
      u.data<int32_t>()[i] = static_cast<int32_t>(r * 10 - i);
    EXPECT_FALSE(c.allReduceSum(u));
    b[r] = u;
    Tensor f16 = Tensor::zeros(DType::Float16, {4});
    for (int64_t i = 0; i < 4; ++i)
      f16.data<uint16_t>()[i] = floatToHalf(static_cast<float>(r + i) * 0.5f);
    EXPECT_FALSE(c.allReduceSum(f16));
    h[r] = f16;
    Tensor f64 = Tensor::zeros(DType::Double, {3});
    for (int64_t i = 0; i < 3; ++i)
      f64.data<double>()[i] = r * 1.5 + i;
    EXPECT_FALSE(c.allReduceSum(f64));
    d[r] = f64;
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(a[r].defined() && b[r].defined() && h[r].defined() && d[r].defined());
    EXPECT_TRUE(sameBytes(a[r], a[0]));
    EXPECT_TRUE(sameBytes(b[r], b[0]));
    EXPECT_TRUE(sameBytes(h[r], h[0]));
    EXPECT_TRUE(sameBytes(d[r], d[0]));
  }
  for (int64_t i = 0; i < 12; ++i) {
    int64_t want = 0;
    for (int r = 0; r < n; ++r)
      want += i64(r, i);
    EXPECT_EQ(a[0].data<int64_t>()[i], want) << "element " << i;
  }
  for (int64_t i = 0; i < 7; ++i) {
    int32_t want = 0;
    for (int r = 0; r < n; ++r)
      want += r * 10 - static_cast<int32_t>(i);
    EXPECT_EQ(b[0].data<int32_t>()[i], want);
  }
  for (int64_t i = 0; i < 4; ++i) {
    float want = 0;
    for (int r = 0; r < n; ++r)
      want += (r + i) * 0.5f;
    EXPECT_EQ(halfToFloat(h[0].data<uint16_t>()[i]), want);
  }
  for (int64_t i = 0; i < 3; ++i) {
    double want = 0;
    for (int r = 0; r < n; ++r)
      want += r * 1.5 + i;
    EXPECT_EQ(d[0].data<double>()[i], want);
  }
}

TEST_P(CommGloo, AllGatherEveryAxis) {
  const int n = GetParam();
  const std::vector<int64_t> local = {2, 3, 4};
  // Rank r holds r * 1000 + (C-order index within its local tensor).
  std::vector<std::vector<Tensor>> got(3, std::vector<Tensor>(n));
  const int axes[3] = {0, 1, -1};
  runRanks(n, [&](Communicator &c) {
    int r = c.rank();
    Tensor t = Tensor::zeros(DType::Float, local);
    for (int64_t i = 0; i < 24; ++i)
      t.data<float>()[i] = static_cast<float>(r * 1000 + i);
    for (int k = 0; k < 3; ++k) {
      Tensor out;
      if (llvm::Error e = c.allGather(t, out, axes[k]))
        ADD_FAILURE() << "axis " << axes[k] << ": " << llvm::toString(std::move(e));
      got[k][r] = out;
    }
  });
  for (int k = 0; k < 3; ++k) {
    int ax = axes[k] < 0 ? axes[k] + 3 : axes[k];
    std::vector<int64_t> shape = local;
    shape[ax] *= n;
    for (int r = 0; r < n; ++r) {
      const Tensor &o = got[k][r];
      ASSERT_TRUE(o.defined()) << "axis " << ax << " rank " << r;
      ASSERT_EQ(o.shape(), shape) << "axis " << ax;
      ASSERT_EQ(o.dtype(), DType::Float);
      for (int64_t i = 0; i < shape[0]; ++i)
        for (int64_t j = 0; j < shape[1]; ++j)
          for (int64_t l = 0; l < shape[2]; ++l) {
            int64_t idx[3] = {i, j, l};
            int64_t src = idx[ax] / local[ax];
            idx[ax] %= local[ax];
            float want = static_cast<float>(
                src * 1000 + (idx[0] * local[1] + idx[1]) * local[2] + idx[2]);
            float have = o.data<float>()[(i * shape[1] + j) * shape[2] + l];
            ASSERT_EQ(have, want) << "axis " << ax << " rank " << r << " at ["
                                  << i << "," << j << "," << l << "]";
          }
    }
  }
}

// Back-to-back all-gathers of one size, each of new data, checked at once on
// every rank: a rank must never see a peer's next gather in this one's result
// (Gloo's ring all-gather writes straight into its output buffer, so a peer
// that has moved on to the next gather could overwrite it before this rank
// copied it out), with and without busy polling.
void repeatedGathers(int n, bool busyPoll, int kRounds) {
  SCOPED_TRACE(std::to_string(n) + " ranks, busy-poll " + (busyPoll ? "on" : "off"));
  std::vector<int> bad(n, 0);
  runRanks(
      n,
      [&](Communicator &c) {
        int r = c.rank();
        Tensor t = Tensor::zeros(DType::Int32, {4, 8});
        for (int k = 0; k < kRounds; ++k) { // all rounds on every rank: they stay in step
          for (int64_t i = 0; i < 32; ++i)
            t.data<int32_t>()[i] = (k * 16 + r) * 100 + static_cast<int32_t>(i);
          Tensor out;
          if (llvm::Error e = c.allGather(t, out, k % 2)) {
            ADD_FAILURE() << "round " << k << ": " << llvm::toString(std::move(e));
            bad[r] = 1;
            break;
          }
          const int ax = k % 2;
          for (int64_t i = 0; i < out.numel() && bad[r] < 3; ++i) {
            int64_t row = i / out.dim(1), col = i % out.dim(1);
            int64_t src = ax == 0 ? row / 4 : col / 8;
            int64_t li = ax == 0 ? (row % 4) * 8 + col : row * 8 + col % 8;
            int32_t want = static_cast<int32_t>((k * 16 + src) * 100 + li);
            if (out.data<int32_t>()[i] != want) {
              ADD_FAILURE() << "rank " << r << " round " << k << " element " << i << ": "
                            << out.data<int32_t>()[i] << ", want " << want;
              ++bad[r]; // the first three mismatches of a rank are reported
            }
          }
        }
      },
      busyPoll);
}

// The same for back-to-back all-reduces of one size.
void repeatedReduces(int n, bool busyPoll, int kRounds) {
  SCOPED_TRACE(std::to_string(n) + " ranks, busy-poll " + (busyPoll ? "on" : "off"));
  std::vector<int> bad(n, 0);
  runRanks(
      n,
      [&](Communicator &c) {
        int r = c.rank();
        for (int k = 0; k < kRounds; ++k) {
          Tensor t = Tensor::zeros(DType::Int64, {16});
          for (int64_t i = 0; i < 16; ++i)
            t.data<int64_t>()[i] = (k * 16 + r) * 100 + i;
          if (llvm::Error e = c.allReduceSum(t)) {
            ADD_FAILURE() << "round " << k << ": " << llvm::toString(std::move(e));
            return;
          }
          for (int64_t i = 0; i < 16 && bad[r] < 3; ++i) {
            int64_t want = 0;
            for (int q = 0; q < n; ++q)
              want += (k * 16 + q) * 100 + i;
            if (t.data<int64_t>()[i] != want) {
              ADD_FAILURE() << "rank " << r << " round " << k << " element " << i << ": "
                            << t.data<int64_t>()[i] << ", want " << want;
              ++bad[r];
            }
          }
        }
      },
      busyPoll);
}

TEST_P(CommGloo, RepeatedAllReducesDoNotOverlap) {
  repeatedReduces(GetParam(), /*busyPoll=*/false, 300);
  repeatedReduces(GetParam(), /*busyPoll=*/true, 40);
}

TEST_P(CommGloo, RepeatedAllGathersDoNotOverlap) {
  repeatedGathers(GetParam(), /*busyPoll=*/false, 300);
  // Spinning ranks share this machine's cores: fewer rounds.
  repeatedGathers(GetParam(), /*busyPoll=*/true, 40);
}

TEST_P(CommGloo, ReduceScatterSum) {
  const int n = GetParam();
  // in: [3, 2n, 2]; rank r holds (r + 1) * (index + 1).
  const std::vector<int64_t> shape = {3, 2 * n, 2};
  std::vector<Tensor> got(n), got0(n);
  std::vector<std::string> notDivisible(n);
  runRanks(n, [&](Communicator &c) {
    int r = c.rank();
    Tensor t = Tensor::zeros(DType::Int64, shape);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<int64_t>()[i] = (r + 1) * (i + 1);
    Tensor out;
    if (llvm::Error e = c.reduceScatterSum(t, out, 1))
      ADD_FAILURE() << llvm::toString(std::move(e));
    got[r] = out;
    // Axis 0 of a [n, 5] float tensor: rank r keeps row r.
    Tensor f = Tensor::zeros(DType::Float, {n, 5});
    for (int64_t i = 0; i < f.numel(); ++i)
      f.data<float>()[i] = static_cast<float>(r + i);
    Tensor out0;
    if (llvm::Error e = c.reduceScatterSum(f, out0, -2))
      ADD_FAILURE() << llvm::toString(std::move(e));
    got0[r] = out0;
    // Not divisible: a local precondition failure, no communication.
    Tensor bad = Tensor::zeros(DType::Float, {2, n + 1});
    Tensor ignored;
    notDivisible[r] = errText(c.reduceScatterSum(bad, ignored, 1));
  });
  int64_t ranksSum = n * (n + 1) / 2;
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(got[r].defined());
    ASSERT_EQ(got[r].shape(), (std::vector<int64_t>{3, 2, 2}));
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t l = 0; l < 2; ++l) {
          int64_t full = (i * shape[1] + (r * 2 + j)) * shape[2] + l;
          EXPECT_EQ(got[r].data<int64_t>()[(i * 2 + j) * 2 + l], ranksSum * (full + 1));
        }
    ASSERT_TRUE(got0[r].defined());
    ASSERT_EQ(got0[r].shape(), (std::vector<int64_t>{1, 5}));
    for (int64_t l = 0; l < 5; ++l) {
      float want = 0;
      for (int q = 0; q < n; ++q)
        want += static_cast<float>(q + r * 5 + l);
      EXPECT_EQ(got0[r].data<float>()[l], want);
    }
    EXPECT_NE(notDivisible[r].find("not divisible"), std::string::npos)
        << notDivisible[r];
  }
}

TEST_P(CommGloo, Exchange) {
  const int n = GetParam();
  std::vector<std::vector<std::string>> first(n), second(n);
  runRanks(n, [&](Communicator &c) {
    int r = c.rank();
    auto a = c.exchange("hello", "v" + std::to_string(r));
    if (!a)
      ADD_FAILURE() << llvm::toString(a.takeError());
    else
      first[r] = *a;
    // Same key again: must not read the first round's values.
    auto b = c.exchange("hello", "w" + std::to_string(r * r));
    if (!b)
      ADD_FAILURE() << llvm::toString(b.takeError());
    else
      second[r] = *b;
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(first[r].size(), static_cast<size_t>(n));
    ASSERT_EQ(second[r].size(), static_cast<size_t>(n));
    for (int q = 0; q < n; ++q) {
      EXPECT_EQ(first[r][q], "v" + std::to_string(q));
      EXPECT_EQ(second[r][q], "w" + std::to_string(q * q));
    }
  }
}

// Named so that --gtest_filter='Comm*' selects them.
INSTANTIATE_TEST_SUITE_P(Comm, CommGloo, ::testing::Values(2, 3, 4),
                         [](const auto &info) {
                           return std::to_string(info.param) + "ranks";
                         });

TEST(CommRendezvous, PlanIdMismatchNamesBothIds) {
  int port = freePort();
  std::string errs[2];
  std::thread t[2];
  const char *plans[2] = {"9c01aa", "3fa2bb"};
  for (int r = 0; r < 2; ++r)
    t[r] = std::thread([&, r] {
      auto c = createGlooCommunicator(options(r, 2, port, plans[r]));
      errs[r] = c ? "" : llvm::toString(c.takeError());
    });
  for (auto &th : t)
    th.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errs[r].find("9c01aa"), std::string::npos) << errs[r];
    EXPECT_NE(errs[r].find("3fa2bb"), std::string::npos) << errs[r];
    EXPECT_NE(errs[r].find("same plan folder"), std::string::npos) << errs[r];
  }
}

TEST(CommRendezvous, WorldSizeMismatch) {
  int port = freePort();
  std::string errs[2];
  std::thread t[2];
  for (int r = 0; r < 2; ++r)
    t[r] = std::thread([&, r] {
      RendezvousOptions o = options(r, 2, port);
      if (r == 1)
        o.worldSize = 3;
      auto c = createGlooCommunicator(o);
      errs[r] = c ? "" : llvm::toString(c.takeError());
    });
  for (auto &th : t)
    th.join();
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(errs[r].find("world size 3"), std::string::npos) << errs[r];
}

TEST(CommRendezvous, BadOptions) {
  EXPECT_NE(errText(createGlooCommunicator(options(2, 2, 1234)).takeError())
                .find("out of range"),
            std::string::npos);
}

TEST(CommRendezvous, NoServerTimesOut) {
  int port = freePort();
  auto start = steady_clock::now();
  auto c = createGlooCommunicator(options(1, 2, port, "p", milliseconds(1500)));
  auto took = duration_cast<milliseconds>(steady_clock::now() - start);
  ASSERT_FALSE(c);
  std::string msg = llvm::toString(c.takeError());
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << msg;
  EXPECT_NE(msg.find("1500 ms"), std::string::npos) << msg;
  EXPECT_GE(took.count(), 1400);
  EXPECT_LT(took.count(), 4000);
}

TEST(CommRendezvous, MissingRankTimesOut) {
  // Rank 0 of 2 alone: the server is up but rank 1 never comes.
  int port = freePort();
  auto start = steady_clock::now();
  auto c = createGlooCommunicator(options(0, 2, port, "p", milliseconds(1000)));
  auto took = duration_cast<milliseconds>(steady_clock::now() - start);
  ASSERT_FALSE(c);
  std::string msg = llvm::toString(c.takeError());
  EXPECT_NE(msg.find("rank 1 did not join"), std::string::npos) << msg;
  EXPECT_NE(msg.find("qn/plan/1"), std::string::npos) << msg;
  EXPECT_LT(took.count(), 4000);
}

TEST(CommRendezvous, RankZeroWaitsForOthersToFinish) {
  int port = freePort();
  std::atomic<long> rank0FinishMs{-1};
  std::string rank1Finish = "not run";
  std::thread t0([&] {
    auto c = createGlooCommunicator(options(0, 2, port));
    ASSERT_TRUE(!!c) << llvm::toString(c.takeError());
    auto start = steady_clock::now();
    EXPECT_FALSE((*c)->finish());
    rank0FinishMs = duration_cast<milliseconds>(steady_clock::now() - start).count();
    // Finished: no collective may follow.
    Tensor t = Tensor::zeros(DType::Float, {1});
    EXPECT_NE(errText((*c)->allReduceSum(t)).find("finished"), std::string::npos);
  });
  std::thread t1([&] {
    auto c = createGlooCommunicator(options(1, 2, port));
    ASSERT_TRUE(!!c) << llvm::toString(c.takeError());
    std::this_thread::sleep_for(milliseconds(600));
    // Still served by rank 0; the destructor posts "qn/done/1".
    rank1Finish = errText((*c)->finish());
  });
  t0.join();
  t1.join();
  EXPECT_EQ(rank1Finish, "");
  EXPECT_GE(rank0FinishMs.load(), 500);
}

TEST(CommRendezvous, PeerGoneIsAnErrorNotACrash) {
  // Rank 1 leaves without taking part; rank 0's all-reduce must fail with an
  // llvm::Error (Gloo's exception caught), and the communicator refuses
  // further collectives.
  int port = freePort();
  std::string first = "not run", second = "not run";
  std::thread t1([&] {
    auto c = createGlooCommunicator(options(1, 2, port, "p", seconds(3)));
    ASSERT_TRUE(!!c) << llvm::toString(c.takeError());
  });
  std::thread t0([&] {
    auto c = createGlooCommunicator(options(0, 2, port, "p", seconds(3)));
    ASSERT_TRUE(!!c) << llvm::toString(c.takeError());
    t1.join();
    Tensor t = Tensor::zeros(DType::Float, {1000});
    first = errText((*c)->allReduceSum(t));
    second = errText((*c)->allReduceSum(t));
  });
  t0.join();
  EXPECT_NE(first.find("allReduceSum(float32[1000]) on rank 0 of 2"),
            std::string::npos)
      << first;
  EXPECT_NE(second.find("earlier collective failed"), std::string::npos) << second;
}

TEST(CommRendezvous, SilentPeerTimesOut) {
  // Rank 1 stays connected but never joins the all-reduce: rank 0 must get
  // an error after about the timeout instead of hanging.
  int port = freePort();
  std::string err = "not run";
  long tookMs = -1;
  std::thread t1([&] {
    auto c = createGlooCommunicator(options(1, 2, port, "p", seconds(1)));
    ASSERT_TRUE(!!c) << llvm::toString(c.takeError());
    std::this_thread::sleep_for(milliseconds(1500));
  });
  std::thread t0([&] {
    auto c = createGlooCommunicator(options(0, 2, port, "p", seconds(1)));
    ASSERT_TRUE(!!c) << llvm::toString(c.takeError());
    Tensor t = Tensor::zeros(DType::Int64, {10});
    auto start = steady_clock::now();
    err = errText((*c)->allReduceSum(t));
    tookMs = duration_cast<milliseconds>(steady_clock::now() - start).count();
  });
  t0.join();
  t1.join();
  EXPECT_NE(err.find("allReduceSum(int64[10]) on rank 0 of 2: Gloo failed"),
            std::string::npos)
      << err;
  EXPECT_GE(tookMs, 900);
  EXPECT_LT(tookMs, 3000);
}

TEST(CommTcpStore, GetWaitTimeoutsAndLateServer) {
  int port = freePort();
  // The client starts first and retries until the server appears.
  std::unique_ptr<TcpStore> client;
  std::string clientErr;
  std::thread c([&] {
    auto s = TcpStore::create("127.0.0.1", port, false, seconds(5));
    if (s)
      client = std::move(*s);
    else
      clientErr = llvm::toString(s.takeError());
  });
  std::this_thread::sleep_for(milliseconds(300));
  auto server = TcpStore::create("127.0.0.1", port, true, seconds(5));
  ASSERT_TRUE(!!server) << llvm::toString(server.takeError());
  c.join();
  ASSERT_TRUE(client) << clientErr;

  EXPECT_FALSE(client->trySet("a", std::string("x\0y", 3)));
  auto v = (*server)->tryGet("a", milliseconds(100));
  ASSERT_TRUE(!!v) << llvm::toString(v.takeError());
  EXPECT_EQ(*v, std::string("x\0y", 3));

  // get blocks until the key is set by someone else.
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(200));
    (*server)->set("late", {'o', 'k'});
  });
  EXPECT_EQ(client->get("late"), (std::vector<char>{'o', 'k'}));
  setter.join();

  auto start = steady_clock::now();
  auto missing = client->tryGet("nope", milliseconds(300));
  ASSERT_FALSE(missing);
  std::string msg = llvm::toString(missing.takeError());
  EXPECT_NE(msg.find("'nope'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << msg;
  EXPECT_NE(msg.find("300 ms"), std::string::npos) << msg;
  EXPECT_GE(duration_cast<milliseconds>(steady_clock::now() - start).count(), 250);

  msg = errText(client->tryWait({"a", "b", "c"}, milliseconds(100)));
  EXPECT_NE(msg.find("'b', 'c'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_THROW(client->wait({"zzz"}, milliseconds(50)), gloo::Exception);

  auto n1 = client->tryAdd("count", 2);
  auto n2 = (*server)->tryAdd("count", 5);
  ASSERT_TRUE(n1 && n2);
  EXPECT_EQ(*n1, 2);
  EXPECT_EQ(*n2, 7);

  // Once the server is gone, the client fails fast instead of hanging.
  server->reset();
  start = steady_clock::now();
  EXPECT_NE(errText(client->trySet("after", "1")), "");
  EXPECT_LT(duration_cast<milliseconds>(steady_clock::now() - start).count(), 2000);
}

TEST(CommTcpStore, ServerOnBusyPortFails) {
  auto first = TcpStore::create("127.0.0.1", 0, true, seconds(2));
  ASSERT_TRUE(!!first) << llvm::toString(first.takeError());
  int port = (*first)->port();
  EXPECT_GT(port, 0);
  auto second = TcpStore::create("127.0.0.1", port, true, seconds(2));
  ASSERT_FALSE(second);
  EXPECT_NE(llvm::toString(second.takeError()).find(std::to_string(port)),
            std::string::npos);
}

} // namespace
