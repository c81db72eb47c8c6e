//===- CudaDevice.cpp - Rank device state, allocator, transfers -----------===//
#include "CudaDevice.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>

#include "../ArenaPlan.h"
#include "../OpSemantics.h"
#include "../StrCat.h"
#include "../CudaApi.h"
#include "qn/runtime/Cuda.h"

#include "onnx/onnx_pb.h"

namespace qn::rt {

namespace {
constexpr size_t kAlign = 256;
size_t roundUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}
} // namespace

Tensor DeviceContext::alloc(DType dtype, llvm::ArrayRef<int64_t> shape) {
  return allocator->alloc(dtype, shape);
}

Tensor DeviceContext::zeros(DType dtype, llvm::ArrayRef<int64_t> shape) {
  Tensor t = alloc(dtype, shape);
  if (t.nbytes())
    cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream);
  return t;
}

namespace cuda {

llvm::Error cudaError(const KernelContext &ctx, cudaError_t e, const llvm::Twine &what) {
  return cpu::kernelError(ctx, what + " failed: " + cudaGetErrorString(e));
}

llvm::Error cublasError(const KernelContext &ctx, cublasStatus_t s, const llvm::Twine &what) {
  return cpu::kernelError(ctx, what + " failed: " + cublasGetStatusString(s));
}

llvm::Error checkLaunch(const KernelContext &ctx) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess)
    return llvm::Error::success();
  return cudaError(ctx, e, "kernel launch");
}

llvm::Error cudaCallError(cudaError_t e, const llvm::Twine &what) {
  return makeError(what + " failed: " + cudaGetErrorString(e));
}

llvm::Error copyDeviceToDevice(const KernelContext &ctx, const Tensor &from, Tensor &to) {
  if (from.nbytes() != to.nbytes())
    return cpu::kernelError(ctx, "device copy between " + from.describe() + " and " +
                                     to.describe() + " of different sizes");
  if (!from.nbytes())
    return llvm::Error::success();
  cudaError_t e = cudaMemcpyAsync(to.raw(), from.raw(), from.nbytes(), cudaMemcpyDeviceToDevice,
                                  cudaDev(ctx).stream);
  return e == cudaSuccess ? llvm::Error::success() : cudaError(ctx, e, "cudaMemcpyAsync");
}

//===----------------------------------------------------------------------===//
// Allocator
//===----------------------------------------------------------------------===//

Allocator::Plan::~Plan() {
  if (arena)
    cudaFree(arena);
}

Allocator::Allocator(int device, cudaStream_t stream) : device_(device), stream_(stream) {
  // Keep freed pool memory cached in the process instead of returning it at
  // every synchronisation.
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
    uint64_t keep = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  }
  cudaGetLastError();
}

Allocator::~Allocator() = default;

Tensor Allocator::alloc(DType dtype, llvm::ArrayRef<int64_t> shape) {
  int64_t n = 0;
  size_t es = dtypeSize(dtype);
  if (es == 0 || !checkedNumel(shape, es, n))
    llvm::report_fatal_error("cuda::Allocator: invalid dtype or shape");
  size_t bytes = roundUp(std::max<size_t>(static_cast<size_t>(n) * es, 1));
  if (mode_ == Mode::Replay) {
    if (next_ < plan_->sizes.size() && plan_->sizes[next_] == bytes) {
      void *p = static_cast<char *>(plan_->arena) + plan_->offsets[next_++];
      // Arena blocks: nothing to free.
      return Tensor::view(dtype, shape, p, std::shared_ptr<void>(p, [](void *) {}),
                          Location::Cuda);
    }
    replayBroken_ = true; // served from the pool below
  }
  void *p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, bytes, stream_);
  if (e != cudaSuccess) {
    cudaGetLastError();
    llvm::report_fatal_error(llvm::Twine("CUDA: out of device memory allocating ") +
                             llvm::Twine(bytes) + " bytes (" + cudaGetErrorString(e) + ")");
  }
  pooledBytes_ += bytes;
  size_t index = SIZE_MAX;
  if (mode_ == Mode::Record) {
    index = log_.size();
    log_.push_back({bytes, tick_++, UINT64_MAX});
  }
  uint64_t epoch = epoch_;
  return Tensor::view(
      dtype, shape, p,
      std::shared_ptr<void>(p, [this, bytes, epoch, index](void *q) {
        freed(q, bytes, /*pooled=*/true, epoch, index);
      }),
      Location::Cuda);
}

void Allocator::freed(void *p, size_t bytes, bool pooled, uint64_t epoch, size_t index) {
  if (mode_ == Mode::Record && epoch == epoch_ && index < log_.size())
    log_[index].died = tick_++;
  if (pooled) {
    cudaFreeAsync(p, stream_);
    pooledBytes_ -= bytes;
  }
}

