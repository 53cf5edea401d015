#!/usr/bin/env python3
"""Measure StO2 on noisy video from the simulated camera (issue 14): spatial and temporal
steps, valid share, border vs interior error, sigma coverage, cost per frame.

For each preset and seed a ``SimulatedCamera`` (breathing motion, the preset's sensor) is
opened, dark/white references are captured as ``hsi-edge run`` does (8 frames each), and the
NumPy backend runs ``--frames`` consecutive frames with each configuration.  Frames from
``--warmup`` on are scored against the simulator's truth with the metrics of
``edge.pipeline.truth`` (valid pixels, all pixels, border = within 2 px of an organ edge or a
true StO2 step > 5 points, interior).  ``--samples out.npz`` stores per valid pixel the error,
the noise part of sigma (run with ``model_sigma: 0``) and the guide contrast, the input of
``tools/fit_sto2_model_error.py``.  ``--spatial-radius 3 5 7`` runs one backend per window on
the same frames (the spatial step's window per preset is chosen this way).

Usage::

    python tools/measure_sto2_video.py --presets snapshot25 --seeds 0 1 --frames 16 \\
        [--rows 120 --cols 160] [--configs spatial temporal] [--json out.json] \\
        [--spatial-radius 5] [--tables refit/]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.simulated import SimulatedCamera  # noqa: E402
from edge.pipeline.backend_factory import make_backend  # noqa: E402
from edge.errors import HsiEdgeError  # noqa: E402
from edge.pipeline.config import (AppConfig, ProcessingSettings,  # noqa: E402
                                  TemporalSettings)
from edge.pipeline.reference import obtain_flatfield  # noqa: E402
from edge.pipeline.truth import border_mask  # noqa: E402
from edge.processing.quality import guide_contrast  # noqa: E402

log = logging.getLogger("measure_sto2_video")

#: Named configurations of ``processing`` (every other key at its default).
CONFIGS = {
    "per_pixel": dict(spatial="none"),
    "spatial": dict(spatial="bilateral"),
    "temporal": dict(spatial="bilateral", temporal=TemporalSettings("recursive", 8, 4.0)),
    "temporal_w16": dict(spatial="bilateral", temporal=TemporalSettings("recursive", 16, 4.0)),
    "temporal_g2": dict(spatial="bilateral", temporal=TemporalSettings("recursive", 8, 2.0)),
    "temporal_g10": dict(spatial="bilateral", temporal=TemporalSettings("recursive", 8, 10.0)),
    "temporal_only": dict(spatial="none", temporal=TemporalSettings("recursive", 8, 4.0)),
}


def _config(name: str, model_sigma, spatial_radius=None, min_blood_volume="default",
            sto2_table=None) -> AppConfig:
    extra = {} if min_blood_volume == "default" else {"min_blood_volume": min_blood_volume}
    if sto2_table is not None:
        extra["sto2_table"] = sto2_table
    proc = dataclasses.replace(ProcessingSettings(), backend="numpy", quality=True,
                               model_sigma=model_sigma, spatial_radius=spatial_radius,
                               **extra, **CONFIGS[name])
    return dataclasses.replace(AppConfig(), processing=proc)


def _score(frame, res, backend, acc: dict, samples: list | None) -> None:
    """Add one scored frame's metrics to ``acc`` (and its per-pixel samples)."""
    tf = getattr(backend, "_temporal", None)
    if tf is not None:
        acc["reset"].append(tf.last_reset_fraction)
    true = frame.truth["sto2"]
    est, est_all = res.maps["sto2"], res.maps["sto2_all"]
    sigma = res.maps["sto2_sigma"]
    tissue = np.isfinite(true)
    ok = tissue & np.isfinite(est)
    acc["valid"].append(ok.sum() / max(tissue.sum(), 1))
    every = tissue & np.isfinite(est_all)
    acc["mae_all"].append(100 * np.abs(est_all[every] - true[every]).mean())
    d = (est[ok] - true[ok]).astype(np.float64)
    acc["mae"].append(100 * np.abs(d).mean())
    acc["bias"].append(100 * d.mean())
    err = np.abs(est.astype(np.float64) - true)
    border = border_mask(frame.truth["classes"], true)
    acc["border"].append(100 * err[ok & border].mean())
    acc["interior"].append(100 * err[ok & ~border].mean())
    cov = ok & np.isfinite(sigma)
    acc["coverage"].append(float(np.mean(err[cov] <= sigma[cov])))
    if samples is not None:
        refl = res.reflectance
        a = -np.log(np.maximum(np.where(np.isfinite(refl), refl, 1.0), 1e-4))
        g = (a @ backend.plan.guide_terms).astype(np.float32)
        c = guide_contrast(g)
        samples.append(np.stack([err[cov], sigma[cov], c[cov],
                                 border[cov].astype(np.float64)], axis=1))


