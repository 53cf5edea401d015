"""Helpers of the deploy tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
V1, V2 = "1.0.0", "2.0.0"


def make_unit_data(unit_dir: Path, sims: dict[str, str]) -> None:
    """identity.yaml, devices.yaml and a calibration record of a simulated camera."""
    serial = save_record(unit_dir / "calibration" / "current")
    (unit_dir / "identity.yaml").write_text(yaml.safe_dump(
        {"unit_serial": "UNIT-0007", "camera_serial": serial,
         "serials": {"controller": "SN0042"}}))
    (unit_dir / "devices.yaml").write_text(yaml.safe_dump(dict(sims)))


def save_record(path: Path, created: str | None = None, *, overwrite: bool = False) -> str:
    """A calibration record of the simulated camera 'SIM-tivita-0005' at ``path``."""
    from calibration.records import CalibrationRecord
    from calibration.references import capture_dark, capture_white
    from drivers.simulated import SimulatedCamera
    cam = SimulatedCamera("tivita", rows=8, cols=10, seed=5)
    with cam:
        cam.configure(trigger_mode="software")
        cam.target = "dark"
        dark = capture_dark(cam, 2)
        cam.target = "white"
        white = capture_white(cam, 2, dark=dark)
    record = CalibrationRecord.from_references(dark, white)
    if created:
        record.created = created
    record.save(path, overwrite=overwrite)
    return cam.serial


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file below ``path`` (or of the file ``path``)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m edge ARGS`` in a subprocess (the real CLI, real exit codes)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HSI_EDGE_")}
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=timeout, cwd=ROOT)
