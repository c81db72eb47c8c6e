//===- LocalCommunicator.cpp - The local engine: ranks as threads ---------===//
//
// Every collective is two barriers. Before the first, each rank posts its
// buffers in its slot (and, on a device, marks its input ready on its
// stream); between them each rank computes its own output from every rank's
// input (sums in rank order, so that all ranks get the same bits); before the
// second it marks that it has read its peers; after it, it waits until its
// peers have read its input. Slots are only read between the barriers, the
// "done" marks only after the second one, and a rank writes its next "ready"
// mark before the next first barrier, which no rank passes before every rank
// has finished waiting: no slot is read while it is rewritten.
//
//===----------------------------------------------------------------------===//
#include "LocalCommunicator.h"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "../StrCat.h"

namespace qn::rt {
namespace {

llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

class LocalGroup {
public:
  LocalGroup(int n, std::chrono::milliseconds timeout)
      : n_(n), timeout_(timeout), slots_(n), strings_(n) {}

  int size() const { return n_; }
  std::vector<LocalSlot> &slots() { return slots_; }
  std::vector<std::string> &strings() { return strings_; }

  llvm::Error barrier(int rank, llvm::StringRef what) {
    std::unique_lock<std::mutex> lk(mu_);
    if (aborted_)
      return abortedError();
    uint64_t gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return llvm::Error::success();
    }
    bool passed =
        cv_.wait_for(lk, timeout_, [&] { return generation_ != gen || aborted_; });
    if (generation_ != gen)
      return llvm::Error::success();
    if (!passed && !aborted_) {
      aborted_ = true;
      why_ = strCat("rank ", rank, " waited ", timeout_.count(), " ms in ", what.str(),
                    " for the other ranks (--timeout)");
      cv_.notify_all();
    }
    return abortedError();
  }

  void abort(llvm::StringRef why) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!aborted_) {
      aborted_ = true;
      why_ = why.str();
    }
    cv_.notify_all();
  }

private:
  llvm::Error abortedError() const { return makeError("the local group stopped: " + why_); }

  int n_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::string why_;
  std::vector<LocalSlot> slots_;
  std::vector<std::string> strings_;
};

/// out[o*blk + j] = sum over ranks r (in rank order) of
/// in_r[o*pitch + offset + j]; half types accumulate in float.
template <class T, class Acc, class Load, class Store>
void sumRows(void *out, const std::vector<const void *> &ins, int64_t outer, int64_t blk,
             int64_t pitch, int64_t offset, Load load, Store store) {
  T *o = static_cast<T *>(out);
  for (int64_t r = 0; r < outer; ++r)
    for (int64_t j = 0; j < blk; ++j) {
      Acc s = load(static_cast<const T *>(ins[0])[r * pitch + offset + j]);
      for (size_t k = 1; k < ins.size(); ++k)
        s += load(static_cast<const T *>(ins[k])[r * pitch + offset + j]);
      o[r * blk + j] = store(s);
    }
}

template <class T>
void sumPlain(void *out, const std::vector<const void *> &ins, int64_t outer, int64_t blk,
              int64_t pitch, int64_t offset) {
  sumRows<T, T>(
      out, ins, outer, blk, pitch, offset, [](T v) { return v; }, [](T v) { return v; });
}

llvm::Error hostSum(DType dt, void *out, const std::vector<const void *> &ins, int64_t outer,
                    int64_t blk, int64_t pitch, int64_t offset) {
  switch (dt) {
  case DType::Float: sumPlain<float>(out, ins, outer, blk, pitch, offset); break;
  case DType::Double: sumPlain<double>(out, ins, outer, blk, pitch, offset); break;
  case DType::Int64: sumPlain<int64_t>(out, ins, outer, blk, pitch, offset); break;
  case DType::Int32: sumPlain<int32_t>(out, ins, outer, blk, pitch, offset); break;
  case DType::Int8: sumPlain<int8_t>(out, ins, outer, blk, pitch, offset); break;
  case DType::UInt8: sumPlain<uint8_t>(out, ins, outer, blk, pitch, offset); break;
  case DType::Float16:
    sumRows<uint16_t, float>(
        out, ins, outer, blk, pitch, offset, [](uint16_t v) { return halfToFloat(v); },
        [](float v) { return floatToHalf(v); });
    break;
  case DType::BFloat16:
    sumRows<uint16_t, float>(
        out, ins, outer, blk, pitch, offset, [](uint16_t v) { return bf16ToFloat(v); },
        [](float v) { return floatToBf16(v); });
    break;
  default:
    return makeError(strCat("local engine: cannot sum ", dtypeName(dt), " tensors"));
  }
  return llvm::Error::success();
}

