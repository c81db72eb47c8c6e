#!/usr/bin/env bash
# Fuzzes model import (binary and text, then partitioning and verification),
# plan loading (plan.json + rank model) and .npy parsing with libFuzzer under
# AddressSanitizer and UndefinedBehaviorSanitizer (clang-14), seeded from the
# bundled and test models. Prints executions and findings per target; crash
# inputs are kept under build-fuzz/findings/. Exit status 1 if anything was found.
#
#   bash test/fuzz/run_fuzz.sh [SECONDS_PER_TARGET]     (default 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
PY=${PYTHON:-python3}
bash scripts/install-deps.sh
command -v clang++-14 >/dev/null || { apt-get update -qq && apt-get install -y -qq clang-14 libclang-rt-14-dev; }
cmake -S . -B build-fuzz -DQN_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz-import-onnx fuzz-import-text fuzz-plan fuzz-npy qn-compile

W=build-fuzz/fuzz
rm -rf "$W/seeds" "$W/corpus"
rm -rf build-fuzz/findings
mkdir -p "$W/seeds/onnx" "$W/seeds/text" "$W/seeds/plan" "$W/seeds/npy" build-fuzz/findings
cp test/lit/*.onnxtext "$W/seeds/text/"
"$PY" test/fuzz/make_seeds.py "$W/seeds" build-fuzz/bin/qn-compile

total_findings=0
for t in import-onnx import-text plan npy; do
  seeds="$W/seeds/${t#import-}"
  mkdir -p "$W/corpus/$t"
  log="$W/$t.log"
  set +e
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    build-fuzz/bin/fuzz-$t "$W/corpus/$t" "$seeds" -max_total_time="$SECS" -timeout=20 \
      -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t-" \
      >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  found=$(ls build-fuzz/findings/ 2>/dev/null | grep -c "^$t-" || true)
  total_findings=$((total_findings + found))
  echo "fuzz-$t: ${SECS}s, $execs executions, $found findings (exit $rc)"
  [ "$found" = 0 ] || grep -m3 -E "ERROR|runtime error" "$log" || true
done
echo "findings: $total_findings (inputs under build-fuzz/findings/)"
[ "$total_findings" = 0 ]
