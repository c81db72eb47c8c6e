#!/usr/bin/env python3
"""Model families end to end: the Hugging Face exports that
models/export_families.py wrote as skeletons (models/families/h128/, bundled;
h1024/ when exported), rehydrated with seeded weights, compiled at tp 1, 2 and
4 (where the heads divide) and run by qn-run on CPU ranks against ONNX Runtime
on the rehydrated model, at batch 3 and sequence 5 (the exports traced 2 x 8).

Checked per family and tp:
  - numbers: every output within 1e-5 of the largest reference value
    (max |qn - ort| <= 1e-5 * max |ort|);
  - the plan is Megatron's minimum: at most 2 AllReduce per layer (a
    parallel attention + MLP block may need only one), +1 where the word
    embedding is vocab-parallel, 1 AllGather where the LM head is
    column-parallel (the logits), nothing else (plan.json's counts);
  - each rank's parameter bytes <= 1.02 x model/tp + what stays replicated by
    design (norms, biases, position tables and the other weights the skeleton
    keeps; K and V projections where the KV heads are fewer than the ranks).

Usage:
  python3 test/e2e/test_families.py [--bin build/bin] [--models DIR]
      [--family NAME ...] [--tp 1,2,4] [--no-run] [--jobs N] [--table]
      [--run-flags "--device cuda"]
--no-run compiles and checks the plans only (the hidden-1024 survey). Exit 0
when every check passed, 1 otherwise; --table prints one line per family and tp.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "models", "families"))
import rehydrate as rh  # noqa: E402

# Families whose plans are known to fall short of Megatron's minimum, with the
# reason: their collective-count and parameter-byte shortfalls are reported as
# XFAIL (numbers, compile and run failures still fail); a family listed here
# that reaches the minimum fails the run, so that the list only shrinks.
# Keyed "exporter/family" (the skeleton's metadata says which exporter wrote
# it: torchscript or dynamo).
KNOWN_SHORT = {
    "dynamo/falcon": "the fused query_key_value view is cut by Slice ('node_slice_6'), which "
                     "the defuse pass does not read",
    "dynamo/gpt_neox": "the attention scores' baddbmm ('node_baddbmm': an Add of the "
                       "[batch*heads, T, T] product S(0)/4 and a replicated term) needs them whole",
}

REL_TOL = 1e-5
BATCH, SEQ = 3, 5
PARAM_SLACK = 1.02
SHORTFALL = "[plan]"
ABBR = {"AllReduce": "AR", "AllGather": "AG", "ReduceScatter": "RS"}


def make_inputs(model, rng):
    feeds = {}
    for i in model.graph.input:
        if i.name == "input_ids":
            feeds[i.name] = rng.integers(0, 1024, (BATCH, SEQ)).astype(np.int64)
        elif i.name == "attention_mask":
            m = np.ones((BATCH, SEQ), np.int64)
            m[1, :2] = 0  # a left-padded row
            feeds[i.name] = m
        elif i.name == "token_type_ids":
            feeds[i.name] = (np.arange(SEQ)[None, :] >= 3).astype(np.int64).repeat(BATCH, 0)
        elif i.name == "pixel_values":
            feeds[i.name] = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
        else:
            raise ValueError(f"no input generator for '{i.name}'")
    return feeds


def weight_tables(model, weights):
    """Names of the taken weights read as a Gather's table."""
    return {n.input[0] for n in model.graph.node if n.op_type == "Gather"
            and n.input and n.input[0] in weights}


def replicated_allowance(skeleton, meta):
    """Bytes every rank may hold whole: the skeleton's own initializers and
    Constant tensors (norms, biases, masks, rotary tables), the taken Gather
    tables other than the word embedding (position tables) and Conv kernels
    (a vision patch embedding)."""
    def nbytes(t):
        return int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    total = sum(nbytes(t) for t in skeleton.graph.initializer)
    total += sum(nbytes(a.t) for n in skeleton.graph.node if n.op_type == "Constant"
                 for a in n.attribute if a.name == "value")
    weights = meta["weights"]
    for n in skeleton.graph.node:  # a patch embedding's kernel, replicated as in Megatron
        if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in weights:
            total += int(np.prod(weights[n.input[1]]["dims"])) * 4
    tables = weight_tables(skeleton, weights)
    words = max((weights[t]["dims"][0] for t in tables), default=0)
    for name in tables:
        dims = weights[name]["dims"]
        if dims[0] != words:  # not the word embedding
            total += int(np.prod(dims)) * 4
    return total


