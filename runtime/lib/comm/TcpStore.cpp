//===- TcpStore.cpp - TCP key-value store for rendezvous -----------------===//
#include "TcpStore.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <thread>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "llvm/ADT/StringExtras.h"

using namespace std::chrono;
using Clock = std::chrono::steady_clock;

namespace qn::rt {

namespace {

enum Op : uint8_t { OpSet = 1, OpGet = 2, OpWait = 3, OpAdd = 4 };
enum Status : uint8_t { StOk = 0, StTimeout = 1, StBad = 2 };

/// Keys and values are small; refuse absurd lengths (a stray client, a
/// protocol mismatch) instead of allocating them.
constexpr uint32_t kMaxString = 1u << 30;
/// Granularity at which blocking calls look at the stop flag.
constexpr milliseconds kSlice{100};
/// How long a client waits for a reply beyond the timeout it asked for.
constexpr milliseconds kReplyMargin{10000};

llvm::Error makeError(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg.str());
}

std::string errnoText(int err) { return std::strerror(err); }

void putU32(std::string &s, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void putU64(std::string &s, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void putStr(std::string &s, llvm::StringRef v) {
  putU32(s, static_cast<uint32_t>(v.size()));
  s.append(v.data(), v.size());
}
uint64_t getU64(const char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
uint32_t getU32(const char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

enum class Io { Ok, Closed, Stopped, TimedOut, Error };

/// Reads exactly n bytes. Polls in slices so that `stop` (when given) and
/// `deadline` are honoured.
Io readFull(int fd, void *buf, size_t n, const std::atomic<bool> *stop,
            Clock::time_point deadline, int &err) {
  char *p = static_cast<char *>(buf);
  while (n > 0) {
    if (stop && stop->load())
      return Io::Stopped;
    auto now = Clock::now();
    if (now >= deadline)
      return Io::TimedOut;
    auto wait = std::min<milliseconds>(
        kSlice, duration_cast<milliseconds>(deadline - now) + milliseconds(1));
    pollfd pfd{fd, POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(wait.count()));
    if (r < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      return Io::Error;
    }
    if (r == 0)
      continue;
    ssize_t got = ::recv(fd, p, n, 0);
    if (got == 0)
      return Io::Closed;
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      err = errno;
      return Io::Error;
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Io::Ok;
}

bool writeFull(int fd, const void *buf, size_t n, int &err) {
  const char *p = static_cast<const char *>(buf);
  while (n > 0) {
    ssize_t put = ::send(fd, p, n, MSG_NOSIGNAL);
    if (put < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      return false;
    }
    p += put;
    n -= static_cast<size_t>(put);
  }
  return true;
}

void setNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string quoteKeys(llvm::ArrayRef<std::string> keys) {
  std::string s;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i)
      s += ", ";
    s += "'" + keys[i] + "'";
  }
  return s;
}

} // namespace

bool isLoopbackAddress(llvm::StringRef host) {
  return host == "localhost" || host.startswith("127.") || host == "::1" ||
         host == "[::1]";
}

//===----------------------------------------------------------------------===//
// Server
//===----------------------------------------------------------------------===//

class TcpStore::Server {
public:
  static llvm::Expected<std::unique_ptr<Server>> start(const std::string &host,
                                                       int port);
  ~Server();
  int port() const { return port_; }

private:
  Server() = default;
  void acceptLoop();
  void serve(size_t slot);
  /// Handles one request; false ends the connection.
  bool handle(int fd);
  bool reply(int fd, Status st, llvm::StringRef payload);
  bool readStr(int fd, std::string &s);

  int listenFd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};

  std::mutex mu_; // Guards kv_.
  std::condition_variable cv_;
  std::map<std::string, std::string> kv_;

  std::mutex connMu_; // Guards connFds_ and connThreads_.
  std::vector<int> connFds_; // -1 once the connection thread closed it.
  std::vector<std::thread> connThreads_;
  std::thread acceptor_;
};

llvm::Expected<std::unique_ptr<TcpStore::Server>>
TcpStore::Server::start(const std::string &host, int port) {
  // Listen on the address itself when it is a loopback one (nothing outside
  // this host can reach us then), on every interface otherwise.
  std::string bindHost;
  int family;
  if (isLoopbackAddress(host)) {
    bindHost = (host == "[::1]") ? "::1" : host;
    family = AF_UNSPEC;
  } else if (host.find(':') != std::string::npos) {
    bindHost = "::";
    family = AF_INET6;
  } else {
    bindHost = "0.0.0.0";
    family = AF_INET;
  }
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo *res = nullptr;
  std::string portStr = std::to_string(port);
  if (int rc = ::getaddrinfo(bindHost.c_str(), portStr.c_str(), &hints, &res))
    return makeError("rendezvous store: cannot resolve " + bindHost + ": " +
                     ::gai_strerror(rc));
  std::unique_ptr<Server> s(new Server());
  std::string lastErr = "no address";
  for (addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                      ai->ai_protocol);
    if (fd < 0) {
      lastErr = errnoText(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      lastErr = errnoText(errno);
      ::close(fd);
      continue;
    }
    s->listenFd_ = fd;
    break;
  }
  ::freeaddrinfo(res);
  if (s->listenFd_ < 0)
    return makeError("rendezvous store: cannot listen on " + bindHost + ":" +
                     portStr + ": " + lastErr +
                     (port ? " (is another run using MASTER_PORT " + portStr +
                                 "?)"
                           : std::string()));
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(s->listenFd_, reinterpret_cast<sockaddr *>(&ss), &len) == 0)
    s->port_ = ntohs(ss.ss_family == AF_INET6
                         ? reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port
                         : reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
  else
    s->port_ = port;
  s->acceptor_ = std::thread([srv = s.get()] { srv->acceptLoop(); });
  return s;
}

TcpStore::Server::~Server() {
  stop_ = true;
  {
    std::lock_guard<std::mutex> l(mu_);
  }
  cv_.notify_all();
  // Wake the threads blocked in poll() now rather than at their next slice:
  // shutdown() makes a listening socket and a connection readable. Once
  // stop_ is set the acceptor adds no connection (it checks under connMu_),
  // so one pass covers them all; it also unblocks a send() to a stuck client.
  ::shutdown(listenFd_, SHUT_RDWR);
  {
    std::lock_guard<std::mutex> l(connMu_);
    for (int fd : connFds_)
      if (fd >= 0)
        ::shutdown(fd, SHUT_RDWR);
  }
  if (acceptor_.joinable())
    acceptor_.join();
  // No new threads can appear: the acceptor is gone.
  for (std::thread &t : connThreads_)
    if (t.joinable())
      t.join();
  if (listenFd_ >= 0)
    ::close(listenFd_);
}

void TcpStore::Server::acceptLoop() {
  while (!stop_) {
    pollfd pfd{listenFd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(kSlice.count()));
    if (r <= 0)
      continue;
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    setNoDelay(fd);
    std::lock_guard<std::mutex> l(connMu_);
    if (stop_) {
      ::close(fd);
      break;
    }
    connFds_.push_back(fd);
    size_t slot = connFds_.size() - 1;
    connThreads_.emplace_back([this, slot] { serve(slot); });
  }
}

void TcpStore::Server::serve(size_t slot) {
  int fd;
  {
    std::lock_guard<std::mutex> l(connMu_);
    fd = connFds_[slot];
  }
  while (!stop_ && handle(fd)) {
  }
  std::lock_guard<std::mutex> l(connMu_);
  ::close(fd);
  connFds_[slot] = -1;
}

bool TcpStore::Server::reply(int fd, Status st, llvm::StringRef payload) {
  std::string msg;
  msg.push_back(static_cast<char>(st));
  putStr(msg, payload);
  int err = 0;
  return writeFull(fd, msg.data(), msg.size(), err);
}

bool TcpStore::Server::readStr(int fd, std::string &s) {
  char hdr[4];
  int err = 0;
  if (readFull(fd, hdr, 4, &stop_, Clock::time_point::max(), err) != Io::Ok)
    return false;
  uint32_t n = getU32(hdr);
  if (n > kMaxString)
    return false;
  s.resize(n);
  return n == 0 ||
         readFull(fd, s.data(), n, &stop_, Clock::time_point::max(), err) ==
             Io::Ok;
}

bool TcpStore::Server::handle(int fd) {
  uint8_t op;
  int err = 0;
  if (readFull(fd, &op, 1, &stop_, Clock::time_point::max(), err) != Io::Ok)
    return false;
  auto readU64 = [&](uint64_t &v) {
    char b[8];
    if (readFull(fd, b, 8, &stop_, Clock::time_point::max(), err) != Io::Ok)
      return false;
    v = getU64(b);
    return true;
  };
  switch (op) {
  case OpSet: {
    std::string key, value;
    if (!readStr(fd, key) || !readStr(fd, value))
      return false;
    // Reply first, then publish: a waiter woken by this key (rank 0 at
    // shutdown) may take the server down at once, and the setter must have
    // its reply by then. This connection's next request is read only after
    // the key is stored, so its client cannot tell the difference.
    bool ok = reply(fd, StOk, "");
    {
      std::lock_guard<std::mutex> l(mu_);
      kv_[key] = std::move(value);
    }
    cv_.notify_all();
    return ok;
  }
  case OpGet:
  case OpWait: {
    std::vector<std::string> keys;
    if (op == OpGet) {
      keys.emplace_back();
      if (!readStr(fd, keys.back()))
        return false;
    } else {
      char b[4];
      if (readFull(fd, b, 4, &stop_, Clock::time_point::max(), err) != Io::Ok)
        return false;
      uint32_t n = getU32(b);
      if (n > (1u << 20))
        return false;
      keys.resize(n);
      for (std::string &k : keys)
        if (!readStr(fd, k))
          return false;
    }
    uint64_t ms;
    if (!readU64(ms))
      return false;
    auto deadline = Clock::now() + milliseconds(std::min<uint64_t>(ms, 1ull << 40));
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      if (stop_)
        return false;
      std::vector<std::string> missing;
      for (const std::string &k : keys)
        if (!kv_.count(k))
          missing.push_back(k);
      if (missing.empty()) {
        std::string value = op == OpGet ? kv_[keys[0]] : std::string();
        l.unlock();
        return reply(fd, StOk, value);
      }
      auto now = Clock::now();
      if (now >= deadline) {
        l.unlock();
        std::string payload;
        for (const std::string &k : missing)
          putStr(payload, k);
        return reply(fd, StTimeout, payload);
      }
      cv_.wait_until(l, std::min(deadline, now + kSlice));
    }
  }
  case OpAdd: {
    std::string key;
    uint64_t delta;
    if (!readStr(fd, key) || !readU64(delta))
      return false;
    int64_t result;
    {
      std::lock_guard<std::mutex> l(mu_);
      int64_t old = 0;
      auto it = kv_.find(key);
      if (it != kv_.end())
        llvm::StringRef(it->second).getAsInteger(10, old);
      result = static_cast<int64_t>(static_cast<uint64_t>(old) + delta);
      kv_[key] = std::to_string(result);
    }
    cv_.notify_all();
    std::string payload;
    putU64(payload, static_cast<uint64_t>(result));
    return reply(fd, StOk, payload);
  }
  default:
    reply(fd, StBad, "unknown request");
    return false;
  }
}

//===----------------------------------------------------------------------===//
// Client
//===----------------------------------------------------------------------===//

TcpStore::TcpStore(std::string host, int port, milliseconds timeout)
    : host_(std::move(host)), port_(port), timeout_(timeout) {}

TcpStore::~TcpStore() {
  {
    std::lock_guard<std::mutex> l(clientMu_);
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }
  server_.reset();
}

std::string TcpStore::endpoint() const {
  if (host_.find(':') != std::string::npos && host_.front() != '[')
    return "[" + host_ + "]:" + std::to_string(port_);
  return host_ + ":" + std::to_string(port_);
}

llvm::Expected<std::unique_ptr<TcpStore>>
TcpStore::create(const std::string &host, int port, bool isServer,
                 milliseconds timeout) {
  if (port < 0 || port > 65535 || (port == 0 && !isServer))
    return makeError("rendezvous store: invalid port " + std::to_string(port));
  std::unique_ptr<TcpStore> store(new TcpStore(host, port, timeout));
  if (isServer) {
    auto srv = Server::start(host, port);
    if (!srv)
      return srv.takeError();
    store->server_ = std::move(*srv);
    store->port_ = store->server_->port();
  }
  if (llvm::Error e = store->connectClient())
    return e;
  return store;
}

llvm::Error TcpStore::connectClient() {
  std::string host = host_;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  std::string portStr = std::to_string(port_);
  auto deadline = Clock::now() + timeout_;
  std::string lastErr = "timed out";
  milliseconds backoff{10};
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res = nullptr;
    int rc = ::getaddrinfo(host.c_str(), portStr.c_str(), &hints, &res);
    if (rc != 0) {
      lastErr = std::string("cannot resolve host: ") + ::gai_strerror(rc);
    } else {
      for (addrinfo *ai = res; ai && fd_ < 0; ai = ai->ai_next) {
        int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                          ai->ai_protocol);
        if (fd < 0) {
          lastErr = errnoText(errno);
          continue;
        }
        // Non-blocking connect, so that an unreachable host cannot hold us
        // past the deadline.
        int flags = ::fcntl(fd, F_GETFL, 0);
        ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        int cr = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
        int err = cr == 0 ? 0 : errno;
        if (err == EINPROGRESS) {
          auto left = duration_cast<milliseconds>(deadline - Clock::now());
          pollfd pfd{fd, POLLOUT, 0};
          int pr = ::poll(&pfd, 1,
                          static_cast<int>(std::max<int64_t>(left.count(), 0)));
          if (pr <= 0) {
            err = pr == 0 ? ETIMEDOUT : errno;
          } else {
            socklen_t len = sizeof(err);
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          }
        }
        if (err != 0) {
          lastErr = errnoText(err);
          ::close(fd);
          continue;
        }
        ::fcntl(fd, F_SETFL, flags);
        setNoDelay(fd);
        fd_ = fd;
      }
      ::freeaddrinfo(res);
    }
    if (fd_ >= 0)
      return llvm::Error::success();
    auto now = Clock::now();
    if (now >= deadline)
      break;
    std::this_thread::sleep_for(
        std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, milliseconds(200));
  }
  return makeError("cannot connect to the rendezvous store at " + endpoint() +
                   " within " + std::to_string(timeout_.count()) +
                   " ms (last error: " + lastErr +
                   "): is rank 0 running, and do MASTER_ADDR/MASTER_PORT "
                   "point to it?");
}

