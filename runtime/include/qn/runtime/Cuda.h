//===- Cuda.h - The CUDA device: availability, kernels, executor -*- C++ -*-===//
//
// Built when CMake finds nvcc (QN_HAVE_CUDA); otherwise every entry point says
// that this build has no CUDA. Where it is built but the machine has no GPU (or
// no driver), cudaDeviceCount() is 0 and creating an executor fails cleanly.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "qn/runtime/Communicator.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/Kernel.h"
#include "qn/runtime/Tensor.h"
#include "llvm/Support/Error.h"

namespace onnx {
class NodeProto;
}

namespace qn::rt {
class Communicator;

/// True when this build has the CUDA device.
bool cudaBuilt();
/// CUDA GPUs visible to this process (0 without a GPU, a driver, or CUDA in
/// this build).
int cudaDeviceCount();
/// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"; "" for an invalid index.
std::string cudaDeviceName(int device);
/// Why the CUDA device cannot be used here ("" when it can).
std::string cudaUnavailableReason();

struct CudaOptions {
  int device = 0;
  /// float32 GEMMs may use TF32 tensor cores.
  bool allowTf32 = false;
  /// Replay repeated runs (same input shapes) through a CUDA graph when the
  /// communicator allows capture.
  bool useGraphs = true;
  /// Run chains of elementwise nodes (bias adds, GELU as exported, residual
  /// adds) as one kernel each.
  bool fuseElementwise = true;
};

/// The CUDA kernel registry: every op of the CPU registry, plus the
/// ai.quintnet collectives through a device communicator.
void registerCudaKernels(KernelRegistry &reg);

/// Runs one rank's program on a GPU. Constants are uploaded once here; inputs
/// are host tensors, outputs are returned as host tensors. `comm` (may be null
/// for one rank) must be a device communicator (NCCL or the local engine) that
/// was created for the same GPU.
llvm::Expected<std::unique_ptr<Runner>> createCudaExecutor(RankProgram program,
                                                           const CudaOptions &opts,
                                                           Communicator *comm);

/// NCCL: one process per GPU. Ranks meet through the TCP rendezvous store as
/// for Gloo (world size and plan id checked); rank 0's NCCL unique id travels
/// through it. `gpu` is this rank's GPU. The CUDA executor binds the rank's
/// stream (bindDevice); collectives may be captured into CUDA graphs.
llvm::Expected<std::unique_ptr<Communicator>> createNcclCommunicator(const RendezvousOptions &opts,
                                                                     int gpu);

/// For tests: runs one node with the CUDA kernels. Inputs are host tensors;
/// those the kernel reads on the device are uploaded first. Outputs come back
/// as host tensors.
llvm::Expected<std::vector<Tensor>> runNodeOnCuda(const onnx::NodeProto &node,
                                                  const std::vector<Tensor> &inputs,
                                                  size_t numOutputs, int opset = 17,
                                                  const CudaOptions &opts = {});

} // namespace qn::rt
