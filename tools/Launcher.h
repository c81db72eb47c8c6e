//===- Launcher.h - spawn the rank processes of a job -----------*- C++ -*-===//
#pragma once

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace qn::tools {

/// Spawns `n` copies of this program (found from `argv0`) with arguments
/// `args` as ranks 0..n-1 of one job on this host (torchrun's environment:
/// RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1,
/// MASTER_PORT a free port; OPENBLAS_NUM_THREADS and OMP_NUM_THREADS
/// `threadsPerRank`; QN_LAUNCHED=1) and waits for them. When one fails the
/// others are stopped (SIGTERM) and the error names the first that failed.
llvm::Error launchRanks(const char *argv0, llvm::ArrayRef<std::string> args, int n,
                        int threadsPerRank);

} // namespace qn::tools
