#!/usr/bin/env python3
"""ONNX node-test conformance: every ONNX backend node test whose model uses
only ops that QuintNet claims, compiled by qn-compile at tp 1 and run by qn-run
on one rank, against the test's expected outputs.

"Claimed" is ops/include/qn/ops/Ops.def: the QN_OP lines of domain OD_Onnx
whose Devices column names the device (OV_Cpu for --device cpu, OV_Cuda for
--device cuda). A case is in scope when every node of its model is a claimed
op, the nodes of model-local function bodies included (the `_expanded` cases
are graphs of several ops). The cases come from the Python onnx package
(onnx/backend/test/data/node/, one folder per case: model.onnx and
test_data_set_*/input_*.pb, output_*.pb); they should be ONNX 1.19.1's, the
version QuintNet's C++ ONNX library is.

Each in-scope case is one of:
  PASS   every data set's outputs match: dtype and shape equal, values within
         np.testing.assert_allclose(rtol=1e-3, atol=1e-7) (ONNX's backend
         tests' tolerance);
  SKIP   listed in SKIP: not tensor-typed (sequence, optional, string) or
         otherwise out of scope, with the reason;
  XFAIL  listed in XFAIL (or the device's list) and failing: a known gap, with
         the reason;
  FAIL   anything else that does not pass, and an XFAIL case that passes (take
         it out of the list: the list only shrinks).

Usage:
  python3 test/e2e/test_conformance.py [--bin build/bin] [--data DIR]
      [--device cpu|cuda] [-k SUBSTR] [--jobs N] [--table] [--timeout S]
Prints "conformance: N in scope, P passed, S skipped, X xfail, F failed";
--table adds one line per case. Exit 0 when nothing failed, 1 otherwise; with
--device cuda and no CUDA device visible, "SKIPPED:" and exit 77 (ctest runs
that variant on the CPU emulator: QN_CUDA_LIBRARY=build/lib/libqn_cuda_emu.so).
"""
import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import qn_tools  # noqa: E402

ONNX_VERSION = "1.19.1"
OPS_DEF = os.path.join(REPO, "ops", "include", "qn", "ops", "Ops.def")
RTOL, ATOL = 1e-3, 1e-7

# In-scope cases that are not run, with the reason: values that are not
# tensors of numbers (sequence, optional, string) or otherwise outside what a
# conformance run of the claimed ops can check.
SKIP = {
    "test_identity_opt": "optional-typed input and output (optional(sequence(tensor)))",
    "test_identity_sequence": "sequence-typed input and output (seq(tensor))",
    "test_equal_string": "string tensors: QuintNet has no string dtype",
    "test_equal_string_broadcast": "string tensors: QuintNet has no string dtype",
    # Dropout in training mode with a ratio > 0: the expected outputs come
    # from ONNX's reference drawing the mask with numpy's RNG; no other
    # implementation can reproduce them (the zero-ratio cases are run).
    "test_training_dropout": "random mask (training_mode=true, ratio 0.75): "
                             "the expected output is one draw of numpy's RNG",
    "test_training_dropout_default": "random mask (training_mode=true, ratio 0.5): "
                                     "the expected output is one draw of numpy's RNG",
    "test_training_dropout_default_mask": "random mask (training_mode=true, ratio 0.5): "
                                          "the expected outputs are one draw of numpy's RNG",
    "test_training_dropout_mask": "random mask (training_mode=true, ratio 0.75): "
                                  "the expected outputs are one draw of numpy's RNG",
}

# In-scope cases known to fail on every device, with the reason; an entry
# that passes fails the run. Written as (reason, the cases' names) groups.
_NO_DTYPE = ("{t}: no such dtype in the runtime (qn::DType); qn-compile writes it as "
             "'unsupported' in plan.json and qn-run rejects the plan")
