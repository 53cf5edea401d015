"""TIVITA-style perfusion indices: StO2 index, NIR perfusion, THI, TWI.

These are APPROXIMATIONS of proprietary formulas, after Holmer et al. 2018 (Biomed Tech
63(5):547) as implemented in public third-party code; the window limits and constants are
unverified (FACTS.md, "TIVITA-style indices") and therefore live in :class:`IndexParams`.

With ``A = -ln(max(R, eps))`` and ``A''`` its Savitzky-Golay 2nd derivative along bands
(window 5, order 3, per band step; coefficients from SciPy, applied as per-band taps)::

    sto2_index = (r1/s1) / (r1/s1 + r2/s2),  r1 = min A'' in 570-590 nm, r2 = min A'' in 740-780
    nir        = (mean A 825-925 / mean A 655-735) / 1.9
    thi        = (mean A 530-590 / mean A 785-825 - 1.3) / 1.7
    twi        = (mean A 955-980 / mean A 880-900 - 0.4) / 1.6

all clipped to [0, 1].  A window holds the bands whose centres lie within [lo, hi] nm.  An
index whose windows hold no band on the given grid (e.g. TWI on a 460-600 nm camera) is an
all-NaN map, with one logged warning per grid and index.  Pixels with any non-finite band, or
a zero denominator, are NaN.

Everything up to the min/ratio is linear in ``A``: :func:`index_linear_terms` returns the
(bands, m) matrix whose columns give the window means and the ``A''`` values at the
sto2-window bands, so a backend can fuse it with the unmixing pseudo-inverse into one matmul.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from edge.core.config import setting
from edge.core.frame import validate_wavelengths
from edge.errors import DataFormatError

__all__ = ["IndexParams", "tivita_indices", "savgol_coeffs", "savgol_taps", "savgol_matrix",
           "index_linear_terms", "indices_from_terms", "sto2_index_from_minima", "INDEX_NAMES"]

log = logging.getLogger(__name__)
INDEX_NAMES = ("sto2_index", "nir", "thi", "twi")
_warned: set[tuple] = set()


@dataclass(frozen=True)
class IndexParams:
    """Windows (nm, inclusive) and constants of the TIVITA-style indices (unverified)."""

    sto2_r1_nm: tuple[float, float] = (570.0, 590.0)
    sto2_r2_nm: tuple[float, float] = (740.0, 780.0)
    sto2_s1: float = setting(1.0, range=(1e-6, 1e6))
    sto2_s2: float = setting(0.15, range=(1e-6, 1e6))
    nir_num_nm: tuple[float, float] = (825.0, 925.0)
    nir_den_nm: tuple[float, float] = (655.0, 735.0)
    nir_scale: float = setting(1.9, range=(1e-6, 1e6))
    thi_num_nm: tuple[float, float] = (530.0, 590.0)
    thi_den_nm: tuple[float, float] = (785.0, 825.0)
    thi_offset: float = 1.3
    thi_scale: float = setting(1.7, range=(1e-6, 1e6))
    twi_num_nm: tuple[float, float] = (955.0, 980.0)
    twi_den_nm: tuple[float, float] = (880.0, 900.0)
    twi_offset: float = 0.4
    twi_scale: float = setting(1.6, range=(1e-6, 1e6))
    sg_window: int = setting(5, range=(3, 51))
    sg_order: int = setting(3, range=(1, 10))
    eps: float = setting(1e-4, range=(1e-12, 1.0))

    def __post_init__(self) -> None:
        if self.sg_window % 2 != 1 or self.sg_order >= self.sg_window:
            raise DataFormatError(f"IndexParams.sg_window/sg_order: expected an odd window "
                                  f"larger than the order, got {self.sg_window}/{self.sg_order}")
        for name in ("sto2_r1_nm", "sto2_r2_nm", "nir_num_nm", "nir_den_nm", "thi_num_nm",
                     "thi_den_nm", "twi_num_nm", "twi_den_nm"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise DataFormatError(f"IndexParams.{name}: expected (lo, hi) with lo <= hi, "
                                      f"got {(lo, hi)}")


def savgol_coeffs(window: int = 5, order: int = 3, deriv: int = 2,
                  pos: int | None = None) -> np.ndarray:
    """Savitzky-Golay coefficients (Savitzky & Golay 1964), from ``scipy.signal.savgol_coeffs``.

    The weights of a least-squares polynomial of degree ``order`` fitted to ``window``
    samples that give its ``deriv``-th derivative at sample ``pos`` (default: the centre),
    per unit sample spacing, in sample order (SciPy's ``use="dot"``).

    Returns
    -------
    ndarray of shape (window,), float64. For (5, 3, 2) at the centre: ``[2,-1,-2,-1,2]/7``.
    """
    from scipy.signal import savgol_coeffs as _coeffs   # SciPy is imported on use

    pos = window // 2 if pos is None else pos
    return np.asarray(_coeffs(window, order, deriv=deriv, pos=pos, use="dot"), dtype=np.float64)


def savgol_taps(bands: int, window: int = 5, order: int = 3, deriv: int = 2
                ) -> tuple[np.ndarray, np.ndarray]:
    """The Savitzky-Golay filter along ``bands`` samples as per-band taps (a convolution).

    ``A''[..., i] = sum_j taps[i, j] * A[..., starts[i] + j]``.  Interior bands use the
    centred window.  The first/last ``window//2`` bands use the polynomial fitted to the
    first/last ``window`` bands, evaluated at their own position (scipy's ``mode="interp"``),
    so the output has no padding artefacts.  Memory is ``bands x window``: a dense
    bands x bands operator is never built (a header claiming 60,000 bands once asked for
    26.8 GiB).

    Returns
    -------
    starts : ndarray of shape (bands,), intp -- first band of each band's window
    taps : ndarray of shape (bands, window), float64
    """
    if bands < window:
        raise DataFormatError(f"bands: the Savitzky-Golay window {window} needs at least "
                              f"{window} bands, got {bands}")
    half = window // 2
    starts = np.clip(np.arange(bands) - half, 0, bands - window)
    taps = np.empty((bands, window), dtype=np.float64)
    centre = savgol_coeffs(window, order, deriv)
    for i in range(bands):
        pos = i - int(starts[i])
        taps[i] = centre if pos == half else savgol_coeffs(window, order, deriv, pos=pos)
    return starts, taps


def savgol_matrix(bands: int, window: int = 5, order: int = 3, deriv: int = 2) -> np.ndarray:
    """Matrix ``D`` (bands, bands) with ``A'' = A @ D`` along the last axis.

    The taps of :func:`savgol_taps` laid out densely, for the compiled kernels' tap tables on
    their bounded grids (at most 256 bands); the reference path never builds it.
    """
    starts, taps = savgol_taps(bands, window, order, deriv)
    d = np.zeros((bands, bands), dtype=np.float64)
    for i in range(bands):
        d[starts[i]:starts[i] + window, i] = taps[i]
    return d


def _window(wl: np.ndarray, lo_hi: tuple[float, float]) -> np.ndarray:
    return np.flatnonzero((wl >= lo_hi[0]) & (wl <= lo_hi[1]))


def index_linear_terms(wavelengths_nm: np.ndarray, params: IndexParams = IndexParams()
                       ) -> tuple[np.ndarray, dict]:
    """The linear part of the indices as one (bands, m) float64 matrix ``L``.

    ``T = A @ L`` gives, per pixel, the window means and the ``A''`` samples.  ``layout``
    maps each term name to its column slice of ``T`` (empty slice: window has no band):
    ``r1``, ``r2`` (A'' at the sto2 windows; take the min), ``nir_num``, ``nir_den``,
    ``thi_num``, ``thi_den``, ``twi_num``, ``twi_den`` (one column each: the mean).
    """
    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    cols: list[np.ndarray] = []
    layout: dict[str, slice] = {}
    if wl.size >= params.sg_window:
        starts, taps = savgol_taps(wl.size, params.sg_window, params.sg_order, 2)
    for name, rng in (("r1", params.sto2_r1_nm), ("r2", params.sto2_r2_nm)):
        idx = _window(wl, rng) if wl.size >= params.sg_window else np.array([], int)
        layout[name] = slice(len(cols), len(cols) + idx.size)
        for i in idx:   # column i of the filter: band i's taps at their bands
            c = np.zeros(wl.size)
            c[starts[i]:starts[i] + params.sg_window] = taps[i]
            cols.append(c)
    for name in ("nir_num", "nir_den", "thi_num", "thi_den", "twi_num", "twi_den"):
        idx = _window(wl, getattr(params, name + "_nm"))
        if idx.size:
            w = np.zeros(wl.size)
            w[idx] = 1.0 / idx.size
            layout[name] = slice(len(cols), len(cols) + 1)
            cols.append(w)
        else:
            layout[name] = slice(len(cols), len(cols))
    mat = np.stack(cols, axis=1) if cols else np.zeros((wl.size, 0))
    return mat, layout


def _ratio(num: np.ndarray, den: np.ndarray, offset: float, scale: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        val = (num / den - np.float32(offset)) / np.float32(scale)
    val = np.where(np.isfinite(val), val, np.float32(np.nan))
    return np.clip(val, 0, 1).astype(np.float32)   # clip keeps NaN


def sto2_index_from_minima(min1: np.ndarray, min2: np.ndarray,
                           params: IndexParams = IndexParams()) -> np.ndarray:
    """StO2 index from the minima of ``A''`` over its two windows (float32, clipped [0, 1])."""
    r1 = min1 / np.float32(params.sto2_s1)
    r2 = min2 / np.float32(params.sto2_s2)
    return _ratio(r1, r1 + r2, 0.0, 1.0)


def indices_from_terms(terms: np.ndarray, layout: dict, params: IndexParams,
                       grid_key: tuple = ()) -> dict[str, np.ndarray]:
    """Finish the indices from ``T = A @ L`` (shape (..., m), float32) -> dict of (...,)."""
    shape = terms.shape[:-1]
    out: dict[str, np.ndarray] = {}
    missing = []

    def col(name: str) -> np.ndarray | None:
        s = layout[name]
        return None if s.stop == s.start else terms[..., s.start]

    if layout["r1"].stop > layout["r1"].start and layout["r2"].stop > layout["r2"].start:
        out["sto2_index"] = sto2_index_from_minima(terms[..., layout["r1"]].min(axis=-1),
                                                   terms[..., layout["r2"]].min(axis=-1),
                                                   params)
    else:
        missing.append("sto2_index")
    for name in ("nir", "thi", "twi"):
        num, den = col(name + "_num"), col(name + "_den")
        if num is None or den is None:
            missing.append(name)
            continue
        offset = 0.0 if name == "nir" else getattr(params, name + "_offset")
        out[name] = _ratio(num, den, offset, getattr(params, name + "_scale"))
    for name in missing:
        key = (name,) + grid_key
        if key not in _warned:
            _warned.add(key)
            log.warning("index %s: the wavelength grid %s has no band in one of its windows; "
                        "returning an all-NaN map", name, grid_key[1:] if grid_key else "")
        out[name] = np.full(shape, np.nan, dtype=np.float32)
    return {name: out[name] for name in INDEX_NAMES}


def tivita_indices(reflectance: np.ndarray, wavelengths_nm: np.ndarray,
                   params: IndexParams = IndexParams()) -> dict[str, np.ndarray]:
    """TIVITA-style indices from reflectance (approximation, see module docstring).

    Parameters
    ----------
    reflectance : ndarray of shape (..., bands), float
    wavelengths_nm : ndarray of shape (bands,)
    params : IndexParams

    Returns
    -------
    dict with keys ``sto2_index``, ``nir``, ``thi``, ``twi``: ndarray of shape (...,), float32
    in [0, 1], NaN where invalid or where the grid lacks the windows.
    """
    from edge.processing.unmixing import absorbance   # sibling module; avoids a cycle

    r = np.asarray(reflectance)
    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    if r.ndim < 1 or r.shape[-1] != wl.size:
        raise DataFormatError(f"reflectance: expected {wl.size} bands (last axis) to match "
                              f"wavelengths_nm, got shape {r.shape}")
    a = absorbance(r, eps=params.eps)
    finite = np.all(np.isfinite(a), axis=-1)
    mat, layout = index_linear_terms(wl, params)
    # Straightforward reference: zeroed invalid pixels, then NaN them at the end.
    terms = (np.where(finite[..., None], a, 0).astype(np.float64) @ mat).astype(np.float32)
    out = indices_from_terms(terms, layout, params,
                             grid_key=(wl.size, round(float(wl[0]), 3), round(float(wl[-1]), 3)))
    for v in out.values():
        v[~finite] = np.nan
    return out