class LocalCommunicator final : public Communicator {
public:
  LocalCommunicator(std::shared_ptr<LocalGroup> g, int rank) : g_(std::move(g)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return g_->size(); }
  const char *engine() const override { return "local"; }
  llvm::Error bindDevice(DeviceContext *) override {
    return makeError("the local engine gets its device through setLocalDeviceBackend");
  }
  void setBackend(std::unique_ptr<LocalDeviceBackend> b) { dev_ = std::move(b); }
  void abort(llvm::StringRef why) { g_->abort(why); }

  llvm::Error allReduceSum(Tensor &t) override {
    // Into a temporary: peers read `t` while this rank computes.
    Tensor tmp = allocLike(t.dtype(), t.shape());
    if (auto e = collective(0, t, tmp, 0))
      return e;
    return copyInto(tmp, t);
  }
  llvm::Error allReduceSum(const Tensor &in, Tensor &out) override {
    if (in.dtype() != out.dtype() || in.shape() != out.shape())
      return makeError("local all-reduce: output " + out.describe() + " does not match input " +
                       in.describe());
    return collective(0, in, out, 0);
  }
  llvm::Error allGather(const Tensor &in, Tensor &out, int axis) override {
    if (auto e = checkAxis(in, axis, "all-gather"))
      return e;
    std::vector<int64_t> s = in.shape();
    s[axis] *= size();
    out = allocLike(in.dtype(), s);
    return collective(1, in, out, axis);
  }
  llvm::Error reduceScatterSum(const Tensor &in, Tensor &out, int axis) override {
    if (auto e = checkAxis(in, axis, "reduce-scatter"))
      return e;
    if (in.dim(axis) % size() != 0)
      return makeError(strCat("local reduce-scatter: axis ", axis, " of ", in.describe(),
                              " is not divisible by ", size(), " ranks"));
    std::vector<int64_t> s = in.shape();
    s[axis] /= size();
    out = allocLike(in.dtype(), s);
    return collective(2, in, out, axis);
  }

  llvm::Expected<std::vector<std::string>> exchange(llvm::StringRef key,
                                                    llvm::StringRef value) override {
    g_->strings()[rank_] = value.str();
    if (auto e = g_->barrier(rank_, "exchange('" + key.str() + "')"))
      return e;
    std::vector<std::string> all = g_->strings();
    if (auto e = g_->barrier(rank_, "exchange('" + key.str() + "')"))
      return e;
    return all;
  }

private:
  bool onDevice() const { return dev_ != nullptr; }
  Tensor allocLike(DType dt, llvm::ArrayRef<int64_t> shape) {
    return onDevice() ? dev_->alloc(dt, shape) : Tensor::empty(dt, shape);
  }
  llvm::Error copyInto(const Tensor &from, Tensor &to);

  llvm::Error checkAxis(const Tensor &in, int axis, const char *what) {
    if (axis < 0 || axis >= in.rank())
      return makeError(strCat("local ", what, ": axis ", axis, " out of range for ",
                              in.describe()));
    return llvm::Error::success();
  }

