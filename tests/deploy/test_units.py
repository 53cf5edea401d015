"""The systemd units pass `systemd-analyze verify` (no warning either), and the udev rules
give the stable names the example releases' self-test opens."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_testlib import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (package systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # The units name /opt/hsi-edge/current/venv/bin/python, which exists only on a unit:
    # verify them with that root mapped to a temporary folder holding an executable there.
    fake = tmp_path / "opt" / "hsi-edge"
    py = fake / "current" / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    names = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/hsi-edge", str(fake))
        (tmp_path / unit.name).write_text(text)
        names.append(unit.name)
    proc = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    # verify exits 0 on "Failed to parse ..., ignoring": any output is a finding
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    assert {u.name for u in UNITS} == {"hsi-edge.service", "hsi-edge-selftest.service",
                                       "hsi-edge-rollback.service"}


def test_selftest_unit_gates_boot_complete():
    text = (ROOT / "deploy" / "systemd" / "hsi-edge-selftest.service").read_text()
    assert "Before=boot-complete.target" in text and "RequiredBy=boot-complete.target" in text
    assert "OnFailure=hsi-edge-rollback.service" in text


def test_udev_rules_name_the_devices_the_releases_open():
    import yaml
    rules = (ROOT / "deploy" / "udev" / "99-hsi-edge.rules").read_text()
    lines = [ln for ln in rules.splitlines() if ln.strip() and not ln.startswith("#")]
    token = re.compile(r'^[A-Z_]+(\{[^}]+\})?(==|!=|\+=|=)"[^"]*"$')
    for ln in lines:
        for part in ln.split(", "):
            assert token.match(part.strip()), part
    links = {f"/dev/{m}" for m in re.findall(r'SYMLINK\+="([^"]+)"', rules)}
    for example in (ROOT / "deploy" / "examples").glob("*.yaml"):
        if example.name.endswith(".config.yaml"):
            continue
        doc = yaml.safe_load(example.read_text())
        urls = {d["url"] for d in doc.get("selftest", {}).get("devices", [])}
        assert urls <= links, (example.name, urls - links)


def test_root_and_unit_dir_defaults_are_one_place(tmp_path, monkeypatch):
    from deploy import DEFAULT_ROOT, default_root, default_unit_dir, unit_dir_of
    from deploy.unit import Unit
    monkeypatch.delenv("HSI_EDGE_ROOT", raising=False)
    monkeypatch.delenv("HSI_EDGE_UNIT_DIR", raising=False)
    assert (default_root(), default_unit_dir()) == (DEFAULT_ROOT, None)
    monkeypatch.setenv("HSI_EDGE_ROOT", str(tmp_path))
    monkeypatch.setenv("HSI_EDGE_UNIT_DIR", str(tmp_path / "data"))
    assert (default_root(), default_unit_dir()) == (str(tmp_path), str(tmp_path / "data"))
    assert Unit(tmp_path).unit_dir == unit_dir_of(tmp_path) == tmp_path / "unit"
    assert unit_dir_of(tmp_path, "data") == Path.cwd() / "data"
