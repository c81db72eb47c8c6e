//===- Rendezvous.h - Joining ranks through the TCP store --------*- C++ -*-===//
//
// Internal to the runtime: what the Gloo and NCCL engines share. Rank 0 serves
// the store; every rank claims its rank number, posts its world size and plan
// id and checks everyone else's; small values are exchanged through it (the
// NCCL unique id among them); at the end the ranks leave in two phases so
// that rank 0 keeps the store up until the others are gone.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "TcpStore.h"
#include "qn/runtime/Communicator.h"

namespace qn::rt {

/// Validates `opts`, starts or joins the store, claims opts.rank and checks
/// every rank's world size and plan id (errors name the ranks and ids).
llvm::Expected<std::unique_ptr<TcpStore>> joinRendezvous(const RendezvousOptions &opts);
/// After a failure that follows joinRendezvous: rank 0 keeps serving the
/// store until the ranks that joined have given up too (so that they see the
/// real cause rather than a lost connection). Returns `e`.
llvm::Error abandonRendezvous(TcpStore &store, const RendezvousOptions &opts, llvm::Error e);
/// Every rank posts `value` under `key`; returns all values in rank order.
/// `seq` (per communicator) keeps a reused key from reading an older round.
llvm::Expected<std::vector<std::string>> storeExchange(TcpStore &store, uint64_t &seq,
                                                       llvm::StringRef key, llvm::StringRef value,
                                                       int rank, int size,
                                                       std::chrono::milliseconds timeout);
/// Posts "qn/done/<rank>" and waits (bounded) until every rank has: no rank
/// tears down its connections while a peer may still be reading the last
/// messages of a collective from them. Then rank 0, which serves the store,
/// waits for every other rank to post "qn/exit/<rank>", so it does not take
/// the store away from a rank still waiting on it.
llvm::Error finishRendezvous(TcpStore &store, int rank, int worldSize,
                             std::chrono::milliseconds timeout);

} // namespace qn::rt