_XFAIL_GROUPS = [
    (_NO_DTYPE.format(t="int16"), """
        test_add_int16 test_sub_int16 test_mul_int16 test_div_int16 test_equal_int16
        test_greater_int16 test_less_int16 test_greater_equal_int16
        test_greater_equal_int16_expanded test_less_equal_int16 test_less_equal_int16_expanded
        test_max_int16 test_min_int16"""),
    (_NO_DTYPE.format(t="uint16"), """
        test_add_uint16 test_sub_uint16 test_mul_uint16 test_div_uint16 test_equal_uint16
        test_greater_uint16 test_less_uint16 test_greater_equal_uint16
        test_greater_equal_uint16_expanded test_less_equal_uint16 test_less_equal_uint16_expanded
        test_max_uint16 test_min_uint16"""),
    (_NO_DTYPE.format(t="uint32"), """
        test_add_uint32 test_sub_uint32 test_mul_uint32 test_div_uint32 test_equal_uint32
        test_greater_uint32 test_less_uint32 test_greater_equal_uint32
        test_greater_equal_uint32_expanded test_less_equal_uint32 test_less_equal_uint32_expanded
        test_max_uint32 test_min_uint32 test_pow_types_float32_uint32"""),
    (_NO_DTYPE.format(t="uint64"), """
        test_add_uint64 test_sub_uint64 test_mul_uint64 test_div_uint64 test_equal_uint64
        test_greater_uint64 test_less_uint64 test_greater_equal_uint64
        test_greater_equal_uint64_expanded test_less_equal_uint64 test_less_equal_uint64_expanded
        test_max_uint64 test_min_uint64 test_pow_types_float32_uint64"""),
    (_NO_DTYPE.format(t="float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz)"), """
        test_cast_FLOAT16_to_FLOAT8E4M3FN test_cast_FLOAT16_to_FLOAT8E4M3FNUZ
        test_cast_FLOAT16_to_FLOAT8E5M2 test_cast_FLOAT16_to_FLOAT8E5M2FNUZ
        test_cast_FLOAT8E4M3FNUZ_to_FLOAT test_cast_FLOAT8E4M3FNUZ_to_FLOAT16
        test_cast_FLOAT8E4M3FN_to_FLOAT test_cast_FLOAT8E4M3FN_to_FLOAT16
        test_cast_FLOAT8E5M2FNUZ_to_FLOAT test_cast_FLOAT8E5M2FNUZ_to_FLOAT16
        test_cast_FLOAT8E5M2_to_FLOAT test_cast_FLOAT8E5M2_to_FLOAT16
        test_cast_FLOAT_to_FLOAT8E4M3FN test_cast_FLOAT_to_FLOAT8E4M3FNUZ
        test_cast_FLOAT_to_FLOAT8E5M2 test_cast_FLOAT_to_FLOAT8E5M2FNUZ
        test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ
        test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2 test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ
        test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ
        test_cast_no_saturate_FLOAT_to_FLOAT8E5M2 test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ
        test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded
        test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded test_castlike_FLOAT16_to_FLOAT8E5M2_expanded
        test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded
        test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded
        test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded
        test_castlike_FLOAT8E5M2_to_FLOAT16_expanded test_castlike_FLOAT8E5M2_to_FLOAT_expanded
        test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded
        test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded test_castlike_FLOAT_to_FLOAT8E5M2_expanded
        test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded
        test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded
        test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded
        test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded
        test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded
        test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded
        test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded
        test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded"""),
    (_NO_DTYPE.format(t="float8e8m0"), """
        test_cast_e8m0_FLOAT16_to_FLOAT8E8M0 test_cast_e8m0_FLOAT8E8M0_to_FLOAT
        test_cast_e8m0_FLOAT8E8M0_to_FLOAT16 test_cast_e8m0_FLOAT_to_FLOAT8E8M0"""),
    (_NO_DTYPE.format(t="float4e2m1"), """
        test_cast_FLOAT16_to_FLOAT4E2M1 test_cast_FLOAT4E2M1_to_FLOAT test_cast_FLOAT4E2M1_to_FLOAT16
        test_cast_FLOAT_to_FLOAT4E2M1 test_castlike_FLOAT16_to_FLOAT4E2M1_expanded
        test_castlike_FLOAT4E2M1_to_FLOAT16_expanded test_castlike_FLOAT4E2M1_to_FLOAT_expanded
        test_castlike_FLOAT_to_FLOAT4E2M1_expanded"""),
    (_NO_DTYPE.format(t="int4/uint4"), """
        test_cast_FLOAT16_to_INT4 test_cast_FLOAT16_to_UINT4 test_cast_FLOAT_to_INT4
        test_cast_FLOAT_to_UINT4 test_cast_INT4_to_FLOAT test_cast_INT4_to_FLOAT16
        test_cast_INT4_to_INT8 test_cast_UINT4_to_FLOAT test_cast_UINT4_to_FLOAT16
        test_cast_UINT4_to_UINT8 test_castlike_FLOAT16_to_INT4_expanded
        test_castlike_FLOAT16_to_UINT4_expanded test_castlike_FLOAT_to_INT4_expanded
        test_castlike_FLOAT_to_UINT4_expanded test_castlike_INT4_to_FLOAT16_expanded
        test_castlike_INT4_to_FLOAT_expanded test_castlike_INT4_to_INT8_expanded
        test_castlike_UINT4_to_FLOAT16_expanded test_castlike_UINT4_to_FLOAT_expanded
        test_castlike_UINT4_to_UINT8_expanded"""),
    ("bfloat16 input: qn-run's .npy reader has no bfloat16 (NumPy has none; the file "
     "onnx.numpy_helper's ml_dtypes array saves is '<V2')", """
        test_cast_BFLOAT16_to_FLOAT test_castlike_BFLOAT16_to_FLOAT_expanded
        test_castlike_FLOAT_to_BFLOAT16_expanded"""),
    ("bfloat16 output: qn-run writes it widened to a float32 .npy (Npy.cpp: NumPy has no "
     "bfloat16), so the dtype differs", """
        test_cast_FLOAT_to_BFLOAT16"""),
    ("int8/uint8 arithmetic: Add/Sub/Mul/Div have no int8 or uint8 kernel (planBinaryOp: "
     "float32/64, float16, bfloat16, int32, int64)", """
        test_add_int8 test_sub_int8 test_mul_int8 test_div_int8
        test_add_uint8 test_sub_uint8 test_mul_uint8 test_div_uint8"""),
    ("Pow with an integer base (T = int32/int64): the kernel takes float32/64, float16, "
     "bfloat16 bases only", """
        test_pow_types_int32_float32 test_pow_types_int32_int32 test_pow_types_int64_float32
        test_pow_types_int64_int64"""),
    ("ReduceMax and ReduceMin over bool (opset 20): no bool kernel (planReduce: float32/64, "
     "float16, bfloat16, int32, int64)", """
        test_reduce_max_bool_inputs test_reduce_min_bool_inputs"""),
]
XFAIL = {name: reason for reason, names in _XFAIL_GROUPS for name in names.split()}

