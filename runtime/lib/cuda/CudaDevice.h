//===- CudaDevice.h - The CUDA device's per-rank state ----------*- C++ -*-===//
//
// Internal to runtime/lib/cuda. Host C++ (compiled by the host compiler); the
// .cu files never include it (they see only CudaLaunch.h-style POD headers),
// so that LLVM and ONNX headers stay out of nvcc.
//
// Conventions for a CUDA kernel (KernelFn registered in a CUDA registry):
//  - inputs are device tensors (Location::Cuda), except those whose bit is set
//    in the registration's hostInputs mask (shape, axes, bounds), which are
//    host tensors the kernel may read with cpu::readInts;
//  - outputs are allocated with cudaDev(ctx).alloc(dtype, shape) (contents
//    uninitialised) or are views of an input (Reshape, Squeeze, ...);
//  - all work is enqueued on cudaDev(ctx).stream, never synchronised, never
//    allocated with cudaMalloc (the allocator plans memory; a run may be
//    captured into a CUDA graph, where synchronising or allocating fails);
//  - after launching, `return checkLaunch(ctx);` turns a launch error into an
//    error naming the node.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "../ArenaPlan.h"
#include "CudaFault.h"
#include "qn/runtime/Cuda.h"
#include "qn/runtime/Kernel.h"
#include "qn/runtime/Tensor.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

namespace qn::rt {
namespace cuda {
class Allocator;
}

/// One rank's CUDA state (KernelContext::device on the CUDA device).
struct DeviceContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublasLt = nullptr;
  /// cuBLASLt workspace (allocated once at start-up).
  void *workspace = nullptr;
  size_t workspaceBytes = 0;
  /// float32 GEMMs may use TF32 tensor cores (qn-run --allow-tf32).
  bool allowTf32 = false;
  cuda::Allocator *allocator = nullptr;
  /// Faults kernels find while computing (CudaFault.h): the device word, its
  /// pinned host mirror, and the site the executor sets before each node.
  int32_t *faultWord = nullptr;
  int32_t *faultHost = nullptr;
  int32_t faultSite = 0;
  cuda::FaultSite fault() const { return {faultWord, faultSite}; }

  /// A new device tensor, contents uninitialised, from the rank's allocator
  /// (stream-ordered: valid for work enqueued on `stream`).
  Tensor alloc(DType dtype, llvm::ArrayRef<int64_t> shape);
  /// The same, zero-filled (cudaMemsetAsync on `stream`).
  Tensor zeros(DType dtype, llvm::ArrayRef<int64_t> shape);
};

namespace cuda {

inline DeviceContext &cudaDev(const KernelContext &ctx) { return *ctx.device; }

/// "<node label>: <what> failed: <CUDA's message>" for a failed CUDA call.
llvm::Error cudaError(const KernelContext &ctx, cudaError_t e, const llvm::Twine &what);
llvm::Error cublasError(const KernelContext &ctx, cublasStatus_t s, const llvm::Twine &what);
/// After enqueueing kernels: an error naming the node if a launch failed.
llvm::Error checkLaunch(const KernelContext &ctx);
/// Outside kernels (no node to name).
llvm::Error cudaCallError(cudaError_t e, const llvm::Twine &what);

/// cudaMemcpyAsync between device tensors of the same byte size, on `stream`.
llvm::Error copyDeviceToDevice(const KernelContext &ctx, const Tensor &from, Tensor &to);

/// Gives `comm` the rank's device: the local engine gets a CUDA backend,
/// NCCL its stream; host engines refuse.
llvm::Error bindCommunicator(Communicator &comm, DeviceContext *dc);

/// The entry points behind qn/runtime/Cuda.h (CudaApi.h: the loader calls
/// them through qn_cuda_api()).
int deviceCount();
std::string deviceName(int device);
std::string unavailableReason();
void registerKernels(KernelRegistry &reg);
llvm::Expected<std::unique_ptr<Runner>> createExecutor(RankProgram program,
                                                       const CudaOptions &opts,
                                                       Communicator *comm);
llvm::Expected<std::unique_ptr<Communicator>> createNccl(const RendezvousOptions &opts, int gpu);
llvm::Expected<std::vector<Tensor>> runNode(const onnx::NodeProto &node,
                                            const std::vector<Tensor> &inputs, size_t numOutputs,
                                            int opset, const CudaOptions &opts);

/// One (strided-batched) row-major GEMM: Y[b] = alpha op(A[b]) op(B[b]) +
/// beta Y[b] for b < batch, A[b] at A + b*strideA elements (likewise B, Y).
/// All of M, N, K >= 1 and fit an int (checked by the callers). CudaMatMul.cpp.
struct RowGemm {
  bool ta = false, tb = false;
  int64_t M = 0, N = 0, K = 0;
  int64_t lda = 0, ldb = 0, ldy = 0;
  int64_t strideA = 0, strideB = 0, strideY = 0;
  int64_t batch = 1;
};
/// Points the shared cuBLAS handle at this rank's stream and workspace, host
/// scalars and full-precision reductions; call before rowMajorGemm.
llvm::Error prepareCublas(const KernelContext &ctx);
/// The GEMM on cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx) in `dt`'s
/// precision (float16 / bfloat16 accumulate in float32, TF32 only when allowed).
llvm::Error rowMajorGemm(const KernelContext &ctx, DType dt, const RowGemm &g, double alpha,
                         double beta, const void *A, const void *B, void *Y);

/// The kernel groups (each in its own CudaXxx.cpp).
void registerCudaElementwiseKernels(KernelRegistry &reg);
void registerCudaShapeKernels(KernelRegistry &reg);
void registerCudaNormKernels(KernelRegistry &reg);
void registerCudaMatMulKernels(KernelRegistry &reg);
void registerCudaConvKernels(KernelRegistry &reg);
void registerCudaCollectiveKernels(KernelRegistry &reg);

} // namespace cuda
} // namespace qn::rt

