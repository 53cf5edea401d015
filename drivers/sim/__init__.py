"""Simulators: the tissue scene and camera sensor behind the simulated camera, and the serial
devices behind a real pty or ``socket://`` with fault injection.

One package for everything that stands in for hardware or tissue, shared by the simulated
camera (:mod:`drivers.simulated`), the training code (:mod:`edge.models.train`), the device
CLI (``hsi-edge sim-devices``) and the calibration tools.

Scene and camera (NumPy only):

- :class:`~drivers.sim.scene.SurgicalScene`, :class:`~drivers.sim.scene.SceneSample`: a
  synthetic surgical view with per-pixel ground truth (reflectance, classes, StO2, blood
  volume); tissue classes and species optics in :mod:`drivers.sim.tissue_classes`
  (:data:`SCENE_CLASSES`, :data:`CLASS_PARAMS`, :data:`SPECIES`, :func:`get_species`, ...).
- :class:`~drivers.sim.sensor.SensorModel`: illumination, exposure, shot/read/dark noise,
  fixed pattern, quantisation; in :mod:`drivers.sim.light`, :data:`LED_CHANNELS` and
  :func:`led_illumination` turn a light source's state into a per-band spectrum.
- :class:`~drivers.sim.presets.CameraPreset`, :data:`PRESETS`, :func:`get_preset`: the
  TIVITA-like and snapshot camera geometries (grid, FWHM, size, bit depth, frame rate).
- :func:`~drivers.sim.workers.worker_pool`: the thread pool the NumPy simulators share.

Serial devices (threads, ptys, sockets):

- :class:`~drivers.sim.controller.ControllerModel`: the hsi-edge trigger/illumination
  controller (``drivers/PROTOCOL.md``).
- :class:`~drivers.sim.lumencor.LumencorModel`: a Lumencor SPECTRA III / CELESTA-style engine.
- :class:`~drivers.sim.server.DeviceServer`: serves a model over a pty or TCP in a thread.
- :class:`~drivers.sim.faults.FaultPlan`: what to inject (delay, drop, garble, split, merge,
  noreply, reset, disconnect, overtemp, interlock, busy).
- :func:`start_controller`, :func:`start_lumencor`: a model served and started in one call.

Every name is imported on first use (PEP 562), so rendering a scene does not load the pty
server machinery and ``import drivers.sim`` costs nothing.

Quick use::

    from drivers.sim import SurgicalScene, get_preset
    p = get_preset("snapshot25")
    scene = SurgicalScene(p.wavelength_array(), p.rows, p.cols, fwhm_nm=p.fwhm_nm, seed=1)
    sample = scene.render(0.0)   # SceneSample: reflectance (rows, cols, bands), classes, ...

    from drivers.sim import start_controller
    with start_controller() as server:
        with drivers.open_illumination(server.url) as light: ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: Public name -> submodule that defines it (each submodule is imported on first use).
_EXPORTS: dict[str, str] = {
    # scene and tissue
    "SurgicalScene": "scene", "SceneSample": "scene",
    "SCENE_CLASSES": "tissue_classes", "CLASS_PARAMS": "tissue_classes",
    "MELANIN_WEIGHT": "tissue_classes", "SPECIES": "tissue_classes",
    "DEFAULT_SPECIES": "tissue_classes", "Species": "tissue_classes",
    "get_species": "tissue_classes",
    # camera sensor and presets
    "SensorModel": "sensor", "LED_CHANNELS": "light", "NOISE_MODES": "sensor",
    "REFERENCE_EXPOSURE_US": "sensor", "led_illumination": "light",
    "halogen_spectrum": "light", "quantum_efficiency": "light",
    "CameraPreset": "presets", "PRESETS": "presets", "get_preset": "presets",
    "BIT_DEPTHS": "presets", "SensorSpec": "presets", "TEXTURE_SIGMA_MM": "presets",
    "worker_pool": "workers", "MAX_WORKERS": "workers",
    # serial devices
    "ControllerModel": "controller", "DEFAULT_CHANNELS": "controller",
    "LumencorModel": "lumencor", "LUMENCOR_CHANNELS": "lumencor",
    "DeviceServer": "server",
    "FaultPlan": "faults", "FAULT_KINDS": "faults",
}

__all__ = [*_EXPORTS, "start_controller", "start_lumencor"]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on demand
    from drivers.sim.controller import DEFAULT_CHANNELS, ControllerModel
    from drivers.sim.faults import FAULT_KINDS, FaultPlan
    from drivers.sim.lumencor import LUMENCOR_CHANNELS, LumencorModel
    from drivers.sim.presets import (BIT_DEPTHS, PRESETS, TEXTURE_SIGMA_MM, CameraPreset,
                                     SensorSpec, get_preset)
    from drivers.sim.scene import SceneSample, SurgicalScene
    from drivers.sim.light import (LED_CHANNELS, halogen_spectrum, led_illumination,
                                   quantum_efficiency)
    from drivers.sim.sensor import NOISE_MODES, REFERENCE_EXPOSURE_US, SensorModel
    from drivers.sim.server import DeviceServer
    from drivers.sim.tissue_classes import (CLASS_PARAMS, DEFAULT_SPECIES, MELANIN_WEIGHT,
                                            SCENE_CLASSES, SPECIES, Species, get_species)
    from drivers.sim.workers import MAX_WORKERS, worker_pool


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drivers.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"drivers.sim.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def start_controller(*, transport: str = "pty", faults: FaultPlan | None = None,
                     link: str | None = None, **model_options) -> DeviceServer:
    """Start a simulated controller; returns the running :class:`DeviceServer`."""
    from drivers.sim.controller import ControllerModel
    from drivers.sim.server import DeviceServer

    return DeviceServer(ControllerModel(**model_options), transport=transport, faults=faults,
                        link=link).start()


def start_lumencor(*, transport: str = "pty", faults: FaultPlan | None = None,
                   link: str | None = None, **model_options) -> DeviceServer:
    """Start a simulated Lumencor light engine; returns the running :class:`DeviceServer`."""
    from drivers.sim.lumencor import LumencorModel
    from drivers.sim.server import DeviceServer

    return DeviceServer(LumencorModel(**model_options), transport=transport, faults=faults,
                        link=link).start()
