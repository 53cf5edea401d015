"""``hsi-edge model convert-fp16``: writes a valid fp16 model, errors are one line."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx (the 'test' extra)")
pytest.importorskip("onnxconverter_common", reason="needs onnxconverter-common ('fp16' extra)")

from edge.cli import main  # noqa: E402
from mlp_models import write_mlp  # noqa: E402


def test_convert_fp16_command(tmp_path, capsys):
    write_mlp(tmp_path)
    out = tmp_path / "m16.onnx"
    rc = main(["model", "convert-fp16", str(tmp_path / "model.onnx"), "--out", str(out),
               "--keep-fp32", "head"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {out} (0.00 MB from 0.00 MB; 2 fp16 / 2 fp32 initializers, kept fp32: head)")
    types = {t.name: t.data_type for t in onnx.load(out).graph.initializer}
    assert types["W1"] == onnx.TensorProto.FLOAT16 and types["W2"] == onnx.TensorProto.FLOAT


def test_fp16_io_option_makes_io_half(tmp_path):
    write_mlp(tmp_path)
    out = tmp_path / "io16.onnx"
    assert main(["model", "convert-fp16", str(tmp_path / "model.onnx"), "--out", str(out),
                 "--fp16-io"]) == 0
    m = onnx.load(out)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_unknown_node_is_one_line_error(tmp_path, capsys):
    write_mlp(tmp_path)
    rc = main(["model", "convert-fp16", str(tmp_path / "model.onnx"), "--out",
               str(tmp_path / "o.onnx"), "--keep-fp32", "nope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err == ("hsi-edge model: error: --keep-fp32: no node named 'nope' in model.onnx; "
                   "node names are: 'stem', 'act', 'head'")


def test_model_without_action_prints_help(capsys):
    assert main(["model"]) == 2
    assert "convert-fp16" in capsys.readouterr().err


def test_missing_out_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["model", "convert-fp16", str(tmp_path / "m.onnx")])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err