void Allocator::startRecord() {
  mode_ = Mode::Record;
  ++epoch_;
  log_.clear();
  tick_ = 0;
}

llvm::Expected<std::unique_ptr<Allocator::Plan>> Allocator::finishRecord() {
  mode_ = Mode::Pool;
  ++epoch_;
  auto plan = std::make_unique<Plan>();
  for (const BufferLife &r : log_)
    plan->sizes.push_back(r.size);
  plan->offsets = planArena(log_, plan->arenaBytes);
  log_.clear();
  // The recorded run's pool blocks are free again: give them back before the
  // arena takes their place.
  cudaStreamSynchronize(stream_);
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device_) == cudaSuccess)
    cudaMemPoolTrimTo(pool, 0);
  cudaGetLastError();
  if (plan->arenaBytes) {
    cudaError_t e = cudaMalloc(&plan->arena, plan->arenaBytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cudaCallError(e, strCat("cudaMalloc of a ", plan->arenaBytes, "-byte arena"));
    }
  }
  return plan;
}

void Allocator::startReplay(const Plan *plan) {
  mode_ = Mode::Replay;
  plan_ = plan;
  next_ = 0;
  replayBroken_ = false;
}

void Allocator::stop() {
  if (mode_ == Mode::Replay && plan_ && next_ != plan_->sizes.size())
    replayBroken_ = true;
  if (mode_ == Mode::Record)
    ++epoch_;
  mode_ = Mode::Pool;
  plan_ = nullptr;
}

//===----------------------------------------------------------------------===//
// RankDevice
//===----------------------------------------------------------------------===//

llvm::Expected<std::unique_ptr<RankDevice>> RankDevice::create(int device, bool allowTf32) {
  int count = deviceCount();
  if (count == 0)
    return makeError(unavailableReason());
  if (device < 0 || device >= count)
    return makeError(strCat("CUDA device ", device, " does not exist (", count, " visible)"));
  std::unique_ptr<RankDevice> d(new RankDevice());
  DeviceContext &c = d->ctx_;
  c.device = device;
  c.allowTf32 = allowTf32;
  auto check = [&](cudaError_t e, const char *what) -> llvm::Error {
    if (e == cudaSuccess)
      return llvm::Error::success();
    cudaGetLastError();
    return cudaCallError(e, strCat(what, " on GPU ", device));
  };
  if (auto e = check(cudaSetDevice(device), "cudaSetDevice"))
    return e;
  if (auto e = check(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking),
                     "cudaStreamCreate"))
    return e;
  if (cublasStatus_t s = cublasCreate(&c.cublas); s != CUBLAS_STATUS_SUCCESS)
    return makeError(strCat("cublasCreate failed: ", cublasGetStatusString(s)));
  cublasSetStream(c.cublas, c.stream);
  if (cublasStatus_t s = cublasLtCreate(&c.cublasLt); s != CUBLAS_STATUS_SUCCESS)
    return makeError(strCat("cublasLtCreate failed: ", cublasGetStatusString(s)));
  c.workspaceBytes = size_t(32) << 20;
  if (auto e = check(cudaMalloc(&c.workspace, c.workspaceBytes), "cudaMalloc (cuBLAS workspace)"))
    return e;
  cublasSetWorkspace(c.cublas, c.workspace, c.workspaceBytes);
  if (auto e = check(cudaMalloc(reinterpret_cast<void **>(&c.faultWord), sizeof(int32_t)),
                     "cudaMalloc (fault word)"))
    return e;
  if (auto e = check(cudaMemsetAsync(c.faultWord, 0, sizeof(int32_t), c.stream),
                     "cudaMemset (fault word)"))
    return e;
  if (auto e = check(cudaMallocHost(reinterpret_cast<void **>(&c.faultHost), sizeof(int32_t)),
                     "cudaMallocHost (fault word)"))
    return e;
  *c.faultHost = 0;
  d->alloc_ = std::make_unique<Allocator>(device, c.stream);
  c.allocator = d->alloc_.get();
  return d;
}

RankDevice::~RankDevice() {
  cudaSetDevice(ctx_.device);
  if (ctx_.stream)
    cudaStreamSynchronize(ctx_.stream);
  alloc_.reset();
  if (ctx_.cublasLt)
    cublasLtDestroy(ctx_.cublasLt);
  if (ctx_.cublas)
    cublasDestroy(ctx_.cublas);
  if (ctx_.workspace)
    cudaFree(ctx_.workspace);
  if (ctx_.faultWord)
    cudaFree(ctx_.faultWord);
  if (ctx_.faultHost)
    cudaFreeHost(ctx_.faultHost);
  if (ctx_.stream)
    cudaStreamDestroy(ctx_.stream);
}

