//===- CudaLoader.cpp - qn/runtime/Cuda.h through libqn_cuda.so -----------===//
//
// The CUDA device lives in libqn_cuda.so (CudaApi.h), loaded on first use
// from QN_CUDA_LIBRARY, else from ../lib next to the running program, else
// through the loader's search path. Without it (a build without nvcc, or a
// machine without the CUDA libraries) every entry point says why.
//
//===----------------------------------------------------------------------===//
#include "CudaApi.h"

#include <cstdlib>
#include <dlfcn.h>
#include <mutex>

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

namespace qn::rt {
namespace {

struct Loaded {
  const CudaApi *api = nullptr;
  std::string why; // when api is null
};

std::string selfDir() {
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, reinterpret_cast<void *>(&selfDir));
  return llvm::sys::path::parent_path(exe).str();
}

const Loaded &load() {
  static Loaded loaded;
  static std::once_flag once;
  std::call_once(once, [] {
#ifndef QN_HAVE_CUDA
    loaded.why = "this build of QuintNet has no CUDA device (CMake found no nvcc; rebuild with "
                 "the CUDA toolkit on PATH)";
#else
    std::vector<std::string> candidates;
    if (const char *p = std::getenv("QN_CUDA_LIBRARY"); p && *p)
      candidates.push_back(p);
    else {
      llvm::SmallString<256> lib(selfDir());
      llvm::sys::path::append(lib, "..", "lib", "libqn_cuda.so");
      candidates.push_back(lib.str().str());
      candidates.push_back("libqn_cuda.so");
    }
    std::string errors;
    for (const std::string &c : candidates) {
      void *h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        const char *e = dlerror();
        errors += (errors.empty() ? "" : "; ") + std::string(e ? e : c);
        continue;
      }
      auto entry = reinterpret_cast<const CudaApi *(*)()>(dlsym(h, "qn_cuda_api"));
      const CudaApi *api = entry ? entry() : nullptr;
      if (!api || api->version != kCudaApiVersion) {
        errors += "; " + c + " is not this build's CUDA device library";
        continue;
      }
      loaded.api = api;
      return;
    }
    loaded.why = "cannot load the CUDA device (" + errors + ")";
#endif
  });
  return loaded;
}

llvm::Error unavailable() {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), load().why);
}

} // namespace

bool cudaBuilt() {
#ifdef QN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cudaDeviceCount() { return load().api ? load().api->deviceCount() : 0; }

std::string cudaDeviceName(int device) {
  return load().api ? load().api->deviceName(device) : std::string();
}

std::string cudaUnavailableReason() {
  return load().api ? load().api->unavailableReason() : load().why;
}

void registerCudaKernels(KernelRegistry &reg) {
  if (load().api)
    load().api->registerKernels(reg);
}

llvm::Expected<std::unique_ptr<Runner>> createCudaExecutor(RankProgram program,
                                                           const CudaOptions &opts,
                                                           Communicator *comm) {
  if (!load().api)
    return unavailable();
  return load().api->createExecutor(std::move(program), opts, comm);
}

llvm::Expected<std::unique_ptr<Communicator>> createNcclCommunicator(const RendezvousOptions &opts,
                                                                     int gpu) {
  if (!load().api)
    return unavailable();
  return load().api->createNccl(opts, gpu);
}

llvm::Expected<std::vector<Tensor>> runNodeOnCuda(const onnx::NodeProto &node,
                                                  const std::vector<Tensor> &inputs,
                                                  size_t numOutputs, int opset,
                                                  const CudaOptions &opts) {
  if (!load().api)
    return unavailable();
  return load().api->runNode(node, inputs, numOutputs, opset, opts);
}

} // namespace qn::rt
