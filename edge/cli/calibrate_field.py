"""``hsi-edge calibrate field`` and ``hsi-edge calibrate check`` (issue 12).

``field`` runs the guided field calibration (:mod:`calibration.field`) on the simulated
camera: interactive prompts by default, or ``--non-interactive`` where the simulated bench
places the targets itself.  ``check`` is the quick start-of-day drift check against a record.
Both append to the camera's history (``--history``, default beside the record folder).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from edge.errors import ConfigError

__all__ = ["add_field_parsers", "run_field", "run_check"]

log = logging.getLogger(__name__)

_CERT_ROLES = (("white", "white"), ("grey", "grey_tile"), ("colour", "colour_tile"),
               ("wavelength", "wavelength_std"), ("edge", "slanted_edge"))


def _camera_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None,
                   help="simulated camera preset (default: --config's camera.preset, else tivita)")
    p.add_argument("--rows", type=int, default=None, help="override the preset's rows")
    p.add_argument("--cols", type=int, default=None, help="override the preset's cols")
    p.add_argument("--seed", type=int, default=None, help="simulated unit (default 0)")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                   help="simulated fault with its magnitude, e.g. lamp_dimming=0.1 (repeatable; "
                        "drivers/sim/faults_optical.py lists them)")
    p.add_argument("--history", default=None, metavar="DIR",
                   help="calibration history folder (default: calibration-history beside the "
                        "record folder)")
    p.add_argument("--thresholds", default=None, metavar="FILE",
                   help="site limits over calibration/thresholds.yaml ({check: {warn:, fail:}})")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="the unit's run config: its camera (preset, size, seed, exposure, gain) "
                        "and calibration.history/thresholds are used unless given here")
    p.add_argument("--operator", default=None, help="who calibrates (recorded)")
    p.add_argument("--non-interactive", action="store_true",
                   help="scripted: the simulated bench places the targets itself")


def add_field_parsers(sub, func) -> None:
    fld = sub.add_parser(
        "field", help="guided field calibration with checks, signed record and report",
        description="Identify -> environment -> warm-up -> dark -> white -> verify -> optional "
                    "checks -> sign.  Refuses to go on at a FAIL and says what to fix; the "
                    "previous record in DIR is kept (as a timestamped backup when replaced).")
    fld.add_argument("--out", required=True, metavar="DIR", help="record folder")
    _camera_args(fld)
    fld.add_argument("--exposure-us", type=float, default=None,
                     help="frame exposure of the record (the run's camera.exposure_us)")
    fld.add_argument("--gain", type=float, default=None,
                     help="analogue gain of the record (default: --config's camera.gain, else 1)")
    for flag, role in _CERT_ROLES:
        fld.add_argument(f"--{flag}-cert", default=None, metavar="FILE",
                         help=f"certificate of the {role.replace('_', ' ')} (YAML/JSON); "
                              "simulated camera: the simulator's when not given")
    fld.add_argument("--tile-id", action="append", default=[], metavar="ROLE=ID",
                     help="tile id read from the tile, e.g. grey=SIM-GREY-50 (checked against "
                          "its certificate)")
    fld.add_argument("--optional", default="", metavar="LIST",
                     help="optional checks: comma list of linearity, snr, wavelength, mtf, or "
                          "'all' (after service, monthly, or when the drift history flags)")
    fld.add_argument("--valid-hours", type=float, default=24.0,
                     help="validity of the signed record (default 24 h, capped by the tile "
                          "certificates' expiry)")
    fld.add_argument("--allow-fail", action="store_true",
                     help="sign a FAILED record anyway (documents a failed unit; a run then "
                          "yields no StO2 maps)")
    fld.add_argument("--no-plots", action="store_true", help="report without PNG plots")
    fld.set_defaults(func=func)

    chk = sub.add_parser("check", help="quick drift check: a few white frames against a record",
                         description="Start-of-day check: the white tile against the record's "
                                     "white.  Above its FAIL limit a run treats the record as "
                                     "expired.")
    chk.add_argument("record", metavar="DIR", help="record folder")
    _camera_args(chk)
    chk.add_argument("--frames", type=int, default=4, help="white frames (default 4)")
    chk.set_defaults(func=func)


def _camera(args):
    from drivers.sim.faults_optical import OpticalFaults
    from drivers.simulated import SimulatedCamera

    faults = {}
    for item in args.fault:
        name, sep, value = item.partition("=")
        try:
            faults[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--fault: expected NAME=NUMBER, got {item!r}")
    try:
        fault_obj = OpticalFaults(**faults) if faults else None
    except TypeError:
        import dataclasses
        known = [f.name for f in dataclasses.fields(OpticalFaults) if f.name != "seed"]
        bad = sorted(set(faults) - set(known))
        raise ConfigError(f"--fault: unknown fault {', '.join(bad)}; allowed: "
                          f"{', '.join(known)}") from None
    kwargs = {k: getattr(args, k) for k in ("rows", "cols") if getattr(args, k) is not None}
    cam = SimulatedCamera(args.preset, seed=args.seed, **kwargs)
    cam.faults = fault_obj
    return cam


def _site(args) -> None:
    """Fill what was not given from the run config (--config), else the defaults: a record
    must match the run's camera settings or ``hsi-edge run`` refuses it."""
    from edge.pipeline.config import AppConfig, load_app_config
    cfg = load_app_config(args.config) if args.config else AppConfig()
    cam, cal = cfg.camera, cfg.calibration
    args.history = args.history or cal.history
    args.thresholds = args.thresholds or cal.thresholds
    args.preset = args.preset or cam.preset or "tivita"
    args.seed = cam.seed if args.seed is None else args.seed
    args.rows = cam.rows if args.rows is None else args.rows
    args.cols = cam.cols if args.cols is None else args.cols
    if hasattr(args, "exposure_us"):
        args.exposure_us = cam.exposure_us if args.exposure_us is None else args.exposure_us
        args.gain = cam.gain if args.gain is None else args.gain


