"""Bad input and a hostile environment give one line on stderr, never a traceback or lost
data: output folders that are files or unwritable, corrupt records, interrupted runs."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import yaml

from edge.cli import main, one_line
from test_run import COLS, ROWS, _config


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"hsi-edge {command}: error: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A small simulated raw recording with its calibration record."""
    out = tmp_path_factory.mktemp("rec") / "rec"
    assert main(["simulate", "--frames", "2", "--out", str(out), "--rows", str(ROWS),
                 "--cols", str(COLS), "--calibration-frames", "2", "--no-preview"]) == 0
    return out


def test_out_that_is_a_file_fails_before_the_camera_moves(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep me")
    rc = main(["run", "--config", str(_config(tmp_path)), "--frames", "1",
               "--out", str(tmp_path / "afile"), "--no-progress"])
    assert rc == 2
    assert re.search(r"--out: '.*afile' exists and is not a directory",
                     _one_line_error(capsys, "run"))
    assert (tmp_path / "afile").read_text() == "keep me"
    rc = main(["run", "--config", str(_config(tmp_path)), "--frames", "1",
               "--out", str(tmp_path / "afile" / "sub"), "--no-progress"])
    assert rc == 2
    assert re.search(r"--out: cannot write to '.*afile/sub': Not a directory",
                     _one_line_error(capsys, "run"))


def test_config_that_is_a_directory(tmp_path, capsys):
    rc = main(["run", "--config", str(tmp_path), "--frames", "1", "--out",
               str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    assert "cannot read config file" in _one_line_error(capsys, "run")


def test_metrics_json_is_strict_json(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--config", str(_config(tmp_path)), "--frames", "2", "--out", str(out),
                 "--no-progress"]) == 0
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text, parse_constant=lambda t: pytest.fail(f"not JSON: {t}"))
    assert m["frames_processed"] == 2


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(exposure_us="abc"), r"exposure_us: expected a number, got 'abc'"),
    (lambda m: m.update(shape=5), r"shape: expected \[rows, cols, bands\].*got 5"),
    (lambda m: m.update(files=3), r"'files': expected a mapping of file name to sha256"),
    (lambda m: m.update(rho_ref=2.0), r"rho_ref: expected the white tile's reflectance in \(0, 1\]"),
    (lambda m: m.update(bit_depth=40), r"bit_depth: expected an integer 1-16, got 40"),
    (lambda m: m.update(gain=0), r"gain: expected a number > 0, got 0"),
])
def test_corrupt_record_metadata_is_one_line(tmp_path, capsys, recording, edit, message):
    import shutil
    rec = tmp_path / "cal"
    shutil.copytree(recording / "calibration", rec)
    meta = yaml.safe_load((rec / "record.yaml").read_text())
    edit(meta)
    (rec / "record.yaml").write_text(yaml.safe_dump(meta))
    assert main(["calibrate", "info", str(rec)]) == 2
    assert re.search(message, _one_line_error(capsys, "calibrate"))


def test_unparsable_record_yaml_is_one_line(tmp_path, capsys, recording):
    import shutil
    rec = tmp_path / "cal"
    shutil.copytree(recording / "calibration", rec)
    with open(rec / "record.yaml", "a") as fh:
        fh.write("garbage: [\n")
    assert main(["calibrate", "info", str(rec)]) == 2
    assert re.search(r"record.yaml: cannot read record metadata: not valid YAML at line \d+",
                     _one_line_error(capsys, "calibrate"))


def test_calibrate_capture_checks_out_before_capturing(tmp_path, capsys, recording):
    args = ["calibrate", "capture", "--frames", "2", "--rows", "4", "--cols", "5"]
    assert main(args + ["--out", str(recording / "calibration")]) == 2
    captured = capsys.readouterr()
    assert "capturing" not in captured.err  # nothing was captured in vain
    assert re.search(r"already holds a calibration record; .*pass --overwrite",
                     captured.err)
    (tmp_path / "f").write_text("x")
    assert main(args + ["--out", str(tmp_path / "f" / "cal")]) == 2
    assert re.search(r"f/cal: cannot write calibration record: (File exists|Not a directory)",
                     _one_line_error(capsys, "calibrate"))
    for bad in ("2", "0", "nan"):
        assert main(args + ["--out", str(tmp_path / "c"), "--rho-ref", bad]) == 2
        assert "--rho-ref: expected the white tile's reflectance in (0, 1]" in \
            _one_line_error(capsys, "calibrate")
    assert not (tmp_path / "c").exists()


