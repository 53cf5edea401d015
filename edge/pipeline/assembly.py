"""One assembly of the frame path: camera -> calibration gate / flat field -> model card ->
runtime -> backend -> stages.

Used by ``hsi-edge run``/``bench`` (:func:`edge.pipeline.job.run_job`) and by the latency
workflow (``edge.latency.session``), so that what is measured is what runs: the same runtime
choice (``model.precision``, ``auto``'s fallback from TensorRT to ONNX Runtime,
:func:`~edge.pipeline.runtime_choice.load_runtime`), the same calibration policy
(:mod:`~edge.pipeline.calibration_policy`, its record loaded once) and the same stages.
The caller keeps what differs: how the camera is opened (``open_camera``; the latency
session paces a simulated camera after the flat field is obtained), checks that need the
camera (``on_camera``, e.g. free disk space for one frame's outputs), the sinks, and starting
the bench's triggers.

Everything that can be checked is checked before any device moves: the requested backend and
runtime, the model card (when the preset is known without the camera) and the calibration
record's verdict come first; the dark/white capture (seconds) comes last.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from edge.errors import BackendUnavailable, ConfigError
from edge.pipeline.backend_factory import cuda_available, make_backend
from edge.pipeline.calibration_policy import CalibrationGate, calibration_gate
from edge.pipeline.cameras import DEFAULT_PRESET, build_camera, camera_preset
from edge.pipeline.config import AppConfig
from edge.pipeline.reference import obtain_flatfield
from edge.pipeline.stages import ChainStage, InferStage, PostStage, Stage

__all__ = ["Chain", "assemble_chain", "check_available", "resolve_model_card", "load_card"]

log = logging.getLogger(__name__)


def resolve_model_card(card: str, preset: str | None):
    """The model card path for ``model.card`` (None for ``none``); preset None: tivita."""
    if card == "none":
        return None
    preset = preset or DEFAULT_PRESET
    if card == "demo":
        from edge.models import DEMO_MODELS, demo_card_path
        if preset not in DEMO_MODELS:
            log.warning("no demo model for preset %r (demo models: %s): running without "
                        "segmentation", preset, ", ".join(DEMO_MODELS))
            return None
        return demo_card_path(preset)
    from pathlib import Path
    return Path(card)


def load_card(cfg: AppConfig, preset: str | None):
    """The model card for ``preset`` (None: no model), loaded and checked."""
    card_path = resolve_model_card(cfg.model.card, preset)
    if card_path is None:
        return None
    from edge.inference import load_model_card
    return load_model_card(card_path)


def check_available(backend: str, runtime: str) -> None:
    """Refuse an explicitly requested backend or runtime that cannot run here (before any
    device moves; ``auto`` decides later and says what it picked)."""
    if backend == "cuda":
        reason = cuda_available()
        if reason:
            raise BackendUnavailable(f"--backend cuda: {reason}")
    elif backend == "native":
        from edge.backends.native import native_available
        reason = native_available()
        if reason:
            raise BackendUnavailable(f"--backend native: {reason}")
    if runtime == "tensorrt":
        from edge.inference.tensorrt_build import import_tensorrt
        import_tensorrt()


@dataclass
class Chain:
    """The assembled frame path (its parts are closed by the caller's exit stack).

    Attributes
    ----------
    camera, bench
        The opened camera and the simulated bench (None unless ``camera.source`` is bench).
    card
        The model card, or None (no segmentation).
    runtime
        The loaded inference runtime, or None.
    backend
        The per-pixel backend.
    stages : list of Stage
        chain [, infer, post] [, calibration_mark].
    gate : CalibrationGate or None
        The calibration record's verdict (None without a record).
    flat_field_applied : bool
        The record's (or freshly captured) flat field calibrates the frames: False for a
        nominal flat field (policy ``uncalibrated``) and for float reflectance recordings.
    """

    camera: Any
    bench: Any
    card: Any
    runtime: Any
    backend: Any
    stages: list[Stage] = field(default_factory=list)
    gate: CalibrationGate | None = None
    flat_field_applied: bool = False

    @property
    def runtime_name(self) -> str | None:
        return None if self.runtime is None else self.runtime.name

    def preset(self, cfg: AppConfig) -> str:
        return camera_preset(cfg, self.camera)

    def calibration_metrics(self) -> dict[str, Any] | None:
        """The ``calibration`` block of metrics.json (None without a record)."""
        if self.gate is None:
            return None
        return self.gate.metrics(flat_field_applied=self.flat_field_applied)


def assemble_chain(cfg: AppConfig, stack: contextlib.ExitStack, *, backend: str | None = None,
                   runtime: str | None = None, progress: bool = False,
                   reflectance: bool = False,
                   open_camera: Callable[[AppConfig, contextlib.ExitStack], tuple] | None = None,
                   on_camera: Callable[[Any], None] | None = None,
                   card_hint: str = "") -> Chain:
    """Open the camera and build the stages of ``cfg`` (everything is closed by ``stack``).

    Parameters
    ----------
    backend, runtime : str, optional
        Override ``processing.backend`` / ``model.runtime``.
    progress : bool
        Progress bars for the reference capture and a TensorRT build.
    reflectance : bool
        The cuda backend copies the reflectance cube back (for a PNG overlay or a preview).
    open_camera : callable, optional
        ``(cfg, stack) -> (camera, bench)``; default :func:`~edge.pipeline.cameras.build_camera`.
    on_camera : callable, optional
        Called with the opened camera after the model card is checked against it and before
        the runtime loads and references are captured (checks that need the frame shape).
    card_hint : str
        Appended to the error for a card whose input size does not fit the camera.

    Raises
    ------
    ConfigError, BackendUnavailable, CalibrationError, EngineError, DeviceError
        One line each.
    """
    backend = backend or cfg.processing.backend
    runtime = runtime or cfg.model.runtime
    check_available(backend, runtime)
    # A replayed recording may name its preset; everything else knows it now.
    preset_known = cfg.camera.source != "replay" or cfg.camera.preset is not None
    card = load_card(cfg, cfg.camera.preset) if preset_known else None
    # the record's verdict and expiry decide before any device moves (issue 12)
    gate = calibration_gate(cfg)
    camera, bench = (open_camera or build_camera)(cfg, stack)
    if not preset_known:
        card = load_card(cfg, camera_preset(cfg, camera))
    pack = None
    if card is not None:
        pack = card.pack_spec(camera.wavelengths)
        rows, cols = camera.shape[:2]
        if (card.input.height, card.input.width) != (rows, cols):
            raise ConfigError(
                f"model.card: model {card.name!r} takes {card.input.height}x"
                f"{card.input.width} frames but the camera delivers {rows}x{cols}{card_hint}")
    if on_camera is not None:
        on_camera(camera)
    rt = None
    if card is not None:
        from edge.pipeline.runtime_choice import load_runtime
        # 'auto' picks TensorRT for a chain that runs on the GPU (the cuda backend), and
        # falls back to ONNX Runtime (with a warning) when the engine cannot be built.
        gpu_chain = backend == "cuda" or (backend == "auto" and cuda_available() is None)
        rt = load_runtime(runtime, card, threads=cfg.model.threads, gpu_chain=gpu_chain,
                          precision=cfg.model.precision, progress=progress)
        stack.callback(rt.close)   # also if the job fails before its pipeline exists

    def obtain(record):
        return obtain_flatfield(cfg, camera, progress=progress, record=record)

    if gate is None:
        flatfield = obtain(None)
        applied = flatfield is not None
    else:
        flatfield, applied = gate.flatfield(camera, obtain)
    # The packed input stays on the GPU only for a runtime that reads device input.
    be = make_backend(backend, camera, flatfield, pack, cfg, reflectance=reflectance,
                      device_output=rt is not None and rt.accepts_device_input)
    stack.callback(be.close)
    stages: list[Stage] = [ChainStage(be)]
    if rt is not None:
        stages += [InferStage(rt), PostStage()]
    mark = gate.stage() if gate is not None else None
    if mark is not None:
        stages.append(mark)  # marks outputs, withholds quantitative maps
    return Chain(camera, bench, card, rt, be, stages, gate, applied)
