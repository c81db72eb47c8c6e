#!/usr/bin/env bash
# Installs what QuintNet needs on a fresh Debian 12 machine (idempotent).
# Debian packages: Protobuf, Gloo, OpenBLAS, Boost.Context (the fibers of the CUDA
# emulator, test/cudaemu/), Fashion-MNIST (training's real data) (LLVM 14, GoogleTest, CUDA are preinstalled
# on our machines but are listed too so a bare Debian 12 gets them).
# Python (pyenv's python3): onnx, onnxruntime, numpy for the model generator, the
# end-to-end reference and the benchmarks; lit for the regression suite; torch,
# training's oracle; onnxscript, which PyTorch's default (dynamo) exporter needs
# (models/export_families.py --exporter dynamo).
# The ONNX C++ library is not Debian's (1.12 knows opset 17 at most): CMake builds
# a current one from PyPI's source distribution at the first configure
# (scripts/build-onnx.sh, into build/third_party/).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
pkgs=(cmake g++ make libprotobuf-dev protobuf-compiler libgloo-dev
      libopenblas-dev libdnnl-dev llvm-14-dev llvm-14-tools libgtest-dev pkg-config
      libboost-context-dev dataset-fashion-mnist)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
PY=${PYTHON:-python3}
if ! "$PY" -c "import onnx, onnxruntime, numpy, lit, torch, transformers, onnxscript
assert onnx.__version__ == '1.19.1', onnx.__version__" 2>/dev/null; then
  echo "[install-deps] pip install onnx onnxruntime numpy lit torch transformers onnxscript"
  "$PY" -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/requirements.txt"
fi
echo "[install-deps] ok"
