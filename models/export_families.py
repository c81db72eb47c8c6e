#!/usr/bin/env python3
"""Exports tiny configs of 14 Hugging Face model families (plus Llama, Mistral
and Qwen2 with an attention_mask input) with PyTorch's TorchScript ONNX
exporter (opset 17) or, with --exporter dynamo, its default dynamo-based one
(the opset and IR it picks: 20 and 10 with torch 2.15) (dynamic batch and
sequence axes; random weights from a fixed seed; built from configs, no
network) at hidden 128 or 1024, and writes
each as a *skeleton*: the ONNX graph with its Linear and embedding weights
(float initializers read as a MatMul's or Gemm's B, a Gather's table or a
Conv's kernel, 1024 elements or more) taken out, their names, shapes and standard deviations kept
in the model's metadata (key "quintnet.rehydrate"). A skeleton is a few kB to
a few hundred kB, so the test suite bundles them (models/families/) and needs
no PyTorch; `rehydrate()` (models/families/rehydrate.py) puts seeded normal
weights of the recorded deviation back. Everything else the exporter wrote
(norms, biases, masks, rotary tables, shape constants) is kept as exported.

Needs torch and transformers (4.41.2 tested).

Usage: python3 models/export_families.py [--out-dir DIR] [--hidden 128|1024]
                                         [--family NAME ...] [--full]
  --full   also keep the whole exported model (NAME.full.onnx)
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261204
LAYERS, VOCAB, POSITIONS = 2, 1024, 64
# hidden -> (heads, kv_heads): head_dim 32 at 128, 64 at 1024. Four heads at
# hidden 128 allow tp 4; two KV heads there test GQA with fewer KV heads than
# ranks at tp 4.
SIZES = {128: (4, 2), 1024: (16, 4)}
MIN_STRIP = 1024  # elements: smaller weights stay in the skeleton


def family_specs(hidden):
    """name -> (builder(), example inputs (name -> tensor), output names, info).
    info goes into the skeleton's metadata for the tests: layers, heads,
    kv_heads and the inputs' kinds."""
    import torch
    import transformers as tf

    heads, kv = SIZES[hidden]
    inter = 4 * hidden
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 8), generator=g)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :2] = 0  # a padded row: the mask path matters
    causal = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                  num_hidden_layers=LAYERS, num_attention_heads=heads,
                  max_position_embeddings=POSITIONS, use_cache=False)
    lm = lambda cls, **kw: (lambda: tf.AutoModelForCausalLM.from_config(
        cls(**kw), attn_implementation="eager"))
    ids_in = {"input_ids": ids}
    ids_mask_in = {"input_ids": ids, "attention_mask": mask}
    logits = ["logits"]
    hidden_out = ["last_hidden_state"]
    specs = {
        "gpt2": (lm(tf.GPT2Config, vocab_size=VOCAB, n_embd=hidden, n_layer=LAYERS, n_head=heads,
                    n_positions=POSITIONS, use_cache=False), ids_in, logits, dict(kv_heads=heads)),
        "llama": (lm(tf.LlamaConfig, **causal, num_key_value_heads=kv), ids_in, logits,
                  dict(kv_heads=kv)),
        "mistral": (lm(tf.MistralConfig, **causal, num_key_value_heads=kv, sliding_window=None),
                    ids_in, logits, dict(kv_heads=kv)),
        "qwen2": (lm(tf.Qwen2Config, **causal, num_key_value_heads=kv, use_sliding_window=False),
                  ids_in, logits, dict(kv_heads=kv)),
        "phi": (lm(tf.PhiConfig, **causal), ids_in, logits, dict(kv_heads=heads)),
        "phi3": (lm(tf.Phi3Config, **causal, num_key_value_heads=heads, pad_token_id=0),
                 ids_in, logits, dict(kv_heads=heads)),
        "gemma": (lm(tf.GemmaConfig, **causal, num_key_value_heads=kv, head_dim=hidden // heads),
                  ids_in, logits, dict(kv_heads=kv)),
        "gpt_neox": (lm(tf.GPTNeoXConfig, **causal, rotary_pct=0.25, use_parallel_residual=True),
                     ids_in, logits, dict(kv_heads=heads)),
        "falcon": (lm(tf.FalconConfig, vocab_size=VOCAB, hidden_size=hidden,
                      num_hidden_layers=LAYERS, num_attention_heads=heads, multi_query=True,
                      new_decoder_architecture=False, parallel_attn=True, alibi=False,
                      bias=False, max_position_embeddings=POSITIONS, use_cache=False),
                   ids_in, logits, dict(kv_heads=1)),
        "opt": (lm(tf.OPTConfig, vocab_size=VOCAB, hidden_size=hidden, ffn_dim=inter,
                   num_hidden_layers=LAYERS, num_attention_heads=heads,
                   max_position_embeddings=POSITIONS, word_embed_proj_dim=hidden,
                   use_cache=False), ids_in, logits, dict(kv_heads=heads)),
        "bert": (lambda: tf.BertModel(tf.BertConfig(
            vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=LAYERS,
            num_attention_heads=heads, intermediate_size=inter,
            max_position_embeddings=POSITIONS), add_pooling_layer=False),
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)},
            hidden_out, dict(kv_heads=heads)),
        "distilbert": (lambda: tf.DistilBertModel(tf.DistilBertConfig(
            vocab_size=VOCAB, dim=hidden, hidden_dim=inter, n_layers=LAYERS, n_heads=heads,
            max_position_embeddings=POSITIONS)), ids_mask_in, hidden_out, dict(kv_heads=heads)),
        "t5_encoder": (lambda: tf.T5EncoderModel(tf.T5Config(
            vocab_size=VOCAB, d_model=hidden, d_kv=hidden // heads, d_ff=inter,
            num_layers=LAYERS, num_heads=heads, use_cache=False)), ids_in, hidden_out,
            dict(kv_heads=heads)),
        "vit": (lambda: tf.ViTModel(tf.ViTConfig(
            hidden_size=hidden, num_hidden_layers=LAYERS, num_attention_heads=heads,
            intermediate_size=inter, image_size=32, patch_size=8, num_channels=3),
            add_pooling_layer=False),
            {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}, hidden_out,
            dict(kv_heads=heads)),
    }
    for base in ("llama", "mistral", "qwen2"):
        b, _, out, info = specs[base]
        specs[base + "_mask"] = (b, ids_mask_in, out, info)
    for name, (_, _, _, info) in specs.items():
        info.update(layers=LAYERS, heads=heads, hidden=hidden, family=name)
    return specs


