#!/usr/bin/env python3
"""Measure a noise-augmented quadratic ridge regressor for StO2 on the simulated camera's
frames, next to the default chain (issue 14: "a small regressor trained on simulated noisy
spectra with its uncertainty ... on the same scenes").

science.md section 3 reports a "noise-augmented quadratic ridge, in silico, per pixel" at 3.6
points on snapshot25 (its own scenes, before the band registration).  This tool measures the
same kind of estimator on the frames ``tools/measure_sto2_video.py`` scores.

Training (in silico, per preset)
--------------------------------
- Spectra: ``edge.processing.sto2.simulate_spectra`` over the scene prior the shipped tables
  use (``fit_sto2_calibration.SCENE_RANGES``: the scene's clip limits, no melanin), with the
  preset's band grid and FWHM (``fit_sto2_calibration.preset_grid``).
- Noise: the preset's simulated sensor at 8000 us, gain 1, through
  ``fit_sto2_calibration.add_sensor_noise`` (shot, read, dark, quantisation, crosstalk
  correction, vignetted positions).  ``--train-noise``: ``frame`` (one frame's noise),
  ``registered`` (each band's noise times ``sqrt(g_b)``, ``g_b`` =
  ``BandRegistration.variance_gain`` of the camera's ``band_offsets``: the per-pixel noise of
  a registered frame; the default: the evaluated frames are registered, and it measured best,
  see the commit log), or ``mix`` (half the spectra each).  A preset without band
  offsets has ``g_b = 1``.
- Features: absorbance ``A = -ln(max(R, 1e-4))`` per band, standardised with the training
  mean and std, plus every pairwise product ``z_i z_j`` (i <= j, squares included):
  ``B + B(B+1)/2`` features.
- Fit: ridge regression to the true StO2, closed form from one SVD of the centred training
  features (intercept not penalised); lambda chosen on a held-out validation split (20 %) from
  a log grid.  The validation residual std is the regressor's constant sigma.

Evaluation (the frames of ``measure_sto2_video.py``)
----------------------------------------------------
``SimulatedCamera(preset, seed=s)``, exposure 8000 us, software trigger, ``obtain_flatfield``
(8 dark + 8 white frames), frames ``0..frames-1``, scored from ``--warmup`` on.  Each frame
runs the default NumPy backend (``processing.quality`` on, ``spatial: bilateral``) and gives
the registered reflectance ``res.reflectance`` and the default maps.  Methods:

- ``default``: the chain's ``sto2`` (unmixing + calibration table + joint-bilateral step);
- ``ridge``: the ridge per pixel on ``res.reflectance`` (clipped to [0, 1], as the table
  clips);
- ``ridge_bilateral``: the ridge map through the chain's joint-bilateral step
  (``edge.processing.spatial.bilateral_filter`` with the plan's ``bilateral`` parameters, the
  guide ``A @ plan.guide_terms`` and the pixels that enter the default chain's spatial step:
  no flag before ``FLAG_UNCERTAIN`` and a finite value -- ``finish_quality``'s
  ``spatial_ok``).

All three are scored on the SAME pixels: the default chain's valid pixels (finite
``maps['sto2']``, tissue).  Per frame: MAE, bias, border (within 2 px of an organ edge or a
true StO2 step > 5 points, ``edge.pipeline.truth.border_mask``) and interior error, in points;
averaged over the scored frames.  Also: each method's MAE on every tissue pixel it has a value
for (``mae_all``, with ``share_all``), the ridge's coverage of its validation sigma (share of
scored pixels with ``|error| <= sigma``), and the cost per frame (median ms) of the ridge
prediction and of the bilateral step on its output.

Usage::

    python tools/measure_sto2_regressor.py --presets snapshot25 snapshot16 --seeds 2 3 \\
        [--n-train 30000] [--train-noise registered|frame|mix] [--frames 14 --warmup 8] \\
        [--json out.json]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge.errors import HsiEdgeError  # noqa: E402
from fit_sto2_calibration import SCENE_RANGES, add_sensor_noise, preset_grid  # noqa: E402

log = logging.getLogger("measure_sto2_regressor")

#: Exposure of the training noise and of the evaluated frames (measure_sto2_video.py).
EXPOSURE_US = 8000.0
#: Absorbance floor of the features (the chain's eps).
FEATURE_EPS = 1e-4
#: Ridge lambdas tried, times the number of training spectra.
LAMBDA_GRID = np.logspace(-7, 0, 15)
#: Pixels per chunk of the prediction (memory: chunk x features x 4 bytes).
_CHUNK = 16384


# ---- the regressor ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QuadraticRidge:
    """A fitted ridge on standardised absorbance and its pairwise products.

    Attributes
    ----------
    mean, std : ndarray of shape (bands,), float64
        Standardisation of the absorbance (training set).
    weights : ndarray of shape (n_features,), float64
    intercept : float
    lam : float
        The chosen ridge penalty (absolute, on the sum of squared residuals).
    sigma : float
        Validation residual std (fraction): the regressor's constant standard error.
    """

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    intercept: float
    lam: float
    sigma: float

    def quadratic_form(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w, Q)``, float32 of shapes (bands,) and (bands, bands) symmetric, with
        ``features(R) @ weights == z . w + z^T Q z`` (``z`` the standardised absorbance)."""
        b = self.mean.size
        i, j = np.triu_indices(b)
        q = np.zeros((b, b))
        q[i, j] += 0.5 * self.weights[b:]
        q[j, i] += 0.5 * self.weights[b:]
        return self.weights[:b].astype(np.float32), q.astype(np.float32)

    def predict(self, reflectance: np.ndarray, clip: bool = True) -> np.ndarray:
        """StO2 (fraction) of ``reflectance`` (..., bands); NaN where a band is not finite.

        Evaluated as the quadratic form (:meth:`quadratic_form`), in float32 chunks.

        Returns
        -------
        ndarray of shape ``reflectance.shape[:-1]``, float32; clipped to [0, 1] with ``clip``.
        """
        r = np.asarray(reflectance, dtype=np.float32)
        shape, bands = r.shape[:-1], r.shape[-1]
        r = r.reshape(-1, bands)
        out = np.empty(r.shape[0], np.float32)
        lin, quad = self.quadratic_form()
        mean, std = self.mean.astype(np.float32), self.std.astype(np.float32)
        for s in range(0, r.shape[0], _CHUNK):
            sl = slice(s, s + _CHUNK)
            z = (absorbance(r[sl]) - mean) / std
            # b + w.z + z^T Q z: the same model as features() @ weights, without building the
            # B(B+1)/2 product columns (bands^2 + 2 bands multiply-adds per pixel).
            out[sl] = np.einsum("ij,ij->i", z @ quad + lin, z) + np.float32(self.intercept)
        out[~np.isfinite(r).all(axis=1)] = np.nan
        if clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out.reshape(shape)


