#!/usr/bin/env python3
"""Digest of every plan qn-compile makes of a fixed model set: for refactors
that must not change what the compiler emits.

The models: models/*.onnx, models/torch/*.onnx, the lit inputs
(test/lit/**/*.onnxtext) and the generated cases of test/e2e/test_differential.py.
Each is compiled at tp 1, 2 and 4, with the default --replicate-below and with
--replicate-below=0, as a plan folder and as --emit=annotated; every output
file's sha256 (or the failure's exit code and message) becomes one line.

  python3 scripts/plan-digest.py --bin build/bin > after.txt
  diff before.txt after.txt        # no output: byte-identical plans

With --normalize-names, the __qn_local_N suffixes of rewritten constants are
dropped before hashing (rank models re-serialised, plan.json without its
hashes): for changes that only rename those constants.

Plans are written under a temporary folder whose path is the same on every run
(plan.json records the source model's path), so two binaries compare cleanly.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/tmp/qn-plan-digest"


NORMALIZE = False
LOCAL = re.compile(r"__qn_local(_[0-9]+)?")


def norm_text(data):
    return LOCAL.sub("__qn_local", data.decode()).encode() if NORMALIZE else data


def file_digest(path):
    data = open(path, "rb").read()
    if not NORMALIZE:
        return sha(data)
    if path.endswith(".onnx"):
        import onnx
        m = onnx.load_from_string(data)
        g = m.graph
        for n in g.node:
            n.input[:] = [LOCAL.sub("__qn_local", x) for x in n.input]
            n.output[:] = [LOCAL.sub("__qn_local", x) for x in n.output]
        for t in g.initializer:
            t.name = LOCAL.sub("__qn_local", t.name)
        return sha(m.SerializeToString())
    if path.endswith("plan.json"):
        plan = json.loads(data)
        plan.pop("plan_id", None)
        for r in plan.get("ranks", []):
            r.pop("model_sha256", None)
        return sha(json.dumps(plan, sort_keys=True).encode())
    return sha(data)


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def models():
    out = []
    for pattern in ("models/*.onnx", "models/torch/*.onnx", "test/lit/**/*.onnxtext"):
        for p in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            out.append((os.path.relpath(p, ROOT), p))
    sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
    import onnx
    import test_differential as td
    gen = os.path.join(WORK, "generated")
    os.makedirs(gen, exist_ok=True)
    for name, c in sorted(td.CASES.items()):
        model, _ = c.model()
        path = os.path.join(gen, name + ".onnx")
        onnx.save(model, path)
        out.append(("diff/" + name, path))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--normalize-names", action="store_true",
                    help="drop the _N suffixes of __qn_local constants before hashing")
    args = ap.parse_args()
    global NORMALIZE
    NORMALIZE = args.normalize_names
    compiler = os.path.join(os.path.abspath(args.bin), "qn-compile")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    for label, path in models():
        for tp in (1, 2, 4):
            for flags in ([], ["--replicate-below=0"]):
                tag = f"{label} tp{tp}{' ' + ' '.join(flags) if flags else ''}"
                proc = subprocess.run([compiler, path, "--tp", str(tp), "--emit=annotated", *flags],
                                      capture_output=True)
                if proc.returncode != 0:
                    print(f"{tag} annotated: rc={proc.returncode} {sha(proc.stderr)}")
                else:
                    print(f"{tag} annotated: {sha(norm_text(proc.stdout))}")
                out = os.path.join(WORK, "plan")
                shutil.rmtree(out, ignore_errors=True)
                proc = subprocess.run([compiler, path, "--tp", str(tp), "-o", out, "--quiet", *flags],
                                      capture_output=True)
                if proc.returncode != 0:
                    print(f"{tag} plan: rc={proc.returncode} {sha(proc.stderr)}")
                    continue
                files = sorted(os.listdir(out))
                print(f"{tag} plan: " + " ".join(
                    f"{f}={file_digest(os.path.join(out, f))}" for f in files))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
