#!/usr/bin/env python3
"""GPU benchmark: QuintNet (qn-run --device cuda) against PyTorch eager on a GPT-2-medium-shaped model.

In one invocation, side by side, on the same weights, inputs and GPU:
  (a) qn        a GPT-2 built by gen_models.build_gpt2, in the form torch.onnx.export
                gives GPT2LMHeadModel (24 layers, hidden 1024, 16 heads, vocab 50257,
                context 1024 by default; random weights from a fixed seed; fp16),
                qn-compile --tp 1, qn-run --device cuda --bench K: median latency;
  (b) torch     a minimal GPT-2 forward in PyTorch eager using exactly the ONNX
                model's initializers (onnx.numpy_helper), fp16, torch.no_grad, the
                same ops (addmm as HF's Conv1D, explicit Q.K^T / scale / where /
                softmax / P.V, tanh GELU spelled out as HF's NewGELUActivation);
                timed with inputs and logits resident on the GPU, and host to
                host (ids copied in, logits copied out, as a qn-run run does);
                ratio qn / torch (target <= 1.0) and the outputs compared
                (normwise max|qn - torch| <= 1e-2 max|torch|);
  (c) GEMMs     per distinct GEMM shape (QKV, attention out, MLP up, MLP down, LM
                head, the attention batched Q.K^T and P.V): torch.matmul (cuBLAS)
                alone on that shape, its TFLOP/s; qn's own time per GEMM of that
                shape, measured with probe models (R and 2R MatMuls of one input
                and one constant, each cut by a 1x1 Slice; per GEMM = the
                difference / R, so input upload and launch costs cancel; each
                GEMM carries one tiny Slice kernel); and for the whole model:
                total GEMM FLOPs / qn latency, against the sum of the
                cuBLAS-alone times (the GEMM-bound floor).
Prints a markdown table and the GPU name.

--cpu-smoke runs the whole pipeline on a tiny config on the CPU device (torch on
the CPU if it is importable), to check the script on a machine without a GPU;
without torch it still builds the model in fp32 and fp16, checks that
models/to_fp16.py turns the one into the other exactly, runs ONNX Runtime on both,
qn-compile, qn-run --device cpu --bench, and the GEMM probes.

Usage:
  python3 bench/bench_gpu.py [--bin build/bin] [--runs K] [--layers L] [--hidden H]
                             [--heads N] [--vocab V] [--ctx C] [--batch B] [--seq S]
                             [--no-qn-gemms] [--work DIR] [--json FILE] [--check]
  python3 bench/bench_gpu.py --cpu-smoke
Exit status: 0; 77 without a CUDA GPU; 2 without PyTorch on a GPU machine (or a
missing tool); 1 with --check when an output differs or qn / torch > 1.0.
"""
import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "test", "e2e"))
import qn_tools  # noqa: E402  (shared with test/e2e/test_gpu.py)

to_fp16 = qn_tools.load_models_module("to_fp16")
gen_models = qn_tools.load_models_module("gen_models")

IR_VERSION, OPSET = gen_models.IR_VERSION, gen_models.OPSET
SEED = 20240611
RTOL = 1e-2          # fp16 outputs, normwise
TARGET_RATIO = 1.0   # qn / torch eager, at most
SKIP = 77
BENCH_RE = re.compile(r"^bench rank=(\d+) runs=(\d+) median_ms=([0-9.eE+-]+) "
                      r"collective_ms=([0-9.eE+-]+)(?: collective_share=([0-9.eE+-]+)%)?"
                      r"(?: device_ms=([0-9.eE+-]+))?\s*$")
FULL = dict(layers=24, hidden=1024, heads=16, vocab=50257, ctx=1024, batch=8, seq=512, runs=20)
SMOKE = dict(layers=2, hidden=64, heads=4, vocab=1031, ctx=64, batch=2, seq=16, runs=3)


def die(msg, code=2):
    print(f"bench_gpu: {msg}", file=sys.stderr)
    sys.exit(code)


