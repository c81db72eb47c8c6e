//===- CudaCollectives.cpp - Collectives on the CUDA device ---------------===//
//
// The ai.quintnet kernels of the CUDA registry, the local engine's device
// backend (ranks as threads on one GPU: stream-ordered through CUDA events,
// no host synchronisation) and the NCCL engine (one process per GPU).
//
//===----------------------------------------------------------------------===//
#include "CudaCollectives.h"
#include "CudaDevice.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nccl.h>
#include <thread>

#include "../OpSemantics.h"
#include "../StrCat.h"
#include "../comm/LocalCommunicator.h"
#include "../comm/Rendezvous.h"
#include "qn/runtime/Cuda.h"

#include "llvm/ADT/StringExtras.h"

namespace qn::rt {
namespace cuda {
namespace {

constexpr const char *kDomain = "ai.quintnet";

llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

llvm::Error wrapCommError(const KernelContext &ctx, llvm::Error e) {
  if (!e)
    return e;
  return cpu::kernelError(ctx, "collective failed: " + llvm::toString(std::move(e)));
}

llvm::Error allReduceKernel(KernelContext &ctx) {
  if (auto e = cpu::checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *cpu::input(ctx, 0);
  if (!ctx.comm) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  Tensor y = cudaDev(ctx).alloc(x.dtype(), x.shape());
  if (auto e = wrapCommError(ctx, ctx.comm->allReduceSum(x, y)))
    return e;
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

template <bool Gather> llvm::Error axisCollectiveKernel(KernelContext &ctx) {
  if (auto e = cpu::checkArity(ctx, 1, 1))
    return e;
  const Tensor &x = *cpu::input(ctx, 0);
  int64_t axis;
  if (auto e = cpu::collectiveAxis(ctx, x, axis))
    return e;
  if (!ctx.comm) {
    ctx.outputs[0] = x;
    return llvm::Error::success();
  }
  Tensor y;
  if (Gather) {
    if (auto e = wrapCommError(ctx, ctx.comm->allGather(x, y, static_cast<int>(axis))))
      return e;
  } else {
    int n = ctx.comm->size();
    if (n <= 0 || x.dim(axis) % n != 0)
      return cpu::kernelError(ctx, strCat("axis ", axis, " of ", x.describe(),
                                          " is not divisible by the ", n, " ranks"));
    if (auto e = wrapCommError(ctx, ctx.comm->reduceScatterSum(x, y, static_cast<int>(axis))))
      return e;
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

/// outer / axis / inner sizes of `t` around `axis`.
void splitAt(const Tensor &t, int axis, int64_t &outer, int64_t &a, int64_t &inner) {
  outer = 1;
  inner = 1;
  a = t.rank() ? t.dim(axis) : 1;
  for (int k = 0; k < axis; ++k)
    outer *= t.dim(k);
  for (int64_t k = axis + 1; k < t.rank(); ++k)
    inner *= t.dim(k);
}

llvm::Error cudaCheck(cudaError_t e, const llvm::Twine &what) {
  if (e == cudaSuccess)
    return llvm::Error::success();
  cudaGetLastError();
  return cudaCallError(e, what);
}

/// `rows` rows of `width` bytes from `src` (row pitch `spitch`) to `dst`
/// (pitch `dpitch`), device to device on `stream`.
llvm::Error copyRows(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                     size_t rows, cudaStream_t stream) {
  if (!width || !rows)
    return llvm::Error::success();
  return cudaCheck(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows,
                                     cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpy2DAsync");
}

//===----------------------------------------------------------------------===//
// Local engine, device backend
//===----------------------------------------------------------------------===//

class CudaLocalBackend final : public LocalDeviceBackend {
public:
  static llvm::Expected<std::unique_ptr<CudaLocalBackend>> create(DeviceContext *dc) {
    std::unique_ptr<CudaLocalBackend> b(new CudaLocalBackend(dc));
    if (auto e = cudaCheck(cudaEventCreateWithFlags(&b->ready_, cudaEventDisableTiming),
                           "cudaEventCreate"))
      return e;
    if (auto e = cudaCheck(cudaEventCreateWithFlags(&b->done_, cudaEventDisableTiming),
                           "cudaEventCreate"))
      return e;
    return b;
  }
  ~CudaLocalBackend() override {
    if (ready_)
      cudaEventDestroy(ready_);
    if (done_)
      cudaEventDestroy(done_);
  }

  llvm::Error markReady(LocalSlot &mine) override {
    mine.sync = ready_;
    mine.device = dc_->device;
    return cudaCheck(cudaEventRecord(ready_, dc_->stream), "cudaEventRecord");
  }
  llvm::Error markDone(LocalSlot &mine) override {
    mine.doneSync = done_;
    return cudaCheck(cudaEventRecord(done_, dc_->stream), "cudaEventRecord");
  }
  llvm::Error waitPeersDone(int rank, const std::vector<LocalSlot> &all) override {
    for (size_t r = 0; r < all.size(); ++r)
      if (static_cast<int>(r) != rank && all[r].doneSync)
        if (auto e = cudaCheck(cudaStreamWaitEvent(dc_->stream,
                                                   static_cast<cudaEvent_t>(all[r].doneSync), 0),
                               "cudaStreamWaitEvent"))
          return e;
    return llvm::Error::success();
  }
  Tensor alloc(DType dtype, llvm::ArrayRef<int64_t> shape) override {
    return dc_->alloc(dtype, shape);
  }
  llvm::Error copy(const Tensor &from, Tensor &to) override {
    return copyRows(to.raw(), from.nbytes(), from.raw(), from.nbytes(), from.nbytes(), 1,
                    dc_->stream);
  }

  llvm::Error compute(int kind, int rank, const std::vector<LocalSlot> &all, int64_t outer,
                      int64_t a, int64_t inner) override {
    int n = static_cast<int>(all.size());
    if (n > kMaxLocalRanks)
      return makeError(strCat("the local engine runs at most ", kMaxLocalRanks, " ranks"));
    for (int r = 0; r < n; ++r) {
      if (r == rank)
        continue;
      if (all[r].device != dc_->device)
        return makeError(strCat("the local engine needs every rank on one GPU; rank ", rank,
                                " is on GPU ", dc_->device, ", rank ", r, " on GPU ",
                                all[r].device, " (use --comm nccl)"));
      if (auto e = cudaCheck(
              cudaStreamWaitEvent(dc_->stream, static_cast<cudaEvent_t>(all[r].sync), 0),
              "cudaStreamWaitEvent"))
        return e;
    }
    const LocalSlot &me = all[rank];
    std::vector<const void *> ins;
    for (const LocalSlot &s : all)
      ins.push_back(s.in);
    cudaError_t err = cudaSuccess;
    if (kind == 0 || kind == 2) {
      int64_t blk = kind == 0 ? me.count : a / n * inner;
      int64_t rows = kind == 0 ? 1 : outer;
      int64_t pitch = kind == 0 ? 0 : a * inner, offset = kind == 0 ? 0 : rank * blk;
      if (!launchSumRanks(me.out, ins.data(), n, rows, blk, pitch, offset,
                          static_cast<int32_t>(me.dtype), dc_->stream, err))
        return makeError(strCat("the local engine cannot sum ", dtypeName(me.dtype),
                                " tensors on the GPU"));
      return cudaCheck(err, "the local engine's sum kernel");
    }
    size_t blk = static_cast<size_t>(a * inner) * dtypeSize(me.dtype);
    for (int r = 0; r < n; ++r)
      if (auto e = copyRows(static_cast<char *>(me.out) + r * blk, n * blk, ins[r], blk, blk,
                            static_cast<size_t>(outer), dc_->stream))
        return e;
    return llvm::Error::success();
  }

private:
  explicit CudaLocalBackend(DeviceContext *dc) : dc_(dc) {}
  DeviceContext *dc_;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
};

//===----------------------------------------------------------------------===//
// NCCL
//===----------------------------------------------------------------------===//

bool ncclTypeOf(DType t, ncclDataType_t &out) {
  switch (t) {
  case DType::Float: out = ncclFloat32; return true;
  case DType::Float16: out = ncclFloat16; return true;
  case DType::BFloat16: out = ncclBfloat16; return true;
  case DType::Double: out = ncclFloat64; return true;
  case DType::Int64: out = ncclInt64; return true;
  case DType::Int32: out = ncclInt32; return true;
  case DType::Int8: out = ncclInt8; return true;
  case DType::UInt8:
  case DType::Bool: out = ncclUint8; return true;
  default: return false;
  }
}

class NcclCommunicator final : public Communicator {
public:
  NcclCommunicator(const RendezvousOptions &opts, std::unique_ptr<TcpStore> store,
                   ncclComm_t comm, int gpu, uint64_t exchangeSeq)
      : opts_(opts), store_(std::move(store)), comm_(comm), gpu_(gpu), exchangeSeq_(exchangeSeq) {}
  ~NcclCommunicator() override {
    if (!finished_)
      if (llvm::Error e = finish())
        llvm::errs() << "qn-run: rank " << opts_.rank << ": " << llvm::toString(std::move(e))
                     << "\n";
    if (comm_)
      ncclCommDestroy(comm_);
  }

  llvm::Error awaitDevice(const std::function<bool()> &done) override {
    using Clock = std::chrono::steady_clock;
    auto start = Clock::now(), deadline = start + opts_.timeout;
    for (unsigned polls = 0;; ++polls) {
      if (done())
        return llvm::Error::success();
      if (!comm_)
        return makeError(strCat("NCCL rank ", rank(), ": the communicator was aborted"));
      if (polls % 64 == 0) {
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
        if (r != ncclSuccess || (state != ncclSuccess && state != ncclInProgress))
          return abortWith(strCat("NCCL reported an error during this run's collectives: ",
                                  ncclGetErrorString(r != ncclSuccess ? r : state),
                                  " (a peer may have died; NCCL_DEBUG=WARN tells more)"));
        auto now = Clock::now();
        if (now > deadline) {
          char secs[32];
          std::snprintf(secs, sizeof secs, "%g",
                        std::chrono::duration<double>(opts_.timeout).count());
          return abortWith(strCat("this run's GPU work, with its NCCL collectives, did not "
                                  "finish within ",
                                  secs, " s: a peer rank is gone or stuck (--timeout sets the "
                                        "bound)"));
        }
        if (now - start > std::chrono::milliseconds(2)) { // a long run: stop spinning
          std::this_thread::sleep_for(std::chrono::microseconds(50));
          continue;
        }
      }
      std::this_thread::yield();
    }
  }

  int rank() const override { return opts_.rank; }
  int size() const override { return opts_.worldSize; }
  const char *engine() const override { return "nccl"; }
  bool capturable() const override { return true; }
  llvm::Error bindDevice(DeviceContext *dc) override {
    if (dc->device != gpu_)
      return makeError(strCat("NCCL rank ", rank(), " was set up on GPU ", gpu_,
                              " but its executor runs on GPU ", dc->device));
    dc_ = dc;
    return llvm::Error::success();
  }

  llvm::Error allReduceSum(Tensor &t) override { return allReduceSum(t, t); }
  llvm::Error allReduceSum(const Tensor &in, Tensor &out) override {
    ncclDataType_t ty;
    if (auto e = usable(in, "all-reduce", ty))
      return e;
    if (out.nbytes() != in.nbytes() || out.onHost())
      return makeError("NCCL all-reduce: output " + out.describe() + " does not match " +
                       in.describe());
    return nccl(ncclAllReduce(in.raw(), out.raw(), static_cast<size_t>(in.numel()), ty, ncclSum,
                              comm_, dc_->stream),
                "ncclAllReduce");
  }
  llvm::Error allGather(const Tensor &in, Tensor &out, int axis) override {
    ncclDataType_t ty;
    if (auto e = usable(in, "all-gather", ty))
      return e;
    int64_t outer, a, inner;
    splitAt(in, axis, outer, a, inner);
    std::vector<int64_t> s = in.shape();
    s[axis] *= size();
    out = dc_->alloc(in.dtype(), s);
    size_t count = static_cast<size_t>(in.numel());
    if (outer == 1)
      return nccl(ncclAllGather(in.raw(), out.raw(), count, ty, comm_, dc_->stream),
                  "ncclAllGather");
    // NCCL gathers whole buffers rank after rank; interleave them along axis.
    Tensor tmp = dc_->alloc(in.dtype(), {static_cast<int64_t>(count) * size()});
    if (auto e = nccl(ncclAllGather(in.raw(), tmp.raw(), count, ty, comm_, dc_->stream),
                      "ncclAllGather"))
      return e;
    size_t blk = static_cast<size_t>(a * inner) * dtypeSize(in.dtype());
    size_t n = static_cast<size_t>(size());
    for (size_t r = 0; r < n; ++r)
      if (auto e = copyRows(static_cast<char *>(out.raw()) + r * blk, n * blk,
                            static_cast<char *>(tmp.raw()) + r * in.nbytes(), blk, blk,
                            static_cast<size_t>(outer), dc_->stream))
        return e;
    return llvm::Error::success();
  }
  llvm::Error reduceScatterSum(const Tensor &in, Tensor &out, int axis) override {
    ncclDataType_t ty;
    if (auto e = usable(in, "reduce-scatter", ty))
      return e;
    int64_t outer, a, inner;
    splitAt(in, axis, outer, a, inner);
    if (a % size() != 0)
      return makeError(strCat("NCCL reduce-scatter: axis ", axis, " of ", in.describe(),
                              " is not divisible by ", size(), " ranks"));
    std::vector<int64_t> s = in.shape();
    s[axis] /= size();
    out = dc_->alloc(in.dtype(), s);
    size_t recv = static_cast<size_t>(out.numel());
    if (outer == 1)
      return nccl(ncclReduceScatter(in.raw(), out.raw(), recv, ty, ncclSum, comm_, dc_->stream),
                  "ncclReduceScatter");
    // Rank r's part must be contiguous: gather its rows first.
    Tensor tmp = dc_->alloc(in.dtype(), {in.numel()});
    size_t es = dtypeSize(in.dtype());
    size_t blk = static_cast<size_t>(a / size() * inner) * es, pitch = static_cast<size_t>(a * inner) * es;
    for (int r = 0; r < size(); ++r)
      if (auto e = copyRows(static_cast<char *>(tmp.raw()) + r * out.nbytes(), blk,
                            static_cast<const char *>(in.raw()) + r * blk, pitch, blk,
                            static_cast<size_t>(outer), dc_->stream))
        return e;
    return nccl(ncclReduceScatter(tmp.raw(), out.raw(), recv, ty, ncclSum, comm_, dc_->stream),
                "ncclReduceScatter");
  }

  llvm::Expected<std::vector<std::string>> exchange(llvm::StringRef key,
                                                    llvm::StringRef value) override {
    return storeExchange(*store_, exchangeSeq_, key, value, rank(), size(), opts_.timeout);
  }

  llvm::Error finish() override {
    if (finished_)
      return llvm::Error::success();
    finished_ = true;
    if (dc_)
      cudaStreamSynchronize(dc_->stream);
    return finishRendezvous(*store_, rank(), size(), opts_.timeout);
  }

private:
  /// ncclCommAbort: unblocks this rank's NCCL kernels; every later call
  /// fails.
  llvm::Error abortWith(const std::string &why) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    return makeError(strCat("NCCL rank ", rank(), ": ", why, "; communicator aborted"));
  }
  llvm::Error usable(const Tensor &in, const char *what, ncclDataType_t &ty) {
    if (!comm_)
      return makeError(strCat("NCCL ", what, " on rank ", rank(), ": the communicator was aborted"));
    if (!dc_)
      return makeError(strCat("NCCL ", what, ": no device bound (a runtime bug)"));
    if (in.onHost())
      return makeError(strCat("NCCL ", what, ": ", in.describe(), " is in host memory"));
    if (!ncclTypeOf(in.dtype(), ty))
      return makeError(strCat("NCCL ", what, ": unsupported dtype ", dtypeName(in.dtype())));
    if (finished_)
      return makeError(strCat("NCCL ", what, ": the communicator is finished"));
    return llvm::Error::success();
  }
  llvm::Error nccl(ncclResult_t r, const char *what) {
    if (r == ncclSuccess)
      return llvm::Error::success();
    return makeError(strCat(what, " on rank ", rank(), " failed: ", ncclGetErrorString(r),
                            r == ncclSystemError || r == ncclRemoteError
                                ? " (a peer may have died; NCCL_DEBUG=WARN tells more)"
                                : ""));
  }

  RendezvousOptions opts_;
  std::unique_ptr<TcpStore> store_;
  ncclComm_t comm_ = nullptr;
  int gpu_;
  DeviceContext *dc_ = nullptr;
  uint64_t exchangeSeq_;
  bool finished_ = false;
};

} // namespace

void registerCudaCollectiveKernels(KernelRegistry &reg) {
  reg.add(kDomain, "AllReduce", allReduceKernel);
  reg.add(kDomain, "AllGather", axisCollectiveKernel<true>);
  reg.add(kDomain, "ReduceScatter", axisCollectiveKernel<false>);
}

/// The CUDA executor's way to give a communicator its rank's device.
llvm::Error bindCommunicator(Communicator &comm, DeviceContext *dc) {
  if (llvm::StringRef(comm.engine()) != "local")
    return comm.bindDevice(dc);
  auto b = CudaLocalBackend::create(dc);
  if (!b)
    return b.takeError();
  return setLocalDeviceBackend(comm, std::move(*b));
}

llvm::Expected<std::unique_ptr<Communicator>> createNccl(const RendezvousOptions &opts, int gpu) {
  auto makeErr = [](const llvm::Twine &msg) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
  };
  auto storeOr = joinRendezvous(opts);
  if (!storeOr)
    return storeOr.takeError();
  std::unique_ptr<TcpStore> store = std::move(*storeOr);
  auto abandon = [&](llvm::Error e) { return abandonRendezvous(*store, opts, std::move(e)); };
  if (cudaError_t e = cudaSetDevice(gpu); e != cudaSuccess) {
    cudaGetLastError();
    return abandon(cudaCallError(e, strCat("rank ", opts.rank, ": cudaSetDevice(", gpu, ")")));
  }
  // Rank 0's unique id reaches the others through the store.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (opts.rank == 0)
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
      return abandon(makeErr(strCat("ncclGetUniqueId failed: ", ncclGetErrorString(r))));
  uint64_t seq = 0;
  std::string mine = opts.rank == 0 ? llvm::toHex(llvm::StringRef(id.internal, sizeof(id.internal)))
                                    : std::string();
  auto all = storeExchange(*store, seq, "nccl-id", mine, opts.rank, opts.worldSize, opts.timeout);
  if (!all)
    return abandon(all.takeError());
  std::string bytes = llvm::fromHex((*all)[0]);
  if (bytes.size() != sizeof(id.internal))
    return abandon(makeErr("rendezvous: rank 0 posted a malformed NCCL id"));
  std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
  ncclComm_t comm = nullptr;
  if (ncclResult_t r = ncclCommInitRank(&comm, opts.worldSize, id, opts.rank); r != ncclSuccess)
    return abandon(makeErr(strCat("rank ", opts.rank, ": ncclCommInitRank on GPU ", gpu,
                                          " failed: ", ncclGetErrorString(r))));
  return std::unique_ptr<Communicator>(new NcclCommunicator(opts, std::move(store), comm, gpu, seq));
}

} // namespace cuda

} // namespace qn::rt
