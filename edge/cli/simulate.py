"""``hsi-edge simulate``: record frames of the simulated camera to NPZ files and previews.

Output in ``--out DIR``:

- ``frame_000000.npz`` ... : ``raw`` (rows, cols, bands) uint16 counts, ``wavelengths``
  (bands,) float64 nm, ``meta`` (JSON string of :class:`~edge.core.frame.FrameMeta`), and the
  ground truth ``classes`` (uint8), ``sto2``, ``blood_volume`` (float32, NaN off tissue),
  ``reflectance`` (float32 noise-free reflectance).
- ``frame_000000.png`` ... : sRGB preview of the ground-truth reflectance
  (:func:`edge.physics.cube_to_rgb`).
- ``references.npz``: ``dark`` and ``white`` (float32 mean counts, 99 % tile) of the sensor
  model for the run's exposure/gain, ``wavelengths`` and ``class_names`` -- written once,
  since they are the same for every frame of a run.

Throughput (acquisition, and total including writing) goes to stdout; the progress bar to
stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from edge.errors import ConfigError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate", help="record frames of the simulated camera (NPZ + PNG preview)",
        description="Render frames of the simulated surgical scene through the simulated "
                    "camera and write raw cubes, ground truth and RGB previews.")
    p.add_argument("--frames", type=int, default=10, help="number of frames (default 10)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--preset", default="tivita",
                   help="camera preset: tivita, snapshot16 or snapshot25 (default tivita)")
    p.add_argument("--seed", type=int, default=0, help="scene and noise seed (default 0)")
    p.add_argument("--rows", type=int, default=None, help="override the preset's rows")
    p.add_argument("--cols", type=int, default=None, help="override the preset's columns")
    p.add_argument("--exposure-us", type=float, default=10_000.0,
                   help="exposure time in µs (default 10000)")
    p.add_argument("--gain", type=float, default=1.0, help="analogue gain (default 1)")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.set_defaults(func=run)


def _meta_json(meta) -> str:
    return json.dumps({
        "frame_id": int(meta.frame_id), "timestamp_ns": int(meta.timestamp_ns),
        "exposure_us": float(meta.exposure_us), "gain": float(meta.gain),
        "illumination": {k: float(v) for k, v in meta.illumination.items()},
        "serials": dict(meta.serials), "bit_depth": int(meta.bit_depth),
    }, sort_keys=True)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from drivers.simulated import SimulatedCamera
    from edge.physics import cube_to_rgb

    if args.frames < 1:
        raise ConfigError(f"--frames: expected an integer >= 1, got {args.frames}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} exists and is not a directory")
    cam = SimulatedCamera(args.preset, rows=args.rows, cols=args.cols, seed=args.seed)
    with cam:
        cam.configure(exposure_us=args.exposure_us, gain=args.gain, trigger_mode="software")
        out.mkdir(parents=True, exist_ok=True)
        cam.arm()
        acquire_s = first_s = 0.0
        t_start = time.perf_counter()
        for i in tqdm(range(args.frames), desc="simulate", unit="frame", file=sys.stderr,
                      disable=None):
            t0 = time.perf_counter()
            frame = cam.grab(timeout=60.0)
            dt = time.perf_counter() - t0
            acquire_s += dt
            if i == 0:
                first_s = dt
            truth = frame.truth or {}
            if i == 0:
                np.savez(out / "references.npz", dark=np.asarray(truth["dark"]),
                         white=np.asarray(truth["white"]), wavelengths=frame.wavelengths,
                         class_names=np.array(cam.class_names))
            stem = f"frame_{frame.meta.frame_id:06d}"
            np.savez(out / f"{stem}.npz", raw=frame.cube, wavelengths=frame.wavelengths,
                     meta=np.array(_meta_json(frame.meta)),
                     classes=truth["classes"], sto2=truth["sto2"],
                     blood_volume=truth["blood_volume"], reflectance=truth["reflectance"])
            if not args.no_preview:
                from PIL import Image
                Image.fromarray(cube_to_rgb(truth["reflectance"], frame.wavelengths)).save(
                    out / f"{stem}.png")
        total_s = time.perf_counter() - t_start
    n = args.frames
    rows, cols, bands = cam.shape
    print(f"wrote {n} frames to {out} ({cam.preset.name} {rows}x{cols}x{bands}, seed {args.seed})")
    print(f"acquire: {1e3 * acquire_s / n:.1f} ms/frame ({n / acquire_s:.2f} frames/s)")
    if n > 1:
        # The first frame also builds the scene; the steady state is what a stream sees.
        steady = (acquire_s - first_s) / (n - 1)
        print(f"acquire after the first frame: {1e3 * steady:.1f} ms/frame "
              f"({1 / steady:.2f} frames/s); first frame {1e3 * first_s:.1f} ms")
    print(f"total with writing: {1e3 * total_s / n:.1f} ms/frame ({n / total_s:.2f} frames/s)")
    return 0