namespace qn::rt::cuda {

/// Device memory of one rank's runs.
///
///  - Pool: stream-ordered cudaMallocAsync / cudaFreeAsync from the device's
///    memory pool (kept cached: no return to the driver between runs).
///  - Record: as Pool, and every allocation's size and lifetime (ticks of
///    allocations and frees) is logged; finishRecord() then places them all
///    in one arena, greedily by size, so that allocations whose lifetimes
///    overlap never share bytes (lifetimes are those of the run's values, and
///    of kernels' temporaries).
///  - Replay: the k-th allocation of the run gets the k-th planned block of
///    the arena: no allocation at all, and the same addresses every run,
///    which is what a CUDA graph needs. A request that differs from the
///    recorded one (it cannot for the same input shapes, but is checked) is
///    served from the pool and marks the plan as broken.
class Allocator {
public:
  struct Plan {
    std::vector<size_t> sizes, offsets;
    size_t arenaBytes = 0;
    void *arena = nullptr; // owned (cudaFree in the destructor)
    ~Plan();
  };

  Allocator(int device, cudaStream_t stream);
  ~Allocator();
  Allocator(const Allocator &) = delete;
  Allocator &operator=(const Allocator &) = delete;

  Tensor alloc(DType dtype, llvm::ArrayRef<int64_t> shape);

  void startRecord();
  /// Ends recording; places the logged allocations in a new arena.
  llvm::Expected<std::unique_ptr<Plan>> finishRecord();
  void startReplay(const Plan *plan);
  /// True when the replay since startReplay() left the plan.
  bool replayBroken() const { return replayBroken_; }
  /// Back to Pool.
  void stop();
  /// Bytes of device memory handed out right now in Pool/Record mode.
  size_t pooledBytes() const { return pooledBytes_; }

private:
  enum class Mode { Pool, Record, Replay };
  void freed(void *p, size_t bytes, bool pooled, uint64_t epoch, size_t index);

  int device_;
  cudaStream_t stream_;
  Mode mode_ = Mode::Pool;
  uint64_t tick_ = 0, epoch_ = 0;
  std::vector<BufferLife> log_;
  const Plan *plan_ = nullptr;
  size_t next_ = 0;
  bool replayBroken_ = false;
  size_t pooledBytes_ = 0;
};

/// One rank's stream, cuBLAS handles, workspace and allocator, bound to a GPU.
class RankDevice {
public:
  static llvm::Expected<std::unique_ptr<RankDevice>> create(int device, bool allowTf32);
  ~RankDevice();
  DeviceContext &context() { return ctx_; }
  Allocator &allocator() { return *alloc_; }
  /// Makes this rank's GPU current on the calling thread.
  llvm::Error makeCurrent() const;

private:
  RankDevice() = default;
  DeviceContext ctx_;
  std::unique_ptr<Allocator> alloc_;
};

/// Enqueues the read-back of the rank's fault word on its stream (after a
/// run's last kernel; not inside a capture).
llvm::Error enqueueFaultRead(DeviceContext &dc);
/// After the stream has been synchronised since enqueueFaultRead(): the
/// fault word (0: none). A fault is cleared (on the device too) when read.
int32_t takeFault(DeviceContext &dc);
/// After a failed run, with the stream synchronised: clears a fault its
/// kernels may have set (read back if enqueueFaultRead() was not reached), so
/// that it cannot be reported against a later run.
void discardFault(DeviceContext &dc);
/// "index out of range", "division by zero", ... for a fault word.
const char *faultWhat(int32_t word);
/// "<node label>: <faultWhat> (found by its CUDA kernel ...)".
llvm::Error faultError(const onnx::NodeProto &node, int32_t word);

/// A persistent device copy of a host tensor (cudaMalloc + a copy enqueued on
/// `stream`, the stream of the kernels that will read it; never inside a
/// capture). Not a synchronous cudaMemcpy: that runs on the legacy default
/// stream, which a cudaStreamNonBlocking rank stream does not wait for, and
/// from pageable memory it may return before the data has landed.
llvm::Expected<Tensor> uploadPersistent(const Tensor &host, llvm::StringRef what,
                                        cudaStream_t stream);
/// Enqueues a host -> device copy into `dev` (same byte size) on `stream`.
llvm::Error uploadInto(const Tensor &host, Tensor &dev, cudaStream_t stream, llvm::StringRef what);
/// A host copy of a device tensor; synchronises `stream`.
llvm::Expected<Tensor> download(const Tensor &dev, cudaStream_t stream, llvm::StringRef what);

/// The CUDA kernel registry (built once) and the CPU one, for the ops the
/// executor runs on the host (shape arithmetic) and as the fallback.
const KernelRegistry &cudaRegistry();
const KernelRegistry &cpuRegistry();

} // namespace qn::rt::cuda