llvm::Error TcpStore::roundTrip(const std::string &request, uint8_t &status,
                                std::string &reply,
                                Clock::time_point replyDeadline,
                                llvm::StringRef what) {
  std::lock_guard<std::mutex> l(clientMu_);
  auto lost = [&](const std::string &why) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
    return makeError("rendezvous store at " + endpoint() + ": " + what +
                     ": " + why);
  };
  if (fd_ < 0)
    return makeError("rendezvous store at " + endpoint() + ": " + what +
                     ": not connected (an earlier request failed)");
  int err = 0;
  if (!writeFull(fd_, request.data(), request.size(), err))
    return lost("cannot send (" + errnoText(err) +
                "): has rank 0 exited?");
  char hdr[5];
  Io io = readFull(fd_, hdr, 5, nullptr, replyDeadline, err);
  if (io == Io::Ok) {
    status = static_cast<uint8_t>(hdr[0]);
    uint32_t n = getU32(hdr + 1);
    if (n > kMaxString)
      return lost("malformed reply");
    reply.resize(n);
    if (n)
      io = readFull(fd_, reply.data(), n, nullptr, replyDeadline, err);
  }
  switch (io) {
  case Io::Ok:
    return llvm::Error::success();
  case Io::Closed:
    return lost("the server closed the connection: has rank 0 exited?");
  case Io::TimedOut:
    return lost("no reply from the server in time");
  default:
    return lost("connection error: " + errnoText(err));
  }
}

