"""Camera factory of the main job: the simulated camera, a replayed recording, or the
simulated bench (camera fired by the trigger/LED controller over the real serial drivers)."""

from __future__ import annotations

import contextlib

from edge.errors import ConfigError
from edge.pipeline.config import AppConfig

__all__ = ["BENCH_FPS", "DEFAULT_PRESET", "camera_preset", "build_camera", "start_triggers"]

#: Default trigger rate of the simulated bench (frames per second).
BENCH_FPS = 5.0
#: Camera preset when ``camera.preset`` is null and no recording names one.
DEFAULT_PRESET = "tivita"


def camera_preset(cfg: AppConfig, camera) -> str:
    """The preset the job runs as: ``camera.preset``, else a replayed recording's, else tivita."""
    recorded = camera.preset_name if cfg.camera.source == "replay" else None
    return cfg.camera.preset or recorded or DEFAULT_PRESET


def build_camera(cfg: AppConfig, stack: contextlib.ExitStack):
    """Open and configure the camera of ``cfg.camera`` (closed by ``stack``).

    Returns
    -------
    (camera, bench)
        ``bench`` is the :class:`drivers.bench.SimulatedBench` for ``source: bench`` (its
        trigger controller fires the camera; arm it with :func:`start_triggers`), else None.
    """
    c = cfg.camera
    if c.source == "simulated":
        from drivers.simulated import SimulatedCamera
        cam = SimulatedCamera(c.preset or DEFAULT_PRESET, rows=c.rows, cols=c.cols, seed=c.seed,
                              fps=c.fps,
                              realtime=c.fps is not None, fwhm_nm=c.fwhm_nm)
    elif c.source == "replay":
        if not c.replay_path:
            raise ConfigError("camera.replay_path: required when camera.source is 'replay' "
                              "(a .dat, .hdr, .npy file or a folder of .npz frames)")
        from drivers.replay import ReplayCamera
        cam = ReplayCamera(c.replay_path, fps=c.fps, loop=c.loop, fwhm_nm=c.fwhm_nm,
                           preset=c.preset)
    else:
        # The simulated camera fired by the simulated trigger/LED controller, driven through
        # the real serial drivers over a pseudo-terminal.
        from drivers.bench import SimulatedBench
        from drivers.simulated import SimulatedCamera
        cam = SimulatedCamera(c.preset or DEFAULT_PRESET, rows=c.rows, cols=c.cols, seed=c.seed,
                              realtime=True, fps=c.fps or BENCH_FPS, fwhm_nm=c.fwhm_nm)
        bench = stack.enter_context(SimulatedBench(cam))
        cam.configure(exposure_us=c.exposure_us, gain=c.gain)
        bench.illumination.set_state({"white": 1.0})
        period_us = int(round(1e6 / (c.fps or BENCH_FPS)))
        bench.trigger.configure(source="internal", period_us=period_us,
                                width_us=max(1, min(period_us // 2, int(c.exposure_us))),
                                count=0)
        return cam, bench
    stack.enter_context(cam)
    if c.source == "simulated":
        cam.configure(exposure_us=c.exposure_us, gain=c.gain, trigger_mode="software")
    return cam, None


def start_triggers(bench) -> None:
    """Arm the bench's trigger controller (continuous pulses at the configured period)."""
    if bench is not None:
        bench.trigger.arm()
