#!/usr/bin/env bash
# Builds what the GPU checks need (qn-compile, qn-run, qn-gpu-tests,
# libqn_runtime.so, libqn_cuda.so; Release, LLVM linked statically with
# -DQN_LLVM_STATIC=ON) into build-device/, and packs them with every non-system
# shared library they need into .device-bundle/qn-bundle.tar.xz, for a machine
# that has none of our Debian packages (the lent GPU machine: CUDA, Python,
# no apt, no network). scripts/device-run.sh unpacks and runs it there:
#
#   run(command="bash scripts/device-run.sh", carry=[".device-bundle"], timeout_s=600)
#
# Bundle layout (inside the tarball):
#   bin/     qn-compile qn-run qn-gpu-tests       DT_RPATH $ORIGIN/../lib:$ORIGIN/../cuda
#   lib/     libqn_runtime.so libqn_cuda.so and the Debian libraries they need
#            (ONNX, protobuf, Gloo, OpenBLAS, oneDNN, ...)   DT_RPATH $ORIGIN:$ORIGIN/../cuda
#   cuda/    empty: device-run.sh links the machine's libcudart/cublas/cublasLt/nccl here
#   compat/  libstdc++.so.6 and libgcc_s.so.1 of this machine, used by device-run.sh
#            only where the machine's own are older than the bundle needs
#   BUNDLE-INFO.txt  commit, build flags, libraries and their Debian packages, the
#            newest GLIBC_/GLIBCXX_ symbol versions the bundle needs
# Left out (the device machine has them): glibc (libc, libm, libdl, libpthread,
# librt, ld-linux, ...), libstdc++, libgcc_s, and the CUDA libraries (libcuda,
# libcudart, libcublas, libcublasLt, libnccl).
# DT_RPATH (not RUNPATH) so that the bundle's libraries win over whatever
# LD_LIBRARY_PATH the machine sets, for every library in the chain, and so
# that Python processes (torch, onnxruntime) need no LD_LIBRARY_PATH of ours.
#
# Environment: QN_JOBS (build jobs, default 1), QN_DEVICE_BUILD (build folder,
# default build-device), QN_BUNDLE_MAX_MIB (fail above this compressed size,
# default 40: the carried bundle and the working tree share 64 MiB).
# Run from anywhere: bash scripts/device-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${QN_DEVICE_BUILD:-build-device}
JOBS=${QN_JOBS:-1}
MAX_MIB=${QN_BUNDLE_MAX_MIB:-40}
OUTDIR=$ROOT/.device-bundle
TARBALL=$OUTDIR/qn-bundle.tar.xz
STAGE=$ROOT/$BUILD/bundle-stage
say() { echo "[device-bundle] $*"; }
die() { echo "[device-bundle] error: $*" >&2; exit 1; }

# -- tools --------------------------------------------------------------------
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
need_pkg() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" ||
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2"; }
}
need_pkg patchelf patchelf
need_pkg xz xz-utils
need_pkg readelf binutils

# -- build ----------------------------------------------------------------------
say "configuring $BUILD/ (Release, QN_LLVM_STATIC=ON, QN_CUDA=ON)"
mkdir -p "$BUILD"
CONFLOG=$BUILD/configure.log
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DQN_LLVM_STATIC=ON -DQN_CUDA=ON \
  -DQN_SANITIZE=OFF -DQN_FUZZ=OFF -DQN_CUDA_EMULATOR=OFF >"$CONFLOG" 2>&1 ||
  { cat "$CONFLOG"; die "cmake configure failed"; }
grep "QuintNet: CUDA" "$CONFLOG" || true
grep -q "QuintNet: CUDA ON" "$CONFLOG" ||
  die "CMake did not enable the CUDA device (nvcc, cuBLAS and NCCL under /usr/local/cuda needed)"
say "building (-j$JOBS): qn-compile qn-run qn-gpu-tests qn_runtime qn_cuda"
cmake --build "$BUILD" -j"$JOBS" --target qn-compile qn-run qn-gpu-tests qn_runtime qn_cuda

