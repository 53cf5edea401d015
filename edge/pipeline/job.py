"""The main job: the frame path of :func:`edge.pipeline.assembly.assemble_chain` (camera ->
calibration gate / flat field -> backend chain -> model -> post), the job's sinks, then
``metrics.json``.  Used by ``hsi-edge run`` and ``hsi-edge bench``."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from edge import __version__
from edge.errors import HsiEdgeError
from edge.pipeline.assembly import assemble_chain, resolve_model_card
from edge.pipeline.cameras import camera_preset, start_triggers
from edge.pipeline.config import AppConfig
from edge.pipeline.outputs import RunDir, check_free_space, write_json
from edge.pipeline.runner import Pipeline, RunResult
from edge.pipeline.sinks import NpzSink, NullSink, PngSink, Sink
from edge.pipeline.truth import TruthScorer

__all__ = ["resolve_model_card", "JobResult", "run_job"]

log = logging.getLogger(__name__)


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


def run_job(cfg: AppConfig, *, frames: int | None, out: str | os.PathLike | None,
            backend: str | None = None, runtime: str | None = None, progress: bool = False,
            null_sink: bool = False, overwrite: bool = False,
            extra_sinks: Sequence[Sink] = (), on_record=None,
            on_camera: Callable[[Any], None] | None = None) -> JobResult:
    """Run the main job; writes ``out/metrics.json`` (and PNG/NPZ sinks) when ``out`` is set.

    Everything that can be checked is checked before any device moves (the dark and white
    capture takes seconds): the output folder (not holding a previous run's outputs unless
    ``overwrite``, not being written by another run, room for one frame's outputs), the
    requested backend and runtime, the model card.  ``extra_sinks`` get every processed
    frame after the job's own sinks (a workflow's hook, e.g. a live preview; with one, a
    backend that can skip the reflectance cube returns it); ``on_record`` is the pipeline's
    per-frame record hook (:class:`~edge.pipeline.runner.Pipeline`); ``on_camera`` is called
    with the opened camera before the first frame (a workflow that needs its properties, e.g.
    the service page's spectrum fit takes the camera's band FWHM).

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
                       on_record=on_record, on_camera=on_camera)


def _run_in(cfg: AppConfig, out_dir: Path | None, *, frames: int | None, backend: str,
            runtime: str, progress: bool, null_sink: bool,
            extra_sinks: Sequence[Sink], on_record=None, on_camera=None) -> JobResult:
    with contextlib.ExitStack() as stack:
        def camera_opened(camera) -> None:
            """The caller's hook, then room for one frame's outputs."""
            if on_camera is not None:
                on_camera(camera)
            if out_dir is not None and not null_sink:
                pixels = camera.shape[0] * camera.shape[1]
                need = _METRICS_BYTES + pixels * (
                    _PNG_BYTES_PER_PIXEL * bool(cfg.sinks.png_every)
                    + _NPZ_BYTES_PER_PIXEL * bool(cfg.sinks.npz_every))
                check_free_space(out_dir, need)

        want_png = out_dir is not None and not null_sink and cfg.sinks.png_every > 0
        chain = assemble_chain(cfg, stack, backend=backend, runtime=runtime, progress=progress,
                               reflectance=want_png or bool(extra_sinks), on_camera=camera_opened)
        camera, bench, card, be = chain.camera, chain.bench, chain.card, chain.backend
        stages, runtime_name = chain.stages, chain.runtime_name
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
                calibration=chain.calibration_metrics(),
                sto2_table=be.calibration.describe(),   # processing.sto2_table's choice
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
