#!/usr/bin/env python3
"""Every gradient rule against central finite differences, in float64.

Each case is a small float64 model: trainable initializers, the op under
test (with broadcasting, attribute variants, axes forms), and logits [B, C]
into qn-compile --train's softmax cross-entropy. The tp-1 training plan
(rank0.onnx) runs in ONNX Runtime with SGD at lr 1: a parameter's update is
p - g, so g = p - p_new; the finite difference perturbs each element of the
parameter by +-h in the same graph and reads its loss output.
Pass: max |g - fd| <= 1e-6 * max(1, max |fd|) for every parameter.

    python3 test/e2e/test_gradcheck.py --bin build/bin [-k NAME]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

D = TensorProto.DOUBLE
B, C = 3, 4
H = 1e-6
TOL = 1e-6


def rnd(rng, *shape, positive=False):
    a = rng.standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


def case(name, nodes, params, x_shape, extra_inits=(), opset=17, x_positive=False, dtype=D,
         x_int=False):
    """nodes produce 'logits' from input 'x' and the params (name -> array).
    dtype float32 only where ONNX Runtime has no float64 kernel (Erf, Conv);
    x_int: x holds small integers (ids for a Gather, cast in the graph)."""
    return (name, nodes, params, x_shape, list(extra_inits), opset,
            "int" if x_int else x_positive, dtype)


def ints(name, vals):
    return numpy_helper.from_array(np.array(vals, dtype=np.int64), name)


def cases(rng):
    r = lambda *s, **k: rnd(rng, *s, **k)  # noqa: E731
    mk = helper.make_node
    out = [
        case("matmul_2d", [mk("MatMul", ["x", "W"], ["logits"])], {"W": r(5, C)}, (B, 5)),
        case("matmul_batched_weight",
             [mk("MatMul", ["x", "W"], ["h"]), mk("ReduceSum", ["h", "ax1"], ["logits"], keepdims=0)],
             {"W": r(5, C)}, (B, 2, 5), [ints("ax1", [1])]),
        case("matmul_batched_broadcast",
             [mk("MatMul", ["x", "W"], ["h"]), mk("ReduceMean", ["h"], ["logits"], axes=[1], keepdims=0)],
             {"W": r(1, 5, C)}, (B, 2, 5)),
        case("matmul_activations",
             [mk("MatMul", ["x", "W"], ["a"]), mk("Transpose", ["a"], ["at"], perm=[0, 2, 1]),
              mk("MatMul", ["a", "at"], ["s"]), mk("Reshape", ["s", "shp"], ["logits"])],
             {"W": r(2, 2)}, (B, 2, 2), [ints("shp", [B, C])]),
    ]
    for ta in (0, 1):
        for tb in (0, 1):
            a_shape = (5, B) if ta else (B, 5)
            w_shape = (C, 5) if tb else (5, C)
            out.append(case(f"gemm_ta{ta}_tb{tb}",
                            [mk("Transpose", ["x"], ["xa"], perm=[1, 0]) if ta else
                             mk("Identity", ["x"], ["xa"]),
                             mk("Gemm", ["xa", "W", "c"], ["logits"], transA=ta, transB=tb,
                                alpha=0.7, beta=1.3)],
                            {"W": r(*w_shape), "c": r(C)}, (B, 5) if not ta else (B, 5)))
    # Gemm with transA reads x transposed: feed it [5, B] through the Transpose above.
    binary = []
    for op in ("Add", "Sub", "Mul", "Div"):
        binary.append(case(f"{op.lower()}_broadcast",
                           [mk(op, ["x", "p"], ["logits"])],
                           {"p": r(1, C, positive=op == "Div")}, (B, C)))
        binary.append(case(f"{op.lower()}_both",
                           [mk(op, ["q", "p"], ["logits"])],
                           {"p": r(C, positive=op == "Div"), "q": r(B, C)}, (B, C)))
    out += binary
    out += [
        case("pow_const", [mk("Pow", ["p", "e"], ["logits"])], {"p": r(B, C, positive=True)}, (B, C),
             [numpy_helper.from_array(np.array(2.5), "e")]),
        case("pow_trainable_exponent", [mk("Pow", ["x", "e"], ["logits"])], {"e": r(C)}, (B, C),
             x_positive=True),
        case("where", [mk("Greater", ["x", "zero"], ["c"]), mk("Where", ["c", "p", "q"], ["logits"])],
             {"p": r(B, C), "q": r(C)}, (B, C), [numpy_helper.from_array(np.array(0.0), "zero")]),
    ]
    for op, pos in (("Neg", False), ("Relu", False), ("Tanh", False), ("Sigmoid", False),
                    ("Exp", False), ("Log", True), ("Sqrt", True), ("Reciprocal", True),
                    ("Erf", False), ("Identity", False)):
        out.append(case(f"unary_{op.lower()}", [mk("Add", ["x", "p"], ["a"]), mk(op, ["a"], ["logits"])],
                        {"p": r(B, C, positive=pos)}, (B, C), x_positive=pos,
                        dtype=TensorProto.FLOAT if op == "Erf" else D))
    out += [
        case("cast_double", [mk("Cast", ["p"], ["a"], to=D), mk("Mul", ["a", "x"], ["logits"])],
             {"p": r(B, C)}, (B, C)),
        case("softmax", [mk("Mul", ["x", "p"], ["a"]), mk("Softmax", ["a"], ["logits"], axis=-1)],
             {"p": r(B, C)}, (B, C)),
        case("softmax_axis1_3d", [mk("Mul", ["x", "p"], ["a"]), mk("Softmax", ["a"], ["s"], axis=1),
                                  mk("ReduceSum", ["s", "ax2"], ["logits"], keepdims=0)],
             {"p": r(B, C, 2)}, (B, C, 2), [ints("ax2", [2])]),
        case("logsoftmax", [mk("Mul", ["x", "p"], ["a"]), mk("LogSoftmax", ["a"], ["logits"], axis=1)],
             {"p": r(B, C)}, (B, C)),
        case("reducesum_keep", [mk("Mul", ["x", "p"], ["a"]), mk("ReduceSum", ["a", "ax"], ["s"], keepdims=1),
                                mk("Reshape", ["s", "shp"], ["logits"])],
             {"p": r(B, C, 2)}, (B, C, 2), [ints("ax", [2]), ints("shp", [B, C])]),
        case("reducesum_all", [mk("ReduceSum", ["p"], ["s"], keepdims=0), mk("Mul", ["x", "s"], ["logits"])],
             {"p": r(2, 3)}, (B, C)),
        case("reducemean", [mk("Mul", ["x", "p"], ["a"]), mk("ReduceMean", ["a"], ["logits"], axes=[0], keepdims=0)],
             {"p": r(2, B, C)}, (2, B, C)),
        case("layernorm", [mk("LayerNormalization", ["x", "g", "b"], ["logits"], axis=-1, epsilon=1e-5)],
             {"g": r(C), "b": r(C)}, (B, C)),
        case("layernorm_input", [mk("Add", ["x", "p"], ["a"]),
                                 mk("LayerNormalization", ["a", "g", "b"], ["logits"], axis=-1)],
             {"p": r(B, C), "g": r(C), "b": r(C)}, (B, C)),
        case("layernorm_2axes", [mk("Add", ["x", "p"], ["a"]),
                                 mk("LayerNormalization", ["a", "g"], ["n"], axis=1),
                                 mk("Reshape", ["n", "shp"], ["logits"])],
             {"p": r(B, 2, 2), "g": r(2, 2)}, (B, 2, 2), [ints("shp", [B, C])]),
        case("reshape_transpose", [mk("Mul", ["x", "p"], ["a"]), mk("Transpose", ["a"], ["t"], perm=[0, 2, 1]),
                                   mk("Reshape", ["t", "shp"], ["logits"])],
             {"p": r(B, 2, 2)}, (B, 2, 2), [ints("shp", [B, C])]),
        case("flatten", [mk("Mul", ["x", "p"], ["a"]), mk("Flatten", ["a"], ["logits"], axis=1)],
             {"p": r(B, 2, 2)}, (B, 2, 2)),
        case("gather_embedding", [mk("Cast", ["x"], ["xi"], to=TensorProto.INT64),
                                  mk("Gather", ["E", "xi"], ["logits"], axis=0)],
             {"E": r(5, C)}, (B,), x_int=True),
        case("gather_embedding_3d_negative", [mk("Cast", ["x"], ["xi"], to=TensorProto.INT64),
                                              mk("Sub", ["xi", "five"], ["xn"]),
                                              mk("Gather", ["E", "xn"], ["g"], axis=0),
                                              mk("ReduceSum", ["g", "ax1"], ["logits"], keepdims=0)],
             {"E": r(5, C)}, (B, 2), [ints("five", [5]), ints("ax1", [1])], x_int=True),
        case("gather_class_token", [mk("Mul", ["x", "p"], ["a"]), mk("Gather", ["a", "one"], ["logits"], axis=1)],
             {"p": r(B, 3, C)}, (B, 3, C), [numpy_helper.from_array(np.array(1, dtype=np.int64), "one")]),
        case("split_concat", [mk("Mul", ["x", "p"], ["a"]),
                              mk("Split", ["a", "sp"], ["s1", "s2"], axis=1),
                              mk("Tanh", ["s2"], ["t2"]),
                              mk("Concat", ["t2", "s1", "q"], ["logits"], axis=1)],
             {"p": r(B, 3), "q": r(B, 1)}, (B, 3), [ints("sp", [1, 2])]),
        case("split_unused_output", [mk("Mul", ["x", "p"], ["a"]),
                                     mk("Split", ["a", "sp"], ["s1", "s2"], axis=1),
                                     mk("Concat", ["s2", "s2"], ["logits"], axis=1)],
             {"p": r(B, 3)}, (B, 3), [ints("sp", [1, 2])]),
        case("sin_cos", [mk("Mul", ["x", "p"], ["a"]), mk("Sin", ["a"], ["s"]),
                         mk("Cos", ["a"], ["c"]), mk("Mul", ["s", "c"], ["logits"])],
             {"p": r(B, C)}, (B, C), dtype=TensorProto.FLOAT),  # ORT: no float64 Sin/Cos
        # Slice: one axis (a rotary half), negative and clamped bounds, two
        # axes, and the attribute form of opset 9.
        case("slice_last_half", [mk("Mul", ["x", "p"], ["a"]),
                                 mk("Slice", ["a", "s0", "e0", "ax2"], ["h"]),
                                 mk("Reshape", ["h", "shp"], ["logits"])],
             {"p": r(B, 2, 4)}, (B, 2, 4),
             [ints("s0", [2]), ints("e0", [4]), ints("ax2", [2]), ints("shp", [B, C])]),
        case("slice_two_axes_negative", [mk("Mul", ["x", "p"], ["a"]),
                                         mk("Slice", ["a", "s1", "e1", "ax12"], ["h"]),
                                         mk("Reshape", ["h", "shp"], ["logits"])],
             {"p": r(B, 4, 5)}, (B, 4, 5),
             [ints("s1", [-3, 3]), ints("e1", [-1, 100]), ints("ax12", [1, 2]),
              ints("shp", [B, C])]),
        case("slice_sum_of_parts", [mk("Mul", ["x", "p"], ["a"]),
                                    mk("Slice", ["a", "s0", "e0", "ax1"], ["lo"]),
                                    mk("Slice", ["a", "s2", "e2", "ax1"], ["hi"]),
                                    mk("Mul", ["lo", "hi"], ["logits"])],
             {"p": r(B, 2 * C)}, (B, 2 * C),
             [ints("s0", [0]), ints("e0", [C]), ints("s2", [C]), ints("e2", [2 * C]),
              ints("ax1", [1])]),
        case("conv_patch_embedding", [mk("Add", ["x", "p"], ["xp"]),
                                      mk("Conv", ["xp", "W", "b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
                                      mk("Reshape", ["c", "shp"], ["logits"])],
             {"p": r(B, 2, 4, 2), "W": r(2, 2, 2, 2), "b": r(2)}, (B, 2, 4, 2), [ints("shp", [B, C])],
             dtype=TensorProto.FLOAT),
        case("expand_class_token", [mk("Expand", ["p", "shp"], ["e"]), mk("Mul", ["x", "e"], ["logits"])],
             {"p": r(1, C)}, (B, C), [ints("shp", [B, C])]),
        case("squeeze_unsqueeze", [mk("Unsqueeze", ["p", "ax0"], ["u"]), mk("Mul", ["x", "u"], ["a"]),
                                   mk("Squeeze", ["a", "ax1"], ["logits"])],
             {"p": r(C)}, (B, 1, C), [ints("ax0", [0]), ints("ax1", [1])]),
    ]
    return out


def build(name, nodes, params, x_shape, inits, opset, path, dtype):
    inputs = [helper.make_tensor_value_info("x", dtype, list(x_shape))]
    outputs = [helper.make_tensor_value_info("logits", dtype, [B, C])]
    tensors = [numpy_helper.from_array(v, k) for k, v in params.items()] + inits
    g = helper.make_graph(nodes, name, inputs, outputs, tensors)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("-k", default="")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    failures = ran = 0
    with tempfile.TemporaryDirectory(prefix="qn_gradcheck_") as work:
        for name, nodes, params, x_shape, inits, opset, x_pos, dtype in cases(rng):
            if args.k not in name:
                continue
            ran += 1
            npt = np.float64 if dtype == D else np.float32
            h, tol = (H, TOL) if dtype == D else (1e-3, 2e-3)
            params = {k: v.astype(npt) for k, v in params.items()}
            model = os.path.join(work, name + ".onnx")
            plan = os.path.join(work, name + "_plan")
            build(name, nodes, params, x_shape, inits, opset, model, dtype)
            p = subprocess.run([os.path.join(args.bin, "qn-compile"), model, "--tp", "1", "--train",
                                "--lr", "1", "-o", plan, "--quiet"], capture_output=True, text=True)
            if p.returncode != 0:
                failures += 1
                print(f"FAIL {name}: qn-compile: {p.stderr.strip()}")
                continue
            rank = onnx.load(os.path.join(plan, "rank0.onnx"))
            xv = (rng.integers(0, 5, x_shape).astype(npt) if x_pos == "int" else
                  rnd(rng, *x_shape, positive=x_pos).astype(npt))
            feeds = {"x": xv,
                     "labels": rng.integers(0, C, B).astype(np.int64),
                     "qn_lr": np.array(1.0, dtype=np.float32)}
            outs = [o.name for o in rank.graph.output]

            def run(model_proto):
                so = ort.SessionOptions()
                # ORT's fusions (FusedMatMul) have float32 kernels only.
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                sess = ort.InferenceSession(model_proto.SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
                return dict(zip(outs, sess.run(None, feeds)))

            base_dir = plan
            # External data lives in rank0.bin next to rank0.onnx: load it in.
            onnx.load_external_data_for_model(rank, base_dir)
            res = run(rank)
            worst = 0.0
            for pname, value in params.items():
                upd = pname + "__updated"
                if upd not in res:
                    failures += 1
                    print(f"FAIL {name}: no update of '{pname}' in the plan")
                    break
                g = value - res[upd]
                fd = np.zeros_like(value)
                init = next(t for t in rank.graph.initializer if t.name == pname)
                for i in range(value.size):
                    for sign in (1, -1):
                        v = value.copy().reshape(-1)
                        v[i] += sign * h
                        init.CopyFrom(numpy_helper.from_array(v.reshape(value.shape), pname))
                        fd.reshape(-1)[i] += sign * float(run(rank)["loss"]) / (2 * h)
                init.CopyFrom(numpy_helper.from_array(value, pname))
                err = float(np.max(np.abs(g - fd)) / max(1.0, np.max(np.abs(fd))))
                worst = max(worst, err)
            ok = worst <= tol
            failures += not ok
            print(f"{'PASS' if ok else 'FAIL'} {name}: max |grad - finite difference| {worst:.1e} "
                  f"(tolerance {tol:.0e}, {'float64' if dtype == D else 'float32: ONNX Runtime has no float64 kernel'}, h {h:.0e})")
    if ran == 0:
        print(f"no case matches -k '{args.k}'")
        return 1
    print(f"test_gradcheck: {ran - failures} of {ran} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
