"""processing.sto2_table: validated when the config loads, reaches every backend's plan, is
recorded in metrics.json, and a bad value is one line from ``hsi-edge run``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from drivers.simulated import SimulatedCamera
from edge.cli import main
from edge.errors import CalibrationError, ConfigError
from edge.pipeline.backend_factory import make_backend
from edge.pipeline.config import AppConfig, ProcessingSettings, load_app_config
from edge.processing.sto2 import Sto2Calibration


def _load(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"processing": {"sto2_table": value}}))
    return load_app_config(str(path)).processing.sto2_table


@pytest.mark.parametrize("value", [None, "human", "site-2_v3", "tables/field.csv",
                                   "/abs/path/T.CSV", "plain.csv"])
def test_accepted_values(tmp_path, value):
    assert _load(tmp_path, value) == value
    assert ProcessingSettings().sto2_table is None


@pytest.mark.parametrize("value, message", [
    (3, r"c\.yaml: processing\.sto2_table: expected a string, got 3$"),
    (["human"], r"processing\.sto2_table: expected a string, got \['human'\]$"),
    ("tables/human", r"c\.yaml: processing: sto2_table: expected null, a shipped variant "
                     r"name \(letters, digits, '_', '-'; e.g\. human\) or a path ending in "
                     r"\.csv, got 'tables/human'$"),
    ("human.txt", r"processing: sto2_table: .* got 'human\.txt'$"),
    ("", r"processing: sto2_table: .* got ''$"),
    (" human", r"processing: sto2_table: .* got ' human'$"),
])
def test_refused_values(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, value)


def _cfg(**processing):
    return dataclasses.replace(AppConfig(), processing=ProcessingSettings(**processing))


def test_every_backend_gets_the_chosen_table(tmp_path):
    cam = SimulatedCamera("snapshot25", rows=4, cols=5)
    base = Sto2Calibration.for_grid(cam.wavelengths, fwhm_nm=cam.fwhm_nm)
    path = tmp_path / "field.csv"
    base.replace(table_y=base.table_y * np.float32(0.5)).to_csv(path)
    be = make_backend("numpy", cam, None, None, _cfg(sto2_table=str(path)))
    assert be.plan.calibration.source == str(path.resolve())
    np.testing.assert_array_equal(be.plan.calibration.table_y,
                                  base.table_y * np.float32(0.5))
    assert make_backend("numpy", cam, None, None, _cfg()).plan.calibration is base
    with pytest.raises(CalibrationError, match=r"^processing\.sto2_table: no shipped table "
                       r"'humna' for this grid \(25 bands, 665-960 nm\)"):
        make_backend("numpy", cam, None, None, _cfg(sto2_table="humna"))


ROWS, COLS = 12, 16


def _run_config(tmp_path, sto2_table):
    cfg = {"camera": {"preset": "snapshot16", "rows": ROWS, "cols": COLS, "seed": 3},
           "calibration": {"frames": 2}, "model": {"card": "none"},
           "processing": {"backend": "numpy", "sto2_table": sto2_table},
           "sinks": {"png_every": 0, "npz_every": 0}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("value, message", [
    ("humna", r"processing\.sto2_table: no shipped table 'humna' for this grid \(16 bands, "
              r"460-600 nm\); shipped: "),
    ("missing.csv", r"processing\.sto2_table: missing\.csv: table file not found$"),
    ("a/b", r"processing: sto2_table: expected null, a shipped variant name"),
])
def test_run_with_a_bad_table_is_one_line(tmp_path, capsys, value, message):
    rc = main(["run", "--config", str(_run_config(tmp_path, value)), "--frames", "1",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("hsi-edge run: error: ") and len(err.splitlines()) == 1, err
    assert pytest.importorskip("re").search(message, err), err


def test_run_records_the_table_in_metrics(tmp_path):
    cam = SimulatedCamera("snapshot16", rows=ROWS, cols=COLS)
    path = tmp_path / "site.csv"
    Sto2Calibration.for_grid(cam.wavelengths, fwhm_nm=cam.fwhm_nm).to_csv(path)
    out = tmp_path / "out"
    assert main(["run", "--config", str(_run_config(tmp_path, str(path))), "--frames", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["sto2_table"] == str(path.resolve())
    out2 = tmp_path / "out2"
    assert main(["run", "--config", str(_run_config(tmp_path, None)), "--frames", "1",
                 "--out", str(out2), "--no-progress"]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["sto2_table"] == \
        "shipped sto2_snapshot16.csv"
