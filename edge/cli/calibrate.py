"""``hsi-edge calibrate``: capture and inspect flat-field calibration records.

``hsi-edge calibrate capture --out DIR [--preset tivita] [--frames N]`` captures a dark and a
white reference from the simulated camera (its ``target`` set to ``"dark"`` then ``"white"``)
and saves a :class:`~calibration.records.CalibrationRecord`.  ``hsi-edge calibrate info DIR``
verifies a record's checksums and prints its metadata and mask counts.  ``field`` (the guided
field calibration with checks, signed record and report) and ``check`` (the quick drift check)
are in :mod:`edge.cli.calibrate_field`.
"""

from __future__ import annotations

import argparse
import logging

from edge.errors import BackendUnavailable

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="capture, check or inspect calibration records; guided field calibration",
        description="Capture a dark + white calibration record from the simulated camera, "
                    "run the guided field calibration (field) or the quick drift check "
                    "(check), or verify a record and print its metadata and mask counts.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    cap = sub.add_parser("capture", help="capture dark + white from the simulated camera")
    cap.add_argument("--out", required=True, metavar="DIR", help="record directory to create")
    cap.add_argument("--preset", default="tivita", help="simulated camera preset (default tivita)")
    cap.add_argument("--frames", type=int, default=None, metavar="N",
                     help="frames averaged per reference (default: 100 dark, 20 white)")
    cap.add_argument("--exposure-us", type=float, default=None, metavar="US",
                     help="exposure for dark and white (default: the camera's)")
    cap.add_argument("--gain", type=float, default=None, help="analogue gain (default: camera's)")
    cap.add_argument("--rows", type=int, default=None, help="override the preset's rows")
    cap.add_argument("--cols", type=int, default=None, help="override the preset's cols")
    cap.add_argument("--rho-ref", type=float, default=0.99,
                     help="white tile reflectance (default 0.99, Spectralon SRS-99)")
    cap.add_argument("--overwrite", action="store_true",
                     help="replace an existing record (the old one is kept as a backup)")
    cap.set_defaults(func=run)

    info = sub.add_parser("info", help="verify a record and print its metadata and mask counts")
    info.add_argument("dir", metavar="DIR", help="record directory")
    info.set_defaults(func=run)

    from edge.cli.calibrate_field import add_field_parsers
    add_field_parsers(sub, run)


def run(args: argparse.Namespace) -> int:
    if args.action == "capture":
        return _capture(args)
    if args.action in ("field", "check"):
        from edge.cli import calibrate_field
        return calibrate_field.run_field(args) if args.action == "field" \
            else calibrate_field.run_check(args)
    return _info(args)


def _capture(args: argparse.Namespace) -> int:
    try:
        from drivers.simulated import SimulatedCamera
    except ModuleNotFoundError as exc:
        if exc.name not in ("drivers.simulated",):
            raise
        raise BackendUnavailable(
            "calibrate capture: drivers.simulated.SimulatedCamera is not available in this "
            "installation") from exc
    import math

    from calibration.records import CalibrationRecord
    from calibration.references import capture_dark, capture_white
    from edge.errors import ConfigError

    # Everything that can be checked is checked before the lens is capped and the tile placed.
    if not (math.isfinite(args.rho_ref) and 0 < args.rho_ref <= 1):
        raise ConfigError(f"--rho-ref: expected the white tile's reflectance in (0, 1], got "
                          f"{args.rho_ref:g}")
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames: expected an integer >= 1, got {args.frames}")
    CalibrationRecord.check_target(args.out, overwrite=args.overwrite,
                                   overwrite_hint="--overwrite")
    kwargs = {"preset": args.preset}
    if args.rows is not None:
        kwargs["rows"] = args.rows
    if args.cols is not None:
        kwargs["cols"] = args.cols
    n_dark = args.frames if args.frames is not None else 100
    n_white = args.frames if args.frames is not None else 20
    with SimulatedCamera(**kwargs) as cam:
        cam.target = "dark"
        dark = capture_dark(cam, n_dark, exposure_us=args.exposure_us, gain=args.gain,
                            progress=True)
        cam.target = "white"
        white = capture_white(cam, n_white, dark=dark, progress=True)
        cam.target = "scene"
    record = CalibrationRecord.from_references(dark, white, rho_ref=args.rho_ref)
    path = record.save(args.out, overwrite=args.overwrite)
    print(f"saved calibration record {path}")
    _print_summary(record)
    return 0


def _info(args: argparse.Namespace) -> int:
    from calibration.records import CalibrationRecord

    record = CalibrationRecord.load(args.dir)
    print(f"record: {record.path}")
    _print_summary(record)
    from calibration.qc import read_qc
    from calibration.status import default_history_root, record_status

    qc = read_qc(record)
    if qc:
        print(f"field calibration: {qc['verdict']}, signed {qc['signed']} by {qc['operator']}, "
              f"valid until {qc['valid_until']}, thresholds {qc['thresholds_version']}")
    status = record_status(record, history_root=default_history_root(args.dir))
    print(f"status: {status.state} ({status.reason})")
    return 0


def _print_summary(record) -> None:
    meta = record.metadata()
    meta.pop("qc", None)  # summarised by `info` below the metadata
    wl = meta.pop("wavelengths")
    for key, value in meta.items():
        print(f"{key}: {value}")
    print(f"wavelengths: {len(wl)} bands, {wl[0]:g}-{wl[-1]:g} nm")
    pixels = record.shape[0] * record.shape[1]
    for name, count in record.mask_counts().items():
        print(f"mask {name}: {count} pixel(s) ({100.0 * count / pixels:.3f} %)")
