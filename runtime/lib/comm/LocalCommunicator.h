//===- LocalCommunicator.h - Ranks as threads of one process ----*- C++ -*-===//
//
// Internal to the runtime. The local engine's host collectives live in
// LocalCommunicator.cpp; its device collectives are a LocalDeviceBackend that
// the CUDA device installs (runtime/lib/cuda/CudaCollectives.cpp), so that
// this file needs no CUDA.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "qn/runtime/Communicator.h"

namespace qn::rt {

/// What every rank posts at a collective: its buffers (and, on a device, the
/// backend's per-rank sync object).
struct LocalSlot {
  const void *in = nullptr;
  void *out = nullptr;
  int64_t count = 0; // elements of `in`
  DType dtype = DType::Undefined;
  std::vector<int64_t> shape;
  void *sync = nullptr;     // backend: "input ready" (a CUDA event)
  void *doneSync = nullptr; // backend: "done reading the peers" (a CUDA event)
  int device = -1;          // backend: the rank's GPU
};

/// Device half of the local engine, one per rank.
class LocalDeviceBackend {
public:
  virtual ~LocalDeviceBackend();
  /// Before posting: marks "my input is ready" on my stream (sets s.sync).
  virtual llvm::Error markReady(LocalSlot &mine) = 0;
  /// After the first barrier: my stream waits for every peer's input, then
  /// computes into my output. kind: 0 all-reduce, 1 all-gather, 2
  /// reduce-scatter; outer/inner/axisDim describe the axis as for host.
  virtual llvm::Error compute(int kind, int rank, const std::vector<LocalSlot> &all,
                              int64_t outer, int64_t axisDim, int64_t inner) = 0;
  /// Before the second barrier: marks "I am done reading my peers" (sets
  /// mine.sync again).
  virtual llvm::Error markDone(LocalSlot &mine) = 0;
  /// After the second barrier: my stream waits until every peer is done with
  /// my input (so that my later work may overwrite it).
  virtual llvm::Error waitPeersDone(int rank, const std::vector<LocalSlot> &all) = 0;
  /// Output allocation on the device.
  virtual Tensor alloc(DType dtype, llvm::ArrayRef<int64_t> shape) = 0;
  /// Device-to-device copy of equal-sized tensors on my stream.
  virtual llvm::Error copy(const Tensor &from, Tensor &to) = 0;
};

/// Installs the device backend of `comm` (which must be a local-engine
/// communicator); error otherwise.
llvm::Error setLocalDeviceBackend(Communicator &comm, std::unique_ptr<LocalDeviceBackend> b);

} // namespace qn::rt
