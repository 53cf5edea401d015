"""TensorRT build/load logic on the CPU, against a hand-written fake ``tensorrt`` (fake_trt.py).

What the fake checks is the API contract as documented (see fake_trt's docstring): creation
flags per version, FP16 only on 10.x weak builds, TF32 off for fp32, profiles only for
dynamic inputs and checked against the card, timing cache fallback, progress monitor and
logger subclassing, set_input_shape only for dynamic inputs.  Real kernels and numbers are
tested in tests/tensorrt_real on a GPU.
"""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from edge.errors import EngineError
from edge.inference import load_model_card
from edge.inference.tensorrt_build import (OPT_LEVEL, _logger, _make_progress,
                                           build_serialized_engine, build_settings)
from edge.inference.tensorrt_runtime import TensorRTRuntime
from fake_trt import make_fake_trt
from onnx_models import write_pixel_classifier

SHAPE = (1, 4, 8, 12)
SHAPES = (("input", SHAPE, SHAPE, SHAPE),)


def _build(trt, tmp_path, **kw):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    args = dict(shapes=SHAPES, precision="fp16", typing="weak", workspace_bytes=64 << 20)
    args.update(kw)
    return build_serialized_engine(trt, onnx, **args)


def test_10x_weak_fp16_sets_fp16_flag_and_no_profile_for_static_input(tmp_path):
    trt = make_fake_trt(10, inputs={"input": (SHAPE, "FLOAT")})
    plan, timing = _build(trt, tmp_path)
    cfg = trt.last_config
    assert plan == b"PLAN" and timing == b"TIMING:+new"
    assert trt.last_network.flags == 0  # EXPLICIT_BATCH is deprecated/ignored in 10.x
    assert cfg.flags == {"TF32", "FP16"}
    assert cfg.pools == {"WORKSPACE": 64 << 20}
    assert cfg.builder_optimization_level == OPT_LEVEL == 3
    assert cfg.profiles == []  # static input: a profile is optional, none is added


def test_10x_strongly_typed_uses_the_creation_flag_and_no_fp16_flag(tmp_path):
    trt = make_fake_trt(10, layer_dtypes=("FLOAT", "HALF"))
    _build(trt, tmp_path, typing="strong")
    assert trt.last_network.flags == 1 << 1  # 1 << int(STRONGLY_TYPED)
    assert "FP16" not in trt.last_config.flags


def test_11x_is_strong_by_default_and_never_touches_the_removed_fp16_flag(tmp_path):
    trt = make_fake_trt(11, layer_dtypes=("HALF",))
    assert not hasattr(trt.BuilderFlag, "FP16")
    _build(trt, tmp_path, typing="strong")
    assert trt.last_network.flags == 0
    assert trt.last_config.flags == {"TF32"}


def test_fp32_build_turns_tf32_off(tmp_path):
    trt = make_fake_trt(10)
    _build(trt, tmp_path, precision="fp32")
    assert trt.last_config.flags == set()
    assert build_settings("fp32", workspace_mib=64)["tf32"] is False
    assert build_settings("fp16", workspace_mib=64)["tf32"] is True


def test_dynamic_batch_gets_the_card_profile(tmp_path):
    trt = make_fake_trt(10, inputs={"input": ((-1, 4, 8, 12), "FLOAT")})
    _build(trt, tmp_path)
    (profile,) = trt.last_config.profiles
    assert profile.shapes == {"input": (SHAPE, SHAPE, SHAPE)}


@pytest.mark.parametrize("inputs,match", [
    ({"input": ((1, 4, 8, 16), "FLOAT")},
     r"input 'input' has static shape \(1, 4, 8, 16\) in the model but the card gives "
     r"\(1, 4, 8, 12\)"),
    ({"x": (SHAPE, "FLOAT")}, r"the model's inputs are \['x'\] but the model card describes "
                              r"\['input'\]"),
    ({"input": ((1, 4, 96), "FLOAT")}, r"input 'input' has shape \(1, 4, 96\) in the model"),
])
def test_card_and_network_inputs_must_agree(tmp_path, inputs, match):
    with pytest.raises(EngineError, match=match):
        _build(make_fake_trt(10, inputs=inputs), tmp_path)


