"""Unit status: calibration verdict and expiry, self-test, release -- read, never written."""

from __future__ import annotations

import datetime as dt
import json
import os

import yaml

from edge.serve.status import StatusSources, unit_status


def _tree(root):
    """Every path under ``root`` with its bytes and mtime (to prove nothing was written)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_mtime_ns, st.st_size, os.readlink(p) if os.path.islink(p) else None)
    return out


def test_status_reads_calibration_selftest_and_release(tmp_path):
    rec = tmp_path / "cal"
    rec.mkdir()
    created = dt.datetime(2026, 1, 10, 8, 0, tzinfo=dt.timezone.utc)
    (rec / "record.yaml").write_text(yaml.safe_dump(
        {"created": created.isoformat(), "camera_serial": "SIM-0001",
         "software_version": "0.1.0", "verdict": "PASS"}))
    report = tmp_path / "selftest.json"
    report.write_text(json.dumps({"passed": False, "time": "2026-12-01T07:00:00Z",
                                  "release": "1.2.0",
                                  "checks": [{"name": "kernels", "status": "PASS"},
                                             {"name": "light", "status": "FAIL"}]}))
    root = tmp_path / "opt"
    (root / "releases" / "1.2.0").mkdir(parents=True)
    (root / "releases" / "1.1.0").mkdir()
    (root / "state").mkdir()
    (root / "state" / "releases.json").write_text(json.dumps(
        {"1.2.0": {"state": "pending"}, "1.1.0": {"state": "good"}}))
    os.symlink(root / "releases" / "1.2.0", root / "current")
    os.symlink(root / "releases" / "1.1.0", root / "previous")
    before = _tree(tmp_path)

    src = StatusSources(calibration_record=rec, calibration_max_age_days=30,
                        selftest_report=report, unit_root=root,
                        serial_urls={"light": "socket://127.0.0.1:1"})
    st = unit_status(src, live={"encoded": 0})
    cal = st["calibration"]
    assert cal["verdict"] == "PASS" and cal["camera_serial"] == "SIM-0001"
    assert cal["expires"] == "2026-02-09" and cal["expired"] is True   # 30 days after
    assert st["selftest"] == {"report": str(report), "passed": False,
                              "time": "2026-12-01T07:00:00Z", "release": "1.2.0",
                              "failed": ["light"]}
    assert st["release"] == {"root": str(root), "current": "1.2.0", "previous": "1.1.0",
                             "releases": {"1.2.0": "pending", "1.1.0": "good"}}
    assert st["serial"]["configured"] == {"light": "socket://127.0.0.1:1"}
    assert st["versions"]["hsi-edge"] and st["live"] == {"encoded": 0}
    assert _tree(tmp_path) == before      # read-only


def test_status_says_what_it_could_not_read(tmp_path):
    rec = tmp_path / "cal"
    rec.mkdir()
    (rec / "record.yaml").write_text(yaml.safe_dump(
        {"created": "2026-01-10T08:00:00+00:00", "expires": "2999-01-01"}))
    st = unit_status(StatusSources(calibration_record=rec,
                                   selftest_report=tmp_path / "missing.json",
                                   unit_root=tmp_path / "nothing"))
    cal = st["calibration"]
    assert cal["verdict"] == "not recorded" and cal["expires"] == "2999-01-01"
    assert cal["expired"] is False
    assert st["selftest"]["error"].startswith(f"{tmp_path / 'missing.json'}: cannot read")
    assert st["release"]["current"] is None and st["release"]["releases"] == {}
    none = unit_status(StatusSources())
    assert none["calibration"]["error"].startswith("no calibration record given")
    assert none["selftest"] is None and none["release"] is None
    bad = unit_status(StatusSources(calibration_record=tmp_path / "nope"))
    assert "nope" in bad["calibration"]["error"] and bad["calibration"]["verdict"] is None


def test_last_selftest_of_a_deployed_unit(tmp_path):
    reports = tmp_path / "unit" / "selftest"
    reports.mkdir(parents=True)
    for stamp, passed in (("20261201T070000Z-1.1.0", True), ("20261203T070000Z-1.2.0", False)):
        (reports / f"{stamp}.json").write_text(json.dumps(
            {"passed": passed, "time": stamp, "release": stamp.split("-")[1], "checks": []}))
    st = unit_status(StatusSources(unit_root=tmp_path))
    assert st["selftest"]["release"] == "1.2.0" and st["selftest"]["passed"] is False
    assert st["selftest"]["report"].endswith("20261203T070000Z-1.2.0.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    st = unit_status(StatusSources(selftest_report=empty))
    assert st["selftest"] == {"report": str(empty), "error": f"{empty}: no self-test report yet"}
