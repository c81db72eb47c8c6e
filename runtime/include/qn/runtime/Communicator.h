//===- Communicator.h - Collectives between tensor-parallel ranks -*- C++ -*-===//
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qn/runtime/Tensor.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace qn::rt {
struct DeviceContext;

/// One interface for every engine: Gloo (CPU ranks, one process each), NCCL
/// (CUDA ranks, one process per GPU) and the local engine (ranks as threads
/// of one process: host tensors, or device tensors of one GPU). Every rank must call the same collectives in
/// the same order with tensors of the same shape and dtype.
class Communicator {
public:
  virtual ~Communicator();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// In place: t = sum over ranks of t. All ranks end with bitwise identical
  /// values.
  virtual llvm::Error allReduceSum(Tensor &t) = 0;
  /// Out of place: `out` (allocated by the caller, same dtype, shape and
  /// location as `in`) = sum over ranks of `in`. The default copies and
  /// reduces in place (host tensors only).
  virtual llvm::Error allReduceSum(const Tensor &in, Tensor &out);
  /// out = concat over ranks (in rank order) of `in` along `axis`; `out` is
  /// allocated here.
  virtual llvm::Error allGather(const Tensor &in, Tensor &out, int axis) = 0;
  /// out = rank's slice along `axis` of the sum over ranks of `in`; in.dim(axis)
  /// must be divisible by size().
  virtual llvm::Error reduceScatterSum(const Tensor &in, Tensor &out, int axis) = 0;
  /// Small metadata exchange through the rendezvous store: every rank posts
  /// `value` under `key`; returns all ranks' values in rank order.
  virtual llvm::Expected<std::vector<std::string>> exchange(llvm::StringRef key,
                                                            llvm::StringRef value) = 0;
  /// Says this rank is done with the communicator; call it after the last
  /// collective (the destructor calls it when it was not called, and reports
  /// a failure on stderr). For the Gloo engine, rank 0 serves the rendezvous
  /// store and waits here (bounded by the timeout) until every rank has
  /// finished, so that no rank loses the store while it may still need it.
  /// No collective may follow. Engines with nothing to do keep this default.
  virtual llvm::Error finish() { return llvm::Error::success(); }

  /// Device engines: collectives on device tensors are enqueued on the
  /// stream of `dc` (the rank's CUDA state) and allocate from its allocator.
  /// Host engines refuse (the default).
  virtual llvm::Error bindDevice(DeviceContext *dc);
  /// True when the collectives may be captured into a CUDA graph (NCCL).
  virtual bool capturable() const { return false; }
  /// Called by a device executor before it synchronises with its GPU:
  /// waits until `done()` (polled) is true. A device engine's collectives run
  /// asynchronously on the GPU, so a peer that died or hangs shows only as a
  /// host wait that never ends. NCCL bounds the wait by the rendezvous
  /// timeout and watches NCCL's asynchronous errors; on either it aborts the
  /// communicator (every later collective fails) and returns an error naming
  /// the rank. The default returns at once (the caller's own
  /// synchronisation waits).
  virtual llvm::Error awaitDevice(const std::function<bool()> &done);
  /// "gloo", "nccl", "local".
  virtual const char *engine() const { return "custom"; }
};

struct RendezvousOptions {
  int rank = 0;
  int worldSize = 1;
  /// Rank 0 serves the rendezvous store on masterAddr:masterPort (TCP);
  /// the others connect to it.
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  /// Every rank must present the same plan id; a mismatch is an error that
  /// names both ids.
  std::string planId;
  /// Bound on rendezvous and on each collective.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  /// Spin while waiting for peers instead of sleeping: lowest latency when
  /// every rank has a core of its own, wasteful when ranks share cores.
  bool busyPoll = false;
};

/// The local engine: `n` ranks as threads of this process, one communicator
/// per rank (index = rank). Collectives meet at barriers bounded by
/// `timeout`; a rank that fails calls abort() on its communicator's group
/// (through the communicator's destructor or abortGroup) so that the others
/// stop waiting. Sums are taken in rank order: bitwise identical on every
/// rank. Host tensors, or (after bindDevice) device tensors of one GPU.
std::vector<std::unique_ptr<Communicator>>
createLocalCommunicators(int n, std::chrono::milliseconds timeout);
/// Makes every rank of `comm`'s local group fail its current and later
/// collectives (a peer thread failed). No-op for other engines.
void abortLocalGroup(Communicator &comm, llvm::StringRef why);

/// Rendezvous over TCP, plan-id check, then a Gloo full-mesh context.
llvm::Expected<std::unique_ptr<Communicator>>
createGlooCommunicator(const RendezvousOptions &opts);

} // namespace qn::rt
