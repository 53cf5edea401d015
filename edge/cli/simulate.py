"""``hsi-edge simulate``: record frames of the simulated camera, with ground truth, previews and
a calibration record.

Output in ``--out DIR`` (a recording that ``hsi-edge run`` can replay, see the README):

- ``frame_000000.npz`` ... : written by :class:`drivers.recorder.Recorder` (``cube`` uint16 raw
  counts (rows, cols, bands), ``wavelengths``, ``meta``) with the ground truth as
  ``truth_classes`` (uint8), ``truth_sto2``, ``truth_blood_volume`` (float32, NaN off tissue)
  and ``truth_reflectance`` (float32 noise-free reflectance); ``recording.json`` manifest
  with the camera preset, band FWHM, the bands' mosaic offsets (snapshot presets), bit depth,
  exposure and gain, so a replay is processed exactly as recorded without being told, and a
  completion mark written last.
- ``frame_000000.png`` ... : sRGB preview (named like the frame file it shows) of the ground-truth reflectance
  (:func:`edge.physics.cube_to_rgb`, a true-colour rendering from the spectra).
- ``calibration/``: a calibration record (dark with the lens capped, white tile) captured
  through the same camera, so raw frames can be calibrated when replayed.

With ``--overwrite`` the new recording is written into a temporary folder beside ``--out``
and swapped in only when complete: an interrupted run leaves the old recording as it was.

Throughput (acquisition, and total including writing) goes to stdout; the progress bar to
stderr.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time


from drivers.camera import DEFAULT_EXPOSURE_US
from edge.core.fileio import atomic_write_bytes
from edge.errors import ConfigError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)
_PREVIEWS = "frame_[0-9][0-9][0-9][0-9][0-9][0-9].png"


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
    p.add_argument("--exposure-us", type=float, default=DEFAULT_EXPOSURE_US,
                   help=f"exposure time in µs (default {DEFAULT_EXPOSURE_US:g})")
    p.add_argument("--gain", type=float, default=1.0, help="analogue gain (default 1)")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    p.add_argument("--calibration-frames", type=int, default=8,
                   help="frames averaged for the dark and the white reference (default 8)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing recording in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from drivers.simulated import SimulatedCamera
    from edge.physics import cube_to_rgb

    if args.frames < 1:
        raise ConfigError(f"--frames: expected an integer >= 1, got {args.frames}")
    if args.calibration_frames < 1:
        raise ConfigError(f"--calibration-frames: expected an integer >= 1, got "
                          f"{args.calibration_frames}")
    from calibration.records import CalibrationRecord
    from calibration.references import capture_dark, capture_white
    from drivers.recorder import Recorder
    from edge.pipeline.app import prepare_out_dir

    out = prepare_out_dir(args.out)
    # Before the recorder removes an old recording (--overwrite): the calibration record
    # beside it must be savable too, or the run would end with frames and no calibration.
    CalibrationRecord.check_target(out / "calibration", overwrite=args.overwrite,
                                   overwrite_hint="--overwrite")
    cam = SimulatedCamera(args.preset, rows=args.rows, cols=args.cols, seed=args.seed)
    # With --overwrite and an old recording, everything goes to recorder.work_dir (a folder
    # beside --out) and replaces the old recording, previews and calibration at close only.
    with cam, Recorder(out, "npz", overwrite=args.overwrite, fwhm_nm=cam.fwhm_nm,
                       band_offsets=cam.band_offsets, preset=cam.preset.name,
                       expected_frames=args.frames, companions=("calibration", _PREVIEWS),
                       keep_replaced=("calibration",)) as recorder:
        work = recorder.work_dir
        if args.overwrite:
            # previews of a replaced recording would otherwise stay beside the new frames
            for old in work.glob(_PREVIEWS):
                old.unlink()
        cam.configure(exposure_us=args.exposure_us, gain=args.gain, trigger_mode="software")
        cam.target = "dark"
        dark = capture_dark(cam, args.calibration_frames)
        cam.target = "white"
        white = capture_white(cam, args.calibration_frames, dark=dark)
        cam.target = "scene"
        CalibrationRecord.from_references(dark, white).save(work / "calibration",
                                                            overwrite=args.overwrite)
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
            # dark/white means are in the calibration record, not repeated in every frame
            truth = {k: v for k, v in (frame.truth or {}).items() if k not in ("dark", "white")}
            index = recorder.count  # the preview is named like its frame file
            recorder.write(frame.replace(truth=truth))
            if not args.no_preview:
                from PIL import Image
                buf = io.BytesIO()
                Image.fromarray(cube_to_rgb(truth["reflectance"], frame.wavelengths)).save(
                    buf, format="PNG")
                atomic_write_bytes(work / f"frame_{index:06d}.png", buf.getvalue())
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
