"""``hsi-edge bench``: latency of the per-pixel chain and the model, as ratios measured in one run.

On shared machines absolute times vary by tens of percent between runs, so every figure is
also given relative to a reference measured in the same run: the chain against the memory
floor implied by a copy bandwidth (bytes that must move: the raw frame and the float32 dark and
scale references read once; reflectance, packed input, six maps and the flags written once,
:func:`edge.backends.base.chain_bytes`), and the model against the chain.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

__all__ = ["register", "run", "measure"]


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the chain and the model (ratios in one run)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tivita", "snapshot16", "snapshot25"), default="tivita")
    p.add_argument("--backend", choices=("auto", "numpy", "native", "cuda"), default="auto")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per figure (median)")
    p.add_argument("--model", default="demo", help="model card, 'demo' or 'none'")
    p.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def _median_s(fn, repeat: int) -> float:
    fn()  # warm-up: page faults, caches, lazy initialisation
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(preset: str = "tivita", backend: str = "auto", repeat: int = 10,
            model: str = "demo") -> dict:
    """Run the benchmark and return its figures (ms, GB/s and ratios)."""
    import dataclasses

    from drivers.simulated import SimulatedCamera
    from edge.backends.base import chain_bytes
    from edge.errors import HsiEdgeError
    from edge.pipeline.app import make_backend, obtain_flatfield, resolve_model_card
    from edge.pipeline.config import AppConfig, CalibrationSettings, ProcessingSettings

    if repeat < 1:
        raise HsiEdgeError(f"repeat: expected an integer >= 1, got {repeat}")
    # The floor counts the chain's bytes only (calibrate -> unmix -> indices -> pack): the
    # chain is timed without the StO2 quality step and without a snapshot camera's band
    # registration (edge.processing.register), each timed on its own below.
    cfg = AppConfig(calibration=CalibrationSettings(frames=4),
                    processing=ProcessingSettings(backend=backend, quality=False,
                                                  register=False))
    with SimulatedCamera(preset, seed=0) as cam:
        cam.configure(trigger_mode="software")
        flatfield = obtain_flatfield(cfg, cam)
        cam.arm()
        frame = cam.grab(timeout=30.0)
    card = pack = None
    card_path = resolve_model_card(model, preset)
    if card_path is not None:
        from edge.inference import load_model_card
        card = load_model_card(card_path)
        pack = card.pack_spec(cam.wavelengths)
    be = make_backend(backend, cam, flatfield, pack, cfg)
    raw = frame.cube
    rows, cols, bands = raw.shape
    src = np.ones(raw.shape, np.float32)
    dst = np.empty_like(src)
    t_copy = _median_s(lambda: np.copyto(dst, src), repeat)
    copy_gbps = 2 * src.nbytes / t_copy / 1e9
    moved = chain_bytes(raw.shape, raw_itemsize=raw.itemsize, flatfield=flatfield is not None,
                        pack=pack)
    floor_s = moved / (copy_gbps * 1e9)
    t_chain = _median_s(lambda: be.run(raw, exposure_us=frame.meta.exposure_us), repeat)
    figures = {
        "machine": {"cpu": _cpu_name(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count()},
        "preset": preset, "shape": [rows, cols, bands], "backend": be.name,
        "copy_GBps": copy_gbps, "floor_ms": floor_s * 1e3, "chain_ms": t_chain * 1e3,
        "chain_vs_floor": t_chain / floor_s,
    }
    rcfg = dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing,
                                                                    register=None))
    be_r = make_backend(backend, cam, flatfield, pack, rcfg)
    if be_r.plan.registration is not None:
        # The backend's own registration as its run reports it (timings_ms["register"]:
        # numpy the NumPy pass, native the compiled one, cuda the device time).
        regs = [be_r.run(raw, exposure_us=frame.meta.exposure_us).timings_ms["register"]
                for _ in range(repeat + 1)][1:]
        t_reg = float(np.median(regs)) / 1e3
        figures.update(register_ms=t_reg * 1e3, register_vs_copy=t_reg / t_copy)
    be_r.close()
    try:
        qcfg = dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing,
                                                                       quality=True))
        be_q = make_backend(backend, cam, flatfield, pack, qcfg)
    except HsiEdgeError as e:       # a backend without the quality step says why
        figures["quality"] = str(e)
    else:
        be_q.run(raw, exposure_us=frame.meta.exposure_us)          # warm (spatial buffers)
        t_q = _median_s(lambda: be_q.run(raw, exposure_us=frame.meta.exposure_us), repeat)
        be_q.close()
        figures.update(chain_quality_ms=t_q * 1e3, quality_ms=(t_q - t_chain) * 1e3)
    threads = getattr(be, "threads", 1)
    if threads > 1 and hasattr(be, "copy"):
        # A multi-threaded chain against the bandwidth its threads can reach: a one-thread
        # copy understates the floor (2 vCPUs here: ~1.4x the one-thread copy bandwidth).
        t_copy_n = _median_s(lambda: be.copy(src, dst), repeat)
        copy_n = 2 * src.nbytes / t_copy_n / 1e9
        floor_n = moved / (copy_n * 1e9)
        figures.update(threads=threads, copy_GBps_threads=copy_n, floor_ms_threads=floor_n * 1e3,
                       chain_vs_floor_threads=t_chain / floor_n)
    if card is not None:
        from edge.inference import open_runtime
        x = be.run(raw, exposure_us=frame.meta.exposure_us).input
        with open_runtime("onnxruntime", card) as rt:
            t_model = _median_s(lambda: rt.run(x), repeat)
        figures.update(model=card.name, model_ms=t_model * 1e3,
                       model_vs_chain=t_model / t_chain)
    be.close()
    return figures


def run(args: argparse.Namespace) -> int:
    if args.json_path:
        _check_json_path(args.json_path)  # before minutes of measuring, not after
    f = measure(args.preset, args.backend, args.repeat, args.model)
    print(f"machine: {f['machine']['cpu']}, Python {f['machine']['python']}; "
          f"{f['preset']} frame {tuple(f['shape'])}, backend {f['backend']}")
    print(f"copy bandwidth        {f['copy_GBps']:8.1f} GB/s")
    print(f"chain floor           {f['floor_ms']:8.1f} ms")
    print(f"chain (median)        {f['chain_ms']:8.1f} ms   = {f['chain_vs_floor']:.1f}x floor")
    if "register_ms" in f:
        print(f"band registration     {f['register_ms']:8.1f} ms   = "
              f"{f['register_vs_copy']:.0f}x a copy of the frame (before the chain)")
    if "chain_quality_ms" in f:
        print(f"chain + quality step  {f['chain_quality_ms']:8.1f} ms   (StO2 sigma, validity "
              f"mask, spatial step: +{f['quality_ms']:.1f} ms)")
    if "threads" in f:
        print(f"copy, {f['threads']} threads      {f['copy_GBps_threads']:8.1f} GB/s -> floor "
              f"{f['floor_ms_threads']:.1f} ms: chain = {f['chain_vs_floor_threads']:.1f}x "
              f"that floor")
    if "model_ms" in f:
        print(f"model {f['model']:<15} {f['model_ms']:8.1f} ms   = {f['model_vs_chain']:.2f}x chain")
    if args.json_path:
        from edge.pipeline.app import write_json
        write_json(args.json_path, f)
    return 0


def _cpu_name() -> str:
    """CPU model name (``/proc/cpuinfo``), else ``platform.processor()`` or the machine."""
    from edge.core.hostinfo import cpu_model
    return cpu_model() or platform.machine()


def _check_json_path(path: str) -> None:
    """Raise ConfigError unless ``path`` names a file that can be created or replaced."""
    import tempfile
    from pathlib import Path

    from edge.errors import ConfigError

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--json: {path!r} is a directory; give a file name")
    if not target.parent.is_dir():
        raise ConfigError(f"--json: folder {str(target.parent)!r} does not exist")
    try:
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as exc:
        raise ConfigError(f"--json: cannot write to {str(target.parent)!r}: "
                          f"{exc.strerror or exc}") from exc
