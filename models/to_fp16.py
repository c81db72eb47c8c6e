#!/usr/bin/env python3
"""Convert a float32 ONNX model to float16, and make its fp32 "rounded weights" twin.

  convert(model)        every float32 tensor of the graph becomes float16:
                          - float32 initializers (values beyond the float16 range,
                            such as finfo(float32).min used for masks, are clamped
                            to +-65504 first, so that (1 - mask) * min stays finite);
                          - float32 graph inputs, outputs and value_info;
                          - Cast(to=FLOAT) -> Cast(to=FLOAT16);
                          - Constant (value, value_float, value_floats) and
                            ConstantOfShape (value; its implicit float32 zero is
                            made an explicit float16 zero);
                          - the dtype attribute of EyeLike / RandomNormal(Like) /
                            RandomUniform(Like) / Bernoulli when it says FLOAT;
                          - subgraphs (If / Loop / Scan bodies), recursively.
                        LayerNormalization and Softmax stay as they are, in float16
                        (ONNX allows it; LayerNormalization keeps its stash_type).
                        keep_fp32_ops: op types computed in float32 anyway: their
                        float16 inputs are Cast to float32 and their outputs Cast
                        back (for a backend without a float16 kernel of that op).
  round_weights(model)  the same float32 graph with every float32 constant
                        (initializers, Constant, ConstantOfShape) rounded to the
                        nearest float16 value (after the same clamp): the
                        independent reference for a float16 run is ONNX Runtime
                        on this model, in float32, fed the float16 inputs widened.

The result is checked with onnx.checker (full check) and strict shape inference
by check(). The model keeps its ir_version and opsets.

Usage:
  python3 models/to_fp16.py IN.onnx OUT.onnx [--reference REF.onnx]
                            [--keep-fp32-ops Cos,Sin] [--external-data]
"""
import argparse
import copy
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
_DTYPE_ATTR_OPS = {"EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform",
                   "RandomUniformLike", "Bernoulli", "Multinomial"}
_DEFAULT_FLOAT_OPS = {"RandomNormal", "RandomUniform"}  # dtype defaults to FLOAT


def clamp_fp16(a):
    """float32 array -> float16 array; finite values beyond the float16 range
    are clamped to +-65504 (inf and nan are kept)."""
    a = np.asarray(a, np.float32)
    finite = np.isfinite(a)
    return np.where(finite, np.clip(a, -FP16_MAX, FP16_MAX), a).astype(np.float16)


def _tensor_fp16(t):
    """A float32 TensorProto -> the float16 one, same name."""
    out = numpy_helper.from_array(clamp_fp16(numpy_helper.to_array(t)), t.name)
    if t.doc_string:
        out.doc_string = t.doc_string
    return out


def _tensor_rounded(t):
    """A float32 TensorProto -> float32, with values rounded to float16."""
    out = numpy_helper.from_array(clamp_fp16(numpy_helper.to_array(t)).astype(np.float32),
                                  t.name)
    if t.doc_string:
        out.doc_string = t.doc_string
    return out


def _retype(value_info):
    tt = value_info.type.tensor_type if value_info.type.HasField("tensor_type") else None
    if tt is not None and tt.elem_type == FLOAT:
        tt.elem_type = FLOAT16
    # sequence/optional of float tensors
    t = value_info.type
    while True:
        if t.HasField("sequence_type"):
            t = t.sequence_type.elem_type
        elif t.HasField("optional_type"):
            t = t.optional_type.elem_type
        else:
            break
        if t.HasField("tensor_type") and t.tensor_type.elem_type == FLOAT:
            t.tensor_type.elem_type = FLOAT16


def _convert_node(node, counts):
    op = node.op_type if node.domain in ("", "ai.onnx") else None
    attrs = {a.name: a for a in node.attribute}
    if op == "Cast" and attrs["to"].i == FLOAT:
        attrs["to"].i = FLOAT16
        counts["Cast"] = counts.get("Cast", 0) + 1
    elif op == "Constant":
        if "value" in attrs and attrs["value"].t.data_type == FLOAT:
            attrs["value"].t.CopyFrom(_tensor_fp16(attrs["value"].t))
            counts["Constant"] = counts.get("Constant", 0) + 1
        for name, scalar in (("value_float", True), ("value_floats", False)):
            if name in attrs:
                a = attrs[name]
                vals = np.array(a.f if scalar else list(a.floats), np.float32)
                node.attribute.remove(a)
                node.attribute.append(helper.make_attribute(
                    "value", numpy_helper.from_array(clamp_fp16(vals))))
                counts["Constant"] = counts.get("Constant", 0) + 1
    elif op == "ConstantOfShape":
        if "value" not in attrs:  # default: float32 zero
            node.attribute.append(helper.make_attribute(
                "value", numpy_helper.from_array(np.zeros([1], np.float16))))
            counts["ConstantOfShape"] = counts.get("ConstantOfShape", 0) + 1
        elif attrs["value"].t.data_type == FLOAT:
            attrs["value"].t.CopyFrom(_tensor_fp16(attrs["value"].t))
            counts["ConstantOfShape"] = counts.get("ConstantOfShape", 0) + 1
    elif op in _DTYPE_ATTR_OPS:
        if "dtype" in attrs and attrs["dtype"].i == FLOAT:
            attrs["dtype"].i = FLOAT16
        elif "dtype" not in attrs and op in _DEFAULT_FLOAT_OPS:
            node.attribute.append(helper.make_attribute("dtype", FLOAT16))
    for a in node.attribute:  # If / Loop / Scan bodies
        if a.type == onnx.AttributeProto.GRAPH:
            _convert_graph(a.g, counts)
        elif a.type == onnx.AttributeProto.GRAPHS:
            for g in a.graphs:
                _convert_graph(g, counts)