llvm::Error enqueueFaultRead(DeviceContext &dc) {
  if (!dc.faultWord)
    return llvm::Error::success();
  cudaError_t e = cudaMemcpyAsync(dc.faultHost, dc.faultWord, sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, dc.stream);
  return e == cudaSuccess ? llvm::Error::success() : cudaCallError(e, "reading the fault word");
}

int32_t takeFault(DeviceContext &dc) {
  if (!dc.faultHost || *dc.faultHost == 0)
    return 0;
  int32_t w = *dc.faultHost;
  *dc.faultHost = 0;
  cudaMemsetAsync(dc.faultWord, 0, sizeof(int32_t), dc.stream);
  return w;
}

void discardFault(DeviceContext &dc) {
  // On the rank's stream (a plain cudaMemcpy runs on the legacy stream,
  // which does not wait for the non-blocking rank stream's kernels).
  if (dc.faultHost && *dc.faultHost == 0 &&
      cudaMemcpyAsync(dc.faultHost, dc.faultWord, sizeof(int32_t), cudaMemcpyDeviceToHost,
                      dc.stream) == cudaSuccess)
    cudaStreamSynchronize(dc.stream);
  takeFault(dc);
}

const char *faultWhat(int32_t word) {
  switch (word % kFaultKinds) {
  case kFaultGatherIndex: return "an index is out of range";
  case kFaultDivByZero: return "integer division by zero";
  default: return "unknown fault";
  }
}

llvm::Error faultError(const onnx::NodeProto &node, int32_t word) {
  return makeError(nodeLabel(node) + ": " + faultWhat(word) +
                   " (found by its CUDA kernel while computing; the run's outputs are discarded)");
}

llvm::Error RankDevice::makeCurrent() const {
  cudaError_t e = cudaSetDevice(ctx_.device);
  return e == cudaSuccess ? llvm::Error::success() : cudaCallError(e, "cudaSetDevice");
}

//===----------------------------------------------------------------------===//
// Transfers
//===----------------------------------------------------------------------===//

llvm::Expected<Tensor> uploadPersistent(const Tensor &host, llvm::StringRef what,
                                        cudaStream_t stream) {
  size_t bytes = std::max<size_t>(host.nbytes(), 1);
  void *p = nullptr;
  if (cudaError_t e = cudaMalloc(&p, bytes); e != cudaSuccess) {
    cudaGetLastError();
    return cudaCallError(e, strCat("uploading ", what, " ", host.describe(), ": cudaMalloc"));
  }
  Tensor t = Tensor::view(host.dtype(), host.shape(), p,
                          std::shared_ptr<void>(p, [](void *q) { cudaFree(q); }), Location::Cuda);
  if (host.nbytes())
    if (cudaError_t e = cudaMemcpyAsync(p, host.raw(), host.nbytes(), cudaMemcpyHostToDevice,
                                        stream);
        e != cudaSuccess)
      return cudaCallError(e, strCat("uploading ", what, " ", host.describe()));
  return t;
}

llvm::Error uploadInto(const Tensor &host, Tensor &dev, cudaStream_t stream, llvm::StringRef what) {
  if (host.nbytes() != dev.nbytes())
    return makeError(strCat("uploading ", what, ": ", host.describe(), " into ", dev.describe()));
  if (!host.nbytes())
    return llvm::Error::success();
  cudaError_t e =
      cudaMemcpyAsync(dev.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream);
  return e == cudaSuccess ? llvm::Error::success()
                          : cudaCallError(e, strCat("uploading ", what, " ", host.describe()));
}

llvm::Expected<Tensor> download(const Tensor &dev, cudaStream_t stream, llvm::StringRef what) {
  Tensor h = Tensor::empty(dev.dtype(), dev.shape());
  if (dev.nbytes()) {
    cudaError_t e =
        cudaMemcpyAsync(h.raw(), dev.raw(), dev.nbytes(), cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess)
      e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess)
      return cudaCallError(e, strCat("downloading ", what, " ", dev.describe()));
  }
  return h;
}

const KernelRegistry &cudaRegistry() {
  static const KernelRegistry reg = [] {
    KernelRegistry r;
    registerKernels(r);
    return r;
  }();
  return reg;
}

const KernelRegistry &cpuRegistry() {
  static const KernelRegistry reg = [] {
    KernelRegistry r;
    registerCpuKernels(r);
    return r;
  }();
  return reg;
}

} // namespace cuda

//===----------------------------------------------------------------------===//
// Entry points (qn/runtime/Cuda.h through CudaApi.h)
//===----------------------------------------------------------------------===//

