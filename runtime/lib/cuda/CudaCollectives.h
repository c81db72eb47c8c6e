//===- CudaCollectives.h - Device kernels of the collectives ----*- C++ -*-===//
//
// POD launchers (no LLVM / ONNX): shared by CudaCollectives.cpp and the .cu.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace qn::rt::cuda {

constexpr int kMaxLocalRanks = 16;

/// out[o*blk + j] = sum over r < n (in rank order) of ins[r][o*pitch + offset
/// + j] (float accumulation for half types). false: dtype not supported.
bool launchSumRanks(void *out, const void *const *ins, int n, int64_t outer, int64_t blk,
                    int64_t pitch, int64_t offset, int32_t dtype, cudaStream_t stream,
                    cudaError_t &err);

} // namespace qn::rt::cuda
