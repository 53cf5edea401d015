"""Radiometric checks of a field calibration: pure functions from averaged frames to
:class:`~calibration.thresholds.CheckResult`.

Methods and limits are those of ``calibration/thresholds.yaml`` (sources there and in
``../shared/research/field_calibration.md``, section 2).  Arrays are averaged captures:
``(rows, cols, bands)`` float means in counts, ``*_std`` their per-element temporal standard
deviation.  A *baseline* is the summary of the unit's commissioning calibration (its first
accepted one, :func:`summary`); where it is None the check says that this calibration sets it.

Spectral checks (wavelength shift, MTF) are in :mod:`calibration.checks_spectral`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from calibration.thresholds import CheckResult, ThresholdTable

__all__ = ["central", "band_medians", "hot_mask", "reflectance", "ambient_check", "warmup_change",
           "dark_checks", "white_checks", "drift_checks", "accuracy_check", "colour_check",
           "repeatability_check", "linearity_check", "snr_check", "quick_check", "summary",
           "SATURATION_FRACTION"]

#: A white pixel above this fraction of full scale is saturated ([2] htc: > 1000/1023).
SATURATION_FRACTION = 1000.0 / 1023.0
_MAD = 1.4826


def central(a: np.ndarray, frac: float = 0.8) -> np.ndarray:
    """The central ``frac`` of the first two axes of ``a``."""
    r, c = a.shape[:2]
    dr, dc = int(round(r * (1 - frac) / 2)), int(round(c * (1 - frac) / 2))
    return a[dr:r - dr or None, dc:c - dc or None]


def band_medians(a: np.ndarray, frac: float = 0.8) -> np.ndarray:
    """Median over the central ``frac`` of the pixels, per band: shape (bands,)."""
    return _band_means(a, frac)


def _band_means(a: np.ndarray, frac: float = 0.8) -> np.ndarray:
    """Median over the central pixels, per band: shape (bands,)."""
    x = central(np.asarray(a, np.float64), frac)
    return np.median(x.reshape(-1, x.shape[-1]), axis=0)


def hot_mask(dark_mean: np.ndarray, dark_std: np.ndarray, n: int) -> np.ndarray:
    """Hot pixels: dark mean above ``median + max(6 MAD-sigma, 6 sigma_t/sqrt(n), 1)`` in
    any band (the temporal term keeps a short capture from flagging noise).

    Returns
    -------
    ndarray of shape (rows, cols), bool
    """
    flat = np.asarray(dark_mean, np.float64).reshape(-1, dark_mean.shape[2])
    med = np.median(flat, axis=0)
    mad = np.median(np.abs(flat - med), axis=0)
    sig_t = np.median(np.asarray(dark_std, np.float64).reshape(-1, dark_mean.shape[2]), axis=0)
    limit = med + np.maximum(np.maximum(6 * _MAD * mad, 6 * sig_t / np.sqrt(max(n, 1))), 1.0)
    return (dark_mean > limit).any(axis=2)


def reflectance(signal: np.ndarray, dark: np.ndarray, white: np.ndarray, white_dark: np.ndarray,
                rho_white: Any, exposure_ratio: float = 1.0) -> np.ndarray:
    """Flat-fielded reflectance ``(S - D) / ((W - Dw) * exposure_ratio) * rho``.

    ``exposure_ratio`` = signal exposure / white exposure (the sensor is linear in time).
    """
    span = (np.asarray(white, np.float64) - white_dark) * exposure_ratio
    return (np.asarray(signal, np.float64) - dark) / np.maximum(span, 1e-6) \
        * np.asarray(rho_white, np.float64)


def ambient_check(t: ThresholdTable, ambient: np.ndarray, white: np.ndarray,
                  dark: np.ndarray) -> CheckResult:
    """Room light with the illumination off, as a fraction of the white signal per band.

    Parameters
    ----------
    ambient, white, dark : ndarray of shape (bands,)
        Central band medians (:func:`band_medians`) of the three captures.
    """
    ratio = 100.0 * (ambient - dark) / np.maximum(white - dark, 1e-6)
    b = int(np.argmax(ratio))
    return t.result("ambient_ratio", float(ratio[b]), detail=f"worst band {b}",
                    data={"ratio_pct": ratio.tolist()})


def warmup_change(previous: np.ndarray, latest: np.ndarray) -> float:
    """Largest per-band relative change (%) between two white groups' central band means.

    Parameters
    ----------
    previous, latest : ndarray of shape (bands,)
        Mean over the central 80 % of each group's averaged white.
    """
    p, q = np.asarray(previous, np.float64), np.asarray(latest, np.float64)
    return float(100.0 * np.max(np.abs(q - p) / np.maximum(np.abs(q), 1e-6)))


def dark_checks(t: ThresholdTable, dark: np.ndarray, dark_std: np.ndarray, n: int,
                baseline: Mapping | None) -> tuple[list[CheckResult], np.ndarray]:
    """Dark level and noise against the baseline, hot-pixel growth, light leak.

    Returns
    -------
    results : list of CheckResult
    hot : ndarray of shape (rows, cols), bool
    """
    hot = hot_mask(dark, dark_std, n)
    level = float(np.mean(dark[~hot])) if (~hot).any() else float(np.mean(dark))
    noise = float(np.median(dark_std)) if n > 1 else float("nan")
    hot_pct = 100.0 * float(hot.mean())
    data = {"dark_mean": level, "dark_noise": noise, "hot_pct": hot_pct,
            "band_mean": _band_means(dark, 1.0).tolist(),
            "band_noise": _band_means(dark_std, 1.0).tolist()}
    out = []
    if baseline:
        sigma = max(float(baseline["dark_noise"]), 0.1)
        out.append(t.result("dark_level", abs(level - baseline["dark_mean"]) / sigma,
                            detail=f"{level:.2f} counts, baseline {baseline['dark_mean']:.2f}",
                            data=data))
        out.append(t.result("dark_noise", noise / max(float(baseline["dark_noise"]), 1e-6),
                            detail=f"{noise:.3f} counts rms"))
        out.append(t.result("hot_pixels", max(0.0, hot_pct - baseline["hot_pct"]),
                            detail=f"{int(hot.sum())} hot pixel(s), baseline "
                                   f"{baseline['hot_pct']:.3f} %"))
    else:
        out.append(t.result("dark_level", 0.0, detail=f"{level:.2f} counts: commissioning "
                                                      "baseline set now", data=data))
        out.append(t.result("dark_noise", 1.0, detail=f"{noise:.3f} counts rms: baseline"))
        out.append(t.result("hot_pixels", 0.0, detail=f"{int(hot.sum())} hot pixel(s): "
                                                      "baseline"))
    img = dark.mean(axis=2).astype(np.float64)
    rr, cc = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    ok = ~hot
    design = np.stack([np.ones(ok.sum()), rr[ok], cc[ok]], axis=1)
    coef, *_ = np.linalg.lstsq(design, img[ok], rcond=None)
    leak = abs(coef[1]) * (img.shape[0] - 1) + abs(coef[2]) * (img.shape[1] - 1)
    out.append(t.result("light_leak", float(leak), detail="plane fit over the dark image"))
    return out, hot


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(a, sigma, mode="nearest")


def uniformity(white: np.ndarray, dark: np.ndarray) -> float:
    """(max - min) / mean (%) of the smoothed, band-averaged white, central 80 %."""
    img = central(_smooth((white - dark).mean(axis=2).astype(np.float64), 1.5))
    return float(100.0 * (img.max() - img.min()) / img.mean())


def white_checks(t: ThresholdTable, white: np.ndarray, dark: np.ndarray, bit_depth: int,
                 previous: tuple[np.ndarray, np.ndarray] | None,
                 baseline: Mapping | None) -> list[CheckResult]:
    """Saturation, level, uniformity and dirt of a white capture.

    ``previous`` is (white, dark) of the previous record at the same settings (for the dirt
    map), or None.
    """
    full = 2.0 ** bit_depth - 1.0
    sat = 100.0 * float((white > SATURATION_FRACTION * full).any(axis=2).mean())
    peak = _band_means(white, 1.0)
    b = int(np.argmax(peak))
    level = 100.0 * float(np.median(white[:, :, b])) / full
    u = uniformity(white, dark)
    base_u = float(baseline["uniformity"]) if baseline else 30.0
    out = [t.result("white_saturation", sat, data={"band_mean": peak.tolist()}),
           t.result("white_level", level, detail=f"band {b}"),
           t.result("white_uniformity", u - base_u,
                    detail=f"{u:.2f} % against {'baseline' if baseline else 'limit'} "
                           f"{base_u:.2f} %", data={"uniformity": u})]
    img = (white - dark).mean(axis=2).astype(np.float64)
    if previous is not None and previous[0].shape == white.shape:
        ref = (previous[0] - previous[1]).mean(axis=2).astype(np.float64)
        ratio = img / np.maximum(ref, 1e-6)
        ratio /= np.median(ratio)
        how = "against the previous white"
    else:
        # a quadratic surface takes out vignetting and illumination fall-off, not a blob
        rr, cc = np.mgrid[0:img.shape[0], 0:img.shape[1]]
        y, x = rr.ravel() / img.shape[0] - 0.5, cc.ravel() / img.shape[1] - 0.5
        design = np.stack([np.ones_like(x), y, x, y * y, x * y, x * x], axis=1)
        coef, *_ = np.linalg.lstsq(design, img.ravel(), rcond=None)
        ratio = img / np.maximum((design @ coef).reshape(img.shape), 1e-6)
        how = "against a smooth surface"
    from scipy.ndimage import label, uniform_filter
    resid = uniform_filter(ratio - 1.0, 3, mode="nearest")
    sigma = _MAD * float(np.median(np.abs(resid - np.median(resid))))
    thr = max(4.0 * sigma, 0.001)
    labels, n = label(np.abs(resid) > thr)
    depth, area = 0.0, 0
    for k in range(1, n + 1):
        blob = labels == k
        if blob.sum() >= 20:
            d = 100.0 * float(np.abs(resid[blob]).mean())
            if d > depth:
                depth, area = d, int(blob.sum())
    out.append(t.result("white_dirt", depth,
                        detail=f"{area} px blob {how}" if area else f"no blob {how}",
                        data={"map": (ratio - 1.0).astype(np.float32)}))
    return out


def drift_checks(t: ThresholdTable, white: np.ndarray, dark: np.ndarray,
                 prev_white: np.ndarray, prev_dark: np.ndarray,
                 exposure_ratio: float = 1.0) -> list[CheckResult]:
    """Lamp level and colour drift: per-band white / previous white (dark-corrected)."""
    ratio = _band_means(white - dark) / np.maximum(
        _band_means(prev_white - prev_dark) * exposure_ratio, 1e-6)
    level = float(np.median(ratio))
    shape = ratio / level
    b = int(np.argmax(np.abs(shape - 1)))
    return [t.result("white_drift_level", 100.0 * abs(level - 1.0),
                     detail=f"white {100 * (level - 1):+.2f} % since the previous calibration",
                     data={"ratio": ratio.tolist()}),
            t.result("white_drift_shape", 100.0 * float(abs(shape[b] - 1.0)),
                     detail=f"worst band {b}")]


def accuracy_check(t: ThresholdTable, measured: np.ndarray, certified: np.ndarray) -> CheckResult:
    """RMSE (reflectance units) of a tile's measured band reflectance against its certificate."""
    rmse = float(np.sqrt(np.mean((measured - certified) ** 2)))
    return t.result("reflectance_accuracy", rmse,
                    data={"measured": measured.tolist(), "certified": certified.tolist()})


