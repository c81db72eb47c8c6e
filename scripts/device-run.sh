#!/usr/bin/env bash
# Runs the GPU checks on the lent GPU machine from the bundle that
# scripts/device-bundle.sh made here (.device-bundle/qn-bundle.tar.xz): the
# machine has CUDA, python3 with torch/onnx/onnxruntime/numpy, but none of our
# Debian libraries, no apt and no network. From the repository root there:
#
#   bash scripts/device-run.sh        # run(..., carry=[".device-bundle"], timeout_s=600)
#
# 1. unpacks the bundle into $QN_BUNDLE_DIR (default /tmp/qn-device-bundle: not
#    inside .device-bundle/, so that a local try never makes the carried folder
#    bigger), checks its sha256;
# 2. finds the CUDA libraries there (libcudart.so.13, libcublas.so.13,
#    libcublasLt.so.13, libnccl.so.2): $QN_CUDA_LIBDIRS first, then python3's
#    pip wheels (site-packages/nvidia/*/lib, the ones torch loads), then
#    /usr/local/cuda*, /usr/lib/x86_64-linux-gnu, ldconfig; links them (and
#    their sibling libraries) into BUNDLE/cuda/, which the bundle's DT_RPATH
#    names, so qn-run finds them with or without LD_LIBRARY_PATH;
# 3. writes $OUT/env.log: the machine, nvidia-smi, the Python packages, the CUDA
#    libraries chosen, ldd of every bundled file, qn-run --list-devices;
# 4. runs, each under a time limit, never stopping because an earlier one failed:
#      unit   BUNDLE/bin/qn-gpu-tests          -> $OUT/gpu-tests.log, $OUT/gpu-tests.xml
#      e2e    test/e2e/test_gpu.py --bin BUNDLE/bin $QN_E2E_ARGS      -> $OUT/test_gpu.log
#      bench  bench/bench_gpu.py --bin BUNDLE/bin --json $OUT/bench.json $QN_BENCH_ARGS
#                                                                     -> $OUT/bench.log
#    and records each step's exit code in $OUT/summary.txt (0 passed, 77
#    skipped: no GPU, 124/137 timed out, other: failed).
#
# Environment:
#   OUT                 where logs go (default /tmp/qn-device-out)
#   QN_DEVICE_STEPS     comma-separated subset of unit,e2e,bench (default all three)
#   QN_E2E_ARGS         extra test_gpu.py arguments (default "--jobs 4"), e.g. "--jobs 4 --quick"
#   QN_BENCH_ARGS       extra bench_gpu.py arguments (default none: the GPT-2-medium config)
#   QN_GTEST_ARGS       extra qn-gpu-tests arguments (e.g. --gtest_filter=...)
#   QN_DEVICE_TOTAL_S   seconds for the whole script (default 530); each step gets
#                       min(its cap, what is left minus a reserve for the later steps)
#   QN_TIMEOUT_UNIT / QN_TIMEOUT_E2E / QN_TIMEOUT_BENCH   per-step caps (120 / 300 / 300)
#   QN_CUDA_LIBDIRS     colon-separated folders searched first for the CUDA libraries
#   QN_DEVICE_PY_LDPATH=1  also give the Python steps the LD_LIBRARY_PATH of the
#                       binaries (off: torch and onnxruntime keep the machine's own)
#   PYTHON              the interpreter (default python3)
# Exit status: 0 when every step that ran passed or was skipped (77), else 1.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
T0=$(date +%s)
OUT=${OUT:-/tmp/qn-device-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TARBALL=${QN_BUNDLE_TARBALL:-$ROOT/.device-bundle/qn-bundle.tar.xz}
B=${QN_BUNDLE_DIR:-/tmp/qn-device-bundle}
STEPS=${QN_DEVICE_STEPS:-unit,e2e,bench}
PY=${PYTHON:-python3}
TOTAL=${QN_DEVICE_TOTAL_S:-530}
SUMMARY=$OUT/summary.txt
ENVLOG=$OUT/env.log
: >"$SUMMARY"
: >"$ENVLOG"

say() { echo "[device-run +$(( $(date +%s) - T0 ))s] $*"; }
summary() { echo "$*" >>"$SUMMARY"; }
env_section() { echo; echo "===== $*"; } >>"$ENVLOG"
finish() { # rc
  summary "total_seconds=$(( $(date +%s) - T0 ))"
  echo; echo "===== $SUMMARY"; cat "$SUMMARY"
  exit "$1"
}

summary "# QuintNet device run, $(date -u +%Y-%m-%dT%H:%M:%SZ), steps=$STEPS, OUT=$OUT"
summary "# step=rc result seconds timeout_s log"

# -- 1. the bundle --------------------------------------------------------------
if [ ! -f "$TARBALL" ]; then
  say "no bundle at $TARBALL: run scripts/device-bundle.sh on the build machine and carry .device-bundle"
  summary "setup=2 failed: no bundle at $TARBALL"
  finish 1
fi
if [ -f "$TARBALL.sha256" ]; then
  if ! (cd "$(dirname "$TARBALL")" && sha256sum -c --quiet "$(basename "$TARBALL").sha256"); then
    say "the bundle's sha256 does not match (truncated in transfer?)"
    summary "setup=2 failed: sha256 mismatch of $TARBALL"
    finish 1
  fi
fi
rm -rf "$B"
mkdir -p "$B"
if command -v xz >/dev/null 2>&1; then
  tar -C "$B" -xJf "$TARBALL"
else
  "$PY" - "$TARBALL" "$B" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as t:
    try:
        t.extractall(sys.argv[2], filter="tar")
    except TypeError:
        t.extractall(sys.argv[2])
EOF
fi
if [ ! -x "$B/bin/qn-run" ]; then
  say "unpacking $TARBALL into $B failed"
  summary "setup=2 failed: cannot unpack $TARBALL"
  finish 1
fi
mkdir -p "$B/cuda"
say "bundle unpacked into $B ($(du -sh "$B" | cut -f1))"
info_val() { sed -n "s/^$1=//p" "$B/BUNDLE-INFO.txt" 2>/dev/null; }
# The same file selection as device-bundle.sh's source_sha256.
source_sha256() {
  find CMakeLists.txt compiler runtime tools test/CMakeLists.txt test/gpu test/unit -type f \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.inc' -o -name '*.def' \
       -o -name 'CMakeLists.txt' \) 2>/dev/null | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-64
}
built_src=$(info_val source_sha256)
here_src=$(source_sha256)
if [ -n "$built_src" ] && [ "$built_src" = "$here_src" ]; then
  stale_note="bundle built from these sources"
else
  stale_note="BUNDLE IS STALE: built from sources ${built_src:-?}, this tree is $here_src (rerun scripts/device-bundle.sh)"
  say "WARNING: $stale_note"
fi

# -- 2. the CUDA libraries ---------------------------------------------------------
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
cuda_dirs=()
IFS=: read -r -a extra <<<"${QN_CUDA_LIBDIRS:-}"
for d in "${extra[@]}"; do [ -n "$d" ] && cuda_dirs+=("$d"); done
while IFS= read -r d; do [ -n "$d" ] && cuda_dirs+=("$d"); done < <("$PY" - <<'EOF' 2>/dev/null
import importlib.util, os
seen = []
try:
    import nvidia  # namespace package of the pip CUDA wheels (torch's)
    for p in nvidia.__path__:
        for sub in sorted(os.listdir(p)):
            for lib in ("lib", "lib64"):
                d = os.path.join(p, sub, lib)
                if os.path.isdir(d):
                    seen.append(d)
except Exception:
    pass
spec = importlib.util.find_spec("torch")
if spec and spec.submodule_search_locations:
    seen.append(os.path.join(list(spec.submodule_search_locations)[0], "lib"))
print("\n".join(seen))
EOF
)
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
         /usr/local/cuda-*/lib64 /usr/local/cuda-*/targets/x86_64-linux/lib \
         /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$d" ] && cuda_dirs+=("$d")
done
find_lib() { # soname -> path
  local d
  for d in "${cuda_dirs[@]}"; do
    if [ -e "$d/$1" ]; then echo "$d/$1"; return 0; fi
  done
  "$LDCONFIG" -p 2>/dev/null | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; exit}'
}
chosen_dirs=()
missing_cuda=()
for n in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  p=$(find_lib "$n")
  if [ -z "$p" ]; then
    # last resort: a bounded search of the usual trees
    p=$(timeout 30 find /usr/local /opt /usr/lib /root -xdev -name "$n" 2>/dev/null | head -1)
  fi
  if [ -z "$p" ]; then
    missing_cuda+=("$n")
    say "CUDA library $n: NOT FOUND (set QN_CUDA_LIBDIRS)"
    continue
  fi
  ln -sfn "$p" "$B/cuda/$n"
  d=$(dirname "$p")
  [[ " ${chosen_dirs[*]} " == *" $d "* ]] || chosen_dirs+=("$d")
  say "CUDA library $n: $p -> $(readlink -f "$p")"
