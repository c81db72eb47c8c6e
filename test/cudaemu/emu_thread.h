//===- emu_thread.h - The emulated CUDA thread's coordinates -----*- C++ -*-===//
//
// Shared by emu_cuda.h (the device dialect of the generated kernels) and
// emu_runtime.cpp (which runs them, one fiber per CUDA thread, and cannot
// include emu_cuda.h: its macros would clash with the CUDA structs there).
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cuda_runtime.h>

namespace qn_emu {
struct ThreadState {
  uint3 tid;
  uint3 bid;
  dim3 bdim;
  dim3 gdim;
  int linear; // linear thread index within the block
};
/// The CUDA thread the calling fiber runs (set by the launcher).
extern thread_local ThreadState *g_cur;
} // namespace qn_emu
