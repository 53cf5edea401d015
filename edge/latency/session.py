"""A latency measurement session: one arm (config, backend, runtime, slowdown), many rounds.

The session assembles the same chain as ``hsi-edge run`` once, through the same builder
(:func:`edge.pipeline.assembly.assemble_chain`: camera, calibration gate and flat field,
model card, runtime with ``model.precision`` and ``auto``'s fallback, backend, stages), and
runs rounds of ``warmup + frames`` frames through :class:`edge.pipeline.Pipeline` with a
:class:`~edge.latency.records.RecordCollector` on its ``on_record`` hook.  The load is paced:
the simulated camera is triggered at its frame rate by :class:`~edge.latency.paced.PacedCamera`
(``camera.fps``, default :data:`DEFAULT_FPS`), its frames rendered once after the flat field is
obtained (:class:`~edge.latency.bank.FrameBank`); the simulated bench is paced by its trigger
controller and a replay by its ``fps``.  The sink is the null sink: the display is reached
when the overlay is ready; file sinks are not measured.  The drop policy is ``newest``, as
for a live display.  The clock state is read at every round boundary, once
(:class:`~edge.latency.clocks.ClockWatch`: the state a round ended in is the next round's
start); a round whose clocks changed is void (:mod:`edge.latency.clocks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

from edge.core.fileio import sha256_file
from edge.errors import ConfigError
from edge.latency.bank import DEFAULT_BANK_SIZE, FrameBank
from edge.latency.clocks import ClockReader, ClockWatch, default_watch, void_reasons
from edge.latency.paced import PacedCamera
from edge.latency.records import FrameRecords, RecordCollector
from edge.latency.slow import apply_slow
from edge.pipeline.config import AppConfig

__all__ = ["LatencySession", "DEFAULT_FPS"]

log = logging.getLogger(__name__)

#: Frame rate of a simulated camera when the config gives none (a live display rate).
DEFAULT_FPS = 25.0


class LatencySession:
    """One arm of a latency run (a context manager).

    Parameters
    ----------
    cfg : AppConfig
    backend, runtime : str, optional
        Override ``processing.backend`` / ``model.runtime``.
    slow : dict, optional
        From :func:`edge.latency.slow.parse_slow` (test-only slowdown of named stages).
    label : str
        Shown in logs and stored with the result.
    marker_every : int
        Glass to glass (simulated camera only): the marker LED lights every N-th trigger slot
        and :class:`~edge.latency.marker.MarkerDetector` finds it in the output (0: off).
    bank_size : int
        Simulated camera only: frames rendered once when the session opens and replayed on
        the paced grid (:class:`~edge.latency.bank.FrameBank`), so the renderer's CPU time
        does not compete with the measured chain (a unit's camera costs no CPU).
    clocks : ClockWatch or ClockReader, optional
        Reads the clock state at every round boundary (:mod:`edge.latency.clocks`).  Default:
        the process's :func:`~edge.latency.clocks.default_watch`, shared by every session
        made without one, so that in an A/B run in one process the state A's round ended in
        is B's next round's start.  A reader (a test's, over recorded files) gets a watch of
        its own; pass one watch to several sessions to share it.  A round whose clocks
        changed is void.
    """

    def __init__(self, cfg: AppConfig, *, backend: str | None = None,
                 runtime: str | None = None, slow: dict | None = None, label: str = "A",
                 marker_every: int = 0, bank_size: int = DEFAULT_BANK_SIZE,
                 clocks: ClockWatch | ClockReader | None = None):
        self.cfg = cfg
        if clocks is None:
            clocks = default_watch()
        self.clocks = clocks if isinstance(clocks, ClockWatch) else ClockWatch(clocks)
        self.bank_size = int(bank_size)
        self.backend_name = backend or cfg.processing.backend
        self.runtime_name = runtime or cfg.model.runtime
        self.slow = dict(slow or {})
        self.label = label
        self.marker_every = int(marker_every)
        self.detector = None
        self._stack = contextlib.ExitStack()
        self.camera = None
        self.pipeline_parts: dict[str, Any] = {}
        self.fps: float = 0.0
        self.info: dict[str, Any] = {}

    # -- assembly -----------------------------------------------------------------------------
    def __enter__(self) -> "LatencySession":
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def _open_camera(self, cfg: AppConfig, stack: contextlib.ExitStack):
        """The camera of the arm (``assemble_chain``'s ``open_camera``): a simulated camera
        renders in real time at ``camera.fps`` (default :data:`DEFAULT_FPS`) and is paced
        later; the bench and a replay come from the job's camera factory."""
        from edge.pipeline.cameras import build_camera

        c = cfg.camera
        if c.source == "simulated":
            from drivers.simulated import SimulatedCamera
            cam = SimulatedCamera(c.preset, rows=c.rows, cols=c.cols, seed=c.seed,
                                  fps=c.fps or DEFAULT_FPS, realtime=True, fwhm_nm=c.fwhm_nm)
            stack.enter_context(cam)
            cam.configure(exposure_us=c.exposure_us, gain=c.gain, trigger_mode="software")
            return cam, None
        if self.marker_every:
            raise ConfigError(f"--marker-every: glass-to-glass markers need the simulated "
                              f"camera (camera.source 'simulated'), got {c.source!r}")
        if c.source == "replay" and not c.fps:
            raise ConfigError("camera.fps: a latency run of a replay needs a frame rate (the "
                              "load is paced, as on a unit)")
        return build_camera(cfg, stack)

    def _fps(self, bench) -> float:
        from edge.pipeline.cameras import BENCH_FPS

        c = self.cfg.camera
        if c.source == "simulated":
            return float(c.fps or DEFAULT_FPS)
        if c.fps:
            return float(c.fps)
        period = getattr(bench, "trigger_period_ns", None)
        return 1e9 / period if period else BENCH_FPS

    def _open(self) -> None:
        from edge.pipeline.assembly import assemble_chain
        from edge.pipeline.cameras import start_triggers

        chain = assemble_chain(self.cfg, self._stack, backend=self.backend_name,
                               runtime=self.runtime_name, reflectance=False,
                               open_camera=self._open_camera,
                               card_hint=" (--model none measures without segmentation)")
        cam, bench, card, rt = chain.camera, chain.bench, chain.card, chain.runtime
        self.camera, self._bench, self.fps = cam, bench, self._fps(bench)
        if self.cfg.camera.source == "simulated":
            # after the flat field is obtained (the references are captured from the live
            # camera): frames rendered now, replayed on the paced grid
            bank = FrameBank(cam, self.bank_size, sensor_fps=cam.preset.fps)
            self._paced = PacedCamera(bank, self.fps,
                                      marker_every=self.marker_every)
        else:
            self._paced = cam
        self.stages = apply_slow(list(chain.stages), self.slow)
        if self.marker_every:
            from edge.latency.marker import MarkerDetector
            self.detector = MarkerDetector()
            self.stages.append(self.detector)
        for s in self.stages:
            self._stack.callback(s.close)
        model_sha = None
        if card is not None:
            model_sha = getattr(card, "sha256", None) or sha256_file(card.onnx_path)
        self.info = {
            "label": self.label, "source": self.cfg.camera.source,
            "preset": self.cfg.camera.preset, "frame_shape": list(cam.shape),
            "fps": self.fps, "exposure_us": cam.exposure_us, "backend": chain.backend.name,
            "runtime": chain.runtime_name,
            "model": None if card is None else card.name, "model_sha256": model_sha,
            "engine_sha256": getattr(rt, "engine_sha256", None),
            "precision": None if card is None else card.input.dtype,
            # model.precision reaches a TensorRT build (runtime_choice.load_runtime)
            "build_precision": (self.cfg.model.precision if chain.runtime_name == "tensorrt"
                                else None),
            "calibration": chain.calibration_metrics(),
            "stages": [s.name for s in self.stages],
            "slow": {k: {"fraction": f, "fixed_ms": n / 1e6} for k, (f, n) in self.slow.items()},
        }
        start_triggers(bench)

    def fingerprint(self) -> dict[str, Any]:
        """The unit's fingerprint with this arm's run settings (:func:`fingerprint.collect`)."""
        from edge.latency import fingerprint as fpmod
        return fpmod.collect(self.info)

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.fps))

    # -- measurement ----------------------------------------------------------------------------
    def run_round(self, frames: int, *, warmup: int = 0, index: int = 0,
                  arm: str = "") -> FrameRecords:
        """Run ``warmup + frames`` frames; returns their records (the round's entry holds the
        pipeline's drop and miss counts, ``warmup``, the clock state ``clocks`` before and
        after, and ``void``: the clock changes that void the round, empty if none).  The
        state before is the one round ``index - 1`` ended in when that was the last round on
        this session's watch (:class:`~edge.latency.clocks.ClockWatch`), else read now."""
        from edge.pipeline.runner import Pipeline
        from edge.pipeline.sinks import NullSink

        total = int(frames) + int(warmup)
        collector = RecordCollector(total, round_index=index)
        p = self.cfg.pipeline
        pipe = Pipeline(self._paced, self.stages, [NullSink()], queue_size=p.queue_size,
                        drop_policy="newest", read_timeout_s=p.read_timeout_s,
                        on_record=collector)
        if self.detector is not None:
            self.detector.reset()
        before = self.clocks.start(index)
        result = pipe.run(total)
        after = self.clocks.end(index)
        void = void_reasons(before, after)
        if void:
            log.warning("%s round %d is void: %s", self.label, index, "; ".join(void))
        log.debug("%s round %d: %d frames, %d dropped, %d missed", self.label, index,
                  result.frames_processed, result.frames_dropped, result.frames_missed)
        extra: dict[str, Any] = {"clocks": {"before": before, "after": after}, "void": void}
        if self.detector is not None:
            extra["marker"] = {"flashes_ns": list(self._paced.flashes_ns),
                               "detections_ns": list(self.detector.detections_ns)}
        return collector.records(arm=arm, warmup=int(warmup),
                                 frames_dropped=result.frames_dropped,
                                 frames_missed=result.frames_missed, **extra)


def with_overrides(cfg: AppConfig, **camera: Any) -> AppConfig:
    """``cfg`` with camera settings replaced (None values are left as they are)."""
    changes = {k: v for k, v in camera.items() if v is not None}
    if not changes:
        return cfg
    return dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, **changes))


def config_with_overrides(path: str | None, *, preset: str | None = None,
                          rows: int | None = None, cols: int | None = None,
                          fps: float | None = None, model: str | None = None) -> AppConfig:
    """The config at ``path`` with the ``latency`` command's overrides (None: as configured);
    also what a worker of another build loads (:mod:`edge.latency.worker`).

    Raises
    ------
    ConfigError
        A bad override (names the option) or a bad config (file and key).
    """
    from edge.pipeline.config import load_app_config

    for name, v in (("rows", rows), ("cols", cols)):
        if v is not None and v < 1:
            raise ConfigError(f"--{name}: expected an integer >= 1, got {v}")
    if fps is not None and not fps > 0:
        raise ConfigError(f"--fps: expected a frame rate > 0, got {fps}")
    cfg = with_overrides(load_app_config(path), preset=preset, rows=rows, cols=cols, fps=fps)
    if model is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, card=model))
    return cfg
