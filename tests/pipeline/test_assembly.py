"""The one assembly of the frame path (edge.pipeline.assembly) used by ``hsi-edge run`` and the
latency session: the calibration record is loaded once per run, a float reflectance recording
gets no nominal flat field, and both users build the same stages (calibration mark included)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from drivers.simulated import SimulatedCamera
from edge.core.config import from_mapping
from edge.pipeline.app import run_job
from edge.pipeline.assembly import assemble_chain
from edge.pipeline.calibration_policy import CalibrationGate
from edge.pipeline.config import AppConfig
from sim_records import count_record_loads, save_simulated_record

PRESET, ROWS, COLS = "snapshot16", 12, 16


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A record without field QC (status ``unchecked``: runs calibrated)."""
    return save_simulated_record(tmp_path_factory.mktemp("rec") / "rec",
                                 SimulatedCamera(PRESET, rows=ROWS, cols=COLS, seed=0,
                                                 noise="exact"))


def _cfg(record=None, **cal):
    calibration = {} if record is None else {"record": str(record),
                                             "history": str(record.parent / "history"), **cal}
    return from_mapping(AppConfig, {
        "camera": {"preset": PRESET, "rows": ROWS, "cols": COLS, "seed": 0,
                   "exposure_us": 8000.0},
        "calibration": calibration, "model": {"card": "none"}, "processing": {"backend": "numpy"},
        "sinks": {"png_every": 0, "npz_every": 0}})


def test_record_is_loaded_once_per_run(record, tmp_path, monkeypatch):
    loads = count_record_loads(monkeypatch)
    run_job(_cfg(record), frames=2, out=tmp_path / "out")
    assert loads == [str(record)]
    cal = json.loads((tmp_path / "out" / "metrics.json").read_text())["calibration"]
    assert cal["state"] == "unchecked" and cal["flat_field_applied"] is True


def test_chain_has_the_job_stages_and_the_records_flat_field(record):
    with contextlib.ExitStack() as stack:
        chain = assemble_chain(_cfg(record), stack)
        assert [s.name for s in chain.stages] == ["chain"]          # valid record: no mark
        assert chain.flat_field_applied and chain.runtime is None
        assert chain.calibration_metrics()["flat_field_applied"] is True
        seen = []
        with contextlib.ExitStack() as other:
            assemble_chain(_cfg(record), other, on_camera=lambda cam: seen.append(cam.shape))
        assert seen == [(ROWS, COLS, 16)]


class _FloatCamera:
    """A camera that delivers float32 reflectance (what the gate reads of it)."""

    dtype = np.dtype(np.float32)
    shape = (4, 5, 3)
    bit_depth = 12
    exposure_us = 1000.0


def test_float_reflectance_gets_no_nominal_flat_field():
    gate = CalibrationGate({"state": "expired"}, "uncalibrated", False, False, "UNCALIBRATED",
                           record="the record")
    asked = []
    ff, applied = gate.flatfield(_FloatCamera(), lambda rec: asked.append(rec))
    assert ff is None and applied is False and asked == ["the record"]
    assert gate.metrics(flat_field_applied=applied)["flat_field_applied"] is False


def test_raw_counts_under_uncalibrated_get_the_nominal_flat_field():
    cam = SimulatedCamera(PRESET, rows=ROWS, cols=COLS, seed=0, noise="exact")
    gate = CalibrationGate({"state": "expired"}, "uncalibrated", False, False, "UNCALIBRATED")
    ff, applied = gate.flatfield(cam, lambda rec: pytest.fail("the record must not apply"))
    assert applied is False and ff is not None
    assert gate.metrics(flat_field_applied=applied)["flat_field_applied"] is False


def test_run_job_hands_the_opened_camera_to_on_camera(tmp_path):
    seen = []
    run_job(_cfg(), frames=1, out=tmp_path / "out",
            on_camera=lambda cam: seen.append((cam.serial, cam.fwhm_nm, cam.shape)))
    assert len(seen) == 1
    serial, fwhm, shape = seen[0]
    assert fwhm is not None and shape[:2] == (ROWS, COLS)
