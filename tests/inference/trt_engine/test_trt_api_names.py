"""Every TensorRT name our code uses exists in the TensorRT Python API (tensorrt-stubs 10.13).

No TensorRT is needed: the stubs are parsed as text.  They must be installed beside the repo
(CI does this; they are never installed into the venv, where their ``tensorrt/`` directory
would make ``import tensorrt`` look available)::

    .venv/bin/pip install -q --no-deps --target .trt-stubs tensorrt-stubs

or point ``$HSI_EDGE_TRT_STUBS`` at such a folder.  A missing stub folder FAILS this module.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from trt_api_check import MODULE, check_table, check_uses, collect_uses, load_stub_api

REPO = Path(__file__).resolve().parents[3]
#: The modules that call TensorRT (it is imported lazily, so they are listed, not detected).
TRT_SRCS = (REPO / "edge" / "inference" / "tensorrt_build.py",
            REPO / "edge" / "inference" / "tensorrt_logging.py",
            REPO / "edge" / "inference" / "tensorrt_timing.py",
            REPO / "deploy" / "facts.py",   # reads tensorrt.__version__ for the unit's facts
            REPO / "edge" / "inference" / "tensorrt_runtime.py")


def _all_src() -> str:
    return "\n".join(p.read_text() for p in TRT_SRCS)
SOURCE_DIRS = ("edge", "drivers", "calibration", "deploy", "cuda_kernels")

#: (class, member) pairs the runtime uses on TensorRT objects.  Kept by hand on purpose: it is
#: the reviewed list of the API surface.  Type inference in trt_api_check finds most of these
#: by itself (and the test fails if it finds one missing here); the rest are calls it cannot
#: type (``parser.get_error(i)`` is annotated ``...`` in the stubs) and the callbacks
#: TensorRT makes into our ILogger/IProgressMonitor subclasses.
TABLE = [
    ("Builder", "create_network"), ("Builder", "create_builder_config"),
    ("Builder", "create_optimization_profile"), ("Builder", "build_serialized_network"),
    ("IBuilderConfig", "set_memory_pool_limit"), ("IBuilderConfig", "set_flag"),
    ("IBuilderConfig", "add_optimization_profile"), ("IBuilderConfig", "create_timing_cache"),
    ("IBuilderConfig", "set_timing_cache"), ("IBuilderConfig", "clear_flag"),
    ("IBuilderConfig", "builder_optimization_level"),
    ("IBuilderConfig", "progress_monitor"), ("ITimingCache", "serialize"),
    ("ITimingCache", "combine"),
    ("IOptimizationProfile", "set_shape"),
    ("INetworkDefinition", "num_layers"), ("INetworkDefinition", "get_layer"),
    ("INetworkDefinition", "num_inputs"), ("INetworkDefinition", "get_input"),
    ("ITensor", "name"), ("ITensor", "shape"), ("ICudaEngine", "get_tensor_shape"),
    ("ILayer", "num_outputs"), ("ILayer", "get_output"), ("ITensor", "dtype"),
    ("OnnxParser", "parse"), ("OnnxParser", "num_errors"), ("OnnxParser", "get_error"),
    ("ParserError", "desc"),
    ("Runtime", "deserialize_cuda_engine"),
    ("ICudaEngine", "num_io_tensors"), ("ICudaEngine", "get_tensor_name"),
    ("ICudaEngine", "get_tensor_mode"), ("ICudaEngine", "get_tensor_dtype"),
    ("ICudaEngine", "create_execution_context"),
    ("IExecutionContext", "set_input_shape"), ("IExecutionContext", "get_tensor_shape"),
    ("IExecutionContext", "set_tensor_address"), ("IExecutionContext", "execute_async_v3"),
    ("ILogger", "__init__"), ("ILogger", "log"), ("ILogger", "Severity"),
    ("ILogger.Severity", "INTERNAL_ERROR"), ("ILogger.Severity", "ERROR"),
    ("ILogger.Severity", "WARNING"), ("ILogger.Severity", "INFO"),
    ("ILogger.Severity", "VERBOSE"),
    ("IProgressMonitor", "__init__"), ("IProgressMonitor", "phase_start"),
    ("IProgressMonitor", "step_complete"), ("IProgressMonitor", "phase_finish"),
    ("BuilderFlag", "FP16"), ("BuilderFlag", "TF32"),
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
    ("MemoryPoolType", "WORKSPACE"), ("TensorIOMode", "INPUT"), ("DataType", "HALF"),
]

#: Python API removed in TensorRT 11 (hand-kept; source: NVIDIA TensorRT migration guide,
#: "Removed Python APIs and Replacements",
#: https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html).
#: Checked against the release/11.1 binding source (``python/src/infer/pyCore.cpp``,
#: BuilderFlag enum at lines 1599-1623; research/tensorrt_review.md item 9): ``DIRECT_IO`` is
#: still there, ``Builder.platform_has_tf32`` and ``REJECT_EMPTY_ALGORITHMS`` are gone.
#: Our code may use these only inside functions named ``*_v10`` called under ``major < TRT11``.
TRT11_REMOVED = {
    ("BuilderFlag", "FP16"), ("BuilderFlag", "BF16"), ("BuilderFlag", "INT8"),
    ("BuilderFlag", "FP8"), ("BuilderFlag", "INT4"), ("BuilderFlag", "FP4"),
    ("BuilderFlag", "OBEY_PRECISION_CONSTRAINTS"),
    ("BuilderFlag", "PREFER_PRECISION_CONSTRAINTS"), ("BuilderFlag", "REJECT_EMPTY_ALGORITHMS"),
    ("Builder", "platform_has_fast_fp16"), ("Builder", "platform_has_fast_int8"),
    ("Builder", "platform_has_tf32"),
    ("IBuilderConfig", "int8_calibrator"), ("ICudaEngine", "device_memory_size"),
}

#: Names that exist only in TensorRT 11.x (not in the 10.13 stubs), allowed only inside
#: functions named ``*_v11`` called under ``major >= TRT11``.  Currently none: the 11.x path
#: (strong typing by default, ``create_network(0)``) uses only names 10.x also has.  Any entry
#: added here needs a source note like TRT11_REMOVED's.
TRT11_ONLY: set[tuple[str, str]] = set()


def _stub_root() -> Path:
    root = Path(os.environ.get("HSI_EDGE_TRT_STUBS") or REPO / ".trt-stubs")
    if not (root / "tensorrt_bindings").is_dir():
        pytest.fail(f"tensorrt-stubs not found at {root}: install them with "
                    f"'.venv/bin/pip install -q --no-deps --target .trt-stubs tensorrt-stubs' "
                    f"(repo root; never into the venv) or set HSI_EDGE_TRT_STUBS",
                    pytrace=False)
    return root


@pytest.fixture(scope="module")
def api():
    return load_stub_api(_stub_root())


def _trt_sources() -> list[Path]:
    out = []
    for d in SOURCE_DIRS:
        for p in sorted((REPO / d).rglob("*.py")):
            if re.search(r"^\s*import tensorrt\b|^\s*from tensorrt\b", p.read_text(),
                         re.MULTILINE):
                out.append(p)
    return out


def test_stubs_parse_despite_their_syntax_errors(api):
    assert api.version.startswith("10.")
    assert api.repaired_lines, "expected the known syntax errors (e.g. add_scale_nd)"
    for cls in ("Builder", "IBuilderConfig", "ICudaEngine", "IExecutionContext", "Runtime",
                "OnnxParser", "ILogger", "IProgressMonitor"):
        assert cls in api.classes and cls in api.module
    assert "nptype" in api.module and "__version__" in api.module


def test_listed_modules_are_exactly_those_importing_tensorrt():
    assert set(_trt_sources()) == set(TRT_SRCS)


def _uses(api):
    return {(u.owner, u.member) for p in TRT_SRCS for u in collect_uses(p.read_text(), api)}


@pytest.mark.parametrize("path", _trt_sources(), ids=lambda p: p.name)
def test_every_tensorrt_name_used_exists(api, path):
    uses = collect_uses(path.read_text(), api)
    problems = [p for p in check_uses(uses, api)
                if not any(f"{o}.{m}" in p for o, m in TRT11_ONLY)]
    assert not problems, "\n".join(problems)


def test_inference_sees_the_core_calls(api):
    """Guard against the checker silently inferring nothing."""
    uses = _uses(api)
    for pair in [("IExecutionContext", "set_tensor_address"),
                 ("IExecutionContext", "execute_async_v3"),
                 ("Builder", "build_serialized_network"), ("Runtime", "deserialize_cuda_engine"),
                 ("IBuilderConfig", "set_memory_pool_limit"), ("OnnxParser", "parse"),
                 ("BuilderFlag", "FP16"), (MODULE, "Builder"), (MODULE, "__version__")]:
        assert pair in uses, pair


def test_explicit_table_exists_in_stubs_and_matches_the_code(api):
    assert check_table(TABLE, api) == []
    src = _all_src()
    stale = [(o, m) for o, m in TABLE if not re.search(rf"\b{re.escape(m)}\b", src)]
    assert not stale, f"table entries the runtime no longer uses: {stale}"
    inferred = {(o, m) for o, m in _uses(api) if o != MODULE}
    missing = sorted(inferred - set(TABLE))
    assert not missing, f"add these TensorRT uses to TABLE after review: {missing}"


def test_misspelt_names_are_reported(api):
    """Self-test: the check must fail on typos, in every kind of use it claims to cover."""
    bad = '''
import tensorrt as trt
def build(logger, network, config: "trt.IBuilderConfg"):
    b = trt.Bulder(logger)
    builder = trt.Builder(logger)
    builder.build_serialised_network(network, config)
    cfg = builder.create_builder_config()
    cfg.set_flag(trt.BuilderFlag.FP61)
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPAC, 1)
    sev = trt.ILogger.Severity
    level = sev.WARN
    ctx: "trt.IExecutionContext" = None
    ctx.execute_async_v4(0)
'''
    problems = "\n".join(check_uses(collect_uses(bad, api), api))
    for typo in ("'IBuilderConfg'", "'Bulder'", "'build_serialised_network'", "'FP61'",
                 "'WORKSPAC'", "'WARN'", "'execute_async_v4'"):
        assert typo in problems, f"{typo} not reported:\n{problems}"
    assert check_table([("IExecutionContext", "execute_async_v4"), ("Bilder", "x")], api) == [
        "table: IExecutionContext has no member 'execute_async_v4'",
        "table: tensorrt has no class 'Bilder'"]


def _enclosing_functions(tree: ast.Module) -> dict[int, str]:
    line_fn: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                line_fn[line] = node.name  # nested functions come later in walk order
    return line_fn


def _calls_guarded(tree: ast.Module, suffix: str, guard: str) -> list[str]:
    """Calls of ``*<suffix>`` functions not under an ``if`` whose test contains ``guard``."""
    bad = []

    def visit(node: ast.AST, guards: tuple[str, ...]) -> None:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            for child in node.body:
                visit(child, guards + (test,))
            for child in node.orelse:
                visit(child, guards)
            return
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id.endswith(suffix)
                and not any(guard in g for g in guards)):
            bad.append(f"line {node.lineno}: {node.func.id} called outside 'if ...{guard}'")
        for child in ast.iter_child_nodes(node):
            visit(child, guards)

    visit(tree, ())
    return bad


@pytest.mark.parametrize("path", TRT_SRCS, ids=lambda p: p.name)
def test_trt11_removed_names_only_on_10x_paths(api, path):
    src = path.read_text()
    tree = ast.parse(src)
    line_fn = _enclosing_functions(tree)
    bad = [f"{u} used in {line_fn.get(u.line, '<module>')}()"
           for u in collect_uses(src, api)
           if (u.owner, u.member) in TRT11_REMOVED
           and not line_fn.get(u.line, "").endswith("_v10")]
    assert not bad, "TensorRT-11-removed API outside a *_v10 function:\n" + "\n".join(bad)
    assert _calls_guarded(tree, "_v10", "< TRT11") == []
    assert _calls_guarded(tree, "_v11", ">= TRT11") == []


def test_version_guard_check_catches_an_unguarded_call():
    tree = ast.parse("def f(trt, c):\n    _apply_weak_precision_v10(trt, c, 'fp16')\n")
    assert _calls_guarded(tree, "_v10", "< TRT11") == [
        "line 2: _apply_weak_precision_v10 called outside 'if ...< TRT11'"]


def test_trt11_removed_list_matches_the_11_1_bindings(api):
    """The facts the list was corrected with (TensorRT release/11.1 pyCore.cpp)."""
    assert ("BuilderFlag", "DIRECT_IO") not in TRT11_REMOVED        # still in 11.1
    assert {("Builder", "platform_has_tf32"),
            ("BuilderFlag", "REJECT_EMPTY_ALGORITHMS")} <= TRT11_REMOVED   # gone in 11.x
    assert check_table(sorted(TRT11_REMOVED), api) == []   # every entry exists in 10.x
