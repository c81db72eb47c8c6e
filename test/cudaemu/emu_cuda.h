//===- emu_cuda.h - the CUDA device dialect on the CPU (force-included) ---===//
//
// Part of the CPU emulator of the CUDA device (test/cudaemu/, see
// emu_runtime.cpp). Force-included (-include emu_cuda.h) into the C++ that
// cu2cpp.py generates from runtime/lib/cuda/*.cu, so that the device code
// compiles with the host compiler: threadIdx/blockIdx/blockDim/gridDim (the
// running fiber's), __syncthreads, the warp shuffles (a warp-wide exchange that
// checks its mask against the live lanes), atomics, the intrinsics the kernels
// use. Kernel launches are rewritten by cu2cpp.py into qn_emu::launch.
//
// Limits: __shared__ is `static thread_local` (one copy per OS thread, shared by
// the fibers of the running block, never poisoned: reads of uninitialised
// shared memory go unnoticed); no dynamic (extern) shared memory; the fibers
// are cooperative, so atomics are plain read-modify-writes and data races
// cannot show; float math is the host's libm (__expf is expf), not the GPU's
// approximations. Only what the kernels of runtime/lib/cuda use is provided: a
// new intrinsic is a compile error here, to be added.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <functional>

#define QN_EMU_CUDACC 1
#undef __shared__
#define __shared__ static thread_local
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#include "emu_thread.h"

namespace qn_emu {
cudaError_t launchImpl(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, int bound,
                       const char *name, std::function<void()> body);
template <class F>
inline cudaError_t launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, int bound,
                          const char *name, F &&f) {
  return launchImpl(grid, block, shmem, stream, bound, name, std::function<void()>(std::forward<F>(f)));
}
void syncthreads();
// Warp exchange: every lane of the warp publishes 8 bytes and reads lane `src`'s.
uint64_t warpExchange(unsigned mask, uint64_t v, int srcLane, int width, const char *what);
} // namespace qn_emu

#define threadIdx (::qn_emu::g_cur->tid)
#define blockIdx (::qn_emu::g_cur->bid)
#define blockDim (::qn_emu::g_cur->bdim)
#define gridDim (::qn_emu::g_cur->gdim)
#define warpSize 32

inline void __syncthreads() { ::qn_emu::syncthreads(); }

namespace qn_emu {
/// Lane `src`'s value of v (8 bytes at most) in this lane's warp.
template <class T> inline T shuffleFrom(unsigned mask, T v, int src, int width, const char *what) {
  static_assert(sizeof(T) <= 8, "shuffle of a type over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  uint64_t r = warpExchange(mask, bits, src, width, what);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}
inline int laneId() { return g_cur->linear & 31; }
} // namespace qn_emu

// A source lane outside this lane's width-segment gives the lane's own value.
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
  int lane = ::qn_emu::laneId(), src = lane ^ laneMask;
  if ((src / width) != (lane / width))
    src = lane;
  return ::qn_emu::shuffleFrom(mask, v, src, width, "__shfl_xor_sync");
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  int lane = ::qn_emu::laneId(), src = lane + static_cast<int>(delta);
  if ((src / width) != (lane / width))
    src = lane;
  return ::qn_emu::shuffleFrom(mask, v, src, width, "__shfl_down_sync");
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int srcLane, int width = 32) {
  int lane = ::qn_emu::laneId(), src = (lane / width) * width + (srcLane % width);
  return ::qn_emu::shuffleFrom(mask, v, src, width, "__shfl_sync");
}

// Fibers are cooperative: a plain read-modify-write is atomic.
// QN_EMU_MUTATE_NOFAULT=1 (negative control, emu_runtime.cpp) makes the int
// atomicCAS a no-op: the fault words of CudaFault.h are never set.
namespace qn_emu { extern bool g_mutateNoAtomics; }
inline int atomicCAS(int *a, int c, int v) { int o = *a; if (o == c && !::qn_emu::g_mutateNoAtomics) *a = v; return o; }
inline unsigned atomicCAS(unsigned *a, unsigned c, unsigned v) { unsigned o = *a; if (o == c) *a = v; return o; }
inline unsigned long long atomicCAS(unsigned long long *a, unsigned long long c, unsigned long long v) {
  unsigned long long o = *a; if (o == c) *a = v; return o;
}
template <class T> inline T atomicAdd(T *a, T v) { T o = *a; *a = o + v; return o; }
template <class T> inline T atomicMax(T *a, T v) { T o = *a; if (v > o) *a = v; return o; }
template <class T> inline T atomicMin(T *a, T v) { T o = *a; if (v < o) *a = v; return o; }
template <class T> inline T atomicExch(T *a, T v) { T o = *a; *a = v; return o; }

inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
template <class T> inline T __ldg(const T *p) { return *p; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
using std::isnan;
using std::isinf;
using std::isfinite;
using std::signbit;
