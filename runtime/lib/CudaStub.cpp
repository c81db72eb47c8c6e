//===- CudaStub.cpp - The CUDA entry points of a build without CUDA -------===//
//
// Compiled instead of lib/cuda/ when CMake found no nvcc.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/Cuda.h"

namespace qn::rt {
namespace {
constexpr const char *kNoCuda =
    "this build of QuintNet has no CUDA device (CMake found no nvcc; rebuild with the CUDA "
    "toolkit on PATH)";
llvm::Error noCuda() { return llvm::createStringError(llvm::inconvertibleErrorCode(), kNoCuda); }
} // namespace

bool cudaBuilt() { return false; }
int cudaDeviceCount() { return 0; }
std::string cudaDeviceName(int) { return ""; }
std::string cudaUnavailableReason() { return kNoCuda; }
void registerCudaKernels(KernelRegistry &) {}

llvm::Expected<std::unique_ptr<Runner>> createCudaExecutor(RankProgram, const CudaOptions &,
                                                           Communicator *) {
  return noCuda();
}

llvm::Expected<std::unique_ptr<Communicator>> createNcclCommunicator(const RendezvousOptions &,
                                                                     int) {
  return noCuda();
}

llvm::Expected<std::vector<Tensor>> runNodeOnCuda(const onnx::NodeProto &,
                                                  const std::vector<Tensor> &, size_t, int,
                                                  const CudaOptions &) {
  return noCuda();
}

} // namespace qn::rt
