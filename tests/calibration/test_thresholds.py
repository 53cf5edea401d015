"""The threshold table of the field calibration (calibration/thresholds.yaml + loader)."""

from __future__ import annotations

import pytest

from calibration.thresholds import FAIL, PASS, WARN, load_thresholds
from edge.errors import ConfigError


def test_every_check_says_method_limits_and_source():
    t = load_thresholds()
    assert t.version == "2026.12-1"
    assert len(t.checks) >= 20
    for name, th in t.checks.items():
        assert th.method and th.source and th.fix, name
        assert th.kind in ("max", "min", "range", "match"), name
        # a limit is cited or marked as a proposal
        assert "proposal" in th.source or "[" in th.source, name


@pytest.mark.parametrize("name,value,verdict", [
    ("wavelength_shift", 0.99, PASS), ("wavelength_shift", 1.5, WARN),
    ("wavelength_shift", 2.01, FAIL), ("snr", 0.95, PASS), ("snr", 0.85, WARN),
    ("snr", 0.79, FAIL), ("white_level", 75.0, PASS), ("white_level", 87.0, WARN),
    ("white_level", 30.0, FAIL), ("factory_calibration", True, PASS),
    ("factory_calibration", False, FAIL), ("ambient_ratio", float("nan"), FAIL),
])
def test_verdicts(name, value, verdict):
    assert load_thresholds().result(name, value).verdict == verdict


def test_site_overrides_change_limits_and_version(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("wavelength_shift: {warn: 0.5, fail: 1.0}\n")
    t = load_thresholds(site)
    assert t.version == "2026.12-1+site"
    assert t["wavelength_shift"].fail == 1.0
    assert t.result("wavelength_shift", 1.5).verdict == FAIL
    # the other checks keep the shipped limits
    assert t["snr"].fail == load_thresholds()["snr"].fail


@pytest.mark.parametrize("overrides,match", [
    ({"wavelenght_shift": {"fail": 1}}, r"wavelenght_shift: unknown check; known: "),
    ({"snr": {"fail": 0.95}}, r"snr: warn 0.9 must be >= fail 0.95 \(kind min\)"),
    ({"white_level": {"warn": [50, 99]}}, r"white_level: warn/fail: expected \[lo, hi\] ranges"),
    ({"snr": {"limit": 1}}, r"snr: expected a mapping with warn and/or fail"),
])
def test_bad_overrides_are_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_thresholds(None, overrides)


def test_unreadable_table(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read the threshold table"):
        load_thresholds(tmp_path / "missing.yaml")


def test_a_binary_or_duplicate_key_table_is_one_line(tmp_path):
    """Binary files were a UnicodeDecodeError traceback; duplicate keys silently won."""
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin.yaml: cannot read threshold table: not UTF-8"):
        load_thresholds(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("version: a\nversion: b\nchecks: {}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: not valid YAML at line 2.*duplicate key"):
        load_thresholds(dup)
