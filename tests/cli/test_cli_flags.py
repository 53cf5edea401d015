"""Global options given after the subcommand (issue 15 item 20: ``--debug`` worked only before it)."""

from __future__ import annotations

import pytest

from edge.cli import _global_flags_first, main
from edge.errors import ConfigError


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.yaml"
    # without --debug: one line and exit 2
    assert main(["run", "--config", str(missing), "--out", str(tmp_path / "o")]) == 2
    # --debug after the subcommand: the error is raised (traceback), not an argparse refusal
    with pytest.raises(ConfigError, match="missing.yaml"):
        main(["run", "--config", str(missing), "--out", str(tmp_path / "o"), "--debug"])


@pytest.mark.parametrize("argv, expected", [
    (["run", "--debug"], ["--debug", "run"]),
    (["-v", "run", "--frames", "3"], ["-v", "run", "--frames", "3"]),
    (["run", "--verbose", "--", "--debug"], ["--verbose", "run", "--", "--debug"]),
])
def test_global_flags_move_before_the_subcommand(argv, expected):
    assert _global_flags_first(argv) == expected


def test_convert_fp16_refuses_a_missing_out_folder(tmp_path, capsys):
    pytest.importorskip("onnxconverter_common")
    from edge.models import demo_card_path
    from edge.inference import load_model_card

    src = load_model_card(demo_card_path("tivita")).onnx_path
    target = tmp_path / "nonexistent" / "m16.onnx"
    assert main(["model", "convert-fp16", str(src), "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hsi-edge model: error: --out: folder {str(target.parent)!r} does not "
                   f"exist (create it first)")
    assert not target.parent.exists()


def test_a_model_card_is_called_a_model_card(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  card: {tmp_path / 'nope.yaml'}\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "nope.yaml: model card not found" in capsys.readouterr().err
