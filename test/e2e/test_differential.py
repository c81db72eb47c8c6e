#!/usr/bin/env python3
"""Differential tests: small generated models, qn-compile + qn-run against ONNX Runtime.

Each case builds a small random but valid ONNX model with onnx.helper (its seed
fixed by its name), runs ONNX Runtime on the original, compiles it at tp 1, 2
and 4 - at tp 2 and 4 also with --replicate-below=0, which shards even these
small lone Linears and embedding tables, where that gives a different plan - and
runs each plan on tp CPU ranks. Every output must match ONNX Runtime: float
outputs within max|qn - ort| <= 1e-4 * max(1, max|ort|), others exactly (dtype
and shape included).

The cases cover Linear chains (MatMul and Gemm with transA/transB, alpha,
beta and every bias shape), elementwise ops with constants after a column
MatMul, reshapes (0/-1, head splits), transposes, Concat/Split/Slice on the
sharded axis (fused projections cut by Split, by constant Slices and by
torch's chunk), reductions over it and not, Softmax/LogSoftmax/LayerNormalization,
activation x activation MatMuls (attention), residual branches, shared weights
and embeddings (int64 and int32 ids, negative ids, tied LM heads), CumSum position
ids, GatherND rotary lookups and ScatterND mask updates, on (B,H) and (B,T,H)
activations, convolutions (a ViT patch embedding, Conv1d) before a Linear pair,
the exporter's additive attention masks broadcast along the heads (Mistral/Phi's
and Qwen2's Expand chains, and one whose head entry is only known at run time).
And three regressions that differential testing found:
- shape_*: Shape of a sharded value reported the local dims (a wrong graph
  output; Expand or Reshape to the local size failing at run time);
- gather_race_*: back-to-back AllGathers of one size corrupted each other
  without busy polling (run with --busy-poll off at tp 4, three times);
- embed_negative_ids*: the vocab-parallel lookup masked negative ids on every
  rank instead of counting them from the end.

Usage:
  python3 test/e2e/test_differential.py [--bin build/bin] [unittest args, e.g. -v or -k embed]
The tools directory is taken from --bin, else $QN_BIN, else <repo>/build/bin.
Plans and outputs go to a temporary folder that is removed afterwards.
"""
import concurrent.futures
import json
import os
import sys
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e  # noqa: E402  (shared helpers: tool paths, temp folders, --bin)
from test_e2e import ToolsTestCase, describe, run_tool, sanitize, tool  # noqa: E402

# Pass criterion for float outputs: max|qn - ort| <= DIFF_RTOL * max(1, max|ort|).
# Looser than test_e2e's 1e-5 and absolute near zero: these outputs are small
# and some (reductions, LayerNorm statistics) are close to zero.
DIFF_RTOL = 1e-4
TP_SIZES = (1, 2, 4)
SHARD_ALL = "--replicate-below=0"
# Plans run two at a time (most of a run is starting the rank processes).
WORKERS = 2
# Bug 2's regression cases run at tp 4 this many times with these qn-run flags.
RUNS_WITHOUT_BUSY_POLL = 3
NO_BUSY_POLL = ["--busy-poll", "off"]

H, F = 16, 64  # hidden size and MLP width (4H)
B, T = 2, 3    # batch and sequence of the inputs fed
V = 64         # vocabulary of the embedding cases


