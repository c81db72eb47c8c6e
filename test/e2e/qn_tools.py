"""Helpers shared by test/e2e/test_gpu.py and bench/bench_gpu.py (standard library
only, no test state): the qn tools in a bin folder, the GPUs qn-run sees, and the
scripts of models/ loaded as modules.

bench/bench_gpu.py reaches this file by putting test/e2e/ on sys.path.
"""
import importlib.util
import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(REPO, "models")
TOOLS = ("qn-compile", "qn-run")
DEVICE_RE = re.compile(r"^cuda:(\d+)\s+(.*\S)\s*$")


def load_models_module(name):
    """models/<name>.py (to_fp16, gen_models) as a module. By file, not through
    sys.path: models/ holds a folder named torch/ that would shadow PyTorch."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(MODELS, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def missing_tool(bin_dir, tools=TOOLS):
    """The path of the first of `tools` that is not an executable in bin_dir, or None."""
    for t in tools:
        path = os.path.join(bin_dir, t)
        if not os.access(path, os.X_OK):
            return path
    return None


def short(text, n=300):
    """text on one line, cut to n characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n] + " ..."


def _run(cmd, timeout):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def list_gpus(qn_run, run=_run, timeout=120):
    """(gpus, reason): gpus is the list of 'cuda:K NAME' lines that
    `qn_run --list-devices` prints; reason says why there are none ("" when
    there are). run(cmd, timeout=...) runs the command (a CompletedProcess with
    text stdout and stderr)."""
    try:
        proc = run([qn_run, "--list-devices"], timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as ex:
        return [], f"qn-run --list-devices: {ex}"
    gpus = [l.strip() for l in proc.stdout.splitlines() if DEVICE_RE.match(l.strip())]
    if proc.returncode != 0:
        return [], (f"qn-run --list-devices exited {proc.returncode}: "
                    f"{short(proc.stderr) or 'no message'}; a build without CUDA?")
    if not gpus:
        return [], "qn-run --list-devices lists no device"
    return gpus, ""
