"""Damages a plan folder in one way (KIND), for run_damaged_plan.test."""
import json
import os
import sys

import onnx

plan, kind = sys.argv[1], sys.argv[2]
manifest = os.path.join(plan, "plan.json")
if kind == "json-syntax":
    with open(manifest, "a") as f:
        f.write("{")
elif kind == "json-escape":
    d = json.load(open(manifest))
    d["ranks"][1]["weights"] = "../../etc/passwd"
    json.dump(d, open(manifest, "w"))
elif kind == "truncated-bin":
    path = os.path.join(plan, "rank1.bin")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
elif kind == "foreign-location":
    path = os.path.join(plan, "rank1.onnx")
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "rank0.bin"
    onnx.save(m, path)
elif kind == "overlap":
    path = os.path.join(plan, "rank0.onnx")
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer[1:2]:
        for e in t.external_data:
            if e.key == "offset":
                e.value = "0"
    onnx.save(m, path)
elif kind == "missing-rank":
    os.remove(os.path.join(plan, "rank1.onnx"))
else:
    sys.exit(f"unknown kind {kind}")
