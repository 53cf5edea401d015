"""A calibration record from the simulated camera, for tests that need one on disk."""

from __future__ import annotations

from pathlib import Path

from calibration.records import CalibrationRecord


def save_simulated_record(path: Path, camera, frames: int = 2,
                          exposure_us: float = 8000.0) -> Path:
    """Capture ``frames`` dark and white frames with ``camera`` (a simulated camera, not yet
    opened) at ``exposure_us`` and save a record without field QC at ``path``."""
    from calibration.references import capture_dark, capture_white

    with camera:
        camera.configure(exposure_us=exposure_us)
        camera.target = "dark"
        dark = capture_dark(camera, frames)
        camera.target = "white"
        white = capture_white(camera, frames, dark=dark)
    CalibrationRecord.from_references(dark, white).save(path)
    return path


def count_record_loads(monkeypatch) -> list[str]:
    """Make every ``CalibrationRecord.load`` append its path to the returned list."""
    loads: list[str] = []
    original = CalibrationRecord.load.__func__

    def counting(cls, path, *a, **kw):
        loads.append(str(path))
        return original(cls, path, *a, **kw)

    monkeypatch.setattr(CalibrationRecord, "load", classmethod(counting))
    return loads
