//===- Launcher.cpp - spawn the rank processes of a job -------------------===//
#include "Launcher.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/FileSystem.h"

extern char **environ;

namespace qn::tools {
namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

} // namespace

llvm::Error launchRanks(const char *argv0, llvm::ArrayRef<std::string> rankArgs, int n,
                        int threadsPerRank) {
  int port = freePort();
  if (port < 0)
    return fail("cannot find a free TCP port on 127.0.0.1 for the rendezvous");
  std::string exe = llvm::sys::fs::getMainExecutable(argv0, (void *)&freePort);
  std::vector<std::string> baseEnv;
  for (char **e = environ; *e; ++e) {
    llvm::StringRef kv(*e);
    if (kv.startswith("RANK=") || kv.startswith("WORLD_SIZE=") || kv.startswith("MASTER_ADDR=") ||
        kv.startswith("MASTER_PORT=") || kv.startswith("LOCAL_RANK=") ||
        kv.startswith("LOCAL_WORLD_SIZE=") ||
        kv.startswith("OPENBLAS_NUM_THREADS=") || kv.startswith("OMP_NUM_THREADS="))
      continue;
    baseEnv.push_back(kv.str());
  }
  const int threads = std::max(1, threadsPerRank);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> env = baseEnv;
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(n));
    env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(n));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    env.push_back("OPENBLAS_NUM_THREADS=" + std::to_string(threads));
    env.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
    env.push_back("QN_LAUNCHED=1");
    std::vector<char *> envp, args;
    for (auto &s : env)
      envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string exeCopy = exe;
    args.push_back(exeCopy.data());
    std::vector<std::string> argCopies(rankArgs.begin(), rankArgs.end());
    for (auto &a : argCopies)
      args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid;
    if (int rc = posix_spawn(&pid, exe.c_str(), nullptr, nullptr, args.data(), envp.data())) {
      for (pid_t p : pids)
        ::kill(p, SIGKILL);
      return fail("cannot start rank " + llvm::Twine(r) + ": " + std::strerror(rc));
    }
    pids.push_back(pid);
  }
  int failures = 0;
  std::string firstFailure;
  size_t alive = pids.size();
  while (alive > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end())
      continue;
    int r = static_cast<int>(it - pids.begin());
    *it = -1;
    --alive;
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok)
      continue;
    std::string why = WIFSIGNALED(status)
                          ? "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                strsignal(WTERMSIG(status)) + ")"
                          : "exited with code " + std::to_string(WEXITSTATUS(status));
    if (failures++ == 0) {
      firstFailure = "rank " + std::to_string(r) + " " + why;
      // Stop the others: they would otherwise wait in a collective until the
      // timeout.
      for (pid_t p : pids)
        if (p > 0)
          ::kill(p, SIGTERM);
    }
  }
  if (failures)
    return fail(firstFailure + "; stopped the other ranks");
  return llvm::Error::success();
}

} // namespace qn::tools
