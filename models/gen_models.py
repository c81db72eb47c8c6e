#!/usr/bin/env python3
"""Deterministic generator for QuintNet's small bundled models.

Writes, next to this file (or into --out-dir):

  mlp_gemm.onnx       MNIST-shaped MLP 784-512-512-10, ReLU, LogSoftmax(axis=1),
                      2-D input `input` float[batch,784] -> `output` float[batch,10].
  mlp_matmul3d.onnx   transformer-style MLP block on 3-D activations:
                      `x` float[batch,seq,256] -> Linear(256,1024) -> GELU (erf form)
                      -> Linear(1024,256) -> + x -> `y` float[batch,seq,256].

Each graph reproduces the structure that the PyTorch exporter
(`torch.onnx.export`, opset 17, dynamic batch/seq axes) emits for the
equivalent nn.Module: node and value names (`/fc1/Gemm`, `/relu/Relu`,
`/fc1/MatMul_output_0`, ...), Gemm with alpha=beta=1 and transB=1 for nn.Linear
on a 2-D input, MatMul against a pre-transposed initializer (`onnx::MatMul_N`)
followed by Add(bias, ...) for nn.Linear on a 3-D input, and nn.GELU() as
Div(sqrt 2) / Erf / Add(1) / Mul(x) / Mul(0.5) with scalar Constant nodes.
PyTorch itself is not a dependency: the graphs are built with onnx.helper.

Weights follow PyTorch's default nn.Linear init (weight and bias uniform in
±1/sqrt(fan_in)), drawn from a fixed-seed numpy generator, so re-running the
script produces byte-identical files. Models use ir_version 8 and opset 17 so
the C++ side (ONNX 1.12) can read them.

Usage: python3 models/gen_models.py [--out-dir DIR] [--check]
  --check  regenerate into memory and fail if the files on disk differ.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17
SEED = 20240601
HERE = os.path.dirname(os.path.abspath(__file__))


def linear_params(rng, fan_in, fan_out):
    """PyTorch nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    w = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
    return w, b


def init(name, arr):
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def scalar_constant(node_name, out_name, value):
    t = helper.make_tensor("value", TensorProto.FLOAT, [], [value])
    return helper.make_node("Constant", [], [out_name], name=node_name, value=t)


