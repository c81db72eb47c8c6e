//===- emu_runtime.cpp - the CUDA runtime, cuBLAS(Lt) and NCCL on the CPU -===//
//
// The CPU emulator of the CUDA device (test/cudaemu/): libqn_cuda_emu.so is
// runtime/lib/cuda (its .cpp files as they are, its .cu files turned into C++
// by cu2cpp.py, emu_cuda.h force-included) linked with this file instead of
// cudart, cuBLAS, cuBLASLt and NCCL. Loaded through QN_CUDA_LIBRARY in place of
// libqn_cuda.so, it lets qn-gpu-tests and test_gpu.py execute the project's
// CUDA code on a machine without a GPU (ctest gpu-kernels-emulated,
// e2e-gpu-emulated). It checks the logic: launch configurations and bounds,
// indexing, barriers, warp shuffles, stream order and event waits, graph
// capture and replay, device-side faults. It is not a substitute for a GPU run.
//
// Model:
// - One device ("emulated", sm_90 properties). Device memory is host memory,
//   filled with 0xFF (NaN) on allocation and 0xFE on free; copies, memsets,
//   GEMMs and collectives are checked to lie inside an allocation.
// - Streams are lazy queues run at synchronisation points (stream, event and
//   device sync, event query, blocking copies, cudaFree), in order; so a host
//   read of pinned memory written by an async copy without a sync sees stale
//   data, as a real race could. Stream capture records the enqueued work;
//   cudaGraphLaunch replays it. Calls that are illegal during capture fail.
// - A kernel runs its blocks one after another on the calling thread, one
//   Boost.Context fiber per CUDA thread, switched at __syncthreads and at warp
//   shuffles (cooperative: no preemption, so no data race can show).
// - cuBLAS and cuBLASLt GEMMs are double-precision reference loops (column
//   major, strided batches, BIAS epilogue); TF32 is never applied. NCCL has
//   world size 1: collectives are copies.
//
// Errors it detects abort the process with a "[cudaemu] FATAL:" message, so
// that no test can pass over them: a deadlocked barrier, a shuffle whose mask
// does not match the live lanes, an invalid launch configuration or one over
// __launch_bounds__, a copy/memset/GEMM/collective outside any device
// allocation, freeing what was not allocated, a call illegal during stream
// capture, anything it does not emulate (say a cuBLASLt epilogue but BIAS).
//
// Cannot check: real GPU numerics (fused multiply-adds, the GPU's math
// functions, cuBLAS's summation order), TF32, races between threads, blocks or
// streams, timing (cudaEventElapsedTime is a counter), more than one rank over
// NCCL, host reads of device pointers (they are host memory here and work),
// reads of uninitialised shared memory (__shared__ is not poisoned).
//
// Environment:
//   QN_EMU_VERBOSE=1         log every kernel run, capture and graph launch
//   QN_EMU_EAGER=1           run each operation when it is enqueued (no lazy
//                            stream queues: tells ordering bugs from others)
//   QN_EMU_MUTATE_NOFAULT=1  negative control: the int atomicCAS does nothing,
//                            so device-side faults (CudaFault.h) are never
//                            reported; the fault tests must then fail
//   QN_EMU_NO_DEVICE=1       report zero devices (the "no GPU" paths)
//
//===----------------------------------------------------------------------===//
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <nccl.h>

#include <sys/mman.h>

#include <boost/context/fiber.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

#include "emu_thread.h"

namespace qn_emu {
thread_local ThreadState *g_cur = nullptr;
// QN_EMU_MUTATE_NOFAULT=1 (negative control): the int atomicCAS of emu_cuda.h
// does nothing, so fault words are never set.
bool g_mutateNoAtomics = getenv("QN_EMU_MUTATE_NOFAULT") != nullptr;
cudaError_t launchImpl(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, int bound,
                       const char *name, std::function<void()> body);
void syncthreads();
uint64_t warpExchange(unsigned mask, uint64_t v, int srcLane, int width, const char *what);
} // namespace qn_emu

static std::recursive_mutex g_mu; // one big lock for the API
static bool g_verbose = getenv("QN_EMU_VERBOSE") != nullptr;
static bool g_eager = getenv("QN_EMU_EAGER") != nullptr;

static void emuMsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emuMsg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[cudaemu] ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

/// An error the emulator detected: says what and aborts, so that no test can
/// pass over it (a real GPU would fail, hang or compute garbage).
[[noreturn]] static void emuFatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] static void emuFatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[cudaemu] FATAL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n[cudaemu] (an error the CUDA emulator detected: aborting)\n");
  va_end(ap);
  fflush(stderr);
  abort();
}

