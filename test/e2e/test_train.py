#!/usr/bin/env python3
"""Training plans against PyTorch (the oracle).

Each case defines a small model in PyTorch, exports it with the TorchScript
exporter, compiles it with `qn-compile --train` at tp 1, 2 and 4, trains it
with `qn-run --train` on fixed batches and trains the same module (same
initial weights: the ones in the ONNX file) with the same optimizer in
PyTorch. The per-step losses must agree within 1e-4 relative (float32
throughout; PyTorch sums in another order), and the model `qn-run --save`
writes, run by ONNX Runtime, must give the trained module's outputs within
1e-4 of the largest.

With --device cuda the cases of CUDA_CASES train on the GPU (tp 1 over NCCL,
tp 2 and 4 on one GPU over the local engine): parameters and optimizer state
stay on the device; without a GPU the test prints "SKIPPED:" and exits 77.
Without -k it also checks, on the chosen device, that a resumed run continues
the loss trace bit for bit and that --eval leaves training untouched.

    python3 test/e2e/test_train.py --bin build/bin [-k NAME] [--keep DIR] [--device cuda]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

import qn_tools

try:
    import torch
    import torch.nn as nn
except ImportError:  # pragma: no cover
    print("test_train: PyTorch is not installed (scripts/install-deps.sh installs it)")
    sys.exit(1)

RTOL = 1e-4


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
from train_models import MLP, Block, GPT2Logits, LlamaLogits, ViT, export  # noqa: E402


def torch_losses(module, x, y, batch, steps, opt_args):
    torch.manual_seed(0)
    module.train()
    kind = opt_args["optimizer"]
    if kind == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=opt_args["lr"],
                              momentum=opt_args.get("momentum", 0.0),
                              weight_decay=opt_args.get("weight_decay", 0.0))
    else:
        opt = torch.optim.AdamW(module.parameters(), lr=opt_args["lr"],
                                weight_decay=opt_args.get("weight_decay", 0.01))
    for pname, param in module.named_parameters():
        if pname in opt_args.get("freeze", ()):
            param.requires_grad_(False)
    sched = None
    if opt_args.get("schedule") == "cosine":
        # qn-run's schedule for update t (1-based) of `steps`: linear warm-up
        # over w steps, then cosine decay to 0. LambdaLR counts from 0.
        import math
        w = opt_args.get("warmup", 0)

        def factor(k):
            t = k + 1
            if w and t <= w:
                return t / w
            return 0.5 * (1 + math.cos(math.pi * (t - w) / (steps - w)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses = []
    n = x.shape[0]
    per_epoch = (n + batch - 1) // batch
    for step in range(steps):
        pos = step % per_epoch
        xb = torch.from_numpy(x[pos * batch:(pos + 1) * batch])
        yb = torch.from_numpy(y[pos * batch:(pos + 1) * batch])
        opt.zero_grad()
        out = module(xb)
        loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1))
        loss.backward()
        if opt_args.get("clip"):
            torch.nn.utils.clip_grad_norm_(module.parameters(), opt_args["clip"])
        opt.step()
        if sched:
            sched.step()
        losses.append(loss.item())
    return np.array(losses)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("command failed: " + " ".join(cmd) + "\n" + p.stdout + p.stderr)
    return p


def qn_losses(bin_dir, onnx_path, work, tp, x, y, batch, steps, opt_args, save=None,
              device="cpu"):
    plan = os.path.join(work, f"plan_tp{tp}")
    cmd = [os.path.join(bin_dir, "qn-compile"), onnx_path, "--tp", str(tp), "--train", "-o", plan,
           "--quiet", "--optimizer", opt_args["optimizer"], "--lr", str(opt_args["lr"])]
    if "momentum" in opt_args:
        cmd += ["--momentum", str(opt_args["momentum"])]
    if "weight_decay" in opt_args:
        cmd += ["--weight-decay", str(opt_args["weight_decay"])]
    if opt_args.get("clip"):
        cmd += ["--clip-grad-norm", str(opt_args["clip"])]
    if opt_args.get("freeze"):
        cmd += ["--freeze", ",".join(opt_args["freeze"])]
    cmd += opt_args.get("compile", [])
    if opt_args.get("schedule"):
        cmd += ["--lr-schedule", opt_args["schedule"], "--warmup-steps",
                str(opt_args.get("warmup", 0))]
    run(cmd)
    if opt_args.get("vocab_parallel") and tp > 1:
        # The word embedding is vocab-parallel and the logits reach the loss
        # vocab-sharded (tp class groups), never gathered.
        with open(os.path.join(plan, "plan.json")) as f:
            manifest = json.load(f)
        vocab = [e for e in manifest["embeddings"] if e.get("strategy") == "vocab"]
        if not vocab or manifest["training"]["class_groups"] != tp:
            raise RuntimeError(f"tp {tp}: not vocab-parallel: embeddings "
                               f"{manifest['embeddings']}, class groups "
                               f"{manifest['training']['class_groups']}")
    xs, ys = os.path.join(work, "x.npy"), os.path.join(work, "y.npy")
    np.save(xs, x)
    np.save(ys, y)
    log = os.path.join(work, f"loss_tp{tp}.csv")
    args = [plan, "--train", "--input", f"input={xs}", "--input", f"labels={ys}", "--batch",
            str(batch), "--steps", str(steps), "--loss-log", log, "--quiet"]
    args += ["--save", save] if save else []
    if device == "cuda":
        # As test_gpu.py runs inference: one rank over NCCL, several ranks
        # on one GPU over the local engine.
        args += ["--device", "cuda", "--comm", "nccl" if tp == 1 else "local"]
    qn_run = os.path.join(bin_dir, "qn-run")
    if opt_args.get("torchrun") and tp > 1 and device == "cpu":
        # Launched as torchrun does: one process per rank, RANK / WORLD_SIZE /
        # MASTER_ADDR / MASTER_PORT in the environment.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        procs = [subprocess.Popen([qn_run] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(tp),
                                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
                 for r in range(tp)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError("torchrun-style ranks failed:\n" + "\n".join(outs))
    else:
        run([qn_run, "--nproc", str(tp)] + args)
    data = np.loadtxt(log, delimiter=",", skiprows=1, ndmin=2)
    return data[:, 1]


def make_case(name):
    rng = np.random.default_rng(1)
    for prefix, seed, make, vocab in (("gpt2_odd_vocab", 3, GPT2Logits, 97),
                                      ("gpt2", 3, GPT2Logits, 96),
                                      ("llama", 5, LlamaLogits, 96)):
        if name.startswith(prefix):  # token ids and next-token labels
            torch.manual_seed(seed)
            module = make(vocab=vocab)
            x = rng.integers(0, vocab, (64, 8)).astype(np.int64)
            y = rng.integers(0, vocab, (64, 8)).astype(np.int64)
            return module, x, y
    if name.startswith("vit"):
        torch.manual_seed(4)
        module = ViT(hidden=32, heads=4, blocks=2)
        x = rng.random((64, 1, 28, 28)).astype(np.float32)
        return module, x, rng.integers(0, 10, 64).astype(np.int64)
    if name.startswith("mlp"):
        torch.manual_seed(1)
        module = MLP()
        x = rng.standard_normal((192, 784)).astype(np.float32)
    else:
        torch.manual_seed(2)
        module = Block()
        x = rng.standard_normal((96, 6, 64)).astype(np.float32)
    y = rng.integers(0, 10, x.shape[0]).astype(np.int64)
    return module, x, y


CASES = {
    # name: (optimizer args, steps, batch, tps)
    "mlp_sgd_momentum": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
                         50, 32, (1, 2, 4)),
    "mlp_adamw": ({"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01}, 50, 32, (1, 2, 4)),
    "mlp_sgd_clip": ({"optimizer": "sgd", "lr": 0.1, "clip": 0.5}, 20, 32, (1, 2)),
    "mlp_sgd_frozen": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                        "freeze": ["fc1.weight", "fc1.bias"]}, 20, 32, (1, 2)),
    "mlp_adamw_cosine_warmup": ({"optimizer": "adamw", "lr": 2e-3, "schedule": "cosine",
                                 "warmup": 5}, 20, 32, (1, 2)),
    "mlp_torchrun": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "torchrun": True},
                     10, 32, (2,)),
    # 2-layer GPT-2, tied embedding and LM head (exported as a transposed
    # copy: qn-compile ties them again), fused Q|K|V sharded head-wise.
    "gpt2_adamw": ({"optimizer": "adamw", "lr": 1e-3}, 20, 8, (1, 2, 4)),
    # The same, every weight sharded: the word embedding vocab-parallel, the
    # tied LM head column-parallel, the loss over vocab-sharded logits.
    "gpt2_vocab_parallel_adamw": ({"optimizer": "adamw", "lr": 1e-3, "vocab_parallel": True,
                                   "compile": ["--replicate-below", "0"]}, 20, 8, (1, 2, 4)),
    # A vocabulary (97) no tp divides: the table padded with zero rows to a
    # multiple of tp, the padded classes masked out of the loss, --save cuts
    # the padding off.
    "gpt2_odd_vocab_adamw": ({"optimizer": "adamw", "lr": 1e-3, "vocab_parallel": True,
                              "compile": ["--replicate-below", "0"]}, 20, 8, (1, 2, 4)),
    "gpt2_vocab_parallel_sgd_clip": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                                      "clip": 1.0, "vocab_parallel": True,
                                      "compile": ["--replicate-below", "0"]}, 20, 8, (2,)),
    # 2-layer Llama: RMSNorm, rotary embeddings (Slice/Neg/Concat, Sin/Cos of
    # the positions), grouped-query attention (2 K/V heads for 4), SiLU MLP.
    "llama_adamw": ({"optimizer": "adamw", "lr": 1e-3}, 20, 8, (1, 2, 4)),
    # The MNIST-shaped ViT: patch-embedding Conv, class token, positions.
    "vit_sgd": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, 50, 16, (1, 2, 4)),
    "vit_adamw": ({"optimizer": "adamw", "lr": 1e-3}, 50, 16, (1, 2, 4)),
    "block_sgd": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, 30, 16, (1, 2, 4)),
    "block_adamw": ({"optimizer": "adamw", "lr": 1e-3}, 30, 16, (1, 2, 4)),
}

def state_checks(bin_dir, device):
    """Where the state lives across steps (host buffers, or the GPU): a
    resumed run continues the uninterrupted one's loss trace bit for bit,
    and --eval (steps whose updates are dropped) leaves training untouched.
    Returns the failures."""
    failures = []
    module, x, y = make_case("mlp_adamw")
    with tempfile.TemporaryDirectory(prefix="qn_train_state_") as w:
        onnx_path = os.path.join(w, "mlp.onnx")
        export(module, torch.from_numpy(x[:2]), onnx_path)
        np.save(f"{w}/x.npy", x)
        np.save(f"{w}/y.npy", y)
        run([os.path.join(bin_dir, "qn-compile"), onnx_path, "--tp", "2", "--train", "--optimizer",
             "adamw", "--lr", "1e-3", "-o", f"{w}/plan", "--quiet"])
        base = [os.path.join(bin_dir, "qn-run"), f"{w}/plan", "--train", "--nproc", "2", "--input",
                f"input={w}/x.npy", "--input", f"labels={w}/y.npy", "--batch", "32", "--steps",
                "12", "--quiet"]
        if device == "cuda":
            base += ["--device", "cuda", "--comm", "local"]

        def trace(name):
            return open(f"{w}/{name}.csv").read().splitlines()[1:]

        run(base + ["--checkpoint", f"{w}/ck", "--checkpoint-every", "4", "--loss-log",
                    f"{w}/full.csv"])
        with open(f"{w}/ck/latest", "w") as f:
            f.write("step-4\n")
        run(base + ["--resume", f"{w}/ck", "--loss-log", f"{w}/resumed.csv"])
        ok = trace("resumed") == trace("full")[4:]
        print(f"{'PASS' if ok else 'FAIL'} {device}: resumed at step 4, the loss trace of steps "
              "5-12 equals the uninterrupted run's bit for bit")
        if not ok:
            failures.append("resume")
        run(base + ["--eval", f"input={w}/x.npy", "--eval", f"labels={w}/y.npy", "--loss-log",
                    f"{w}/eval.csv"])
        ok = trace("eval") == trace("full")
        print(f"{'PASS' if ok else 'FAIL'} {device}: --eval after every epoch leaves the loss "
              "trace bit for bit unchanged (its steps' updates are dropped)")
        if not ok:
            failures.append("eval")
    return failures


# With --device cuda (the GPU, or its CPU emulator in ctest): every optimizer
# path, the clipped norm, vocab-parallel GPT-2, the ViT (Conv patches) and
# the transformer block.
CUDA_CASES = ("mlp_sgd_momentum", "mlp_adamw", "mlp_sgd_clip", "mlp_sgd_frozen",
              "gpt2_vocab_parallel_adamw", "gpt2_odd_vocab_adamw", "llama_adamw", "vit_sgd",
              "block_adamw")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("-k", default="")
    ap.add_argument("--keep", default="")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where qn-run trains (cuda: skipped, exit 77, without a GPU; "
                    "the cases of CUDA_CASES)")
    args = ap.parse_args()
    if args.device == "cuda":
        gpus, reason = qn_tools.list_gpus(os.path.join(args.bin, "qn-run"))
        if not gpus:
            print(f"SKIPPED: no CUDA GPU ({reason})")
            return 77
        print("GPUs: " + "; ".join(gpus))
    torch.set_num_threads(1)
    failures = 0
    ran = 0
    for name, (opt_args, steps, batch, tps) in CASES.items():
        if args.k not in name or (args.device == "cuda" and name not in CUDA_CASES):
            continue
        work = args.keep or tempfile.mkdtemp(prefix="qn_train_")
        os.makedirs(work, exist_ok=True)
        try:
            module, x, y = make_case(name)
            onnx_path = os.path.join(work, name + ".onnx")
            export(module, torch.from_numpy(x[:2]), onnx_path)
            ref = torch_losses(module, x, y, batch, steps, opt_args)
            # The trained module's outputs: what --save's file must give.
            module.eval()
            with torch.no_grad():
                want = module(torch.from_numpy(x[:8])).numpy()
            for tp in tps:
                ran += 1
                saved = os.path.join(work, f"trained_tp{tp}.onnx")
                got = qn_losses(args.bin, onnx_path, work, tp, x, y, batch, steps, opt_args, saved,
                                args.device)
                rel = np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6))
                sess = ort.InferenceSession(saved, providers=["CPUExecutionProvider"])
                out = sess.run(None, {"input": x[:8]})[0]
                wrel = float(np.max(np.abs(out - want)) / np.max(np.abs(want)))
                ok = got.shape == ref.shape and rel <= RTOL and wrel <= RTOL
                print(f"{'PASS' if ok else 'FAIL'} {name} tp={tp} {args.device}: {steps} steps, loss "
                      f"{ref[0]:.4f} -> {ref[-1]:.4f}, max rel diff vs PyTorch {rel:.2e}; "
                      f"--save's model vs the trained module {wrel:.2e}")
                if not ok:
                    failures += 1
                    for i, (a, b) in enumerate(zip(ref, got)):
                        print(f"  step {i + 1}: torch {a:.7f} qn {b:.7f}")
                        if i > 5:
                            break
        except RuntimeError as e:
            failures += 1
            print(f"FAIL {name}: {e}")
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    if not args.k:
        try:
            failed = state_checks(args.bin, args.device)
        except RuntimeError as e:
            failed = [str(e)]
            print(f"FAIL state checks: {e}")
        ran += 2
        failures += len(failed)
    if ran == 0:
        print(f"no case matches -k '{args.k}'")
        return 1
    print(f"test_train: {ran - failures if failures <= ran else 0} of {ran} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