# Further known failures of one device only.
XFAIL_DEVICE = {
    "cpu": {},
    "cuda": {},
}


def parse_ops(path=OPS_DEF):
    """{op name: (cpu, cuda)} for the OD_Onnx lines of Ops.def."""
    ops = {}
    text = open(path).read()
    for m in re.finditer(r"^\s*QN_OP\(\s*(\w+)\s*,\s*(\w+)\s*,(.*)\)\s*(//.*)?$", text, re.M):
        name, domain, rest = m.group(1), m.group(2), m.group(3)
        if domain != "OD_Onnx":
            continue
        devices = rest.split(",")[-1]
        ops[name] = ("OV_Cpu" in devices, "OV_Cuda" in devices)
    if not ops:
        raise RuntimeError(f"no OD_Onnx QN_OP line in {path}")
    return ops


def model_ops(model):
    """(domain, op_type) of every node the model runs: local functions are
    expanded into their bodies, subgraphs (If, Loop, Scan) walked."""
    funcs = {(f.domain, f.name): f for f in model.functions}
    out = set()

    def walk(nodes, seen):
        for n in nodes:
            key = (n.domain, n.op_type)
            if key in funcs:
                if key not in seen:
                    walk(funcs[key].node, seen | {key})
                continue
            out.add((n.domain or "", n.op_type))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g.node, seen)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g.node, seen)

    walk(model.graph.node, frozenset())
    return out


