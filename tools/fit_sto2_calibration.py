#!/usr/bin/env python3
"""Regenerate the shipped StO2 calibration tables in ``edge/processing/data/`` (deterministic).

For each camera preset the script simulates spectra with the physics forward model
(``edge.physics.tissue_reflectance``, Farrell 1992 diffusion reflectance with the Jacques 2013
absorption mix, band-integrated with the preset's Gaussian FWHM -- the simulated camera renders
exactly this, ``drivers.sim.scene``) over a prior of tissue parameters, adds the noise of the
preset's simulated sensor at the default exposure (``SensorModel.reflectance_noise``: shot,
read, dark and quantisation noise, the mosaic crosstalk correction and 8-frame references;
a pixel's position in the image is drawn uniformly between the centre and the vignetted
corners), unmixes them with the grid's recommended basis, fits the monotone raw->true curve
(isotonic regression, as ``Sto2Calibration.fit``) and writes ``sto2_<preset>.csv``.  It then
evaluates the table on spectra drawn with a different seed, noise-free and noisy, and prints
(and writes into the header) MAE, bias and 90th-percentile absolute error in percentage
points.

Prior (``--prior``):

- ``scene`` (default): what the simulator renders -- the scene's clip limits
  (``drivers/sim/scene.py`` ``_LIMITS``: a′ 5-40 cm⁻¹, b 0.5-2.0, B 0.5-6.5 %, W 0.5-0.8,
  F 0-0.3), no melanin.
- ``scene+melanin``: the same and melanin 0-0.15 % (the ``human`` species at class weight
  1; its texture takes liver's to about 0.25 %, rarely 0.3 %).  The shipped ``human``
  variants use it: a prior of 0-0.3 % was measured too (Dec 2026, human scenes, fit seeds
  0-1, spatial step): snapshot25 4.4 against 3.6 points, snapshot16 1.9 against 1.8, tivita
  2.7 either way (bias -1.1 against +1.1) -- pigment is barely identifiable on these grids,
  so the table follows the prior's typical level rather than its range.  Melanin is not in the unmixing basis, so a one-dimensional raw->true curve cannot
  serve tissue with and without it: fitted with it, melanin-free spectra read 4.6 points low
  on tivita (+2.0 snapshot25, -1.3 snapshot16); fitted without, the human-melanin spectra
  read 4.8 high on tivita (-1.9 snapshot25, +1.4 snapshot16) (10,000 spectra, 0.25 x noise,
  held-out seed).  The shipped tables take ``scene`` (the default ``pig`` and ``rat``
  species have no melanin).  A melanin column in the basis (``--add-chromophores melanin``)
  does not fix it (20,000 spectra, held-out 10,000, Dec 2026): the diffusion model's melanin
  is not linear in absorbance (it shortens every chromophore's pathlength), so on tivita the
  column leaves a larger raw-StO2 shift (+5.4 against +4.2 points, paired spectra) and
  melanin-free tissue reads 6.1 low; on snapshot16 it nearly removes the shift (+0.5 against
  +1.4) but the column is almost collinear with the baseline terms (the pseudo-inverse's HbO2
  and Hb rows grow 13-33 %, noisier at the table's noise); on snapshot25 the pathlength
  column is collinear (13 % of spectra unmix to no haemoglobin).
- ``physiological``: ``edge.processing.sto2.SimulationRanges()`` (a′ 18.9 ± 10.2, b 1.286 ±
  0.521, no melanin), the prior of the tables before noise was included.

Fitting on noisy spectra makes the curve E[true | raw] under that noise (the least-squares
optimum): flatter at the ends than the noise-free curve, it shrinks towards the prior's
middle, and the more so the noisier the fit.  At one frame's full per-pixel noise the
snapshot25 curve is nearly flat (noise-free MAE 19 points), which would undo any later
denoising.  The tables are therefore fitted at a fraction of it, ``--noise-scale`` (default
0.25: the noise left after averaging about 16 pixels, what an edge-preserving 7x7 filter
leaves on flat tissue, science.md section 3; 0 = noise-free, 1 = one frame per pixel), and
the level is a property of each table: its ``noise_scale`` header (machine-readable; the
``noise`` line says it in words).  A wider spatial window leaves less noise, so the level and
the window are chosen together per preset (``tools/measure_sto2_video.py``, README "Science
and accuracy") and the window is written as the table's ``spatial_radius`` header
(``--spatial-radius``), which ``processing.spatial_radius: null`` (the default) takes; without
the option a refit keeps the header of the table it replaces (none: the chain uses 3).

The spatial step averages per-pixel raw StO2, a ratio ``c_HbO2 / THb`` whose noise biases
it where THb is small (fat: 0.5-1 % blood), and the mean keeps that bias.  ``--noise-draws
N`` fits on what the step delivers: each spectrum's raw StO2 is the mean of N noisy copies,
each at ``--noise-scale`` times one frame's noise (the per-pixel noise left by the band
registration: its variance gain is 0.21-0.22, so about 0.48 for the snapshots), and the
table's THb row takes the first copy's THb (the chain uses the pixel's own).  The
``noise_scale`` header is then the mean's, ``--noise-scale / sqrt(N)``; ``noise_draws``
records N.  On snapshot25 (11x11-15x15 windows) this took the fat's bias on valid pixels
from -2.5 to -1.0 points (seed 1, frames 8-13).

``--thb-rows R`` (default 16) gives the table a THb axis: one curve per row of sqrt(THb)
(``edge.processing.sto2.table_2d_from_pairs``); 1 fits the single curve of the tables before
Dec 2026.

Experiment options (defaults leave the shipped tables' refit unchanged; issue 14, melanin):
``--chromophores NAME...`` replaces the preset's recommended chromophores
(``recommended_components``) and ``--add-chromophores NAME...`` appends to them (e.g.
``melanin``: its column in the preset's recommended basis kind); the table's
``chromophores`` header and key follow; ``--basis`` overrides the recommended basis kind.  ``--melanin-range LO HI`` sets the prior's melanin
volume fraction (fit and evaluation).  ``--eval-melanin LO HI`` (repeatable) adds held-out
evaluations on the same prior with melanin drawn in [LO, HI] instead, e.g. ``0 0`` (pig, rat)
and ``0.00015 0.0015`` (the ``human`` species: ``Species.melanin`` 0.0015 times the class
weights of ``MELANIN_WEIGHT``, 0.1 fat to 1.0 liver, ``drivers/sim/tissue_classes.py``).

A table's ``model_error`` header line (the model-error term of ``sto2_sigma``) is fitted
against it by ``tools/fit_sto2_model_error.py``: rerun that after a refit (this script
writes the table without it).

Usage::

    python tools/fit_sto2_calibration.py [--out edge/processing/data] [--n 20000] [--seed 0]
        [--prior scene|physiological] [--noise-scale 0.25] [--noise-draws 1] [--thb-rows 16]
        [--spatial-radius 3]
        [--exposure-us 8000] [--chromophores NAME... | --add-chromophores NAME...] [--basis KIND]
        [--melanin-range LO HI] [--eval-melanin LO HI]...

Preset grids/FWHM come from ``drivers/sim/presets.py`` (PRESETS below if it cannot be
imported): tivita 100 bands ``np.linspace(500, 1000, 100)`` (FACTS.md), FWHM 10 nm; snapshot16
16 bands 460-600 nm, FWHM 15 nm; snapshot25 25 bands 665-960 nm, FWHM 20 nm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np

from edge.processing.sto2 import (CALIBRATION_VERSION, MAX_THB_ROWS, SimulationRanges,
                                  Sto2Calibration,
                                  _components, _key, simulate_spectra, table_2d_from_pairs,
                                  table_from_pairs)
from edge.processing.unmixing import Unmixer

PRESETS = {
    "tivita": (np.linspace(500.0, 1000.0, 100), 10.0),
    "snapshot16": (np.linspace(460.0, 600.0, 16), 15.0),
    "snapshot25": (np.linspace(665.0, 960.0, 25), 20.0),
}
EVAL_SEED = 12345
#: The scene's parameter limits (drivers/sim/scene.py _LIMITS), no melanin.
SCENE_RANGES = SimulationRanges(sto2=(0.0, 1.0), blood_volume=(0.005, 0.065), water=(0.5, 0.8),
                                fat=(0.0, 0.3), melanin=(0.0, 0.0), scatter_a=(5.0, 40.0),
                                scatter_b=(0.5, 2.0))
PRIORS = {"scene": SCENE_RANGES, "physiological": SimulationRanges(),
          "scene+melanin": dataclasses.replace(SCENE_RANGES, melanin=(0.0, 0.0015))}
#: Relative signal at a pixel: 1 at the image centre, 0.75 at the corners (the sensor's
#: default vignetting 0.25).
_VIGNETTE = (0.75, 1.0)


def preset_grid(name: str) -> tuple[np.ndarray, float]:
    """Grid and FWHM of a preset: from ``drivers.sim.presets`` (the source of truth), else
    PRESETS."""
    try:
        from drivers.sim import get_preset
    except ImportError:
        return PRESETS[name]
    p = get_preset(name)
    return p.wavelength_array(), float(p.fwhm_nm)


def add_sensor_noise(name: str, refl: np.ndarray, seed: int, *, scale: float = 1.0,
                     exposure_us: float | None = None) -> np.ndarray:
    """``refl`` (n, bands) as flat-fielded by the chain from one frame of preset ``name``'s
    simulated sensor (noise times ``scale``); float32."""
    from drivers.camera import DEFAULT_EXPOSURE_US
    from drivers.sim import SensorModel, get_preset

    if scale == 0:
        return refl.astype(np.float32)
    exposure = DEFAULT_EXPOSURE_US if exposure_us is None else float(exposure_us)
    sensor = SensorModel.for_preset(get_preset(name, rows=8, cols=8), seed=seed)
    rng = np.random.default_rng([seed, 0xCA1])
    r = np.asarray(refl, dtype=np.float64)
    # Position in the image: the signal (and so the noise) of a vignetted pixel, as a shorter
    # exposure (dark current is negligible either way).
    rel = rng.uniform(*_VIGNETTE, size=r.shape[0])
    out = np.empty_like(r)
    groups = np.minimum((rel - _VIGNETTE[0]) / (_VIGNETTE[1] - _VIGNETTE[0]) * 8, 7).astype(int)
    for g in range(8):
        sel = groups == g
        level = _VIGNETTE[0] + (g + 0.5) / 8 * (_VIGNETTE[1] - _VIGNETTE[0])
        noisy = sensor.reflectance_noise(r[sel], exposure * level, 1.0, rng)
        out[sel] = r[sel] + scale * (noisy - r[sel])
    return out.astype(np.float32)


def fit_table(wl: np.ndarray, fwhm: float, raw: np.ndarray, truth: np.ndarray,
              unmixer: Unmixer, meta: dict, thb: np.ndarray | None = None,
              thb_rows: int = 1) -> Sto2Calibration:
    """The 256-knot monotone table from (raw, true) pairs: the procedure of
    ``Sto2Calibration.fit`` (isotonic regression, knots over the central 99.8 % of raw values,
    block centres interpolated, 9-knot moving average, clipped to [0, 1]); with
    ``thb_rows`` >= 2, one such curve per row of a THb axis
    (``edge.processing.sto2.table_2d_from_pairs``, ``thb`` the spectra's THb)."""
    ok = np.isfinite(raw)
    axis = None
    if thb_rows >= 2:
        ok &= np.isfinite(thb) & (thb > 0)
        x, y, axis = table_2d_from_pairs(raw[ok], thb[ok], truth[ok], thb_rows)
    else:
        x, y = table_from_pairs(raw[ok], truth[ok])
    meta = {"version": str(CALIBRATION_VERSION), **meta, "fwhm_nm": str(fwhm),
            "chromophores": " ".join(unmixer.chromophores),
            "baseline": " ".join(unmixer.baseline), "eps": repr(float(unmixer.eps)),
            "bands": str(wl.size), "range_nm": f"{wl[0]:g}-{wl[-1]:g}",
            "basis": unmixer.basis_kind,
            "key": _key(wl, fwhm, unmixer.chromophores, unmixer.baseline, unmixer.eps,
                        unmixer.basis_kind)}
    return Sto2Calibration(x, y, meta, thb_axis=axis)


def noisy_raw(name: str, unmixer: Unmixer, clean: np.ndarray, seed: int, scale: float,
              draws: int = 1, exposure_us: float | None = None
              ) -> tuple[dict, np.ndarray]:
    """The fit's input from noise-free spectra ``clean`` (n, bands): ``(maps, raw)`` with
    ``maps`` the unmixing maps of the first noisy copy (its ``thb`` is the table's row) and
    ``raw`` (n,) the mean raw StO2 of ``draws`` copies, each with ``scale`` times one frame's
    noise (copy ``k`` draws from seed ``seed + 7919 k``; copy 0 is the single-copy fit's)."""
    first = unmixer.maps(add_sensor_noise(name, clean, seed, scale=scale,
                                          exposure_us=exposure_us))
    total = first["sto2_raw"].astype(np.float64)
    for k in range(1, int(draws)):
        m = unmixer.maps(add_sensor_noise(name, clean, seed + 7919 * k, scale=scale,
                                          exposure_us=exposure_us))
        total += m["sto2_raw"]
    return first, (total / int(draws)).astype(np.float32)


def _spatial_headers(radius: int | None, h: float | None, path: Path) -> dict:
    """The ``spatial_radius`` and ``spatial_h`` headers of a refit: the options' values, else
    those of the table at ``path`` it replaces (a refit of the noise level keeps the preset's
    window and range kernel), else none."""
    old = Sto2Calibration.from_csv(path) if (radius is None or h is None) and path.is_file() \
        else None
    if old is not None:
        for key, mine, theirs in (("spatial_radius", radius, old.spatial_radius),
                                  ("spatial_h", h, old.spatial_h)):
            if mine is None and theirs is not None:
                logging.info("%s: keeping %s %g of the table it replaces", path, key, theirs)
        radius = old.spatial_radius if radius is None else radius
        h = old.spatial_h if h is None else h
    return {**({} if radius is None else {"spatial_radius": str(radius)}),
            **({} if h is None else {"spatial_h": f"{h:g}"})}


def _errors(est: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(est)
    err = (est[ok].astype(np.float64) - truth[ok]) * 100.0
    return {"mae": float(np.mean(np.abs(err))), "bias": float(np.mean(err)),
            "p90_abs_err": float(np.quantile(np.abs(err), 0.9)),
            "invalid_fraction": float(1.0 - ok.mean())}


def evaluate(name: str, cal: Sto2Calibration, unmixer: Unmixer, ranges: SimulationRanges,
             n: int, *, noise_scale: float = 1.0, exposure_us: float | None = None
             ) -> dict[str, dict[str, float]]:
    """Held-out errors (seed EVAL_SEED) of ``cal``: noise-free, with the preset's noise, and
    with ``noise_scale`` times it where that is between 0 and 1.

    Returns
    -------
    dict kind -> {"mae", "bias", "p90_abs_err", "invalid_fraction"}; kinds ``noise_free``,
    ``noisy`` and ``noisy_x<scale>``; errors in percentage points.
    """
    wl = unmixer.wavelengths
    refl, truth = simulate_spectra(wl, n, EVAL_SEED, ranges=ranges, fwhm_nm=unmixer.fwhm_nm)
    def est(r):
        m = unmixer.maps(r)
        return cal.apply(m["sto2_raw"], m["thb"])

    out = {"noise_free": _errors(est(refl), truth)}
    noisy = add_sensor_noise(name, refl, EVAL_SEED, scale=max(noise_scale, 1.0),
                             exposure_us=exposure_us)
    out["noisy"] = _errors(est(noisy), truth)
    if 0 < noise_scale < 1:
        part = add_sensor_noise(name, refl, EVAL_SEED, scale=noise_scale,
                                exposure_us=exposure_us)
        out[f"noisy_x{noise_scale:g}"] = _errors(est(part), truth)
    return out


def _melanin_range(pair: list[float] | None, option: str) -> tuple[float, float] | None:
    """``[LO, HI]`` of a melanin option checked as a volume-fraction range (one-line error)."""
    if pair is None:
        return None
    lo, hi = pair
    if not (0.0 <= lo <= hi <= 0.05):
        raise SystemExit(f"{option}: expected 0 <= LO <= HI <= 0.05 (a melanin volume "
                         f"fraction, the limits of drivers.sim Species.melanin), got {lo:g} "
                         f"{hi:g}")
    return float(lo), float(hi)


def unmixer_for(wl: np.ndarray, fwhm: float, chromophores: list[str] | None = None,
                add: list[str] | None = None, basis: str | None = None) -> Unmixer:
    """The unmixer of a table: the grid's recommended components (``chromophores`` replaces
    its chromophores, ``add`` appends to them) in ``basis`` (None: the recommended kind).

    Raises
    ------
    SystemExit
        One line naming the option, for an unknown or repeated chromophore or a degenerate
        basis (the Unmixer's DataFormatError).
    """
    from edge.errors import DataFormatError

    rec, baseline = _components(wl, None, None)
    chrom = tuple(chromophores) if chromophores else rec + tuple(add or ())
    try:
        return Unmixer(wl, chrom, baseline, fwhm_nm=fwhm, basis=basis)
    except DataFormatError as exc:
        option = ("--basis" if str(exc).startswith("basis") else
                  "--chromophores" if chromophores else "--add-chromophores")
        raise SystemExit(f"{option}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "edge/processing/data")
    ap.add_argument("--n", type=int, default=20000, help="simulated spectra per table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=10000)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--prior", choices=sorted(PRIORS), default="scene")
    ap.add_argument("--noise-scale", type=float, default=0.25,
                    help="sensor noise in the fit, times the preset's (0: noise-free); "
                         "written as the table's noise_scale header")
    ap.add_argument("--spatial-radius", type=int, default=None, choices=range(1, 9),
                    metavar="{1..8}",
                    help="write a spatial_radius header: the spatial step's window "
                         "half-width chosen with this table (processing.spatial_radius: "
                         "null takes it); default: the replaced table's, if any")
    ap.add_argument("--noise-draws", type=int, default=1,
                    help="raw StO2 of each fit spectrum = the mean of this many noisy copies "
                         "(each at --noise-scale), as the spatial step averages per-pixel "
                         "ratios (their noise bias stays in the mean); THb of the first copy "
                         "(the table's row is the pixel's own THb); the noise_scale header is "
                         "then --noise-scale / sqrt(N)")
    ap.add_argument("--variant", default=None,
                    help="write sto2_<preset>_<VARIANT>.csv with a 'variant' header: a table "
                         "chosen with processing.sto2_table: VARIANT (e.g. human, fitted with "
                         "--prior scene+melanin)")
    ap.add_argument("--thb-rows", type=int, default=MAX_THB_ROWS, choices=range(1, MAX_THB_ROWS + 1),
                    metavar=f"{{1..{MAX_THB_ROWS}}}",
                    help="rows of the table's THb axis (1: one curve for every blood volume); "
                         f"default {MAX_THB_ROWS}")
    ap.add_argument("--spatial-h", type=float, default=None,
                    help="write a spatial_h header: the spatial step's range kernel chosen "
                         "with this table (processing.spatial_h: null takes it); default: the "
                         "replaced table's, if any")
    ap.add_argument("--exposure-us", type=float, default=None,
                    help="exposure of the noise model (default: the cameras' default)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="evaluate the tables in --out; write nothing")
    comp = ap.add_mutually_exclusive_group()
    comp.add_argument("--chromophores", nargs="+", metavar="NAME", default=None,
                      help="unmix with these chromophores instead of the preset's "
                           "recommended ones (HbO2 Hb water fat melanin)")
    comp.add_argument("--add-chromophores", nargs="+", metavar="NAME", default=None,
                      help="append these to the preset's recommended chromophores "
                           "(e.g. melanin)")
    ap.add_argument("--basis", choices=("extinction", "pathlength"), default=None,
                    help="kind of chromophore columns (default: the preset's "
                         "recommended_basis)")
    ap.add_argument("--melanin-range", nargs=2, type=float, metavar=("LO", "HI"),
                    default=None, help="the prior's melanin volume fraction range "
                                       "(default: the prior's)")
    ap.add_argument("--eval-melanin", nargs=2, type=float, metavar=("LO", "HI"),
                    action="append", default=[],
                    help="also evaluate on the prior with melanin in [LO, HI] (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ranges = PRIORS[args.prior]
    melanin = _melanin_range(args.melanin_range, "--melanin-range")
    if melanin is not None:
        ranges = dataclasses.replace(ranges, melanin=melanin)
    extra_eval = [_melanin_range(p, "--eval-melanin") for p in args.eval_melanin]
    if not args.evaluate_only:
        args.out.mkdir(parents=True, exist_ok=True)
    if args.variant is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.variant):
        raise SystemExit(f"--variant: expected letters, digits, '_' or '-', got "
                         f"{args.variant!r}")
    if args.spatial_h is not None and not 0.005 <= args.spatial_h <= 1.0:
        raise SystemExit(f"--spatial-h: expected a number in [0.005, 1], got {args.spatial_h:g}")
    if args.noise_draws < 1:
        raise SystemExit(f"--noise-draws: expected an integer >= 1, got {args.noise_draws}")
    # The noise of the mean of the draws (the table's noise_scale header), 3 digits.
    eff = float(f"{args.noise_scale / np.sqrt(args.noise_draws):.3g}")
    for name in args.presets:
        wl, fwhm = preset_grid(name)
        unmixer = unmixer_for(wl, fwhm, args.chromophores, args.add_chromophores, args.basis)

        def evaluate_all(cal: Sto2Calibration) -> dict[str, dict[str, float]]:
            ev = evaluate(name, cal, unmixer, ranges, args.eval_n,
                          noise_scale=eff, exposure_us=args.exposure_us)
            for lo, hi in extra_eval:
                sub = evaluate(name, cal, unmixer, dataclasses.replace(ranges, melanin=(lo, hi)),
                               args.eval_n, noise_scale=eff,
                               exposure_us=args.exposure_us)
                ev.update({f"{k} melanin {lo:g}-{hi:g}": d for k, d in sub.items()})
            return ev

        path = args.out / (f"sto2_{name}.csv" if args.variant is None
                           else f"sto2_{name}_{args.variant}.csv")
        if args.evaluate_only:
            ev = evaluate_all(Sto2Calibration.from_csv(path))
            print(f"{name}: {path} on the {args.prior} prior: " + json.dumps(
                {k: {m: round(v, 3) for m, v in d.items()} for k, d in ev.items()}))
            continue
        clean, truth = simulate_spectra(wl, args.n, args.seed, ranges=ranges, fwhm_nm=fwhm)
        fitted, raw = noisy_raw(name, unmixer, clean, args.seed, args.noise_scale,
                                args.noise_draws, args.exposure_us)
        from drivers.camera import DEFAULT_EXPOSURE_US
        noise = ("noise-free" if args.noise_scale == 0 else
                 f"{args.noise_scale:g} x the noise of one frame of the simulated '{name}' "
                 f"sensor (SensorModel.for_preset(...).reflectance_noise) at "
                 f"{args.exposure_us or DEFAULT_EXPOSURE_US:g} us, gain 1, 8-frame "
                 "references, pixels from the image centre to the vignetted corners")
        if args.noise_draws > 1 and args.noise_scale > 0:
            noise = (f"raw StO2 the mean of {args.noise_draws} noisy copies of each spectrum "
                     f"(what the spatial step averages), each with {noise}; THb of the first "
                     f"copy; the mean's noise {eff:g} x one frame's")
        cal = fit_table(wl, fwhm, raw, truth, unmixer,
                        {"n_spectra": str(args.n), "seed": str(args.seed),
                         "prior": args.prior + ("" if melanin is None else
                                                f", melanin {melanin[0]:g}-{melanin[1]:g}"),
                         "ranges": json.dumps(dataclasses.asdict(ranges)),
                         "noise": noise, "noise_scale": f"{eff:g}",
                         **({"noise_draws": str(args.noise_draws)}
                            if args.noise_draws > 1 else {}),
                         **({} if args.variant is None else {"variant": args.variant}),
                         **_spatial_headers(args.spatial_radius, args.spatial_h, path)},
                        thb=fitted["thb"], thb_rows=args.thb_rows)
        ev = evaluate_all(cal)
        header = [
            f"StO2 calibration table for camera preset '{name}' (hsi-edge).",
            "Made by tools/fit_sto2_calibration.py: spectra from edge.physics.tissue_reflectance "
            "(Farrell 1992 diffusion model, Jacques 2013 absorption mix; FACTS.md) with the "
            f"simulated sensor's noise ({noise}), unmixed by edge.processing.Unmixer, isotonic "
            "regression of true vs raw StO2, 256-knot table (moving average of 9 knots), "
            "clipped to [0, 1].",
            f"Grid: {wl.size} bands, {wl[0]:g}-{wl[-1]:g} nm (np.linspace), FWHM {fwhm:g} nm.",
            f"Basis: {cal.meta['basis']} ("
            f"{'--basis' if args.basis else 'edge.processing.unmixing.recommended_basis'}), "
            f"components {cal.meta['chromophores']} + {cal.meta['baseline']}.",
            f"Parameter ranges (uniform, prior '{cal.meta['prior']}'): "
            f"{json.dumps(dataclasses.asdict(ranges))}",
        ] + [f"Held-out evaluation {kind} (seed {EVAL_SEED}, n {args.eval_n}), percentage "
             "points: " + ", ".join(f"{k} {v:.3f}" for k, v in d.items())
             for kind, d in ev.items()] + [
            "Units: sto2_raw and sto2 are fractions (0-1). License: MIT (part of hsi-edge).",
        ]
        cal.to_csv(path, header)
        print(f"{name}: wrote {path}; held-out " + json.dumps(
            {k: {m: round(v, 3) for m, v in d.items()} for k, d in ev.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
