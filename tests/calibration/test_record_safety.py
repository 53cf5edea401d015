"""Calibration records: a save killed at any step is recovered by the next save or load; the
metadata has a checksum; impossible references and bad metadata are one-line errors
(issue 15 items 4, 7, 16, 19).

Crashes are real: a separate process saves with ``HSI_EDGE_TEST_CRASH_AT=<step>`` and dies
with ``os._exit`` at that step (no cleanup, no finally blocks); this process then loads or
saves.  Tampered records are written the way an editor or a bad tool would, with the array
checksums (and where said, record_sha256) recomputed so only the new checks can catch them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench_camera import BenchCamera
from calibration._checks import META_CHECKSUM_KEY, meta_checksum
from calibration._replace import CRASH_ENV, CRASH_EXIT, STEPS
from calibration.records import CalibrationRecord
from calibration.references import capture_dark, capture_white
from edge.cli import main
from edge.core.fileio import sha256_file
from edge.errors import CalibrationError

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def refs():
    cam = BenchCamera()
    dark = capture_dark(cam, 6)
    cam.target = "white"
    return dark, capture_white(cam, 4, dark=dark)


def _save_in_child(target: Path, rho: float, crash_at: str | None) -> int:
    script = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from bench_camera import BenchCamera
from calibration.records import CalibrationRecord
from calibration.references import capture_dark, capture_white
cam = BenchCamera()
dark = capture_dark(cam, 6)
cam.target = "white"
white = capture_white(cam, 4, dark=dark)
CalibrationRecord.from_references(dark, white, rho_ref={rho}).save({str(target)!r},
                                                                    overwrite=True)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120).returncode


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("step", STEPS)
def test_a_save_killed_at_any_step_is_recovered_by_the_next_load(tmp_path, refs, step, caplog):
    target = tmp_path / "cal"
    CalibrationRecord.from_references(*refs, rho_ref=0.99).save(target)
    assert _save_in_child(target, 0.95, step) == CRASH_EXIT
    with caplog.at_level(logging.WARNING, logger="calibration"):
        rec = CalibrationRecord.load(target)
    finished = STEPS.index(step) >= STEPS.index("backup")
    assert rec.rho_ref == (0.95 if finished else 0.99)
    assert _leftovers(tmp_path) == [], "temporary folders or the journal were left behind"
    backups = sorted(tmp_path.glob("cal.backup-*"))
    assert len(backups) == (1 if finished else 0)
    if backups:
        assert CalibrationRecord.load(backups[0]).rho_ref == 0.99
    said = caplog.text
    if step == "backup":
        assert "finished an interrupted save" in said and "complete and verified" in said
    elif step in ("writing", "written"):
        assert "left by a save that was interrupted while writing" in said
    elif step == "journal":
        assert "interrupted before it replaced the record; the record is unchanged" in said


def test_the_next_save_finishes_an_interrupted_one_first(tmp_path, refs, caplog):
    target = tmp_path / "cal"
    CalibrationRecord.from_references(*refs, rho_ref=0.99).save(target)
    assert _save_in_child(target, 0.95, "backup") == CRASH_EXIT
    assert not target.exists()                 # the state the crash left: record missing
    with caplog.at_level(logging.WARNING, logger="calibration"):
        CalibrationRecord.from_references(*refs, rho_ref=0.9).save(target, overwrite=True)
    assert "finished an interrupted save" in caplog.text
    assert CalibrationRecord.load(target).rho_ref == 0.9
    rhos = sorted(CalibrationRecord.load(b).rho_ref for b in tmp_path.glob("cal.backup-*"))
    assert rhos == [0.95, 0.99] and _leftovers(tmp_path) == []


def test_incomplete_new_copy_rolls_back_to_the_backup(tmp_path, refs, caplog):
    target = tmp_path / "cal"
    CalibrationRecord.from_references(*refs, rho_ref=0.99).save(target)
    assert _save_in_child(target, 0.95, "backup") == CRASH_EXIT
    (tmp_dir,) = tmp_path.glob(".cal.tmp-*")
    (tmp_dir / "white.npz").write_bytes(b"truncated")          # the new copy is damaged
    with caplog.at_level(logging.WARNING, logger="calibration"):
        assert CalibrationRecord.load(target).rho_ref == 0.99
    assert "rolled back an interrupted save" in caplog.text
    assert _leftovers(tmp_path) == [] and not list(tmp_path.glob("cal.backup-*"))


# -- record.yaml checksum and plausible references (item 7) --------------------------------

def _rewrite(path: Path, *, meta_edit=None, arrays=None, fix_meta_sum=True) -> None:
    """Change a saved record like a tool would: arrays re-saved with their sha256 updated."""
    meta = yaml.safe_load((path / "record.yaml").read_text())
    for name, content in (arrays or {}).items():
        with open(path / name, "wb") as fh:
            np.savez(fh, **content)
        meta["files"][name] = sha256_file(path / name)
    if meta_edit:
        meta_edit(meta)
    if fix_meta_sum:
        meta[META_CHECKSUM_KEY] = meta_checksum(meta)
    (path / "record.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def test_record_yaml_is_covered_by_a_checksum(tmp_path, refs):
    path = CalibrationRecord.from_references(*refs).save(tmp_path / "cal")
    meta = yaml.safe_load((path / "record.yaml").read_text())
    assert meta[META_CHECKSUM_KEY] == meta_checksum(meta)
    _rewrite(path, meta_edit=lambda m: m.update(exposure_us=2000.0), fix_meta_sum=False)
    with pytest.raises(CalibrationError, match=r"record\.yaml: record_sha256: the metadata does "
                                               r"not match its checksum \(edited or corrupt\)"):
        CalibrationRecord.load(path)


def test_record_without_checksum_loads_with_a_warning(tmp_path, refs, caplog):
    path = CalibrationRecord.from_references(*refs).save(tmp_path / "cal")
    _rewrite(path, meta_edit=lambda m: m.pop(META_CHECKSUM_KEY), fix_meta_sum=False)
    with caplog.at_level(logging.WARNING, logger="calibration.records"):
        rec = CalibrationRecord.load(path)
    assert rec.camera_serial == "BENCH-1"
    assert "no record_sha256 (written by an older version)" in caplog.text


def _dark_white(path):
    with np.load(path / "dark.npz") as d, np.load(path / "white.npz") as w:
        return dict(d), dict(w)


@pytest.mark.parametrize("which, change, message", [
    ("dark", lambda a: np.full_like(a, -1e6), r"dark: values -1e\+06\.\.-1e\+06 lie outside the "
                                              r"10-bit sensor's range \[0, 1023\] counts"),
    ("dark", lambda a: a + 5000, r"dark: values .* outside the 10-bit sensor's range"),
    ("white", lambda a: np.full_like(a, np.nan), r"white: 360 value\(s\) are NaN or infinite"),
    ("white", lambda a: np.full_like(a, np.inf), r"white: 360 value\(s\) are NaN or infinite"),
    ("white", lambda a: np.zeros_like(a), r"white is not above dark on 100 % of pixels"),
    ("white", "dark", r"white is not above dark on 100 % of pixels"),
    ("dark", lambda a: a.astype(np.complex64), r"dark: dtype complex64 is not allowed"),
])
def test_impossible_references_are_refused(tmp_path, refs, which, change, message):
    path = CalibrationRecord.from_references(*refs).save(tmp_path / "cal")
    dark, white = _dark_white(path)
    if change == "dark":
        white["mean"] = dark["mean"].copy()
    else:
        target = dark if which == "dark" else white
        target["mean"] = change(target["mean"])
    _rewrite(path, arrays={"dark.npz": dark, "white.npz": white})
    with pytest.raises(CalibrationError, match=message) as info:
        CalibrationRecord.load(path)
    assert "\n" not in str(info.value)
    assert main(["calibrate", "info", str(path)]) != 0


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(n_dark=-5), r"n_dark: expected a number of frames >= 0, got -5"),
    (lambda m: m.update(n_white=2.5), r"n_white: expected an integer, got 2\.5"),
    (lambda m: m.update(temperature_c="hot"), r"temperature_c: expected a number, got 'hot'"),
    (lambda m: m.update(temperature_c=1e9), r"temperature_c: expected null or a number in "
                                            r"\[-60, 150\] °C, got 1000000000\.0"),
])
def test_bad_metadata_values_are_one_line_errors(tmp_path, refs, capsys, edit, message):
    path = CalibrationRecord.from_references(*refs).save(tmp_path / "cal")
    _rewrite(path, meta_edit=edit)
    with pytest.raises(CalibrationError, match=message):
        CalibrationRecord.load(path)
    assert main(["calibrate", "info", str(path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "record.yaml" in err[0], err


def test_duplicate_keys_and_deep_nesting_in_record_yaml(tmp_path, refs, capsys):
    path = CalibrationRecord.from_references(*refs).save(tmp_path / "cal")
    text = (path / "record.yaml").read_text()
    (path / "record.yaml").write_text(text + "gain: 2.0\n")
    with pytest.raises(CalibrationError, match=r"record\.yaml: cannot read record metadata: not "
                                               r"valid YAML at line \d+, column 1: duplicate "
                                               r"key 'gain'"):
        CalibrationRecord.load(path)
    (path / "record.yaml").write_text("files: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(CalibrationError, match=r"nested deeper than 64 levels"):
        CalibrationRecord.load(path)
    assert main(["calibrate", "info", str(path)]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
