#!/usr/bin/env bash
# QuintNet demo: install dependencies, build, run the MNIST-shaped MLP with
# tensor parallelism 2 on the CPU, and compare with the unpartitioned model
# (onnxruntime, and QuintNet with --tp 1). Exits non-zero if the tp=2 output
# differs by more than the normwise bound max|diff| <= 1e-5 * max|ref|.
# Run from anywhere: bash scripts/demo.sh
# QN_SKIP_BUILD=1 skips install and build (uses the existing build/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${QN_SKIP_BUILD:-0}" != 1 ]; then
  bash scripts/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
  cmake --build build -j2
fi
BIN=${QN_BIN:-build/bin}
[ -f models/mlp_gemm.onnx ] || "$PY" models/gen_models.py

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qn-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== input: random float32[8,784]"
"$PY" -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(0).standard_normal((8, 784)).astype(np.float32))" "$tmp/x.npy"

echo "== tp=2: qn-compile + qn-run --nproc 2"
"$BIN/qn-compile" models/mlp_gemm.onnx --tp 2 -o "$tmp/plan"
"$BIN/qn-run" "$tmp/plan" --nproc 2 --input "input=$tmp/x.npy" --output-dir "$tmp/out"

echo "== unpartitioned: qn-compile --tp 1 + qn-run --nproc 1 (and onnxruntime)"
"$BIN/qn-compile" models/mlp_gemm.onnx --tp 1 -o "$tmp/plan1"
"$BIN/qn-run" "$tmp/plan1" --nproc 1 --input "input=$tmp/x.npy" --output-dir "$tmp/out1"

echo "== tp=2 output vs unpartitioned"
"$PY" scripts/compare_outputs.py --model models/mlp_gemm.onnx --input "input=$tmp/x.npy" \
  --candidate "$tmp/out/output.npy" --reference "qn-tp1=$tmp/out1/output.npy"
