#!/usr/bin/env python3
"""End-to-end tests: qn-compile + qn-run against onnxruntime on the bundled models.

Usage:
  python3 test/e2e/test_e2e.py [--bin build/bin] [unittest args, e.g. -v or -k gemm]
The tools directory is taken from --bin, else $QN_BIN, else <repo>/build/bin.
Plans and outputs go to a temporary folder that is removed afterwards.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
import onnxruntime as ort

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(REPO, "models")
# Models exported by PyTorch itself (models/export_torch.py), bundled.
TORCH_MODELS = os.path.join(MODELS, "torch")
BIN = os.environ.get("QN_BIN", os.path.join(REPO, "build", "bin"))
TIMEOUT_S = 300

# Pass criterion: max|qn - ort| <= RTOL * max|ort|, a normwise (max-norm) relative
# bound of 1e-5, which fp32 comfortably meets for these sizes even though the
# partitioned sums are reassociated. An elementwise relative bound is meaningless
# for outputs near zero, so it is not used.
RTOL = 1e-5

# Per bundled model: input name, the input shapes to run (same plan for all), and
# the initializers a sensible plan may keep whole on every rank (used for the rank
# size check; everything else must be split 1/N).
MODEL_CASES = {
    "mlp_gemm": dict(
        inputs={"input": [(3, 784), (64, 784)]},
        # fc3 is [10,512]: 10 outputs do not split 4 ways, so it may be replicated;
        # biases of row-parallel layers are added once after the reduction.
        may_replicate={"fc1.bias", "fc2.bias", "fc3.weight", "fc3.bias"},
        # fc1 column + fc2 row (Megatron pair): one AllReduce; fc3 replicated.
        collectives=["AllReduce"],
    ),
    "mlp_matmul3d": dict(
        inputs={"x": [(2, 7, 256), (3, 16, 256)]},
        may_replicate={"fc1.bias", "fc2.bias"},
        collectives=["AllReduce"],
    ),
}


def _lm_inputs(batch, seq):
    def make(rng):
        return {"input_ids": rng.integers(0, 1024, size=(batch, seq), dtype=np.int64),
                "position_ids": np.broadcast_to(np.arange(seq, dtype=np.int64),
                                                (batch, seq)).copy()}
    make.shape = (batch, seq)
    return make


MODEL_CASES["embed_mlp_lm"] = dict(
    # Token ids cover the whole vocabulary, so every rank's rows are looked up.
    inputs=[_lm_inputs(2, 16), _lm_inputs(3, 40)],
    # The position table (16 KiB) stays replicated; the rest is split.
    may_replicate={"wpe.weight", "fc2.bias"},
    # Vocab-parallel token embedding (AllReduce), MLP pair (AllReduce), LM head
    # column-parallel over the vocabulary (AllGather of the logits).
    collectives=["AllReduce", "AllReduce", "AllGather"],
)


def _attention_inputs(batch, seq):
    def make(rng):
        # An additive mask hiding the last keys of the second sequence.
        mask = np.zeros((batch, 1, 1, seq), np.float32)
        mask[-1, ..., seq // 2:] = -1e4
        return {"x": rng.standard_normal((batch, seq, 64)).astype(np.float32), "mask": mask}
    make.shape = (batch, seq)
    return make


MODEL_CASES["attention_block"] = dict(
    inputs=[_attention_inputs(2, 5), _attention_inputs(3, 12)],
    # Q, K, V column-parallel by whole heads, output projection row-parallel.
    may_replicate={"o_proj.bias", "split_shape", "merge_shape", "scale"},
    collectives=["AllReduce"],
)
MODEL_CASES["fused_attention_block"] = dict(
    inputs={"x": [(2, 5, 64), (3, 11, 64)]},
    # c_attn (fused Q|K|V) column-parallel head by head, c_proj row-parallel.
    may_replicate={"c_proj.bias", "split_sizes", "num_heads", "head_size", "all_head_size",
                   "zero", "minus1", "minus2", "scale"},
    collectives=["AllReduce"],
)
MODEL_CASES["gpt2_tiny"] = dict(
    inputs=[_lm_inputs(2, 7), _lm_inputs(1, 33)],
    # Position table, LayerNorm parameters and the row layers' biases stay whole.
    may_replicate={"transformer.wpe.weight", "bias"} | {
        f"transformer.h.{l}.{m}" for l in range(2)
        for m in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias",
                  "attn.c_proj.bias", "mlp.c_proj.bias")} | {
        "transformer.ln_f.weight", "transformer.ln_f.bias"},
    # The Megatron minimum: one AllReduce for the token embedding, two per
    # layer (attention, MLP), one AllGather for the logits.
    collectives=["AllReduce"] * 5 + ["AllGather"],
)
MODEL_CASES["llama_tiny"] = dict(
    inputs=[_lm_inputs(2, 7), _lm_inputs(1, 30)],
    may_replicate={"cos_cached", "sin_cached", "bias", "model.norm.weight"} | {
        f"model.layers.{l}.{m}.weight" for l in range(2)
        for m in ("input_layernorm", "post_attention_layernorm")},
    collectives=["AllReduce"] * 5 + ["AllGather"],
    # 2 KV heads: at tp 4 (more ranks than KV heads) K and V stay whole and
    # each rank slices the repeated KV heads its query heads use
    # (test_llama_kv_heads_replicated_at_tp4 checks the strategies).
)


def _bert_inputs(batch, seq):
    def make(rng):
        mask = np.ones((batch, seq), np.int64)
        mask[-1, seq // 2:] = 0  # padding in the last sequence
        types = np.zeros((batch, seq), np.int64)
        types[:, seq // 2:] = 1
        return {"input_ids": rng.integers(0, 1024, size=(batch, seq), dtype=np.int64),
                "attention_mask": mask, "token_type_ids": types,
                "position_ids": np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq)).copy()}
    make.shape = (batch, seq)
    return make


MODEL_CASES["bert_tiny"] = dict(
    inputs=[_bert_inputs(2, 9), _bert_inputs(3, 24)],
    may_replicate={"embeddings.position_embeddings.weight",
                   "embeddings.token_type_embeddings.weight",
                   "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"} | {
        f"encoder.layer.{l}.{m}" for l in range(2)
        for m in ("attention.output.dense.bias", "output.dense.bias",
                  "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
                  "output.LayerNorm.weight", "output.LayerNorm.bias")},
    # Vocab-parallel word embedding, then attention and MLP per layer.
    collectives=["AllReduce"] * 5,
)


def _torch_bert_inputs(batch, seq):
    def make(rng):
        mask = np.ones((batch, seq), np.int64)
        mask[-1, seq // 2:] = 0
        types = np.zeros((batch, seq), np.int64)
        types[:, seq // 2:] = 1
        return {"input_ids": rng.integers(0, 1024, size=(batch, seq), dtype=np.int64),
                "attention_mask": mask, "token_type_ids": types}
    make.shape = (batch, seq)
    return make


MODEL_CASES["torch/bert"] = dict(
    # HF BertModel exported by torch.onnx.export (TorchScript, opset 17).
    inputs=[_torch_bert_inputs(2, 9), _torch_bert_inputs(3, 21)],
    may_replicate=None,  # checked through plan.json's own figures only
    collectives=["AllReduce"] * 5,
)


def _torch_ids_inputs(batch, seq):
    def make(rng):
        return {"input_ids": rng.integers(0, 1024, size=(batch, seq), dtype=np.int64)}
    make.shape = (batch, seq)
    return make


MODEL_CASES["torch/gpt2"] = dict(
    # HF GPT2LMHeadModel exported by torch.onnx.export: Conv1D as Gemm on
    # flattened views, fused c_attn split head by head, tied LM head.
    inputs=[_torch_ids_inputs(2, 7), _torch_ids_inputs(1, 29)],
    may_replicate=None,
    # 1 (token embedding) + 2 per layer AllReduce, 1 AllGather (logits).
    collectives=["AllReduce"] * 5 + ["AllGather"],
)
MODEL_CASES["torch/llama"] = dict(
    # HF LlamaForCausalLM (4 query heads, 2 KV heads) exported by
    # torch.onnx.export: repeat_kv's Expand target is built as
    # Where(Equal(s, -1), 1, s) from run-time Shape reads of the K/V heads
    # (local sizes on a sharded tensor). At tp 2 Q, K, V are split by heads;
    # at tp 4 (more ranks than KV heads) K and V stay whole and are sliced
    # after repeat_kv. Either way: the Megatron minimum of collectives.
    inputs=[_torch_ids_inputs(2, 7), _torch_ids_inputs(1, 29)],
    may_replicate=None,
    collectives=["AllReduce"] * 5 + ["AllGather"],
)
TP_SIZES = (1, 2, 4)


def model_file(name):
    """models/<name>.onnx ("torch/x" -> models/torch/x.onnx)."""
    return os.path.join(MODELS, name + ".onnx")


def model_tps(name):
    """The tp values a bundled model is tested at."""
    return MODEL_CASES[name].get("tps", TP_SIZES)


def input_makers(case):
    """The case's input makers: each maker(rng) returns {name: array} and has a
    .shape attribute (for messages). Also used by test/e2e/test_gpu.py."""
    if isinstance(case["inputs"], dict):
        (in_name, shapes), = case["inputs"].items()
        makers = [(lambda r, n=in_name, sh=sh: {n: r.standard_normal(sh).astype(np.float32)})
                  for sh in shapes]
        for m, sh in zip(makers, shapes):
            m.shape = sh
        return makers
    return case["inputs"]


COLLECTIVE_DOMAIN = "ai.quintnet"
COLLECTIVES = {"AllReduce", "AllGather", "ReduceScatter"}


def tool(name):
    return os.path.join(BIN, name)


SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error: ")


def check_no_sanitizer_report(args, stderr):
    """Under the sanitizer build (QN_SANITIZE), a report is a failure even on an
    error path that is expected to exit non-zero."""
    if SANITIZER_REPORT.search(stderr or ""):
        raise AssertionError(f"sanitizer report from {' '.join(args)}:\n{stderr[-6000:]}")


def run_tool(args, timeout=TIMEOUT_S):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, env=env)
    check_no_sanitizer_report(args, proc.stderr)
    return proc


def describe(proc):
    return (f"\n$ {' '.join(proc.args)}\nexit {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def weight_bytes(model):
    return {t.name: onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer}


def listing(path):
    """Files under path (relative), or [] if it does not exist."""
    out = []
    for root, _, files in os.walk(path):
        out += [os.path.relpath(os.path.join(root, f), path) for f in files]
    return sorted(out)


def find_tp(plan):
    for key in ("tp", "tp_size", "world_size"):
        if isinstance(plan.get(key), int):
            return plan[key]
    return None


class ToolsTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for t in ("qn-compile", "qn-run"):
            if not os.access(tool(t), os.X_OK):
                raise RuntimeError(f"{tool(t)} not found or not executable "
                                   f"(build first, or pass --bin DIR / set QN_BIN)")
        cls.tmp = tempfile.mkdtemp(prefix=f"qn-e2e-{cls.__name__}-")

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def compile(self, model_path, tp, out):
        return run_tool([tool("qn-compile"), model_path, "--tp", str(tp), "-o", out])

    def qn_run(self, plan_dir, nproc, inputs, out_dir):
        args = [tool("qn-run"), plan_dir, "--nproc", str(nproc)]
        for name, f in inputs:
            args += ["--input", f"{name}={f}"]
        return run_tool(args + ["--output-dir", out_dir])


class TestBundledModels(ToolsTestCase):
    """qn-compile --tp N + qn-run --nproc N matches onnxruntime, for N in 1, 2, 4."""

    def check_plan_files(self, model, plan_dir, tp, case):
        with open(os.path.join(plan_dir, "plan.json")) as f:
            plan = json.load(f)
        self.assertEqual(find_tp(plan), tp, f"plan.json tp (keys: {sorted(plan)})")
        files = set(os.listdir(plan_dir))
        for k in range(tp):
            self.assertIn(f"rank{k}.onnx", files)
            self.assertIn(f"rank{k}.bin", files)
        self.assertFalse({f"rank{tp}.onnx", f"rank{tp}.bin"} & files,
                         f"more rank files than tp={tp}: {sorted(files)}")
        # The plan's own figures: each rank's parameters within 5% of
        # model/N plus what every rank keeps whole.
        ideal = ((plan["model_param_bytes"] - plan["replicated_param_bytes"]) / tp
                 + plan["replicated_param_bytes"])
        for r in plan["ranks"]:
            self.assertLessEqual(abs(r["param_bytes"] - ideal), 0.05 * ideal,
                                 f"rank {r['rank']}: {r['param_bytes']} bytes, ideal {ideal:.0f}")

        if case["may_replicate"] is None:
            return self.check_collectives(plan_dir, tp, case)
        # Each rank holds ~1/N of the weights, plus what may be replicated.
        wb = weight_bytes(model)
        total = sum(wb.values())
        replicable = sum(wb[n] for n in case["may_replicate"])
        slack = 4096 * (len(wb) + 2)  # alignment padding, small constants
        upper = total / tp + replicable * (tp - 1) / tp + slack
        lower = (total - replicable) / tp - slack
        for k in range(tp):
            size = os.path.getsize(os.path.join(plan_dir, f"rank{k}.bin"))
            self.assertLessEqual(size, upper, f"rank{k}.bin: {size} bytes; model weights "
                                 f"{total}, tp {tp}, replicable {replicable}")
            self.assertGreaterEqual(size, lower, f"rank{k}.bin: {size} bytes; model weights "
                                    f"{total}, tp {tp}")
        self.check_collectives(plan_dir, tp, case)

    def check_collectives(self, plan_dir, tp, case):
        collective_seqs = []
        for k in range(tp):
            rank_path = os.path.join(plan_dir, f"rank{k}.onnx")
            onnx.checker.check_model(rank_path)  # valid ONNX, external data resolvable
            rank_model = onnx.load(rank_path, load_external_data=False)
            seq = [n.op_type for n in rank_model.graph.node if n.domain == COLLECTIVE_DOMAIN]
            self.assertTrue(set(seq) <= COLLECTIVES, f"rank{k}: unknown collectives {seq}")
            collective_seqs.append(seq)
        self.assertTrue(all(s == collective_seqs[0] for s in collective_seqs),
                        f"ranks issue different collective sequences: {collective_seqs}")
        expected = [] if tp == 1 else case["collectives"]
        self.assertEqual(collective_seqs[0], expected, f"collectives of the tp={tp} plan")

    def check_model(self, name, tp):
        case = MODEL_CASES[name]
        model_path = model_file(name)
        model = onnx.load(model_path)
        out_names = [o.name for o in model.graph.output]
        work = name.replace("/", "_")
        os.makedirs(self.path(f"{work}-tp{tp}"))
        plan_dir = self.path(f"{work}-tp{tp}", "plan")
        proc = self.compile(model_path, tp, plan_dir)
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.check_plan_files(model, plan_dir, tp, case)

        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(1234 + tp)
        for i, make in enumerate(input_makers(case)):
            shape = make.shape
            feeds = make(rng)
            bound = []
            for in_name, x in feeds.items():
                x_path = self.path(f"{work}-tp{tp}", f"{in_name}{i}.npy")
                np.save(x_path, x)
                bound.append((in_name, x_path))
            out_dir = self.path(f"{work}-tp{tp}", f"out{i}")
            proc = self.qn_run(plan_dir, tp, bound, out_dir)
            self.assertEqual(proc.returncode, 0, describe(proc))
            self.assertEqual(listing(out_dir), sorted(sanitize(n) + ".npy" for n in out_names))
            refs = sess.run(out_names, feeds)
            for out_name, ref in zip(out_names, refs):
                got = np.load(os.path.join(out_dir, sanitize(out_name) + ".npy"))
                self.assertEqual(got.dtype, ref.dtype, out_name)
                self.assertEqual(got.shape, ref.shape, out_name)
                err = float(np.max(np.abs(got.astype(np.float64) - ref)))
                scale = float(np.max(np.abs(ref)))
                self.assertLessEqual(err, RTOL * scale,
                                     f"{name} tp={tp} input {shape} output {out_name}: "
                                     f"max|qn-ort| = {err:.3e}, max|ort| = {scale:.3e}")


def _add_model_tests():
    for name in MODEL_CASES:
        for tp in model_tps(name):
            def test(self, name=name, tp=tp):
                self.check_model(name, tp)
            test.__name__ = f"test_{name.replace('/', '_')}_tp{tp}"
            setattr(TestBundledModels, test.__name__, test)


_add_model_tests()


class TestCompileErrors(ToolsTestCase):
    def assert_failed_cleanly(self, proc, out_dir):
        self.assertNotEqual(proc.returncode, 0, describe(proc))
        self.assertTrue(proc.stderr.strip(), "no message on stderr" + describe(proc))
        self.assertFalse(os.path.exists(out_dir), "output dir created on error" + describe(proc))
        self.assertNotIn("Traceback", proc.stderr)
        self.assertNotRegex(proc.stderr, r"(?i)segmentation|core dumped|terminate called")
        self.assertGreater(proc.returncode, 0, "killed by a signal" + describe(proc))

    def test_missing_file(self):
        missing = self.path("no_such_model.onnx")
        out = self.path("plan-missing")
        proc = self.compile(missing, 2, out)
        self.assert_failed_cleanly(proc, out)
        self.assertIn("no_such_model.onnx", proc.stderr)

    def test_garbage_file(self):
        garbage = self.path("garbage_bytes.onnx")
        with open(garbage, "wb") as f:
            f.write(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        out = self.path("plan-garbage")
        proc = self.compile(garbage, 2, out)
        self.assert_failed_cleanly(proc, out)
        self.assertIn("garbage_bytes.onnx", proc.stderr)

    def test_llama_kv_heads_replicated_at_tp4(self):
        # 4 query heads, 2 KV heads: at tp 2 Q, K, V are all column-parallel;
        # at tp 4 only Q is, K and V are replicated (sliced per rank after
        # repeat_kv); both give the minimum of collectives (checked above).
        for tp, kv in ((2, "column"), (4, "replicated")):
            out = self.path(f"plan-llama-kv{tp}")
            proc = self.compile(os.path.join(MODELS, "llama_tiny.onnx"), tp, out)
            self.assertEqual(proc.returncode, 0, describe(proc))
            with open(os.path.join(out, "plan.json")) as f:
                strategies = {l["node"]: l["strategy"] for l in json.load(f)["linears"]}
            for layer in range(2):
                p = f"/model.layers.{layer}.self_attn"
                self.assertEqual(strategies[f"{p}.q_proj/MatMul"], "column")
                self.assertEqual(strategies[f"{p}.k_proj/MatMul"], kv, f"tp {tp}")
                self.assertEqual(strategies[f"{p}.v_proj/MatMul"], kv, f"tp {tp}")
                self.assertEqual(strategies[f"{p}.o_proj/MatMul"], "row")

    def test_tp_not_dividing(self):
        model_path = os.path.join(MODELS, "mlp_gemm.onnx")
        out = self.path("plan-tp3")
        proc = self.compile(model_path, 3, out)
        self.assert_failed_cleanly(proc, out)
        nodes = [n.name for n in onnx.load(model_path, load_external_data=False).graph.node]
        self.assertTrue(any(n in proc.stderr for n in nodes),
                        "message names no node" + describe(proc))
        # It should list the tp values that work.
        self.assertRegex(proc.stderr, r"\b2\b")
        self.assertRegex(proc.stderr, r"\b4\b")


PROBE_INPUT = "qn_probe_pixels"  # distinctive, so "message mentions the input" means something


class TestEmbeddingIds(ToolsTestCase):
    """Token ids at the edges of the vocabulary, through the vocab-parallel
    rewrite (tp 2 and 4) and the plain lookup (tp 1): negative ids (ONNX's
    Gather counts them from the end, [-V, 0)) give ONNX Runtime's logits;
    ids outside [-V, V), which ORT rejects, fail every rank naming the Gather,
    with nothing written."""

    MODEL = "embed_mlp_lm"  # wte: 1024 x 64, vocab-parallel at tp 2 and 4
    VOCAB = 1024

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model_path = model_file(cls.MODEL)
        ort.set_default_logger_severity(3)  # ORT's own log of the rejected ids
        cls.sess = ort.InferenceSession(cls.model_path, providers=["CPUExecutionProvider"])
        cls.plans = {}
        for tp in (1, 2, 4):
            out = os.path.join(cls.tmp, f"plan-tp{tp}")
            proc = run_tool([tool("qn-compile"), cls.model_path, "--tp", str(tp), "-o", out])
            cls.plans[tp] = (out, proc)

    def feeds(self, ids):
        ids = np.array(ids, dtype=np.int64).reshape(1, -1)
        pos = np.arange(ids.shape[1], dtype=np.int64).reshape(1, -1)
        files = []
        for name, arr in (("input_ids", ids), ("position_ids", pos)):
            f = self.path(f"{name}-{abs(hash(arr.tobytes()))}.npy")
            np.save(f, arr)
            files.append((name, f))
        return {"input_ids": ids, "position_ids": pos}, files

    def plan(self, tp):
        out, proc = self.plans[tp]
        self.assertEqual(proc.returncode, 0, describe(proc))
        if tp > 1:
            self.assertIn("1 vocab-parallel", proc.stderr, describe(proc))
        return out

    def test_negative_ids_match_ort(self):
        V = self.VOCAB
        feeds, files = self.feeds([3, -1, -V, V - 1, -V // 2, -V // 2 - 1, 0, -7])
        ref = self.sess.run(None, feeds)[0]
        for tp in (1, 2, 4):
            with self.subTest(tp=tp):
                out = self.path(f"out-neg-tp{tp}")
                proc = self.qn_run(self.plan(tp), tp, files, out)
                self.assertEqual(proc.returncode, 0, describe(proc))
                got = np.load(os.path.join(out, "logits.npy"))
                err = float(np.max(np.abs(got.astype(np.float64) - ref)))
                self.assertLessEqual(err, RTOL * float(np.max(np.abs(ref))), f"max|qn-ort| = {err}")

    def test_out_of_range_ids_fail(self):
        V = self.VOCAB
        for bad in (V, -V - 1, 10 * V):
            feeds, files = self.feeds([1, bad, 2])
            with self.assertRaises(Exception, msg=f"ORT accepted id {bad}"):
                self.sess.run(None, feeds)
            for tp in (1, 2, 4):
                with self.subTest(id=bad, tp=tp):
                    out = self.path(f"out-bad-{bad}-tp{tp}")
                    proc = self.qn_run(self.plan(tp), tp, files, out)
                    self.assertGreater(proc.returncode, 0, describe(proc))
                    self.assertIn("Gather '/wte/Gather'", proc.stderr, describe(proc))
                    self.assertIn(f"index {bad} is out of range", proc.stderr, describe(proc))
                    self.assertEqual(listing(out), [], "outputs written on error")


class TestRunErrors(ToolsTestCase):
    """qn-run rejects bad inputs with a message naming the input and writes nothing."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # mlp_gemm with its input renamed.
        model = onnx.load(os.path.join(MODELS, "mlp_gemm.onnx"))
        old = model.graph.input[0].name
        model.graph.input[0].name = PROBE_INPUT
        for node in model.graph.node:
            node.input[:] = [PROBE_INPUT if i == old else i for i in node.input]
        cls.model_path = os.path.join(cls.tmp, "probe.onnx")
        onnx.checker.check_model(model)
        onnx.save(model, cls.model_path)
        cls.plan = os.path.join(cls.tmp, "probe-plan")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        cls.compile_proc = subprocess.run(
            [tool("qn-compile"), cls.model_path, "--tp", "2", "-o", cls.plan],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT_S, env=env)
        cls.good = os.path.join(cls.tmp, "good.npy")
        np.save(cls.good, np.random.default_rng(3).standard_normal((4, 784)).astype(np.float32))

    def setUp(self):
        self.assertEqual(self.compile_proc.returncode, 0, describe(self.compile_proc))

    def run_bad(self, inputs, nproc=2, must_mention=PROBE_INPUT):
        out = tempfile.mkdtemp(prefix="out-", dir=self.tmp)
        shutil.rmtree(out)
        proc = self.qn_run(self.plan, nproc, inputs, out)
        self.assertNotEqual(proc.returncode, 0, describe(proc))
        self.assertGreater(proc.returncode, 0, "killed by a signal" + describe(proc))
        self.assertEqual(listing(out), [], "outputs written on error" + describe(proc))
        self.assertNotRegex(proc.stderr, r"(?i)segmentation|core dumped|terminate called")
        if must_mention:
            self.assertIn(must_mention, proc.stderr, describe(proc))
        return proc

    def write_npy(self, name, arr):
        p = self.path(name)
        np.save(p, arr)
        return p

    def test_good_input_runs(self):
        # Guards the error tests: the probe plan itself must work.
        out = self.path("out-good")
        proc = self.qn_run(self.plan, 2, [(PROBE_INPUT, self.good)], out)
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertEqual(listing(out), ["output.npy"])

    def test_unknown_input_name(self):
        self.run_bad([(PROBE_INPUT, self.good), ("no_such_input", self.good)],
                     must_mention="no_such_input")

    def test_missing_input(self):
        self.run_bad([])

    def test_wrong_dtype_float64(self):
        p = self.write_npy("f64.npy", np.zeros((4, 784), np.float64))
        self.run_bad([(PROBE_INPUT, p)])

    def test_wrong_dtype_int64(self):
        p = self.write_npy("i64.npy", np.zeros((4, 784), np.int64))
        self.run_bad([(PROBE_INPUT, p)])

    def test_wrong_shape(self):
        p = self.write_npy("short.npy", np.zeros((4, 783), np.float32))
        self.run_bad([(PROBE_INPUT, p)])

    def test_wrong_rank(self):
        p = self.write_npy("rank3.npy", np.zeros((1, 4, 784), np.float32))
        self.run_bad([(PROBE_INPUT, p)])

    def test_not_npy_text(self):
        p = self.path("pixels.txt")
        with open(p, "w") as f:
            f.write("0.5 0.25 0.125\n")
        self.run_bad([(PROBE_INPUT, p)])

    def test_not_npy_garbage_with_npy_suffix(self):
        p = self.path("garbage.npy")
        with open(p, "wb") as f:
            f.write(b"\x93NUMPY\x01\x00" + bytes(range(256)) * 4)
        self.run_bad([(PROBE_INPUT, p)])

    def test_missing_input_file(self):
        self.run_bad([(PROBE_INPUT, self.path("does_not_exist.npy"))])

    def test_nproc_mismatch(self):
        self.run_bad([(PROBE_INPUT, self.good)], nproc=4, must_mention=None)


def main():
    global BIN
    argv = [sys.argv[0]]
    args = iter(sys.argv[1:])
    for a in args:
        if a == "--bin":
            BIN = next(args, BIN)
        elif a.startswith("--bin="):
            BIN = a.split("=", 1)[1]
        else:
            argv.append(a)
    BIN = os.path.abspath(BIN)
    unittest.main(argv=argv)


if __name__ == "__main__":
    main()