# --------------------------------------------------------------------------- model
def build_gpt2(cfg, dtype=np.float16, seed=SEED):
    """gen_models.build_gpt2 (the bundled gpt2_tiny's form, as torch.onnx.export
    gives HF's GPT2LMHeadModel at opset 17) at cfg's size, in `dtype`, weights as
    HF initialises GPT-2 (weights="hf": normal std 0.02, c_proj scaled by
    1/sqrt(2 layers), small random biases and LN parameters) drawn in float32
    from a generator seeded with `seed`: build_gpt2(cfg, float32) converted by
    to_fp16.convert is build_gpt2(cfg, float16) exactly. Not checked here:
    save_model checks the file."""
    return gen_models.build_gpt2(np.random.default_rng(seed), layers=cfg["layers"],
                                 hidden=cfg["hidden"], heads=cfg["heads"], vocab=cfg["vocab"],
                                 n_pos=cfg["ctx"], dtype=dtype, weights="hf",
                                 producer_name="quintnet-bench_gpu", check=False)


def save_model(model, path):
    """Saved with external data past 64 MiB (qn-compile reads it; the in-memory
    model then refers to the file); checked."""
    big = model.ByteSize() > (64 << 20)
    to_fp16.save(model, path, external_data=big)
    onnx.checker.check_model(path, full_check=not big)
    return path


def build_gemm_probe(batch, m, k, n, reps, seed=1):
    """x[*batch, m, k] (input) times one constant w[*batch?, k, n], `reps` times,
    each product cut to its first element by a Slice, the cuts concatenated:
    `reps` GEMMs of the shape, a few tiny kernels, a tiny output. The constant
    is 2-D (a Linear for qn) when batch is empty, else batched like attention."""
    rng = np.random.default_rng(seed)
    xs = list(batch) + [m, k]
    ws = list(batch) + [k, n]
    r = len(xs)
    w = (rng.standard_normal(ws, dtype=np.float32) / np.float32(math.sqrt(k))).astype(np.float16)
    init = gen_models.init
    inits = [init("w", w), init("starts", np.zeros(2, np.int64)),
             init("ends", np.ones(2, np.int64)), init("axes", np.array([r - 2, r - 1], np.int64))]
    nodes, cuts = [], []
    for i in range(reps):
        nodes.append(helper.make_node("MatMul", ["x", "w"], [f"y{i}"], name=f"/gemm{i}/MatMul"))
        nodes.append(helper.make_node("Slice", [f"y{i}", "starts", "ends", "axes"], [f"c{i}"],
                                      name=f"/gemm{i}/Slice"))
        cuts.append(f"c{i}")
    nodes.append(helper.make_node("Concat", cuts, ["out"], name="/Concat", axis=r - 1))
    graph = helper.make_graph(
        nodes, "gemm_probe",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT16, xs)],
        outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT16,
                                               list(batch) + [1, reps])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="quintnet-bench_gpu-probe")
    model.ir_version = IR_VERSION
    return model


def gemm_shapes(cfg):
    """(label, batch, M, K, N, count per forward) of every distinct GEMM."""
    L, H, nh, V = cfg["layers"], cfg["hidden"], cfg["heads"], cfg["vocab"]
    B, S = cfg["batch"], cfg["seq"]
    M, hd = B * S, H // nh
    return [
        ("QKV (c_attn)", (), M, H, 3 * H, L),
        ("attn out (c_proj)", (), M, H, H, L),
        ("MLP up (c_fc)", (), M, H, 4 * H, L),
        ("MLP down (c_proj)", (), M, 4 * H, H, L),
        ("LM head", (), M, H, V, 1),
        ("attn Q.K^T (batched)", (B, nh), S, hd, S, L),
        ("attn P.V (batched)", (B, nh), S, S, hd, L),
    ]


def gemm_flops(batch, m, k, n):
    return 2.0 * math.prod(batch) * m * k * n


# --------------------------------------------------------------------------- tools
def tool(args, name):
    return os.path.join(args.bin, name)


def run(cmd, timeout=1800):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        die(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-3000:]}",
            1)
    return proc


def qn_compile(args, model_path, plan):
    run([tool(args, "qn-compile"), model_path, "--tp", "1", "-o", plan, "--quiet"])