def colour_check(t: ThresholdTable, measured: np.ndarray, certified: np.ndarray) -> CheckResult:
    """Spectral angle (degrees) between measured and certified reflectance."""
    cos = float(measured @ certified / (np.linalg.norm(measured) * np.linalg.norm(certified)))
    ang = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return t.result("colour_angle", ang,
                    data={"measured": measured.tolist(), "certified": certified.tolist()})


def repeatability_check(t: ThresholdTable, placements: np.ndarray) -> CheckResult:
    """Max per-band coefficient of variation (%) of the mean reflectance over placements.

    Parameters
    ----------
    placements : ndarray of shape (k, bands)
    """
    p = np.asarray(placements, np.float64)
    cv = 100.0 * p.std(axis=0, ddof=1) / np.maximum(np.abs(p.mean(axis=0)), 1e-6)
    return t.result("repeatability", float(cv.max()), detail=f"{p.shape[0]} placements",
                    data={"cv_pct": cv.tolist()})


def linearity_check(t: ThresholdTable, exposures: np.ndarray, signals: np.ndarray) -> CheckResult:
    """Max relative deviation (%) from the line fitted through the three lowest exposures.

    Parameters
    ----------
    exposures : ndarray of shape (k,), k >= 4
    signals : ndarray of shape (k, bands)
        Dark-corrected band signals (central mean).  Bands whose top signal is under half
        the brightest band's are not judged (their noise would dominate).
    """
    e = np.asarray(exposures, np.float64)
    s = np.asarray(signals, np.float64)
    order = np.argsort(e)
    e, s = e[order], s[order]
    coef = np.polyfit(e[:3], s[:3], 1)  # (2, bands): slope, intercept
    fit = coef[0][None, :] * e[:, None] + coef[1][None, :]
    rel = 100.0 * (s - fit) / np.maximum(np.abs(fit), 1e-6)
    strong = s[-1] >= 0.5 * s[-1].max()
    dev_b = np.where(strong, np.abs(rel).max(axis=0), 0.0)
    b = int(np.argmax(dev_b))
    return t.result("linearity", float(dev_b[b]), detail=f"worst band {b}",
                    data={"exposures": e.tolist(), "residual_pct": rel[:, b].tolist()})