namespace cuda {

namespace {
cudaError_t deviceCountError(int &count) {
  static std::once_flag once;
  static cudaError_t err = cudaSuccess;
  static int n = 0;
  std::call_once(once, [] {
    err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      n = 0;
      cudaGetLastError();
    }
  });
  count = n;
  return err;
}
} // namespace

int deviceCount() {
  int n = 0;
  deviceCountError(n);
  return n;
}

std::string unavailableReason() {
  int n = 0;
  cudaError_t e = deviceCountError(n);
  if (n > 0)
    return "";
  if (e != cudaSuccess)
    return strCat("no usable CUDA GPU here (cudaGetDeviceCount: ", cudaGetErrorString(e), ")");
  return "no CUDA GPU is visible to this process";
}

std::string deviceName(int device) {
  if (device < 0 || device >= deviceCount())
    return "";
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  char mem[32];
  std::snprintf(mem, sizeof(mem), "%.1f", static_cast<double>(p.totalGlobalMem) / (1 << 30));
  return strCat(p.name, " (sm_", p.major, p.minor, ", ", mem, " GiB)");
}

void registerKernels(KernelRegistry &reg) {
  registerCudaElementwiseKernels(reg);
  registerCudaShapeKernels(reg);
  registerCudaNormKernels(reg);
  registerCudaMatMulKernels(reg);
  registerCudaConvKernels(reg);
  registerCudaCollectiveKernels(reg);
}

llvm::Expected<std::vector<Tensor>> runNode(const onnx::NodeProto &node,
                                            const std::vector<Tensor> &inputs, size_t numOutputs,
                                            int opset, const CudaOptions &opts) {
  // One device state per (GPU, TF32 setting) for the whole process: tests run
  // thousands of nodes.
  static std::mutex mu;
  static std::map<std::pair<int, bool>, std::unique_ptr<cuda::RankDevice>> devices;
  std::lock_guard<std::mutex> lock(mu);
  auto &slot = devices[{opts.device, opts.allowTf32}];
  if (!slot) {
    auto d = cuda::RankDevice::create(opts.device, opts.allowTf32);
    if (!d)
      return d.takeError();
    slot = std::move(*d);
  }
  if (auto e = slot->makeCurrent())
    return e;
  DeviceContext &dc = slot->context();
  llvm::StringRef domain = node.domain() == "ai.onnx" ? "" : llvm::StringRef(node.domain());
  const KernelFn *fn = cuda::cudaRegistry().lookup(domain, node.op_type());
  if (!fn)
    return makeError("no CUDA kernel for " + node.op_type());
  uint32_t hostMask = cuda::cudaRegistry().hostInputs(domain, node.op_type());
  std::vector<Tensor> placed(inputs.size());
  std::vector<const Tensor *> ptrs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      ptrs.push_back(nullptr);
      continue;
    }
    if (i < 32 && (hostMask >> i & 1u)) {
      placed[i] = inputs[i];
    } else {
      auto d = cuda::uploadPersistent(inputs[i], strCat("input ", i), dc.stream);
      if (!d)
        return d.takeError();
      placed[i] = std::move(*d);
    }
    ptrs.push_back(&placed[i]);
  }
  std::vector<Tensor> outs(numOutputs);
  KernelContext ctx{node, ptrs, outs, nullptr, opset, &dc};
  dc.faultSite = 1;
  if (llvm::Error e = (*fn)(ctx)) {
    cudaStreamSynchronize(dc.stream);
    cuda::discardFault(dc); // of a kernel launched before the error
    return e;
  }
  if (auto e = cuda::enqueueFaultRead(dc))
    return e;
  std::vector<Tensor> result;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].defined() || outs[i].onHost()) {
      result.push_back(outs[i]);
      continue;
    }
    auto h = cuda::download(outs[i], dc.stream, strCat("output ", i));
    if (!h)
      return h.takeError();
    result.push_back(std::move(*h));
  }
  if (cudaError_t e = cudaStreamSynchronize(dc.stream); e != cudaSuccess)
    return cuda::cudaCallError(e, "running " + nodeLabel(node));
  if (int32_t f = cuda::takeFault(dc))
    return cuda::faultError(node, f);
  return result;
}

} // namespace cuda
} // namespace qn::rt

extern "C" const qn::rt::CudaApi *qn_cuda_api() {
  using namespace qn::rt;
  static const CudaApi api = {kCudaApiVersion,   cuda::deviceCount,    cuda::deviceName,
                              cuda::unavailableReason, cuda::registerKernels, cuda::createExecutor,
                              cuda::createNccl, cuda::runNode};
  return &api;
}
