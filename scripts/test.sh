#!/usr/bin/env bash
# QuintNet's test command: install what is missing, build, run every test
# (GoogleTest units, lit + FileCheck compiler tests, end-to-end runs on N CPU
# ranks against ONNX Runtime), then build again with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/, without the CUDA device) and run the
# same tests under them.
# QN_SKIP_SANITIZERS=1 skips the second pass. Extra arguments go to ctest.
# Run from anywhere: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)

echo "== build/ (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" "$@")

if [ "${QN_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer)"
  # Without the CUDA device: the Release pass compiles it already, GPU code
  # cannot run under the sanitizers here, and this pass covers the build
  # that has no CUDA (its messages and skips) as well.
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQN_SANITIZE=ON -DQN_CUDA=OFF
  cmake --build build-asan -j"$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" "$@")
fi
