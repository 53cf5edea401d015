"""Training data for the demo model: simulator frames through the inference-time code path.

Each sample is one frame of :class:`drivers.simulated.SimulatedCamera` (raw uint16 counts with
sensor noise), flat-field calibrated with the frame's dark/white references and run through
:class:`edge.backends.numpy_backend.NumpyBackend` with the model card's
:class:`~edge.backends.base.PackSpec` -- exactly what the pipeline does at inference, so the
network is trained on the features it will be served (no train/serve skew).  Labels are the
simulator's ground-truth class ids (:data:`drivers.sim.scene.SCENE_CLASSES`).

References: the camera reports the mean dark and white-tile counts its sensor model implies
(``frame.truth["dark"]``/``["white"]``); they stand in for captured references averaged over
many frames (FACTS.md, "Calibration practice": ~100 dark frames).

Scene time: a camera built with ``fps = 1 / dt`` delivers frame ``k`` at scene time ``k·dt``,
so reading frames 0, 1, ... samples the malperfused patch at StO2 falling from 0.55 towards
0.25 (:class:`drivers.sim.scene.SurgicalScene`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.backends.base import PackSpec

__all__ = ["FrameSample", "render_samples", "backend_for"]

log = logging.getLogger(__name__)


@dataclass
class FrameSample:
    """One training/test frame.

    Attributes
    ----------
    x : ndarray of shape (channels, rows, cols), float32
        Packed network input exactly as the NumPy backend produces it.
    y : ndarray of shape (rows, cols), uint8
        Ground-truth class ids.
    flags : ndarray of shape (rows, cols), uint8
        Backend pixel flags (0 = valid).
    """

    x: np.ndarray
    y: np.ndarray
    flags: np.ndarray


def backend_for(camera, frame, pack: PackSpec, calibration=None):
    """The NumPy backend the pipeline would build for this camera and model card.

    ``calibration`` (an ``Sto2Calibration``) may be passed to reuse the StO2 table of an
    earlier backend on the same band grid (it only depends on the grid and FWHM).
    """
    from edge.backends.numpy_backend import NumpyBackend
    from edge.processing.flatfield import FlatField

    ff = FlatField.from_references(frame.truth["dark"], frame.truth["white"],
                                   exposure_us=frame.meta.exposure_us,
                                   white_exposure_us=frame.meta.exposure_us,
                                   bit_depth=frame.meta.bit_depth)
    return NumpyBackend(frame.wavelengths, flatfield=ff, fwhm_nm=camera.preset.fwhm_nm,
                        pack=pack, calibration=calibration)


def render_samples(preset: str, seeds: Sequence[int], pack: PackSpec, *,
                   frames_per_scene: int = 2, dt_s: float = 20.0, rows: int | None = None,
                   cols: int | None = None, camera_factory: Callable | None = None,
                   progress: bool = False) -> list[FrameSample]:
    """Render ``frames_per_scene`` frames for each scene seed and pack them.

    Parameters
    ----------
    preset : str
        Camera preset (``tivita``, ``snapshot25``, ...).
    seeds : sequence of int
        Scene/sensor seeds; train and test use disjoint seeds.
    pack : PackSpec
        From the model card (``card.pack_spec(wavelengths)``).
    frames_per_scene : int
        Frames per scene at scene times ``0, dt_s, 2·dt_s, ...``.
    rows, cols : int, optional
        Frame size override (default: the preset's native size).
    camera_factory : callable, optional
        ``camera_factory(preset, rows=, cols=, seed=, fps=)`` -> camera; default
        :class:`drivers.simulated.SimulatedCamera` (the transfer study passes other optics).
    """
    from drivers.simulated import SimulatedCamera

    factory = camera_factory or SimulatedCamera
    out: list[FrameSample] = []
    calibration = None
    seeds = list(seeds)
    it = seeds
    if progress:
        from tqdm import tqdm
        it = tqdm(seeds, desc=f"render {preset}", unit="scene")
    for seed in it:
        with factory(preset, rows=rows, cols=cols, seed=int(seed), fps=1.0 / dt_s) as cam:
            cam.configure(trigger_mode="free_run")
            cam.arm()
            backend = None
            for _ in range(frames_per_scene):
                frame = cam.read(timeout=60.0)
                if backend is None:  # the sensor's fixed pattern depends on the seed
                    backend = backend_for(cam, frame, pack, calibration)
                    calibration = backend.calibration
                res = backend.run(frame.cube, exposure_us=frame.meta.exposure_us)
                out.append(FrameSample(x=np.asarray(res.input[0], dtype=np.float32),
                                       y=np.asarray(frame.truth["classes"], dtype=np.uint8),
                                       flags=res.flags.copy()))
            cam.disarm()
    log.info("rendered %d %s frames from %d scenes", len(out), preset, len(seeds))
    return out
