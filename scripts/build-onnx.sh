#!/usr/bin/env bash
# Builds the ONNX C++ library QuintNet compiles against, from the source
# distribution on PyPI (onnx-X.tar.gz holds the full C++ source), with
# Debian's protobuf, into PREFIX (shared libraries, ONNX_ML on, as Debian's
# libonnx-dev was built). Debian 12's own ONNX (1.12) knows opsets up to 17
# and IR 8 only: today's exporters write IR 10 and opset 18+.
#
# Usage: bash scripts/build-onnx.sh PREFIX
# Idempotent: a PREFIX that already holds this version's CMake config is
# kept (CMake runs this at configure time when the config is missing, into
# build/third_party/ by default, so a rebuild does not redo it).
# QN_ONNX_SDIST=FILE.tar.gz uses a downloaded source distribution instead of
# asking PyPI.
set -euo pipefail
VERSION=1.19.1
# Bump when the build recipe below changes, so that old builds are redone.
RECIPE=2
PREFIX=${1:?usage: build-onnx.sh PREFIX}
PY=${PYTHON:-python3}
stamp="$PREFIX/.quintnet-onnx-$VERSION-r$RECIPE"
if [ -f "$stamp" ] && [ -f "$PREFIX/lib/cmake/ONNX/ONNXConfig.cmake" ]; then
  echo "[build-onnx] ONNX $VERSION already in $PREFIX"
  exit 0
fi
for tool in cmake protoc; do
  command -v "$tool" >/dev/null || { echo "[build-onnx] error: '$tool' not found (run scripts/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
work="$PREFIX.work"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
sdist=${QN_ONNX_SDIST:-}
if [ -z "$sdist" ]; then
  echo "[build-onnx] downloading onnx==$VERSION (source distribution) from PyPI"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    --no-build-isolation -d "$work" "onnx==$VERSION" 2>"$work/pip.log" ||
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work" "onnx==$VERSION" >>"$work/pip.log" 2>&1 ||
    { cat "$work/pip.log" >&2; echo "[build-onnx] error: could not download onnx==$VERSION from PyPI" >&2; exit 1; }
  sdist="$work/onnx-$VERSION.tar.gz"
fi
[ -f "$sdist" ] || { echo "[build-onnx] error: '$sdist' not found" >&2; exit 1; }
tar -xzf "$sdist" -C "$work"
src="$work/onnx-$VERSION"
[ -f "$src/CMakeLists.txt" ] || { echo "[build-onnx] error: $sdist holds no onnx-$VERSION/CMakeLists.txt" >&2; exit 1; }
# ONNX hides every symbol of its shared libraries (it is built for its Python
# module, which links it statically): libonnx.so could not then see the
# protobuf classes of libonnx_proto.so, nor could we. Keep default visibility.
sed -i -e '/CXX_VISIBILITY_PRESET hidden/d' -e '/VISIBILITY_INLINES_HIDDEN/d' "$src/CMakeLists.txt"
echo "[build-onnx] building ONNX $VERSION into $PREFIX (a few minutes, once)"
jobs=$(nproc)
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DONNX_ML=ON -DONNX_USE_PROTOBUF_SHARED_LIBS=ON \
  -DONNX_BUILD_TESTS=OFF -DONNX_GEN_PB_TYPE_STUBS=OFF -DONNX_BUILD_PYTHON=OFF \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_INSTALL_RPATH='$ORIGIN' \
  -DPython3_EXECUTABLE="$(command -v "$PY")" >"$work/configure.log" 2>&1 ||
  { tail -40 "$work/configure.log" >&2; echo "[build-onnx] error: ONNX configure failed" >&2; exit 1; }
cmake --build "$work/build" -j"$jobs" >"$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log" >&2; echo "[build-onnx] error: ONNX build failed" >&2; exit 1; }
cmake --install "$work/build" >"$work/install.log" 2>&1 ||
  { tail -20 "$work/install.log" >&2; echo "[build-onnx] error: ONNX install failed" >&2; exit 1; }
touch "$stamp"
echo "[build-onnx] ok: ONNX $VERSION in $PREFIX"
