"""Spectral and spatial checks: band-centre shift from a wavelength standard, slanted-edge
MTF (ISO 12233).

Wavelength shift ([32] openhsi, [40] specreduce: forward-model the standard through the band
response functions and fit the shift): the certificate's spectrum is integrated over Gaussian
bands centred at ``nominal + δ`` for δ on a 0.05 nm grid; for each δ the measured reflectance
is fitted as ``model(δ) · (a + b·x)`` (a gain and a tilt absorb tile level and lamp colour);
the δ of least residual, refined by a parabola through its neighbours, is the shift.  Measured
in the central region and in the four corner regions (the field dependence of snapshot
filters [12]).

MTF: per-row edge positions (centroid of the row derivative) are fitted by a line; pixels are
projected onto the edge normal and binned at 1/4 pixel (the edge-spread function), its
derivative under a Hann window is the line-spread function, and its Fourier magnitude,
normalised at zero frequency, the MTF.  MTF50 is where it first falls below 0.5 (cycles per
pixel).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from calibration.thresholds import CheckResult, ThresholdTable
from edge.errors import CalibrationError
from edge.physics import band_integrate

__all__ = ["fit_shift", "wavelength_checks", "mtf", "mtf_check", "SHIFT_RANGE_NM"]

#: Shifts searched (nm).
SHIFT_RANGE_NM = 6.0
_STEP = 0.1
#: Forward models by (band centres, FWHM, certificate spectrum): computed once per process.
_MODELS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _models(cert: Mapping[str, Any], wavelengths: np.ndarray, fwhm: float) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    cw = np.asarray(cert["wavelengths_nm"], np.float64)
    cr = np.asarray(cert["reflectance"], np.float64)
    lo = wavelengths[0] - 3 * fwhm - SHIFT_RANGE_NM
    hi = wavelengths[-1] + 3 * fwhm + SHIFT_RANGE_NM
    if cw[0] > lo + 3 * fwhm or cw[-1] < hi - 3 * fwhm:
        raise CalibrationError(
            f"wavelength standard certificate: covers {cw[0]:g}-{cw[-1]:g} nm, the camera's "
            f"bands need about {lo + 3 * fwhm:g}-{hi - 3 * fwhm:g} nm")
    fine = np.arange(max(lo, cw[0]), min(hi, cw[-1]) + 0.125, 0.25)
    spec = np.interp(fine, cw, cr)
    shifts = np.arange(-SHIFT_RANGE_NM, SHIFT_RANGE_NM + _STEP / 2, _STEP)
    models = np.stack([band_integrate(fine, spec, wavelengths + s, fwhm) for s in shifts])
    return shifts, models


def fit_shift(measured: np.ndarray, wavelengths: np.ndarray, fwhm: float,
              cert: Mapping[str, Any]) -> float:
    """Band-centre shift (nm) of ``measured`` reflectance (bands,) against the certificate."""
    key = (np.asarray(wavelengths, np.float64).tobytes(), float(fwhm),
           tuple(cert["wavelengths_nm"]), tuple(cert["reflectance"]))
    if key not in _MODELS:
        if len(_MODELS) > 8:
            _MODELS.clear()
        _MODELS[key] = _models(cert, np.asarray(wavelengths, np.float64), fwhm)
    shifts, models = _MODELS[key]
    x = (wavelengths - wavelengths.mean()) / max(float(np.ptp(wavelengths)), 1.0)
    m = np.asarray(measured, np.float64)
    resid = np.empty(shifts.size)
    for i, mod in enumerate(models):
        design = np.stack([mod, mod * x], axis=1)
        coef, *_ = np.linalg.lstsq(design, m, rcond=None)
        resid[i] = float(np.sum((m - design @ coef) ** 2))
    k = int(np.argmin(resid))
    if 0 < k < shifts.size - 1:
        y0, y1, y2 = resid[k - 1], resid[k], resid[k + 1]
        denom = y0 - 2 * y1 + y2
        off = 0.5 * (y0 - y2) / denom if denom > 0 else 0.0
        return float(shifts[k] + np.clip(off, -1, 1) * _STEP)
    return float(shifts[k])


def _regions(rows: int, cols: int) -> dict[str, tuple[slice, slice]]:
    h, w = max(rows // 4, 1), max(cols // 4, 1)
    return {"centre": (slice(rows // 2 - h // 2, rows // 2 - h // 2 + h),
                       slice(cols // 2 - w // 2, cols // 2 - w // 2 + w)),
            "top_left": (slice(0, h), slice(0, w)),
            "top_right": (slice(0, h), slice(cols - w, cols)),
            "bottom_left": (slice(rows - h, rows), slice(0, w)),
            "bottom_right": (slice(rows - h, rows), slice(cols - w, cols))}


def wavelength_checks(t: ThresholdTable, refl: np.ndarray, wavelengths: np.ndarray,
                      fwhm: float, cert: Mapping[str, Any]) -> list[CheckResult]:
    """Global and field-dependent band-centre shift from a reflectance cube of the standard.

    Parameters
    ----------
    refl : ndarray of shape (rows, cols, bands)
        Flat-fielded reflectance of the wavelength standard.
    """
    wl = np.asarray(wavelengths, np.float64)
    shifts = {}
    for name, (rs, cs) in _regions(*refl.shape[:2]).items():
        spec = np.median(refl[rs, cs].reshape(-1, refl.shape[2]), axis=0)
        shifts[name] = fit_shift(spec, wl, fwhm, cert)
    centre = shifts["centre"]
    field = max(abs(v - centre) for k, v in shifts.items() if k != "centre")
    return [t.result("wavelength_shift", abs(centre), detail=f"shift {centre:+.2f} nm",
                     data={"shift_nm": centre, "regions": shifts}),
            t.result("wavelength_field", field, detail="corners against centre",
                     data={"regions": shifts})]


def mtf(edge_image: np.ndarray, oversample: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """MTF of a slanted-edge image (rows, cols): (frequencies cycles/px, mtf, mtf50)."""
    img = np.asarray(edge_image, np.float64)
    rows, cols = img.shape
    d = np.abs(np.diff(img, axis=1))
    pos = (d * (np.arange(cols - 1) + 0.5)).sum(axis=1) / np.maximum(d.sum(axis=1), 1e-12)
    p1, p0 = np.polyfit(np.arange(rows), pos, 1)
    cos = math.cos(math.atan(p1))
    rr, cc = np.mgrid[0:rows, 0:cols]
    dist = (cc - (p0 + p1 * rr)) * cos
    half = min(cols / 2.0 - 2.0, 16.0)
    nb = int(2 * half * oversample)
    idx = np.floor((dist + half) * oversample).astype(int)
    ok = (idx >= 0) & (idx < nb)
    sums = np.bincount(idx[ok], img[ok], nb)
    counts = np.bincount(idx[ok], None, nb)
    have = counts > 0
    if have.sum() < nb // 2:
        raise CalibrationError("slanted edge: too few samples across the edge (is the edge "
                               "target in view?)")
    esf = np.interp(np.arange(nb), np.flatnonzero(have), sums[have] / counts[have])
    lsf = np.diff(esf) * np.hanning(nb - 1)
    spec = np.abs(np.fft.rfft(lsf))
    m = spec / max(spec[0], 1e-12)
    f = np.fft.rfftfreq(nb - 1, d=1.0 / oversample)
    below = np.flatnonzero(m < 0.5)
    if below.size == 0:
        m50 = float(f[-1])
    else:
        k = int(below[0])
        m50 = float(f[k - 1] + (m[k - 1] - 0.5) / (m[k - 1] - m[k]) * (f[k] - f[k - 1]))
    return f, m, m50


def mtf_check(t: ThresholdTable, edge_refl: np.ndarray, baseline: Mapping | None) -> CheckResult:
    """MTF50 of the band-averaged slanted edge against the baseline (else 0.25 cycles/px)."""
    f, m, m50 = mtf(np.asarray(edge_refl, np.float64).mean(axis=2))
    base = float(baseline["mtf50"]) if baseline and baseline.get("mtf50") else None
    ref = base if base else 0.25
    keep = f <= 1.0
    return t.result("mtf50", m50 / ref,
                    detail=f"MTF50 {m50:.3f} cycles/px against {'baseline' if base else 'limit'}"
                           f" {ref:.3f}",
                    data={"mtf50": m50, "freq": f[keep].tolist(), "mtf": m[keep].tolist()})