def finish(graph, producer_name="quintnet-gen_models", check=True):
    """The model around `graph` (opset 17, ir_version 8); checked in memory
    (onnx.checker, full) unless check=False."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=producer_name,
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def build_mlp_gemm(rng):
    w1, b1 = linear_params(rng, 784, 512)
    w2, b2 = linear_params(rng, 512, 512)
    w3, b3 = linear_params(rng, 512, 10)

    def gemm(scope, x, out):
        return helper.make_node(
            "Gemm", [x, f"{scope}.weight", f"{scope}.bias"], [out],
            name=f"/{scope}/Gemm", alpha=1.0, beta=1.0, transB=1)

    nodes = [
        gemm("fc1", "input", "/fc1/Gemm_output_0"),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu/Relu_output_0"],
                         name="/relu/Relu"),
        gemm("fc2", "/relu/Relu_output_0", "/fc2/Gemm_output_0"),
        helper.make_node("Relu", ["/fc2/Gemm_output_0"], ["/relu_1/Relu_output_0"],
                         name="/relu_1/Relu"),
        gemm("fc3", "/relu_1/Relu_output_0", "/fc3/Gemm_output_0"),
        helper.make_node("LogSoftmax", ["/fc3/Gemm_output_0"], ["output"],
                         name="/LogSoftmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[init("fc1.weight", w1), init("fc1.bias", b1),
                     init("fc2.weight", w2), init("fc2.bias", b2),
                     init("fc3.weight", w3), init("fc3.bias", b3)],
    )
    return finish(graph)


def build_mlp_matmul3d(rng):
    hidden, inner = 256, 1024
    w1, b1 = linear_params(rng, hidden, inner)   # torch layout [out, in]
    w2, b2 = linear_params(rng, inner, hidden)
    # The exporter stores the MatMul operand transposed ([in, out]) under an
    # anonymous name; the biases keep their parameter names.
    w1_name, w2_name = "onnx::MatMul_22", "onnx::MatMul_23"

    nodes = [
        helper.make_node("MatMul", ["x", w1_name], ["/fc1/MatMul_output_0"], name="/fc1/MatMul"),
        helper.make_node("Add", ["fc1.bias", "/fc1/MatMul_output_0"], ["/fc1/Add_output_0"],
                         name="/fc1/Add"),
        # nn.GELU() (approximate='none') at opset 17: 0.5 * x * (1 + erf(x / sqrt(2)))
        scalar_constant("/act/Constant", "/act/Constant_output_0", 1.4142135381698608),
        helper.make_node("Div", ["/fc1/Add_output_0", "/act/Constant_output_0"],
                         ["/act/Div_output_0"], name="/act/Div"),
        helper.make_node("Erf", ["/act/Div_output_0"], ["/act/Erf_output_0"], name="/act/Erf"),
        scalar_constant("/act/Constant_1", "/act/Constant_1_output_0", 1.0),
        helper.make_node("Add", ["/act/Erf_output_0", "/act/Constant_1_output_0"],
                         ["/act/Add_output_0"], name="/act/Add"),
        helper.make_node("Mul", ["/fc1/Add_output_0", "/act/Add_output_0"],
                         ["/act/Mul_output_0"], name="/act/Mul"),
        scalar_constant("/act/Constant_2", "/act/Constant_2_output_0", 0.5),
        helper.make_node("Mul", ["/act/Mul_output_0", "/act/Constant_2_output_0"],
                         ["/act/Mul_1_output_0"], name="/act/Mul_1"),
        helper.make_node("MatMul", ["/act/Mul_1_output_0", w2_name], ["/fc2/MatMul_output_0"],
                         name="/fc2/MatMul"),
        helper.make_node("Add", ["fc2.bias", "/fc2/MatMul_output_0"], ["/fc2/Add_output_0"],
                         name="/fc2/Add"),
        helper.make_node("Add", ["x", "/fc2/Add_output_0"], ["y"], name="/Add"),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
        initializer=[init("fc1.bias", b1), init("fc2.bias", b2),
                     init(w1_name, w1.T), init(w2_name, w2.T)],
    )
    return finish(graph)


def build_embed_mlp_lm(rng):
    """A token embedding, a learned position embedding, one MLP block and an
    untied LM head, as torch exports nn.Embedding (Gather on the weight) and
    nn.Linear on (B,T,H) activations (MatMul with the transposed weight)."""
    vocab, hidden, inner, max_pos = 1024, 64, 256, 64
    wte = rng.standard_normal((vocab, hidden)).astype(np.float32)   # nn.Embedding: N(0, 1)
    wpe = rng.standard_normal((max_pos, hidden)).astype(np.float32)
    w1, b1 = linear_params(rng, hidden, inner)
    w2, b2 = linear_params(rng, inner, hidden)
    wlm, _ = linear_params(rng, hidden, vocab)
    nodes = [
        helper.make_node("Gather", ["wte.weight", "input_ids"], ["/wte/Gather_output_0"],
                         name="/wte/Gather"),
        helper.make_node("Gather", ["wpe.weight", "position_ids"], ["/wpe/Gather_output_0"],
                         name="/wpe/Gather"),
        helper.make_node("Add", ["/wte/Gather_output_0", "/wpe/Gather_output_0"],
                         ["/Add_output_0"], name="/Add"),
        helper.make_node("MatMul", ["/Add_output_0", "onnx::MatMul_31"],
                         ["/fc1/MatMul_output_0"], name="/fc1/MatMul"),
        helper.make_node("Add", ["fc1.bias", "/fc1/MatMul_output_0"], ["/fc1/Add_output_0"],
                         name="/fc1/Add"),
        helper.make_node("Relu", ["/fc1/Add_output_0"], ["/act/Relu_output_0"], name="/act/Relu"),
        helper.make_node("MatMul", ["/act/Relu_output_0", "onnx::MatMul_32"],
                         ["/fc2/MatMul_output_0"], name="/fc2/MatMul"),
        helper.make_node("Add", ["fc2.bias", "/fc2/MatMul_output_0"], ["/fc2/Add_output_0"],
                         name="/fc2/Add"),
        helper.make_node("Add", ["/Add_output_0", "/fc2/Add_output_0"], ["/Add_1_output_0"],
                         name="/Add_1"),
        helper.make_node("MatMul", ["/Add_1_output_0", "onnx::MatMul_33"], ["logits"],
                         name="/lm_head/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                              ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                               ["batch", "seq", vocab])],
        initializer=[init("wte.weight", wte), init("wpe.weight", wpe), init("fc1.bias", b1),
                     init("fc2.bias", b2), init("onnx::MatMul_31", w1.T),
                     init("onnx::MatMul_32", w2.T), init("onnx::MatMul_33", wlm.T)],
    )
    return finish(graph)


def build_attention_block(rng):
    """A self-attention block as torch exports it for (B,T,H) inputs with
    separate q/k/v nn.Linear layers, view(B, T, heads, head_dim) (a Reshape
    whose target is [0, 0, heads, head_dim]), transposes, scaled scores, an
    additive mask, softmax, the output projection and a residual add."""
    hidden, heads = 64, 4
    head_dim = hidden // heads
    params = {n: linear_params(rng, hidden, hidden) for n in ("q", "k", "v", "o")}
    inits = [init("split_shape", np.array([0, 0, heads, head_dim], np.int64)),
             init("merge_shape", np.array([0, 0, hidden], np.int64)),
             init("scale", np.array(np.sqrt(head_dim), np.float32))]
    nodes = []
    for n in ("q", "k", "v"):
        w, b = params[n]
        inits += [init(f"onnx::MatMul_{n}", w.T), init(f"{n}_proj.bias", b)]
        nodes += [
            helper.make_node("MatMul", ["x", f"onnx::MatMul_{n}"], [f"/{n}_proj/MatMul_output_0"],
                             name=f"/{n}_proj/MatMul"),
            helper.make_node("Add", [f"{n}_proj.bias", f"/{n}_proj/MatMul_output_0"],
                             [f"/{n}_proj/Add_output_0"], name=f"/{n}_proj/Add"),
            helper.make_node("Reshape", [f"/{n}_proj/Add_output_0", "split_shape"],
                             [f"/{n}/Reshape_output_0"], name=f"/{n}/Reshape"),
            helper.make_node("Transpose", [f"/{n}/Reshape_output_0"],
                             [f"/{n}/Transpose_output_0"], name=f"/{n}/Transpose",
                             perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]),
        ]
    w, b = params["o"]
    inits += [init("onnx::MatMul_o", w.T), init("o_proj.bias", b)]
    nodes += [
        helper.make_node("MatMul", ["/q/Transpose_output_0", "/k/Transpose_output_0"],
                         ["/MatMul_output_0"], name="/MatMul"),
        helper.make_node("Div", ["/MatMul_output_0", "scale"], ["/Div_output_0"], name="/Div"),
        helper.make_node("Add", ["/Div_output_0", "mask"], ["/Add_output_0"], name="/Add"),
        helper.make_node("Softmax", ["/Add_output_0"], ["/Softmax_output_0"], name="/Softmax",
                         axis=-1),
        helper.make_node("MatMul", ["/Softmax_output_0", "/v/Transpose_output_0"],
                         ["/MatMul_1_output_0"], name="/MatMul_1"),
        helper.make_node("Transpose", ["/MatMul_1_output_0"], ["/Transpose_output_0"],
                         name="/Transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["/Transpose_output_0", "merge_shape"],
                         ["/Reshape_output_0"], name="/Reshape"),
        helper.make_node("MatMul", ["/Reshape_output_0", "onnx::MatMul_o"],
                         ["/o_proj/MatMul_output_0"], name="/o_proj/MatMul"),
        helper.make_node("Add", ["o_proj.bias", "/o_proj/MatMul_output_0"],
                         ["/o_proj/Add_output_0"], name="/o_proj/Add"),
        helper.make_node("Add", ["x", "/o_proj/Add_output_0"], ["y"], name="/Add_1"),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden]),
                helper.make_tensor_value_info("mask", TensorProto.FLOAT,
                                              ["batch", 1, 1, "seq"])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
        initializer=inits,
    )
    return finish(graph)


def build_fused_attention_block(rng):
    """GPT-2's attention as exported: one c_attn projection to 3*hidden (a
    MatMul and a bias Add), Split into q, k, v; _split_heads / _merge_heads
    build their Reshape targets at run time (Shape -> Slice of the leading
    dims, Concat with the constant head count and size, or hidden size);
    transposes, scaled scores, softmax, the c_proj projection, a residual."""
    hidden, heads = 64, 4
    head_dim = hidden // heads
    w_attn, b_attn = linear_params(rng, hidden, 3 * hidden)
    w_proj, b_proj = linear_params(rng, hidden, hidden)
    inits = [init("onnx::MatMul_c_attn", w_attn.T), init("c_attn.bias", b_attn),
             init("onnx::MatMul_c_proj", w_proj.T), init("c_proj.bias", b_proj),
             init("split_sizes", np.array([hidden] * 3, np.int64)),
             init("num_heads", np.array([heads], np.int64)),
             init("head_size", np.array([head_dim], np.int64)),
             init("all_head_size", np.array([hidden], np.int64)),
             init("zero", np.array([0], np.int64)),
             init("minus1", np.array([-1], np.int64)),
             init("minus2", np.array([-2], np.int64)),
             init("scale", np.array(np.sqrt(head_dim), np.float32))]
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_c_attn"], ["/c_attn/MatMul_output_0"],
                         name="/c_attn/MatMul"),
        helper.make_node("Add", ["c_attn.bias", "/c_attn/MatMul_output_0"],
                         ["/c_attn/Add_output_0"], name="/c_attn/Add"),
        helper.make_node("Split", ["/c_attn/Add_output_0", "split_sizes"],
                         ["/Split_output_0", "/Split_output_1", "/Split_output_2"],
                         name="/Split", axis=2),
    ]
    for i, n in enumerate(("q", "k", "v")):
        nodes += [
            helper.make_node("Shape", [f"/Split_output_{i}"], [f"/{n}/Shape_output_0"],
                             name=f"/{n}/Shape"),
            helper.make_node("Slice", [f"/{n}/Shape_output_0", "zero", "minus1"],
                             [f"/{n}/Slice_output_0"], name=f"/{n}/Slice"),
            helper.make_node("Concat", [f"/{n}/Slice_output_0", "num_heads", "head_size"],
                             [f"/{n}/Concat_output_0"], name=f"/{n}/Concat", axis=0),
            helper.make_node("Reshape", [f"/Split_output_{i}", f"/{n}/Concat_output_0"],
                             [f"/{n}/Reshape_output_0"], name=f"/{n}/Reshape"),
            helper.make_node("Transpose", [f"/{n}/Reshape_output_0"],
                             [f"/{n}/Transpose_output_0"], name=f"/{n}/Transpose",
                             perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]),
        ]
    nodes += [
        helper.make_node("MatMul", ["/q/Transpose_output_0", "/k/Transpose_output_0"],
                         ["/MatMul_output_0"], name="/MatMul"),
        helper.make_node("Div", ["/MatMul_output_0", "scale"], ["/Div_output_0"], name="/Div"),
        helper.make_node("Softmax", ["/Div_output_0"], ["/Softmax_output_0"], name="/Softmax",
                         axis=-1),
        helper.make_node("MatMul", ["/Softmax_output_0", "/v/Transpose_output_0"],
                         ["/MatMul_1_output_0"], name="/MatMul_1"),
        helper.make_node("Transpose", ["/MatMul_1_output_0"], ["/Transpose_output_0"],
                         name="/Transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["/Transpose_output_0"], ["/Shape_output_0"], name="/Shape"),
        helper.make_node("Slice", ["/Shape_output_0", "zero", "minus2"], ["/Slice_output_0"],
                         name="/Slice"),
        helper.make_node("Concat", ["/Slice_output_0", "all_head_size"], ["/Concat_output_0"],
                         name="/Concat", axis=0),
        helper.make_node("Reshape", ["/Transpose_output_0", "/Concat_output_0"],
                         ["/Reshape_output_0"], name="/Reshape"),
        helper.make_node("MatMul", ["/Reshape_output_0", "onnx::MatMul_c_proj"],
                         ["/c_proj/MatMul_output_0"], name="/c_proj/MatMul"),
        helper.make_node("Add", ["c_proj.bias", "/c_proj/MatMul_output_0"],
                         ["/c_proj/Add_output_0"], name="/c_proj/Add"),
        helper.make_node("Add", ["x", "/c_proj/Add_output_0"], ["y"], name="/Add"),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
        initializer=inits,
    )
    return finish(graph)


def build_gpt2(rng, layers=2, hidden=64, heads=4, vocab=1024, n_pos=64, dtype=np.float32,
               weights="torch", producer_name="quintnet-gen_models", check=True):
    """A GPT-2 in the form torch.onnx.export gives HF's GPT2LMHeadModel at opset
    17: token and position Gathers, pre-LN blocks (LayerNormalization), fused
    c_attn + Split, run-time Reshape targets, a causal mask sliced from the
    `bias` buffer and applied with Where, tanh GELU spelled out, c_proj,
    residuals, a final LN and the tied LM head (a MatMul with the transposed
    token table). The defaults give the bundled gpt2_tiny (2 layers, hidden 64,
    4 heads, vocab 1024, 64 positions, float32); bench/bench_gpu.py builds its
    GPT-2-medium-shaped model here too.

    dtype: of every floating tensor (weights, the graph's scalar constants, the
    logits). Weights are drawn from `rng` in the same order for any dtype,
    rounded to float32 and then to `dtype`: for float16, to_fp16.convert of the
    float32 build is the float16 build exactly.
    weights: "torch" (the bundled model) draws in float64: embeddings normal
    (std 0.02 tokens, 0.01 positions), nn.Linear's default init (uniform in
    +-1/sqrt(fan_in)); "hf" draws in float32, as HF initialises GPT-2 but with
    small random biases: Linear weights and biases normal std 0.02, the c_proj
    weights scaled by 1/sqrt(2 layers). Either way LayerNorm weights are
    1 + N(0, 0.1) and their biases N(0, 0.1).
    producer_name, check: as finish() (check=False skips the in-memory check,
    for a model that is checked once saved)."""
    assert hidden % heads == 0
    assert weights in ("torch", "hf")
    head_dim = hidden // heads
    f32 = np.float32
    dt = np.dtype(dtype)
    draw = f32 if weights == "hf" else np.float64

    def cast(a):
        return a.astype(f32, copy=False).astype(dt)

    def normal(shape, std):
        return cast(rng.standard_normal(shape, dtype=draw) * draw(std))

    wte = normal((vocab, hidden), 0.02)
    wpe = normal((n_pos, hidden), 0.01)
    inits = [init("transformer.wte.weight", wte), init("transformer.wpe.weight", wpe),
             init("onnx::MatMul_lm_head", np.ascontiguousarray(wte.T)),
             init("bias", np.tril(np.ones((n_pos, n_pos), bool)).reshape(1, 1, n_pos, n_pos)),
             init("num_heads", np.array([heads], np.int64)),
             init("head_size", np.array([head_dim], np.int64)),
             init("all_head_size", np.array([hidden], np.int64)),
             init("split_sizes", np.array([hidden] * 3, np.int64)),
             init("zero", np.array([0], np.int64)), init("zero2", np.array([0, 0], np.int64)),
             init("minus1", np.array([-1], np.int64)), init("minus2", np.array([-2], np.int64)),
             init("one", np.array([1], np.int64)), init("two", np.array([2], np.int64)),
             init("axes23", np.array([2, 3], np.int64)),
             init("scale", np.array(np.sqrt(head_dim), dt)),
             init("mask_value", np.array(np.finfo(dt).min, dt)),
             init("half", np.array(0.5, dt)), init("c1", np.array(1.0, dt)),
             init("three", np.array(3.0, dt)), init("c044715", np.array(0.044715, dt)),
             init("sqrt_2_over_pi", np.array(np.sqrt(2 / np.pi), dt))]
    nodes = [
        helper.make_node("Gather", ["transformer.wte.weight", "input_ids"], ["/wte/Gather_output_0"],
                         name="/transformer/wte/Gather"),
        helper.make_node("Gather", ["transformer.wpe.weight", "position_ids"],
                         ["/wpe/Gather_output_0"], name="/transformer/wpe/Gather"),
        helper.make_node("Add", ["/wte/Gather_output_0", "/wpe/Gather_output_0"], ["/h0"],
                         name="/transformer/Add"),
        # The causal mask for this sequence length: bias[:, :, :T, :T].
        helper.make_node("Shape", ["input_ids"], ["/ids_shape"], name="/transformer/Shape"),
        helper.make_node("Slice", ["/ids_shape", "one", "two"], ["/seq_len"],
                         name="/transformer/Slice"),
        helper.make_node("Concat", ["/seq_len", "/seq_len"], ["/mask_ends"],
                         name="/transformer/Concat", axis=0),
        helper.make_node("Slice", ["bias", "zero2", "/mask_ends", "axes23"], ["/causal"],
                         name="/transformer/Slice_1"),
    ]

    proj_std = 0.02 / np.sqrt(2 * layers)

    def linear(prefix, x, fan_in, fan_out, out, proj=False):
        if weights == "hf":
            w = normal((fan_out, fan_in), proj_std if proj else 0.02)  # torch layout [out, in]
            b = normal((fan_out,), 0.02)
        else:
            w, b = (cast(a) for a in linear_params(rng, fan_in, fan_out))
        inits.extend([init(f"onnx::MatMul_{prefix}", w.T), init(f"{prefix}.bias", b)])
        nodes.extend([
            helper.make_node("MatMul", [x, f"onnx::MatMul_{prefix}"], [f"/{prefix}/MatMul_output_0"],
                             name=f"/{prefix}/MatMul"),
            helper.make_node("Add", [f"{prefix}.bias", f"/{prefix}/MatMul_output_0"], [out],
                             name=f"/{prefix}/Add"),
        ])

    def layer_norm(prefix, x, out):
        inits.extend([init(f"{prefix}.weight", cast(1 + 0.1 * rng.standard_normal(hidden, dtype=draw))),
                      init(f"{prefix}.bias", cast(0.1 * rng.standard_normal(hidden, dtype=draw)))])
        nodes.append(helper.make_node("LayerNormalization", [x, f"{prefix}.weight", f"{prefix}.bias"],
                                      [out], name=f"/{prefix}/LayerNormalization", axis=-1,
                                      epsilon=1e-5))

    h = "/h0"
    for L in range(layers):
        p = f"transformer.h.{L}"
        layer_norm(f"{p}.ln_1", h, f"/{p}/ln_1")
        linear(f"{p}.attn.c_attn", f"/{p}/ln_1", hidden, 3 * hidden, f"/{p}/qkv")
        nodes.append(helper.make_node("Split", [f"/{p}/qkv", "split_sizes"],
                                      [f"/{p}/q", f"/{p}/k", f"/{p}/v"], name=f"/{p}/attn/Split",
                                      axis=2))
        for n in ("q", "k", "v"):
            nodes.extend([
                helper.make_node("Shape", [f"/{p}/{n}"], [f"/{p}/{n}/shape"], name=f"/{p}/{n}/Shape"),
                helper.make_node("Slice", [f"/{p}/{n}/shape", "zero", "minus1"],
                                 [f"/{p}/{n}/lead"], name=f"/{p}/{n}/Slice"),
                helper.make_node("Concat", [f"/{p}/{n}/lead", "num_heads", "head_size"],
                                 [f"/{p}/{n}/target"], name=f"/{p}/{n}/Concat", axis=0),
                helper.make_node("Reshape", [f"/{p}/{n}", f"/{p}/{n}/target"], [f"/{p}/{n}/heads"],
                                 name=f"/{p}/{n}/Reshape"),
                helper.make_node("Transpose", [f"/{p}/{n}/heads"], [f"/{p}/{n}/t"],
                                 name=f"/{p}/{n}/Transpose",
                                 perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3]),
            ])
        nodes.extend([
            helper.make_node("MatMul", [f"/{p}/q/t", f"/{p}/k/t"], [f"/{p}/scores"],
                             name=f"/{p}/attn/MatMul"),
            helper.make_node("Div", [f"/{p}/scores", "scale"], [f"/{p}/scaled"], name=f"/{p}/attn/Div"),
            helper.make_node("Where", ["/causal", f"/{p}/scaled", "mask_value"], [f"/{p}/masked"],
                             name=f"/{p}/attn/Where"),
            helper.make_node("Softmax", [f"/{p}/masked"], [f"/{p}/probs"], name=f"/{p}/attn/Softmax",
                             axis=-1),
            helper.make_node("MatMul", [f"/{p}/probs", f"/{p}/v/t"], [f"/{p}/ctx"],
                             name=f"/{p}/attn/MatMul_1"),
            helper.make_node("Transpose", [f"/{p}/ctx"], [f"/{p}/ctx_t"], name=f"/{p}/attn/Transpose",
                             perm=[0, 2, 1, 3]),
            helper.make_node("Shape", [f"/{p}/ctx_t"], [f"/{p}/ctx_shape"], name=f"/{p}/attn/Shape"),
            helper.make_node("Slice", [f"/{p}/ctx_shape", "zero", "minus2"], [f"/{p}/ctx_lead"],
                             name=f"/{p}/attn/Slice"),
            helper.make_node("Concat", [f"/{p}/ctx_lead", "all_head_size"], [f"/{p}/ctx_target"],
                             name=f"/{p}/attn/Concat", axis=0),
            helper.make_node("Reshape", [f"/{p}/ctx_t", f"/{p}/ctx_target"], [f"/{p}/ctx_merged"],
                             name=f"/{p}/attn/Reshape"),
        ])
        linear(f"{p}.attn.c_proj", f"/{p}/ctx_merged", hidden, hidden, f"/{p}/attn_out", proj=True)
        nodes.append(helper.make_node("Add", [h, f"/{p}/attn_out"], [f"/{p}/h_attn"], name=f"/{p}/Add"))
        layer_norm(f"{p}.ln_2", f"/{p}/h_attn", f"/{p}/ln_2")
        linear(f"{p}.mlp.c_fc", f"/{p}/ln_2", hidden, 4 * hidden, f"/{p}/fc")
        x = f"/{p}/fc"
        g = f"/{p}/mlp/act"
        nodes.extend([  # gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            helper.make_node("Pow", [x, "three"], [g + "/pow"], name=g + "/Pow"),
            helper.make_node("Mul", ["c044715", g + "/pow"], [g + "/mul"], name=g + "/Mul"),
            helper.make_node("Add", [x, g + "/mul"], [g + "/add"], name=g + "/Add"),
            helper.make_node("Mul", ["sqrt_2_over_pi", g + "/add"], [g + "/mul1"], name=g + "/Mul_1"),
            helper.make_node("Tanh", [g + "/mul1"], [g + "/tanh"], name=g + "/Tanh"),
            helper.make_node("Add", ["c1", g + "/tanh"], [g + "/add1"], name=g + "/Add_1"),
            helper.make_node("Mul", ["half", x], [g + "/mul2"], name=g + "/Mul_2"),
            helper.make_node("Mul", [g + "/mul2", g + "/add1"], [g + "/out"], name=g + "/Mul_3"),
        ])
        linear(f"{p}.mlp.c_proj", g + "/out", 4 * hidden, hidden, f"/{p}/mlp_out", proj=True)
        nodes.append(helper.make_node("Add", [f"/{p}/h_attn", f"/{p}/mlp_out"], [f"/{p}/h_out"],
                                      name=f"/{p}/Add_1"))
        h = f"/{p}/h_out"
    layer_norm("transformer.ln_f", h, "/ln_f")
    nodes.append(helper.make_node("MatMul", ["/ln_f", "onnx::MatMul_lm_head"], ["logits"],
                                  name="/lm_head/MatMul"))
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("logits", helper.np_dtype_to_tensor_dtype(dt),
                                               ["batch", "seq", vocab])],
        initializer=inits,
    )
    return finish(graph, producer_name, check)


def build_llama_tiny(rng):
    """A two-layer Llama (vocab 1024, hidden 64, 4 query heads, 2 KV heads,
    SwiGLU 128) in the form torch.onnx.export gives HF's LlamaForCausalLM at
    opset 17: RMSNorm spelled out (Pow, ReduceMean, Add, Sqrt, Div, Mul),
    rotary embeddings (cos/sin caches gathered by position, rotate_half with
    Slice/Neg/Concat), grouped-query attention (K/V heads repeated with
    Unsqueeze, Expand, Reshape), a causal mask, SwiGLU (Sigmoid*gate*up) and
    an untied LM head."""
    vocab, n_pos, hidden, heads, kv_heads, inter, layers = 1024, 64, 64, 4, 2, 128, 2
    hd = hidden // heads
    n_rep = heads // kv_heads
    f32 = np.float32
    inv_freq = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd))
    freqs = np.outer(np.arange(n_pos), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    inits = [init("model.embed_tokens.weight", (rng.standard_normal((vocab, hidden)) * 0.02).astype(f32)),
             init("cos_cached", np.cos(emb).astype(f32)), init("sin_cached", np.sin(emb).astype(f32)),
             init("bias", np.tril(np.ones((n_pos, n_pos), bool)).reshape(1, 1, n_pos, n_pos)),
             init("q_target", np.array([heads, hd], np.int64)),
             init("kv_target", np.array([kv_heads, hd], np.int64)),
             init("expand_mid", np.array([kv_heads, n_rep], np.int64)),
             init("num_heads", np.array([heads], np.int64)),
             init("hidden_size", np.array([hidden], np.int64)),
             init("zero", np.array([0], np.int64)), init("zero2", np.array([0, 0], np.int64)),
             init("one", np.array([1], np.int64)), init("two", np.array([2], np.int64)),
             init("four", np.array([4], np.int64)), init("minus1", np.array([-1], np.int64)),
             init("half_hd", np.array([hd // 2], np.int64)),
             init("big", np.array([np.iinfo(np.int64).max], np.int64)),
             init("axes23", np.array([2, 3], np.int64)), init("ax1", np.array([1], np.int64)),
             init("ax2", np.array([2], np.int64)),
             init("scale", np.array(np.sqrt(hd), f32)), init("eps", np.array(1e-6, f32)),
             init("two_f", np.array(2.0, f32)),
             init("mask_value", np.array(np.finfo(f32).min, f32))]
    nodes = [
        helper.make_node("Gather", ["model.embed_tokens.weight", "input_ids"], ["/h0"],
                         name="/model/embed_tokens/Gather"),
        helper.make_node("Gather", ["cos_cached", "position_ids"], ["/cos_g"], name="/rotary/Gather"),
        helper.make_node("Gather", ["sin_cached", "position_ids"], ["/sin_g"], name="/rotary/Gather_1"),
        helper.make_node("Unsqueeze", ["/cos_g", "ax1"], ["/cos"], name="/rotary/Unsqueeze"),
        helper.make_node("Unsqueeze", ["/sin_g", "ax1"], ["/sin"], name="/rotary/Unsqueeze_1"),
        helper.make_node("Shape", ["input_ids"], ["/ids_shape"], name="/model/Shape"),
        helper.make_node("Slice", ["/ids_shape", "one", "two"], ["/seq_len"], name="/model/Slice"),
        helper.make_node("Concat", ["/seq_len", "/seq_len"], ["/mask_ends"], name="/model/Concat",
                         axis=0),
        helper.make_node("Slice", ["bias", "zero2", "/mask_ends", "axes23"], ["/causal"],
                         name="/model/Slice_1"),
    ]

    def rms_norm(prefix, x, out):
        inits.append(init(f"{prefix}.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(f32)))
        p = f"/{prefix}"
        nodes.extend([
            helper.make_node("Pow", [x, "two_f"], [p + "/pow"], name=p + "/Pow"),
            helper.make_node("ReduceMean", [p + "/pow"], [p + "/mean"], name=p + "/ReduceMean",
                             axes=[-1], keepdims=1),
            helper.make_node("Add", [p + "/mean", "eps"], [p + "/add"], name=p + "/Add"),
            helper.make_node("Sqrt", [p + "/add"], [p + "/sqrt"], name=p + "/Sqrt"),
            helper.make_node("Div", [x, p + "/sqrt"], [p + "/norm"], name=p + "/Div"),
            helper.make_node("Mul", [f"{prefix}.weight", p + "/norm"], [out], name=p + "/Mul"),
        ])

    def proj(prefix, x, fan_in, fan_out, out):
        w = rng.uniform(-1 / np.sqrt(fan_in), 1 / np.sqrt(fan_in), (fan_out, fan_in)).astype(f32)
        inits.append(init(f"onnx::MatMul_{prefix}", w.T))
        nodes.append(helper.make_node("MatMul", [x, f"onnx::MatMul_{prefix}"], [out],
                                      name=f"/{prefix}/MatMul"))

    def lead_and(x, tail_const, out, p):
        """Concat(Shape(x)[:2], tail_const): the exporter's view(B, T, ...)."""
        nodes.extend([
            helper.make_node("Shape", [x], [p + "/shape"], name=p + "/Shape"),
            helper.make_node("Slice", [p + "/shape", "zero", "two"], [p + "/lead"], name=p + "/Slice"),
            helper.make_node("Concat", [p + "/lead", tail_const], [out], name=p + "/Concat", axis=0),
        ])

    def rotary(x, p):
        nodes.extend([
            helper.make_node("Slice", [x, "zero", "half_hd", "minus1"], [p + "/x1"], name=p + "/Slice"),
            helper.make_node("Slice", [x, "half_hd", "big", "minus1"], [p + "/x2"], name=p + "/Slice_1"),
            helper.make_node("Neg", [p + "/x2"], [p + "/neg"], name=p + "/Neg"),
            helper.make_node("Concat", [p + "/neg", p + "/x1"], [p + "/rot"], name=p + "/Concat",
                             axis=-1),
            helper.make_node("Mul", [x, "/cos"], [p + "/xc"], name=p + "/Mul"),
            helper.make_node("Mul", [p + "/rot", "/sin"], [p + "/rs"], name=p + "/Mul_1"),
            helper.make_node("Add", [p + "/xc", p + "/rs"], [p + "/out"], name=p + "/Add"),
        ])
        return p + "/out"

    h = "/h0"
    for L in range(layers):
        p = f"/model/layers.{L}"
        m = f"model.layers.{L}"
        rms_norm(f"{m}.input_layernorm", h, p + "/ln_in")
        proj(f"{m}.self_attn.q_proj", p + "/ln_in", hidden, heads * hd, p + "/q")
        proj(f"{m}.self_attn.k_proj", p + "/ln_in", hidden, kv_heads * hd, p + "/k")
        proj(f"{m}.self_attn.v_proj", p + "/ln_in", hidden, kv_heads * hd, p + "/v")
        t = {}
        for n, target in (("q", "q_target"), ("k", "kv_target"), ("v", "kv_target")):
            lead_and(f"{p}/{n}", target, f"{p}/{n}/target", f"{p}/{n}/view")
            nodes.extend([
                helper.make_node("Reshape", [f"{p}/{n}", f"{p}/{n}/target"], [f"{p}/{n}/heads"],
                                 name=f"{p}/{n}/Reshape"),
                helper.make_node("Transpose", [f"{p}/{n}/heads"], [f"{p}/{n}/t"],
                                 name=f"{p}/{n}/Transpose", perm=[0, 2, 1, 3]),
            ])
            t[n] = f"{p}/{n}/t"
        t["q"] = rotary(t["q"], p + "/rope_q")
        t["k"] = rotary(t["k"], p + "/rope_k")
        for n in ("k", "v"):  # repeat_kv: [B, kv, T, hd] -> [B, kv*n_rep, T, hd]
            r = f"{p}/repeat_{n}"
            nodes.extend([
                helper.make_node("Unsqueeze", [t[n], "ax2"], [r + "/u"], name=r + "/Unsqueeze"),
                helper.make_node("Shape", [t[n]], [r + "/shape"], name=r + "/Shape"),
                helper.make_node("Slice", [r + "/shape", "zero", "one"], [r + "/b"], name=r + "/Slice"),
                helper.make_node("Slice", [r + "/shape", "two", "four"], [r + "/tail"],
                                 name=r + "/Slice_1"),
                helper.make_node("Concat", [r + "/b", "expand_mid", r + "/tail"], [r + "/to"],
                                 name=r + "/Concat", axis=0),
                helper.make_node("Expand", [r + "/u", r + "/to"], [r + "/e"], name=r + "/Expand"),
                helper.make_node("Concat", [r + "/b", "num_heads", r + "/tail"], [r + "/merge_to"],
                                 name=r + "/Concat_1", axis=0),
                helper.make_node("Reshape", [r + "/e", r + "/merge_to"], [r + "/out"],
                                 name=r + "/Reshape"),
            ])
            t[n] = r + "/out"
        nodes.extend([
            helper.make_node("Transpose", [t["k"]], [p + "/kT"], name=p + "/attn/Transpose_k",
                             perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", [t["q"], p + "/kT"], [p + "/scores"], name=p + "/attn/MatMul"),
            helper.make_node("Div", [p + "/scores", "scale"], [p + "/scaled"], name=p + "/attn/Div"),
            helper.make_node("Where", ["/causal", p + "/scaled", "mask_value"], [p + "/masked"],
                             name=p + "/attn/Where"),
            helper.make_node("Softmax", [p + "/masked"], [p + "/probs"], name=p + "/attn/Softmax",
                             axis=-1),
            helper.make_node("MatMul", [p + "/probs", t["v"]], [p + "/ctx"], name=p + "/attn/MatMul_1"),
            helper.make_node("Transpose", [p + "/ctx"], [p + "/ctx_t"], name=p + "/attn/Transpose",
                             perm=[0, 2, 1, 3]),
        ])
        lead_and(p + "/ctx_t", "hidden_size", p + "/ctx_target", p + "/attn/merge")
        nodes.append(helper.make_node("Reshape", [p + "/ctx_t", p + "/ctx_target"], [p + "/ctx_m"],
                                      name=p + "/attn/Reshape"))
        proj(f"{m}.self_attn.o_proj", p + "/ctx_m", heads * hd, hidden, p + "/attn_out")
        nodes.append(helper.make_node("Add", [h, p + "/attn_out"], [p + "/h_attn"], name=p + "/Add"))
        rms_norm(f"{m}.post_attention_layernorm", p + "/h_attn", p + "/ln_post")
        proj(f"{m}.mlp.gate_proj", p + "/ln_post", hidden, inter, p + "/gate")
        proj(f"{m}.mlp.up_proj", p + "/ln_post", hidden, inter, p + "/up")
        nodes.extend([
            helper.make_node("Sigmoid", [p + "/gate"], [p + "/sig"], name=p + "/mlp/act_fn/Sigmoid"),
            helper.make_node("Mul", [p + "/gate", p + "/sig"], [p + "/silu"], name=p + "/mlp/act_fn/Mul"),
            helper.make_node("Mul", [p + "/silu", p + "/up"], [p + "/gated"], name=p + "/mlp/Mul"),
        ])
        proj(f"{m}.mlp.down_proj", p + "/gated", inter, hidden, p + "/mlp_out")
        nodes.append(helper.make_node("Add", [p + "/h_attn", p + "/mlp_out"], [p + "/h_out"],
                                      name=p + "/Add_1"))
        h = p + "/h_out"
    rms_norm("model.norm", h, "/norm")
    proj("lm_head", "/norm", hidden, vocab, "logits")
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
        initializer=inits,
    )
    return finish(graph)