def test_parse_errors_are_reported(tmp_path):
    trt = make_fake_trt(10, parse_errors=("bad node Conv_0", "second"))
    with pytest.raises(EngineError, match=r"cannot parse the ONNX model: bad node Conv_0 "
                                          r"\(\+1 more\)"):
        _build(trt, tmp_path)
    assert ("parse", str(tmp_path / "m.onnx")) in trt.events  # path: external weights


def test_strong_typing_precision_must_match_the_graph(tmp_path):
    with pytest.raises(EngineError, match=r"graph, which is fp32, but precision='fp16'.*"
                                          r"convert-fp16"):
        _build(make_fake_trt(11), tmp_path, typing="strong")


@pytest.mark.parametrize("blob,expect,warned", [
    (b"", b"TIMING:+new", None),
    (b"old", b"TIMING:old+new", None),
    (b"corrupt", b"TIMING:+new", "unreadable"),
    (b"foreign:x", b"TIMING:+new", "another device"),
])
def test_timing_cache_is_reused_or_replaced(tmp_path, caplog, blob, expect, warned):
    trt = make_fake_trt(10)
    with caplog.at_level(logging.WARNING):
        _, timing = _build(trt, tmp_path, timing_cache=blob)
    assert timing == expect
    assert trt.last_config.timing is not None
    if warned:
        assert warned in caplog.text


def test_progress_monitor_steps_continue_and_failed_build_closes_bars(tmp_path):
    trt = make_fake_trt(10, build_ok=False)
    with pytest.raises(EngineError, match=r"failed to build the engine"):
        _build(trt, tmp_path)
    assert ("steps", [True, True]) in trt.events  # True: do not cancel the build
    mon = trt.last_config.progress_monitor
    assert mon.bars == {}  # the unfinished phases' bars were closed


def test_progress_monitor_ignores_unknown_phases():
    mon = _make_progress(make_fake_trt(10), file=io.StringIO())
    assert mon.step_complete("never started", 5) is True
    mon.phase_finish("never started")
    mon.phase_start("A", None, 2)
    mon.step_complete("A", 1)
    assert mon.bars["A"].n == 2  # step is 0-based: step 1 done means 2 steps
    mon.close()
    assert mon.bars == {}


def test_one_logger_per_process(tmp_path):
    trt = make_fake_trt(10)
    _build(trt, tmp_path)
    _build(trt, tmp_path)
    loggers = {id(lg) for ev, lg in (e for e in trt.events if e[0] == "logger")}
    assert loggers == {id(_logger(trt))}


def _runtime(tmp_path, trt):
    card = load_model_card(write_pixel_classifier(tmp_path, wavelengths=[500, 600, 700],
                                                  maps=("sto2",))[0])
    rt = TensorRTRuntime(card, cache_dir=tmp_path / "c")
    rt._deserialize(trt, b"PLAN")
    return rt


def test_static_engine_io_is_enumerated_without_setting_shapes(tmp_path):
    trt = make_fake_trt(10, outputs={"logits": ((1, 3, 8, 12), "HALF")})
    rt = _runtime(tmp_path, trt)
    assert [(t.name, t.shape, t.dtype) for t in rt.inputs()] == [("input", SHAPE, "float32")]
    assert [(t.name, t.shape, t.dtype) for t in rt.outputs()] == [
        ("logits", (1, 3, 8, 12), "float16")]
    assert not [e for e in trt.events if e[0] == "set_input_shape"]


