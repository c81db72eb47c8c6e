//===- Driver.h - qn-compile's command line -------------------*- C++ -*-===//
#pragma once

namespace qn {
/// The whole of qn-compile: parses the command line, imports, partitions,
/// verifies and writes the plan (or prints the annotated graph). Returns the
/// process exit code.
int compilerMain(int argc, char **argv);
} // namespace qn