def test_simulate_overwrite_replaces_previews_and_names_them_like_frames(tmp_path):
    out = tmp_path / "sim"
    base = ["simulate", "--out", str(out), "--rows", "6", "--cols", "7",
            "--calibration-frames", "2"]
    assert main(base + ["--frames", "3"]) == 0
    assert sorted(p.name for p in out.glob("frame_*")) == [
        f"frame_{i:06d}.{ext}" for i in range(3) for ext in ("npz", "png")]
    assert main(base + ["--frames", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("frame_*")) == ["frame_000000.npz",
                                                            "frame_000000.png"]
    # the replaced calibration record is kept, not lost
    assert len(list(out.glob("calibration.backup-*"))) == 1


def test_simulate_unwritable_out(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["simulate", "--frames", "1", "--out", str(tmp_path / "f" / "s")]) == 2
    assert "--out: cannot write to" in _one_line_error(capsys, "simulate")


def test_bench_json_path_checked_before_measuring(tmp_path, capsys):
    assert main(["bench", "--json", str(tmp_path), "--model", "none", "--repeat", "1"]) == 2
    assert "--json: '" in _one_line_error(capsys, "bench")
    assert main(["bench", "--json", str(tmp_path / "no" / "x.json"), "--model", "none"]) == 2
    assert "does not exist" in _one_line_error(capsys, "bench")


def test_os_errors_are_one_line(monkeypatch, capsys):
    import edge.cli.calibrate as cal

    def full(args):
        raise OSError(28, "No space left on device", "/data/rec/frame_000001.npz")

    monkeypatch.setattr(cal, "_info", full)
    assert main(["calibrate", "info", "x"]) == 2
    assert _one_line_error(capsys, "calibrate") == (
        "hsi-edge calibrate: error: /data/rec/frame_000001.npz: No space left on device")


def test_one_line():
    assert one_line("a: b\n  in line 3\n\n   ^\n") == "a: b; in line 3; ^"


def test_reflectance_replay_says_the_record_is_not_applied(tmp_path, recording, caplog):
    from drivers.formats.npyseq import read_npz_frame, write_npz_frame

    rec = tmp_path / "refl"
    rec.mkdir()
    cube, wl, meta, truth = read_npz_frame(recording / "frame_000000.npz")
    write_npz_frame(rec / "frame_000000.npz", truth["reflectance"].astype(np.float32), wl,
                    meta, truth)
    cfg = _config(tmp_path, camera={"source": "replay", "replay_path": str(rec)},
                  calibration={"record": str(recording / "calibration")})
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--config", str(cfg), "--frames", "1", "--out",
                     str(tmp_path / "out"), "--no-progress"]) == 0
    assert "is not applied: the recording holds calibrated reflectance" in caplog.text


def test_bench_times_the_chain_without_the_quality_step_and_the_step_apart():
    """The floor counts the chain's bytes only; with the quality step on by default the chain
    was compared with a floor that did not include its work."""
    from edge.cli.bench import measure

    f = measure("snapshot25", "numpy", repeat=1, model="none")
    assert f["backend"] == "numpy" and f["shape"] == [217, 409, 25]
    assert f["chain_ms"] > 0 and f["chain_quality_ms"] > 0
    assert f["quality_ms"] == pytest.approx(f["chain_quality_ms"] - f["chain_ms"])
    assert f["chain_vs_floor"] == pytest.approx(f["chain_ms"] / f["floor_ms"])
    # the snapshot camera's band registration is timed apart from the chain (its own figure)
    assert f["register_ms"] > 0
    assert f["register_vs_copy"] == pytest.approx(
        f["register_ms"] / (2 * 217 * 409 * 25 * 4 / f["copy_GBps"] / 1e6))