def test_dynamic_engine_input_gets_the_card_shape(tmp_path):
    trt = make_fake_trt(10, inputs={"input": ((-1, 4, 8, 12), "FLOAT")},
                        outputs={"logits": ((-1, 3, 8, 12), "FLOAT")})
    rt = _runtime(tmp_path, trt)
    assert ("set_input_shape", "input", SHAPE) in trt.events
    assert rt.outputs()[0].shape == (1, 3, 8, 12)


def test_engine_tensor_without_numpy_type_is_an_engine_error(tmp_path):
    trt = make_fake_trt(10, outputs={"logits": ((1, 3, 8, 12), "BF16")})
    with pytest.raises(EngineError, match=r"engine tensor 'logits' has TensorRT type "
                                          r"DataType.BF16, which has no numpy equivalent"):
        _runtime(tmp_path, trt)


def test_data_dependent_output_shape_is_refused(tmp_path):
    trt = make_fake_trt(10, outputs={"logits": ((1, -1, 8, 12), "FLOAT")})
    with pytest.raises(EngineError, match=r"tensor 'logits' has unresolved shape "
                                          r"\(1, -1, 8, 12\)"):
        _runtime(tmp_path, trt)


def test_undeserializable_plan_says_how_to_recover(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",))[0])
    from edge.inference.tensorrt_build import engine_key
    rt = TensorRTRuntime(card, cache_dir=tmp_path / "c")
    rt.key = engine_key(card, onnx_path=card.onnx_path, trt_version="10.3.0.30",
                        gpu=("Orin", "8.7"), precision="fp16", typing="weak")
    with pytest.raises(EngineError, match=r"could not deserialize .*engine clear"):
        rt._deserialize(make_fake_trt(10), b"garbage")


# ---- versions and plugins (issue 20, items 11, 12, 18) ---------------------------------------
@pytest.mark.parametrize("version", ["8.6.1.6", "10.0.1", "10.2.0.19"])
def test_tensorrt_below_10_3_is_refused_in_one_line(monkeypatch, version):
    from edge.errors import BackendUnavailable
    from edge.inference.tensorrt_build import import_tensorrt
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(10, version=version))
    with pytest.raises(BackendUnavailable, match=rf"needs TensorRT >= 10\.3, found "
                                                 rf"{re.escape(version)} \(JetPack 6\.1\+"):
        import_tensorrt()


@pytest.mark.parametrize("version", ["10.3.0.30", "10.13.2.6", "11.1.0.4"])
def test_supported_tensorrt_registers_plugins_once_per_process(monkeypatch, version):
    from edge.inference.tensorrt_build import import_tensorrt
    trt = make_fake_trt(int(version.split(".")[0]), version=version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    assert import_tensorrt() is trt
    assert import_tensorrt() is trt
    assert [e for e in trt.events if e[0] == "init_plugins"] == [("init_plugins", "")]


def test_profile_on_a_mismatched_static_input_raises_what_the_binding_raises():
    """The real binding raises RuntimeError (TensorRT 10.3 pyCore.cpp), not ValueError."""
    trt = make_fake_trt(10)
    profile = trt.Builder(_logger(trt)).create_optimization_profile()
    with pytest.raises(RuntimeError, match="Shape provided for min is inconsistent"):
        profile.set_shape("input", (1, 4, 8, 16), (1, 4, 8, 16), (1, 4, 8, 16))


def test_weak_fp32_build_of_an_fp16_graph_is_refused(tmp_path):
    """Keyed and gated as fp32 while running the graph's fp16 layers: refused (item 17)."""
    trt = make_fake_trt(10, layer_dtypes=("FLOAT", "HALF"))
    with pytest.raises(EngineError, match=r"m\.onnx: the ONNX graph is fp16 but "
                                          r"precision='fp32' was requested"):
        _build(trt, tmp_path, precision="fp32", typing="weak")
    plan, _ = _build(trt, tmp_path, precision="fp16", typing="weak")   # fp16 is what it is
    assert plan == b"PLAN"