//===----------------------------------------------------------------------===//
// Fibers and kernel execution
//===----------------------------------------------------------------------===//
namespace qn_emu {
namespace {
namespace bctx = boost::context;
constexpr size_t kGuard = 4096;
constexpr size_t kStack = 256 * 1024;
constexpr int kMaxThreads = 1024;

/// Hands a fiber the stack its slot owns (mapped once, a guard page below it,
/// reused by every launch); never frees it.
struct SlotStack {
  char *base; // the guard page; the stack is [base + kGuard, base + kGuard + kStack)
  bctx::stack_context allocate() {
    bctx::stack_context sc;
    sc.size = kStack;
    sc.sp = base + kGuard + kStack;
    return sc;
  }
  void deallocate(bctx::stack_context &) noexcept {}
};

struct Fiber {
  bctx::fiber self;   // the CUDA thread, while suspended
  bctx::fiber caller; // the scheduler, while the CUDA thread runs
  char *stack = nullptr;
  ThreadState ts;
  bool done = false;
};
struct Bar {
  int arrived = 0;
  unsigned gen = 0;
};
struct BlockRun {
  Fiber f[kMaxThreads];
  int n = 0, live = 0, cur = 0;
  Bar blk;
  Bar warp[kMaxThreads / 32];
  int warpLive[kMaxThreads / 32];
  int warpLanes[kMaxThreads / 32];
  uint64_t slots[kMaxThreads / 32][32];
  uint64_t progress = 0;
  const std::function<void()> *body = nullptr;
  const char *name = "";
};
thread_local BlockRun *g_run = nullptr;

/// Back to the scheduler; returns when the scheduler resumes this fiber.
void yieldFiber() {
  Fiber &f = g_run->f[g_run->cur];
  f.caller = std::move(f.caller).resume();
}

void releaseIfComplete(Bar &b, int live) {
  if (b.arrived > 0 && b.arrived >= live) {
    b.arrived = 0;
    b.gen++;
  }
}

bctx::fiber fiberEntry(bctx::fiber &&caller) {
  BlockRun *r = g_run;
  Fiber &f = r->f[r->cur];
  f.caller = std::move(caller);
  (*r->body)();
  f.done = true;
  r->live--;
  int w = f.ts.linear >> 5;
  r->warpLive[w]--;
  r->progress++;
  releaseIfComplete(r->blk, r->live);
  releaseIfComplete(r->warp[w], r->warpLive[w]);
  return std::move(f.caller); // the fiber ends; its stack stays with the slot
}

char *allocStack() {
  void *p = mmap(nullptr, kStack + kGuard, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    emuFatal("mmap of a %zu-byte fiber stack failed: %s", kStack + kGuard, strerror(errno));
  mprotect(p, kGuard, PROT_NONE); // guard page: a stack overflow faults
  return static_cast<char *>(p);
}

void initFiber(Fiber &f) {
  if (!f.stack)
    f.stack = allocStack();
  f.self = bctx::fiber(std::allocator_arg, SlotStack{f.stack}, fiberEntry);
  f.done = false;
}

/// Runs one grid, block after block; a deadlock aborts.
void runGrid(dim3 grid, dim3 block, const std::function<void()> &body, const char *name) {
  static thread_local BlockRun *run = nullptr;
  if (!run)
    run = new BlockRun;
  BlockRun *r = run;
  if (g_run)
    emuFatal("kernel %s launched from inside a kernel", name);
  g_run = r;
  r->body = &body;
  r->name = name;
  int n = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        r->n = n;
        r->live = n;
        r->blk = Bar();
        int nw = (n + 31) / 32;
        for (int w = 0; w < nw; ++w) {
          r->warp[w] = Bar();
          r->warpLive[w] = std::min(32, n - w * 32);
          r->warpLanes[w] = r->warpLive[w];
        }
        int i = 0;
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx, ++i) {
              Fiber &f = r->f[i];
              initFiber(f);
              f.ts.tid = make_uint3(tx, ty, tz);
              f.ts.bid = make_uint3(bx, by, bz);
              f.ts.bdim = block;
              f.ts.gdim = grid;
              f.ts.linear = i;
            }
        while (r->live > 0) {
          uint64_t before = r->progress;
          for (int t = 0; t < n; ++t) {
            Fiber &f = r->f[t];
            if (f.done)
              continue;
            r->cur = t;
            g_cur = &f.ts;
            f.self = std::move(f.self).resume();
          }
          if (r->live > 0 && r->progress == before)
            emuFatal("kernel %s deadlocked in block (%u,%u,%u) of grid (%u,%u,%u): %d of %d "
                     "threads wait at a barrier (__syncthreads or a shuffle) that cannot "
                     "complete",
                     name, bx, by, bz, grid.x, grid.y, grid.z, r->live, n);
        }
      }
  g_run = nullptr;
  g_cur = nullptr;
}

void waitBar(Bar &b, int &live) {
  BlockRun *r = g_run;
  b.arrived++;
  r->progress++;
  unsigned g = b.gen;
  if (b.arrived >= live) {
    b.arrived = 0;
    b.gen++;
    return;
  }
  while (b.gen == g)
    yieldFiber();
}
} // namespace

void syncthreads() {
  BlockRun *r = g_run;
  waitBar(r->blk, r->live);
}

uint64_t warpExchange(unsigned mask, uint64_t v, int src, int width, const char *what) {
  BlockRun *r = g_run;
  int lane = g_cur->linear & 31, w = g_cur->linear >> 5;
  unsigned present = r->warpLanes[w] == 32 ? 0xffffffffu : ((1u << r->warpLanes[w]) - 1);
  if ((mask & ~present) || r->warpLive[w] != r->warpLanes[w] || !(mask & (1u << lane)))
    emuFatal("kernel %s: %s with mask 0x%08x in warp %d that has %d lanes (%d live), lane %d "
             "(undefined behaviour)",
             r->name, what, mask, w, r->warpLanes[w], r->warpLive[w], lane);
  waitBar(r->warp[w], r->warpLive[w]);
  r->slots[w][lane] = v;
  waitBar(r->warp[w], r->warpLive[w]);
  if (src < 0 || src >= r->warpLanes[w])
    return v;
  return r->slots[w][src];
}
} // namespace qn_emu

//===----------------------------------------------------------------------===//
// Runtime objects
//===----------------------------------------------------------------------===//
using Op = std::function<void()>;
struct OpRec {
  Op fn;
  std::string what;
};

struct CUgraph_st {
  std::vector<OpRec> ops;
};
struct CUgraphExec_st {
  std::vector<OpRec> ops;
};
struct CUstream_st {
  std::deque<OpRec> q;
  bool capturing = false;
  bool captureInvalid = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  CUgraph_st *graph = nullptr;
  unsigned flags = 0;
  bool isDefault = false;
};
struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;
  bool complete = false;
  bool captured = false;
  bool queriedOnce = false;
  double time = 0;
  CUstream_st *stream = nullptr;
  uint64_t seq = 0;
};
struct CUmemPoolHandle_st {
  int dummy;
};

static CUstream_st g_defaultStream;
static CUmemPoolHandle_st g_pool;
static thread_local cudaError_t g_lastError = cudaSuccess;
static cudaError_t g_sticky = cudaSuccess;
static double g_clock = 0;
static std::map<uintptr_t, size_t> g_dev;    // device allocations
static std::map<uintptr_t, size_t> g_pinned; // cudaMallocHost
static std::set<CUstream_st *> g_streams;
static int g_device = 0;
static uint64_t g_kernels = 0;

static cudaError_t setErr(cudaError_t e) {
  if (e != cudaSuccess)
    g_lastError = e;
  return e;
}
static CUstream_st *S(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
    return &g_defaultStream;
  return s;
}
static bool findRange(const std::map<uintptr_t, size_t> &m, const void *p, size_t n) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin())
    return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}
static bool isDev(const void *p, size_t n) { return findRange(g_dev, p, n); }
static bool isPinned(const void *p, size_t n) { return findRange(g_pinned, p, n); }
static bool anyCapture() {
  for (auto *s : g_streams)
    if (s->capturing)
      return true;
  return g_defaultStream.capturing;
}
/// A capture-unsafe call while some stream captures (modes global / thread-local):
/// the capture is invalidated and the call fails.
static bool captureForbids(const char *what) {
  bool any = false;
  for (auto *s : g_streams)
    if (s->capturing && s->mode != cudaStreamCaptureModeRelaxed) {
      s->captureInvalid = true;
      any = true;
    }
  if (any)
    emuFatal("%s during stream capture (a GPU fails it with "
             "cudaErrorStreamCaptureUnsupported and invalidates the capture)",
             what);
  return any;
}

