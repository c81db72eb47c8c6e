//===- GlooCommunicator.cpp - CPU collectives over Gloo ------------------===//
//
// Rendezvous through a TcpStore served by rank 0, plan-id check, then a Gloo
// full-mesh context over the TCP transport. Gloo reports failures (timeouts,
// dead peers) by throwing; every entry point here catches and returns an
// llvm::Error instead.
//
//===----------------------------------------------------------------------===//
#include "Rendezvous.h"
#include "TcpStore.h"

#include "qn/runtime/Communicator.h"

#include <cstdlib>
#include <cstring>
#include <exception>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <tuple>

#include <gloo/allgather_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/raw_ostream.h"

using namespace std::chrono;

namespace qn::rt {

Communicator::~Communicator() = default;

llvm::Error Communicator::allReduceSum(const Tensor &in, Tensor &out) {
  if (!in.onHost() || !out.onHost() || in.nbytes() != out.nbytes())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   std::string(engine()) +
                                       " all-reduce: needs host tensors of the same size");
  if (in.nbytes() && in.raw() != out.raw())
    std::memcpy(out.raw(), in.raw(), in.nbytes());
  return allReduceSum(out);
}

llvm::Error Communicator::awaitDevice(const std::function<bool()> &) {
  return llvm::Error::success();
}

llvm::Error Communicator::bindDevice(DeviceContext *) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 std::string("the ") + engine() +
                                     " engine runs on host tensors only (for GPU ranks use "
                                     "--comm nccl or --comm local)");
}

namespace {

llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg.str());
}

std::string shapeText(const Tensor &t) { return t.describe(); }

// Element-wise sums for gloo's reduce callback: c = a + b (c may alias a or
// b). Integers wrap (computed unsigned) instead of overflowing.
template <typename T> void sumFn(void *c, const void *a, const void *b, size_t n) {
  T *pc = static_cast<T *>(c);
  const T *pa = static_cast<const T *>(a);
  const T *pb = static_cast<const T *>(b);
  for (size_t i = 0; i < n; ++i)
    pc[i] = pa[i] + pb[i];
}
template <typename T, typename U>
void wrapSumFn(void *c, const void *a, const void *b, size_t n) {
  T *pc = static_cast<T *>(c);
  const T *pa = static_cast<const T *>(a);
  const T *pb = static_cast<const T *>(b);
  for (size_t i = 0; i < n; ++i)
    pc[i] = static_cast<T>(static_cast<U>(pa[i]) + static_cast<U>(pb[i]));
}
void halfSumFn(void *c, const void *a, const void *b, size_t n) {
  uint16_t *pc = static_cast<uint16_t *>(c);
  const uint16_t *pa = static_cast<const uint16_t *>(a);
  const uint16_t *pb = static_cast<const uint16_t *>(b);
  for (size_t i = 0; i < n; ++i)
    pc[i] = floatToHalf(halfToFloat(pa[i]) + halfToFloat(pb[i]));
}
void bf16SumFn(void *c, const void *a, const void *b, size_t n) {
  uint16_t *pc = static_cast<uint16_t *>(c);
  const uint16_t *pa = static_cast<const uint16_t *>(a);
  const uint16_t *pb = static_cast<const uint16_t *>(b);
  for (size_t i = 0; i < n; ++i)
    pc[i] = floatToBf16(bf16ToFloat(pa[i]) + bf16ToFloat(pb[i]));
}

using ReduceFn = void (*)(void *, const void *, const void *, size_t);

/// The sum for `t`, or null when summing `t` makes no sense (Bool, unknown).
ReduceFn sumFor(DType t) {
  switch (t) {
  case DType::Float: return &sumFn<float>;
  case DType::Double: return &sumFn<double>;
  case DType::Float16: return &halfSumFn;
  case DType::BFloat16: return &bf16SumFn;
  case DType::Int32: return &wrapSumFn<int32_t, uint32_t>;
  case DType::Int64: return &wrapSumFn<int64_t, uint64_t>;
  case DType::Int8: return &wrapSumFn<int8_t, uint8_t>;
  case DType::UInt8: return &wrapSumFn<uint8_t, uint8_t>;
  default: return nullptr;
  }
}

/// gloo's algorithm classes reduce in place (x += y); adapts a ReduceFn.
template <typename T> struct InPlace {
  template <ReduceFn F> static void apply(T *x, const T *y, size_t n) { F(x, x, y, n); }
};

