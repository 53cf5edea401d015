"""The record grows (issue 12): field calibration QC in record.yaml under record_sha256, signed
extra files (the report) checksummed like the arrays; plain records are unchanged."""

from __future__ import annotations

import pytest
import yaml

from calibration.qc import read_qc, save_record
from calibration.records import CalibrationRecord
from calibration.references import capture_dark, capture_white
from edge.errors import CalibrationError


@pytest.fixture
def record(bench_camera):
    bench_camera.target = "dark"
    dark = capture_dark(bench_camera, 4)
    bench_camera.target = "white"
    white = capture_white(bench_camera, 4, dark=dark)
    return CalibrationRecord.from_references(dark, white)


QC = {"workflow": "field", "verdict": "WARN", "operator": "bme-1",
      "signed": "2026-12-06T09:00:00+00:00", "valid_until": "2026-12-07T09:00:00+00:00",
      "checks": [{"name": "linearity", "value": 1.6, "verdict": "WARN"}]}


def test_plain_record_has_no_qc_and_the_same_keys(record, tmp_path):
    record.save(tmp_path / "plain")
    meta = yaml.safe_load((tmp_path / "plain" / "record.yaml").read_text())
    assert "qc" not in meta and set(meta["files"]) == {"dark.npz", "white.npz", "masks.npz"}
    assert read_qc(tmp_path / "plain") is None


def test_signed_record_round_trips_qc_and_report(record, tmp_path):
    path = save_record(record, tmp_path / "rec", QC, {"report.html": b"<html>ok</html>"})
    rec = CalibrationRecord.load(path)
    assert rec.qc == QC and read_qc(path) == QC
    meta = yaml.safe_load((path / "record.yaml").read_text())
    assert "report.html" in meta["files"]
    # the report is checksummed like the arrays
    (path / "report.html").write_bytes(b"<html>edited</html>")
    with pytest.raises(CalibrationError, match=r"report.html: checksum mismatch"):
        CalibrationRecord.load(path)


def test_edited_qc_fails_the_metadata_checksum(record, tmp_path):
    path = save_record(record, tmp_path / "rec", QC)
    text = (path / "record.yaml").read_text().replace("verdict: WARN", "verdict: PASS")
    (path / "record.yaml").write_text(text)
    with pytest.raises(CalibrationError, match=r"record_sha256: the metadata does not match"):
        CalibrationRecord.load(path)


@pytest.mark.parametrize("name", ["record.yaml", "dark.npz", "../x.html", ".hidden"])
def test_extra_file_names_are_checked(record, tmp_path, name):
    with pytest.raises(CalibrationError, match=r"extra_files: .* is not allowed"):
        record.save(tmp_path / "rec", extra_files={name: b"x"})
    assert not (tmp_path / "rec").exists()