def qn_bench(args, plan, inputs, out_dir, runs, device):
    cmd = [tool(args, "qn-run"), plan, "--device", device, "--bench", str(runs),
           "--output-dir", out_dir, "--quiet"]
    if device == "cpu":
        cmd += ["--nproc", "1"]
    for name, path in inputs.items():
        cmd += ["--input", f"{name}={path}"]
    t0 = time.perf_counter()
    proc = run(cmd)
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        m = BENCH_RE.match(line.strip())
        if m and int(m.group(1)) == 0:
            if int(m.group(2)) != runs:
                die(f"qn-run reported runs={m.group(2)}, asked for {runs}", 1)
            share = float(m.group(5)) if m.group(5) is not None else None
            return dict(median_ms=float(m.group(3)), collective_ms=float(m.group(4)),
                        collective_share=share, wall_s=wall,
                        device_ms=float(m.group(6)) if m.group(6) is not None else None)
    die(f"no 'bench rank=0 ...' line in qn-run's output:\n{proc.stdout}\n{proc.stderr}", 1)


def normwise(got, ref):
    g, r = got.astype(np.float64), ref.astype(np.float64)
    if g.shape != r.shape:
        return float("inf")
    if not np.all(np.isfinite(g)):
        return float("inf")
    scale = float(np.max(np.abs(r)))
    err = float(np.max(np.abs(g - r)))
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


# --------------------------------------------------------------------------- torch
class TorchGPT2:
    """The ONNX graph's forward in PyTorch eager, on its initializers."""

    def __init__(self, torch, model_path, cfg, device, dtype):
        self.t = torch
        self.cfg = cfg
        self.dev = device
        model = onnx.load(model_path)  # external data included
        self.w = {}
        for t in model.graph.initializer:
            a = numpy_helper.to_array(t)
            if a.dtype == np.float16 or a.dtype == np.float32:
                a = a.astype({torch.float16: np.float16, torch.float32: np.float32}[dtype])
            self.w[t.name] = torch.from_numpy(np.array(a, copy=True, order="C")).to(device)
        del model
        self.scale = self.w["scale"]          # scalar tensors, as the graph uses them
        self.mask_value = self.w["mask_value"]

    def linear(self, prefix, x):
        # HF Conv1D: addmm(bias, x.view(-1, nx), weight) -- weight is [in, out]
        shape = x.shape[:-1]
        w = self.w[f"onnx::MatMul_{prefix}"]
        y = self.t.addmm(self.w[f"{prefix}.bias"], x.reshape(-1, x.shape[-1]), w)
        return y.view(*shape, w.shape[1])

    def ln(self, prefix, x):
        return self.t.nn.functional.layer_norm(x, (x.shape[-1],), self.w[f"{prefix}.weight"],
                                               self.w[f"{prefix}.bias"], eps=1e-5)

    def forward(self, ids, pos, sdpa=False):
        t, w, c = self.t, self.w, self.cfg
        B, T = ids.shape
        nh = c["heads"]
        hd = c["hidden"] // nh
        h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][pos]
        causal = w["bias"][:, :, :T, :T]
        for L in range(c["layers"]):
            p = f"transformer.h.{L}"
            x = self.ln(f"{p}.ln_1", h)
            q, k, v = self.linear(f"{p}.attn.c_attn", x).split(c["hidden"], dim=2)
            q = q.view(B, T, nh, hd).permute(0, 2, 1, 3)
            v = v.view(B, T, nh, hd).permute(0, 2, 1, 3)
            if sdpa:
                k = k.view(B, T, nh, hd).permute(0, 2, 1, 3)
                ctx = t.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                k = k.view(B, T, nh, hd).permute(0, 2, 3, 1)
                s = t.matmul(q, k) / self.scale
                s = t.where(causal, s, self.mask_value)
                ctx = t.matmul(t.softmax(s, dim=-1), v)
            ctx = ctx.permute(0, 2, 1, 3).reshape(B, T, c["hidden"])
            h = h + self.linear(f"{p}.attn.c_proj", ctx)
            x = self.linear(f"{p}.mlp.c_fc", self.ln(f"{p}.ln_2", h))
            # HF NewGELUActivation, as the graph spells it
            g = 0.5 * x * (1.0 + t.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * t.pow(x, 3.0))))
            h = h + self.linear(f"{p}.mlp.c_proj", g)
        x = self.ln("transformer.ln_f", h)
        return t.matmul(x, w["onnx::MatMul_lm_head"])


def sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(torch, device, fn, runs, warmup):
    for _ in range(warmup):
        fn()
    sync(torch, device)
    times = []
    for _ in range(runs):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def host_median_ms(torch, device, fn, runs, warmup):
    """Wall time per call with a synchronisation at the end of each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync(torch, device)
        t0 = time.perf_counter()
        fn()
        sync(torch, device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gemm_alone_ms(torch, device, dtype, batch, m, k, n):
    """torch.matmul (cuBLAS on the GPU) on contiguous operands of the shape."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(*batch, m, k, generator=g).to(device=device, dtype=dtype)
    b = (torch.randn(*batch, k, n, generator=g) / math.sqrt(k)).to(device=device, dtype=dtype)
    out = torch.empty(*batch, m, n, device=device, dtype=dtype)

    def once():
        torch.matmul(a, b, out=out)

    once()
    sync(torch, device)
    t0 = time.perf_counter()
    once()
    sync(torch, device)
    est = max(time.perf_counter() - t0, 1e-6)
    inner = int(min(200, max(1, 0.02 / est)))  # ~20 ms per sample
    samples = []
    for _ in range(5):
        if device == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(inner):
                once()
            e1.record()
            e1.synchronize()
            samples.append(e0.elapsed_time(e1) / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                once()
            samples.append((time.perf_counter() - t0) * 1e3 / inner)
    return statistics.median(samples)


def import_torch():
    try:
        import torch  # noqa: F401
    except Exception as ex:  # noqa: BLE001 - ImportError or a broken install
        return None, f"{type(ex).__name__}: {ex}"
    if not hasattr(torch, "float16"):  # a stray folder named torch on sys.path
        return None, f"'torch' resolves to {list(getattr(torch, '__path__', []))}, not PyTorch"
    return torch, ""


# --------------------------------------------------------------------------- main
def fmt(x, spec=".2f", none="n/a"):
    return none if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("QN_BIN", os.path.join(REPO, "build", "bin")))
    ap.add_argument("--layers", type=int, help="transformer blocks (default 24; smoke 2)")
    ap.add_argument("--hidden", type=int, help="hidden size (default 1024; smoke 64)")
    ap.add_argument("--heads", type=int, help="attention heads (default 16; smoke 4)")
    ap.add_argument("--vocab", type=int, help="vocabulary (default 50257; smoke 1031)")
    ap.add_argument("--ctx", type=int, help="context, the position table's length (default "
                                            "1024; smoke 64)")
    ap.add_argument("--batch", type=int, help="batch (default 8; smoke 2)")
    ap.add_argument("--seq", type=int, help="sequence length (default 512; smoke 16)")
    ap.add_argument("--runs", type=int, help="timed runs, qn-run --bench K (default 20; smoke 3)")
    ap.add_argument("--warmup", type=int, default=3, help="torch warm-up runs")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-qn-gemms", action="store_true",
                    help="skip qn's per-shape GEMM probes (section c keeps cuBLAS alone)")
    ap.add_argument("--no-sdpa", action="store_true",
                    help="skip the extra torch row with scaled_dot_product_attention")
    ap.add_argument("--work", metavar="DIR", help="work in DIR and keep it (model, plans)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the outputs differ or qn / torch exceeds the target")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny config, CPU device, torch on the CPU if importable")
    args = ap.parse_args()
    for k, v in (SMOKE if args.cpu_smoke else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.bin = os.path.abspath(args.bin)
    missing = qn_tools.missing_tool(args.bin)
    if missing:
        die(f"{missing} not found (build first, or pass --bin DIR / set QN_BIN)")
    if args.hidden % args.heads:
        die(f"--hidden {args.hidden} is not divisible by --heads {args.heads}")
    if args.seq > args.ctx:
        die(f"--seq {args.seq} exceeds the context --ctx {args.ctx}")
    cfg = {k: getattr(args, k) for k in ("layers", "hidden", "heads", "vocab", "ctx", "batch", "seq")}

    device = "cpu" if args.cpu_smoke else "cuda"
    torch, torch_err = import_torch()
    gpus = []
    if not args.cpu_smoke:
        gpus, why = qn_tools.list_gpus(tool(args, "qn-run"))
        if not gpus:
            print(f"bench_gpu: SKIPPED: no CUDA GPU ({why}); on a machine without one, "
                  f"run --cpu-smoke", file=sys.stderr)
            return SKIP
        if torch is None:
            die(f"PyTorch is needed for the comparison and is not importable ({torch_err}); "
                f"pip install torch (a CUDA build) and run again")
        if not torch.cuda.is_available():
            die("PyTorch is installed but sees no CUDA device (a CPU-only build, or "
                "CUDA_VISIBLE_DEVICES?)")
    elif torch is None:
        print(f"bench_gpu: torch not importable ({torch_err}): the torch parts are skipped")

    work = args.work or tempfile.mkdtemp(prefix="qn-bench-gpu-")
    os.makedirs(work, exist_ok=True)
    try:
        return bench(args, cfg, device, torch, gpus, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def bench(args, cfg, device, torch, gpus, work):
    res = dict(config=cfg, device=device, runs=args.runs, notes=[])
    B, S = cfg["batch"], cfg["seq"]
    say = lambda *a: print("bench_gpu:", *a, flush=True)  # noqa: E731

    # -- the model (fp16), and on the smoke path the converter sanity checks
    t0 = time.perf_counter()
    m16 = build_gpt2(cfg, np.float16, args.seed)
    param_bytes = sum(numpy_helper.to_array(t).nbytes for t in m16.graph.initializer)
    path16 = save_model(m16, os.path.join(work, "gpt2_fp16.onnx"))  # m16 now points at it
    say(f"model written ({param_bytes / 2**20:.0f} MiB of weights, "
        f"{time.perf_counter() - t0:.1f} s): {path16}")
    del m16
    rng = np.random.default_rng(args.seed + 1)
    ids = rng.integers(0, cfg["vocab"], size=(B, S), dtype=np.int64)
    pos = np.broadcast_to(np.arange(S, dtype=np.int64), (B, S)).copy()
    inputs = {"input_ids": os.path.join(work, "input_ids.npy"),
              "position_ids": os.path.join(work, "position_ids.npy")}
    np.save(inputs["input_ids"], ids)
    np.save(inputs["position_ids"], pos)

    ort_ref = None
    if args.cpu_smoke:
        import onnxruntime as ort
        ort.set_default_logger_severity(3)
        m32 = build_gpt2(cfg, np.float32, args.seed)
        conv = to_fp16.convert(m32)
        to_fp16.check(conv)
        m16 = onnx.load(path16)
        same_w = all(a.name == b.name and a.data_type == b.data_type
                     and np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
                     for a, b in zip(conv.graph.initializer, m16.graph.initializer)) \
            and len(conv.graph.initializer) == len(m16.graph.initializer)
        same_g = [n.SerializeToString() for n in conv.graph.node] == \
                 [n.SerializeToString() for n in m16.graph.node] and \
                 conv.graph.output[0].type == m16.graph.output[0].type
        res["to_fp16_matches_fp16_build"] = bool(same_w and same_g)
        say(f"to_fp16(fp32 build) == fp16 build: weights {'yes' if same_w else 'NO'}, "
            f"graph {'yes' if same_g else 'NO'}; to_fp16 output passes onnx.checker "
            f"and strict shape inference")
        feeds = {"input_ids": ids, "position_ids": pos}
        ref_model = to_fp16.round_weights(m32)
        ort_ref = ort.InferenceSession(ref_model.SerializeToString(),
                                       providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        sess16 = ort.InferenceSession(path16, providers=["CPUExecutionProvider"],
                                      disabled_optimizers=["SimplifiedLayerNormFusion"])
        ort16 = sess16.run(None, feeds)[0]
        res["ort_fp16_vs_ref"] = normwise(ort16, ort_ref)
        say(f"ONNX Runtime CPU on the fp16 model vs fp32 on fp16-rounded weights: "
            f"{res['ort_fp16_vs_ref']:.2e} (tol {RTOL:.0e})")
        del m32, conv, m16, ref_model

    # -- (a) qn
    plan = os.path.join(work, "plan")
    t0 = time.perf_counter()
    qn_compile(args, path16, plan)
    say(f"qn-compile --tp 1: {time.perf_counter() - t0:.1f} s")
    out_dir = os.path.join(work, "qn-out")
    qn = qn_bench(args, plan, inputs, out_dir, args.runs, device)
    qn_logits = np.load(os.path.join(out_dir, "logits.npy"))
    res["qn"] = qn
    say(f"qn-run --device {device} --bench {args.runs}: median {qn['median_ms']:.3f} ms "
        f"(process wall {qn['wall_s']:.1f} s)")
    if qn_logits.dtype != np.float16:
        res["notes"].append(f"qn wrote logits as {qn_logits.dtype}, expected float16")
    if ort_ref is not None:
        res["qn_vs_ort_ref"] = normwise(qn_logits, ort_ref)
        say(f"qn ({device}) vs ONNX Runtime fp32 on fp16-rounded weights: "
            f"{res['qn_vs_ort_ref']:.2e} (tol {RTOL:.0e})")

    # -- (b) torch
    shapes = gemm_shapes(cfg)
    total_flops = sum(gemm_flops(b, m, k, n) * c for _, b, m, k, n, c in shapes)
    rows = {}
    if torch is not None:
        tdtype = torch.float16
        ok16 = True
        if device == "cpu":  # some torch CPU builds lack fp16 kernels: fall back to fp32 math
            try:
                torch.nn.functional.layer_norm(torch.ones(2, 4, dtype=tdtype), (4,))
                torch.softmax(torch.ones(2, 4, dtype=tdtype), -1)
                torch.matmul(torch.ones(2, 4, dtype=tdtype), torch.ones(4, 2, dtype=tdtype))
            except RuntimeError:
                ok16 = False
                tdtype = torch.float32
                res["notes"].append("torch CPU lacks fp16 kernels: torch ran in fp32 on the "
                                    "fp16 weights")
        res["torch_version"] = torch.__version__
        tm = TorchGPT2(torch, path16, cfg, device, tdtype)
        tids = torch.from_numpy(ids).to(device)
        tpos = torch.from_numpy(pos).to(device)
        with torch.inference_mode():
            logits = tm.forward(tids, tpos)
            t_logits = logits.float().cpu().numpy()
            dev_ms = median_ms(torch, device, lambda: tm.forward(tids, tpos), args.runs,
                               args.warmup)

            def host_to_host():
                i = torch.from_numpy(ids).to(device)
                p = torch.from_numpy(pos).to(device)
                return tm.forward(i, p).cpu().numpy()

            h2h_ms = host_median_ms(torch, device, host_to_host, args.runs, args.warmup)
            rows["torch eager, in/out on the device"] = dev_ms
            rows["torch eager, host to host (like a qn-run run)"] = h2h_ms
            if device == "cuda" and not args.no_sdpa:
                try:
                    sd = tm.forward(tids, tpos, sdpa=True)
                    res["torch_sdpa_vs_eager"] = normwise(sd.float().cpu().numpy(), t_logits)
                    rows["torch + SDPA (flash attention), on the device"] = median_ms(
                        torch, device, lambda: tm.forward(tids, tpos, sdpa=True), args.runs,
                        args.warmup)
                except RuntimeError as ex:
                    res["notes"].append(f"SDPA row skipped: {ex}")
            del logits
        res["torch_ms"] = rows
        res["qn_vs_torch"] = normwise(qn_logits, t_logits.astype(np.float32))
        res["ratio_qn_over_torch_h2h"] = qn["median_ms"] / h2h_ms
        res["ratio_qn_over_torch_device"] = qn["median_ms"] / dev_ms
        if ort_ref is not None:
            res["torch_vs_ort_ref"] = normwise(t_logits, ort_ref)
        del tm
        if device == "cuda":
            torch.cuda.empty_cache()

    # -- (c) GEMMs
    gemm_rows = []
    for label, b, m, k, n, count in shapes:
        row = dict(label=label, batch=list(b), m=m, k=k, n=n, count=count,
                   gflop=gemm_flops(b, m, k, n) / 1e9)
        if torch is not None:
            gdt = torch.float16 if (device == "cuda" or ok16) else torch.float32
            row["cublas_ms"] = gemm_alone_ms(torch, device, gdt, b, m, k, n)
            row["cublas_tflops"] = row["gflop"] / row["cublas_ms"] / 1e3
        gemm_rows.append(row)
    if not args.no_qn_gemms:
        for row in gemm_rows:
            est = row.get("cublas_ms") or max(row["gflop"] / 300, 1e-4)  # ms, at a guessed 300 TFLOP/s
            reps = int(min(256, max(4, math.ceil((0.05 if args.cpu_smoke else 1.0) / est))))
            times = {}
            for r in (reps, 2 * reps):
                pdir = os.path.join(work, f"probe-{len(times)}")
                shutil.rmtree(pdir, ignore_errors=True)
                os.makedirs(pdir)
                probe = build_gemm_probe(tuple(row["batch"]), row["m"], row["k"], row["n"], r)
                ppath = save_model(probe, os.path.join(pdir, "probe.onnx"))
                del probe
                qn_compile(args, ppath, os.path.join(pdir, "plan"))
                xs = list(row["batch"]) + [row["m"], row["k"]]
                xp = os.path.join(pdir, "x.npy")
                np.save(xp, np.random.default_rng(2).standard_normal(xs, dtype=np.float32)
                        .astype(np.float16))
                times[r] = qn_bench(args, os.path.join(pdir, "plan"), {"x": xp},
                                    os.path.join(pdir, "out"), max(5, args.runs // 2),
                                    device)["median_ms"]
                shutil.rmtree(pdir, ignore_errors=True)
            per = (times[2 * reps] - times[reps]) / reps
            row["qn_probe_reps"] = reps
            row["qn_probe_ms"] = {str(k): v for k, v in times.items()}
            if per > 0:
                row["qn_ms"] = per
                row["qn_tflops"] = row["gflop"] / per / 1e3
                if row.get("cublas_ms"):
                    row["qn_over_cublas"] = per / row["cublas_ms"]
            else:
                row["qn_ms"] = None
                res["notes"].append(f"{row['label']}: probe difference not measurable "
                                    f"({times})")
    res["gemms"] = gemm_rows
    res["total_gemm_gflop"] = total_flops / 1e9
    res["qn_model_gemm_tflops"] = total_flops / (qn["median_ms"] * 1e-3) / 1e12
    if torch is not None:
        res["sum_cublas_ms"] = sum(r["cublas_ms"] * r["count"] for r in gemm_rows)
        res["cublas_floor_share_of_qn"] = res["sum_cublas_ms"] / qn["median_ms"]
    report(args, res, gpus, torch)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    failed = False
    for key in ("qn_vs_torch", "qn_vs_ort_ref", "ort_fp16_vs_ref"):
        if key in res and not res[key] <= RTOL:
            failed = True
    if args.cpu_smoke and res.get("to_fp16_matches_fp16_build") is False:
        failed = True
    if not args.cpu_smoke and res.get("ratio_qn_over_torch_h2h", 0) > TARGET_RATIO:
        failed = True
    return 1 if (failed and args.check) else 0


def report(args, res, gpus, torch):
    cfg = res["config"]
    qn = res["qn"]
    dev = res["device"]
    print()
    if dev == "cuda":
        name = torch.cuda.get_device_name(0) if torch is not None else "?"
        print(f"GPU: {name} (qn-run --list-devices: {'; '.join(gpus)})")
    else:
        print("CPU smoke run (qn-run --device cpu, torch on the CPU): timings mean nothing")
    if torch is not None:
        print(f"torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if dev == "cuda" else ""))
    print(f"model: GPT-2, {cfg['layers']} layers, hidden {cfg['hidden']}, {cfg['heads']} heads, "
          f"vocab {cfg['vocab']}, context {cfg['ctx']}; fp16; batch {cfg['batch']} x seq "
          f"{cfg['seq']}; tp 1; median of {res['runs']} runs")
    print()
    tokens = cfg["batch"] * cfg["seq"]
    tflop = res["total_gemm_gflop"] / 1e3
    print("| runner | median ms | qn / this | tokens/s | GEMM TFLOP/s (model GEMM FLOPs / time) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| qn-run --device {dev} --bench {res['runs']} | {qn['median_ms']:.3f} | 1.00 | "
          f"{tokens / qn['median_ms'] * 1e3:,.0f} | {tflop / qn['median_ms'] * 1e3:.4g} |")
    for label, ms in res.get("torch_ms", {}).items():
        print(f"| {label} | {ms:.3f} | {qn['median_ms'] / ms:.2f} | {tokens / ms * 1e3:,.0f} | "
              f"{tflop / ms * 1e3:.4g} |")
    print()
    if "ratio_qn_over_torch_h2h" in res:
        r = res["ratio_qn_over_torch_h2h"]
        print(f"qn / torch eager (host to host, as qn-run's run is timed): {r:.2f} "
              f"(target <= {TARGET_RATIO:.1f}: {'ok' if r <= TARGET_RATIO else 'MISSED'}); "
              f"against torch with in/out on the device: {res['ratio_qn_over_torch_device']:.2f}")
        e = res["qn_vs_torch"]
        print(f"outputs: max|qn - torch| / max|torch| = {e:.2e} (tol {RTOL:.0e}: "
              f"{'ok' if e <= RTOL else 'FAILED'})")
    if "torch_sdpa_vs_eager" in res:
        print(f"torch SDPA vs torch eager logits: {res['torch_sdpa_vs_eager']:.2e}")
    for key, label in (("qn_vs_ort_ref", "qn vs ONNX Runtime (fp32, fp16-rounded weights)"),
                       ("torch_vs_ort_ref", "torch vs ONNX Runtime (fp32, fp16-rounded weights)"),
                       ("ort_fp16_vs_ref", "ONNX Runtime fp16 vs fp32 on rounded weights")):
        if key in res:
            print(f"{label}: {res[key]:.2e} (tol {RTOL:.0e}: {'ok' if res[key] <= RTOL else 'FAILED'})")
    if "to_fp16_matches_fp16_build" in res:
        print(f"models/to_fp16.py on the fp32 build gives the fp16 build exactly: "
              f"{'yes' if res['to_fp16_matches_fp16_build'] else 'NO'}")
    if qn.get("collective_share") is not None:
        print(f"qn collective share: {qn['collective_share']:.1f}% (tp 1: expected 0)")
    print()
    alone = "cuBLAS" if dev == "cuda" else "torch.matmul"
    print(f"| GEMM | batch x M x K x N | per forward | GFLOP each | {alone} alone ms | "
          f"{alone} TFLOP/s | qn ms | qn TFLOP/s | qn / {alone} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["gemms"]:
        shape = "x".join(str(d) for d in r["batch"] + [r["m"], r["k"], r["n"]])
        print(f"| {r['label']} | {shape} | {r['count']} | {r['gflop']:.4g} | "
              f"{fmt(r.get('cublas_ms'), '.4f')} | {fmt(r.get('cublas_tflops'), '.4g')} | "
              f"{fmt(r.get('qn_ms'), '.4f')} | {fmt(r.get('qn_tflops'), '.4g')} | "
              f"{fmt(r.get('qn_over_cublas'), '.2f')} |")
    total = res["total_gemm_gflop"]
    line = (f"whole model: {total:,.4g} GFLOP of GEMMs per forward; qn achieves "
            f"{res['qn_model_gemm_tflops']:.4g} TFLOP/s over its whole latency")
    if "sum_cublas_ms" in res:
        line += (f"; the GEMMs alone on {alone} take {res['sum_cublas_ms']:.3f} ms = "
                 f"{100 * res['cublas_floor_share_of_qn']:.0f}% of qn's latency "
                 f"(qn latency / {alone} GEMM floor = {1 / res['cublas_floor_share_of_qn']:.2f})")
    print(line)
    if not args.no_qn_gemms:
        print("qn ms per GEMM: (t(2R) - t(R)) / R from probe models of R and 2R MatMuls of one "
              "input and one constant, each followed by a 1x1 Slice (included)")
    for n in res["notes"]:
        print("note: " + n)


if __name__ == "__main__":
    sys.exit(main())
