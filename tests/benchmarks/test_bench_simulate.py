"""Simulated camera speed: one 480x640x100 TIVITA-like frame (scene + sensor + noise).

Run with ``pytest tests/benchmarks/test_bench_simulate.py --benchmark-enable``.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.simulated import SimulatedCamera


@pytest.fixture(scope="module")
def camera():
    cam = SimulatedCamera("tivita", seed=0)
    cam.open()
    cam.arm()
    cam.grab(timeout=60.0)  # builds the scene once (first-frame cost is not the stream cost)
    yield cam
    cam.close()


@pytest.mark.benchmark(group="simulate")
def test_bench_simulated_frame_tivita(benchmark, camera):
    """Steady-state grab: breathing crop, malperfusion update, sensor noise, quantisation."""
    frame = benchmark(camera.grab, 60.0)
    assert frame.cube.shape == (480, 640, 100) and frame.cube.dtype == np.uint16


@pytest.mark.benchmark(group="simulate")
def test_bench_sensor_expose_tivita(benchmark, camera):
    """Sensor model alone on a 480x640x100 reflectance cube."""
    refl = np.full((480, 640, 100), 0.3, dtype=np.float32)
    raw = benchmark(camera._sensor.expose, refl, 10_000.0, 1.0, 7)
    assert raw.dtype == np.uint16


@pytest.mark.benchmark(group="simulate")
def test_bench_scene_build_tivita(benchmark):
    """First-frame cost: building the 480x640x100 scene (done once per camera)."""
    from drivers.sim.presets import PRESETS
    from drivers.sim.scene import SurgicalScene
    p = PRESETS["tivita"]
    scene = benchmark.pedantic(SurgicalScene, args=(p.wavelength_array(), 480, 640),
                               kwargs=dict(fwhm_nm=p.fwhm_nm, seed=1), rounds=1, iterations=1)
    assert scene.render(0.0).reflectance.shape == (480, 640, 100)
