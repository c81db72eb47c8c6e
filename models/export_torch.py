#!/usr/bin/env python3
"""Exports small GPT-2, BERT and Llama models with PyTorch's ONNX exporter
(TorchScript exporter, opset 17, dynamic batch and sequence axes, random
weights from a fixed seed) into models/torch/. Needs torch and transformers
(pip install torch transformers); the exported files are bundled, so tests
never need PyTorch.

Usage: python3 models/export_torch.py [--out-dir DIR]
"""
import argparse
import os

import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261125


def export(model, args, input_names, output_names, path):
    model.eval()
    dynamic = {n: {0: "batch", 1: "seq"} for n in input_names}
    dynamic.update({n: {0: "batch", 1: "seq"} for n in output_names})
    torch.onnx.export(model, args, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic, opset_version=17, do_constant_folding=True,
                      dynamo=False)
    m = onnx.load(path)
    m.ir_version = min(m.ir_version, 8)  # the C++ ONNX (1.12) reads IR 8
    onnx.save(m, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(HERE, "torch"))
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    ids = torch.randint(0, 1024, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 8, dtype=torch.long)

    torch.manual_seed(SEED)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=1024, n_positions=64, n_embd=64, n_layer=2,
                                      n_head=4, use_cache=False, attn_implementation="eager"))
    export(gpt2, (ids,), ["input_ids"], ["logits"], os.path.join(args.out_dir, "gpt2.onnx"))

    torch.manual_seed(SEED + 1)
    bert = BertModel(BertConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=256,
                                max_position_embeddings=64, attn_implementation="eager"),
                     add_pooling_layer=False)
    export(bert, (ids, mask, torch.zeros_like(ids)),
           ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state"],
           os.path.join(args.out_dir, "bert.onnx"))

    torch.manual_seed(SEED + 2)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=64,
                                         use_cache=False, attn_implementation="eager"))
    export(llama, (ids,), ["input_ids"], ["logits"], os.path.join(args.out_dir, "llama.onnx"))


if __name__ == "__main__":
    main()