def non_tensor_values(model):
    """Names of graph inputs/outputs that are not tensors of numbers."""
    bad = []
    for v in list(model.graph.input) + list(model.graph.output):
        t = v.type
        if t.WhichOneof("value") != "tensor_type":
            bad.append(f"{v.name} ({t.WhichOneof('value')})")
        elif t.tensor_type.elem_type == onnx.TensorProto.STRING:
            bad.append(f"{v.name} (string)")
    return bad


def find_cases(data_dir, ops, device):
    """[(name, folder)] of the cases in scope for device, sorted."""
    col = 0 if device == "cpu" else 1
    cases = []
    for name in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, name, "model.onnx")
        if not os.path.isfile(path):
            continue
        model = onnx.load(path, load_external_data=False)
        used = model_ops(model)
        if used and all(d in ("", "ai.onnx") and op in ops and ops[op][col] for d, op in used):
            cases.append((name, os.path.dirname(path)))
    return cases


def sanitize(name):
    """The file name qn-run writes an output as (RankRunner.cpp's sanitize)."""
    s = "".join(c if (c.isalnum() and c.isascii()) or c in "_-." else "_" for c in name)
    return "_" + s if s in ("", ".", "..") else s


def read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def short(text, n=240):
    return qn_tools.short(text, n)


def run(cmd, timeout):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"


def tool_failure(tool, rc, out):
    """What a failed tool call says, on one line, named by the tool."""
    if rc is None:
        return f"{tool}: {out}"
    msg = short(out)
    if rc < 0:
        msg = f"killed by signal {-rc}" + (f": {msg}" if msg else "")
    elif not msg:
        msg = f"exit {rc}, no message"
    return msg if msg.startswith(tool + ":") else f"{tool}: {msg}"


def compare(name, got, want):
    """'' when got matches want, else what differs."""
    if got.dtype != want.dtype:
        return f"output '{name}': dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"output '{name}': shape {got.shape}, expected {want.shape}"
    try:
        if want.dtype == np.bool_ or want.dtype.kind in "iu":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    except AssertionError as ex:
        lines = [l.strip() for l in str(ex).splitlines() if l.strip()]
        detail = "; ".join(l for l in lines if l.startswith(("Mismatched", "Max")))
        return f"output '{name}': values differ ({detail or short(str(ex))})"
    return ""