def _table(args):
    from calibration.thresholds import load_thresholds
    _site(args)
    return load_thresholds(args.thresholds) if args.thresholds else load_thresholds()


def _placer(args, cam):
    from calibration.placers import InteractivePlacer, ScriptedPlacer
    return ScriptedPlacer(cam) if args.non_interactive else InteractivePlacer(cam)


def _history(args, record_dir) -> Path:
    from calibration.status import default_history_root
    return Path(args.history) if args.history else default_history_root(record_dir)


def run_field(args: argparse.Namespace) -> int:
    import getpass

    from calibration.certificates import load_certificate
    from calibration.field import OPTIONAL, FieldCalibration, FieldSettings
    from drivers.sim.targets import certificate

    opt = [o.strip() for o in args.optional.split(",") if o.strip()]
    if opt == ["all"]:
        opt = list(OPTIONAL)
    bad = sorted(set(opt) - set(OPTIONAL))
    if bad:
        raise ConfigError(f"--optional: unknown check(s) {', '.join(bad)}; allowed: "
                          f"{', '.join(OPTIONAL)}, all")
    tile_ids = {}
    roles = dict(_CERT_ROLES)
    for item in args.tile_id:
        role, sep, tid = item.partition("=")
        if not sep or role not in roles:
            raise ConfigError(f"--tile-id: expected ROLE=ID with ROLE one of "
                              f"{', '.join(roles)}, got {item!r}")
        tile_ids[roles[role]] = tid
    table = _table(args)
    cam = _camera(args)
    certs = {}
    for flag, role in _CERT_ROLES:
        path = getattr(args, f"{flag}_cert")
        needed = role in ("white", "grey_tile", "colour_tile") or \
            (role == "wavelength_std" and "wavelength" in opt) or \
            (role == "slanted_edge" and "mtf" in opt)
        if path:
            certs[role] = load_certificate(path)
        elif needed:
            log.info("%s: using the simulated tile's certificate", role)
            certs[role] = load_certificate(certificate(role))
    if not (math.isfinite(args.valid_hours) and 0 < args.valid_hours <= 24 * 366):
        raise ConfigError(f"--valid-hours: expected hours in (0, 8784] (one year), got "
                          f"{args.valid_hours:g}")
    operator = args.operator or getpass.getuser()
    settings = FieldSettings(exposure_us=args.exposure_us, gain=args.gain, operator=operator,
                             optional=tuple(opt), valid_hours=args.valid_hours,
                             allow_fail=args.allow_fail, plots=not args.no_plots)
    with cam:
        fc = FieldCalibration(cam, _placer(args, cam), certs, args.out, settings=settings,
                              table=table, history_root=_history(args, args.out),
                              tile_ids=tile_ids, on_step=_print_step)
        result = fc.run()
    print(f"signed {result.qc['verdict']} record {result.path} (valid until "
          f"{result.qc['valid_until']}); report {result.path / 'report.html'}")
    return 0


def _print_step(step: str, results) -> None:
    from calibration.thresholds import worst
    print(f"-- {step}: {worst(r.verdict for r in results)}", flush=True)
    for r in results:
        print(f"   {r.line()}", flush=True)


def run_check(args: argparse.Namespace) -> int:
    from calibration.records import CalibrationRecord
    from calibration.status import quick_check

    if args.frames < 1:
        raise ConfigError(f"--frames: expected an integer >= 1, got {args.frames}")
    record = CalibrationRecord.load(args.record)
    table = _table(args)
    cam = _camera(args)
    with cam:
        placer = _placer(args, cam)
        result = quick_check(cam, record, table, n=args.frames,
                             history_root=_history(args, args.record), placer=placer,
                             operator=args.operator or "unknown")
    print(result.line())
    if result.verdict == "FAIL":
        print("the record now counts as expired for `hsi-edge run`; run `hsi-edge calibrate "
              "field`")
        return 1
    return 0