llvm::Error TcpStore::trySet(llvm::StringRef key, llvm::StringRef value) {
  std::string req;
  req.push_back(static_cast<char>(OpSet));
  putStr(req, key);
  putStr(req, value);
  uint8_t st;
  std::string rep;
  if (llvm::Error e = roundTrip(req, st, rep, Clock::now() + timeout_ + kReplyMargin,
                                "set '" + key.str() + "'"))
    return e;
  if (st != StOk)
    return makeError("rendezvous store at " + endpoint() + ": set '" +
                     key.str() + "' refused: " + rep);
  return llvm::Error::success();
}

llvm::Expected<std::string> TcpStore::tryGet(llvm::StringRef key,
                                             milliseconds timeout) {
  timeout = std::max(timeout, milliseconds(0));
  std::string req;
  req.push_back(static_cast<char>(OpGet));
  putStr(req, key);
  putU64(req, static_cast<uint64_t>(timeout.count()));
  uint8_t st;
  std::string rep;
  if (llvm::Error e = roundTrip(req, st, rep, Clock::now() + timeout + kReplyMargin,
                                "get '" + key.str() + "'"))
    return e;
  if (st == StTimeout)
    return makeError("rendezvous store at " + endpoint() + ": key '" +
                     key.str() + "' did not appear within " +
                     std::to_string(timeout.count()) + " ms");
  if (st != StOk)
    return makeError("rendezvous store at " + endpoint() + ": get '" +
                     key.str() + "' refused: " + rep);
  return rep;
}