ours_bin=(qn-compile qn-run qn-gpu-tests)
ours_lib=(libqn_runtime.so libqn_cuda.so)
for f in "${ours_bin[@]}"; do [ -x "$BUILD/bin/$f" ] || die "$BUILD/bin/$f was not built"; done
for f in "${ours_lib[@]}"; do [ -f "$BUILD/lib/$f" ] || die "$BUILD/lib/$f was not built"; done
if readelf -d "$BUILD/lib/libqn_runtime.so" "$BUILD/bin/qn-compile" | grep -q 'libLLVM'; then
  die "the build still links libLLVM-14.so (QN_LLVM_STATIC had no effect)"
fi

# -- stage ----------------------------------------------------------------------
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/cuda" "$STAGE/compat"
for f in "${ours_bin[@]}"; do cp "$BUILD/bin/$f" "$STAGE/bin/"; done
for f in "${ours_lib[@]}"; do cp "$BUILD/lib/$f" "$STAGE/lib/"; done

# Sonames the device machine provides itself.
SYSTEM_RE='^(linux-vdso\.so|linux-gate\.so|ld-linux|libc\.so|libm\.so|libmvec\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libnsl\.so|libBrokenLocale\.so|libnss_|libthread_db\.so|libstdc\+\+\.so|libgcc_s\.so)'
CUDA_RE='^(libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libnccl\.so)'

# ldd gives the whole closure (each library's own NEEDED entries included),
# resolved the way this machine's loader resolves them.
declare -A bundled=()
for f in "${ours_bin[@]/#/$BUILD/bin/}" "${ours_lib[@]/#/$BUILD/lib/}"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [[ $name =~ $SYSTEM_RE || $name =~ $CUDA_RE ]]; then continue; fi
    [[ " ${ours_lib[*]} " == *" $name "* ]] && continue
    [ "$path" != "not" ] || die "$f needs $name, which is not found on this machine"
    [ -n "${bundled[$name]:-}" ] && continue
    bundled[$name]=$(readlink -f "$path")
    cp -L "$path" "$STAGE/lib/$name"
  done < <(ldd "$f")
done
# libstdc++/libgcc_s for the compat folder (not on any RPATH).
for name in libstdc++.so.6 libgcc_s.so.1; do
  p=$(ldd "$BUILD/bin/qn-run" | awk -v n="$name" '$1 == n {print $3}')
  if [ -n "$p" ]; then cp -L "$p" "$STAGE/compat/$name"; fi
done

# Strip our own files (Release has no debug info, only symbol tables); the
# Debian libraries are stripped already.
for f in "${ours_bin[@]}"; do strip --strip-unneeded "$STAGE/bin/$f"; done
for f in "${ours_lib[@]}"; do strip --strip-unneeded "$STAGE/lib/$f"; done

