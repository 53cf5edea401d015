"""``hsi-edge engine info|clear`` without TensorRT, the one-line BackendUnavailable of
``build``/``check`` and the runtime, and the TensorRT-free helpers of the runtime module."""

from __future__ import annotations

import importlib.util
import json

import pytest

from edge.cli import main
from edge.errors import BackendUnavailable, ConfigError, EngineError
from edge.inference import load_model_card, open_runtime
from edge.inference.engine_cache import EngineCache, EngineKey
from edge.core.fileio import sha256_file
from edge.inference.tensorrt_build import (TRT11, engine_key, profile_shapes, resolve_typing,
                                           trt_major)
from onnx_models import write_pixel_classifier

no_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                            reason="checks the message shown when TensorRT is NOT installed")
SHAPE = (1, 7, 8, 12)


def _key(model, **over):
    d = dict(model=model, onnx_sha256="a" * 64, trt_version="10.3.0.30", gpu_name="Orin",
             compute_capability="8.7", precision="fp16", typing="weak",
             shapes=(("input", SHAPE, SHAPE, SHAPE),))
    d.update(over)
    return EngineKey(**d)


@pytest.fixture
def populated(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    good, unverified, broken = _key("alpha"), _key("beta", precision="fp32"), _key("gamma")
    cache.get_or_build(good, lambda: b"A" * 2_000_000)
    cache.record_parity(good, True, {})
    cache.store(unverified, b"B" * 1000)
    cache.store(broken, b"C" * 1000)
    p = cache.path_for(broken)
    p.write_bytes(p.read_bytes()[:-10])
    return cache


def test_info_lists_engines_with_state(populated, capsys):
    assert main(["engine", "info", "--cache", str(populated.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"3 engine(s) in {populated.root}"
    alpha, beta, gamma = out[1:]
    assert alpha.startswith("alpha-") and " alpha  2.0 MB  TensorRT 10.3.0.30, Orin cc 8.7, " \
        "fp16/weak, built in " in alpha and alpha.endswith("  verified")
    assert beta.endswith("fp32/weak  unverified")
    assert gamma.endswith("INVALID (payload is 990 bytes, header says 1000 (truncated?); "
                          "will be rebuilt)")


def test_info_json(populated, capsys):
    assert main(["engine", "info", "--cache", str(populated.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["verified"], r["problem"] is None) for r in rows] == [
        ("alpha", True, True), ("beta", None, True), ("gamma", None, False)]
    assert rows[0]["header"]["key"]["gpu_name"] == "Orin"


def test_info_empty_cache(tmp_path, capsys):
    assert main(["engine", "info", "--cache", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == f"no engines in {tmp_path / 'none'}"


def test_clear_one_model_then_all(populated, capsys):
    assert main(["engine", "clear", "--cache", str(populated.root), "--model", "alpha"]) == 0
    assert capsys.readouterr().out.strip() == (f"removed 1 engine(s), 1 other file(s) from "
                                               f"{populated.root}")
    assert [e.model for e in populated.entries()] == ["beta", "gamma"]
    assert main(["engine", "clear", "--cache", str(populated.root)]) == 0
    assert "removed 2 engine(s)" in capsys.readouterr().out
    assert populated.entries() == []


def test_cache_dir_from_environment(populated, monkeypatch, capsys):
    monkeypatch.setenv("HSI_EDGE_ENGINE_CACHE", str(populated.root))
    assert main(["engine", "info"]) == 0
    assert capsys.readouterr().out.startswith("3 engine(s)")


def test_engine_without_action_prints_help(capsys):
    assert main(["engine"]) == 2
    assert "build" in capsys.readouterr().err


@no_trt
@pytest.mark.parametrize("action", ["build", "check"])
def test_build_and_check_without_tensorrt_say_what_to_install(tmp_path, capsys, action):
    card, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",))
    rc = main(["engine", action, str(card), "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("hsi-edge engine: error: the tensorrt runtime needs the 'tensorrt' "
                          "Python package")
    assert "pip install 'hsi-edge[tensorrt]'" in err and "on Jetson it comes with JetPack" in err


@no_trt
def test_runtime_without_tensorrt_raises_backend_unavailable(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",))[0])
    rt = open_runtime("tensorrt", card, cache_dir=tmp_path / "c")  # construction is free
    with pytest.raises(BackendUnavailable, match=r"needs the 'tensorrt' Python package .*"
                                                 r"on Jetson it comes with JetPack"):
        rt.load()
    # auto never picks TensorRT without it, even for a chain on the GPU.
    assert open_runtime("auto", card, gpu_chain=True).name == "onnxruntime"


def test_runtime_rejects_bad_precision(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",))[0])
    with pytest.raises(ConfigError, match=r"precision: expected one of auto, fp16, fp32, got 'int8'"):
        open_runtime("tensorrt", card, precision="int8")


def test_trt_version_helpers():
    assert trt_major("10.3.0.30") == 10 and trt_major("11.4.1") == 11
    with pytest.raises(EngineError, match=r"cannot parse 'dev'"):
        trt_major("dev")
    assert resolve_typing(10, None) == "weak" and resolve_typing(10, True) == "strong"
    assert resolve_typing(TRT11, None) == "strong" and resolve_typing(12, True) == "strong"
    with pytest.raises(ConfigError, match=r"TensorRT 11.x builds only strongly typed"):
        resolve_typing(11, False)


def test_engine_key_from_card(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, wavelengths=[500, 600, 700],
                                                  maps=("sto2",))[0])
    assert profile_shapes(card) == (("input", (1, 4, 8, 12), (1, 4, 8, 12), (1, 4, 8, 12)),)
    key = engine_key(card, onnx_path=card.onnx_path, trt_version="10.3.0.30",
                     gpu=("Orin", "8.7"), precision="fp16", typing="weak")
    assert key.onnx_sha256 == sha256_file(card.onnx_path) and key.model == card.name
    (tmp_path / "model.onnx").write_bytes(b"changed")  # a changed model is a new key
    assert engine_key(card, onnx_path=card.onnx_path, trt_version="10.3.0.30",
                      gpu=("Orin", "8.7"), precision="fp16", typing="weak") != key


@no_trt
def test_a_stray_tensorrt_folder_is_not_taken_for_tensorrt(tmp_path, monkeypatch):
    """An empty ``tensorrt/`` directory on sys.path imports as a namespace package (as a
    stub-only install or a test folder would); it must not pass for TensorRT."""
    import sys

    from edge.inference.tensorrt_build import import_tensorrt

    (tmp_path / "tensorrt").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    try:
        with pytest.raises(BackendUnavailable, match=r"'import tensorrt' found .*tensorrt.*, "
                                                     r"which is not TensorRT"):
            import_tensorrt()
    finally:
        sys.modules.pop("tensorrt", None)