done
# Siblings (what those libraries need themselves), never replacing a chosen one.
for d in "${chosen_dirs[@]}"; do
  for f in "$d"/lib*.so*; do
    [ -e "$f" ] || continue
    [ -e "$B/cuda/$(basename "$f")" ] || ln -s "$f" "$B/cuda/$(basename "$f")"
  done
done

# -- the environment of the binaries ------------------------------------------------
ORIG_LD=${LD_LIBRARY_PATH:-}
BIN_LD=$B/lib:$B/cuda
for d in "${chosen_dirs[@]}"; do BIN_LD+=":$d"; done
[ -n "$ORIG_LD" ] && BIN_LD+=":$ORIG_LD"
if [ "${QN_DEVICE_PY_LDPATH:-0}" = 1 ]; then PY_LD=$BIN_LD; else PY_LD=$ORIG_LD; fi
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} # as on the build machines (ARCHITECTURE.md)
export PYTHONUNBUFFERED=1
export QN_BIN=$B/bin
binenv() { LD_LIBRARY_PATH=$BIN_LD "$@"; }
pyrun() { if [ -n "$PY_LD" ]; then LD_LIBRARY_PATH=$PY_LD "$@"; else env -u LD_LIBRARY_PATH "$@"; fi; }

# libstdc++ / glibc: the bundle was built on Debian 12; use its libstdc++ where
# the machine's is older than the bundle needs.
need_cxx=$(info_val glibcxx_need)
need_glibc=$(info_val glibc_need)
sys_cxx=$("$LDCONFIG" -p 2>/dev/null | awk '$1 == "libstdc++.so.6" && /x86-64/ {print $NF; exit}')
cxx_note="system libstdc++ $sys_cxx"
if [ -n "$need_cxx" ] && { [ -z "$sys_cxx" ] || ! grep -qa "GLIBCXX_$need_cxx" "$sys_cxx"; }; then
  cp "$B"/compat/* "$B/lib/" 2>/dev/null
  cxx_note="the machine's libstdc++ ($sys_cxx) lacks GLIBCXX_$need_cxx: using the bundle's compat copy"
  say "$cxx_note"
fi
have_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
glibc_note="glibc $have_glibc (bundle needs $need_glibc)"
if [ -n "$need_glibc" ] && [ -n "$have_glibc" ] &&
   [ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -t. -k1,1n -k2,2n | head -1)" != "$need_glibc" ]; then
  glibc_note="glibc $have_glibc is OLDER than the bundle needs ($need_glibc): the binaries will not start"
  say "WARNING: $glibc_note"
fi

# -- 3. env.log ---------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "os: $( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || echo unknown)"
  echo "cpus: $(nproc)  memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
  echo "$glibc_note; $cxx_note"
  echo "$stale_note"
  echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
  echo "LD_LIBRARY_PATH (machine): ${ORIG_LD:-<unset>}"
  echo "LD_LIBRARY_PATH (binaries): $BIN_LD"
  echo "LD_LIBRARY_PATH (python steps): ${PY_LD:-<unset>}"
  echo "OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
  echo "CUDA library folders searched: ${cuda_dirs[*]}"
  echo "CUDA libraries missing: ${missing_cuda[*]:-none}"
  echo "libcuda.so.1 (driver): $("$LDCONFIG" -p 2>/dev/null | awk '$1 == "libcuda.so.1" {print $NF; exit}')"
} >>"$ENVLOG" 2>&1
env_section "BUNDLE-INFO.txt"; cat "$B/BUNDLE-INFO.txt" >>"$ENVLOG" 2>&1
env_section "bundle cuda/ links"; ls -l "$B/cuda" >>"$ENVLOG" 2>&1
env_section "nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 60 nvidia-smi >>"$ENVLOG" 2>&1
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv >>"$ENVLOG" 2>&1
else
  echo "nvidia-smi: not found" >>"$ENVLOG"
fi
env_section "python packages"
pyrun "$PY" - >>"$ENVLOG" 2>&1 <<'EOF'
import importlib
for m in ("numpy", "onnx", "onnxruntime", "torch"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "torch":
            extra = f" cuda={mod.version.cuda} available={mod.cuda.is_available()}"
            if mod.cuda.is_available():
                extra += f" device={mod.cuda.get_device_name(0)}"
        print(f"{m} {getattr(mod, '__version__', '?')}{extra}  ({mod.__file__})")
    except Exception as ex:
        print(f"{m}: not importable: {type(ex).__name__}: {ex}")
EOF
env_section "ldd (with the binaries' LD_LIBRARY_PATH)"
notfound=0
for f in "$B"/bin/* "$B"/lib/*.so*; do
  echo "--- $f" >>"$ENVLOG"
  binenv ldd "$f" >>"$ENVLOG" 2>&1
  if binenv ldd "$f" 2>&1 | grep -q "not found"; then
    notfound=1
    say "ldd: $f has unresolved libraries: $(binenv ldd "$f" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
  fi
done
env_section "qn-run --list-devices"
list_out=$(binenv timeout 120 "$B/bin/qn-run" --list-devices 2>&1)
list_rc=$?
echo "$list_out" >>"$ENVLOG"
echo "exit $list_rc" >>"$ENVLOG"
say "qn-run --list-devices (exit $list_rc):"
echo "$list_out" | sed 's/^/    /'
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 30 nvidia-smi -L 2>&1 | sed 's/^/    nvidia-smi: /'
fi
summary "setup=0 ok $(( $(date +%s) - T0 )) - env.log  (list-devices exit $list_rc; ldd unresolved: $notfound; CUDA libs missing: ${missing_cuda[*]:-none}; $stale_note)"

# -- 4. the steps -------------------------------------------------------------------------
declare -A CAP=([unit]=${QN_TIMEOUT_UNIT:-120} [e2e]=${QN_TIMEOUT_E2E:-300} [bench]=${QN_TIMEOUT_BENCH:-300})
declare -A RESERVE=([unit]=30 [e2e]=120 [bench]=120)
IFS=, read -r -a steps <<<"$STEPS"
overall=0
result_of() {
  case "$1" in
    0) echo passed ;; 77) echo skipped ;; 124|137) echo timed-out ;; *) echo failed ;;
  esac
}
budget() { # step index -> seconds
  local i=$1 left reserve=0 j cap t
  left=$(( TOTAL - ($(date +%s) - T0) ))
  for (( j = i + 1; j < ${#steps[@]}; j++ )); do reserve=$(( reserve + ${RESERVE[${steps[j]}]:-0} )); done
  cap=${CAP[${steps[i]}]}
  t=$(( left - reserve ))
  (( t > cap )) && t=$cap
  (( t < 20 && left - 10 > t )) && t=$(( left - 10 < cap ? left - 10 : cap ))
  echo "$t"
}
for (( i = 0; i < ${#steps[@]}; i++ )); do
  step=${steps[i]}
  case "$step" in
    unit)  log=$OUT/gpu-tests.log ;;
    e2e)   log=$OUT/test_gpu.log ;;
    bench) log=$OUT/bench.log ;;
    *) say "unknown step '$step' (unit, e2e, bench)"; summary "$step=2 unknown-step"; overall=1; continue ;;
  esac
  t=$(budget "$i")
  if (( t < 1 || (t < 10 && t < ${CAP[$step]}) )); then
    say "$step: no time left (${t}s)"
    summary "$step=- not-run 0 $t $(basename "$log")  (no time left)"
    overall=1
    continue
  fi
  say "$step: starting (time limit ${t}s) -> $log"
  s0=$(date +%s)
  case "$step" in
    unit)
      # shellcheck disable=SC2086
      binenv timeout -k 10 "$t" "$B/bin/qn-gpu-tests" --gtest_color=no \
        --gtest_output="xml:$OUT/gpu-tests.xml" ${QN_GTEST_ARGS:-} >"$log" 2>&1
      rc=$? ;;
    e2e)
      # shellcheck disable=SC2086
      pyrun timeout -k 10 "$t" "$PY" test/e2e/test_gpu.py --bin "$B/bin" ${QN_E2E_ARGS:---jobs 4} \
        >"$log" 2>&1
      rc=$? ;;
    bench)
      # shellcheck disable=SC2086
      pyrun timeout -k 10 "$t" "$PY" bench/bench_gpu.py --bin "$B/bin" --json "$OUT/bench.json" \
        ${QN_BENCH_ARGS:-} >"$log" 2>&1
      rc=$? ;;
  esac
  secs=$(( $(date +%s) - s0 ))
  res=$(result_of "$rc")
  (( rc == 124 || rc == 137 )) && echo "[device-run] $step: killed after its ${t}s limit" >>"$log"
  summary "$step=$rc $res $secs $t $(basename "$log")"
  [ "$rc" = 0 ] || [ "$rc" = 77 ] || overall=1
  say "$step: exit $rc ($res) after ${secs}s; last lines of $(basename "$log"):"
  tail -n 25 "$log" | cut -c1-300 | sed 's/^/    /'
done
finish "$overall"