/// The reduction of `t` as a gloo::ReductionFunction over elements of its
/// size (gloo's classes are typed by the element; the sum is ours).
template <typename T> const gloo::ReductionFunction<T> *reductionFor(DType t) {
  using RF = gloo::ReductionFunction<T>;
#define QN_RF(DT, FN)                                                                      \
  case DType::DT: {                                                                        \
    static const RF rf(gloo::CUSTOM, &InPlace<T>::template apply<FN>);                      \
    return &rf;                                                                            \
  }
  if constexpr (sizeof(T) == 4) {
    switch (t) {
      QN_RF(Float, &sumFn<float>)
      QN_RF(Int32, (&wrapSumFn<int32_t, uint32_t>))
    default: return nullptr;
    }
  } else if constexpr (sizeof(T) == 8) {
    switch (t) {
      QN_RF(Double, &sumFn<double>)
      QN_RF(Int64, (&wrapSumFn<int64_t, uint64_t>))
    default: return nullptr;
    }
  } else if constexpr (sizeof(T) == 2) {
    switch (t) {
      QN_RF(Float16, &halfSumFn)
      QN_RF(BFloat16, &bf16SumFn)
    default: return nullptr;
    }
  } else {
    switch (t) {
      QN_RF(Int8, (&wrapSumFn<int8_t, uint8_t>))
      QN_RF(UInt8, (&wrapSumFn<uint8_t, uint8_t>))
    default: return nullptr;
    }
  }
#undef QN_RF
}

/// The address other ranks should use to reach this host: the local address
/// of a (UDP, nothing sent) route towards the master, else gethostname().
std::string localAddressTowards(const std::string &masterAddr, int port) {
  std::string host = masterAddr;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo *res = nullptr;
  std::string found;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) == 0) {
    for (addrinfo *ai = res; ai && found.empty(); ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0)
        continue;
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      char buf[INET6_ADDRSTRLEN] = {0};
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
          ::getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) {
        const void *a = ss.ss_family == AF_INET6
                            ? static_cast<const void *>(
                                  &reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_addr)
                            : static_cast<const void *>(
                                  &reinterpret_cast<sockaddr_in *>(&ss)->sin_addr);
        if (::inet_ntop(ss.ss_family, a, buf, sizeof(buf)))
          found = buf;
      }
      ::close(fd);
    }
    ::freeaddrinfo(res);
  }
  if (!found.empty() && found != "0.0.0.0" && found != "::")
    return found;
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) == 0 && name[0])
    return name;
  return "127.0.0.1";
}

class GlooCommunicator final : public Communicator {
public:
  GlooCommunicator(const RendezvousOptions &opts, std::unique_ptr<TcpStore> store,
                   std::shared_ptr<gloo::transport::Device> device,
                   std::shared_ptr<gloo::rendezvous::Context> ctx)
      : opts_(opts), store_(std::move(store)), device_(std::move(device)),
        ctx_(std::move(ctx)) {}

  ~GlooCommunicator() override {
    if (!finished_)
      if (llvm::Error e = finish())
        llvm::errs() << "qn: warning: " << llvm::toString(std::move(e)) << "\n";
    ctx_.reset();
    device_.reset();
    store_.reset();
  }

  int rank() const override { return opts_.rank; }
  int size() const override { return opts_.worldSize; }
  const char *engine() const override { return "gloo"; }
  using Communicator::allReduceSum;

  llvm::Error allReduceSum(Tensor &t) override {
    if (llvm::Error e = usable("allReduceSum"))
      return e;
    if (!t.defined())
      return fail("allReduceSum", "the tensor is undefined");
    ReduceFn fn = sumFor(t.dtype());
    if (!fn)
      return fail("allReduceSum", std::string("cannot sum ") + shapeText(t) +
                                      " (unsupported dtype)");
    if (size() == 1 || t.numel() == 0)
      return llvm::Error::success();
    const size_t n = static_cast<size_t>(t.numel()), elem = dtypeSize(t.dtype());
    // Busy polling: large tensors in pieces, as allGather explains (the ring
    // sends a quarter of a piece at a time at tp 2).
    const size_t piece = opts_.busyPoll ? std::max<size_t>(1, 4 * kSyncPieceBytes / elem) : n;
    return guarded("allReduceSum(" + shapeText(t) + ")", [&] {
      char *data = static_cast<char *>(t.raw());
      for (size_t off = 0; off < n; off += piece) {
        const size_t len = std::min(piece, n - off);
        void *p = data + off * elem;
        switch (elem) {
        case 1: ringAllReduce<uint8_t>(p, t.dtype(), len); break;
        case 2: ringAllReduce<uint16_t>(p, t.dtype(), len); break;
        case 4: ringAllReduce<uint32_t>(p, t.dtype(), len); break;
        default: ringAllReduce<uint64_t>(p, t.dtype(), len); break;
        }
      }
    });
  }

