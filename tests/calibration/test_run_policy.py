"""``hsi-edge run`` reacts to its calibration record's verdict and expiry (issue 12): one test
per policy, for expired and failed records, a quick check above its limit, and an old record
without field QC.  Real run_job on the simulated camera (snapshot16, 24x32, no model)."""

from __future__ import annotations

import datetime as _dt
import json
import shutil

import numpy as np
import pytest

from calibration.qc import read_qc, save_record
from calibration.records import CalibrationRecord
from calibration.status import quick_check, record_status
from calibration.placers import ScriptedPlacer
from drivers.sim.faults_optical import OpticalFaults
from edge.core.config import from_mapping
from edge.errors import CalibrationError
from edge.pipeline.app import run_job
from edge.pipeline.config import AppConfig
from field_bench import COLS, PRESET, ROWS, TABLE, calibrate, camera
from sim_records import save_simulated_record


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A valid field record, and expired and failed copies of it (re-signed QC)."""
    base = tmp_path_factory.mktemp("policy")
    result = calibrate(camera(0), base / "valid", base / "history")
    assert result.qc["verdict"] == "PASS"
    rec = CalibrationRecord.load(base / "valid")
    qc = read_qc(rec)
    past = (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(hours=1)).isoformat()
    save_record(rec, base / "expired", {**qc, "valid_until": past})
    failed = dict(qc, verdict="FAIL", checks=[dict(qc["checks"][0], verdict="FAIL")])
    save_record(CalibrationRecord.load(base / "valid"), base / "failed", failed)
    return base


def _run(tmp_path, record, **cal):
    cfg = from_mapping(AppConfig, {
        "camera": {"preset": PRESET, "rows": ROWS, "cols": COLS, "seed": 0},
        "calibration": {"record": str(record), "history": str(record.parent / "history"),
                        **cal},
        "model": {"card": "none"}, "sinks": {"png_every": 1, "npz_every": 1}})
    out = tmp_path / "out"
    run_job(cfg, frames=2, out=out)
    metrics = json.loads((out / "metrics.json").read_text())
    maps = np.load(out / "maps_000000.npz")
    return metrics["calibration"], maps, out


def test_valid_record_runs_unmarked(signed, tmp_path):
    cal, maps, out = _run(tmp_path, signed / "valid")
    assert cal["state"] == "valid" and cal["outputs_marked"] is None
    assert "sto2" in maps.files and "calibration_mark" not in maps.files
    assert np.isfinite(maps["sto2"]).any()


def test_expired_warn_marks_every_output(signed, tmp_path):
    cal, maps, out = _run(tmp_path, signed / "expired")  # warn is the default
    assert cal["state"] == "expired" and cal["policy"] == "warn"
    assert cal["outputs_marked"] == "EXPIRED CALIBRATION" and cal["flat_field_applied"]
    assert str(maps["calibration_mark"]) == "EXPIRED CALIBRATION"
    assert "sto2" in maps.files
    # the StO2 PNG carries the red banner
    from PIL import Image
    png = np.asarray(Image.open(out / "sto2_000000.png").convert("RGB"))
    assert tuple(png[5, 1]) == (200, 0, 0)


def test_expired_refuse_stops_before_the_run(signed, tmp_path):
    with pytest.raises(CalibrationError, match=r"expired: the calibration expired at .*; "
                                               r"expiry_policy is refuse: run `hsi-edge "
                                               r"calibrate field`"):
        _run(tmp_path, signed / "expired", expiry_policy="refuse")
    assert not list((tmp_path / "out").glob("maps_*.npz"))


def test_expired_uncalibrated_withholds_quantitative_maps(signed, tmp_path):
    cal, maps, _ = _run(tmp_path, signed / "expired", expiry_policy="uncalibrated")
    assert cal["outputs_marked"] == "UNCALIBRATED" and not cal["flat_field_applied"]
    assert not cal["quantitative_maps"]
    assert not {"sto2", "thb", "sto2_index", "nir", "thi", "twi"} & set(maps.files)
    assert str(maps["calibration_mark"]) == "UNCALIBRATED"


def test_failed_record_never_yields_sto2_unless_forced(signed, tmp_path):
    cal, maps, _ = _run(tmp_path, signed / "failed")
    assert cal["state"] == "failed" and cal["outputs_marked"] == "FAILED CALIBRATION"
    assert cal["flat_field_applied"] and not cal["quantitative_maps"]   # warn: calibrated
    assert "sto2" not in maps.files
    shutil.rmtree(tmp_path / "out")
    cal, maps, _ = _run(tmp_path, signed / "failed", force_quantitative=True)
    assert cal["quantitative_maps"] and "sto2" in maps.files
    assert str(maps["calibration_mark"]) == "FAILED CALIBRATION"
    with pytest.raises(CalibrationError, match=r"failed: the calibration failed "
                                               r"\(factory_calibration\); expiry_policy is "
                                               r"refuse"):
        _run(tmp_path / "again", signed / "failed", expiry_policy="refuse")


def test_quick_check_above_its_limit_counts_as_expired(signed, tmp_path):
    record_dir = tmp_path / "valid"
    shutil.copytree(signed / "valid", record_dir)
    shutil.copytree(signed / "history", tmp_path / "history")
    rec = CalibrationRecord.load(record_dir)
    cam = camera(0, skip_frames=3)
    with cam:
        ok = quick_check(cam, rec, TABLE, history_root=tmp_path / "history",
                         placer=ScriptedPlacer(cam))
    assert ok.verdict == "PASS", ok.line()
    assert record_status(rec, history_root=tmp_path / "history").state == "valid"
    cam = camera(0, OpticalFaults(lamp_dimming=0.10))
    with cam:
        bad = quick_check(cam, rec, TABLE, history_root=tmp_path / "history",
                          placer=ScriptedPlacer(cam))
    assert bad.verdict == "FAIL" and 9.5 < bad.value < 10.5
    cal, maps, _ = _run(tmp_path, record_dir)
    assert cal["state"] == "expired" and "quick check" in cal["reason"]
    assert str(maps["calibration_mark"]) == "EXPIRED CALIBRATION"


def test_record_without_field_qc_runs_as_before(tmp_path):
    save_simulated_record(tmp_path / "old", camera(0), frames=4)
    assert read_qc(CalibrationRecord.load(tmp_path / "old")) is None
    cal, maps, _ = _run(tmp_path, tmp_path / "old")
    assert cal["state"] == "unchecked" and cal["outputs_marked"] is None
    assert "sto2" in maps.files