class Model:
    """A small ONNX model under construction (opset 17): inputs with the arrays
    fed to both runtimes, constants drawn from a seeded generator, nodes.

    layout is "BH" or "BTH": the shape of activations() (B and T symbolic)."""

    def __init__(self, seed, layout):
        self.rng = np.random.default_rng(seed)
        self.layout = layout
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self.feeds = {}
        self._count = 0

    @property
    def d3(self):
        return self.layout == "BTH"

    def _name(self, prefix):
        self._count += 1
        return f"{prefix}{self._count}"

    def input(self, name, dims, data):
        data = np.asarray(data)
        elem = helper.np_dtype_to_tensor_dtype(data.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, elem, dims))
        self.feeds[name] = data
        return name

    def activations(self, name="x"):
        """A float input of shape (B,H) or (B,T,H), by the layout."""
        dims, shape = (["B", "T", H], (B, T, H)) if self.d3 else (["B", H], (B, H))
        return self.input(name, dims, self.randn(*shape))

    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def const(self, value, prefix="c"):
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def constant_node(self, value):
        """value as a Constant node's output (not an initializer)."""
        name = self._name("k")
        self.nodes.append(helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(np.asarray(value))))
        return name

    def vector(self, n, shape=None, positive=False):
        """A random float constant of n values, reshaped to shape if given."""
        v = self.randn(n)
        if positive:
            v = np.abs(v) + 0.5
        return self.const(v.reshape(shape or (n,)))

    def weight(self, k, n):
        return self.const(self.randn(k, n, scale=1 / np.sqrt(k)), "W")

    def op(self, op_type, *inputs, outputs=1, **attrs):
        outs = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self._name(op_type + "_"), **attrs))
        return outs[0] if outputs == 1 else outs

    def output(self, *names):
        self.outputs += names

    def build(self):
        """The checked model; output types and shapes come from ONNX shape inference."""
        graph = helper.make_graph(self.nodes, "g", self.inputs, [], self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
        types = {v.name: v.type for v in list(inferred.value_info) + list(inferred.input)}
        for name in self.outputs:
            model.graph.output.append(onnx.ValueInfoProto(name=name, type=types[name]))
        onnx.checker.check_model(model, full_check=True)
        return model


def ints(*values):
    return np.array(values, np.int64)


def column(m, x, n=F, k=H, bias=False):
    """MatMul by a [k, n] weight (+ a bias): column-parallel first of a pair."""
    y = m.op("MatMul", x, m.weight(k, n))
    return m.op("Add", y, m.vector(n)) if bias else y


def row(m, h, k=F, n=H, bias=False):
    """The same Linear, [k, n]: row-parallel second of a pair."""
    return column(m, h, n=n, k=k, bias=bias)


def heads(m, t, count, d3):
    """[B,T,count*d] -> [B,count,T,d] (or [B,count*d] -> [B,count,d])."""
    if not d3:
        return m.op("Reshape", t, m.const(ints(0, count, -1)))
    return m.op("Transpose", m.op("Reshape", t, m.const(ints(0, 0, count, -1))), perm=[0, 2, 1, 3])


class Case:
    def __init__(self, name, build, layout, busy_poll_off_x3):
        self.name, self.build, self.layout = name, build, layout
        # Bug 2's regression: at tp 4, qn-run --busy-poll off, three runs.
        self.busy_poll_off_x3 = busy_poll_off_x3

    def model(self):
        m = Model(zlib.crc32(self.name.encode()), self.layout)
        self.build(m)
        return m.build(), m.feeds


CASES = {}


def case(*layouts, busy_poll_off_x3=False):
    """Registers build(m) once per layout ("BH", "BTH") as <name>_<layout>."""
    def register(build):
        for layout in layouts:
            name = f"{build.__name__}_{layout}"
            CASES[name] = Case(name, build, layout, busy_poll_off_x3)
        return build
    return register


# --- Linear chains -------------------------------------------------------------------

@case("BH", "BTH")
def mlp_pair(m):
    x = m.activations()
    m.output(row(m, m.op("Relu", column(m, x, bias=True)), bias=True))


def gemm_pair(m, c1, c2, alpha=1.0, beta=1.0, transB=1, static_batch=False):
    """Gemm -> Relu -> Gemm with the given bias shapes (None: no C)."""
    x = m.input("x", [B if static_batch else "B", H], m.randn(B, H))
    h = x
    for k, n, c in ((H, F, c1), (F, H, c2)):
        w = m.weight(n, k) if transB else m.weight(k, n)
        args = [h, w] + ([m.const(m.randn(*c))] if c else [])
        h = m.op("Gemm", *args, alpha=alpha, beta=beta, transB=transB)
        if k == H:
            h = m.op("Relu", h)
    m.output(h)


@case("BH")
def gemm_vector_bias(m):
    gemm_pair(m, (F,), (H,))


@case("BH")
def gemm_no_bias_scalar_bias(m):
    gemm_pair(m, None, (1,))


@case("BH")
def gemm_alpha_beta_full_bias(m):
    gemm_pair(m, (B, F), (B, H), alpha=0.5, beta=-1.5, static_batch=True)


@case("BH")
def gemm_transB0_row_bias(m):
    gemm_pair(m, (1, F), (1, H), alpha=2.0, beta=0.25, transB=0)


@case("BH")
def gemm_column_bias(m):
    gemm_pair(m, (B, 1), (B, 1), static_batch=True)


@case("BH")
def gemm_transA(m):
    x = m.input("x", [H, "B"], m.randn(H, B))
    h = m.op("Gemm", x, m.weight(H, F), m.vector(F), transA=1)
    m.output(m.op("Gemm", m.op("Relu", h), m.weight(F, H), alpha=0.7))


@case("BH")
def gemm_lone(m):
    x = m.activations()
    m.output(m.op("Gemm", x, m.weight(F, H), m.vector(F), transB=1, alpha=0.5, beta=3.0))


@case("BH")
def matmul_then_gemm(m):
    x = m.activations()
    h = m.op("Relu", column(m, x, bias=True))
    m.output(m.op("Gemm", h, m.weight(H, F), m.vector(H), transB=1, beta=0.5))


@case("BTH")
def lone_column_output(m):
    x = m.activations()
    m.output(m.op("Tanh", column(m, x, bias=True)))


@case("BTH")
def deep_chain(m):
    """Three residual SiLU MLP blocks, each followed by a LayerNorm."""
    z = m.activations()
    for _ in range(3):
        h = column(m, z, bias=True)
        h = m.op("Mul", h, m.op("Sigmoid", h))
        z = m.op("Add", z, row(m, h, bias=True))
        z = m.op("LayerNormalization", z, m.vector(H), m.vector(H), axis=-1)
    m.output(z)


# --- Elementwise after a column MatMul ---------------------------------------------

@case("BH", "BTH")
def elementwise_constants(m):
    """Constants of shape [4H], [1,1,4H], [1,4H], [1] and () on either side."""
    h = column(m, m.activations())
    a = m.op("Add", h, m.vector(F))
    a = m.op("Sub", m.vector(F, (1, 1, F), positive=True), a)
    a = m.op("Mul", a, m.const(np.array([1.7], np.float32)))
    a = m.op("Div", a, m.const(np.float32(0.8)))
    a = m.op("Max", a, m.vector(F, (1, F)))
    if not m.d3:  # [1,1,4H] made it [1,B,4H]
        a = m.op("Squeeze", a, m.const(ints(0)))
    m.output(row(m, m.op("Relu", a)))


@case("BH")
def where_max_min(m):
    h = column(m, m.activations())
    a = m.op("Where", m.const(m.rng.random(F) > 0.5), h, m.vector(F))
    b = m.op("Min", m.op("Max", a, m.vector(F)), m.const(np.float32(0.5)), m.vector(F, (1, F)))
    c = m.op("Where", m.op("Greater", h, m.const(np.float32(0.1))), b, m.const(np.float32(-1.0)))
    m.output(row(m, c))


@case("BTH")
def gelu_erf(m):
    h = column(m, m.activations(), bias=True)
    e = m.op("Erf", m.op("Div", h, m.const(np.float32(1.4142135))))
    g = m.op("Mul", h, m.op("Add", e, m.const(np.float32(1))))
    g = m.op("Mul", g, m.const(np.float32(0.5)))
    m.output(row(m, g, bias=True))


@case("BH", "BTH")
def unary_chain(m):
    h = column(m, m.activations(), bias=True)
    a = m.op("Add", m.op("Tanh", h), m.op("Sigmoid", h))
    b = m.op("Mul", a, m.op("Exp", m.op("Neg", m.op("Abs", h))))
    m.output(row(m, m.op("Erf", m.op("Identity", b)), bias=True))


@case("BH", "BTH")
def activations(m):
    """The ops of runtime/lib/Activations.h, IsNaN, Clip and Dropout between a
    column and a row Linear (sharded like any unary op)."""
    h = column(m, m.activations(), bias=True)
    a = m.op("Add", m.op("Softplus", h), m.op("HardSwish", h))
    a = m.op("Add", a, m.op("LeakyRelu", h, alpha=0.1))
    a = m.op("Add", a, m.op("Elu", h, alpha=0.7))
    a = m.op("Add", a, m.op("Selu", h))
    a = m.op("Add", a, m.op("HardSigmoid", h, alpha=0.3, beta=0.4))
    r = m.op("Add", m.op("Floor", h), m.op("Ceil", h))
    r = m.op("Add", r, m.op("Round", m.op("Mul", h, m.const(np.float32(2)))))
    r = m.op("Add", r, m.op("Sign", h))
    a = m.op("Add", a, m.op("Mul", r, m.const(np.float32(0.01))))
    c = m.op("Clip", a, m.const(np.float32(-1.5)), m.const(np.float32(3.0)))
    d = m.op("Dropout", c)
    d = m.op("Where", m.op("IsNaN", d), m.const(np.float32(0)), d)
    m.output(row(m, d, bias=True))


@case("BH", "BTH")
def compare_logic(m):
    """Comparison and logic ops on a column Linear's output stay sharded: a
    mask feeding Where keeps the Megatron pair, and a bool graph output is
    gathered."""
    h = column(m, m.activations(), bias=True)
    g = m.op("Greater", h, m.const(np.float32(0.1)))
    band = m.op("And", g, m.op("Less", h, m.vector(F)))
    m.output(row(m, m.op("Where", m.op("Not", band), h, m.const(np.float32(0))), bias=True))
    m.output(m.op("Or", m.op("Equal", g, band), m.op("LessOrEqual", h, m.vector(F))))


@case("BH")
def cast_float64(m):
    h = m.op("Cast", column(m, m.activations()), to=TensorProto.DOUBLE)
    h = m.op("Mul", h, m.const(np.float64(2)))
    m.output(row(m, m.op("Cast", h, to=TensorProto.FLOAT)))


# --- Reshape, Transpose ----------------------------------------------------------------

@case("BH", "BTH")
def reshape_heads(m):
    """Split into 4 heads, (transpose,) Relu, merge back."""
    h = heads(m, column(m, m.activations()), 4, m.d3)
    a = m.op("Relu", h)
    if m.d3:
        a = m.op("Transpose", a, perm=[0, 2, 1, 3])
    m.output(row(m, m.op("Reshape", a, m.const(ints(0, 0, F) if m.d3 else ints(0, -1)))))


@case("BTH")
def reshape_merge_batch(m):
    h = column(m, m.activations())
    m.output(row(m, m.op("Relu", m.op("Reshape", h, m.const(ints(-1, F))))))


@case("BTH")
def reshape_reduce_inner(m):
    """[B,T,4H] -> [B,T,16,4], reduce the inner 4 -> row over 16."""
    h = m.op("Reshape", column(m, m.activations()), m.const(ints(0, 0, 16, 4)))
    m.output(row(m, m.op("ReduceSum", h, m.const(ints(-1)), keepdims=0), k=16))


@case("BTH")
def reshape_heads_center(m):
    """Split into 4 heads, subtract each head's mean."""
    h = m.op("Reshape", column(m, m.activations()), m.const(ints(0, 0, 4, 16)))
    s = m.op("Sub", h, m.op("ReduceMean", h, axes=[-1], keepdims=1))
    m.output(row(m, m.op("Reshape", s, m.const(ints(0, 0, F)))))


@case("BTH")
def transpose_feature_first(m):
    h = column(m, m.activations())
    t = m.op("Relu", m.op("Transpose", h, perm=[2, 0, 1]))
    m.output(row(m, m.op("Transpose", t, perm=[1, 2, 0])))


@case("BH")
def reshape_transpose_permute(m):
    h = m.op("Reshape", column(m, m.activations()), m.const(ints(0, 4, 16)))
    t = m.op("Transpose", h, perm=[0, 2, 1])
    m.output(row(m, m.op("Reshape", t, m.const(ints(0, -1)))))


@case("BTH")
def flatten_unsqueeze(m):
    h = column(m, m.activations())
    y = row(m, m.op("Flatten", h, axis=2))  # [B*T, 4H]
    u = m.op("Unsqueeze", h, m.const(ints(-1)))
    m.output(y, row(m, m.op("Squeeze", m.op("Tanh", u), m.const(ints(-1)))))


@case("BTH")
def expand_constant_target(m):
    h = column(m, m.activations())
    m.output(row(m, m.op("Expand", h, m.const(ints(3, 1, 1, 1)))))


@case("BH")
def gather_features(m):
    """Gather on the sharded axis: a permutation, and negative and repeated indices."""
    h = column(m, m.activations())
    p = m.op("Gather", h, m.const(m.rng.permutation(F).astype(np.int64)), axis=-1)
    g = m.op("Gather", h, m.const(ints(-1, 0, 3, -5, 7, 7, 20, 63)), axis=-1)
    m.output(row(m, p), row(m, g, k=8))


# --- Concat, Split, Slice on the sharded axis --------------------------------------

@case("BTH")
def concat_two_columns(m):
    x = m.activations()
    c = m.op("Concat", column(m, x), column(m, x), axis=-1)
    m.output(row(m, m.op("Relu", c), k=2 * F))


@case("BH")
def concat_column_with_input(m):
    x = m.activations()
    c = m.op("Concat", column(m, x), x, axis=-1)
    m.output(row(m, m.op("Relu", c), k=F + H))


@case("BTH")
def split_glu(m):
    a, b = m.op("Split", column(m, m.activations()), m.const(ints(32, 32)), outputs=2, axis=-1)
    m.output(row(m, m.op("Mul", a, m.op("Sigmoid", b)), k=32))


@case("BH")
def split_uneven_swap(m):
    a, b = m.op("Split", column(m, m.activations()), m.const(ints(16, 48)), outputs=2, axis=-1)
    m.output(row(m, m.op("Concat", b, a, axis=-1)))


@case("BH")
def split_three(m):
    a, b, c = m.op("Split", column(m, m.activations(), n=3 * F), outputs=3, axis=-1)
    m.output(row(m, m.op("Add", m.op("Mul", a, b), c)))


def sliced(m, start, end, step):
    h = column(m, m.activations())
    s = m.op("Slice", h, m.const(ints(start)), m.const(ints(end)), m.const(ints(-1)),
             m.const(ints(step)))
    k = len(range(F)[slice(start, None if abs(end) > F else end, step)])
    m.output(row(m, m.op("Relu", s), k=k))


@case("BTH")
def slice_step2(m):
    sliced(m, 0, F, 2)


@case("BH")
def slice_reverse(m):
    sliced(m, -1, -2**62, -1)


@case("BH")
def slice_negative_start(m):
    sliced(m, -32, 2**62, 1)


@case("BH")
def slice_two_axes(m):
    h = column(m, m.activations())
    s = m.op("Slice", h, m.const(ints(0, -16)), m.const(ints(1, 2**62)), m.const(ints(0, -1)))
    m.output(row(m, s, k=16))


@case("BTH")
def split_rows_of_two_widths(m):
    a, b = m.op("Split", column(m, m.activations()), m.const(ints(16, 48)), outputs=2, axis=-1)
    m.output(m.op("Add", row(m, a, k=16), row(m, m.op("Relu", b), k=48)))


def fused_slices(m, x, parts, bias=False):
    """A fused projection [H, sum(parts)] (Phi-3's qkv_proj) cut by Slices
    with constant bounds: the first starts at 0, the last is written from
    the end (a negative start, an end past the axis)."""
    n = sum(parts)
    y = column(m, x, n=n, bias=bias)
    out, start = [], 0
    for i, w in enumerate(parts):
        last = i == len(parts) - 1
        b = (-w, 2**62) if last else (start, start + w)
        out.append(m.op("Slice", y, m.const(ints(b[0])), m.const(ints(b[1])), m.const(ints(-1))))
        start += w
    return out


def chunk(m, y, k):
    """torch's chunk(k, dim=-1) as TorchScript exports it (Phi-3's
    gate_up_proj): size = (Shape(y)[-1] + k - 1) / k, Slice i from i*size."""
    last = m.const(ints(-1))
    n = m.op("Gather", m.op("Shape", y), last, axis=0)
    size = m.op("Div", m.op("Add", n, m.const(ints(k - 1))), m.const(ints(k)))
    bounds = [m.const(ints(0))] + [m.op("Mul", size, m.const(ints(i))) for i in range(1, k + 1)]
    return [m.op("Slice", y, bounds[i], bounds[i + 1], last) for i in range(k)]


@case("BTH")
def slice_fused_qkv_attention(m):
    """4-head causal attention from a fused Q|K|V projection (with a bias)
    cut by constant Slices; a residual around the output projection."""
    x = m.activations()
    q, k, v = (heads(m, t, 4, True) for t in fused_slices(m, x, (H, H, H), bias=True))
    s = m.op("Div", m.op("MatMul", q, m.op("Transpose", k, perm=[0, 1, 3, 2])),
             m.const(np.float32(2.0)))
    s = m.op("Add", s, m.const(np.triu(np.full((T, T), -1e4, np.float32), 1)))
    o = m.op("Transpose", m.op("MatMul", m.op("Softmax", s, axis=-1), v), perm=[0, 2, 1, 3])
    m.output(m.op("Add", x, row(m, m.op("Reshape", o, m.const(ints(0, 0, H))), k=H, n=H)))


@case("BH", "BTH")
def slice_chunk_gate_up(m):
    """SiLU-gated MLP from a fused gate|up projection cut by chunk(2)."""
    gate, up = chunk(m, column(m, m.activations(), n=2 * F), 2)
    m.output(row(m, m.op("Mul", m.op("Mul", gate, m.op("Sigmoid", gate)), up)))


@case("BH")
def slice_chunk_three(m):
    """chunk(3) of a fused projection: three parts summed."""
    a, b, c = chunk(m, column(m, m.activations(), n=3 * F), 3)
    m.output(row(m, m.op("Add", m.op("Mul", a, b), c)))


@case("BTH")
def slice_fused_unequal(m):
    """Parts of different widths (grouped-query attention's q|k|v): not
    taken as a fused projection, the projection stays an ordinary Linear."""
    q, k, v = fused_slices(m, m.activations(), (32, 16, 16))
    m.output(row(m, m.op("Add", q, m.op("Concat", k, v, axis=-1)), k=32))


# --- Reductions, normalisations ------------------------------------------------------

@case("BH", "BTH")
def reduce_sharded_axis(m):
    """Reductions over the sharded (feature) axis: last axis and all axes."""
    h = column(m, m.activations())
    m.output(row(m, m.op("Relu", h)),
             m.op("ReduceSum", h, m.const(ints(-1)), keepdims=1),
             m.op("ReduceMax", h, axes=[-1], keepdims=0),
             m.op("ReduceMean", h, keepdims=0))


@case("BH", "BTH")
def reduce_other_axis(m):
    """Reductions over the batch axis keep the features sharded."""
    h = column(m, m.activations())
    s = m.op("ReduceSum", h, m.const(ints(0)), keepdims=1)
    m.output(row(m, s), m.op("ReduceMean", m.op("Tanh", h), axes=[0], keepdims=0))


@case("BTH")
def rms_norm(m):
    h = column(m, m.activations())
    ms = m.op("ReduceMean", m.op("Pow", h, m.const(np.float32(2))), axes=[-1], keepdims=1)
    n = m.op("Div", h, m.op("Sqrt", m.op("Add", ms, m.const(np.float32(1e-5)))))
    m.output(row(m, m.op("Mul", n, m.vector(F))))


@case("BH", "BTH")
def softmax_features(m):
    h = column(m, m.activations())
    m.output(row(m, m.op("Softmax", h, axis=-1)), m.op("LogSoftmax", h, axis=-1))


@case("BTH")
def softmax_other_axes(m):
    h = column(m, m.activations())
    m.output(row(m, m.op("Softmax", h, axis=1)), row(m, m.op("LogSoftmax", h, axis=0)))


@case("BH", "BTH")
def layernorm_sharded(m):
    h = column(m, m.activations())
    m.output(row(m, m.op("LayerNormalization", h, m.vector(F), m.vector(F), axis=-1, epsilon=1e-5)))


@case("BTH")
def layernorm_statistics(m):
    h = column(m, m.activations())
    ln, mean, inv_std = m.op("LayerNormalization", h, m.vector(F), outputs=3, axis=-1)
    m.output(row(m, ln), mean, inv_std)


@case("BTH")
def layernorm_pre(m):
    x = m.activations()
    ln = m.op("LayerNormalization", x, m.vector(H), m.vector(H), axis=-1)
    y = row(m, m.op("Relu", column(m, ln, bias=True)), bias=True)
    m.output(m.op("Add", x, y))


# --- Activation x activation MatMul ---------------------------------------------------

@case("BH", "BTH")
def self_matmul(m):
    h = column(m, m.activations())
    t = m.op("Transpose", h, perm=[0, 2, 1] if m.d3 else [1, 0])
    m.output(m.op("Softmax", m.op("MatMul", h, t), axis=-1))


@case("BTH")
def attention_single_head(m):
    x = m.activations()
    q, k, v = (column(m, x, n=H) for _ in range(3))
    s = m.op("MatMul", q, m.op("Transpose", k, perm=[0, 2, 1]))
    s = m.op("Mul", s, m.const(np.float32(0.25)))
    m.output(row(m, m.op("MatMul", m.op("Softmax", s, axis=-1), v), k=H))


@case("BTH")
def attention_4_heads(m):
    """Causal multi-head attention with a residual; the probabilities an output too."""
    x = m.activations()
    q, k, v = (heads(m, column(m, x, n=H, bias=True), 4, True) for _ in range(3))
    s = m.op("MatMul", q, m.op("Transpose", k, perm=[0, 1, 3, 2]))
    s = m.op("Div", s, m.const(np.float32(2.0)))
    s = m.op("Add", s, m.const(np.triu(np.full((T, T), -1e4, np.float32), 1)))
    p = m.op("Softmax", s, axis=-1)
    o = m.op("Transpose", m.op("MatMul", p, v), perm=[0, 2, 1, 3])
    y = row(m, m.op("Reshape", o, m.const(ints(0, 0, H))), k=H, n=H, bias=True)
    m.output(m.op("Add", x, y), p)


def exported_mask(m, x, mask2d, head=None):
    """The TorchScript exporter's additive attention mask (HF 4.41 Mistral,
    Qwen2, Phi): mask2d [T,T] -> [1,1,T,T] expanded to the run-time target
    Where(Equal(t, -1), 1, t), t = Reshape(Concat(batch, head, seq, past + seq),
    [-1]); head is the constant 1 unless given (a run-time entry)."""
    sx = m.op("Shape", x)
    b = m.op("Gather", sx, m.const(np.int64(0)), axis=0)
    t = m.op("Gather", sx, m.const(np.int64(1)), axis=0)
    kv = m.op("Add", t, m.op("Sub", t, t))
    ax0 = m.const(ints(0))
    pieces = [m.op("Unsqueeze", b, ax0), head or m.const(ints(1)), m.op("Unsqueeze", t, ax0),
              m.op("Unsqueeze", kv, ax0)]
    target = m.op("Reshape", m.op("Concat", *pieces, axis=0), m.const(ints(-1)))
    ones = m.op("ConstantOfShape", m.op("Shape", target), value=numpy_helper.from_array(ints(1)))
    target = m.op("Where", m.op("Equal", target, m.op("Mul", ones, m.const(np.int64(-1)))),
                  ones, target)
    m4 = m.op("Unsqueeze", m.op("Unsqueeze", mask2d, ax0), m.const(ints(1)))
    return m.op("Expand", m4, target)


def masked_attention(m, mask_of, scores_mask=False, merge_rest=False):
    """4-head attention whose scores get the additive mask mask_of(m, x) (or
    mask_of(m, x, scores) with scores_mask). merge_rest: the heads are merged
    back as exporters write view(bsz, q_len, -1), a run-time target whose
    last entry is -1."""
    x = m.activations()
    q, k, v = (heads(m, column(m, x, n=H), 4, True) for _ in range(3))
    s = m.op("Div", m.op("MatMul", q, m.op("Transpose", k, perm=[0, 1, 3, 2])),
             m.const(np.float32(2.0)))
    mask = mask_of(m, x, s) if scores_mask else mask_of(m, x)
    p = m.op("Softmax", m.op("Add", s, mask), axis=-1)
    o = m.op("Transpose", m.op("MatMul", p, v), perm=[0, 2, 1, 3])
    if merge_rest:
        so = m.op("Shape", o)
        ax0 = m.const(ints(0))
        entries = [m.op("Unsqueeze", m.op("Gather", so, m.const(np.int64(i)), axis=0), ax0)
                   for i in (0, 1)]
        target = m.op("Concat", *entries, m.const(ints(-1)), axis=0)
    else:
        target = m.const(ints(0, 0, H))
    m.output(m.op("Add", x, row(m, m.op("Reshape", o, target), k=H, n=H)))


@case("BTH")
def attention_exported_mask(m):
    """Mistral's and Phi's mask: a constant causal [T,T] (head axis 1)."""
    causal = m.const(np.triu(np.full((T, T), -1e4, np.float32), 1))
    masked_attention(m, lambda m, x: exported_mask(m, x, causal))


@case("BTH")
def attention_exported_trilu_mask(m):
    """Qwen2's mask: built at run time by ConstantOfShape -> Trilu -> Where."""
    def mask(m, x):
        sx = m.op("Shape", x)
        t1 = m.op("Slice", sx, m.const(ints(1)), m.const(ints(2)))
        ones = m.op("ConstantOfShape", m.op("Concat", t1, t1, axis=0),
                    value=numpy_helper.from_array(np.array([1.0], np.float32)))
        keep = m.op("Cast", m.op("Trilu", ones, m.const(np.int64(0)), upper=0), to=TensorProto.BOOL)
        causal = m.op("Where", keep, m.const(np.float32(0.0)), m.const(np.float32(-1e4)))
        return exported_mask(m, x, causal)
    masked_attention(m, mask)


@case("BTH")
def attention_exported_mask_runtime_head(m):
    """The mask's head entry is computed at run time (t / t, 1 but not provably):
    the scores are gathered, the mask neither left whole nor sliced."""
    def mask(m, x):
        sx = m.op("Shape", x)
        t = m.op("Gather", sx, m.const(np.int64(1)), axis=0)
        head = m.op("Unsqueeze", m.op("Div", t, t), m.const(ints(0)))
        causal = m.const(np.triu(np.full((T, T), -1e4, np.float32), 1))
        return exported_mask(m, x, causal, head=head)
    masked_attention(m, mask)


@case("BTH")
def attention_mask_expand_as(m):
    """DistilBERT's mask: a [1,1,1,T] key mask expanded to Shape(scores)
    (expand_as) on the head-sharded scores, then Where; heads merged back by
    view(bsz, q_len, -1) (Gemma)."""
    def mask(m, x, s):
        keep = np.ones((1, 1, 1, T), np.bool_)
        keep[..., 0] = False
        e = m.op("Expand", m.const(keep), m.op("Shape", s))
        return m.op("Where", e, m.const(np.float32(0.0)), m.const(np.float32(-1e4)))
    masked_attention(m, mask, scores_mask=True, merge_rest=True)


@case("BTH")
def attention_multi_query_fused(m):
    """Falcon's multi-query attention: one fused projection for 4 query heads,
    then one key and one value head ([B,T,6,D] cut by a Slice and two
    Gathers: parts of unequal width, defused into q, k, v); the single K/V
    head broadcast over the query heads in the MatMuls."""
    x = m.activations()
    d = H // 4
    fused = m.op("Reshape", column(m, x, n=6 * d), m.const(ints(0, 0, 6, d)))
    q = m.op("Slice", fused, m.const(ints(0)), m.const(ints(-2)), m.const(ints(2)),
             m.const(ints(1)))
    k = m.op("Gather", fused, m.const(ints(-2)), axis=2)
    v = m.op("Gather", fused, m.const(ints(-1)), axis=2)
    q, k, v = (m.op("Transpose", t, perm=[0, 2, 1, 3]) for t in (q, k, v))
    s = m.op("Div", m.op("MatMul", q, m.op("Transpose", k, perm=[0, 1, 3, 2])),
             m.const(np.float32(2.0)))
    o = m.op("Transpose", m.op("MatMul", m.op("Softmax", s, axis=-1), v), perm=[0, 2, 1, 3])
    m.output(m.op("Add", x, row(m, m.op("Reshape", o, m.const(ints(0, 0, H))), k=H, n=H)))


def flat_heads(m, x, count, flat):
    """q, k, v as [B*count, T, d] the way OPT and GPT-NeoX export them
    (flat(m, t) builds the [B*count, -1, d] target from t = [B,count,T,d])."""
    d = H // count
    out = []
    for _ in range(3):
        t = m.op("Transpose", m.op("Reshape", column(m, x, n=H), m.const(ints(0, 0, count, d))),
                 perm=[0, 2, 1, 3])
        out.append(m.op("Reshape", t, flat(m, t)))
    return out


@case("BTH")
def attention_batch_heads_constant(m):
    """OPT's attention: q/k/v flattened to [bsz*heads, T, d] with bsz*heads =
    Mul(bsz, 4) shared by every target, bmm, the scores viewed as
    [bsz, heads, T, S] to add a causal mask (built at run time) and
    flattened again, bmm, the output viewed back as [bsz, heads, T, d]."""
    count, d = 4, H // 4
    x = m.activations()
    sx = m.op("Shape", x)
    bsz = m.op("Gather", sx, m.const(np.int64(0)), axis=0)
    bh = m.op("Unsqueeze", m.op("Mul", bsz, m.const(np.int64(count))), m.const(ints(0)))
    ub = m.op("Unsqueeze", bsz, m.const(ints(0)))
    ut = m.op("Unsqueeze", m.op("Gather", sx, m.const(np.int64(1)), axis=0), m.const(ints(0)))
    flat = lambda m, t, last=None: m.op("Concat", bh, m.const(ints(-1)),
                                        last or m.const(ints(d)), axis=0)
    q, k, v = flat_heads(m, x, count, flat)
    s = m.op("MatMul", q, m.op("Transpose", k, perm=[0, 2, 1]))
    s4 = m.op("Reshape", s, m.op("Concat", ub, m.const(ints(count)), m.const(ints(-1)), ut,
                                 axis=0))
    t1 = m.op("Slice", sx, m.const(ints(1)), m.const(ints(2)))
    ones = m.op("ConstantOfShape", m.op("Concat", t1, t1, axis=0),
                value=numpy_helper.from_array(np.array([1.0], np.float32)))
    keep = m.op("Cast", m.op("Trilu", ones, m.const(np.int64(0)), upper=0), to=TensorProto.BOOL)
    s4 = m.op("Add", s4, m.op("Where", keep, m.const(np.float32(0.0)),
                              m.const(np.float32(-1e4))))
    s = m.op("Reshape", s4, flat(m, s4, ut))
    o = m.op("MatMul", m.op("Softmax", s, axis=-1), v)
    o4 = m.op("Reshape", o, m.op("Concat", ub, m.const(ints(count)), m.const(ints(-1)),
                                 m.const(ints(d)), axis=0))
    o = m.op("Reshape", m.op("Transpose", o4, perm=[0, 2, 1, 3]), m.const(ints(0, 0, H)))
    m.output(m.op("Add", x, row(m, o, k=H, n=H)))


@case("BTH")
def attention_batch_heads_shape(m):
    """GPT-NeoX's attention: batch*heads read from the query's shape (the
    local head count on each rank), baddbmm as zeros (ConstantOfShape of that
    size) + scale * bmm, the scores viewed as [batch, heads, T, S]."""
    count, d = 4, H // 4
    x = m.activations()
    q4 = [None]

    def flat(m, t):
        st = m.op("Shape", t)
        dim = lambda i: m.op("Gather", st, m.const(np.int64(i)), axis=0)
        b, h = dim(0), dim(1)
        q4[0] = q4[0] or (t, b, h, dim(2))
        return m.op("Concat", m.op("Unsqueeze", m.op("Mul", b, h), m.const(ints(0))),
                    m.const(ints(-1)), m.const(ints(d)), axis=0)
    q, k, v = flat_heads(m, x, count, flat)
    t, b, h, tt = q4[0]
    u = lambda v: m.op("Unsqueeze", v, m.const(ints(0)))
    zeros = m.op("ConstantOfShape", m.op("Concat", u(m.op("Mul", b, h)), u(tt), u(tt), axis=0),
                 value=numpy_helper.from_array(np.array([0.0], np.float32)))
    s = m.op("Add", m.op("Mul", zeros, m.const(np.float32(1.0))),
             m.op("Mul", m.op("MatMul", q, m.op("Transpose", k, perm=[0, 2, 1])),
                  m.const(np.float32(0.5))))
    s4 = m.op("Reshape", s, m.op("Concat", u(b), u(h), u(tt), u(tt), axis=0))
    o = m.op("MatMul", m.op("Softmax", s4, axis=-1),
             m.op("Reshape", v, m.op("Concat", u(b), u(h), u(tt), m.const(ints(d)), axis=0)))
    o = m.op("Reshape", m.op("Transpose", o, perm=[0, 2, 1, 3]), m.const(ints(0, 0, H)))
    m.output(m.op("Add", x, row(m, o, k=H, n=H)))


@case("BTH")
def batched_matmul_columns(m):
    x = m.activations()
    s = m.op("MatMul", m.op("Transpose", column(m, x), perm=[0, 2, 1]), column(m, x))
    m.output(m.op("ReduceSum", s, m.const(ints(-1)), keepdims=0))


# --- Residual branches, shared weights, row outputs ----------------------------------

@case("BH", "BTH")
def residual_two_blocks(m):
    x = m.activations()
    z = m.op("Add", x, row(m, m.op("Relu", column(m, x, bias=True)), bias=True))
    m.output(m.op("Add", z, row(m, m.op("Sigmoid", column(m, z)))))


@case("BTH")
def two_branches_two_rows(m):
    h = column(m, m.activations())
    m.output(m.op("Add", row(m, m.op("Relu", h)), row(m, m.op("Tanh", h))))


@case("BH")
def intermediate_output(m):
    r = m.op("Relu", column(m, m.activations()))
    m.output(row(m, r), r)


@case("BH")
def shared_weights_chained(m):
    x = m.activations()
    w1, w2 = m.weight(H, F), m.weight(F, H)
    y = m.op("MatMul", m.op("Relu", m.op("MatMul", x, w1)), w2)
    m.output(m.op("MatMul", m.op("Tanh", m.op("MatMul", y, w1)), w2))


@case("BTH")
def shared_weight_same_input(m):
    x = m.activations()
    w = m.weight(H, F)
    h1, h2 = m.op("MatMul", x, w), m.op("MatMul", x, w)
    m.output(row(m, m.op("Mul", h1, m.op("Sigmoid", h2))))


@case("BH")
def row_weight_read_elsewhere(m):
    h = column(m, m.activations())
    w = m.weight(F, H)
    y = m.op("MatMul", m.op("Relu", h), w)
    m.output(m.op("Add", y, m.op("ReduceMean", w, axes=[0], keepdims=0)))


@case("BH")
def column_weight_read_elsewhere(m):
    x = m.activations()
    w = m.weight(H, F)
    h = m.op("MatMul", x, w)
    first_row = m.op("Slice", w, m.const(ints(0)), m.const(ints(1)), m.const(ints(0)))
    m.output(row(m, m.op("Relu", h)), m.op("Add", h, first_row))


@case("BH")
def weight_from_constant_node(m):
    w = m.constant_node(m.randn(H, F, scale=0.25))
    m.output(row(m, m.op("Relu", m.op("MatMul", m.activations(), w))))


@case("BTH")
def matmul_4d(m):
    x = m.input("x", ["A", "B", T, H], m.randn(2, B, T, H))
    m.output(row(m, m.op("Relu", column(m, x))))


@case("BH")
def row_output_ops(m):
    y = row(m, m.op("Relu", column(m, m.activations())))
    m.output(m.op("Where", m.const(m.rng.random(H) > 0.5), y, m.const(np.float32(0))),
             m.op("ReduceSum", y, m.const(ints(-1)), keepdims=1),
             m.op("Reshape", m.op("Transpose", y), m.const(ints(-1))))


@case("BTH")
def row_outputs_combined(m):
    """Two row outputs multiplied, a reshape and softmax of the reduced sum."""
    r = m.op("Relu", column(m, m.activations()))
    y1, y2 = row(m, r), row(m, r)
    m.output(m.op("Mul", y1, y2),
             m.op("Softmax", m.op("Reshape", y1, m.const(ints(-1, 4))), axis=-1))


# --- Embeddings --------------------------------------------------------------------------

def embedding_lm(m, ids, head="tied", vocab=V):
    """Embedding [V,H] -> residual MLP -> head: "tied" (MatMul by the table's
    transpose), "gemm" (Gemm transB by the table), "table_as_weight", "linear"
    (its own [H,V] weight and bias) or "none"."""
    V = vocab
    table = m.const(m.randn(V, H, scale=0.5), "table")
    dims = ["B", "T"] if ids.ndim == 2 else ["N"]
    x = m.input("ids", dims, ids)
    e = m.op("Gather", table, x, axis=0)
    y = m.op("Add", e, row(m, m.op("Relu", column(m, e, bias=True)), bias=True))
    if head == "tied":
        y = m.op("MatMul", y, m.op("Transpose", table))
    elif head == "gemm":
        y = m.op("Gemm", y, table, transB=1)
    elif head == "table_as_weight":  # softmax over V, then a MatMul by the table
        y = m.op("MatMul", m.op("Softmax", m.op("MatMul", y, m.weight(H, V)), axis=-1), table)
    elif head == "linear":
        y = m.op("Add", m.op("MatMul", y, m.weight(H, V)), m.vector(V))
    m.output(y)


@case("BTH")
def embed_int64_ids(m):
    embedding_lm(m, m.rng.integers(0, V, (B, T)).astype(np.int64))


@case("BH")
def embed_int32_ids_gemm_head(m):
    embedding_lm(m, m.rng.integers(0, V, (5,)).astype(np.int32), head="gemm")


@case("BTH")
def embed_negative_ids(m):
    """Bug 3: negative ids; the ends of [-V, V) and of the ranks' rows at tp 2 and 4."""
    ids = ints(-V, -1, V - 1, 0, -V // 2, -V // 2 - 1, -V // 4, 3 * V // 4 - 1)
    embedding_lm(m, ids.reshape(2, 4))


@case("BTH")
def embed_odd_vocab(m):
    """A vocabulary (61) that neither tp 2 nor 4 divides: the table padded with
    zero rows and the LM head with zero columns (sliced off after the
    gather); negative ids and the ends of the true vocabulary."""
    v = 61
    ids = ints(-v, -1, v - 1, 0, -v // 2, v // 2, v // 4, 3 * v // 4)
    embedding_lm(m, ids.reshape(2, 4), head="linear", vocab=v)


@case("BH")
def embed_negative_ids_int32(m):
    embedding_lm(m, m.rng.integers(-V, V, (7,)).astype(np.int32), head="none")


@case("BTH")
def embed_table_as_weight(m):
    embedding_lm(m, m.rng.integers(0, V, (B, T)).astype(np.int64), head="table_as_weight")


@case("BTH")
def embed_flattened(m):
    """[B,T] ids -> [B,T,H] -> [B,T*H] -> column (K = T*H) -> row."""
    table = m.const(m.randn(V, H), "table")
    ids = m.input("ids", ["B", T], m.rng.integers(0, V, (B, T)).astype(np.int64))
    e = m.op("Reshape", m.op("Gather", table, ids, axis=0), m.const(ints(0, -1)))
    m.output(row(m, m.op("Relu", column(m, e, k=T * H))))


@case("BTH")
def embed_plus_positions(m):
    table, pos = m.const(m.randn(V, H), "table"), m.const(m.randn(T, H), "pos")
    ids = m.input("ids", ["B", T], m.rng.integers(0, V, (B, T)).astype(np.int64))
    e = m.op("Add", m.op("Gather", table, ids, axis=0),
             m.op("Gather", pos, m.const(ints(0, 1, 2)), axis=0))
    m.output(row(m, m.op("Relu", column(m, e))), e)


# --- CumSum, GatherND, ScatterND (the exporters' position ids, rotary lookups, masks) ------

@case("BTH")
def cumsum_position_ids(m):
    """OPT's position ids: cumsum(mask, 1) * mask - 1 (+ 2), a Gather of a position table;
    and CumSums of a column Linear's output (exclusive, reverse) along the sharded axis and
    along T."""
    x = m.activations()
    mask = m.input("mask", ["B", "T"], np.array([[1, 1, 1], [0, 1, 1]], np.int64))
    c = m.op("CumSum", mask, m.const(np.int64(1)))
    pos = m.op("Add", m.op("Sub", m.op("Mul", c, mask), m.const(ints(1))), m.const(ints(2)))
    e = m.op("Gather", m.const(m.randn(T + 2, H), "pos"), pos, axis=0)
    h = m.op("Add", x, e)
    m.output(row(m, m.op("Relu", column(m, h))))
    f = m.op("CumSum", column(m, x), m.const(np.int32(-1)), exclusive=1, reverse=1)
    m.output(row(m, m.op("CumSum", f, m.const(ints(1)))))


@case("BTH")
def gathernd_rotary(m):
    """The dynamo exporter's rotary lookup: GatherND(table, position_ids[..., None]) times a
    column Linear's output; and GatherND with batch_dims=1 picking tokens of each sequence."""
    x = m.activations()
    pos = m.input("pos", ["B", "T"], np.array([[0, 1, 2], [5, -1, 0]], np.int64))
    cos = m.op("GatherND", m.const(m.randn(6, F), "cos"), m.op("Unsqueeze", pos, m.const(ints(-1))))
    m.output(row(m, m.op("Mul", column(m, x), cos)))
    pick = m.input("pick", ["B", 2, 1], np.array([[[2], [0]], [[-1], [1]]], np.int64))
    m.output(row(m, m.op("GatherND", column(m, x), pick, batch_dims=1)))


@case("BTH")
def scatternd_mask(m):
    """ScatterND updates of a mask (Llama with an attention_mask) scaling a column Linear's
    output; and reduction add (duplicate indices) and mul on the sharded activation."""
    x = m.activations()
    mask = m.input("mask", ["B", "T"], np.ones((B, T), np.float32))
    mk = m.op("ScatterND", mask, m.const(np.array([[0, 2], [1, -3]], np.int64)),
              m.const(np.array([0, 0.5], np.float32)))
    m.output(row(m, m.op("Mul", column(m, x), m.op("Unsqueeze", mk, m.const(ints(-1))))))
    h = column(m, x)
    h = m.op("ScatterND", h, m.const(np.array([[0, 1], [1, 2], [0, 1]], np.int64)),
             m.const(m.randn(3, F)), reduction="add")
    h = m.op("ScatterND", h, m.const(np.array([[1], [0]], np.int64)),
             m.const(m.randn(2, T, F)), reduction="mul")
    m.output(row(m, h))


# --- Convolutions (Conv needs R; the Linears after it shard) ----------------------------

@case("BTH")
def conv_patch_embedding(m):
    """ViT: Conv with kernel = stride = patch size -> [B,H,patches] -> [B,patches,H] -> MLP pair."""
    x = m.input("img", ["B", 3, 8, 8], m.randn(B, 3, 8, 8))
    w = m.const(m.randn(H, 3, 4, 4, scale=0.25), "W")
    p = m.op("Conv", x, w, m.vector(H), kernel_shape=[4, 4], strides=[4, 4])
    t = m.op("Transpose", m.op("Reshape", p, m.const(ints(0, H, -1))), perm=[0, 2, 1])
    h = m.op("Relu", column(m, t, bias=True))
    m.output(row(m, h, bias=True))


@case("BTH")
def conv1d(m):
    """Conv1d with pads and a bias, a grouped dilated one, a depthwise strided SAME_LOWER
    one (ONNX Runtime has no dilation with SAME_*) -> [B,T,H] -> MLP pair."""
    x = m.input("seq", ["B", 4, 10], m.randn(B, 4, 10))
    c = m.op("Conv", x, m.const(m.randn(H, 4, 3, scale=0.5), "W"), m.vector(H), pads=[1, 1])
    c = m.op("Conv", c, m.const(m.randn(H, 2, 3, scale=0.5), "W"), group=8, dilations=[2],
             pads=[2, 2])
    c = m.op("Conv", c, m.const(m.randn(H, 1, 4, scale=0.5), "W"), group=H, strides=[2],
             auto_pad="SAME_LOWER")
    t = m.op("Transpose", c, perm=[0, 2, 1])
    h = m.op("Relu", column(m, t))
    m.output(row(m, h))


# --- Regression, bug 1: Shape of a sharded value -------------------------------------

@case("BH")
def shape_of_lone_column(m):
    m.output(m.op("Shape", column(m, m.activations())))


@case("BTH")
def shape_of_pair_intermediate(m):
    h = column(m, m.activations())
    m.output(row(m, m.op("Relu", h)), m.op("Shape", h))


@case("BH", "BTH")
def shape_expand_target(m):
    h = column(m, m.activations())
    e = m.op("Expand", m.vector(F), m.op("Shape", h))
    m.output(row(m, m.op("Add", h, e)))


@case("BH", "BTH")
def shape_reshape_target(m):
    x = m.activations()
    h, h2 = column(m, x), column(m, x)
    m.output(row(m, m.op("Mul", h, m.op("Reshape", h2, m.op("Shape", h)))))


# --- Regression, bug 2: back-to-back AllGathers of one size --------------------------

@case("BH", busy_poll_off_x3=True)
def gather_race_two_outputs(m):
    x = m.activations()
    m.output(column(m, x), column(m, x))


@case("BH", busy_poll_off_x3=True)
def gather_race_concat(m):
    x = m.activations()
    c = m.op("Concat", column(m, x), column(m, x), axis=-1)
    m.output(row(m, m.op("Relu", c), k=2 * F))


# --- Running -----------------------------------------------------------------------------

def config_label(tp, compile_flags, run_flags=()):
    return " ".join([f"tp {tp}", *compile_flags, *run_flags])


def compare(name, got, ref):
    """None if got matches ref, else what differs (one line)."""
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return f"output '{name}': {got.dtype}{list(got.shape)}, ORT {ref.dtype}{list(ref.shape)}"
    if ref.dtype.kind != "f":
        if np.array_equal(got, ref):
            return None
        bad = int(np.sum(got != ref))
        values = f" ({got.tolist()}, ORT {ref.tolist()})" if ref.size <= 8 else ""
        return f"output '{name}': {bad} of {ref.size} values differ{values}"
    if ref.size == 0:
        return None
    err = float(np.max(np.abs(got.astype(np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    tol = DIFF_RTOL * max(1.0, scale)
    if err <= tol:  # False for NaN
        return None
    return (f"output '{name}': max|qn-ort| = {err:.3e} > {tol:.3e} "
            f"({DIFF_RTOL:g} * max(1, max|ort| = {scale:.3e}))")


class TestDifferential(ToolsTestCase):
    """Generated models through qn-compile + qn-run at tp 1, 2, 4 against ONNX Runtime."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ort.set_default_logger_severity(3)
        cls.pool = concurrent.futures.ThreadPoolExecutor(WORKERS)

    @classmethod
    def tearDownClass(cls):
        cls.pool.shutdown()
        super().tearDownClass()

    def reference(self, model_path, feeds, names):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        return sess.run(names, feeds)

    def plans(self, c, model_path, work):
        """(tp, compile flags, plan dir) for each plan to run; a --replicate-below=0
        plan only where it differs from the default one. Compile failures are
        reported as problems."""
        plans, problems = [], []
        for tp in TP_SIZES:
            plan_ids = set()
            for flags in ([], [SHARD_ALL]) if tp > 1 else ([],):
                out = os.path.join(work, sanitize(f"plan-{config_label(tp, flags)}"))
                proc = run_tool([tool("qn-compile"), model_path, "--tp", str(tp), "-o", out,
                                 "--quiet", *flags])
                if proc.returncode != 0:
                    problems.append(f"{c.name}, {config_label(tp, flags)}: qn-compile failed"
                                    + describe(proc))
                    continue
                with open(os.path.join(out, "plan.json")) as f:
                    plan_id = json.load(f)["plan_id"]
                if plan_id not in plan_ids:
                    plan_ids.add(plan_id)
                    plans.append((tp, flags, out))
        return plans, problems

    def run_plan(self, c, tp, flags, run_flags, repeat, plan_dir, inputs, refs):
        """What differs from ONNX Runtime in one qn-run of a plan: [] if nothing.
        repeat: which of the RUNS_WITHOUT_BUSY_POLL runs this is, or None."""
        label = f"{c.name}, {config_label(tp, flags, run_flags)}"
        if repeat is not None:
            label += f" (run {repeat + 1} of {RUNS_WITHOUT_BUSY_POLL})"
        out_dir = f"{plan_dir}-out{repeat or 0}"
        proc = run_tool([tool("qn-run"), plan_dir, "--nproc", str(tp), *inputs,
                         "--output-dir", out_dir, *run_flags])
        if proc.returncode != 0:
            return [f"{label}: qn-run failed" + describe(proc)]
        problems = []
        for name, ref in refs.items():
            path = os.path.join(out_dir, sanitize(name) + ".npy")
            if not os.path.exists(path):
                problems.append(f"{label}: output '{name}' not written")
                continue
            diff = compare(name, np.load(path), ref)
            if diff:
                problems.append(f"{label}: {diff}")
        return problems

    def check_case(self, c):
        model, feeds = c.model()
        work = self.path(c.name)
        os.makedirs(work)
        model_path = os.path.join(work, "model.onnx")
        onnx.save(model, model_path)
        inputs = []
        for name, data in feeds.items():
            path = os.path.join(work, sanitize(name) + ".npy")
            np.save(path, data)
            inputs += ["--input", f"{name}={path}"]
        names = [o.name for o in model.graph.output]
        refs = dict(zip(names, self.reference(model_path, feeds, names)))

        plans, problems = self.plans(c, model_path, work)
        runs = []  # (tp, compile flags, qn-run flags, repeat, plan dir)
        for tp, flags, plan_dir in plans:
            if c.busy_poll_off_x3 and tp == 4:
                runs += [(tp, flags, NO_BUSY_POLL, i, plan_dir)
                         for i in range(RUNS_WITHOUT_BUSY_POLL)]
            else:
                runs.append((tp, flags, [], None, plan_dir))
        futures = [self.pool.submit(self.run_plan, c, *run, inputs, refs) for run in runs]
        for future in futures:
            problems += future.result()
        if problems:
            self.fail("\n".join(problems))


def _add_case_tests():
    for name, c in CASES.items():
        def test(self, c=c):
            self.check_case(c)
        test.__name__ = f"test_{name}"
        setattr(TestDifferential, test.__name__, test)


_add_case_tests()


if __name__ == "__main__":
    test_e2e.main()
