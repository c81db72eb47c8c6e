#!/usr/bin/env python3
"""CPU benchmark of a GPT-2 exported from Hugging Face transformers: QuintNet
against onnxruntime on the same cores, side by side in one invocation (issue
"Real models fast and at scale"):

  ort 1t   onnxruntime, 1 intra-op thread, sequential
  ort 2t   onnxruntime, 2 intra-op threads
  qn tp1   qn-run, one rank, one thread      (target: <= 1.0 x ort 1t)
  qn tp2   qn-run, two ranks x one thread    (targets: >= 1.8 x faster than
                                              qn tp1, faster than ort 2t)

The model: the GPT-2 that models/export_families.py exported from
transformers 4.41.2 (TorchScript exporter; the bundled skeleton
models/families/<size>/gpt2.onnx, rehydrated with seeded weights), with its
vocabulary widened to GPT-2's 50257 (the table and LM head re-drawn at that
size), so that the odd vocabulary is in the plan as in the real model. The
skeletons have 2 layers (hidden 128 or 1024), not GPT-2 small's 12 x 768:
without PyTorch on the machine this is the closest export the repository
holds; --model takes any other export with an `input_ids` input.

A qn figure is the slowest rank's median of qn-run --bench K; ort's the median
of K timed runs after warm-up. The outputs are checked against ort's
(max|qn - ort| <= 1e-5 max|ort|). Timings are reported, never asserted.

Usage: python3 bench/bench_transformer.py [--size 1024] [--vocab 50257]
           [--model FILE.onnx] [--batch 1 4] [--seq 64] [--runs K] [--json FILE]
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "models", "families"))
import bench_mlp as bm  # noqa: E402  (run, qn_bench, ort_median_ms)
import rehydrate as rh  # noqa: E402

RTOL = 1e-5


def widened_gpt2(size, vocab, path):
    """The families GPT-2 skeleton with its vocabulary set to `vocab`."""
    m = onnx.load(os.path.join(REPO, "models", "families", f"h{size}", "gpt2.onnx"))
    props = {p.key: p for p in m.metadata_props}
    info = json.loads(props["quintnet.rehydrate"].value)
    old = 1024  # the skeletons' vocabulary
    # The word table (a Gather's) and the LM head (the MatMul writing logits).
    table = {n.input[0] for n in m.graph.node if n.op_type == "Gather" and n.input[0] in
             info["weights"] and info["weights"][n.input[0]]["dims"] == [old, size]}
    head = {n.input[1] for n in m.graph.node if n.op_type == "MatMul" and "logits" in n.output}
    if len(table) != 1 or len(head) != 1:
        sys.exit(f"bench_transformer: no word table / LM head found ({table}, {head})")
    info["weights"][table.pop()]["dims"] = [vocab, size]
    info["weights"][head.pop()]["dims"] = [size, vocab]
    props["quintnet.rehydrate"].value = json.dumps(info)
    for o in m.graph.output:
        dims = o.type.tensor_type.shape.dim
        if dims and dims[-1].dim_value == old:
            dims[-1].dim_value = vocab
    del m.graph.value_info[:]
    full, _ = rh.rehydrate(m)
    onnx.save(full, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("QN_BIN", os.path.join(REPO, "build", "bin")))
    ap.add_argument("--size", type=int, default=1024, choices=(128, 1024))
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--model", help="an exported model with an input_ids input")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seq", type=int, default=64,
                    help="sequence length (the skeletons hold 64 positions)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qn-bench-tf-") as tmp:
        model = args.model
        if not model:
            model = os.path.join(tmp, "gpt2.onnx")
            widened_gpt2(args.size, args.vocab, model)
        plans = {}
        for tp in (1, 2):
            plans[tp] = os.path.join(tmp, f"plan{tp}")
            bm.run([os.path.join(args.bin, "qn-compile"), model, "--tp", str(tp), "-o",
                    plans[tp], "--quiet"])
        with open(os.path.join(plans[2], "plan.json")) as f:
            p2 = json.load(f)
        share = max(r["param_bytes"] for r in p2["ranks"]) / p2["model_param_bytes"]
        for b in args.batch:
            ids = np.random.default_rng(b).integers(0, args.vocab, (b, args.seq)).astype(np.int64)
            x = os.path.join(tmp, f"ids{b}.npy")
            np.save(x, ids)
            feeds = {"input_ids": ids}
            ort1, ref = bm.ort_median_ms(model, feeds, args.runs, args.warmup, threads=1)
            ort2, _ = bm.ort_median_ms(model, feeds, args.runs, args.warmup, threads=2)
            ref = ref[0]
            row = {"batch": b, "seq": args.seq, "ort_1t_ms": ort1, "ort_2t_ms": ort2}
            for tp in (1, 2):
                out = os.path.join(tmp, f"out{tp}-{b}")
                step, coll = bm.qn_bench(args.bin, plans[tp], tp, "input_ids", x, args.runs, out)
                row[f"qn_tp{tp}_ms"], row[f"qn_tp{tp}_collective_ms"] = step, coll
                got = np.load(os.path.join(out, "logits.npy"))
                row[f"qn_tp{tp}_matches_ort"] = bool(
                    np.max(np.abs(got - ref)) <= RTOL * np.max(np.abs(ref)))
            row["tp1_over_ort_1t"] = row["qn_tp1_ms"] / ort1
            row["tp2_speedup"] = row["qn_tp1_ms"] / row["qn_tp2_ms"]
            row["tp2_over_ort_2t"] = row["qn_tp2_ms"] / ort2
            rows.append(row)
    name = args.model or f"GPT-2 (families skeleton h{args.size}, vocab {args.vocab})"
    print(f"{name}; tp 2 rank holds {share:.1%} of the parameters; median ms of {args.runs} runs")
    print(f"{'batch x seq':<12} {'ort 1t':>8} {'ort 2t':>8} {'qn tp1':>8} {'qn tp2':>8} "
          f"{'tp2 coll':>8} {'tp1/ort1':>9} {'tp2 gain':>9} {'tp2/ort2':>9}  match")
    for r in rows:
        print(f"{r['batch']:>3} x {r['seq']:<6} {r['ort_1t_ms']:8.1f} {r['ort_2t_ms']:8.1f} "
              f"{r['qn_tp1_ms']:8.1f} {r['qn_tp2_ms']:8.1f} {r['qn_tp2_collective_ms']:8.1f} "
              f"{r['tp1_over_ort_1t']:9.2f} {r['tp2_speedup']:9.2f} {r['tp2_over_ort_2t']:9.2f}  "
              f"{r['qn_tp1_matches_ort'] and r['qn_tp2_matches_ort']}")
    print("targets: tp1/ort1 <= 1.0, tp2 gain >= 1.8, tp2/ort2 < 1.0")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": name, "tp2_rank_param_share": share, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
