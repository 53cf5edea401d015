"""The per-unit data format hook: a release that needs a newer format migrates the unit data
with a kept backup; an unknown step or a newer format on the unit is refused."""

from __future__ import annotations

import pytest

from deploy import steps as inst
from deploy.unit import Unit
from edge.errors import BundleError


def _unit(tmp_path):
    unit = tmp_path / "unit"
    (unit / "calibration" / "current").mkdir(parents=True)
    (unit / "calibration" / "current" / "record.yaml").write_text("camera_serial: A\n")
    (unit / "identity.yaml").write_text("unit_serial: U1\n")
    (unit / "engines").mkdir()
    (unit / "engines" / "big.plan").write_bytes(b"x" * 10)
    return unit


def test_same_format_writes_the_version_file_only(tmp_path):
    unit = _unit(tmp_path)
    assert inst.migrate_unit(unit, 1) is None
    assert (unit / "format_version").read_text() == "1\n"
    assert not (unit / "backups").exists()


def test_migration_keeps_a_backup(tmp_path, monkeypatch):
    unit = _unit(tmp_path)
    (unit / "format_version").write_text("1\n")

    def rename_identity(d):
        (d / "identity.yaml").rename(d / "unit.yaml")
    monkeypatch.setitem(inst.MIGRATIONS, 1, rename_identity)
    backup = inst.migrate_unit(unit, 2)
    assert (unit / "format_version").read_text() == "2\n"
    assert (unit / "unit.yaml").read_text() == "unit_serial: U1\n"
    kept = tmp_path / "unit" / "backups" / backup.rsplit("/", 1)[1]
    assert (kept / "identity.yaml").read_text() == "unit_serial: U1\n"
    assert (kept / "calibration" / "current" / "record.yaml").exists()
    assert not (kept / "engines").exists()  # caches are not backed up
    # a rollback to a release of format 1 puts the backup back
    inst.restore_unit_backup(Unit(tmp_path, unit_dir=unit), backup)
    assert (unit / "identity.yaml").read_text() == "unit_serial: U1\n"
    assert (unit / "format_version").read_text() == "1\n"


def test_missing_step_and_newer_unit_refused(tmp_path):
    unit = _unit(tmp_path)
    (unit / "format_version").write_text("1\n")
    with pytest.raises(BundleError, match="unit data: no migration from format 1 to 2"):
        inst.migrate_unit(unit, 2)
    (unit / "format_version").write_text("3\n")
    with pytest.raises(BundleError, match="unit data format 3 is newer than this release's 1"):
        inst.migrate_unit(unit, 1)
