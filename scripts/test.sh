#!/usr/bin/env bash
# QuintNet's test command: install what is missing, build, run every test
# (GoogleTest units, lit + FileCheck compiler tests, end-to-end runs on N CPU
# ranks against ONNX Runtime). GPU tests (label "gpu") report as skipped where
# no GPU is present.
# Run from anywhere: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
