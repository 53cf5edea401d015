"""Helpers of the field calibration tests: the simulated bench with small frames."""

from __future__ import annotations

import shutil
from pathlib import Path

from calibration.certificates import load_certificate
from calibration.field import FieldCalibration, FieldSettings
from calibration.placers import ScriptedPlacer
from calibration.thresholds import load_thresholds
from drivers.sim.targets import TILE_TARGETS, certificate
from drivers.simulated import SimulatedCamera

#: Small frames keep the whole field test set fast on a 2-core machine; 16 bands 460-600 nm.
PRESET, ROWS, COLS = "snapshot16", 24, 32
TABLE = load_thresholds()
CERTS = {k: load_certificate(certificate(k)) for k in TILE_TARGETS}


def camera(seed: int = 1, faults=None, preset: str = PRESET, skip_frames: int = 0):
    """A simulated unit; ``skip_frames`` > 0 gives a later session other noise."""
    # "exact" noise: no 2**23-sample pool to draw per camera (small frames)
    cam = SimulatedCamera(preset, rows=ROWS, cols=COLS, seed=seed, noise="exact")
    if skip_frames:
        cam.configure(trigger_mode="software")
        cam.arm()
        for _ in range(skip_frames):
            cam.trigger()
            cam.read(2.0)
        cam.disarm()
    cam.faults = faults
    return cam


def calibrate(cam, out: Path, history: Path | None, *, optional=(), placer=None,
              certs=None, **settings):
    """One scripted field calibration; returns the FieldResult (raises CalibrationRefused)."""
    s = FieldSettings(optional=tuple(optional), plots=settings.pop("plots", False), **settings)
    fc = FieldCalibration(cam, placer or ScriptedPlacer(cam), certs or CERTS, out, settings=s,
                          table=TABLE, history_root=history)
    return fc.run()


def copy_bench(src: Path, dst: Path) -> tuple[Path, Path]:
    """A copy of a commissioned bench (record + history) for one test."""
    shutil.copytree(src, dst)
    return dst / "record", dst / "history"
