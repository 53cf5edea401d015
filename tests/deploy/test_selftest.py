"""`hsi-edge selftest`: every check PASS/FAIL/SKIP with its reason, exit 0 only when every
required check passes, JSON and factory reports; failures name what is wrong."""

from __future__ import annotations

import json
import os

import yaml

import subprocess
from types import SimpleNamespace

from deploy_testlib import V1, save_record

CHECKS = ["files", "chain-numpy", "chain-native", "model-onnxruntime", "kernels",
          "device-controller", "device-light", "calibration", "disk", "clock"]


def selftest(root, *args):
    """`hsi-edge selftest` of the installed release, run by the release's own venv (the
    code the golden fixtures were made with, not the checkout's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSI_EDGE_")}
    return subprocess.run([str(root / "current" / "venv" / "bin" / "python"), "-m", "edge",
                           "selftest", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=root)


def _run(root):
    r = selftest(root, "--release", str(root / "current"), "--unit-dir", str(root / "unit"),
                 "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == (0 if doc["passed"] else 1), r.stderr
    return {c["name"]: SimpleNamespace(**c) for c in doc["checks"]}, doc["passed"]


def test_cli_json_and_factory_report(root, tmp_path):
    r = selftest(root, "--release", str(root / "current"), "--unit-dir", str(root / "unit"),
                 "--json", "--factory", "--report", str(tmp_path / "eol"))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["passed"] is True and doc["release"] == V1 and doc["unit_serial"] == "UNIT-0007"
    by_name = {c["name"]: c for c in doc["checks"]}
    assert list(by_name) == CHECKS
    assert by_name["kernels"]["status"] == "SKIP"
    assert by_name["kernels"]["reason"] == "CPU release: no CUDA kernels"
    assert by_name["chain-native"]["status"] in ("PASS", "SKIP")
    assert by_name["device-controller"]["reason"].endswith("hsi device, serial SN0042")
    assert by_name["model-onnxruntime"]["reason"].startswith("onnxruntime: max |err|")
    reports = list((tmp_path / "eol").glob("UNIT-0007-*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["passed"] is True
    text = selftest(root, "--release", str(root / "current"), "--unit-dir", str(root / "unit"))
    assert text.returncode == 0
    assert text.stdout.splitlines()[-1].startswith("PASS: 9 passed, 0 failed, 1 skipped") or \
        text.stdout.splitlines()[-1].startswith("PASS: 8 passed, 0 failed, 2 skipped")


def test_cli_refusals_are_one_line(root, tmp_path):
    r = selftest(root, "--release", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "is not an installed hsi-edge release (no manifest.json)" in r.stderr
    r = selftest(root, "--release", str(root / "current"), "--factory")
    assert r.returncode == 2 and "--factory: needs --report DIR" in r.stderr


def test_calibration_of_another_camera_fails(root):
    ident = yaml.safe_load((root / "unit" / "identity.yaml").read_text())
    ident["camera_serial"] = "CAM-OTHER"
    (root / "unit" / "identity.yaml").write_text(yaml.safe_dump(ident))
    checks, ok = _run(root)
    assert not ok
    assert checks["calibration"].status == "FAIL"
    assert checks["calibration"].reason == ("record is of camera 'SIM-tivita-0005', this "
                                            "unit's camera is 'CAM-OTHER'")
    r = selftest(root, "--release", str(root / "current"), "--unit-dir", str(root / "unit"))
    assert r.returncode == 1 and "FAIL  calibration" in r.stdout


def test_expired_edited_and_missing_calibration_fail(root):
    import shutil
    rec = root / "unit" / "calibration" / "current" / "record.yaml"
    doc = yaml.safe_load(rec.read_text())
    doc["created"] = "2020-01-01T00:00:00+00:00"
    rec.write_text(yaml.safe_dump(doc))
    checks, ok = _run(root)
    assert not ok and "does not match its checksum" in checks["calibration"].reason
    shutil.rmtree(rec.parent)
    save_record(rec.parent, "2020-01-01T00:00:00+00:00")
    checks, ok = _run(root)
    assert not ok and checks["calibration"].status == "FAIL"
    assert "days old, older than 180 days: recalibrate" in checks["calibration"].reason
    shutil.rmtree(root / "unit" / "calibration")
    checks, _ = _run(root)
    assert checks["calibration"].reason.startswith("no calibration record at ")


def test_device_with_wrong_serial_fails(root):
    ident = yaml.safe_load((root / "unit" / "identity.yaml").read_text())
    ident["serials"]["controller"] = "SN9999"
    (root / "unit" / "identity.yaml").write_text(yaml.safe_dump(ident))
    checks, ok = _run(root)
    assert not ok and checks["device-controller"].status == "FAIL"
    assert checks["device-controller"].reason.endswith(
        "answered as serial 'SN0042', this unit's is 'SN9999'")


def test_optional_device_missing_does_not_fail(root):
    devices = yaml.safe_load((root / "unit" / "devices.yaml").read_text())
    devices["light"] = "/dev/hsi-no-light-here"
    (root / "unit" / "devices.yaml").write_text(yaml.safe_dump(devices))
    checks, ok = _run(root)
    assert checks["device-light"].status == "FAIL" and not checks["device-light"].required
    assert ok


def test_altered_or_rechmodded_installed_file_fails(root):
    rel = (root / "current").resolve()
    sbom = rel / "sbom.cdx.json"
    data = bytearray(sbom.read_bytes())
    data[10] ^= 1
    sbom.write_bytes(bytes(data))
    os.chmod(rel / "selftest.json", 0o600)
    checks, ok = _run(root)
    assert not ok and checks["files"].status == "FAIL"
    assert "sbom.cdx.json altered" in checks["files"].reason
    assert "selftest.json mode 0600 != 0644" in checks["files"].reason


def test_clock_before_build_fails(root):
    rel = (root / "current").resolve()
    man = json.loads((rel / "manifest.json").read_text())
    man["built"]["time"] = "2999-01-01T00:00:00Z"
    (rel / "manifest.json").write_text(json.dumps(man))
    checks, ok = _run(root)
    assert not ok and checks["clock"].status == "FAIL"
    assert "before the release was built (2999-01-01)" in checks["clock"].reason
