#!/usr/bin/env python3
"""Fashion-MNIST at tp 2 against PyTorch: the same MLP (models/train/
mlp_mnist.onnx, initial weights from the file), the same batches in file
order, the same SGD; the test accuracy QuintNet reaches must be within 0.5
points of PyTorch's. Data: Debian's dataset-fashion-mnist (IDX files).

    python3 test/e2e/test_fashion_mnist.py --bin build/bin [--epochs 3] [--tp 2]
"""
import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from onnx import numpy_helper

DATA = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models"))
from train_models import MLP  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndims = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndims).reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    args = ap.parse_args()
    files = {k: os.path.join(DATA, f"{k}-ubyte.gz") for k in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    missing = [f for f in files.values() if not os.path.exists(f)]
    if missing:
        print("test_fashion_mnist: missing " + ", ".join(missing) +
              " (apt-get install dataset-fashion-mnist; scripts/install-deps.sh does)")
        return 1
    model = os.path.join(ROOT, "models/train/mlp_mnist.onnx")
    xtr = (idx(files["train-images-idx3"]).reshape(-1, 784) / np.float32(255)).astype(np.float32)
    ytr = idx(files["train-labels-idx1"]).astype(np.int64)
    xte = (idx(files["t10k-images-idx3"]).reshape(-1, 784) / np.float32(255)).astype(np.float32)
    yte = idx(files["t10k-labels-idx1"]).astype(np.int64)

    # PyTorch: the module with the ONNX file's initial weights.
    torch.set_num_threads(1)
    mlp = MLP()
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(model).graph.initializer}
    mlp.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in inits.items()})
    opt = torch.optim.SGD(mlp.parameters(), lr=args.lr, momentum=args.momentum)
    t0 = time.time()
    for _ in range(args.epochs):
        for b in range(0, len(xtr), args.batch):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(mlp(torch.from_numpy(xtr[b:b + args.batch])),
                                               torch.from_numpy(ytr[b:b + args.batch]))
            loss.backward()
            opt.step()
    torch_secs = time.time() - t0
    with torch.no_grad():
        torch_acc = 100.0 * float((mlp(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())

    with tempfile.TemporaryDirectory(prefix="qn_fmnist_") as work:
        plan, saved = os.path.join(work, "plan"), os.path.join(work, "trained.onnx")
        subprocess.run([os.path.join(args.bin, "qn-compile"), model, "--tp", str(args.tp),
                        "--train", "--lr", str(args.lr), "--momentum", str(args.momentum), "-o",
                        plan, "--quiet"], check=True)
        t0 = time.time()
        p = subprocess.run([os.path.join(args.bin, "qn-run"), plan, "--train", "--input",
                            f"input={files['train-images-idx3']}", "--input",
                            f"labels={files['train-labels-idx1']}", "--eval",
                            f"input={files['t10k-images-idx3']}", "--eval",
                            f"labels={files['t10k-labels-idx1']}", "--batch", str(args.batch),
                            "--epochs", str(args.epochs), "--save", saved],
                           capture_output=True, text=True)
        qn_secs = time.time() - t0
        if p.returncode != 0:
            print(p.stdout + p.stderr)
            return 1
        evals = re.findall(r"accuracy ([0-9.]+)%", p.stderr)
        qn_acc = float(evals[-1])
        # The saved model, run by ONNX Runtime, classifies the test set alike.
        sess = ort.InferenceSession(saved, providers=["CPUExecutionProvider"])
        ort_acc = 100.0 * float((sess.run(None, {"input": xte})[0].argmax(1) == yte).mean())
    print(p.stderr.strip().splitlines()[-3])
    ok = abs(qn_acc - torch_acc) <= 0.5 and abs(ort_acc - qn_acc) <= 0.05
    print(f"{'PASS' if ok else 'FAIL'} Fashion-MNIST MLP, {args.epochs} epochs, batch "
          f"{args.batch}, SGD lr {args.lr} momentum {args.momentum}: test accuracy QuintNet tp "
          f"{args.tp} {qn_acc:.2f}% (its --save model in ONNX Runtime {ort_acc:.2f}%), PyTorch "
          f"{torch_acc:.2f}%; wall time qn-run {qn_secs:.1f} s (with eval and start-up), "
          f"PyTorch 1 thread {torch_secs:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