static void runOp(OpRec &op) {
  if (g_sticky != cudaSuccess)
    return; // a faulted context runs nothing more
  op.fn();
}
static void flush(CUstream_st *s) {
  while (!s->q.empty()) {
    OpRec op = std::move(s->q.front());
    s->q.pop_front();
    runOp(op);
  }
}
static void flushAll() {
  flush(&g_defaultStream);
  for (auto *s : g_streams)
    flush(s);
}
/// Enqueues (or records, under capture) one operation.
static cudaError_t enqueue(cudaStream_t st, Op fn, const char *what) {
  CUstream_st *s = S(st);
  if (s->capturing) {
    s->graph->ops.push_back({std::move(fn), what});
    return cudaSuccess;
  }
  if (s->isDefault) {
    // legacy stream: an implicit barrier with blocking streams
    for (auto *o : g_streams)
      if (!(o->flags & cudaStreamNonBlocking))
        flush(o);
  }
  s->q.push_back({std::move(fn), what});
  if (g_eager)
    flush(s);
  return cudaSuccess;
}

#define LOCK std::lock_guard<std::recursive_mutex> lock_(g_mu)
#define STICKY                                                                                     \
  do {                                                                                             \
    if (g_sticky != cudaSuccess)                                                                   \
      return setErr(g_sticky);                                                                     \
  } while (0)

//===----------------------------------------------------------------------===//
// Kernel launch
//===----------------------------------------------------------------------===//
cudaError_t qn_emu::launchImpl(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, int bound,
                               const char *name, std::function<void()> body) {
  LOCK;
  if (g_sticky != cudaSuccess)
    return setErr(g_sticky);
  unsigned threads = block.x * block.y * block.z;
  cudaError_t e = cudaSuccess;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 ||
      block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024 || grid.y > 65535 ||
      grid.z > 65535 || grid.x > 2147483647u || shmem > 48 * 1024)
    e = cudaErrorInvalidConfiguration;
  else if (bound > 0 && threads > static_cast<unsigned>(bound))
    e = cudaErrorLaunchOutOfResources;
  CUstream_st *s = S(stream);
  if (s != &g_defaultStream && !g_streams.count(s))
    e = cudaErrorInvalidResourceHandle;
  if (e != cudaSuccess)
    emuFatal("launch of %s <<<(%u,%u,%u),(%u,%u,%u),%zu>>> failed: %s (launch bound %d)", name,
             grid.x, grid.y, grid.z, block.x, block.y, block.z, shmem, cudaGetErrorString(e),
             bound);
  ++g_kernels;
  std::string nm = name;
  return setErr(enqueue(
      stream,
      [grid, block, body = std::move(body), nm]() {
        if (g_verbose)
          emuMsg("run %s <<<(%u,%u,%u),(%u,%u,%u)>>>", nm.c_str(), grid.x, grid.y, grid.z, block.x,
                 block.y, block.z);
        runGrid(grid, block, body, nm.c_str()); // aborts on a deadlock or a bad shuffle
      },
      name));
}

// The real sources are built as C++ here: nvcc's registration entry points are unused.

