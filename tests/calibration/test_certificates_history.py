"""Tile certificates (calibration/certificates.py) and the per-camera history file."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pytest
import yaml

from calibration.certificates import load_certificate
from calibration.history import History
from drivers.sim.targets import band_reflectance, certificate
from edge.errors import CalibrationError


def test_certificate_band_values_match_the_simulated_tile(tmp_path):
    path = tmp_path / "grey.yaml"
    path.write_text(yaml.safe_dump(certificate("grey_tile")))
    cert = load_certificate(path)
    wl = np.linspace(500.0, 1000.0, 100)
    # the 5 nm certificate grid, band-integrated, against the simulator's exact tile
    np.testing.assert_allclose(cert.band_values(wl, 10.0),
                               band_reflectance("grey_tile", wl, 10.0), atol=1e-4)
    assert cert.problems(wl, 10.0) == []
    assert cert.problems(wl, 10.0, today=_dt.date(2100, 1, 1))[0].startswith(
        "certificate CERT-SIM-GREY-50-001 of tile SIM-GREY-50 expired on")


@pytest.mark.parametrize("edit,match", [
    ({"expires": "next year"}, r"expires: expected an ISO date \(YYYY-MM-DD\), got 'next year'"),
    ({"kind": "grey"}, r"kind: expected one of white, grey_tile, colour_tile, wavelength_std"),
    ({"reflectance": [0.5, 0.5]}, r"wavelengths_nm/reflectance: expected equally long lists"),
    ({"tile_id": None}, None),
])
def test_bad_certificates_are_one_line(tmp_path, edit, match):
    doc = certificate("grey_tile")
    if edit == {"tile_id": None}:
        del doc["tile_id"]
        match = r"grey.yaml: missing key\(s\) tile_id"
    else:
        doc.update(edit)
    path = tmp_path / "grey.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CalibrationError, match=match):
        load_certificate(path)


def test_certificate_not_covering_the_bands():
    doc = certificate("grey_tile", wavelengths_nm=np.arange(400.0, 705.0, 5.0))
    cert = load_certificate(doc)
    assert "covers 400-700 nm, the camera needs 490-1010 nm" in \
        cert.problems(np.linspace(500.0, 1000.0, 100), 10.0)[0]


def test_history_appends_skips_damaged_lines_and_finds_the_baseline(tmp_path, caplog):
    h = History(tmp_path, "SIM/unit 1")
    assert h.path.parent.name == "SIM_unit_1"
    h.append({"kind": "calibration", "verdict": "FAIL", "summary": {"white_level": 1.0}})
    h.append({"kind": "calibration", "verdict": "PASS", "summary": {"white_level": 500.0,
                                                                    "snr": None}})
    with open(h.path, "a") as fh:
        fh.write("{not json\n")
    h.append({"kind": "calibration", "verdict": "WARN",
              "summary": {"white_level": 490.0, "mtf50": np.float64(0.6)}})
    assert [e["verdict"] for e in h.entries()] == ["FAIL", "PASS", "WARN"]
    assert "line 3 is not JSON; skipped" in caplog.text
    # a refused calibration is never the baseline; later figures complete it
    assert h.baseline() == {"white_level": 500.0, "mtf50": 0.6}
    assert h.commissioning()["summary"]["white_level"] == 500.0


def test_trend_per_band_colour_drift(tmp_path):
    from calibration.thresholds import load_thresholds
    h = History(tmp_path, "SIM-1")
    base = np.linspace(200.0, 600.0, 16)
    tilt = np.linspace(-0.02, 0.02, 16)  # blue -2 %, red +2 %: a colour change
    for i, k in enumerate((0.0, 0.5, 1.0, 2.0)):
        h.append({"kind": "check", "verdict": "PASS", "epoch": 86400.0 * 30 * i,
                  "summary": {"white_level": 400.0, "white_band_mean":
                              (base * 0.97 * (1 + k * tilt)).tolist()}})
    trend = {r.name: r for r in h.trend(load_thresholds())}
    bands = trend["drift_white_bands"]
    # level removed (the 3 % dimming is not a colour change); 2 x 2 % at the ends
    assert bands.value == pytest.approx(4.0, abs=0.2) and bands.verdict == "FAIL"
    assert trend["drift_white_level"].value == 0.0


def test_history_with_damaged_bytes_and_non_object_lines_is_read(tmp_path, caplog):
    """A non-UTF-8 byte or a line that is JSON but not an object spoils only its line (it was
    a UnicodeDecodeError / AttributeError traceback from every run with a record)."""
    from calibration.history import History

    h = History(tmp_path, "SN1")
    h.append({"kind": "check", "verdict": "PASS"})
    with open(h.path, "ab") as fh:
        fh.write(b"\xff\xfe not text\n[1, 2]\n")
    h.append({"kind": "check", "verdict": "WARN"})
    assert [e["verdict"] for e in h.entries()] == ["PASS", "WARN"]
    assert "line 2 is not JSON; skipped" in caplog.text
    assert "line 3 is not a JSON object; skipped" in caplog.text