def measure(preset: str, seed: int, config: str, frames: int, warmup: int, rows, cols,
            model_sigma, samples: list | None, radii=(None,),
            min_blood_volume="default", species=None, sto2_table=None) -> list[dict]:
    """One stream of ``frames`` frames, run by one NumPy backend per spatial radius in
    ``radii`` (None: the table's; the same frames for each); one result dict per radius.
    ``samples`` (per-pixel rows for the model-error fit) come from the first radius."""
    cam = SimulatedCamera(preset, rows=rows, cols=cols, seed=seed,
                          scene_options=None if species is None else {"species": species})
    with cam:
        cam.configure(exposure_us=8000, trigger_mode="software")
        cam.arm()
        ff = obtain_flatfield(_config(config, model_sigma), cam)
        backends = [make_backend("numpy", cam, ff, None,
                                 _config(config, model_sigma, r, min_blood_volume,
                                         sto2_table))
                    for r in radii]
        accs = [{k: [] for k in ("mae", "bias", "valid", "mae_all", "border", "interior",
                                 "coverage", "ms", "reset")} for _ in backends]
        for i in range(frames):
            frame = cam.grab(timeout=60.0)
            for j, (backend, acc) in enumerate(zip(backends, accs)):
                t0 = time.perf_counter()
                res = backend.run(frame.cube, exposure_us=frame.meta.exposure_us)
                ms = (time.perf_counter() - t0) * 1e3
                if i >= warmup:
                    acc["ms"].append(ms)
                    _score(frame, res, backend, acc, samples if j == 0 else None)
    outs = []
    for backend, acc in zip(backends, accs):
        out = {k: float(np.mean(v)) if v else None for k, v in acc.items()}
        out["frames_scored"] = frames - warmup
        out["radius"] = backend.plan.bilateral.radius
        outs.append(out)
    return outs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tivita", "snapshot16", "snapshot25"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--configs", nargs="+", default=["spatial", "temporal"],
                    choices=sorted(CONFIGS))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--cols", type=int, default=None)
    ap.add_argument("--model-sigma", default="table",
                    help="'table' (null: the table's fitted term) or a number (0: noise only)")
    ap.add_argument("--samples", default=None, help="npz of per-pixel (err, sigma, contrast, "
                                                    "border) per preset")
    ap.add_argument("--json", default=None)
    ap.add_argument("--spatial-radius", type=int, nargs="+", default=[None],
                    choices=range(1, 9), metavar="{1..8}",
                    help="processing.spatial_radius, one or more (each runs on the same "
                         "frames; default null: the table's spatial_radius header, else 3)")
    ap.add_argument("--species", default=None,
                    help="the scene's species (drivers/sim/tissue_classes.py: pig, human, rat; "
                         "default pig)")
    ap.add_argument("--sto2-table", default=None,
                    help="processing.sto2_table (a shipped variant such as human, or a CSV)")
    ap.add_argument("--min-blood-volume", type=float, default=None,
                    help="processing.min_blood_volume (default: the config's default)")
    ap.add_argument("--tables", default=None, help="folder of sto2_<preset>.csv tables used "
                                                    "instead of the shipped ones (a refit)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.tables:
        from edge.processing.sto2 import Sto2Calibration
        for f in sorted(Path(args.tables).glob("sto2_*.csv")):
            cal = Sto2Calibration.from_csv(f)
            Sto2Calibration._cache[cal.meta["key"]] = cal
    ms = None if args.model_sigma == "table" else float(args.model_sigma)
    results, samples = [], {}
    try:
        for preset in args.presets:
            for config in args.configs:
                for seed in args.seeds:
                    buf = [] if args.samples else None
                    for r in measure(preset, seed, config, args.frames, args.warmup,
                                     args.rows, args.cols, ms, buf, args.spatial_radius,
                                     "default" if args.min_blood_volume is None
                                     else args.min_blood_volume, args.species, args.sto2_table):
                        r.update(preset=preset, config=config, seed=seed)
                        results.append(r)
                        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                          for k, v in r.items()}), flush=True)
                    if buf:
                        samples.setdefault(f"{preset}_{config}", []).extend(buf)
    except HsiEdgeError as exc:          # an unknown --species, a bad --sto2-table...: one line
        ap.error(str(exc))
    if args.samples:
        np.savez_compressed(args.samples, **{k: np.concatenate(v) for k, v in samples.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
