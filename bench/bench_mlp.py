#!/usr/bin/env python3
"""CPU benchmark: QuintNet (qn-run --bench) against onnxruntime on the bundled MLPs.

For each model it compares, on the same input, in one invocation:
  ort    onnxruntime CPU, intra_op_num_threads=1, inter_op_num_threads=1, sequential
  qn tp1 qn-compile --tp 1, qn-run --nproc 1 --bench K   (one rank, one thread)
  qn tp2 qn-compile --tp 2, qn-run --nproc 2 --bench K   (two ranks, one thread each)
and reports the medians, qn tp1 / ort (target <= 1.2) and the tp=2 speed-up
qn tp1 / qn tp2 (target >= 1.6). A rank's time is qn-run's median per run; a
tp run's time is the slowest rank's median. The whole comparison is repeated
--rounds times and the median of each figure is reported, to damp noise.

Builds nothing: uses the tools in --bin (default $QN_BIN or <repo>/build/bin).
It also runs two onnxruntime processes side by side to measure the machine's
own ceiling for a 2-rank speed-up (cores that slow each other down).

Usage: python3 bench/bench_mlp.py [--runs K] [--rounds R] [--json FILE] [--check]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 1.2    # qn tp1 / ort, at most
TARGET_SPEEDUP = 1.6  # qn tp1 / qn tp2, at least
RTOL = 1e-5           # normwise: max|qn - ort| <= RTOL * max|ort|

CASES = [
    # name, model file, input name, input shape, label
    ("mlp_gemm", "mlp_gemm.onnx", "input", (1024, 784), "batch 1024"),
    ("mlp_matmul3d", "mlp_matmul3d.onnx", "x", (32, 128, 256), "batch 32, seq 128"),
]
BENCH_RE = re.compile(r"^bench rank=(\d+) runs=(\d+) median_ms=([0-9.eE+-]+) "
                      r"collective_ms=([0-9.eE+-]+)(?: collective_share=[0-9.]+%)?"
                      r"(?: device_ms=[0-9.eE+-]+)?\s*$")


def qn_env():
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run(args):
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=qn_env(), timeout=600)
    if proc.returncode != 0:
        sys.exit(f"bench_mlp: command failed (exit {proc.returncode}): {' '.join(args)}\n"
                 f"{proc.stderr.strip()}")
    return proc


def ort_median_ms(model_path, feeds, runs, warmup, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    out = None
    for _ in range(warmup):
        out = sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def _ort_worker(model_path, feeds, runs, warmup, barrier, queue):
    barrier.wait()
    queue.put(ort_median_ms(model_path, feeds, runs, warmup)[0])


def ort_concurrent_ms(model_path, feeds, runs, warmup, procs=2):
    """Median ms of `procs` single-threaded onnxruntime processes running the
    whole model at the same time. Against one process alone this measures how
    much the cores slow each other down (shared caches, memory bandwidth, vector
    units), which bounds any tp speed-up on this machine: with a slowdown f, a
    perfect split over 2 ranks with free communication gains at most 2/f."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_ort_worker, args=(model_path, feeds, runs, warmup, barrier,
                                                     queue)) for _ in range(procs)]
    for w in workers:
        w.start()
    times = [queue.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    return max(times)


def qn_bench(bindir, plan, tp, in_name, x_path, runs, out_dir):
    proc = run([os.path.join(bindir, "qn-run"), plan, "--nproc", str(tp),
                "--input", f"{in_name}={x_path}", "--bench", str(runs),
                "--output-dir", out_dir])
    ranks = {}
    for line in proc.stdout.splitlines():
        m = BENCH_RE.match(line.strip())
        if m:
            ranks[int(m.group(1))] = (float(m.group(3)), float(m.group(4)))
            if int(m.group(2)) != runs:
                sys.exit(f"bench_mlp: qn-run reported runs={m.group(2)}, asked for {runs}")
    if sorted(ranks) != list(range(tp)):
        sys.exit(f"bench_mlp: expected one bench line per rank 0..{tp - 1}, got:\n{proc.stdout}")
    step = max(v[0] for v in ranks.values())
    coll = max(v[1] for v in ranks.values())
    return step, coll


def check_output(out_dir, ref, label):
    """Normwise check of qn's output against ort's (skipped if qn wrote none)."""
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".npy")) \
        if os.path.isdir(out_dir) else []
    if not files:
        return None
    got = np.load(os.path.join(out_dir, files[0]))
    if got.shape != ref.shape:
        sys.exit(f"bench_mlp: {label}: output shape {got.shape}, expected {ref.shape}")
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    return err <= RTOL * float(np.max(np.abs(ref)))