def run_case(args, name, folder, work):
    """(ok, detail): detail says what failed, '' when ok."""
    model = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
    bad = non_tensor_values(model)
    if bad:
        return False, f"non-tensor input/output {', '.join(bad)}: list the case in SKIP"
    inits = {t.name for t in model.graph.initializer}
    in_names = [v.name for v in model.graph.input if v.name not in inits]
    out_names = [v.name for v in model.graph.output]
    sets = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))
    if not sets:
        return False, "no test_data_set_* folder"
    case_dir = os.path.join(work, name)
    os.makedirs(case_dir)
    plan = os.path.join(case_dir, "plan")
    cmd = [os.path.join(args.bin, "qn-compile"), os.path.join(folder, "model.onnx"), "--tp", "1",
           "-o", plan, "--quiet"]
    if args.device == "cuda":
        cmd += ["--device", "cuda"]
    rc, out = run(cmd, args.timeout)
    if rc != 0:
        return False, tool_failure("qn-compile", rc, out)
    try:
        for k, ds in enumerate(sets):
            inputs = sorted(glob.glob(os.path.join(ds, "input_*.pb")),
                            key=lambda p: int(re.search(r"(\d+)\.pb$", p).group(1)))
            outputs = sorted(glob.glob(os.path.join(ds, "output_*.pb")),
                             key=lambda p: int(re.search(r"(\d+)\.pb$", p).group(1)))
            if len(inputs) > len(in_names) or len(outputs) != len(out_names):
                return False, (f"{os.path.basename(ds)}: {len(inputs)} inputs and {len(outputs)} "
                               f"outputs for a graph of {len(in_names)} and {len(out_names)}")
            cmd = [os.path.join(args.bin, "qn-run"), plan, "--nproc", "1", "--comm", "local",
                   "--quiet", "--output-dir", os.path.join(case_dir, f"out{k}")]
            if args.device == "cuda":
                cmd += ["--device", "cuda"]
            for i, pb in enumerate(inputs):
                arr = read_pb(pb)
                f = os.path.join(case_dir, f"in{k}_{i}.npy")
                np.save(f, arr)
                cmd += ["--input", f"{in_names[i]}={f}"]
            rc, out = run(cmd, args.timeout)
            if rc != 0:
                return False, tool_failure("qn-run", rc, out)
            for oname, pb in zip(out_names, outputs):
                want = read_pb(pb)
                path = os.path.join(case_dir, f"out{k}", sanitize(oname) + ".npy")
                if not os.path.isfile(path):
                    return False, f"qn-run wrote no {os.path.basename(path)}"
                got = np.load(path)
                why = compare(oname, got, want)
                if why:
                    return False, (f"{os.path.basename(ds)}: {why}" if len(sets) > 1 else why)
        return True, ""
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("QN_BIN", os.path.join(REPO, "build", "bin")),
                    help="folder of qn-compile and qn-run (default: build/bin, or $QN_BIN)")
    ap.add_argument("--data", default=None,
                    help="the node tests (default: the Python onnx package's "
                    "onnx/backend/test/data/node)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="the device qn-compile targets and qn-run runs on, and the Ops.def "
                    "column (OV_Cpu, OV_Cuda) that decides the scope (default cpu)")
    ap.add_argument("-k", default="", help="only the cases whose name contains this")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--table", action="store_true", help="print a line per case")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per tool call (default 60)")
    args = ap.parse_args()
    start = time.monotonic()
    if onnx.__version__ != ONNX_VERSION:
        print(f"test_conformance: warning: the Python onnx package is {onnx.__version__}, "
              f"QuintNet's ONNX is {ONNX_VERSION}: its node tests may differ", file=sys.stderr)
    data = args.data or os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data",
                                     "node")
    if not os.path.isdir(data):
        print(f"test_conformance: no node-test folder {data}", file=sys.stderr)
        return 1
    missing = qn_tools.missing_tool(args.bin)
    if missing:
        print(f"test_conformance: {missing} is not built", file=sys.stderr)
        return 1
    if args.device == "cuda":
        gpus, reason = qn_tools.list_gpus(os.path.join(args.bin, "qn-run"))
        if not gpus:
            print(f"SKIPPED: no CUDA device ({reason})")
            return 77
        print("devices: " + "; ".join(gpus))
    ops = parse_ops()
    cases = [c for c in find_cases(data, ops, args.device) if args.k in c[0]]
    xfail = dict(XFAIL, **XFAIL_DEVICE[args.device])
    if not args.k:
        names = {c[0] for c in cases}
        for table, label in ((SKIP, "SKIP"), (xfail, "XFAIL")):
            for n in sorted(set(table) - names):
                print(f"test_conformance: warning: {label} lists {n}, not in scope on "
                      f"{args.device}", file=sys.stderr)
    to_run = [c for c in cases if c[0] not in SKIP]
    with tempfile.TemporaryDirectory(prefix="qn-conformance-") as work:
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = dict(zip((c[0] for c in to_run),
                               pool.map(lambda c: run_case(args, c[0], c[1], work), to_run)))
    rows, counts = [], {"PASS": 0, "SKIP": 0, "XFAIL": 0, "FAIL": 0}
    for name, _ in cases:
        if name in SKIP:
            status, detail = "SKIP", SKIP[name]
        else:
            ok, detail = results[name]
            if name in xfail:
                status = "FAIL" if ok else "XFAIL"
                detail = ("passes now: take it out of XFAIL" if ok
                          else f"{xfail[name]} [{detail}]")
            else:
                status = "PASS" if ok else "FAIL"
        counts[status] += 1
        rows.append((status, name, detail))
    for status, name, detail in rows:
        if args.table or status == "FAIL":
            print(f"{status:<5} {name}" + (f": {detail}" if detail else ""))
    elapsed = time.monotonic() - start
    print(f"conformance: {len(cases)} in scope, {counts['PASS']} passed, {counts['SKIP']} "
          f"skipped, {counts['XFAIL']} xfail, {counts['FAIL']} failed "
          f"(--device {args.device}, onnx {onnx.__version__}, {elapsed:.0f} s)")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