//===----------------------------------------------------------------------===//
// cudart
//===----------------------------------------------------------------------===//
EXPORT cudaError_t cudaGetDeviceCount(int *n) {
  *n = getenv("QN_EMU_NO_DEVICE") ? 0 : 1;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
  if (dev != 0)
    return setErr(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "emulated");
  p->totalGlobalMem = size_t(80) << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->memPitch = SIZE_MAX;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->totalConstMem = 65536;
  p->major = 9;
  p->minor = 0;
  p->textureAlignment = 512;
  p->multiProcessorCount = 132;
  p->integrated = 0;
  p->canMapHostMemory = 1;
  p->concurrentKernels = 1;
  p->ECCEnabled = 1;
  p->pciBusID = 1;
  p->asyncEngineCount = 2;
  p->unifiedAddressing = 1;
  p->memoryBusWidth = 5120;
  p->l2CacheSize = 50 * 1024 * 1024;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->managedMemory = 1;
  p->concurrentManagedAccess = 1;
  p->memoryPoolsSupported = 1;
  return cudaSuccess;
}
EXPORT cudaError_t cudaSetDevice(int d) {
  if (d != 0)
    return setErr(cudaErrorInvalidDevice);
  g_device = d;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGetDevice(int *d) {
  *d = g_device;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGetLastError(void) {
  cudaError_t e = g_lastError;
  g_lastError = g_sticky;
  return e;
}
EXPORT cudaError_t cudaPeekAtLastError(void) { return g_lastError; }

/// Device memory: aligned host memory filled with 0xFF (NaN in every float
/// type), recorded for the bounds checks. The caller holds the lock.
static cudaError_t allocDev(void **p, size_t n) {
  if (n == 0) {
    *p = nullptr;
    return cudaSuccess;
  }
  void *q = nullptr;
  if (posix_memalign(&q, 256, n) != 0)
    return setErr(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, n);
  g_dev[reinterpret_cast<uintptr_t>(q)] = n;
  *p = q;
  return cudaSuccess;
}

EXPORT cudaError_t cudaMalloc(void **p, size_t n) {
  LOCK;
  STICKY;
  if (captureForbids("cudaMalloc"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  return allocDev(p, n);
}
static cudaError_t freeDev(void *p, const char *what) {
  if (!p)
    return cudaSuccess;
  auto it = g_dev.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_dev.end()) {
    emuFatal("%s(%p): not a device allocation", what, p);
    return setErr(cudaErrorInvalidValue);
  }
  std::memset(p, 0xfe, it->second);
  g_dev.erase(it);
  free(p);
  return cudaSuccess;
}
EXPORT cudaError_t cudaFree(void *p) {
  LOCK;
  if (captureForbids("cudaFree"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  flushAll(); // cudaFree synchronises the device
  cudaError_t e = freeDev(p, "cudaFree");
  if (g_sticky != cudaSuccess)
    return setErr(g_sticky);
  return e;
}
EXPORT cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t st) {
  LOCK;
  STICKY;
  // allocated at once (the address is what a pool would hand out); stream order does not matter
  return allocDev(p, n);
}
EXPORT cudaError_t cudaFreeAsync(void *p, cudaStream_t st) {
  LOCK;
  STICKY;
  if (!p)
    return cudaSuccess;
  if (!g_dev.count(reinterpret_cast<uintptr_t>(p))) {
    emuFatal("cudaFreeAsync(%p): not a device allocation", p);
    return setErr(cudaErrorInvalidValue);
  }
  CUstream_st *s = S(st);
  if (s->capturing) {
    if (g_verbose)
      emuMsg("note: cudaFreeAsync during capture: recorded as a no-op");
    return cudaSuccess;
  }
  return setErr(enqueue(st, [p] { freeDev(p, "cudaFreeAsync"); }, "cudaFreeAsync"));
}
EXPORT cudaError_t cudaMallocHost(void **p, size_t n) {
  LOCK;
  STICKY;
  if (captureForbids("cudaMallocHost"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  void *q = nullptr;
  if (posix_memalign(&q, 256, n ? n : 1) != 0)
    return setErr(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, n);
  g_pinned[reinterpret_cast<uintptr_t>(q)] = n ? n : 1;
  *p = q;
  return cudaSuccess;
}
EXPORT cudaError_t cudaFreeHost(void *p) {
  LOCK;
  if (captureForbids("cudaFreeHost"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  if (!p)
    return cudaSuccess;
  flushAll();
  auto it = g_pinned.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_pinned.end()) {
    emuFatal("cudaFreeHost(%p): not a pinned allocation", p);
    return setErr(cudaErrorInvalidValue);
  }
  g_pinned.erase(it);
  free(p);
  return cudaSuccess;
}
EXPORT cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int dev) {
  if (dev != 0)
    return setErr(cudaErrorInvalidDevice);
  *pool = &g_pool;
  return cudaSuccess;
}
EXPORT cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *) {
  return cudaSuccess;
}
EXPORT cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }

/// Validates the device side(s) of a copy of n bytes.
static cudaError_t checkCopy(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                             const char *what) {
  if (n == 0)
    return cudaSuccess;
  bool dOk = true, sOk = true;
  if (k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice)
    dOk = isDev(dst, n);
  if (k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice)
    sOk = isDev(src, n);
  if (k == cudaMemcpyDefault) {
    dOk = isDev(dst, n) || !isDev(dst, 1);
    sOk = isDev(src, n) || !isDev(src, 1);
  }
  if (!dOk || !sOk) {
    emuFatal("%s(dst=%p, src=%p, %zu bytes, kind %d): %s outside any device allocation",
           what, dst, src, n, (int)k, !dOk ? "dst" : "src");
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

EXPORT cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                                   cudaStream_t st) {
  LOCK;
  STICKY;
  CUstream_st *s = S(st);
  if (cudaError_t e = checkCopy(dst, src, n, k, "cudaMemcpyAsync"))
    return setErr(e);
  if (n == 0)
    return cudaSuccess;
  bool hostSrc = k == cudaMemcpyHostToDevice || (k == cudaMemcpyDefault && !isDev(src, 1));
  bool hostDst = k == cudaMemcpyDeviceToHost || (k == cudaMemcpyDefault && !isDev(dst, 1));
  if (s->capturing) {
    if ((hostSrc && !isPinned(src, n)) || (hostDst && !isPinned(dst, n)))
      emuFatal("cudaMemcpyAsync with pageable host memory during stream capture");
    return enqueue(st, [=] { std::memcpy(dst, src, n); }, "cudaMemcpyAsync");
  }
  if (hostSrc && !isPinned(src, n)) {
    // pageable source: staged at once
    auto buf = std::make_shared<std::vector<char>>(static_cast<const char *>(src),
                                                   static_cast<const char *>(src) + n);
    return setErr(enqueue(st, [=] { std::memcpy(dst, buf->data(), n); }, "cudaMemcpyAsync"));
  }
  if (hostDst && !isPinned(dst, n)) {
    // pageable destination: returns once the copy is done
    enqueue(st, [=] { std::memcpy(dst, src, n); }, "cudaMemcpyAsync");
    flush(s);
    return setErr(g_sticky);
  }
  return setErr(enqueue(st, [=] { std::memcpy(dst, src, n); }, "cudaMemcpyAsync"));
}
EXPORT cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k) {
  LOCK;
  STICKY;
  if (captureForbids("cudaMemcpy"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  if (cudaError_t e = checkCopy(dst, src, n, k, "cudaMemcpy"))
    return setErr(e);
  // the legacy default stream: ordered after the default stream's (and blocking streams') work
  flush(&g_defaultStream);
  for (auto *o : g_streams)
    if (!(o->flags & cudaStreamNonBlocking))
      flush(o);
  bool pageableH2D = n && (k == cudaMemcpyHostToDevice ||
                           (k == cudaMemcpyDefault && !isDev(src, 1) && isDev(dst, 1))) &&
                     !isPinned(src, n);
  if (pageableH2D) {
    // CUDA: "the function will return once the pageable buffer has been
    // copied to the staging memory for DMA transfer to device memory, but the
    // DMA to final destination may not have completed": staged now, landed
    // at the legacy stream's next synchronisation point. A kernel on a
    // non-blocking stream that reads dst without waiting sees the 0xFF fill.
    auto buf = std::make_shared<std::vector<char>>(static_cast<const char *>(src),
                                                   static_cast<const char *>(src) + n);
    return setErr(enqueue(nullptr, [=] { std::memcpy(dst, buf->data(), n); }, "cudaMemcpy"));
  }
  if (n)
    std::memcpy(dst, src, n);
  return setErr(g_sticky);
}
EXPORT cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                                     size_t width, size_t height, cudaMemcpyKind k,
                                     cudaStream_t st) {
  LOCK;
  STICKY;
  if (width > dpitch || width > spitch)
    return setErr(cudaErrorInvalidPitchValue);
  if (height == 0 || width == 0)
    return cudaSuccess;
  size_t dspan = dpitch * (height - 1) + width, sspan = spitch * (height - 1) + width;
  if ((k == cudaMemcpyDeviceToDevice || k == cudaMemcpyHostToDevice) && !isDev(dst, dspan)) {
    emuFatal("cudaMemcpy2DAsync dst outside an allocation");
    return setErr(cudaErrorInvalidValue);
  }
  if ((k == cudaMemcpyDeviceToDevice || k == cudaMemcpyDeviceToHost) && !isDev(src, sspan)) {
    emuFatal("cudaMemcpy2DAsync src outside an allocation");
    return setErr(cudaErrorInvalidValue);
  }
  if (k != cudaMemcpyDeviceToDevice) {
    emuFatal("cudaMemcpy2DAsync: only device-to-device is emulated");
    return setErr(cudaErrorNotSupported);
  }
  return setErr(enqueue(
      st,
      [=] {
        for (size_t r = 0; r < height; ++r)
          std::memmove(static_cast<char *>(dst) + r * dpitch,
                       static_cast<const char *>(src) + r * spitch, width);
      },
      "cudaMemcpy2DAsync"));
}
EXPORT cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st) {
  LOCK;
  STICKY;
  if (n && !isDev(p, n)) {
    emuFatal("cudaMemsetAsync(%p, %zu bytes) outside any device allocation", p, n);
    return setErr(cudaErrorInvalidValue);
  }
  if (!n)
    return cudaSuccess;
  return setErr(enqueue(st, [=] { std::memset(p, v, n); }, "cudaMemsetAsync"));
}
EXPORT cudaError_t cudaMemset(void *p, int v, size_t n) {
  LOCK;
  STICKY;
  if (captureForbids("cudaMemset"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  if (n && !isDev(p, n)) {
    emuFatal("cudaMemset(%p, %zu bytes) outside any device allocation", p, n);
    return setErr(cudaErrorInvalidValue);
  }
  flush(&g_defaultStream);
  for (auto *o : g_streams)
    if (!(o->flags & cudaStreamNonBlocking))
      flush(o);
  std::memset(p, v, n);
  return cudaSuccess;
}

// Streams
EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
  LOCK;
  auto *st = new CUstream_st;
  st->flags = flags;
  g_streams.insert(st);
  *s = st;
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s) {
  LOCK;
  if (!g_streams.count(s))
    return setErr(cudaErrorInvalidResourceHandle);
  flush(s); // pending work completes
  g_streams.erase(s);
  delete s;
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t st) {
  LOCK;
  CUstream_st *s = S(st);
  if (s->capturing) {
    emuFatal("cudaStreamSynchronize of a capturing stream (a GPU fails it and invalidates the capture)");
    s->captureInvalid = true;
    return setErr(cudaErrorStreamCaptureUnsupported);
  }
  if (captureForbids("cudaStreamSynchronize"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  flush(s);
  return setErr(g_sticky);
}
EXPORT cudaError_t cudaDeviceSynchronize(void) {
  LOCK;
  if (captureForbids("cudaDeviceSynchronize"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  flushAll();
  return setErr(g_sticky);
}
EXPORT cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode) {
  LOCK;
  STICKY;
  CUstream_st *s = S(st);
  if (s->isDefault || st == nullptr)
    emuFatal("cudaStreamBeginCapture on the legacy default stream");
  if (s->capturing)
    emuFatal("cudaStreamBeginCapture on a stream that is capturing already");
  if (g_verbose)
    emuMsg("cudaStreamBeginCapture(mode %d)", (int)mode);
  s->capturing = true;
  s->captureInvalid = false;
  s->mode = mode;
  s->graph = new CUgraph_st;
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *g) {
  LOCK;
  CUstream_st *s = S(st);
  if (!s->capturing)
    emuFatal("cudaStreamEndCapture on a stream that is not capturing");
  s->capturing = false;
  if (s->captureInvalid) {
    delete s->graph;
    s->graph = nullptr;
    *g = nullptr;
    return setErr(cudaErrorStreamCaptureInvalidated);
  }
  *g = s->graph;
  if (g_verbose)
    emuMsg("cudaStreamEndCapture: %zu nodes", s->graph->ops.size());
  s->graph = nullptr;
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus *status) {
  CUstream_st *s = S(st);
  *status = !s->capturing ? cudaStreamCaptureStatusNone
            : s->captureInvalid ? cudaStreamCaptureStatusInvalidated
                                : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
  LOCK;
  if (!g)
    return setErr(cudaErrorInvalidValue);
  auto *x = new CUgraphExec_st;
  x->ops = g->ops; // kernel arguments were copied at capture
  *e = x;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  LOCK;
  delete g;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  LOCK;
  delete e;
  return cudaSuccess;
}
EXPORT cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t st) {
  LOCK;
  STICKY;
  if (!e)
    return setErr(cudaErrorInvalidValue);
  CUstream_st *s = S(st);
  if (s->capturing)
    emuFatal("cudaGraphLaunch into a capturing stream (not emulated)");
  if (g_verbose)
    emuMsg("cudaGraphLaunch: %zu nodes", e->ops.size());
  for (auto &op : e->ops)
    enqueue(st, op.fn, "graph node");
  return cudaSuccess;
}

// Events
EXPORT cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
  LOCK;
  *e = new CUevent_st;
  (*e)->flags = flags;
  return cudaSuccess;
}
EXPORT cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
EXPORT cudaError_t cudaEventDestroy(cudaEvent_t e) {
  LOCK;
  if (!e)
    return setErr(cudaErrorInvalidResourceHandle);
  // an event may be destroyed while its record is pending: the record is harmless
  // (the op below holds a shared flag, not the event)
  e->flags |= 0x80000000u;
  return cudaSuccess; // leaked on purpose: pending records refer to it
}
EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st) {
  LOCK;
  STICKY;
  if (!e)
    return setErr(cudaErrorInvalidResourceHandle);
  CUstream_st *s = S(st);
  if (s->capturing) {
    e->captured = true; // a captured record: only for waits inside the capture
    return cudaSuccess;
  }
  e->captured = false;
  e->recorded = true;
  e->complete = false;
  e->queriedOnce = false;
  e->stream = s;
  uint64_t seq = ++e->seq;
  return setErr(enqueue(
      st,
      [e, seq] {
        if (e->seq == seq) {
          e->complete = true;
          g_clock += 0.125;
          e->time = g_clock;
        }
      },
      "cudaEventRecord"));
}
EXPORT cudaError_t cudaEventQuery(cudaEvent_t e) {
  LOCK;
  if (captureForbids("cudaEventQuery"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  if (e->captured)
    emuFatal("cudaEventQuery of an event recorded during a capture");
  if (!e->recorded || e->complete)
    return g_sticky != cudaSuccess ? setErr(g_sticky) : cudaSuccess;
  // not yet: the GPU makes progress; the first query says "not ready"
  flush(e->stream);
  if (!e->queriedOnce) {
    e->queriedOnce = true;
    return cudaErrorNotReady;
  }
  return g_sticky != cudaSuccess ? setErr(g_sticky) : cudaSuccess;
}
EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  LOCK;
  if (captureForbids("cudaEventSynchronize"))
    return setErr(cudaErrorStreamCaptureUnsupported);
  if (e->recorded && !e->complete)
    flush(e->stream);
  return setErr(g_sticky);
}
EXPORT cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  LOCK;
  if ((a->flags & cudaEventDisableTiming) || (b->flags & cudaEventDisableTiming))
    return setErr(cudaErrorInvalidResourceHandle);
  if (!a->recorded || !b->recorded)
    return setErr(cudaErrorInvalidResourceHandle);
  if (!a->complete || !b->complete)
    return setErr(cudaErrorNotReady);
  *ms = static_cast<float>(b->time - a->time);
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t e, unsigned) {
  LOCK;
  STICKY;
  CUstream_st *s = S(st);
  if (e->recorded && !e->complete && e->stream != s)
    flush(e->stream); // the waiting stream's later work runs after it
  return cudaSuccess;
}

EXPORT const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
  case cudaErrorLaunchFailure: return "unspecified launch failure";
  case cudaErrorNotReady: return "device not ready";
  case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
  case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
  case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
  case cudaErrorInvalidResourceHandle: return "invalid resource handle";
  case cudaErrorInvalidDevice: return "invalid device ordinal";
  case cudaErrorNotSupported: return "operation not supported";
  case cudaErrorInvalidPitchValue: return "invalid pitch argument";
  default: return "emulated CUDA error";
  }
}
EXPORT const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

// nvcc registration entry points (unused by the C++-compiled kernels)
EXPORT void **__cudaRegisterFatBinary(void *) { return nullptr; }
EXPORT void __cudaRegisterFatBinaryEnd(void **) {}
EXPORT void __cudaUnregisterFatBinary(void **) {}

//===----------------------------------------------------------------------===//
// cuBLAS / cuBLASLt
//===----------------------------------------------------------------------===//
struct cublasContext {
  cudaStream_t stream = nullptr;
  void *ws = nullptr;
  size_t wsBytes = 0;
  cublasPointerMode_t pm = CUBLAS_POINTER_MODE_HOST;
};
struct cublasLtContext {
  int dummy;
};

static double loadElem(const void *p, cudaDataType t, int64_t i) {
  switch (t) {
  case CUDA_R_32F: return static_cast<const float *>(p)[i];
  case CUDA_R_64F: return static_cast<const double *>(p)[i];
  case CUDA_R_16F: return __half2float(static_cast<const __half *>(p)[i]);
  case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
  default: abort();
  }
}
static void storeElem(void *p, cudaDataType t, int64_t i, double v) {
  switch (t) {
  case CUDA_R_32F: static_cast<float *>(p)[i] = static_cast<float>(v); break;
  case CUDA_R_64F: static_cast<double *>(p)[i] = v; break;
  case CUDA_R_16F: static_cast<__half *>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
  case CUDA_R_16BF:
    static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(static_cast<float>(v));
    break;
  default: abort();
  }
}
static size_t elemSize(cudaDataType t) {
  switch (t) {
  case CUDA_R_32F: return 4;
  case CUDA_R_64F: return 8;
  case CUDA_R_16F: return 2;
  case CUDA_R_16BF: return 2;
  default: return 0;
  }
}

struct GemmArgs {
  bool ta, tb;
  int m, n, k;
  double alpha, beta;
  const void *A;
  int64_t lda, sA;
  const void *B;
  int64_t ldb, sB;
  const void *C;
  int64_t ldc, sC;
  void *D;
  int64_t ldd, sD;
  cudaDataType tA, tB, tC, tD;
  int batch;
  const void *bias = nullptr; // per row of D (length m)
  cudaDataType tBias = CUDA_R_32F;
};
/// Column-major D = alpha op(A) op(B) + beta C (+ bias[row]).
static void gemmRun(const GemmArgs &g) {
  for (int b = 0; b < g.batch; ++b)
    for (int j = 0; j < g.n; ++j)
      for (int i = 0; i < g.m; ++i) {
        double acc = 0;
        for (int p = 0; p < g.k; ++p) {
          int64_t ia = g.ta ? (p + int64_t(i) * g.lda) : (i + int64_t(p) * g.lda);
          int64_t ib = g.tb ? (j + int64_t(p) * g.ldb) : (p + int64_t(j) * g.ldb);
          acc += loadElem(g.A, g.tA, b * g.sA + ia) * loadElem(g.B, g.tB, b * g.sB + ib);
        }
        double v = g.alpha * acc;
        if (g.beta != 0)
          v += g.beta * loadElem(g.C, g.tC, b * g.sC + i + int64_t(j) * g.ldc);
        if (g.bias)
          v += loadElem(g.bias, g.tBias, i);
        storeElem(g.D, g.tD, b * g.sD + i + int64_t(j) * g.ldd, v);
      }
}
static bool checkMat(const void *p, cudaDataType t, int64_t rows, int64_t cols, int64_t ld,
                     int64_t stride, int batch, const char *what) {
  if (ld < std::max<int64_t>(1, rows)) {
    emuFatal("%s: ld %lld < rows %lld", what, (long long)ld, (long long)rows);
    return false;
  }
  size_t es = elemSize(t);
  int64_t span = (cols - 1) * ld + rows + int64_t(batch - 1) * stride;
  if (!isDev(p, span * es)) {
    emuFatal("%s: matrix [%lld x %lld, ld %lld, stride %lld, batch %d] at %p is outside "
           "any device allocation",
           what, (long long)rows, (long long)cols, (long long)ld, (long long)stride, batch, p);
    return false;
  }
  return true;
}
static double scalarOf(const void *p, bool f64) {
  return f64 ? *static_cast<const double *>(p) : *static_cast<const float *>(p);
}
static bool computeIs64(cublasComputeType_t c) {
  return c == CUBLAS_COMPUTE_64F || c == CUBLAS_COMPUTE_64F_PEDANTIC;
}

EXPORT cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t n) {
  LOCK;
  if (n && !isDev(ws, n)) {
    emuFatal("cublasSetWorkspace: %zu bytes at %p not device memory", n, ws);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  h->ws = ws;
  h->wsBytes = n;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
EXPORT cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t m) {
  h->pm = m;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT const char *cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
  default: return "CUBLAS_STATUS_(emulated error)";
  }
}

static cublasStatus_t gemmCommon(cublasHandle_t h, GemmArgs g, const void *alpha,
                                 const void *beta, cublasComputeType_t compute, const char *what) {
  LOCK;
  if (g_sticky != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  if (h->pm != CUBLAS_POINTER_MODE_HOST) {
    emuFatal("%s: device pointer mode not emulated", what);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (elemSize(g.tA) == 0 || elemSize(g.tC) == 0)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  bool f64 = computeIs64(compute);
  if (f64 != (g.tA == CUDA_R_64F)) {
    emuFatal("%s: compute type %d with data type %d", what, (int)compute, (int)g.tA);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  g.alpha = scalarOf(alpha, f64);
  g.beta = scalarOf(beta, f64);
  if (g.m == 0 || g.n == 0 || g.batch == 0)
    return CUBLAS_STATUS_SUCCESS;
  int64_t ra = g.ta ? g.k : g.m, ca = g.ta ? g.m : g.k;
  int64_t rb = g.tb ? g.n : g.k, cb = g.tb ? g.k : g.n;
  bool ok = true;
  if (g.k > 0) {
    ok = ok && checkMat(g.A, g.tA, ra, ca, g.lda, g.sA, g.batch, what);
    ok = ok && checkMat(g.B, g.tB, rb, cb, g.ldb, g.sB, g.batch, what);
  }
  ok = ok && checkMat(g.D, g.tD, g.m, g.n, g.ldd, g.sD, g.batch, what);
  if (g.beta != 0)
    ok = ok && checkMat(g.C, g.tC, g.m, g.n, g.ldc, g.sC, g.batch, what);
  if (!ok)
    return CUBLAS_STATUS_INVALID_VALUE;
  cudaError_t e = enqueue(h->stream, [g] { gemmRun(g); }, what);
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

EXPORT cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha, const void *A,
                                   cudaDataType tA, int lda, const void *B, cudaDataType tB,
                                   int ldb, const void *beta, void *C, cudaDataType tC, int ldc,
                                   cublasComputeType_t compute, cublasGemmAlgo_t) {
  GemmArgs g{};
  g.ta = ta != CUBLAS_OP_N;
  g.tb = tb != CUBLAS_OP_N;
  g.m = m, g.n = n, g.k = k;
  g.A = A, g.lda = lda, g.sA = 0, g.tA = tA;
  g.B = B, g.ldb = ldb, g.sB = 0, g.tB = tB;
  g.C = C, g.ldc = ldc, g.sC = 0, g.tC = tC;
  g.D = C, g.ldd = ldc, g.sD = 0, g.tD = tC;
  g.batch = 1;
  return gemmCommon(h, g, alpha, beta, compute, "cublasGemmEx");
}
EXPORT cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType tA, int lda, long long sA, const void *B,
    cudaDataType tB, int ldb, long long sB, const void *beta, void *C, cudaDataType tC, int ldc,
    long long sC, int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
  GemmArgs g{};
  g.ta = ta != CUBLAS_OP_N;
  g.tb = tb != CUBLAS_OP_N;
  g.m = m, g.n = n, g.k = k;
  g.A = A, g.lda = lda, g.sA = sA, g.tA = tA;
  g.B = B, g.ldb = ldb, g.sB = sB, g.tB = tB;
  g.C = C, g.ldc = ldc, g.sC = sC, g.tC = tC;
  g.D = C, g.ldd = ldc, g.sD = sC, g.tD = tC;
  g.batch = batch;
  return gemmCommon(h, g, alpha, beta, compute, "cublasGemmStridedBatchedEx");
}

struct LtDesc {
  uint32_t magic;
  cublasComputeType_t compute;
  cudaDataType scale;
  int32_t transA, transB, transC;
  uint32_t epilogue;
  const void *bias;
  int32_t biasType; // -1: default
  int64_t biasBatchStride;
};
struct LtLayout {
  uint32_t magic;
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t order;
  int32_t batch;
  int64_t stride;
};
struct LtPref {
  uint32_t magic;
  uint64_t maxWs;
};
static_assert(sizeof(LtDesc) <= sizeof(cublasLtMatmulDescOpaque_t), "desc");
static_assert(sizeof(LtLayout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "layout");
static_assert(sizeof(LtPref) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "pref");

EXPORT cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t d, size_t size,
                                                      cublasComputeType_t compute,
                                                      cudaDataType_t scale) {
  if (size < sizeof(LtDesc))
    return CUBLAS_STATUS_INVALID_VALUE;
  LtDesc *x = reinterpret_cast<LtDesc *>(d);
  *x = LtDesc{0x11, compute, scale, CUBLAS_OP_N, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT,
              nullptr, -1, 0};
  return CUBLAS_STATUS_SUCCESS;
}
template <class T> static bool getAttr(T &out, const void *buf, size_t n) {
  if (n != sizeof(T))
    return false;
  std::memcpy(&out, buf, n);
  return true;
}
EXPORT cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                                     cublasLtMatmulDescAttributes_t a,
                                                     const void *buf, size_t n) {
  LtDesc *x = reinterpret_cast<LtDesc *>(d);
  if (x->magic != 0x11)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  bool ok = true;
  switch (a) {
  case CUBLASLT_MATMUL_DESC_TRANSA: ok = getAttr(x->transA, buf, n); break;
  case CUBLASLT_MATMUL_DESC_TRANSB: ok = getAttr(x->transB, buf, n); break;
  case CUBLASLT_MATMUL_DESC_TRANSC: ok = getAttr(x->transC, buf, n); break;
  case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = getAttr(x->epilogue, buf, n); break;
  case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = getAttr(x->bias, buf, n); break;
  case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: ok = getAttr(x->biasType, buf, n); break;
  case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: ok = getAttr(x->biasBatchStride, buf, n); break;
  default:
    emuFatal("cublasLtMatmulDescSetAttribute: attribute %d not emulated", (int)a);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
EXPORT cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t l, size_t size,
                                                        cudaDataType type, uint64_t rows,
                                                        uint64_t cols, int64_t ld) {
  if (size < sizeof(LtLayout))
    return CUBLAS_STATUS_INVALID_VALUE;
  LtLayout *x = reinterpret_cast<LtLayout *>(l);
  *x = LtLayout{0x22, type, rows, cols, ld, CUBLASLT_ORDER_COL, 1, 0};
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                       cublasLtMatrixLayoutAttribute_t a,
                                                       const void *buf, size_t n) {
  LtLayout *x = reinterpret_cast<LtLayout *>(l);
  bool ok = true;
  switch (a) {
  case CUBLASLT_MATRIX_LAYOUT_ORDER: ok = getAttr(x->order, buf, n); break;
  case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ok = getAttr(x->batch, buf, n); break;
  case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: ok = getAttr(x->stride, buf, n); break;
  default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
EXPORT cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t p,
                                                            size_t size) {
  if (size < sizeof(LtPref))
    return CUBLAS_STATUS_INVALID_VALUE;
  *reinterpret_cast<LtPref *>(p) = LtPref{0x33, 0};
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                           cublasLtMatmulPreferenceAttributes_t a,
                                                           const void *buf, size_t n) {
  LtPref *x = reinterpret_cast<LtPref *>(p);
  if (x->magic != 0x33)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  switch (a) {
  case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
    return getAttr(x->maxWs, buf, n) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
  case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
    return n == 4 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  default: return CUBLAS_STATUS_SUCCESS;
  }
}

static bool ltShapes(const LtDesc *d, const LtLayout *a, const LtLayout *b, const LtLayout *c,
                     const LtLayout *dd, int64_t &m, int64_t &n, int64_t &k, const char **why) {
  int64_t am = d->transA == CUBLAS_OP_N ? a->rows : a->cols;
  int64_t ak = d->transA == CUBLAS_OP_N ? a->cols : a->rows;
  int64_t bk = d->transB == CUBLAS_OP_N ? b->rows : b->cols;
  int64_t bn = d->transB == CUBLAS_OP_N ? b->cols : b->rows;
  m = am, n = bn, k = ak;
  if (ak != bk) {
    *why = "op(A) cols != op(B) rows";
    return false;
  }
  if ((int64_t)c->rows != m || (int64_t)c->cols != n || (int64_t)dd->rows != m ||
      (int64_t)dd->cols != n) {
    *why = "C/D shape != op(A) x op(B)";
    return false;
  }
  for (const LtLayout *l : {a, b, c, dd})
    if (l->order != CUBLASLT_ORDER_COL || l->ld < (int64_t)l->rows || l->type != a->type) {
      *why = "layout order/ld/type";
      return false;
    }
  return true;
}

EXPORT cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t *res,
    int *found) {
  const LtDesc *x = reinterpret_cast<const LtDesc *>(desc);
  int64_t m, n, k;
  const char *why = "";
  *found = 0;
  if (requested < 1)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!ltShapes(x, reinterpret_cast<LtLayout *>(a), reinterpret_cast<LtLayout *>(b),
                reinterpret_cast<LtLayout *>(c), reinterpret_cast<LtLayout *>(d), m, n, k, &why)) {
    emuFatal("cublasLtMatmulAlgoGetHeuristic: %s", why);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  std::memset(res, 0, sizeof(*res));
  res->algo.data[0] = 0xA160;
  res->workspaceSize = 0;
  res->state = CUBLAS_STATUS_SUCCESS;
  res->wavesCount = 1.0f;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc,
                                     const void *alpha, const void *A, cublasLtMatrixLayout_t la,
                                     const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                                     const void *C, cublasLtMatrixLayout_t lc, void *D,
                                     cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t *algo,
                                     void *ws, size_t wsBytes, cudaStream_t stream) {
  LOCK;
  if (g_sticky != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  const LtDesc *x = reinterpret_cast<const LtDesc *>(desc);
  const LtLayout *a = reinterpret_cast<LtLayout *>(la), *b = reinterpret_cast<LtLayout *>(lb),
                 *c = reinterpret_cast<LtLayout *>(lc), *d = reinterpret_cast<LtLayout *>(ld);
  int64_t m, n, k;
  const char *why = "";
  if (!ltShapes(x, a, b, c, d, m, n, k, &why)) {
    emuFatal("cublasLtMatmul: %s", why);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (algo && algo->data[0] != 0xA160) {
    emuFatal("cublasLtMatmul: algo not from the heuristic");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (wsBytes && !isDev(ws, wsBytes)) {
    emuFatal("cublasLtMatmul: workspace not device memory");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  bool f64 = computeIs64(x->compute);
  if ((x->scale == CUDA_R_64F) != f64) {
    emuFatal("cublasLtMatmul: scale type %d with compute %d", (int)x->scale, (int)x->compute);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  GemmArgs g{};
  g.ta = x->transA != CUBLAS_OP_N;
  g.tb = x->transB != CUBLAS_OP_N;
  g.m = m, g.n = n, g.k = k;
  g.alpha = scalarOf(alpha, f64);
  g.beta = scalarOf(beta, f64);
  g.A = A, g.lda = a->ld, g.sA = a->stride, g.tA = a->type;
  g.B = B, g.ldb = b->ld, g.sB = b->stride, g.tB = b->type;
  g.C = C, g.ldc = c->ld, g.sC = c->stride, g.tC = c->type;
  g.D = D, g.ldd = d->ld, g.sD = d->stride, g.tD = d->type;
  g.batch = d->batch;
  if (x->epilogue == CUBLASLT_EPILOGUE_BIAS) {
    if (!x->bias) {
      emuFatal("cublasLtMatmul: BIAS epilogue without a bias pointer");
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    g.bias = x->bias;
    g.tBias = x->biasType >= 0 ? (cudaDataType)x->biasType : d->type;
    if (!isDev(g.bias, m * elemSize(g.tBias))) {
      emuFatal("cublasLtMatmul: bias [%lld] not in device memory", (long long)m);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  } else if (x->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    emuFatal("cublasLtMatmul: epilogue %u not emulated", x->epilogue);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  bool ok = true;
  if (k > 0) {
    ok = ok && checkMat(A, a->type, a->rows, a->cols, a->ld, a->stride, a->batch, "cublasLtMatmul A");
    ok = ok && checkMat(B, b->type, b->rows, b->cols, b->ld, b->stride, b->batch, "cublasLtMatmul B");
  }
  ok = ok && checkMat(D, d->type, d->rows, d->cols, d->ld, d->stride, d->batch, "cublasLtMatmul D");
  if (g.beta != 0)
    ok = ok && checkMat(C, c->type, c->rows, c->cols, c->ld, c->stride, c->batch, "cublasLtMatmul C");
  if (!ok)
    return CUBLAS_STATUS_INVALID_VALUE;
  cudaError_t e = enqueue(stream, [g] { gemmRun(g); }, "cublasLtMatmul");
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

//===----------------------------------------------------------------------===//
// NCCL (world size 1)
//===----------------------------------------------------------------------===//
struct ncclComm {
  int nranks;
};
static size_t ncclSize(ncclDataType_t t) {
  switch (t) {
  case ncclInt8: case ncclUint8: return 1;
  case ncclFloat16: case ncclBfloat16: return 2;
  case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
  case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  default: return 0;
  }
}
EXPORT ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
  std::memset(id, 0, sizeof(*id));
  return ncclSuccess;
}
EXPORT ncclResult_t ncclCommInitRank(ncclComm_t *c, int nranks, ncclUniqueId, int rank) {
  if (nranks != 1 || rank != 0) {
    emuFatal("ncclCommInitRank: only world size 1 is emulated (asked %d ranks)", nranks);
    return ncclInvalidUsage;
  }
  *c = new ncclComm{1};
  return ncclSuccess;
}
EXPORT ncclResult_t ncclCommDestroy(ncclComm_t c) {
  delete c;
  return ncclSuccess;
}
EXPORT ncclResult_t ncclCommAbort(ncclComm_t c) {
  delete c;
  return ncclSuccess;
}
EXPORT ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t *r) {
  *r = ncclSuccess;
  return ncclSuccess;
}
EXPORT const char *ncclGetErrorString(ncclResult_t r) {
  return r == ncclSuccess ? "no error" : "emulated NCCL error";
}
static ncclResult_t ncclCopy(const void *s, void *d, size_t count, ncclDataType_t t,
                             cudaStream_t st, const char *what) {
  LOCK;
  size_t n = count * ncclSize(t);
  if (!ncclSize(t))
    return ncclInvalidArgument;
  if (n && (!isDev(s, n) || !isDev(d, n))) {
    emuFatal("%s: buffers outside device allocations", what);
    return ncclInvalidArgument;
  }
  if (s != d && n)
    enqueue(st, [=] { std::memmove(d, s, n); }, what);
  return ncclSuccess;
}
EXPORT ncclResult_t ncclAllReduce(const void *s, void *d, size_t count, ncclDataType_t t, ncclRedOp_t,
                                  ncclComm_t, cudaStream_t st) {
  return ncclCopy(s, d, count, t, st, "ncclAllReduce");
}
EXPORT ncclResult_t ncclAllGather(const void *s, void *d, size_t count, ncclDataType_t t, ncclComm_t,
                                  cudaStream_t st) {
  return ncclCopy(s, d, count, t, st, "ncclAllGather");
}
EXPORT ncclResult_t ncclReduceScatter(const void *s, void *d, size_t count, ncclDataType_t t,
                                      ncclRedOp_t, ncclComm_t, cudaStream_t st) {
  return ncclCopy(s, d, count, t, st, "ncclReduceScatter");
}

static struct Init {
  Init() { g_defaultStream.isDefault = true; }
} g_init;
