"""``hsi-edge run`` and its output folder, and checks made before any device moves
(issue 15 items 8, 9, 18, 21)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from edge.cli import main
from edge.errors import ConfigError, HsiEdgeError
from edge.pipeline.config import load_app_config
from edge.pipeline.job import run_job
from edge.pipeline.outputs import RunDir, check_free_space
from edge.pipeline.sinks import Sink
from test_run import _config


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def _run(cfg, out, *extra):
    return main(["run", "--config", str(cfg), "--frames", "2", "--out", str(out),
                 "--no-progress", *extra])


def test_a_used_out_dir_is_refused_without_overwrite(tmp_path, capsys):
    cfg, out = _config(tmp_path), tmp_path / "out"
    assert _run(cfg, out) == 0
    first = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert "metrics.json" in first and any(n.startswith("maps_") for n in first)
    stamp = (out / "metrics.json").read_bytes()
    assert _run(cfg, out) == 2
    assert re.search(r"--out: '.*out' already holds a run's outputs \(\d+ file\(s\), e\.g\. "
                     r".*\); use another folder or pass --overwrite", _err(capsys))
    assert (out / "metrics.json").read_bytes() == stamp  # nothing touched
    # --overwrite replaces only the run's own files; others stay
    (out / "notes.txt").write_text("mine")
    (out / "maps_009999.npz").write_bytes(b"stale map of an older, longer run")
    assert _run(cfg, out, "--overwrite") == 0
    assert not (out / "maps_009999.npz").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "metrics.json").read_text())["frames_processed"] == 2


def test_a_folder_another_run_writes_is_refused(tmp_path, capsys):
    cfg, out = _config(tmp_path), tmp_path / "busy"
    with RunDir(out):  # another run holds it (flock: per open file, so one process suffices)
        assert _run(cfg, out) == 2
        assert re.search(r"--out: '.*busy' is being written by another hsi-edge run "
                         r"\(pid \d+\); choose another folder", _err(capsys))
    assert _run(cfg, out) == 0  # released


def test_too_little_free_space_is_refused_before_the_run(tmp_path):
    with pytest.raises(ConfigError, match=r"--out: '.*' has [\d.]+ MB free; one frame's outputs "
                                          r"need about [\d.]+ MB"):
        check_free_space(tmp_path, 1 << 62)
    check_free_space(tmp_path, 1)


class _FullDisk(Sink):
    """Fails like a full disk on the second frame, after making metrics.json unwritable."""

    name = "full"

    def __init__(self, out):
        self.out, self.n = out, 0

    def write(self, frame):
        self.n += 1
        if self.n == 2:
            (self.out / "metrics.json").mkdir()
            raise HsiEdgeError("png sink: cannot write frame 1: No space left on device")


def test_the_sink_error_that_stopped_the_run_is_reported_not_the_metrics_one(tmp_path, caplog):
    out = tmp_path / "out"
    cfg = load_app_config(str(_config(tmp_path)))
    with pytest.raises(HsiEdgeError, match="No space left on device"):
        run_job(cfg, frames=5, out=out, extra_sinks=[_FullDisk(out)])
    assert "metrics.json: cannot write" in caplog.text


class _BreakMetricsAtClose(Sink):
    name = "breaker"

    def __init__(self, out):
        self.out = out

    def write(self, frame):
        pass

    def close(self):
        (self.out / "metrics.json").mkdir(exist_ok=True)


def test_metrics_that_cannot_be_written_leave_the_summary(tmp_path):
    out = tmp_path / "out"
    cfg = load_app_config(str(_config(tmp_path)))
    job = run_job(cfg, frames=2, out=out, extra_sinks=[_BreakMetricsAtClose(out)])
    assert job.metrics["frames_processed"] == 2  # the caller can still print it
    assert re.match(r".*metrics\.json: cannot write: ", job.metrics_error)


@pytest.mark.parametrize("section, value, message", [
    ({"model": {"card": "/nonexistent/card.yaml"}}, None, r"card.yaml: .*not found"),
    ({}, ["--backend", "cuda"], r"--backend cuda: .*"),
    ({}, ["--runtime", "tensorrt"], r"(?i)tensorrt"),
])
def test_checks_come_before_the_references_are_captured(tmp_path, capsys, section, value,
                                                          message):
    cfg = _config(tmp_path, calibration={"frames": 50}, **section)
    # progress on: a capture would draw its 'capturing' bar on stderr
    rc = main(["run", "--config", str(cfg), "--frames", "1", "--out", str(tmp_path / "o"),
               *(value or [])])
    assert rc == 2
    err = capsys.readouterr().err
    assert "capturing" not in err, err
    assert re.search(message, err.strip().splitlines()[-1]), err


@pytest.mark.parametrize("key, value, message", [
    ("processing", {"chromophores": ["HbO2", "Hb", "blood"]},
     r"processing\.chromophores\[2\]: expected one of 'HbO2', 'Hb', 'water', 'fat', "
     r"'melanin', got 'blood'"),
    ("processing", {"baseline": ["quadratic"]},
     r"processing\.baseline\[0\]: expected one of 'constant', 'linear', 'scatter'"),
    ("camera", {"fwhm_nm": 300}, r"camera\.fwhm_nm: expected a number in \[0\.1, 200\], got 300"),
])
def test_bad_processing_names_and_ranges_fail_at_load(tmp_path, key, value, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError, match=message):
        load_app_config(str(path))


def test_exponent_numbers_in_yaml_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  exposure_us: 8e3\npipeline:\n  read_timeout_s: 1e+01\n")
    cfg = load_app_config(str(path))
    assert cfg.camera.exposure_us == 8000.0 and cfg.pipeline.read_timeout_s == 10.0
    path.write_text("camera:\n  exposure_us: 1e+07\n")
    with pytest.raises(ConfigError, match=r"camera\.exposure_us: expected a number in "
                                          r"\[10, 1e\+06\], got 10000000\.0"):
        load_app_config(str(path))


def test_a_record_captured_with_defaults_fits_a_run_with_defaults(tmp_path):
    """Issue 15 item 22: calibrate capture recorded at 10,000 µs, run defaulted to 8,000."""
    from drivers.camera import DEFAULT_EXPOSURE_US

    rec = tmp_path / "rec"
    assert main(["calibrate", "capture", "--out", str(rec), "--rows", "24", "--cols", "32",
                 "--frames", "2"]) == 0
    cfg = _config(tmp_path, calibration={"record": str(rec)}, camera={"seed": 0})
    assert load_app_config(str(cfg)).camera.exposure_us == DEFAULT_EXPOSURE_US
    assert _run(cfg, tmp_path / "out") == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["frames_processed"] == 2
