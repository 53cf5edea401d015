"""Job assembly: camera -> flat field -> backend chain -> model -> post -> sinks, then
``metrics.json``.  Used by ``hsi-edge run`` and ``hsi-edge bench``."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.errors import ConfigError, HsiEdgeError
from edge.pipeline.backend_factory import cuda_available, make_backend
from edge.pipeline.cameras import DEFAULT_PRESET, build_camera, camera_preset, start_triggers
from edge.pipeline.config import AppConfig
from edge.pipeline.outputs import prepare_out_dir, write_json
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
    result: RunResult
    metrics: dict[str, Any]


def run_job(cfg: AppConfig, *, frames: int | None, out: str | os.PathLike | None,
            backend: str | None = None, runtime: str | None = None, progress: bool = False,
            null_sink: bool = False) -> JobResult:
    """Run the main job; writes ``out/metrics.json`` (and PNG/NPZ sinks) when ``out`` is set."""
    backend = backend or cfg.processing.backend
    runtime = runtime or cfg.model.runtime
    # Checked before any device moves: a run must not end with nowhere to put its results.
    out_dir = prepare_out_dir(out) if out is not None else None
    with contextlib.ExitStack() as stack:
        camera, bench = build_camera(cfg, stack)
        flatfield = obtain_flatfield(cfg, camera, progress=progress)
        card_path = resolve_model_card(cfg.model.card, camera_preset(cfg, camera))
        card = pack = None
        if card_path is not None:
            from edge.inference import load_model_card
            card = load_model_card(card_path)
            pack = card.pack_spec(camera.wavelengths)
            rows, cols = camera.shape[:2]
            if (card.input.height, card.input.width) != (rows, cols):
                raise ConfigError(
                    f"model.card: model {card.name!r} takes {card.input.height}x"
                    f"{card.input.width} frames but the camera delivers {rows}x{cols}")
        want_png = out_dir is not None and not null_sink and cfg.sinks.png_every > 0
        rt = None
        if card is not None:
            from edge.inference import open_runtime
            # 'auto' picks TensorRT for a chain that runs on the GPU (the cuda backend).
            gpu_chain = backend == "cuda" or (backend == "auto" and cuda_available() is None)
            rt = open_runtime(runtime, card, threads=cfg.model.threads, gpu_chain=gpu_chain)
        # The packed input stays on the GPU only for a runtime that reads device input.
        be = make_backend(backend, camera, flatfield, pack, cfg, reflectance=want_png,
                          device_output=rt is not None and rt.accepts_device_input)
        stages: list[Stage] = [ChainStage(be)]
        runtime_name = None
        if rt is not None:
            rt.load()
            runtime_name = rt.name
            stages += [InferStage(rt), PostStage()]
        scorer = TruthScorer()
        sinks: list[Sink] = [scorer]
        if null_sink or out_dir is None:
            sinks.append(NullSink())
        else:
            if cfg.sinks.png_every:
                sinks.append(PngSink(out_dir, cfg.sinks.png_every,
                                     colors=None if card is None else card.colors,
                                     class_names=() if card is None else card.class_names))
            if cfg.sinks.npz_every:
                sinks.append(NpzSink(out_dir, cfg.sinks.npz_every))
        policy = cfg.pipeline.drop_policy
        if policy == "auto":  # a live (paced or externally triggered) source: newest wins
            live = cfg.camera.fps is not None or bench is not None
            policy = "newest" if live else "block"
        pipeline = Pipeline(camera, stages, sinks, queue_size=cfg.pipeline.queue_size,
                            drop_policy=policy, read_timeout_s=cfg.pipeline.read_timeout_s)
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
                version=__version__, **extra)

        try:
            result = pipeline.run(frames, progress=progress)
        except HsiEdgeError as exc:
            # keep the figures of the frames processed before the failure, with the error
            partial = getattr(exc, "partial_result", None)
            if partial is not None and out_dir is not None:
                write_json(out_dir / "metrics.json", metrics_of(partial, error=str(exc)))
            raise
        metrics = metrics_of(result)
    if out_dir is not None:
        write_json(out_dir / "metrics.json", metrics)
    return JobResult(result, metrics)
