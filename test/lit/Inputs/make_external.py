"""Writes OUT/KIND/model.onnx: a Linear pair whose weights are ONNX external
data, well-formed ("good") or hostile in one way (KIND), for external_data.test."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

out, kind = sys.argv[1], sys.argv[2]
folder = os.path.join(out, kind)
os.makedirs(folder, exist_ok=True)
rng = np.random.default_rng(0)
w1 = rng.standard_normal((4, 8)).astype(np.float32)
w2 = rng.standard_normal((8, 4)).astype(np.float32)

data = w1.tobytes() + w2.tobytes()
with open(os.path.join(folder, "weights.bin"), "wb") as f:
    f.write(data)
with open(os.path.join(out, "outside.bin"), "wb") as f:
    f.write(data)

loc1 = loc2 = "weights.bin"
off1, off2 = 0, w1.nbytes
len1, len2 = w1.nbytes, w2.nbytes
if kind == "absolute":
    loc2 = os.path.abspath(os.path.join(out, "outside.bin"))
elif kind == "dotdot":
    loc2 = "../outside.bin"
elif kind == "symlink":
    link = os.path.join(folder, "link.bin")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.abspath(os.path.join(out, "outside.bin")), link)
    loc2 = "link.bin"
elif kind == "past_end":
    off2 = len(data) - 16
elif kind == "truncated":
    len2 = w2.nbytes - 4
elif kind == "overlap":
    off2 = 16
elif kind == "missing":
    loc2 = "nope.bin"
elif kind != "good":
    sys.exit(f"unknown kind {kind}")


def external(name, dims, loc, off, length):
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", loc), ("offset", str(off)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
     helper.make_node("Relu", ["h"], ["a"], name="act"),
     helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2")],
    "ext",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])],
    [external("W1", [4, 8], loc1, off1, len1), external("W2", [8, 4], loc2, off2, len2)])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
with open(os.path.join(folder, "model.onnx"), "wb") as f:
    f.write(model.SerializeToString())