  llvm::Error allGather(const Tensor &in, Tensor &out, int axis) override {
    if (llvm::Error e = usable("allGather"))
      return e;
    int64_t ax;
    if (llvm::Error e = checkAxis("allGather", in, axis, ax))
      return e;
    if (dtypeSize(in.dtype()) == 0)
      return fail("allGather", "unsupported dtype of " + shapeText(in));
    std::vector<int64_t> outShape = in.shape();
    outShape[ax] *= size();
    Tensor result = Tensor::empty(in.dtype(), outShape);
    size_t localBytes = in.nbytes();
    if (localBytes == 0) {
      out = result;
      return llvm::Error::success();
    }
    // The data of rank r forms, along `ax`, the r-th block of the output:
    // outer x [size x block] where block = dim(ax) * inner elements.
    int64_t outer = 1;
    for (int64_t i = 0; i < ax; ++i)
      outer *= in.dim(i);
    size_t block = localBytes / static_cast<size_t>(outer);
    const char *src = static_cast<const char *>(in.raw());
    char *dst = static_cast<char *>(result.raw());
    if (size() == 1) {
      std::memcpy(dst, src, localBytes);
      out = result;
      return llvm::Error::success();
    }
    // gloo::allgather concatenates along the outermost dimension; when
    // nothing lies outside `ax` that is already the answer.
    std::vector<char> staging;
    char *gathered = dst;
    if (outer != 1) {
      staging.resize(localBytes * static_cast<size_t>(size()));
      gathered = staging.data();
    }
    // Gloo's AllgatherRing writes into the output buffer it was built with as
    // soon as a peer sends, and a peer may start its next gather while this
    // rank still copies the last one out: reusing one ring per size let the
    // next gather's data overwrite this one's (asynchronous mode). So
    // consecutive gathers of a size alternate between two rings. A peer is at
    // most one gather ahead: it cannot complete gather k without this rank's
    // block, which this rank sends only after copying out gather k-1, so
    // gather k+1 (the other ring) is the furthest a peer can be writing into.
    //
    // With busy polling (sync pairs) a send blocks until the socket takes
    // all of it, and every rank of the ring sends before it receives: a block
    // larger than what the sockets buffer deadlocks (seen: 25 MB logits at
    // tp 2). Large blocks are gathered in pieces of kSyncPieceBytes.
    const size_t piece =
        opts_.busyPoll ? std::min(localBytes, kSyncPieceBytes) : localBytes;
    llvm::Error err = guarded(
        "allGather(" + shapeText(in) + ", axis " + std::to_string(ax) + ")", [&] {
          for (size_t off = 0; off < localBytes; off += piece) {
            const size_t len = std::min(piece, localBytes - off);
            bool second = (gatherParity_[len]++ & 1u) != 0;
            Cached &c = cached(Op::AllGather, second ? 1 : 0, len);
            if (!c.algo) {
              c.in.resize(len);
              c.out.resize(len * size());
              c.algo = std::make_unique<gloo::AllgatherRing<uint8_t>>(
                  ctx_, std::vector<const uint8_t *>{c.in.data()}, c.out.data(),
                  static_cast<int>(len));
            }
            std::memcpy(c.in.data(), src + off, len);
            c.algo->run();
            for (int r = 0; r < size(); ++r)
              std::memcpy(gathered + static_cast<size_t>(r) * localBytes + off,
                          c.out.data() + static_cast<size_t>(r) * len, len);
          }
        });
    if (err)
      return err;
    if (outer != 1) {
      // staging is [size][outer][block]; the output is [outer][size][block].
      for (int r = 0; r < size(); ++r)
        for (int64_t o = 0; o < outer; ++o)
          std::memcpy(dst + (static_cast<size_t>(o) * size() + r) * block,
                      gathered + r * localBytes + static_cast<size_t>(o) * block,
                      block);
    }
    out = result;
    return llvm::Error::success();
  }