def strip(model, min_elems=MIN_STRIP):
    """Takes the Linear and embedding weights out of `model` (in place) and
    records them in its metadata; returns the number of bytes taken out."""
    weight_uses = set()
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1:
            weight_uses.add(n.input[1])
            if n.op_type == "MatMul":
                weight_uses.add(n.input[0])
        elif n.op_type == "Gather" and n.input:
            weight_uses.add(n.input[0])
        elif n.op_type == "Conv" and len(n.input) > 1:
            weight_uses.add(n.input[1])  # a patch embedding's kernel
    keep, taken, removed = [], {}, 0
    for t in model.graph.initializer:
        if (t.name in weight_uses and t.data_type == onnx.TensorProto.FLOAT
                and int(np.prod(t.dims)) >= min_elems):
            a = numpy_helper.to_array(t)
            taken[t.name] = {"dims": list(t.dims), "std": float(a.std()), "mean": float(a.mean())}
            removed += a.nbytes
        else:
            keep.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    # The taken weights become graph inputs of the skeleton, so that the
    # skeleton is a valid model on its own; rehydrate() turns them back.
    for name, rec in taken.items():
        model.graph.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, rec["dims"]))
    return taken, removed


def export(name, spec, out_dir, seed, keep_full, exporter="torchscript"):
    import torch
    build, inputs, outputs, info = spec
    torch.manual_seed(seed)
    model = build()
    model.eval()
    names = list(inputs)
    dynamic = {n: ({0: "batch"} if n == "pixel_values" else {0: "batch", 1: "seq"})
               for n in names}
    full = os.path.join(out_dir, f"{name}.full.onnx")
    with torch.no_grad():
        if exporter == "dynamo":
            # PyTorch's default exporter since 2.9, with its default opset
            # and IR (opset 20 and IR 10 with torch 2.15), as a user gets it.
            torch.onnx.export(model, tuple(inputs[n] for n in names), full, input_names=names,
                              output_names=outputs, dynamic_axes=dynamic, dynamo=True,
                              external_data=False, verbose=False)
        else:
            dynamic.update({n: {0: "batch", 1: "seq"} for n in outputs})
            torch.onnx.export(model, tuple(inputs[n] for n in names), full,
                              input_names=names, output_names=outputs, dynamic_axes=dynamic,
                              opset_version=17, do_constant_folding=True, dynamo=False)
    m = onnx.load(full)
    if exporter != "dynamo":
        m.ir_version = min(m.ir_version, 8)  # as bundled since ONNX 1.12 (IR 8) was the C++ library
    taken, removed = strip(m)
    info = dict(info, weights={k: v for k, v in sorted(taken.items())}, exporter=exporter)
    m.metadata_props.add(key="quintnet.rehydrate", value=json.dumps(info, sort_keys=True))
    path = os.path.join(out_dir, f"{name}.onnx")
    onnx.save(m, path)
    if not keep_full:
        os.remove(full)
    print(f"wrote {path} ({os.path.getsize(path)} bytes; {len(taken)} weights, "
          f"{removed} bytes taken out)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=None,
                    help="default: models/families/h<hidden>")
    ap.add_argument("--hidden", type=int, default=128, choices=sorted(SIZES))
    ap.add_argument("--family", action="append", help="export only these (repeatable)")
    ap.add_argument("--full", action="store_true", help="keep NAME.full.onnx too")
    ap.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                    help="torch.onnx.export(dynamo=False) at opset 17 (default; "
                         "models/families/h<hidden>) or PyTorch's default dynamo exporter "
                         "at its own opset and IR (models/families/dynamo-h<hidden>)")
    args = ap.parse_args()
    specs = family_specs(args.hidden)
    for f in args.family or []:
        if f not in specs:
            sys.exit(f"unknown family '{f}' (known: {', '.join(sorted(specs))})")
    prefix = "dynamo-" if args.exporter == "dynamo" else ""
    out_dir = args.out_dir or os.path.join(HERE, "families", f"{prefix}h{args.hidden}")
    os.makedirs(out_dir, exist_ok=True)
    for i, name in enumerate(sorted(specs)):
        if not args.family or name in args.family:
            export(name, specs[name], out_dir, SEED + i, args.full, args.exporter)


if __name__ == "__main__":
    main()