def absorbance(reflectance: np.ndarray) -> np.ndarray:
    """``A = -ln(max(R, FEATURE_EPS))`` (NaN -> 0), float32, same shape."""
    r = np.asarray(reflectance, dtype=np.float32)
    r = np.where(np.isfinite(r), r, np.float32(1.0))
    return -np.log(np.maximum(r, np.float32(FEATURE_EPS)))


def features(reflectance: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Quadratic features of spectra: standardised absorbance ``z`` and ``z_i z_j`` (i <= j).

    Parameters
    ----------
    reflectance : ndarray of shape (n, bands)
    mean, std : ndarray of shape (bands,)

    Returns
    -------
    ndarray of shape (n, bands + bands (bands + 1) / 2), float32
    """
    z = (absorbance(reflectance) - mean.astype(np.float32)) / std.astype(np.float32)
    i, j = np.triu_indices(z.shape[1])
    return np.concatenate([z, z[:, i] * z[:, j]], axis=1)


def fit_ridge(reflectance: np.ndarray, truth: np.ndarray, *, val_fraction: float = 0.2,
              lambdas: np.ndarray = LAMBDA_GRID, seed: int = 0) -> QuadraticRidge:
    """Fit :class:`QuadraticRidge` on ``reflectance`` (n, bands) -> ``truth`` (n,).

    A random ``val_fraction`` of the spectra is held out; for each ``lambda = l * n_fit``
    (``l`` in ``lambdas``) the ridge is solved in closed form from one SVD of the centred
    fit features, ``w = V diag(s / (s^2 + lambda)) U^T (y - mean y)``; the lambda with the
    smallest validation mean squared error is kept, and the model is refitted with it on all
    spectra.  ``sigma`` is the validation residual std at that lambda.
    """
    r = np.asarray(reflectance, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    n = r.shape[0]
    rng = np.random.default_rng([seed, 0x51D6E])
    perm = rng.permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    val, fit = perm[:n_val], perm[n_val:]
    a = absorbance(r[fit]).astype(np.float64)
    mean, std = a.mean(axis=0), a.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def solve(rows: np.ndarray, grid: np.ndarray):
        x = features(r[rows], mean, std).astype(np.float64)
        xm, ym = x.mean(axis=0), y[rows].mean()
        u, s, vt = np.linalg.svd(x - xm, full_matrices=False)
        uty = u.T @ (y[rows] - ym)
        for lam in grid:
            w = vt.T @ (s / (s * s + lam) * uty)
            yield lam, w, float(ym - xm @ w)

    x_val = features(r[val], mean, std).astype(np.float64)
    best = None
    for lam, w, b in solve(fit, np.asarray(lambdas) * fit.size):
        res = x_val @ w + b - y[val]
        mse = float(np.mean(res * res))
        log.debug("lambda %.3g: validation rmse %.4f", lam, np.sqrt(mse))
        if best is None or mse < best[0]:
            best = (mse, lam / fit.size, float(np.std(res)))
    _, lam_rel, sigma = best
    lam_all = lam_rel * n
    _, w, b = next(solve(np.arange(n), np.array([lam_all])))
    return QuadraticRidge(mean, std, w, b, float(lam_all), sigma)


def training_set(preset: str, n: int, seed: int, noise: str, band_gain: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy simulated spectra (n, bands) float32 and their true StO2 (n,).

    ``noise``: ``frame``, ``registered`` (noise times ``sqrt(band_gain)`` per band) or ``mix``
    (the first half registered, the second one frame's).
    """
    from edge.processing.sto2 import simulate_spectra

    wl, fwhm = preset_grid(preset)
    refl, truth = simulate_spectra(wl, n, seed, ranges=SCENE_RANGES, fwhm_nm=fwhm)
    noisy = add_sensor_noise(preset, refl, seed, exposure_us=EXPOSURE_US).astype(np.float64)
    g = np.ones(wl.size) if band_gain is None else np.asarray(band_gain, np.float64)
    scale = np.ones((n, 1)) * np.sqrt(g)[None, :]
    if noise == "frame":
        scale[:] = 1.0
    elif noise == "mix":
        scale[n // 2:] = 1.0
    out = refl + scale * (noisy - refl)
    return out.astype(np.float32), truth


# ---- evaluation --------------------------------------------------------------------------
def _errors(est: np.ndarray, true: np.ndarray, scored: np.ndarray, border: np.ndarray
            ) -> dict[str, float]:
    err = (est.astype(np.float64) - true) * 100.0
    return {"mae": float(np.abs(err[scored]).mean()), "bias": float(err[scored].mean()),
            "border": float(np.abs(err[scored & border]).mean()),
            "interior": float(np.abs(err[scored & ~border]).mean())}


def evaluate(preset: str, seed: int, model: QuadraticRidge, frames: int, warmup: int,
             rows=None, cols=None) -> dict[str, dict]:
    """Score ``default``, ``ridge`` and ``ridge_bilateral`` on one camera stream (module
    docstring); one dict of frame-averaged metrics per method."""
    from drivers.simulated import SimulatedCamera
    from edge.core.chain import FLAG_UNCERTAIN
    from edge.pipeline.backend_factory import make_backend
    from edge.pipeline.reference import obtain_flatfield
    from edge.pipeline.truth import border_mask
    from edge.processing.spatial import bilateral_filter
    from measure_sto2_video import _config

    methods = ("default", "ridge", "ridge_bilateral")
    acc = {m: {} for m in methods}
    cost = {"ridge_ms": [], "bilateral_ms": [], "chain_ms": []}
    cam = SimulatedCamera(preset, rows=rows, cols=cols, seed=seed)
    with cam:
        cam.configure(exposure_us=8000, trigger_mode="software")
        cam.arm()
        cfg = _config("spatial", None)
        ff = obtain_flatfield(cfg, cam)
        backend = make_backend("numpy", cam, ff, None, cfg)
        plan = backend.plan
        for i in range(frames):
            frame = cam.grab(timeout=60.0)
            t0 = time.perf_counter()
            res = backend.run(frame.cube, exposure_us=frame.meta.exposure_us)
            t1 = time.perf_counter()
            if i < warmup:
                continue
            refl = res.reflectance
            ridge = model.predict(refl)
            t2 = time.perf_counter()
            a = np.where(np.isfinite(refl), -np.log(np.maximum(refl, np.float32(plan.eps))), 0)
            guide = (a.astype(np.float64) @ plan.guide_terms).astype(np.float32)
            spatial_ok = ((res.flags & ~FLAG_UNCERTAIN) == 0) & np.isfinite(ridge)
            t3 = time.perf_counter()
            rb, _, _ = bilateral_filter(ridge, None, guide, spatial_ok, plan.bilateral, None)
            t4 = time.perf_counter()
            rb = np.where(spatial_ok, rb, ridge)
            cost["chain_ms"].append((t1 - t0) * 1e3)
            cost["ridge_ms"].append((t2 - t1) * 1e3)
            cost["bilateral_ms"].append((t4 - t3) * 1e3)
            true = frame.truth["sto2"]
            tissue = np.isfinite(true)
            est = {"default": res.maps["sto2"], "ridge": ridge, "ridge_bilateral": rb}
            scored = tissue & np.isfinite(est["default"])
            border = border_mask(frame.truth["classes"], true)
            for m in methods:
                e = _errors(est[m], true, scored, border)
                every = tissue & np.isfinite(est[m] if m != "default" else res.maps["sto2_all"])
                src = est[m] if m != "default" else res.maps["sto2_all"]
                e["mae_all"] = float(100 * np.abs(src[every] - true[every]).mean())
                e["share_all"] = float(every.sum() / tissue.sum())
                e["valid_share"] = float(scored.sum() / tissue.sum())
                if m != "default":
                    err = np.abs(est[m][scored].astype(np.float64) - true[scored])
                    e["coverage"] = float(np.mean(err <= model.sigma))
                for k, v in e.items():
                    acc[m].setdefault(k, []).append(v)
    out = {}
    for m in methods:
        out[m] = {k: float(np.mean(v)) for k, v in acc[m].items()}
        out[m]["frames_scored"] = frames - warmup
    out["default"]["cost_ms"] = float(np.median(cost["chain_ms"]))
    out["ridge"]["cost_ms"] = float(np.median(cost["ridge_ms"]))
    out["ridge_bilateral"]["cost_ms"] = float(np.median(cost["ridge_ms"])
                                              + np.median(cost["bilateral_ms"]))
    out["ridge_bilateral"]["bilateral_ms"] = float(np.median(cost["bilateral_ms"]))
    out["shape"] = list(frame.cube.shape)
    return out


def band_gain(preset: str) -> np.ndarray | None:
    """``BandRegistration.variance_gain`` of the preset's simulated camera (None: no mosaic)."""
    from drivers.simulated import SimulatedCamera
    from edge.processing.register import BandRegistration

    cam = SimulatedCamera(preset, rows=8, cols=8, seed=0)
    off = cam.band_offsets
    if off is None:
        return None
    return np.asarray(BandRegistration.from_offsets(off, off.shape[0]).variance_gain)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["snapshot25", "snapshot16"],
                    choices=("tivita", "snapshot16", "snapshot25"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--n-train", type=int, default=30000)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--train-noise", choices=("frame", "registered", "mix"),
                    default="registered")
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--cols", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for name, value, least in (("--n-train", args.n_train, 100), ("--frames", args.frames, 1),
                               ("--warmup", args.warmup, 0)):
        if value < least:
            ap.error(f"{name}: expected an integer >= {least}, got {value}")
    if args.warmup >= args.frames:
        ap.error(f"--warmup: expected fewer than --frames ({args.frames}) so that a frame is "
                 f"scored, got {args.warmup}")
    logging.basicConfig(level=logging.WARNING)
    try:
        return _run(args)
    except HsiEdgeError as exc:          # a bad --rows/--cols...: one line
        print(f"measure_sto2_regressor: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    results = []
    for preset in args.presets:
        t0 = time.perf_counter()
        g = band_gain(preset)
        refl, truth = training_set(preset, args.n_train, args.train_seed, args.train_noise, g)
        model = fit_ridge(refl, truth, seed=args.train_seed)
        train_s = time.perf_counter() - t0
        info = {"n_train": args.n_train, "train_noise": args.train_noise,
                "lambda": model.lam, "lambda_per_n": model.lam / args.n_train,
                "sigma_val": 100 * model.sigma, "train_s": train_s,
                "features": int(model.weights.size)}
        print(f"# {preset}: registration variance gain per band "
              f"{'none' if g is None else np.round(g, 3).tolist()}", file=sys.stderr)
        for seed in args.seeds:
            ev = evaluate(preset, seed, model, args.frames, args.warmup, args.rows, args.cols)
            shape = ev.pop("shape")
            for method, m in ev.items():
                r = {"preset": preset, "seed": seed, "method": method, **m, **info,
                     "shape": shape}
                results.append(r)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in r.items()}), flush=True)
    print(f"\n{'preset':<11}{'seed':>5} {'method':<16}{'MAE':>6}{'bias':>7}{'border':>7}"
          f"{'inter':>7}{'MAEall':>7}{'cover':>6}{'ms':>8}   training (noise, n, lambda/n, "
          f"sigma_val points)")
    for r in results:
        cov = r.get("coverage")
        train = "" if r["method"] == "default" else (
            f"   {r['train_noise']}, {r['n_train']}, {r['lambda_per_n']:.2g}, "
            f"{r['sigma_val']:.2f}")
        print(f"{r['preset']:<11}{r['seed']:>5} {r['method']:<16}{r['mae']:>6.2f}"
              f"{r['bias']:>+7.2f}{r['border']:>7.2f}{r['interior']:>7.2f}{r['mae_all']:>7.2f}"
              f"{'' if cov is None else f'{cov:.2f}':>6}{r['cost_ms']:>8.1f}{train}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
