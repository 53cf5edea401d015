"""Job assembly: camera -> flat field -> backend chain -> model -> post -> sinks, then
``metrics.json``.  Used by ``hsi-edge run`` and ``hsi-edge bench``."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edge import __version__
from edge.errors import ConfigError, HsiEdgeError
from edge.pipeline.backend_factory import cuda_available, make_backend
from edge.pipeline.calibration_policy import calibration_gate
from edge.pipeline.cameras import DEFAULT_PRESET, build_camera, camera_preset, start_triggers
from edge.pipeline.config import AppConfig
from edge.pipeline.outputs import RunDir, check_free_space, write_json
from edge.pipeline.reference import obtain_flatfield
from edge.pipeline.runner import Pipeline, RunResult
from edge.pipeline.sinks import NpzSink, NullSink, PngSink, Sink
from edge.pipeline.stages import ChainStage, InferStage, PostStage, Stage
from edge.pipeline.truth import TruthScorer

__all__ = ["resolve_model_card", "JobResult", "run_job"]

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
    return Path(card)


@dataclass
class JobResult:
    """What a job did.

    Attributes
    ----------
    result : RunResult
        Counts and latency statistics.
    metrics : dict
        The metrics document (also written to ``out/metrics.json``).
    metrics_error : str or None
        Why ``metrics.json`` could not be written (the caller still shows ``metrics``).
    """

    result: RunResult
    metrics: dict[str, Any]
    metrics_error: str | None = None


#: Bytes of one frame's outputs per pixel: two RGB PNGs (upper bound, uncompressed) and the
#: NPZ maps (six float32 maps, flags and classes).
_PNG_BYTES_PER_PIXEL = 2 * 3
_NPZ_BYTES_PER_PIXEL = 6 * 4 + 2
_METRICS_BYTES = 64 * 1024


def _check_available(backend: str, runtime: str) -> None:
    """Refuse an explicitly requested backend or runtime that cannot run here (before any
    device moves; ``auto`` decides later and says what it picked)."""
    from edge.errors import BackendUnavailable

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


def _load_card(cfg: AppConfig, preset: str | None):
    """The model card for ``preset`` (None: no model), loaded and checked."""
    card_path = resolve_model_card(cfg.model.card, preset)
    if card_path is None:
        return None
    from edge.inference import load_model_card
    return load_model_card(card_path)


def run_job(cfg: AppConfig, *, frames: int | None, out: str | os.PathLike | None,
            backend: str | None = None, runtime: str | None = None, progress: bool = False,
            null_sink: bool = False, overwrite: bool = False,
            extra_sinks: Sequence[Sink] = (), on_record=None) -> JobResult:
    """Run the main job; writes ``out/metrics.json`` (and PNG/NPZ sinks) when ``out`` is set.

    Everything that can be checked is checked before any device moves (the dark and white
    capture takes seconds): the output folder (not holding a previous run's outputs unless
    ``overwrite``, not being written by another run, room for one frame's outputs), the
    requested backend and runtime, the model card.  ``extra_sinks`` get every processed
    frame after the job's own sinks (a workflow's hook, e.g. a live preview; with one, a
    backend that can skip the reflectance cube returns it); ``on_record`` is the pipeline's
    per-frame record hook (:class:`~edge.pipeline.runner.Pipeline`).

    Raises
    ------
    ConfigError, BackendUnavailable, CalibrationError, DeviceError, HsiEdgeError
        One line each; a failure during the run keeps the figures of the frames processed
        before it in ``metrics.json`` (with ``error``).
    """
    backend = backend or cfg.processing.backend
    runtime = runtime or cfg.model.runtime
    with contextlib.ExitStack() as claim:
        # Checked before any device moves: a run must not end with nowhere to put its
        # results.  The folder stays locked until metrics.json is written.
        out_dir = (claim.enter_context(RunDir(out, overwrite=overwrite))
                   if out is not None else None)
        return _run_in(cfg, out_dir, frames=frames, backend=backend, runtime=runtime,
                       progress=progress, null_sink=null_sink, extra_sinks=extra_sinks,
                       on_record=on_record)


def _run_in(cfg: AppConfig, out_dir: Path | None, *, frames: int | None, backend: str,
            runtime: str, progress: bool, null_sink: bool,
            extra_sinks: Sequence[Sink], on_record=None) -> JobResult:
    with contextlib.ExitStack() as stack:
        _check_available(backend, runtime)
        # A replayed recording may name its preset; everything else knows it now.
        preset_known = cfg.camera.source != "replay" or cfg.camera.preset is not None
        card = _load_card(cfg, cfg.camera.preset) if preset_known else None
        # the record's verdict and expiry decide before any device moves (issue 12)
        gate = calibration_gate(cfg)
        camera, bench = build_camera(cfg, stack)
        if not preset_known:
            card = _load_card(cfg, camera_preset(cfg, camera))
        pack = None
        if card is not None:
            pack = card.pack_spec(camera.wavelengths)
            rows, cols = camera.shape[:2]
            if (card.input.height, card.input.width) != (rows, cols):
                raise ConfigError(
                    f"model.card: model {card.name!r} takes {card.input.height}x"
                    f"{card.input.width} frames but the camera delivers {rows}x{cols}")
        if out_dir is not None and not null_sink:
            pixels = camera.shape[0] * camera.shape[1]
            need = _METRICS_BYTES + pixels * (
                _PNG_BYTES_PER_PIXEL * bool(cfg.sinks.png_every)
                + _NPZ_BYTES_PER_PIXEL * bool(cfg.sinks.npz_every))
            check_free_space(out_dir, need)
        rt = None
        if card is not None:
            from edge.pipeline.runtime_choice import load_runtime
            # 'auto' picks TensorRT for a chain that runs on the GPU (the cuda backend), and
            # falls back to ONNX Runtime (with a warning) when the engine cannot be built.
            gpu_chain = backend == "cuda" or (backend == "auto" and cuda_available() is None)
            rt = load_runtime(runtime, card, threads=cfg.model.threads, gpu_chain=gpu_chain,
                              precision=cfg.model.precision, progress=progress)
            stack.callback(rt.close)   # also if the job fails before its pipeline exists
        flatfield = (obtain_flatfield(cfg, camera, progress=progress) if gate is None else
                     gate.flatfield(camera, lambda: obtain_flatfield(cfg, camera,
                                                                     progress=progress)))
        want_png = out_dir is not None and not null_sink and cfg.sinks.png_every > 0
        # The packed input stays on the GPU only for a runtime that reads device input.
        be = make_backend(backend, camera, flatfield, pack, cfg,
                          reflectance=want_png or bool(extra_sinks),
                          device_output=rt is not None and rt.accepts_device_input)
        stages: list[Stage] = [ChainStage(be)]
        runtime_name = None
        if rt is not None:
            runtime_name = rt.name
            stages += [InferStage(rt), PostStage()]
        mark = gate.stage() if gate is not None else None
        if mark is not None:
            stages.append(mark)  # marks outputs, withholds quantitative maps
        scorer = TruthScorer()
        sinks: list[Sink] = [scorer]
        if null_sink or out_dir is None:
            sinks.append(NullSink())
        else:
            if cfg.sinks.png_every:
                sinks.append(PngSink(out_dir, cfg.sinks.png_every,
                                     colors=None if card is None else card.colors,
                                     class_names=() if card is None else card.class_names,
                                     max_sigma=cfg.processing.max_sigma
                                     if cfg.processing.quality is not False else None))
            if cfg.sinks.npz_every:
                sinks.append(NpzSink(out_dir, cfg.sinks.npz_every))
        sinks.extend(extra_sinks)
        policy = cfg.pipeline.drop_policy
        if policy == "auto":  # a live (paced or externally triggered) source: newest wins
            live = cfg.camera.fps is not None or bench is not None
            policy = "newest" if live else "block"
        pipeline = Pipeline(camera, stages, sinks, queue_size=cfg.pipeline.queue_size,
                            drop_policy=policy, read_timeout_s=cfg.pipeline.read_timeout_s,
                            on_record=on_record)
        stack.callback(pipeline.close)
        start_triggers(bench)
        def metrics_of(result: RunResult, **extra: Any) -> dict[str, Any]:
            return result.metrics(
                backend=be.name, runtime=runtime_name,
                model=None if card is None else card.name,
                camera={"source": cfg.camera.source, "preset": camera_preset(cfg, camera),
                        "shape": list(camera.shape), "serial": camera.serial},
                drop_policy=policy, quality=scorer.summary(),
                host={"machine": platform.machine(), "python": platform.python_version(),
                      "cpus": os.cpu_count()},
                calibration=None if gate is None else gate.metrics(),
                version=__version__, **extra)

        try:
            result = pipeline.run(frames, progress=progress)
        except HsiEdgeError as exc:
            # keep the figures of the frames processed before the failure, with the error
            partial = getattr(exc, "partial_result", None)
            if partial is not None and out_dir is not None:
                try:
                    write_json(out_dir / "metrics.json", metrics_of(partial, error=str(exc)))
                except HsiEdgeError as write_exc:
                    # the error that stopped the run is the one to report (e.g. a full disk
                    # stopped a sink, and metrics.json cannot be written either)
                    log.warning("%s", write_exc)
            raise
        metrics = metrics_of(result)
    metrics_error = None
    if out_dir is not None:
        try:
            write_json(out_dir / "metrics.json", metrics)
        except HsiEdgeError as exc:
            metrics_error = str(exc)
    return JobResult(result, metrics, metrics_error)