  // Implemented as an all-reduce of the whole tensor followed by taking this
  // rank's slice: twice the traffic of a true reduce-scatter but simple, and
  // every rank's slice is bitwise identical to the all-reduced one.
  llvm::Error reduceScatterSum(const Tensor &in, Tensor &out, int axis) override {
    if (llvm::Error e = usable("reduceScatterSum"))
      return e;
    int64_t ax;
    if (llvm::Error e = checkAxis("reduceScatterSum", in, axis, ax))
      return e;
    if (!sumFor(in.dtype()))
      return fail("reduceScatterSum", "cannot sum " + shapeText(in) +
                                          " (unsupported dtype)");
    if (in.dim(ax) % size() != 0)
      return fail("reduceScatterSum",
                  "axis " + std::to_string(ax) + " of " + shapeText(in) +
                      " has size " + std::to_string(in.dim(ax)) +
                      ", which is not divisible by the " +
                      std::to_string(size()) + " ranks");
    Tensor sum = in.clone();
    if (llvm::Error e = allReduceSum(sum))
      return e;
    std::vector<int64_t> outShape = in.shape();
    outShape[ax] /= size();
    Tensor result = Tensor::empty(in.dtype(), outShape);
    if (result.nbytes() != 0) {
      int64_t outer = 1;
      for (int64_t i = 0; i < ax; ++i)
        outer *= in.dim(i);
      size_t fullBlock = sum.nbytes() / static_cast<size_t>(outer);
      size_t block = fullBlock / static_cast<size_t>(size());
      const char *src = static_cast<const char *>(sum.raw());
      char *dst = static_cast<char *>(result.raw());
      for (int64_t o = 0; o < outer; ++o)
        std::memcpy(dst + static_cast<size_t>(o) * block,
                    src + static_cast<size_t>(o) * fullBlock + rank() * block,
                    block);
    }
    out = result;
    return llvm::Error::success();
  }

  llvm::Expected<std::vector<std::string>> exchange(llvm::StringRef key,
                                                    llvm::StringRef value) override {
    if (llvm::Error e = usable("exchange"))
      return e;
    return storeExchange(*store_, exchangeSeq_, key, value, rank(), size(), opts_.timeout);
  }

  llvm::Error finish() override {
    if (finished_)
      return llvm::Error::success();
    finished_ = true;
    if (!broken_.empty()) {
      // The job has failed already (a peer died or timed out): a dead peer
      // never posts its done key, so do not wait for it.
      llvm::consumeError(store_->trySet("qn/done/" + std::to_string(rank()), "1"));
      return llvm::Error::success();
    }
    return finishRendezvous(*store_, rank(), size(), opts_.timeout);
  }

private:
  // gloo's algorithm classes bind their buffers (and pair slots) when they
  // are built, which is what makes them fast to run again. They are built
  // once per (collective, dtype, element count) over staging buffers and
  // reused; every rank issues the same collectives in the same order, so
  // every rank builds them in the same order too.
  enum class Op { AllReduce, AllGather };
  struct Cached {
    std::vector<uint8_t> in, out;
    std::unique_ptr<gloo::Algorithm> algo;
  };
  /// `variant`: the dtype of an all-reduce; which of the two rings of its
  /// size an all-gather uses.
  Cached &cached(Op op, int variant, size_t count) {
    return cache_[std::make_tuple(static_cast<int>(op), variant, count)];
  }

  /// Ring reduce-scatter then all-gather (each chunk is reduced by one rank
  /// and copied to the others): every rank ends with bitwise identical sums.
  template <typename T> void ringAllReduce(void *data, DType dtype, size_t n) {
    Cached &c = cached(Op::AllReduce, static_cast<int>(dtype), n);
    size_t bytes = n * sizeof(T);
    if (!c.algo) {
      c.in.resize(bytes);
      c.algo = std::make_unique<gloo::AllreduceRingChunked<T>>(
          ctx_, std::vector<T *>{reinterpret_cast<T *>(c.in.data())}, static_cast<int>(n),
          reductionFor<T>(dtype));
    }
    std::memcpy(c.in.data(), data, bytes);
    c.algo->run();
    std::memcpy(data, c.in.data(), bytes);
  }