  llvm::Error collective(int kind, const Tensor &in, Tensor &out, int axis) {
    static const char *names[] = {"all-reduce", "all-gather", "reduce-scatter"};
    const char *what = names[kind];
    if (in.onHost() == onDevice() || out.onHost() == onDevice())
      return makeError(strCat("local ", what, ": tensors on the ",
                              in.onHost() ? "host" : "device", " but the engine runs on the ",
                              onDevice() ? "device" : "host"));
    LocalSlot &mine = g_->slots()[rank_];
    mine.in = in.raw();
    mine.out = out.raw();
    mine.count = in.numel();
    mine.dtype = in.dtype();
    mine.shape = in.shape();
    if (onDevice())
      if (auto e = dev_->markReady(mine))
        return abortWith(std::move(e));
    if (auto e = g_->barrier(rank_, what))
      return e;
    std::vector<LocalSlot> &all = g_->slots();
    for (int r = 0; r < size(); ++r)
      if (all[r].dtype != in.dtype() || all[r].shape != in.shape()) {
        std::string msg = strCat("local ", what, ": rank ", rank_, " has ", in.describe(),
                                 " but rank ", r, " has ", dtypeName(all[r].dtype), "[",
                                 all[r].shape.size(), "-d]");
        g_->abort(msg);
        return makeError(msg);
      }
    int64_t outer = 1, inner = 1, a = in.rank() ? in.dim(axis) : 1;
    for (int k = 0; k < axis; ++k)
      outer *= in.dim(k);
    for (int64_t k = axis + 1; k < in.rank(); ++k)
      inner *= in.dim(k);
    if (in.rank() == 0)
      outer = inner = 1;
    if (onDevice()) {
      if (auto e = dev_->compute(kind, rank_, all, outer, a, inner))
        return abortWith(std::move(e));
      if (auto e = dev_->markDone(mine))
        return abortWith(std::move(e));
    } else if (auto e = hostCompute(kind, all, out, outer, a, inner)) {
      return abortWith(std::move(e));
    }
    if (auto e = g_->barrier(rank_, what))
      return e;
    if (onDevice())
      if (auto e = dev_->waitPeersDone(rank_, all))
        return abortWith(std::move(e));
    return llvm::Error::success();
  }

  llvm::Error hostCompute(int kind, const std::vector<LocalSlot> &all, Tensor &out,
                          int64_t outer, int64_t a, int64_t inner) {
    std::vector<const void *> ins;
    for (const LocalSlot &s : all)
      ins.push_back(s.in);
    DType dt = all[rank_].dtype;
    int64_t n = size();
    if (kind == 0)
      return hostSum(dt, out.raw(), ins, 1, all[rank_].count, 0, 0);
    if (kind == 2) {
      int64_t blk = a / n * inner;
      return hostSum(dt, out.raw(), ins, outer, blk, a * inner, rank_ * blk);
    }
    size_t es = dtypeSize(dt), blk = static_cast<size_t>(a * inner) * es;
    char *o = static_cast<char *>(out.raw());
    for (int64_t i = 0; i < outer; ++i)
      for (int64_t r = 0; r < n; ++r)
        if (blk)
          std::memcpy(o + (i * n + r) * blk, static_cast<const char *>(ins[r]) + i * blk, blk);
    return llvm::Error::success();
  }

  llvm::Error abortWith(llvm::Error e) {
    std::string msg = strCat("rank ", rank_, ": ", llvm::toString(std::move(e)));
    g_->abort(msg);
    return makeError(msg);
  }

  std::shared_ptr<LocalGroup> g_;
  int rank_;
  std::unique_ptr<LocalDeviceBackend> dev_;
};

llvm::Error LocalCommunicator::copyInto(const Tensor &from, Tensor &to) {
  if (onDevice())
    return dev_->copy(from, to);
  if (from.nbytes())
    std::memcpy(to.raw(), from.raw(), from.nbytes());
  return llvm::Error::success();
}

} // namespace

LocalDeviceBackend::~LocalDeviceBackend() = default;

std::vector<std::unique_ptr<Communicator>>
createLocalCommunicators(int n, std::chrono::milliseconds timeout) {
  auto g = std::make_shared<LocalGroup>(n, timeout);
  std::vector<std::unique_ptr<Communicator>> r;
  for (int i = 0; i < n; ++i)
    r.push_back(std::make_unique<LocalCommunicator>(g, i));
  return r;
}

void abortLocalGroup(Communicator &comm, llvm::StringRef why) {
  if (auto *l = dynamic_cast<LocalCommunicator *>(&comm))
    l->abort(why);
}

llvm::Error setLocalDeviceBackend(Communicator &comm, std::unique_ptr<LocalDeviceBackend> b) {
  auto *l = dynamic_cast<LocalCommunicator *>(&comm);
  if (!l)
    return makeError(strCat("the ", comm.engine(), " engine is not the local engine"));
  l->setBackend(std::move(b));
  return llvm::Error::success();
}

} // namespace qn::rt
