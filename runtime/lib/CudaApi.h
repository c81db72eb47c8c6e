//===- CudaApi.h - What libqn_cuda.so hands the runtime ---------*- C++ -*-===//
//
// Internal. The CUDA device is a shared library of its own (libqn_cuda.so,
// linked against CUDA, cuBLAS and NCCL) that qn_runtime loads on first use
// (CudaLoader.cpp), so that CPU runs neither need nor pay for the CUDA
// libraries (about 0.1 s and 200 MB of mappings per process). Both sides are
// built together by one compiler: C++ types cross the boundary.
//
//===----------------------------------------------------------------------===//
#pragma once
#include "qn/runtime/Cuda.h"

namespace qn::rt {

struct CudaApi {
  int version;
  int (*deviceCount)();
  std::string (*deviceName)(int device);
  std::string (*unavailableReason)();
  void (*registerKernels)(KernelRegistry &reg);
  llvm::Expected<std::unique_ptr<Runner>> (*createExecutor)(RankProgram program,
                                                            const CudaOptions &opts,
                                                            Communicator *comm);
  llvm::Expected<std::unique_ptr<Communicator>> (*createNccl)(const RendezvousOptions &opts,
                                                              int gpu);
  llvm::Expected<std::vector<Tensor>> (*runNode)(const onnx::NodeProto &node,
                                                 const std::vector<Tensor> &inputs,
                                                 size_t numOutputs, int opset,
                                                 const CudaOptions &opts);
};

constexpr int kCudaApiVersion = 1;

} // namespace qn::rt

/// The one symbol libqn_cuda.so exports for the loader.
extern "C" const qn::rt::CudaApi *qn_cuda_api();