def kv_replication_allowance(meta, tp):
    """With fewer KV heads than ranks the K and V projections stay whole on
    every rank (Megatron's choice; MQA's single KV head too): their bytes
    beyond model/tp."""
    kv, heads, hidden = meta["kv_heads"], meta["heads"], meta["hidden"]
    if kv % tp == 0:
        return 0
    kv_bytes = 2 * meta["layers"] * hidden * kv * (hidden // heads) * 4
    return int(kv_bytes * (1 - 1 / tp))


def expected_collectives(skeleton, meta, plan):
    """2 AllReduce per layer, +1 where the word embedding (the table with the
    most rows) is vocab-parallel, 1 AllGather where the LM head (the Linear
    that writes a graph output) is column-parallel."""
    ar = 2 * meta["layers"]
    embeddings = plan.get("embeddings", [])
    words = max((e["V"] for e in embeddings), default=0)
    if any(e["V"] == words and e["strategy"] == "vocab" for e in embeddings):
        ar += 1
    # The LM head: the Linear that writes a graph output (through Cast,
    # Identity, Reshape, a bias Add), if any.
    producer = {o: n for n in skeleton.graph.node for o in n.output}
    heads = set()
    for out in skeleton.graph.output:
        n = producer.get(out.name)
        while n is not None and n.op_type in ("Cast", "Identity", "Reshape", "Add"):
            ins = [i for i in n.input if i in producer
                   and producer[i].op_type not in ("Constant", "Identity")]
            if n.op_type == "Add":  # the bias Add: follow the Linear's side
                ins = [i for i in ins if producer[i].op_type in ("MatMul", "Gemm")] or ins
            n = producer.get(ins[0]) if len(ins) == 1 or n.op_type != "Add" else None
        if n is not None and n.op_type in ("MatMul", "Gemm"):
            heads.add(n.name)
    ag = 1 if any(l["node"] in heads and l["strategy"] == "column"
                  for l in plan.get("linears", [])) else 0
    # A tied head that reads the vocab-parallel table through a Transpose
    # node (the dynamo exporter's form) is column-parallel from the table's
    # shard: its logits are gathered once.
    by_name = {n.name: n for n in skeleton.graph.node}
    vocab_tables = {by_name[e["node"]].input[0] for e in embeddings
                    if e.get("strategy") == "vocab" and e["node"] in by_name}
    for n in skeleton.graph.node:
        if n.name in heads and len(n.input) > 1 and n.input[1] in producer:
            t = producer[n.input[1]]
            if t.op_type == "Transpose" and t.input[0] in vocab_tables:
                ag = 1
    return {"AllReduce": ar, "AllGather": ag, "ReduceScatter": 0}


def run(cmd, timeout=600):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def tail(text, n=600):
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def check_family(args, path, work):
    """Returns (rows, problems): rows for the table, problems as strings."""
    name = os.path.splitext(os.path.basename(path))[0]
    skeleton = onnx.load(path)
    meta = rh.info(skeleton)
    model, _ = rh.rehydrate(onnx.load(path))
    d = os.path.join(work, name)
    os.makedirs(d)
    model_path = os.path.join(d, "model.onnx")
    onnx.save(model, model_path)
    model_bytes = sum(int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(
        t.data_type).itemsize for t in model.graph.initializer)
    allowance = replicated_allowance(skeleton, meta)
    rows, problems = [], []
    feeds, refs = None, None
    if not args.no_run:
        import onnxruntime as ort
        feeds = make_inputs(model, np.random.default_rng(7))
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        out_names = [o.name for o in model.graph.output]
        refs = dict(zip(out_names, sess.run(out_names, feeds)))
        for k, v in feeds.items():
            np.save(os.path.join(d, k + ".npy"), v)
    for tp in args.tp:
        if meta["heads"] % tp:
            continue
        label = f"{name} tp{tp}"
        plan_dir = os.path.join(d, f"plan{tp}")
        proc = run([os.path.join(args.bin, "qn-compile"), model_path, "--tp", str(tp),
                    "-o", plan_dir, "--quiet"])
        if proc.returncode != 0:
            problems.append(f"{label}: qn-compile failed: {tail(proc.stderr)}")
            rows.append((label, "compile failed", "", ""))
            continue
        with open(os.path.join(plan_dir, "plan.json")) as f:
            plan = json.load(f)
        got = {k: plan["collectives"].get(k, 0) for k in ("AllReduce", "AllGather",
                                                           "ReduceScatter")}
        want = expected_collectives(skeleton, meta, plan) if tp > 1 else {
            "AllReduce": 0, "AllGather": 0, "ReduceScatter": 0}
        coll = " ".join(f"{ABBR[k]}={got[k]}" for k in got)
        # At most Megatron's count: a parallel attention + MLP block (Falcon)
        # may sum both partial results in one AllReduce. Fewer collectives
        # that drop a needed one would show in the numbers; a block left
        # replicated shows in the parameter bytes.
        if any(got[k] > want[k] for k in got):
            problems.append(f"{label}: {SHORTFALL} collectives {got}, Megatron's minimum is "
                            f"{want}")
            coll += " (want " + " ".join(str(want[k]) for k in want) + ")"
        elif got != want:
            coll += " (fewer)"
        per_rank = max(r["param_bytes"] for r in plan["ranks"])
        model_bytes = plan["model_param_bytes"]  # initializers and constants, as qn counts
        limit = PARAM_SLACK * model_bytes / tp + allowance + kv_replication_allowance(meta, tp)
        share = f"{per_rank / model_bytes:.3f}"
        if per_rank > limit:
            problems.append(f"{label}: {SHORTFALL} a rank holds {per_rank} parameter bytes, over "
                            f"{PARAM_SLACK} x {model_bytes}/{tp} + {allowance} replicated = "
                            f"{int(limit)}")
            share += " (over)"
        err = ""
        if not args.no_run:
            out_dir = os.path.join(d, f"out{tp}")
            inputs = sum((["--input", f"{k}={os.path.join(d, k + '.npy')}"] for k in feeds), [])
            proc = run([os.path.join(args.bin, "qn-run"), plan_dir, "--nproc", str(tp),
                        *inputs, "--output-dir", out_dir, *args.run_flags.split()])
            if proc.returncode != 0:
                problems.append(f"{label}: qn-run failed: {tail(proc.stderr)}")
                err = "run failed"
            else:
                worst = 0.0
                for oname, ref in refs.items():
                    got_path = os.path.join(out_dir, oname + ".npy")
                    if not os.path.exists(got_path):
                        problems.append(f"{label}: output '{oname}' not written")
                        continue
                    out = np.load(got_path)
                    if out.shape != ref.shape:
                        problems.append(f"{label}: '{oname}' has shape {out.shape}, "
                                        f"ONNX Runtime's {ref.shape}")
                        continue
                    scale = float(np.max(np.abs(ref))) or 1.0
                    rel = float(np.max(np.abs(out.astype(np.float64) - ref))) / scale
                    worst = max(worst, rel)
                    if not rel <= REL_TOL:
                        problems.append(f"{label}: '{oname}' differs from ONNX Runtime by "
                                        f"{rel:.2e} of its largest value (tolerance {REL_TOL})")
                err = f"{worst:.1e}"
        rows.append((label, coll, share, err))
    shutil.rmtree(d, ignore_errors=True)  # hidden-1024 models are large
    return rows, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("QN_BIN", os.path.join(REPO, "build", "bin")))
    ap.add_argument("--models", default=os.path.join(REPO, "models", "families", "h128"))
    ap.add_argument("--family", action="append", help="only these (repeatable)")
    ap.add_argument("--tp", default="1,2,4")
    ap.add_argument("--no-run", action="store_true", help="compile and check plans only")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="print a line per family and tp")
    ap.add_argument("--run-flags", default="",
                    help="extra qn-run flags, e.g. '--device cuda' (split on spaces)")
    args = ap.parse_args()
    args.tp = [int(t) for t in args.tp.split(",")]
    for t in ("qn-compile", "qn-run"):
        if not os.access(os.path.join(args.bin, t), os.X_OK):
            print(f"test_families: {os.path.join(args.bin, t)} is not built", file=sys.stderr)
            return 1
    if not os.path.isdir(args.models):
        print(f"test_families: no skeleton folder {args.models} "
              f"(python3 models/export_families.py writes it)", file=sys.stderr)
        return 1
    paths = sorted(os.path.join(args.models, f) for f in os.listdir(args.models)
                   if f.endswith(".onnx") and not f.endswith(".full.onnx"))
    if args.family:
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in args.family]
        if not paths:
            print(f"test_families: none of {args.family} in {args.models}", file=sys.stderr)
            return 1
    all_rows, all_problems, xfails = [], [], []
    with tempfile.TemporaryDirectory(prefix="qn-families-") as work:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda p: check_family(args, p, work), paths))
    for path, (rows, problems) in zip(paths, results):
        exporter = rh.info(onnx.load(path)).get("exporter", "torchscript")
        family = f"{exporter}/{os.path.splitext(os.path.basename(path))[0]}"
        all_rows += rows
        if family in KNOWN_SHORT:
            plan_short = [p for p in problems if SHORTFALL in p]
            problems = [p for p in problems if SHORTFALL not in p]
            xfails += [f"{p} [known: {KNOWN_SHORT[family]}]" for p in plan_short]
            if not plan_short and not problems:
                problems.append(f"{family}: reaches Megatron's minimum now: take it out of "
                                f"KNOWN_SHORT")
        all_problems += problems
    if args.table or all_problems:
        print(f"{'family':<18} {'collectives':<34} {'rank/model':<14} max rel err")
        for r in all_rows:
            print(f"{r[0]:<18} {r[1]:<34} {r[2]:<14} {r[3]}")
    for p in xfails:
        print("XFAIL " + p)
    for p in all_problems:
        print("FAIL " + p)
    n = len(all_rows)
    failed = {p.split(':')[0] for p in all_problems}
    xfailed = {p.split(':')[0] for p in xfails} - failed
    print(f"test_families: {n - len(failed) - len(xfailed)} of {n} family/tp configurations "
          f"passed, {len(xfailed)} known short of Megatron's minimum (XFAIL), {len(failed)} "
          f"failed ({os.path.relpath(args.models, REPO)})")
    return 1 if all_problems else 0


if __name__ == "__main__":
    sys.exit(main())
