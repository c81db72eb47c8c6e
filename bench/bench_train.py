#!/usr/bin/env python3
"""Training throughput: qn-run --train against PyTorch eager on the same
threads, side by side on one machine.

The MLP (784-H-H-10, H 2048 by default) and the transformer block of
models/train_models.py, SGD with momentum, random data. Reported: samples/s
of PyTorch with 1 thread, of qn-run at tp 1 (1 rank x 1 thread) and tp 2
(2 ranks x 1 thread), the ratios tp1/PyTorch and tp2/tp1. qn-run's figure
is its own "trained N steps in S s" line (the loop, not start-up); the
first steps of both are warm-up and excluded.

    python3 bench/bench_train.py --bin build/bin [--hidden 2048] [--batch 256] [--steps 40]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from train_models import MLP, Block, export  # noqa: E402


def torch_rate(module, x, y, batch, steps, warmup=5):
    torch.set_num_threads(1)
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    n = x.shape[0]
    t0 = None
    for s in range(steps + warmup):
        if s == warmup:
            t0 = time.perf_counter()
        b = (s * batch) % n
        opt.zero_grad()
        nn.functional.cross_entropy(module(torch.from_numpy(x[b:b + batch])),
                                    torch.from_numpy(y[b:b + batch])).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def qn_rate(bin_dir, onnx_path, work, tp, xs, ys, batch, steps):
    plan = os.path.join(work, f"plan{tp}")
    subprocess.run([os.path.join(bin_dir, "qn-compile"), onnx_path, "--tp", str(tp), "--train",
                    "--lr", "0.01", "--momentum", "0.9", "-o", plan, "--quiet"], check=True)
    p = subprocess.run([os.path.join(bin_dir, "qn-run"), plan, "--train", "--input",
                        f"input={xs}", "--input", f"labels={ys}", "--batch", str(batch), "--steps",
                        str(steps), "--threads-per-rank", "1"],
                       capture_output=True, text=True, check=True)
    m = re.search(r"trained (\d+) steps in ([0-9.]+) s", p.stderr)
    return int(m.group(1)) * batch / float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--models", default="mlp,block")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for name in args.models.split(","):
        torch.manual_seed(0)
        if name == "mlp":
            module = MLP(784, args.hidden, 10)
            x = rng.standard_normal((args.batch * 8, 784)).astype(np.float32)
            label = f"MLP 784-{args.hidden}-{args.hidden}-10"
        else:
            module = Block(hidden=256, heads=8, classes=10)
            x = rng.standard_normal((args.batch * 8, 32, 256)).astype(np.float32)
            label = "transformer block (hidden 256, 8 heads, seq 32)"
        y = rng.integers(0, 10, x.shape[0]).astype(np.int64)
        with tempfile.TemporaryDirectory(prefix="qn_bench_train_") as work:
            path = os.path.join(work, "model.onnx")
            export(module, torch.from_numpy(x[:2]), path)
            xs, ys = os.path.join(work, "x.npy"), os.path.join(work, "y.npy")
            np.save(xs, x)
            np.save(ys, y)
            pt = torch_rate(module, x, y, args.batch, args.steps)
            q1 = qn_rate(args.bin, path, work, 1, xs, ys, args.batch, args.steps)
            q2 = qn_rate(args.bin, path, work, 2, xs, ys, args.batch, args.steps)
        print(f"{label}, batch {args.batch}, {args.steps} steps: PyTorch 1 thread {pt:.0f} "
              f"samples/s; qn-run tp 1 {q1:.0f} ({q1 / pt:.2f}x PyTorch); tp 2 {q2:.0f} "
              f"({q2 / q1:.2f}x tp 1, {q2 / pt:.2f}x PyTorch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
