"""The public surface of drivers.sim: every name resolves to its module's object, names load
on first use (rendering a scene does not load the pty machinery), and the old module paths
are gone (no shims)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import drivers.sim as sim

_SUBMODULES = ("scene", "tissue_classes", "sensor", "presets", "workers", "controller",
               "lumencor", "server", "faults")


def test_surface_is_the_submodules_public_names():
    exported = set(sim.__all__) - {"start_controller", "start_lumencor"}
    declared = set()
    for name in _SUBMODULES:
        declared |= set(importlib.import_module(f"drivers.sim.{name}").__all__)
    # scene re-exports the tissue class names; the package takes them from tissue_classes
    assert exported == declared
    assert len(sim.__all__) == len(set(sim.__all__))


@pytest.mark.parametrize("name", sorted(set(sim.__all__) - {"start_controller",
                                                             "start_lumencor"}))
def test_each_name_is_its_modules_object(name):
    module = importlib.import_module(f"drivers.sim.{sim._EXPORTS[name]}")
    assert getattr(sim, name) is getattr(module, name)
    assert name in dir(sim)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match=r"module 'drivers.sim' has no attribute 'Scene'"):
        sim.Scene  # noqa: B018
    with pytest.raises(ImportError, match=r"cannot import name 'Scene'"):
        from drivers.sim import Scene  # noqa: F401


_PROBE = """
import json, sys
import drivers.sim
before = sorted(m for m in sys.modules if m.startswith("drivers"))
from drivers.sim import SurgicalScene, SensorModel, get_preset, worker_pool
p = get_preset("snapshot25", rows=6, cols=8)
s = SurgicalScene(p.wavelength_array(), p.rows, p.cols, fwhm_nm=p.fwhm_nm, seed=2).render(0.0)
after = sorted(m for m in sys.modules if m.startswith("drivers"))
print(json.dumps({"before": before, "after": after, "shape": list(s.reflectance.shape),
                  "heavy": sorted(m for m in ("tty", "select", "socket", "serial")
                                  if m in sys.modules)}))
"""


def test_rendering_a_scene_loads_no_device_simulator():
    # a fresh interpreter: what this process already imported must not matter
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True)
    got = json.loads(out.stdout)
    assert got["before"] == ["drivers", "drivers.sim"]
    assert got["after"] == ["drivers", "drivers.sim", "drivers.sim.light", "drivers.sim.mosaic",
                            "drivers.sim.presets",
                            "drivers.sim.scene", "drivers.sim.sensor",
                            "drivers.sim.tissue_classes", "drivers.sim.workers"]
    assert got["shape"] == [6, 8, 25]
    assert got["heavy"] == []


@pytest.mark.parametrize("old", ["drivers.scene", "drivers.sensor", "drivers.presets",
                                 "drivers.tissue_classes"])
def test_old_paths_are_gone(old):
    with pytest.raises(ModuleNotFoundError, match=rf"No module named '{old}'"):
        importlib.import_module(old)


def test_scene_and_sensor_share_one_worker_pool():
    from drivers.sim import scene, sensor
    from drivers.sim.workers import MAX_WORKERS, worker_pool

    assert scene.worker_pool is sensor.worker_pool is worker_pool
    assert worker_pool() is worker_pool()
    assert 1 <= worker_pool()._max_workers <= MAX_WORKERS
