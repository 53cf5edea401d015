#!/usr/bin/env python3
"""Regenerate the shipped StO2 calibration tables in ``edge/processing/data/`` (deterministic).

For each camera preset the script simulates spectra with the physics forward model
(``edge.physics.tissue_reflectance``, Farrell 1992 diffusion reflectance with the Jacques 2013
absorption mix, band-integrated with the preset's Gaussian FWHM) over
``edge.processing.sto2.SimulationRanges`` (FACTS.md physiological ranges), unmixes them with
the grid's recommended basis, fits the monotone raw->true curve
(``Sto2Calibration.fit``) and writes ``sto2_<preset>.csv``.  It then evaluates the table on
spectra drawn with a different seed and prints (and writes into the header) MAE, bias and
90th-percentile absolute error in percentage points.

Usage::

    python tools/fit_sto2_calibration.py [--out edge/processing/data] [--n 20000] [--seed 0]

Preset grids/FWHM (keep in sync with ``drivers/sim/presets.py``): tivita 100 bands
``np.linspace(500, 1000, 100)`` (FACTS.md), FWHM 10 nm; snapshot16 16 bands 460-600 nm,
FWHM 15 nm; snapshot25 25 bands 665-960 nm, FWHM 20 nm (read from drivers.sim.presets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from edge.processing.sto2 import SimulationRanges, Sto2Calibration, evaluate_sto2

PRESETS = {
    "tivita": (np.linspace(500.0, 1000.0, 100), 10.0),
    "snapshot16": (np.linspace(460.0, 600.0, 16), 15.0),
    "snapshot25": (np.linspace(665.0, 960.0, 25), 20.0),
}
EVAL_SEED = 12345


def preset_grid(name: str) -> tuple[np.ndarray, float]:
    """Grid and FWHM of a preset: from ``drivers.sim.presets`` (the source of truth), else
    PRESETS."""
    try:
        from drivers.sim import get_preset
    except ImportError:
        return PRESETS[name]
    p = get_preset(name)
    return p.wavelength_array(), float(p.fwhm_nm)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "edge/processing/data")
    ap.add_argument("--n", type=int, default=20000, help="simulated spectra per table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=10000)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ranges = SimulationRanges()
    for name in args.presets:
        wl, fwhm = preset_grid(name)
        cal = Sto2Calibration.fit(wl, fwhm_nm=fwhm, n=args.n, seed=args.seed, ranges=ranges)
        ev = evaluate_sto2(wl, cal, fwhm_nm=fwhm, n=args.eval_n, seed=EVAL_SEED, ranges=ranges)
        header = [
            f"StO2 calibration table for camera preset '{name}' (hsi-edge).",
            "Made by tools/fit_sto2_calibration.py: spectra from edge.physics.tissue_reflectance "
            "(Farrell 1992 diffusion model, Jacques 2013 absorption mix; FACTS.md), unmixed by "
            "edge.processing.Unmixer, isotonic regression of true vs raw StO2, 256-knot table "
            "(moving average of 9 knots), clipped to [0, 1].",
            f"Grid: {wl.size} bands, {wl[0]:g}-{wl[-1]:g} nm (np.linspace), FWHM {fwhm:g} nm.",
            f"Basis: {cal.meta['basis']} (edge.processing.unmixing.recommended_basis), "
            f"components {cal.meta['chromophores']} + {cal.meta['baseline']}.",
            f"Parameter ranges (uniform): {json.dumps(dataclasses.asdict(ranges))}",
            f"Held-out evaluation (seed {EVAL_SEED}, n {args.eval_n}), percentage points: "
            + ", ".join(f"{k} {v:.3f}" for k, v in ev.items()),
            "Units: sto2_raw and sto2 are fractions (0-1). License: MIT (part of hsi-edge).",
        ]
        path = args.out / f"sto2_{name}.csv"
        cal.to_csv(path, header)
        print(f"{name}: wrote {path}; held-out " + json.dumps({k: round(v, 3) for k, v in ev.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
