//===- TcpStore.h - TCP key-value store for rendezvous ---------*- C++ -*-===//
//
// A small rendezvous store in the spirit of PyTorch's TCPStore: rank 0 serves
// an in-memory key-value map on masterAddr:masterPort; every rank (rank 0
// included) is a client. It implements gloo::rendezvous::Store, so a Gloo
// context can connect its full mesh through it.
//
// Protocol (one TCP connection per client, request/response, little-endian):
//   request  = u8 op, fields
//   str      = u32 length, bytes
//   SET  (1): str key, str value                  -> u8 0
//   GET  (2): str key, u64 timeoutMs              -> u8 0, str value | u8 1
//   WAIT (3): u32 n, n x str key, u64 timeoutMs   -> u8 0 | u8 1, u32 m, m x str
//   ADD  (4): str key, i64 delta                  -> u8 0, i64 new value
// GET and WAIT block in the server until the keys exist or the timeout
// expires (status 1 = timed out; WAIT returns the missing keys).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gloo/common/error.h>
#include <gloo/rendezvous/store.h>

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace qn::rt {

/// What the gloo::rendezvous::Store overrides of TcpStore throw.
struct TcpStoreError : public gloo::IoException {
  explicit TcpStoreError(const std::string &msg) : gloo::IoException(msg) {}
};

/// True for "localhost", 127.x.y.z and ::1.
bool isLoopbackAddress(llvm::StringRef host);

class TcpStore : public gloo::rendezvous::Store {
public:
  /// Starts the server when `isServer` (listening on `host` itself when it
  /// is a loopback address, on every interface otherwise; port 0 picks a
  /// free port, see port()), then connects the client, retrying until
  /// `timeout` expires (the server may start after the clients).
  /// `timeout` is also the default bound of get() and wait().
  static llvm::Expected<std::unique_ptr<TcpStore>>
  create(const std::string &host, int port, bool isServer,
         std::chrono::milliseconds timeout);

  /// Closes the client; a server stops (its threads are joined) without
  /// waiting for its clients: keeping it alive long enough is the caller's
  /// business (see GlooCommunicator::finish()).
  ~TcpStore() override;

  TcpStore(const TcpStore &) = delete;
  TcpStore &operator=(const TcpStore &) = delete;

  // gloo::rendezvous::Store. These throw TcpStoreError on failure.
  void set(const std::string &key, const std::vector<char> &data) override;
  std::vector<char> get(const std::string &key) override;
  void wait(const std::vector<std::string> &keys) override;
  void wait(const std::vector<std::string> &keys,
            const std::chrono::milliseconds &timeout) override;

  // Non-throwing forms.
  llvm::Error trySet(llvm::StringRef key, llvm::StringRef value);
  /// Blocks until `key` exists or `timeout` expires.
  llvm::Expected<std::string> tryGet(llvm::StringRef key,
                                     std::chrono::milliseconds timeout);
  /// Blocks until every key exists or `timeout` expires; the error names the
  /// missing keys.
  llvm::Error tryWait(llvm::ArrayRef<std::string> keys,
                      std::chrono::milliseconds timeout);
  /// Atomically adds `delta` to the integer stored (as decimal text) under
  /// `key` (0 when absent) and returns the new value.
  llvm::Expected<int64_t> tryAdd(llvm::StringRef key, int64_t delta);

  /// The port served (isServer) or connected to.
  int port() const { return port_; }
  /// "host:port", for messages.
  std::string endpoint() const;
  std::chrono::milliseconds timeout() const { return timeout_; }
  bool isServer() const { return server_ != nullptr; }

  class Server; // Defined in TcpStore.cpp.

private:
  TcpStore(std::string host, int port, std::chrono::milliseconds timeout);
  llvm::Error connectClient();
  /// Sends `request` and reads the reply, bounded by `replyDeadline`.
  llvm::Error roundTrip(const std::string &request, uint8_t &status,
                        std::string &reply,
                        std::chrono::steady_clock::time_point replyDeadline,
                        llvm::StringRef what);

  std::string host_;
  int port_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Server> server_;
  std::mutex clientMu_;
  int fd_ = -1;
};

} // namespace qn::rt
