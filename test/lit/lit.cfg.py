# lit configuration for QuintNet's compiler regression tests.
import os
import lit.formats

config.name = "QuintNet"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".onnxtext", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py", "lit.site.cfg.py.in"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.qn_obj_root, "test", "lit")

config.environment["PATH"] = os.pathsep.join(
    [config.qn_bin_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%python", config.python_executable))
