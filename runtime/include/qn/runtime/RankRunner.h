//===- Driver.h - qn-run's command line ------------------------*- C++ -*-===//
#pragma once

namespace qn::rt {
/// The whole of qn-run: launches the ranks (or runs as one rank when started
/// with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT), runs the plan, writes the
/// outputs. Returns the process exit code.
int runnerMain(int argc, char **argv);
} // namespace qn::rt
