#!/usr/bin/env python3
"""Exports tiny Mistral, Qwen2 and Phi models (random weights from a fixed
seed, hidden 128, 2 layers, 4 heads, 2 KV heads where the family has GQA,
vocabulary 1024) with PyTorch's TorchScript ONNX exporter (opset 17, dynamic
batch and sequence axes) into --out-dir (default /tmp/families). Built from
configs: no network. Needs torch and transformers (4.41.2 tested); the
exported files are not bundled, rerun this script to regenerate them.

Usage: python3 models/export_families.py [--out-dir DIR] [--family NAME ...]
"""
import argparse
import os

import onnx
import torch

SEED = 20261126
HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, POSITIONS = 128, 2, 4, 2, 1024, 64


def configs():
    from transformers import MistralConfig, PhiConfig, Qwen2Config
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                  num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  max_position_embeddings=POSITIONS, use_cache=False,
                  attn_implementation="eager")
    return {
        "mistral": (MistralConfig, dict(common, num_key_value_heads=KV_HEADS, sliding_window=None)),
        "qwen2": (Qwen2Config, dict(common, num_key_value_heads=KV_HEADS, use_sliding_window=False)),
        # Phi (phi-2 layout): no GQA, partial rotary, parallel attention + MLP.
        "phi": (PhiConfig, dict(common)),
    }


def export(name, out_dir, seed):
    from transformers import AutoModelForCausalLM
    cls, kwargs = configs()[name]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cls(**kwargs), attn_implementation="eager")
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    path = os.path.join(out_dir, f"{name}.onnx")
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    with torch.no_grad():
        torch.onnx.export(model, (ids,), path, input_names=["input_ids"],
                          output_names=["logits"], dynamic_axes=dynamic, opset_version=17,
                          do_constant_folding=True, dynamo=False)
    m = onnx.load(path)
    m.ir_version = min(m.ir_version, 8)  # the C++ ONNX (1.12) reads IR 8
    onnx.save(m, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="/tmp/families")
    ap.add_argument("--family", action="append", choices=sorted(configs()),
                    help="export only these (repeatable; default: all)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for i, name in enumerate(["mistral", "qwen2", "phi"]):
        if not args.family or name in args.family:
            export(name, args.out_dir, SEED + i)


if __name__ == "__main__":
    main()
