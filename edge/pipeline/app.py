"""Assemble and run the main job from an :class:`~edge.pipeline.config.AppConfig`.

camera (simulated, replay or the simulated bench) -> flat-field calibration (a saved record,
or dark and white references captured at start) -> backend chain -> model -> post -> sinks,
then ``metrics.json``.  Used by ``hsi-edge run`` and ``hsi-edge bench``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.core.fileio import atomic_write_bytes
from edge.errors import BackendUnavailable, CalibrationError, ConfigError, HsiEdgeError
from edge.pipeline.config import AppConfig
from edge.pipeline.runner import Pipeline, RunResult
from edge.pipeline.sinks import NpzSink, NullSink, PngSink, Sink
from edge.pipeline.stages import ChainStage, InferStage, PostStage, Stage

__all__ = ["build_camera", "obtain_flatfield", "make_backend", "resolve_model_card", "run_job",
           "JobResult", "cuda_available", "prepare_out_dir", "write_json", "json_safe"]

log = logging.getLogger(__name__)

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


def obtain_flatfield(cfg: AppConfig, camera, *, progress: bool = False):
    """The flat-field for this camera: from a saved record, or captured now.

    Returns None for cameras that deliver float32 reflectance (e.g. TIVITA recordings).

    Raises
    ------
    CalibrationError
        The record does not fit the camera (serial, shape, exposure, gain), or the camera
        cannot capture references (no record given for a raw replay).
    """
    from calibration.records import CalibrationRecord

    cal = cfg.calibration
    frame_is_raw = getattr(camera, "dtype", np.dtype(np.uint16)) == np.uint16
    if not frame_is_raw:
        if cal.record:
            # Said, not silent: the user asked for a record that will not be applied.
            log.warning("calibration.record %s is not applied: the recording holds calibrated "
                        "reflectance (%s), not raw counts", cal.record, camera.dtype)
        return None
    if cal.record:
        record = CalibrationRecord.load(cal.record)
        serial = camera.serial if getattr(camera, "serial_known", True) else None
        record.check_compatible(serial, camera.shape, camera.exposure_us, camera.gain,
                                wavelengths=camera.wavelengths)
        return record.flatfield()
    if not hasattr(camera, "target"):
        raise CalibrationError(
            "calibration.record: this camera cannot capture dark/white references by itself; "
            "give a record from `hsi-edge calibrate capture`")
    from calibration.references import capture_dark, capture_white

    # References are captured with software triggers; an externally triggered camera is
    # switched over for the capture and back afterwards.
    mode = camera.trigger_mode
    if mode != "software":
        camera.disarm()
        camera.configure(trigger_mode="software")
    camera.target = "dark"
    try:
        dark = capture_dark(camera, cal.frames, progress=progress)
        camera.target = "white"
        white = capture_white(camera, cal.frames, dark=dark, progress=progress)
    finally:
        camera.target = "scene"
        if mode != "software":
            camera.disarm()
            camera.configure(trigger_mode=mode)
    return CalibrationRecord.from_references(dark, white, rho_ref=cal.rho_ref).flatfield()


def cuda_available() -> str | None:
    """None when the CUDA backend can run here, otherwise the reason it cannot."""
    from edge.backends.cuda import import_pycuda  # imports PyCUDA only inside the call
    try:
        import_pycuda()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def make_backend(name: str, camera, flatfield, pack, cfg: AppConfig, *,
                 device_output: bool = False, reflectance: bool = True):
    """Create the per-pixel backend; ``auto`` picks cuda when usable, else numpy (logged).

    The configuration is built once as a :class:`~edge.processing.plan.ChainPlan` that the
    backend runs.  ``device_output`` asks a backend that offers it (cuda) to leave the packed
    input on the GPU -- pass it only for a runtime that ``accepts_device_input``;
    ``reflectance`` (cuda only) copies the reflectance back for the PNG overlay.
    """
    from edge.processing.plan import ChainPlan

    if name == "auto":
        reason = cuda_available()
        name = "numpy" if reason else "cuda"
        log.info("backend auto: picked %s%s", name, f" ({reason})" if reason else "")
    plan = ChainPlan.build(camera.wavelengths, flatfield=flatfield, pack=pack,
                           fwhm_nm=camera.fwhm_nm, chromophores=cfg.processing.chromophores,
                           baseline=cfg.processing.baseline)
    if name == "cuda":
        from edge.backends.cuda import CudaBackend
        return CudaBackend(plan, device_output=device_output, return_reflectance=reflectance)
    if name == "native":
        from edge.backends.native import NativeBackend
        return NativeBackend(plan)
    from edge.backends.numpy_backend import NumpyBackend
    return NumpyBackend(plan)


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


class TruthScorer(Sink):
    """Scores StO2 against the simulator's ground truth (valid tissue pixels only)."""

    name = "truth"

    def __init__(self) -> None:
        # running sums, not one float per frame: a live run may last hours (issue 15 item 10)
        self.frames = 0
        self.sum_abs_err = 0.0
        self.sum_err = 0.0

    def write(self, frame) -> None:
        truth, est = frame.truth, frame.products.get("sto2")
        if not truth or est is None or "sto2" not in truth:
            return
        ok = np.isfinite(truth["sto2"]) & np.isfinite(est)
        if ok.any():
            d = (est[ok] - truth["sto2"][ok]).astype(np.float64)
            self.frames += 1
            self.sum_err += float(d.mean())
            self.sum_abs_err += float(np.abs(d).mean())

    def summary(self) -> dict[str, float] | None:
        if not self.frames:
            return None
        return {"sto2_mae_pp": 100 * self.sum_abs_err / self.frames,
                "sto2_bias_pp": 100 * self.sum_err / self.frames}


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


def prepare_out_dir(out: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output folder and prove it is writable; returns its path.

    Raises
    ------
    ConfigError
        ``out`` is a file, cannot be created, or cannot be written (read-only file system,
        permissions, disk full), naming the option and the folder.
    """
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{option}: {str(out_dir)!r} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # os.access lies for root and on read-only mounts; a real file creation does not.
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write to {str(out_dir)!r}: "
                          f"{exc.strerror or exc}") from exc
    return out_dir


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None and numpy scalars/arrays made Python.

    ``json.dumps`` would otherwise write the bare tokens ``NaN``/``Infinity``, which are not
    JSON (RFC 8259) and break strict readers; a figure that does not exist (no samples, no
    frames) is ``null``.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, doc: Any) -> None:
    """Write ``doc`` as strict JSON (non-finite numbers as null), atomically.

    Raises
    ------
    HsiEdgeError
        The file cannot be written (names the file and the reason).
    """
    text = json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise HsiEdgeError(f"{path}: cannot write: {exc.strerror or exc}") from exc