chmod u+w "$STAGE"/lib/* "$STAGE"/compat/*
for f in "$STAGE"/bin/*; do patchelf --force-rpath --set-rpath '$ORIGIN/../lib:$ORIGIN/../cuda' "$f"; done
for f in "$STAGE"/lib/*; do patchelf --force-rpath --set-rpath '$ORIGIN:$ORIGIN/../cuda' "$f"; done

# -- check the closure: every NEEDED entry of every bundled file is bundled, or
# glibc-level, or a CUDA library.
fail=0
for f in "$STAGE"/bin/* "$STAGE"/lib/*; do
  rp=$(readelf -d "$f" | sed -n 's/.*(RPATH).*\[\(.*\)\]/\1/p')
  case "$f" in
    */bin/*) [ "$rp" = '$ORIGIN/../lib:$ORIGIN/../cuda' ] || { echo "bad RPATH on $f: '$rp'"; fail=1; } ;;
    *) [ "$rp" = '$ORIGIN:$ORIGIN/../cuda' ] || { echo "bad RPATH on $f: '$rp'"; fail=1; } ;;
  esac
  readelf -d "$f" | grep -q '(RUNPATH)' && { echo "$f still has a RUNPATH"; fail=1; }
  for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ $n =~ $SYSTEM_RE || $n =~ $CUDA_RE ]] && continue
    [ -f "$STAGE/lib/$n" ] || { echo "$f needs $n: not in the bundle"; fail=1; }
  done
done
[ "$fail" = 0 ] || die "the bundle is not self-contained"

# -- BUNDLE-INFO.txt ----------------------------------------------------------
# source_sha256: the C++/CUDA sources and CMake files the bundle was built from
# (device-run.sh recomputes it there and warns when the bundle is stale).
source_sha256() {
  find CMakeLists.txt compiler runtime tools test/CMakeLists.txt test/gpu test/unit -type f \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.inc' -o -name '*.def' \
       -o -name 'CMakeLists.txt' \) 2>/dev/null | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-64
}
ver_max() { sort -t. -k1,1n -k2,2n -k3,3n | tail -1; }
glibc_need=$(for f in "$STAGE"/bin/* "$STAGE"/lib/*; do
  objdump -T "$f" | grep -o 'GLIBC_[0-9][0-9.]*' || true; done | sed 's/GLIBC_//' | sort -u | ver_max)
glibcxx_need=$(for f in "$STAGE"/bin/* "$STAGE"/lib/*; do
  objdump -T "$f" | grep -o 'GLIBCXX_[0-9][0-9.]*' || true; done | sed 's/GLIBCXX_//' | sort -u | ver_max)
cxxabi_need=$(for f in "$STAGE"/bin/* "$STAGE"/lib/*; do
  objdump -T "$f" | grep -o 'CXXABI_[0-9][0-9.]*' || true; done | sed 's/CXXABI_//' | sort -u | ver_max)
{
  echo "QuintNet device bundle"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release; echo "$PRETTY_NAME") $(uname -m)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (working tree differs from the commit)')"
  echo "build: $BUILD, Release, QN_LLVM_STATIC=ON, $(grep 'QuintNet: CUDA' "$CONFLOG" | sed 's/^-- //')"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  echo "source_sha256=$(source_sha256)"
  echo "needs: GLIBC_$glibc_need GLIBCXX_$glibcxx_need CXXABI_$cxxabi_need"
  echo "glibc_need=$glibc_need"
  echo "glibcxx_need=$glibcxx_need"
  echo "cxxabi_need=$cxxabi_need"
  echo "libraries:"
  for n in $(printf '%s\n' "${!bundled[@]}" | sort); do
    pkg=$(dpkg -S "${bundled[$n]}" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [ -n "$pkg" ] || pkg=$(dpkg -S "${bundled[$n]#/usr}" 2>/dev/null | head -1 | cut -d: -f1 || true)
    printf '  %-28s %-60s %s\n' "$n" "${bundled[$n]}" "${pkg:-?}"
  done
  echo "CUDA libraries expected on the device: libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2 (and the driver's libcuda.so.1)"
} >"$STAGE/BUNDLE-INFO.txt"

# -- pack -----------------------------------------------------------------------
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
say "compressing (xz -9e) $(du -sh "$STAGE" | cut -f1) ..."
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner -cf - . | xz -9e -T1 >"$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"
(cd "$OUTDIR" && sha256sum qn-bundle.tar.xz >qn-bundle.tar.xz.sha256)
cp "$STAGE/BUNDLE-INFO.txt" "$OUTDIR/"
bytes=$(stat -c %s "$TARBALL")
mib=$(( (bytes + 1048575) / 1048576 ))
cat "$STAGE/BUNDLE-INFO.txt"
say "bundle: $TARBALL: $bytes bytes ($mib MiB; unpacked $(du -sh "$STAGE" | cut -f1))"
[ "$mib" -le "$MAX_MIB" ] || die "the bundle is $mib MiB, over QN_BUNDLE_MAX_MIB=$MAX_MIB"
say "carry it with: carry [\".device-bundle\"], command \"bash scripts/device-run.sh\""