def build_bert_tiny(rng):
    """A two-layer BERT encoder (vocab 1024, 64 positions, 2 token types,
    hidden 64, 4 heads, intermediate 256) as torch.onnx.export gives HF's
    BertModel at opset 17: word + position + token-type embeddings and a
    LayerNorm, the extended attention mask ((1 - mask) * min) added to the
    scores, separate query/key/value Linears, exact (Erf) GELU, post-LN
    residual blocks; output: the last hidden state."""
    vocab, n_pos, types, hidden, heads, inter, layers = 1024, 64, 2, 64, 4, 256, 2
    hd = hidden // heads
    f32 = np.float32
    inits = [init("embeddings.word_embeddings.weight",
                  (rng.standard_normal((vocab, hidden)) * 0.02).astype(f32)),
             init("embeddings.position_embeddings.weight",
                  (rng.standard_normal((n_pos, hidden)) * 0.02).astype(f32)),
             init("embeddings.token_type_embeddings.weight",
                  (rng.standard_normal((types, hidden)) * 0.02).astype(f32)),
             init("q_target", np.array([heads, hd], np.int64)),
             init("hidden_size", np.array([hidden], np.int64)),
             init("zero", np.array([0], np.int64)), init("two", np.array([2], np.int64)),
             init("ax12", np.array([1, 2], np.int64)),
             init("one_f", np.array(1.0, f32)), init("min_f", np.array(np.finfo(f32).min, f32)),
             init("scale", np.array(np.sqrt(hd), f32)), init("sqrt2", np.array(np.sqrt(2.0), f32)),
             init("half", np.array(0.5, f32))]
    nodes = [
        helper.make_node("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["/we"],
                         name="/embeddings/word_embeddings/Gather"),
        helper.make_node("Gather", ["embeddings.token_type_embeddings.weight", "token_type_ids"],
                         ["/te"], name="/embeddings/token_type_embeddings/Gather"),
        helper.make_node("Add", ["/we", "/te"], ["/e1"], name="/embeddings/Add"),
        helper.make_node("Gather", ["embeddings.position_embeddings.weight", "position_ids"], ["/pe"],
                         name="/embeddings/position_embeddings/Gather"),
        helper.make_node("Add", ["/e1", "/pe"], ["/e2"], name="/embeddings/Add_1"),
        # extended_attention_mask = (1.0 - mask[:, None, None, :]) * finfo.min
        helper.make_node("Unsqueeze", ["attention_mask", "ax12"], ["/m4"], name="/Unsqueeze"),
        helper.make_node("Cast", ["/m4"], ["/m4f"], name="/Cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one_f", "/m4f"], ["/inv"], name="/Sub"),
        helper.make_node("Mul", ["/inv", "min_f"], ["/ext_mask"], name="/Mul"),
    ]

    def layer_norm(prefix, x, out):
        inits.extend([init(f"{prefix}.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(f32)),
                      init(f"{prefix}.bias", (0.1 * rng.standard_normal(hidden)).astype(f32))])
        nodes.append(helper.make_node("LayerNormalization", [x, f"{prefix}.weight", f"{prefix}.bias"],
                                      [out], name=f"/{prefix}/LayerNormalization", axis=-1,
                                      epsilon=1e-12))

    def linear(prefix, x, fan_in, fan_out, out):
        w, b = linear_params(rng, fan_in, fan_out)
        inits.extend([init(f"onnx::MatMul_{prefix}", w.T), init(f"{prefix}.bias", b)])
        nodes.extend([
            helper.make_node("MatMul", [x, f"onnx::MatMul_{prefix}"], [f"/{prefix}/MatMul_output_0"],
                             name=f"/{prefix}/MatMul"),
            helper.make_node("Add", [f"{prefix}.bias", f"/{prefix}/MatMul_output_0"], [out],
                             name=f"/{prefix}/Add"),
        ])

    layer_norm("embeddings.LayerNorm", "/e2", "/h0")
    h = "/h0"
    for L in range(layers):
        m = f"encoder.layer.{L}"
        p = f"/{m}"
        t = {}
        for n in ("query", "key", "value"):
            linear(f"{m}.attention.self.{n}", h, hidden, hidden, f"{p}/{n}")
            nodes.extend([
                helper.make_node("Shape", [f"{p}/{n}"], [f"{p}/{n}/shape"], name=f"{p}/{n}/Shape"),
                helper.make_node("Slice", [f"{p}/{n}/shape", "zero", "two"], [f"{p}/{n}/lead"],
                                 name=f"{p}/{n}/Slice"),
                helper.make_node("Concat", [f"{p}/{n}/lead", "q_target"], [f"{p}/{n}/target"],
                                 name=f"{p}/{n}/Concat", axis=0),
                helper.make_node("Reshape", [f"{p}/{n}", f"{p}/{n}/target"], [f"{p}/{n}/heads"],
                                 name=f"{p}/{n}/Reshape"),
                helper.make_node("Transpose", [f"{p}/{n}/heads"], [f"{p}/{n}/t"],
                                 name=f"{p}/{n}/Transpose",
                                 perm=[0, 2, 3, 1] if n == "key" else [0, 2, 1, 3]),
            ])
            t[n] = f"{p}/{n}/t"
        nodes.extend([
            helper.make_node("MatMul", [t["query"], t["key"]], [f"{p}/scores"], name=f"{p}/MatMul"),
            helper.make_node("Div", [f"{p}/scores", "scale"], [f"{p}/scaled"], name=f"{p}/Div"),
            helper.make_node("Add", [f"{p}/scaled", "/ext_mask"], [f"{p}/masked"], name=f"{p}/Add"),
            helper.make_node("Softmax", [f"{p}/masked"], [f"{p}/probs"], name=f"{p}/Softmax", axis=-1),
            helper.make_node("MatMul", [f"{p}/probs", t["value"]], [f"{p}/ctx"], name=f"{p}/MatMul_1"),
            helper.make_node("Transpose", [f"{p}/ctx"], [f"{p}/ctx_t"], name=f"{p}/Transpose",
                             perm=[0, 2, 1, 3]),
            helper.make_node("Shape", [f"{p}/ctx_t"], [f"{p}/ctx_shape"], name=f"{p}/Shape"),
            helper.make_node("Slice", [f"{p}/ctx_shape", "zero", "two"], [f"{p}/ctx_lead"],
                             name=f"{p}/Slice"),
            helper.make_node("Concat", [f"{p}/ctx_lead", "hidden_size"], [f"{p}/ctx_target"],
                             name=f"{p}/Concat", axis=0),
            helper.make_node("Reshape", [f"{p}/ctx_t", f"{p}/ctx_target"], [f"{p}/ctx_m"],
                             name=f"{p}/Reshape"),
        ])
        linear(f"{m}.attention.output.dense", f"{p}/ctx_m", hidden, hidden, f"{p}/attn_dense")
        nodes.append(helper.make_node("Add", [f"{p}/attn_dense", h], [f"{p}/attn_res"],
                                      name=f"{p}/attention/output/Add"))
        layer_norm(f"{m}.attention.output.LayerNorm", f"{p}/attn_res", f"{p}/attn_out")
        linear(f"{m}.intermediate.dense", f"{p}/attn_out", hidden, inter, f"{p}/inter")
        g = f"{p}/intermediate/act"
        nodes.extend([  # exact GELU as exported: x * 0.5 * (1 + erf(x / sqrt(2)))
            helper.make_node("Div", [f"{p}/inter", "sqrt2"], [g + "/div"], name=g + "/Div"),
            helper.make_node("Erf", [g + "/div"], [g + "/erf"], name=g + "/Erf"),
            helper.make_node("Add", [g + "/erf", "one_f"], [g + "/add"], name=g + "/Add"),
            helper.make_node("Mul", [f"{p}/inter", g + "/add"], [g + "/mul"], name=g + "/Mul"),
            helper.make_node("Mul", [g + "/mul", "half"], [g + "/out"], name=g + "/Mul_1"),
        ])
        linear(f"{m}.output.dense", g + "/out", inter, hidden, f"{p}/out_dense")
        nodes.append(helper.make_node("Add", [f"{p}/out_dense", f"{p}/attn_out"], [f"{p}/out_res"],
                                      name=f"{p}/output/Add"))
        out = "last_hidden_state" if L == layers - 1 else f"{p}/h_out"
        layer_norm(f"{m}.output.LayerNorm", f"{p}/out_res", out)
        h = out
    graph = helper.make_graph(
        nodes, "main_graph",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])],
        outputs=[helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                               ["batch", "seq", hidden])],
        initializer=inits,
    )
    return finish(graph)


