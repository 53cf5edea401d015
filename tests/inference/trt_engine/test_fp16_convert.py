"""fp32 -> fp16 ONNX conversion (onnxconverter-common) with named nodes kept in fp32."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="convert-fp16 tests need onnx (the 'test' extra)")
pytest.importorskip("onnxconverter_common",
                    reason="convert-fp16 tests need onnxconverter-common (the 'fp16' extra)")

from edge.errors import ConfigError, EngineError  # noqa: E402
from edge.inference import load_model_card, open_runtime  # noqa: E402
from edge.inference.fp16 import METADATA_KEY, convert_fp16  # noqa: E402
from edge.core.fileio import sha256_file  # noqa: E402
from edge.inference.modelcard import ModelCard  # noqa: E402
from mlp_models import mlp_reference, write_mlp  # noqa: E402


def _fp16_card(card: ModelCard, onnx_name: str) -> ModelCard:
    return ModelCard(**{**card.__dict__, "onnx": onnx_name, "sha256": None})


def test_converted_model_is_fp16_except_kept_layer_and_matches(tmp_path):
    card_path, params = write_mlp(tmp_path)
    src, dst = tmp_path / "model.onnx", tmp_path / "model.fp16.onnx"
    report = convert_fp16(src, dst, keep_fp32=["head"])

    m = onnx.load(dst)
    types = {t.name: t.data_type for t in m.graph.initializer}
    F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert types == {"W1": F16, "B1": F16, "W2": F32, "B2": F32}
    assert (report.fp16_initializers, report.fp32_initializers) == (2, 2)
    assert report.kept_nodes == ("head",)
    # keep_io_types: graph I/O stay float32, so the same card fits.
    assert m.graph.input[0].type.tensor_type.elem_type == F32
    assert m.graph.output[0].type.tensor_type.elem_type == F32
    stamp = json.loads({p.key: p.value for p in m.metadata_props}[METADATA_KEY])
    assert stamp == {"source_sha256": sha256_file(src), "keep_fp32": ["head"],
                     "keep_io_types": True}

    card = load_model_card(card_path)
    x = np.random.default_rng(3).random((1, 6, 8, 12), dtype=np.float32)
    ref = mlp_reference(params, x.astype(np.float64))
    with open_runtime("onnxruntime", card) as rt32, \
            open_runtime("onnxruntime", _fp16_card(card, dst.name)) as rt16:
        y32, y16 = rt32.run(x), rt16.run(x)
    assert y16.dtype == np.float32 and y16.shape == (1, 4, 8, 12)
    assert np.linalg.norm(y32 - ref) / np.linalg.norm(ref) < 1e-6
    # fp16 stem: inputs and weights rounded to 11-bit significands (rel. 2**-11 ≈ 4.9e-4
    # each) -> a few 1e-4 relative; 2e-3 is the stated tolerance.
    rel = np.linalg.norm(y16 - ref) / np.linalg.norm(ref)
    assert 1e-5 < rel < 2e-3, rel  # > 1e-5: it really computed in fp16


def test_without_keep_all_initializers_are_fp16(tmp_path):
    write_mlp(tmp_path)
    report = convert_fp16(tmp_path / "model.onnx", tmp_path / "all16.onnx")
    assert (report.fp16_initializers, report.fp32_initializers) == (4, 0)


def test_unknown_keep_name_lists_the_nodes(tmp_path):
    write_mlp(tmp_path)
    with pytest.raises(ConfigError, match=r"--keep-fp32: no node named 'classifier' in "
                                          r"model.onnx; node names are: 'stem', 'act', 'head'"):
        convert_fp16(tmp_path / "model.onnx", tmp_path / "o.onnx", keep_fp32=["classifier"])
    assert not (tmp_path / "o.onnx").exists()


def test_already_fp16_model_is_refused(tmp_path):
    write_mlp(tmp_path)
    convert_fp16(tmp_path / "model.onnx", tmp_path / "a.onnx", keep_io_types=False)
    with pytest.raises(EngineError, match=r"a.onnx: The model is already converted to float16"):
        convert_fp16(tmp_path / "a.onnx", tmp_path / "b.onnx")


def test_same_output_path_is_refused(tmp_path):
    write_mlp(tmp_path)
    with pytest.raises(ConfigError, match=r"--out: must differ from the input model"):
        convert_fp16(tmp_path / "model.onnx", tmp_path / "model.onnx")


def test_unreadable_model(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(EngineError, match=r"bad.onnx: cannot read ONNX model"):
        convert_fp16(tmp_path / "bad.onnx", tmp_path / "o.onnx")
    with pytest.raises(EngineError, match=r"missing.onnx: cannot read ONNX model"):
        convert_fp16(tmp_path / "missing.onnx", tmp_path / "o.onnx")


def test_clamped_initializer_values_are_counted_and_warned(tmp_path, caplog):
    """onnxconverter-common clamps out-of-range weights with only a Python warning; the
    report counts them and the log says so (issue 20, item 19)."""
    import logging

    from onnx_models import conv1x1_model
    weights = np.array([[1.0, 5e4, -2e4], [1e-9, -3e-8, 0.0]], np.float32)   # 4 out of range
    bias = np.array([0.5, 7e5], np.float32)                                   # 1 more
    src, dst = tmp_path / "m.onnx", tmp_path / "m.fp16.onnx"
    onnx.save(conv1x1_model(weights, bias, height=2, width=3), src)
    with caplog.at_level(logging.WARNING, logger="edge.inference.fp16"):
        report = convert_fp16(src, dst)
    assert report.clamped_values == 5
    assert "fp16: 5 initializer value(s) of m.onnx were outside float16's range" in caplog.text
    fine = tmp_path / "fine.onnx"
    onnx.save(conv1x1_model(np.ones((2, 3), np.float32), np.zeros(2, np.float32), height=2,
                            width=3), fine)
    assert convert_fp16(fine, tmp_path / "fine16.onnx").clamped_values == 0
