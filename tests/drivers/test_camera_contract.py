"""The camera contract that callers use instead of probing (issue 18 item 3): attributes with
documented defaults on ``Camera`` and capability mixins that say what a camera can do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from drivers.camera import (Camera, CalibrationTarget, ExternalTrigger, IlluminationInput,
                            VirtualClock)
from drivers.replay import ReplayCamera
from drivers.simulated import SimulatedCamera
from test_replay import _npz_dir

ROOT = Path(__file__).resolve().parents[2]
#: Contract names that callers once reached with getattr/hasattr.
CONTRACT = ("exhausted", "dtype", "serial_known", "target", "placement", "external_pulse",
            "set_led_state", "advance_clock", "factory_calibration_hash", "sensor_noise")


def test_a_replay_has_the_contract_defaults_and_no_capabilities(tmp_path):
    _npz_dir(tmp_path)
    with ReplayCamera(tmp_path) as cam:
        assert isinstance(cam, Camera)
        assert cam.target is None and cam.placement == 0
        assert cam.factory_calibration_hash is None and cam.sensor_noise is None
        assert cam.dtype == np.uint16 and cam.exhausted is False
        for cap in (CalibrationTarget, VirtualClock, ExternalTrigger, IlluminationInput):
            assert not isinstance(cam, cap), cap


def test_the_simulated_camera_declares_its_capabilities():
    with SimulatedCamera("snapshot16", rows=8, cols=8) as cam:
        for cap in (CalibrationTarget, VirtualClock, ExternalTrigger, IlluminationInput):
            assert isinstance(cam, cap), cap
        assert cam.target == "scene"
        assert re.fullmatch(r"[0-9a-f]{64}", cam.factory_calibration_hash)
        noise = cam.sensor_noise
        assert noise["counts_per_electron"] > 0 and noise["read_noise_counts"] > 0


def test_no_caller_probes_a_camera_for_a_contract_name():
    """Keep it so: the pipeline, calibration, workflows and CLI use the contract."""
    pattern = re.compile(r"(?:hasattr|getattr)\(\s*(?:self\.)?(?:cam|camera)\w*\s*,\s*"
                         r"[\"'](" + "|".join(CONTRACT) + r")[\"']")
    found = []
    for folder in ("edge", "calibration", "deploy", "drivers"):
        for path in (ROOT / folder).rglob("*.py"):
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not found, "\n".join(found)
