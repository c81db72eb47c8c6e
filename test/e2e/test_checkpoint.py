#!/usr/bin/env python3
"""Checkpoints of qn-run --train: exact resume, a killed rank, refusals.

1. Exact resume: a 2-rank run of 24 steps writes checkpoints every 8 steps;
   `latest` is pointed back at step 8 (what a run stopped after step 8
   leaves: checkpoints are written aside and renamed) and a second run
   resumes from it. Its loss trace must equal the uninterrupted one's steps
   9..24 bit for bit, and both --save files must be byte-identical.
2. A killed rank: rank 1 of a long torchrun-style run is killed after the
   first checkpoints; rank 0 must stop with an error, and the latest
   checkpoint must be complete and resumable.
3. Refusals: a checkpoint of another plan, another --batch.
4. Bad input: a label outside [0, C) names the sample; a loss that turns NaN
   or infinite stops the run naming the step; --train's flags are checked.
5. Dataset formats: the same data as .npz (stored and deflated, NAME=F:KEY)
   gives the .npy run's loss trace bit for bit; a missing key is named.

    python3 test/e2e/test_checkpoint.py --bin build/bin
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "train", "mlp_mnist.onnx")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    args = ap.parse_args()
    qc, qr = os.path.join(args.bin, "qn-compile"), os.path.join(args.bin, "qn-run")
    failures = []

    def check(ok, what):
        print(f"{'PASS' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory(prefix="qn_ckpt_") as w:
        rng = np.random.default_rng(0)
        np.save(f"{w}/x.npy", rng.standard_normal((200, 784)).astype(np.float32))
        np.save(f"{w}/y.npy", rng.integers(0, 10, 200).astype(np.int64))
        subprocess.run([qc, MODEL, "--tp", "2", "--train", "--optimizer", "adamw", "--lr", "1e-3",
                        "-o", f"{w}/plan", "--quiet"], check=True)
        common = [f"{w}/plan", "--train", "--nproc", "2", "--input", f"input={w}/x.npy", "--input",
                  f"labels={w}/y.npy", "--batch", "32", "--steps", "24", "--shuffle", "5", "--quiet"]

        # 1. Exact resume.
        subprocess.run([qr] + common + ["--checkpoint", f"{w}/ck", "--checkpoint-every", "8",
                                        "--loss-log", f"{w}/full.csv", "--save", f"{w}/full.onnx"],
                       check=True)
        with open(f"{w}/ck/latest") as f:
            check(f.read().strip() == "step-24", "the last checkpoint is the latest")
        with open(f"{w}/ck/latest", "w") as f:
            f.write("step-8\n")
        p = subprocess.run([qr] + common + ["--resume", f"{w}/ck", "--loss-log", f"{w}/resumed.csv",
                                            "--save", f"{w}/resumed.onnx"],
                           capture_output=True, text=True)
        check(p.returncode == 0, "resume from step 8 runs" + ("" if p.returncode == 0 else ": " + p.stderr))
        full = open(f"{w}/full.csv").read().splitlines()[1:]
        resumed = open(f"{w}/resumed.csv").read().splitlines()[1:] if p.returncode == 0 else []
        check(resumed == full[8:] and len(resumed) == 16,
              "the loss trace after the resume equals the uninterrupted one bit for bit (steps 9-24)")
        same = p.returncode == 0 and open(f"{w}/full.onnx", "rb").read() == open(f"{w}/resumed.onnx", "rb").read()
        check(same, "--save after the resume is byte-identical to the uninterrupted run's")

        # 3. Refusals.
        subprocess.run([qc, MODEL, "--tp", "2", "--train", "--lr", "0.5", "-o", f"{w}/other",
                        "--quiet"], check=True)
        p = subprocess.run([qr, f"{w}/other"] + common[1:] + ["--resume", f"{w}/ck"],
                           capture_output=True, text=True)
        line = lambda text, key: next((x for x in text.splitlines() if key in x), "(no message)")  # noqa: E731
        check(p.returncode != 0 and "belongs to plan" in p.stderr,
              "a checkpoint of another plan is refused: " + line(p.stderr, "belongs to plan"))
        bad = [a if a != "32" else "16" for a in common]
        p = subprocess.run([qr] + bad + ["--resume", f"{w}/ck"], capture_output=True, text=True)
        check(p.returncode != 0 and "--batch 32" in p.stderr,
              "another --batch is refused: " + line(p.stderr, "--batch 32"))

        # 2. A killed rank (torchrun-style processes, so one can be killed).
        long = [a if a != "24" else "200000" for a in common if a not in ("--nproc", "2")]
        env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()), OPENBLAS_NUM_THREADS="1")
        procs = [subprocess.Popen([qr] + long + ["--checkpoint", f"{w}/ck2", "--checkpoint-every", "50",
                                                 "--timeout", "10"],
                                  env=dict(env, RANK=str(r)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(2)]
        deadline = time.time() + 120
        while (time.time() < deadline and not os.path.exists(f"{w}/ck2/step-150") and
               all(p.poll() is None for p in procs)):
            time.sleep(0.05)
        if not os.path.exists(f"{w}/ck2/step-150"):
            for p in procs:
                p.kill()
            outs = [p.communicate()[1] for p in procs]
            check(False, "the long run reached its third checkpoint: " + " | ".join(
                o.strip().splitlines()[-1] if o.strip() else "(no message)" for o in outs))
            print(f"test_checkpoint: {len(failures)} failed")
            return 1
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.time()
        try:
            _, err0 = procs[0].communicate(timeout=60)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            err0 = "(rank 0 did not stop within 60 s)"
        stopped = time.time() - t0
        check(procs[0].returncode not in (0, None),
              f"rank 0 stops with an error {stopped:.1f} s after rank 1 was killed: "
              + (err0.strip().splitlines() or ["(no message)"])[-1])
        latest = open(f"{w}/ck2/latest").read().strip()
        files = sorted(os.listdir(f"{w}/ck2/{latest}"))
        check(files == ["checkpoint.json", "rank0.bin", "rank1.bin"],
              f"the latest checkpoint ({latest}) is complete: {files}")
        short = [a if a != "200000" else str(int(latest.split('-')[1]) + 10) for a in long]
        p = subprocess.run([qr, "--nproc", "2"] + short + ["--resume", f"{w}/ck2"],
                           capture_output=True, text=True)
        check(p.returncode == 0, "the run resumes from it" + ("" if p.returncode == 0 else ": " + p.stderr))
        # 4. Bad input.
        y = np.load(f"{w}/y.npy")
        y[37] = 10
        np.save(f"{w}/ybad.npy", y)
        p = subprocess.run([qr] + [a if a != f"labels={w}/y.npy" else f"labels={w}/ybad.npy" for a in common],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "sample 37 has label 10, outside [0, 10)" in p.stderr,
              "a label outside [0, C) names the sample: " + line(p.stderr, "sample 37"))
        subprocess.run([qc, MODEL, "--tp", "2", "--train", "--lr", "1e12", "--momentum", "0.9", "-o",
                        f"{w}/wild", "--quiet"], check=True)
        np.save(f"{w}/xbig.npy", np.load(f"{w}/x.npy") * 1e3)
        p = subprocess.run([qr, f"{w}/wild"] + [a if a != f"input={w}/x.npy" else f"input={w}/xbig.npy"
                                                for a in common[1:]],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "the loss is" in p.stderr and "step" in p.stderr,
              "a NaN or infinite loss stops the run naming the step: " + line(p.stderr, "the loss is"))
        for flags, key in ((["--steps", "0"], "exactly one of --epochs"),
                           (["--epochs", "1", "--steps", "3"], "exactly one of --epochs"),
                           (["--batch", "0", "--steps", "3"], "--batch must be at least 1")):
            base = [a for a in common if a not in ("--steps", "24", "--batch", "32")]
            p = subprocess.run([qr] + base + flags, capture_output=True, text=True)
            check(p.returncode != 0 and key in p.stderr, f"{' '.join(flags)} is refused: " + line(p.stderr, key))
        p = subprocess.run([qr, f"{w}/plan", "--input", f"input={w}/x.npy"], capture_output=True, text=True)
        check(p.returncode != 0 and "is a training plan: run it with --train" in p.stderr,
              "a training plan without --train is refused")
        # 5. .npz datasets.
        x, y = np.load(f"{w}/x.npy"), np.load(f"{w}/y.npy")
        np.savez(f"{w}/d.npz", x=x, y=y)
        np.savez_compressed(f"{w}/dc.npz", x=x, y=y)
        short = [a for a in common if a not in ("--steps", "24")] + ["--steps", "6"]
        ref = subprocess.run([qr] + short + ["--loss-log", f"{w}/npy.csv"], capture_output=True, text=True)
        for name in ("d", "dc"):
            args2 = [a.replace(f"{w}/x.npy", f"{w}/{name}.npz:x").replace(f"{w}/y.npy", f"{w}/{name}.npz:y")
                     for a in short]
            p = subprocess.run([qr] + args2 + ["--loss-log", f"{w}/{name}.csv"], capture_output=True, text=True)
            same = ref.returncode == 0 and p.returncode == 0 and \
                open(f"{w}/{name}.csv").read() == open(f"{w}/npy.csv").read()
            check(same, f".npz ({'deflated' if name == 'dc' else 'stored'}) trains exactly as .npy"
                  + ("" if p.returncode == 0 else ": " + p.stderr.strip()))
        p = subprocess.run([qr] + [a.replace(f"{w}/x.npy", f"{w}/d.npz:z") for a in short],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "holds the arrays x, y" in p.stderr,
              "a missing .npz key is named: " + line(p.stderr, "holds the arrays"))
    print(f"test_checkpoint: {'all passed' if not failures else str(len(failures)) + ' failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