def bench_case(args, tmp, case):
    name, fname, in_name, shape, label = case
    model = os.path.join(REPO, "models", fname)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x_path = os.path.join(tmp, f"{name}-x.npy")
    np.save(x_path, x)
    plans = {}
    for tp in (1, 2):
        plans[tp] = os.path.join(tmp, f"{name}-tp{tp}")
        run([os.path.join(args.bin, "qn-compile"), model, "--tp", str(tp), "-o", plans[tp]])

    rounds = []
    correct = True
    for r in range(args.rounds):
        ort_ms, ref = ort_median_ms(model, {in_name: x}, args.runs, args.warmup)
        row = {"ort_ms": ort_ms,
               "ort_x2_concurrent_ms": ort_concurrent_ms(model, {in_name: x}, args.runs,
                                                         args.warmup)}
        for tp in (1, 2):
            out_dir = os.path.join(tmp, f"{name}-out-tp{tp}-r{r}")
            step, coll = qn_bench(args.bin, plans[tp], tp, in_name, x_path, args.runs, out_dir)
            row[f"qn_tp{tp}_ms"] = step
            row[f"qn_tp{tp}_collective_ms"] = coll
            ok = check_output(out_dir, ref[0], f"{name} tp{tp}")
            if ok is False:
                correct = False
        rounds.append(row)
    res = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    res.update(model=name, shape=list(shape), label=label, runs=args.runs, rounds=args.rounds,
               ratio_qn_tp1_over_ort=res["qn_tp1_ms"] / res["ort_ms"],
               speedup_tp2=res["qn_tp1_ms"] / res["qn_tp2_ms"],
               machine_slowdown_x2=res["ort_x2_concurrent_ms"] / res["ort_ms"],
               speedup_ceiling_tp2=2 * res["ort_ms"] / res["ort_x2_concurrent_ms"],
               outputs_match_ort=correct)
    res["meets_ratio_target"] = res["ratio_qn_tp1_over_ort"] <= TARGET_RATIO
    res["meets_speedup_target"] = res["speedup_tp2"] >= TARGET_SPEEDUP
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("QN_BIN", os.path.join(REPO, "build", "bin")))
    ap.add_argument("--runs", type=int, default=30, help="timed runs per measurement (K)")
    ap.add_argument("--warmup", type=int, default=5, help="onnxruntime warm-up runs")
    ap.add_argument("--rounds", type=int, default=3, help="repeat the comparison R times")
    ap.add_argument("--models", nargs="*", default=[c[0] for c in CASES],
                    choices=[c[0] for c in CASES])
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a target is missed or an output differs from ort")
    args = ap.parse_args()
    for t in ("qn-compile", "qn-run"):
        if not os.access(os.path.join(args.bin, t), os.X_OK):
            sys.exit(f"bench_mlp: {os.path.join(args.bin, t)} not found (build first or --bin)")

    results = []
    with tempfile.TemporaryDirectory(prefix="qn-bench-") as tmp:
        for case in CASES:
            if case[0] in args.models:
                results.append(bench_case(args, tmp, case))

    print(f"median ms over {args.runs} runs, median of {args.rounds} rounds; "
          f"one thread per rank (OPENBLAS_NUM_THREADS=1), ort 1 thread sequential")
    hdr = (f"{'model':<14} {'input':<18} {'ort':>9} {'qn tp1':>9} {'qn tp2':>9} "
           f"{'tp2 coll':>9} {'tp1/ort':>8} {'speedup':>8} {'ceiling':>8}  match")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(f"{r['model']:<14} {r['label']:<18} {r['ort_ms']:>9.2f} {r['qn_tp1_ms']:>9.2f} "
              f"{r['qn_tp2_ms']:>9.2f} {r['qn_tp2_collective_ms']:>9.2f} "
              f"{r['ratio_qn_tp1_over_ort']:>8.2f} {r['speedup_tp2']:>8.2f} "
              f"{r['speedup_ceiling_tp2']:>8.2f}  "
              f"{'yes' if r['outputs_match_ort'] else 'NO'}")
    print("ceiling: 2 x (ort alone) / (ort with a second ort process running beside it), the "
          "best tp=2 speed-up this machine allows")
    print(f"targets: tp1/ort <= {TARGET_RATIO}, speedup tp1/tp2 >= {TARGET_SPEEDUP}")
    failed = False
    for r in results:
        verdict = []
        verdict.append(f"tp1/ort {r['ratio_qn_tp1_over_ort']:.2f} "
                       f"{'ok' if r['meets_ratio_target'] else 'MISSED'}")
        verdict.append(f"speedup {r['speedup_tp2']:.2f} "
                       f"{'ok' if r['meets_speedup_target'] else 'MISSED'}")
        print(f"  {r['model']}: " + ", ".join(verdict))
        failed |= not (r["meets_ratio_target"] and r["meets_speedup_target"]
                       and r["outputs_match_ort"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"targets": {"ratio_max": TARGET_RATIO, "speedup_min": TARGET_SPEEDUP},
                       "cpu_count": os.cpu_count(), "results": results}, f, indent=2)
    return 1 if (failed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
