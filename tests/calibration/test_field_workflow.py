"""The guided field calibration on the simulated bench (issue 12): healthy units pass every
check (false alarms counted), the wavelength-shift estimate is accurate, refusals and aborts
leave the previous record, identify refuses unknown tiles, expired certificates and a changed
factory calibration, the history flags drift, and the CLI runs it."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json

import numpy as np
import pytest

from calibration import checks as C
from calibration.certificates import load_certificate
from calibration.checks_spectral import wavelength_checks
from calibration.field import OPTIONAL, STEPS, CalibrationRefused
from calibration.history import History
from calibration.placers import ScriptedPlacer
from calibration.qc import read_qc
from calibration.records import CalibrationRecord
from calibration.references import average_frames
from drivers.sim.faults_optical import OpticalFaults
from drivers.sim.targets import certificate
from drivers.simulated import SimulatedCamera
from edge.cli import main
from field_bench import CERTS, COLS, ROWS, TABLE, calibrate, camera


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_healthy_units_pass_every_check_no_false_alarms(tmp_path):
    """6 simulated units, each commissioned and recalibrated (other noise) with every
    optional check: 2 x 6 x ~22 judged values, 0 false alarms allowed."""
    alarms, judged = [], 0
    for seed in range(6):
        for session in range(2):
            cam = camera(seed, skip_frames=11 * session)
            r = calibrate(cam, tmp_path / f"u{seed}", tmp_path / "history", optional=OPTIONAL)
            judged += len(r.results)
            alarms += [f"seed {seed}/{session}: {x.line()}" for x in r.results
                       if x.verdict != "PASS"]
    assert judged >= 250
    assert alarms == [], alarms


@pytest.mark.parametrize("preset", ["tivita", "snapshot16", "snapshot25"])
def test_wavelength_shift_estimate_error_below_0_1_nm(preset):
    """Simulated shifts -4..+4 nm: |estimate - truth| < 0.1 nm (measured: <= 0.05 nm)."""
    cert = certificate("wavelength_std")
    errors = []
    for shift in (-4.0, -2.0, -0.7, 0.0, 1.3, 2.0, 4.0):
        cam = SimulatedCamera(preset, rows=16, cols=20, seed=2, noise="exact")
        cam.faults = OpticalFaults(wavelength_shift_nm=shift)
        with cam:
            cam.configure(exposure_us=8000.0)
            cam.target = "dark"
            d = average_frames(cam, 4).mean
            cam.target = "white"
            w = average_frames(cam, 4).mean
            cam.target = "wavelength_std"
            s = average_frames(cam, 4).mean
        refl = C.reflectance(s, d, w, d, 0.99)
        got = wavelength_checks(TABLE, refl, cam.wavelengths, cam.fwhm_nm, cert)[0]
        errors.append(got.data["shift_nm"] - shift)
    assert np.max(np.abs(errors)) < 0.1, errors


class _AbortAt(ScriptedPlacer):
    """The operator walks away (Ctrl-C) at the n-th placement."""

    def __init__(self, cam, n):
        super().__init__(cam)
        self.n, self.calls = n, 0

    def place(self, target, placement=0):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        super().place(target, placement)


def test_aborting_at_any_step_leaves_the_previous_record(tmp_path):
    calibrate(camera(3), tmp_path / "rec", tmp_path / "history")
    before = _digest(tmp_path / "rec")
    placer = _AbortAt(camera(3), 0)
    calibrate(placer.camera, tmp_path / "count", None, placer=placer)
    n_calls = placer.calls  # placements of a whole calibration
    assert n_calls >= len(STEPS) - 2
    for n in range(1, n_calls + 1):
        cam = camera(3, skip_frames=n)
        with pytest.raises(KeyboardInterrupt):
            calibrate(cam, tmp_path / "rec", tmp_path / "history", placer=_AbortAt(cam, n),
                      n_dark=8, n_white=4, warmup_frames=4)
        assert _digest(tmp_path / "rec") == before
        CalibrationRecord.load(tmp_path / "rec")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count", "history", "rec"]


def test_refusal_names_step_and_fix_and_keeps_the_record(tmp_path):
    calibrate(camera(4), tmp_path / "rec", tmp_path / "history")
    before = _digest(tmp_path / "rec")
    with pytest.raises(CalibrationRefused, match=r"refused at step 'white': FAIL white_dirt: "
                                                 r".*clean the white tile.*the previous "
                                                 r"record in .* is unchanged") as exc:
        calibrate(camera(4, OpticalFaults(tile_smudge=0.05)), tmp_path / "rec",
                  tmp_path / "history")
    assert exc.value.step == "white"
    assert _digest(tmp_path / "rec") == before
    entries = History(tmp_path / "history", camera(4).serial).entries()
    assert [(e["kind"], e["verdict"], e["refused_at"]) for e in entries] == [
        ("calibration", "PASS", None), ("calibration", "FAIL", "white")]


def test_identify_refuses_tiles_and_factory_changes(tmp_path):
    calibrate(camera(5), tmp_path / "rec", tmp_path / "history")
    old = load_certificate(certificate("grey_tile", expires="2020-01-01"))
    with pytest.raises(CalibrationRefused, match=r"step 'identify': FAIL tile_certificate: no "
                                                 r"\(certificate CERT-SIM-GREY-50-001 of tile "
                                                 r"SIM-GREY-50 expired on 2020-01-01\)"):
        calibrate(camera(5), tmp_path / "rec", tmp_path / "history",
                  certs={**CERTS, "grey_tile": old})
    from calibration.field import FieldCalibration, FieldSettings
    cam = camera(5)
    fc = FieldCalibration(cam, ScriptedPlacer(cam), CERTS, tmp_path / "rec",
                          settings=FieldSettings(plots=False), table=TABLE,
                          history_root=tmp_path / "history", tile_ids={"grey_tile": "GREY-X"})
    with pytest.raises(CalibrationRefused, match=r"grey_tile: tile 'GREY-X' is unknown"):
        fc.run()
    cam = camera(5)
    cam.factory_revision = 1  # serviced: new factory calibration
    with pytest.raises(CalibrationRefused, match=r"FAIL factory_calibration: no .*commission "
                                                 r"the unit again"):
        calibrate(cam, tmp_path / "rec", tmp_path / "history")


def test_history_trend_flags_drift_and_runs_the_optional_checks(tmp_path):
    hist = History(tmp_path / "history", camera(6).serial)
    now = _dt.datetime.now(_dt.timezone.utc).timestamp()
    for i, level in enumerate((500.0, 495.0, 488.0, 470.0)):  # -6 % over 90 days
        hist.append({"time": "t", "epoch": now - (90 - 30 * i) * 86400, "kind": "check",
                     "verdict": "PASS", "summary": {"white_level": level}})
    trend = {r.name: r for r in hist.trend(TABLE)}
    assert trend["drift_white_level"].verdict == "FAIL"
    assert trend["drift_white_level"].value == pytest.approx(6.0)
    r = calibrate(camera(6), tmp_path / "rec", tmp_path / "history", certs=CERTS)
    ran = {x.name for x in r.results}
    assert {"linearity", "snr", "wavelength_shift", "mtf50"} <= ran  # forced by the flag
    assert r.qc["trend"][0]["name"] == "drift_white_level"


def test_cli_field_check_info(tmp_path, capsys):
    args = ["calibrate", "field", "--out", str(tmp_path / "rec"), "--non-interactive",
            "--preset", "snapshot16", "--rows", str(ROWS), "--cols", str(COLS),
            "--no-plots", "--operator", "bme-1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "PASS white_dirt" in out and "signed PASS record" in out
    qc = read_qc(CalibrationRecord.load(tmp_path / "rec"))
    assert qc["operator"] == "bme-1" and qc["thresholds_version"] == "2026.12-1"
    assert (tmp_path / "calibration-history").is_dir()
    check = ["calibrate", "check", str(tmp_path / "rec"), "--non-interactive", "--preset",
             "snapshot16", "--rows", str(ROWS), "--cols", str(COLS)]
    assert main(check) == 0
    assert main(check + ["--fault", "lamp_dimming=0.1"]) == 1
    assert "FAIL quick_check" in capsys.readouterr().out
    assert main(["calibrate", "info", str(tmp_path / "rec")]) == 0
    assert "status: expired (the quick check of" in capsys.readouterr().out
    # a refusal is one line on stderr and a non-zero exit
    assert main(args + ["--fault", "ambient=0.05"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FAIL ambient_ratio" in err[0] and "dim or switch off" in err[0]
    assert main(args[:4] + ["--non-interactive", "--fault", "dimming=0.1"]) != 0
    assert "--fault: unknown fault dimming; allowed: wavelength_shift_nm" in \
        capsys.readouterr().err
    doc = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert doc["serial"] == "SIM-snapshot16-0000"


def test_interactive_mode_prompts_for_every_placement(tmp_path):
    from calibration.placers import InteractivePlacer
    asked = []
    cam = camera(7)
    placer = InteractivePlacer(cam, ask=lambda q: asked.append(q) or "", say=lambda s: None)
    r = calibrate(cam, tmp_path / "rec", None, placer=placer)
    assert r.qc["verdict"] == "PASS"
    text = "\n".join(asked)
    for want in ("Cap the lens", "place the white tile", "grey reference tile",
                 "place it again (placement 3)", "colour reference tile"):
        assert want in text, want


def test_camera_and_site_thresholds_from_the_run_config(tmp_path, capsys):
    (tmp_path / "site.yaml").write_text("ambient_ratio: {warn: 4.0, fail: 8.0}\n")
    (tmp_path / "run.yaml").write_text(
        f"camera: {{preset: snapshot16, rows: {ROWS}, cols: {COLS}, exposure_us: 6000}}\n"
        f"calibration:\n  thresholds: {tmp_path / 'site.yaml'}\n"
        f"  history: {tmp_path / 'hist'}\n")
    args = ["calibrate", "field", "--out", str(tmp_path / "rec"), "--non-interactive",
            "--no-plots", "--fault", "ambient=0.02", "--config", str(tmp_path / "run.yaml")]
    assert main(args) == 0, capsys.readouterr().err
    rec = CalibrationRecord.load(tmp_path / "rec")
    # the record fits the unit's run config: camera, exposure and gain from it
    assert rec.shape == (ROWS, COLS, 16) and rec.exposure_us == 6000.0 and rec.gain == 1.0
    qc = read_qc(rec)
    assert qc["thresholds_version"] == "2026.12-1+site"
    amb = [c for c in qc["checks"] if c["name"] == "ambient_ratio"][0]
    assert amb["verdict"] == "PASS" and amb["fail"] == 8.0
    assert (tmp_path / "hist").is_dir()


def test_a_record_of_another_camera_is_not_a_baseline(tmp_path):
    calibrate(camera(8), tmp_path / "rec", tmp_path / "history")
    r = calibrate(camera(9), tmp_path / "rec", tmp_path / "history")
    names = {x.name for x in r.results}
    assert "white_drift_level" not in names and r.qc["commissioning"]
    assert CalibrationRecord.load(tmp_path / "rec").camera_serial == camera(9).serial
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("rec.backup-")]
    assert len(backups) == 1
    assert CalibrationRecord.load(backups[0]).camera_serial == camera(8).serial