  /// Busy polling: the most one collective step sends at once (see allGather).
  static constexpr size_t kSyncPieceBytes = size_t(1) << 20;

  std::map<std::tuple<int, int, size_t>, Cached> cache_;

  llvm::Error fail(llvm::StringRef op, const std::string &why) {
    return makeError(op + " on rank " + std::to_string(rank()) + " of " +
                     std::to_string(size()) + ": " + why);
  }

  llvm::Error usable(llvm::StringRef op) {
    if (finished_)
      return fail(op, "the communicator is finished");
    if (!broken_.empty())
      return fail(op, "an earlier collective failed (" + broken_ +
                          "); the communicator is unusable");
    return llvm::Error::success();
  }

  llvm::Error checkAxis(llvm::StringRef op, const Tensor &t, int axis,
                        int64_t &ax) {
    if (!t.defined())
      return fail(op, "the tensor is undefined");
    if (t.rank() == 0)
      return fail(op, "a scalar has no axis " + std::to_string(axis));
    ax = axis < 0 ? axis + t.rank() : axis;
    if (ax < 0 || ax >= t.rank())
      return fail(op, "axis " + std::to_string(axis) + " is out of range for " +
                          shapeText(t));
    return llvm::Error::success();
  }

  /// Runs a Gloo call, turning anything it throws into an llvm::Error. After
  /// a failure the context may be out of step with the other ranks, so the
  /// communicator refuses further collectives.
  template <typename F> llvm::Error guarded(const std::string &what, F &&f) {
    std::string cause;
    try {
      f();
      return llvm::Error::success();
    } catch (const std::exception &e) {
      cause = e.what();
    } catch (...) {
      cause = "unknown exception";
    }
    broken_ = what + " failed";
    return fail(what, "Gloo failed: " + cause +
                          " (timeout " + std::to_string(opts_.timeout.count()) +
                          " ms; did another rank fail or exit?)");
  }


  RendezvousOptions opts_;
  std::unique_ptr<TcpStore> store_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  uint64_t exchangeSeq_ = 0;
  std::map<size_t, unsigned> gatherParity_; // gathers issued so far, per byte size
  bool finished_ = false;
  std::string broken_;
};

} // namespace

llvm::Expected<std::unique_ptr<Communicator>>
createGlooCommunicator(const RendezvousOptions &opts) {
  auto storeOr = joinRendezvous(opts);
  if (!storeOr)
    return storeOr.takeError();
  std::unique_ptr<TcpStore> store = std::move(*storeOr);
  auto abandon = [&](llvm::Error e) { return abandonRendezvous(*store, opts, std::move(e)); };

  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> ctx;
  std::string cause;
  try {
    gloo::transport::tcp::attr attr;
    if (const char *ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      attr.iface = ifname;
    else if (isLoopbackAddress(opts.masterAddr))
      attr.hostname = opts.masterAddr.find(':') != std::string::npos ? "::1"
                                                                     : "127.0.0.1";
    else
      attr.hostname = localAddressTowards(opts.masterAddr, opts.masterPort);
    device = gloo::transport::tcp::CreateDevice(attr);
    ctx = std::make_shared<gloo::rendezvous::Context>(opts.rank, opts.worldSize);
    ctx->setTimeout(opts.timeout);
    gloo::rendezvous::PrefixStore prefixed("qn/gloo", *store);
    ctx->connectFullMesh(prefixed, device);
    // Busy polling: each rank receives in its own thread, spinning instead of
    // sleeping until the loop thread wakes it (several times faster for the
    // small messages of inference; only sensible with a core per rank).
    if (opts.busyPoll)
      for (int r = 0; r < opts.worldSize; ++r)
        if (r != opts.rank)
          ctx->getPair(r)->setSync(true, true);
  } catch (const std::exception &e) {
    cause = e.what();
  } catch (...) {
    cause = "unknown exception";
  }
  if (!cause.empty())
    return abandon(makeError("rendezvous of rank " + std::to_string(opts.rank) +
                             ": connecting the Gloo full mesh failed: " + cause));

  return std::unique_ptr<Communicator>(
      new GlooCommunicator(opts, std::move(store), std::move(device), std::move(ctx)));
}

} // namespace qn::rt
