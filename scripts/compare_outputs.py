#!/usr/bin/env python3
"""Compare a QuintNet output against unpartitioned runs of the same model.

  compare_outputs.py --model M.onnx --input NAME=FILE.npy [--input ...] \
      --candidate OUT.npy [--output NAME] [--reference LABEL=REF.npy ...] [--rtol 1e-5]

Runs onnxruntime (CPU) on the original model as the reference "onnxruntime",
plus any --reference files (e.g. the qn-run --nproc 1 output). For each
reference it prints the largest absolute difference, the normwise relative
difference max|cand - ref| / max|ref|, and the largest elementwise relative
difference (informative only: it is meaningless where ref is near zero).
Exit status 1 if any normwise difference exceeds --rtol (default 1e-5, the
bound the end-to-end tests use for fp32), 2 on a shape/dtype mismatch.
"""
import argparse
import sys

import numpy as np
import onnxruntime as ort


def split_pair(s, what):
    if "=" not in s:
        sys.exit(f"compare_outputs: {what} must be NAME=FILE, got {s!r}")
    return s.split("=", 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--candidate", required=True, metavar="FILE")
    ap.add_argument("--output", help="graph output to compare (default: the first)")
    ap.add_argument("--reference", action="append", default=[], metavar="LABEL=FILE")
    ap.add_argument("--rtol", type=float, default=1e-5)
    args = ap.parse_args()

    feeds = {n: np.load(f) for n, f in (split_pair(s, "--input") for s in args.input)}
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    out_name = args.output or sess.get_outputs()[0].name
    refs = [("onnxruntime", sess.run([out_name], feeds)[0])]
    refs += [(label, np.load(f)) for label, f in (split_pair(s, "--reference") for s in args.reference)]
    cand = np.load(args.candidate)

    worst = 0.0
    print(f"output {out_name!r} {cand.dtype}{list(cand.shape)} vs:")
    for label, ref in refs:
        if ref.shape != cand.shape or ref.dtype != cand.dtype:
            print(f"  {label}: mismatch: {ref.dtype}{list(ref.shape)}", file=sys.stderr)
            return 2
        diff = np.abs(cand.astype(np.float64) - ref.astype(np.float64))
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        max_abs = float(diff.max()) if diff.size else 0.0
        normwise = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        with np.errstate(divide="ignore", invalid="ignore"):
            elem = np.where(diff == 0, 0.0, diff / np.abs(ref.astype(np.float64)))
        max_elem = float(elem.max()) if elem.size else 0.0
        print(f"  {label:<12} max abs diff {max_abs:.3e}   max|diff|/max|ref| {normwise:.3e}"
              f"   max elementwise rel {max_elem:.3e}")
        worst = max(worst, normwise)
    ok = worst <= args.rtol
    print(f"normwise bound {args.rtol:g}: {'PASS' if ok else 'FAIL'} (worst {worst:.3e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