llvm::Error TcpStore::tryWait(llvm::ArrayRef<std::string> keys,
                              milliseconds timeout) {
  timeout = std::max(timeout, milliseconds(0));
  std::string req;
  req.push_back(static_cast<char>(OpWait));
  putU32(req, static_cast<uint32_t>(keys.size()));
  for (const std::string &k : keys)
    putStr(req, k);
  putU64(req, static_cast<uint64_t>(timeout.count()));
  uint8_t st;
  std::string rep;
  if (llvm::Error e = roundTrip(req, st, rep, Clock::now() + timeout + kReplyMargin,
                                "wait for " + quoteKeys(keys)))
    return e;
  if (st == StTimeout) {
    std::vector<std::string> missing;
    size_t pos = 0;
    while (pos + 4 <= rep.size()) {
      uint32_t n = getU32(rep.data() + pos);
      pos += 4;
      if (pos + n > rep.size())
        break;
      missing.push_back(rep.substr(pos, n));
      pos += n;
    }
    return makeError("rendezvous store at " + endpoint() + ": timed out after " +
                     std::to_string(timeout.count()) +
                     " ms waiting for key(s) " + quoteKeys(missing));
  }
  if (st != StOk)
    return makeError("rendezvous store at " + endpoint() + ": wait refused: " +
                     rep);
  return llvm::Error::success();
}

