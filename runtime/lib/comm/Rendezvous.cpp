//===- Rendezvous.cpp - Joining ranks through the TCP store ---------------===//
#include "Rendezvous.h"

using namespace std::chrono;

namespace qn::rt {
namespace {

llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

/// Posts this rank's world size and plan id, reads every rank's, and checks
/// they agree.
llvm::Error checkPlans(TcpStore &store, const RendezvousOptions &opts,
                       steady_clock::time_point deadline) {
  std::string mine = std::to_string(opts.worldSize) + " " + opts.planId;
  if (llvm::Error e =
          store.trySet("qn/plan/" + std::to_string(opts.rank), mine))
    return e;
  for (int r = 0; r < opts.worldSize; ++r) {
    if (r == opts.rank)
      continue;
    auto left = duration_cast<milliseconds>(deadline - steady_clock::now());
    auto theirs = store.tryGet("qn/plan/" + std::to_string(r),
                               std::max(left, milliseconds(0)));
    if (!theirs)
      return makeError("rendezvous: rank " + std::to_string(r) +
                       " did not join within " +
                       std::to_string(opts.timeout.count()) + " ms (rank " +
                       std::to_string(opts.rank) + " is waiting): " +
                       llvm::toString(theirs.takeError()));
    auto [wsText, plan] = llvm::StringRef(*theirs).split(' ');
    int ws = -1;
    wsText.getAsInteger(10, ws);
    if (ws != opts.worldSize)
      return makeError("rendezvous: rank " + std::to_string(opts.rank) +
                       " was started with world size " +
                       std::to_string(opts.worldSize) + " but rank " +
                       std::to_string(r) + " with world size " + wsText +
                       ": start every rank with the same number of ranks");
    if (plan != opts.planId)
      return makeError("rendezvous: rank " + std::to_string(opts.rank) +
                       " runs plan '" + opts.planId + "' but rank " +
                       std::to_string(r) + " runs plan '" + plan +
                       "': start every rank from the same plan folder");
  }
  return llvm::Error::success();
}

} // namespace

llvm::Expected<std::unique_ptr<TcpStore>> joinRendezvous(const RendezvousOptions &opts) {
  if (opts.worldSize < 1)
    return makeError("rendezvous: world size must be at least 1, not " +
                     std::to_string(opts.worldSize));
  if (opts.rank < 0 || opts.rank >= opts.worldSize)
    return makeError("rendezvous: rank " + std::to_string(opts.rank) +
                     " is out of range for world size " +
                     std::to_string(opts.worldSize));
  if (opts.masterPort <= 0 || opts.masterPort > 65535)
    return makeError("rendezvous: invalid master port " +
                     std::to_string(opts.masterPort));
  if (opts.timeout.count() <= 0)
    return makeError("rendezvous: the timeout must be positive");
  auto deadline = steady_clock::now() + opts.timeout;

  auto storeOr = TcpStore::create(opts.masterAddr, opts.masterPort,
                                  opts.rank == 0, opts.timeout);
  if (!storeOr)
    return makeError("rendezvous of rank " + std::to_string(opts.rank) + ": " +
                     llvm::toString(storeOr.takeError()));
  std::unique_ptr<TcpStore> store = std::move(*storeOr);

  // Two processes claiming the same rank would corrupt the rendezvous.
  auto claims = store->tryAdd("qn/join/" + std::to_string(opts.rank), 1);
  if (!claims)
    return makeError("rendezvous of rank " + std::to_string(opts.rank) + ": " +
                     llvm::toString(claims.takeError()));
  if (*claims > 1)
    return makeError("rendezvous: two processes were started as rank " +
                     std::to_string(opts.rank) + " (store " +
                     store->endpoint() + ")");

  if (llvm::Error e = checkPlans(*store, opts, deadline))
    return abandonRendezvous(*store, opts, std::move(e));

  return store;
}

llvm::Error abandonRendezvous(TcpStore &store, const RendezvousOptions &opts, llvm::Error e) {
  if (opts.rank != 0) {
    llvm::consumeError(store.trySet("qn/done/" + std::to_string(opts.rank), "1"));
    return e;
  }
  std::vector<std::string> joined;
  for (int r = 1; r < opts.worldSize; ++r) {
    auto v = store.tryGet("qn/plan/" + std::to_string(r), milliseconds(0));
    if (v)
      joined.push_back("qn/done/" + std::to_string(r));
    else
      llvm::consumeError(v.takeError());
  }
  if (!joined.empty())
    llvm::consumeError(store.tryWait(joined, opts.timeout));
  return e;
}

llvm::Expected<std::vector<std::string>> storeExchange(TcpStore &store, uint64_t &seq,
                                                       llvm::StringRef key, llvm::StringRef value,
                                                       int rank, int size,
                                                       milliseconds timeout) {
  // A sequence number keeps a reused key from reading a previous round.
  std::string prefix = "qn/x/" + std::to_string(seq++) + "/" +
                       key.str() + "/";
  auto where = [&](llvm::Error e) {
    return makeError("exchange('" + key + "') on rank " +
                     std::to_string(rank) + ": " +
                     llvm::toString(std::move(e)));
  };
  if (llvm::Error e = store.trySet(prefix + std::to_string(rank), value))
    return where(std::move(e));
  std::vector<std::string> values;
  auto deadline = steady_clock::now() + timeout;
  for (int r = 0; r < size; ++r) {
    auto left = duration_cast<milliseconds>(deadline - steady_clock::now());
    auto v = store.tryGet(prefix + std::to_string(r),
                            std::max(left, milliseconds(0)));
    if (!v)
      return where(v.takeError());
    values.push_back(std::move(*v));
  }
  return values;
}

/// Posts "qn/done/<rank>" and waits (bounded) until every rank has: no
/// rank tears down its Gloo pairs while a peer may still be reading the
/// last messages of a collective from them (gloo sends asynchronously).
/// Then rank 0, which serves the store, waits for every other rank to
/// post "qn/exit/<rank>", so it does not take the store away from a rank
/// still waiting on it.
llvm::Error finishRendezvous(TcpStore &store, int rank, int worldSize, milliseconds timeout) {
  if (llvm::Error e = store.trySet("qn/done/" + std::to_string(rank), "1"))
    return e;
  std::vector<std::string> done, exited;
  for (int r = 0; r < worldSize; ++r)
    if (r != rank) {
      done.push_back("qn/done/" + std::to_string(r));
      if (r != 0)
        exited.push_back("qn/exit/" + std::to_string(r));
    }
  if (done.empty())
    return llvm::Error::success();
  if (llvm::Error e = store.tryWait(done, timeout))
    return makeError("rank " + std::to_string(rank) +
                     " stopped waiting for the other ranks to finish: " +
                     llvm::toString(std::move(e)));
  if (rank != 0)
    return store.trySet("qn/exit/" + std::to_string(rank), "1");
  if (llvm::Error e = store.tryWait(exited, timeout))
    return makeError("rank 0 stopped waiting for the other ranks to finish "
                     "before shutting down the rendezvous store: " +
                     llvm::toString(std::move(e)));
  return llvm::Error::success();
}

} // namespace qn::rt
