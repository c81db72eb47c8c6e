"""Seed corpora for the fuzz targets: small binary models (the lit models in
binary form, and plan rank models), plan.json + rank model pairs, .npy files."""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import parser

seeds, qn_compile = sys.argv[1], sys.argv[2]
repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for i, path in enumerate(sorted(glob.glob(os.path.join(repo, "test", "lit", "*.onnxtext")))):
    text = "".join(l for l in open(path) if not l.startswith("#"))
    try:
        model = parser.parse_model(text)
    except Exception:
        continue
    data = model.SerializeToString()
    with open(os.path.join(seeds, "onnx", f"lit{i}.onnx"), "wb") as f:
        f.write(data)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "m.onnx")
        with open(src, "wb") as f:
            f.write(data)
        plan = os.path.join(tmp, "plan")
        if subprocess.run([qn_compile, src, "--tp", "2", "-o", plan, "--quiet",
                           "--replicate-below=0"]).returncode != 0:
            continue
        manifest = open(os.path.join(plan, "plan.json"), "rb").read()
        rank0 = open(os.path.join(plan, "rank0.onnx"), "rb").read()
        with open(os.path.join(seeds, "plan", f"plan{i}"), "wb") as f:
            f.write(manifest + b"\0" + rank0)
        with open(os.path.join(seeds, "onnx", f"rank{i}.onnx"), "wb") as f:
            f.write(rank0)
rng = np.random.default_rng(0)
for i, (dtype, shape) in enumerate([(np.float32, (3, 4)), (np.float16, (2,)), (np.int64, ()),
                                    (np.int32, (0, 5)), (np.bool_, (2, 2, 2)), (np.uint8, (7,)),
                                    (np.float64, (1, 1))]):
    np.save(os.path.join(seeds, "npy", f"seed{i}.npy"), rng.standard_normal(shape).astype(dtype))