llvm::Expected<int64_t> TcpStore::tryAdd(llvm::StringRef key, int64_t delta) {
  std::string req;
  req.push_back(static_cast<char>(OpAdd));
  putStr(req, key);
  putU64(req, static_cast<uint64_t>(delta));
  uint8_t st;
  std::string rep;
  if (llvm::Error e = roundTrip(req, st, rep, Clock::now() + timeout_ + kReplyMargin,
                                "add to '" + key.str() + "'"))
    return e;
  if (st != StOk || rep.size() != 8)
    return makeError("rendezvous store at " + endpoint() + ": add to '" +
                     key.str() + "' refused: " + rep);
  return static_cast<int64_t>(getU64(rep.data()));
}

// gloo::rendezvous::Store overrides: the same, throwing.

void TcpStore::set(const std::string &key, const std::vector<char> &data) {
  if (llvm::Error e = trySet(key, llvm::StringRef(data.data(), data.size())))
    throw TcpStoreError(llvm::toString(std::move(e)));
}

std::vector<char> TcpStore::get(const std::string &key) {
  auto v = tryGet(key, timeout_);
  if (!v)
    throw TcpStoreError(llvm::toString(v.takeError()));
  return std::vector<char>(v->begin(), v->end());
}

void TcpStore::wait(const std::vector<std::string> &keys) {
  wait(keys, timeout_);
}

void TcpStore::wait(const std::vector<std::string> &keys,
                    const milliseconds &timeout) {
  // Gloo spells "no timeout" as 0; stay bounded by the store's own timeout.
  if (llvm::Error e = tryWait(keys, timeout == gloo::kNoTimeout ? timeout_ : timeout))
    throw TcpStoreError(llvm::toString(std::move(e)));
}

} // namespace qn::rt