def _convert_graph(graph, counts):
    for i, t in enumerate(graph.initializer):
        if t.data_type == FLOAT:
            graph.initializer[i].CopyFrom(_tensor_fp16(t))
            counts["initializer"] = counts.get("initializer", 0) + 1
    for sp in graph.sparse_initializer:
        if sp.values.data_type == FLOAT:
            sp.values.CopyFrom(_tensor_fp16(sp.values))
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        _retype(vi)
    for node in graph.node:
        _convert_node(node, counts)


def _elem_types(model):
    """name -> elem_type of every typed value (inputs, initializers, inferred)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def _keep_fp32(model, fp32_types, ops):
    """Wrap the (top-level) nodes whose op type is in `ops` in Casts so they
    compute in float32: float16 inputs are widened, and the outputs that were
    float32 in the original model are narrowed back under their own names."""
    types16 = _elem_types(model)
    g = model.graph
    new_nodes = []
    k = 0
    for node in g.node:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if name and types16.get(name) == FLOAT16:
                wide = f"{name}/qn_fp32_{k}"
                k += 1
                new_nodes.append(helper.make_node("Cast", [name], [wide], to=FLOAT,
                                                  name=f"{node.name or node.op_type}/qn_to_fp32_{i}"))
                node.input[i] = wide
        casts = []
        for i, name in enumerate(node.output):
            if name and fp32_types.get(name) == FLOAT:
                wide = f"{name}/qn_fp32"
                node.output[i] = wide
                casts.append(helper.make_node("Cast", [wide], [name], to=FLOAT16,
                                              name=f"{node.name or node.op_type}/qn_to_fp16_{i}"))
        for a in node.attribute:  # e.g. a kept Cast keeps to=FLOAT
            if a.name == "to" and a.i == FLOAT16 and node.op_type == "Cast":
                a.i = FLOAT
        new_nodes.append(node)
        new_nodes.extend(casts)
    del g.node[:]
    g.node.extend(new_nodes)
    # value_info of the renamed outputs is stale: drop it, inference redoes it.
    del g.value_info[:]


def convert(model, keep_fp32_ops=()):
    """The float16 version of a float32 model (a new ModelProto)."""
    m = copy.deepcopy(model)
    counts = {}
    _convert_graph(m.graph, counts)
    if keep_fp32_ops:
        _keep_fp32(m, _elem_types(model), set(keep_fp32_ops))
    m.producer_name = (model.producer_name or "") + "+qn-to_fp16"
    return m


def round_weights(model):
    """The float32 model with every float32 constant rounded to float16."""
    m = copy.deepcopy(model)

    def graph(g):
        for i, t in enumerate(g.initializer):
            if t.data_type == FLOAT:
                g.initializer[i].CopyFrom(_tensor_rounded(t))
        for node in g.node:
            attrs = {a.name: a for a in node.attribute}
            if node.op_type in ("Constant", "ConstantOfShape") and "value" in attrs \
                    and attrs["value"].t.data_type == FLOAT:
                attrs["value"].t.CopyFrom(_tensor_rounded(attrs["value"].t))
            if node.op_type == "Constant":
                if "value_float" in attrs:
                    attrs["value_float"].f = float(clamp_fp16(attrs["value_float"].f))
                if "value_floats" in attrs:
                    vals = clamp_fp16(np.array(list(attrs["value_floats"].floats))).astype(
                        np.float32)
                    del attrs["value_floats"].floats[:]
                    attrs["value_floats"].floats.extend(vals.tolist())
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        graph(sg)

    graph(m.graph)
    return m


def float_inputs(model):
    """Names of the graph inputs that are float32 (float16 after convert())."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input
            if i.name not in inits and i.type.tensor_type.elem_type in (FLOAT, FLOAT16)]


def check(model):
    """onnx.checker (full) and strict shape inference; raises on a problem.
    Works on the in-memory model (under 2 GiB); see check_path for bigger."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def check_path(path):
    onnx.checker.check_model(path, full_check=True)


def save(model, path, external_data=False):
    """With external_data, the weights go to OUT.data beside OUT (and, as
    onnx.save_model does, the in-memory model is changed to refer to it)."""
    if external_data:
        loc = os.path.basename(path) + ".data"
        if os.path.exists(os.path.join(os.path.dirname(path) or ".", loc)):
            os.remove(os.path.join(os.path.dirname(path) or ".", loc))
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=loc, size_threshold=1024)
    else:
        onnx.save_model(model, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--reference", metavar="REF.onnx",
                    help="also write the float32 model with its weights rounded to float16")
    ap.add_argument("--keep-fp32-ops", default="",
                    help="comma-separated op types to compute in float32 (Casts around them)")
    ap.add_argument("--external-data", action="store_true",
                    help="write the weights as ONNX external data (OUT.data)")
    args = ap.parse_args()
    try:
        model = onnx.load(args.input)
    except Exception as e:  # noqa: BLE001 - report, do not trace back
        sys.exit(f"to_fp16: cannot read {args.input}: {e}")
    ops = [o for o in args.keep_fp32_ops.split(",") if o]
    half = convert(model, ops)
    big = half.ByteSize() > (1 << 31) - (1 << 26)
    if not big:
        check(half)
    save(half, args.output, args.external_data or big)
    if big:
        check_path(args.output)
    print(f"wrote {args.output}")
    if args.reference:
        ref = round_weights(model)
        save(ref, args.reference, args.external_data or ref.ByteSize() > (1 << 31) - (1 << 26))
        print(f"wrote {args.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