def build_all():
    # One generator per model so adding a model never changes the others' weights.
    return {
        "mlp_gemm.onnx": build_mlp_gemm(np.random.default_rng(SEED)),
        "mlp_matmul3d.onnx": build_mlp_matmul3d(np.random.default_rng(SEED + 1)),
        "embed_mlp_lm.onnx": build_embed_mlp_lm(np.random.default_rng(SEED + 2)),
        "attention_block.onnx": build_attention_block(np.random.default_rng(SEED + 3)),
        "fused_attention_block.onnx": build_fused_attention_block(
            np.random.default_rng(SEED + 4)),
        "gpt2_tiny.onnx": build_gpt2(np.random.default_rng(SEED + 5)),
        "llama_tiny.onnx": build_llama_tiny(np.random.default_rng(SEED + 6)),
        "bert_tiny.onnx": build_bert_tiny(np.random.default_rng(SEED + 7)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--check", action="store_true",
                    help="fail if the files in --out-dir differ from a fresh generation")
    args = ap.parse_args()
    bad = 0
    for name, model in build_all().items():
        data = model.SerializeToString()
        path = os.path.join(args.out_dir, name)
        if args.check:
            try:
                with open(path, "rb") as f:
                    same = f.read() == data
            except OSError:
                same = False
            if not same:
                print(f"gen_models: {path} is stale or missing", file=sys.stderr)
                bad += 1
            continue
        os.makedirs(args.out_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        print(f"wrote {path} ({len(data)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