def snr_per_band(white: np.ndarray, white_std: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Median over central pixels of (W - D) / sigma_t(W), per band."""
    return _band_means((white - dark) / np.maximum(white_std, 1e-6))


def snr_check(t: ThresholdTable, snr: np.ndarray, baseline: Mapping | None) -> CheckResult:
    base = None if not baseline or not baseline.get("snr") else np.asarray(baseline["snr"])
    if base is None or base.shape != snr.shape:
        return t.result("snr", 1.0, detail=f"min SNR {snr.min():.0f}: baseline set now",
                        data={"snr": snr.tolist()})
    ratio = snr / np.maximum(base, 1e-6)
    b = int(np.argmin(ratio))
    return t.result("snr", float(ratio[b]), detail=f"worst band {b}",
                    data={"snr": snr.tolist(), "baseline": base.tolist()})


def quick_check(t: ThresholdTable, white: np.ndarray, dark: np.ndarray,
                rec_white: np.ndarray, rec_dark: np.ndarray,
                exposure_ratio: float = 1.0) -> CheckResult:
    """A few white frames against the record: max(level change, shape change) in %."""
    level, shape = drift_checks(t, white, dark, rec_white, rec_dark, exposure_ratio)
    value = max(float(level.value), float(shape.value))
    change = 100.0 * (float(np.median(level.data["ratio"])) - 1.0)
    return t.result("quick_check", value,
                    detail=f"white level {change:+.2f} %, colour {shape.value:.2f} % against "
                           "the record", data={"ratio": level.data["ratio"]})


def summary(results: list[CheckResult]) -> dict[str, Any]:
    """Baseline figures of a calibration (its trend/commissioning summary)."""
    by = {r.name: r for r in results}
    s: dict[str, Any] = {}
    if "dark_level" in by:
        s.update({k: by["dark_level"].data[k] for k in ("dark_mean", "dark_noise", "hot_pct")})
    if "white_uniformity" in by:
        s["uniformity"] = by["white_uniformity"].data["uniformity"]
    if "white_saturation" in by:
        s["white_band_mean"] = by["white_saturation"].data["band_mean"]
    if "snr" in by:
        s["snr"] = by["snr"].data["snr"]
    if "mtf50" in by:
        s["mtf50"] = by["mtf50"].data["mtf50"]
    if "wavelength_shift" in by:
        s["wavelength_shift_nm"] = by["wavelength_shift"].data["shift_nm"]
    return s
