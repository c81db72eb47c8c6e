#!/usr/bin/env python3
"""Turns a model-family skeleton (written by models/export_families.py: the
exported ONNX graph with its Linear and embedding weights taken out and listed
in the metadata key "quintnet.rehydrate") back into a whole model, filling
each taken weight with seeded normal numbers of the recorded mean and standard
deviation. The same skeleton always gives the same model (the seed is the
CRC-32 of the weight's name).

Usage: python3 models/families/rehydrate.py SKELETON.onnx OUT.onnx
"""
import json
import sys
import zlib

import numpy as np
import onnx
from onnx import numpy_helper

KEY = "quintnet.rehydrate"


def info(model):
    for p in model.metadata_props:
        if p.key == KEY:
            return json.loads(p.value)
    raise ValueError(f"not a QuintNet family skeleton: no metadata key '{KEY}'")


def rehydrate(model):
    """Returns (model with its weights back, the skeleton's info)."""
    meta = info(model)
    weights = meta["weights"]
    keep = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for name, rec in sorted(weights.items()):
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        a = rng.standard_normal(rec["dims"], dtype=np.float32) * np.float32(rec["std"])
        a += np.float32(rec["mean"])
        model.graph.initializer.append(numpy_helper.from_array(a.astype(np.float32), name))
    return model, meta


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model, _ = rehydrate(onnx.load(sys.argv[1]))
    onnx.save(model, sys.argv[2])


if __name__ == "__main__":
    main()
