"""RGB previews of reflectance cubes.

True colour uses the CIE 1931 2° colour-matching functions and the CIE D65 illuminant (5 nm,
380-780 nm, ``data/cie1931_2deg_cmf_d65.csv``, copied from colour-science 0.4.7, BSD-3-Clause;
see ``data/SOURCES.md``), the IEC 61966-2-1 XYZ→linear-sRGB matrix and the sRGB transfer curve.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from edge.errors import DataFormatError
from edge.physics.spectra import _as_wavelengths, load_table

__all__ = ["cube_to_rgb", "rgb_matrix", "TRUE_COLOUR_MIN_COVERAGE"]

log = logging.getLogger(__name__)

#: Minimum fraction of the D65-weighted luminance (∫ D65·ȳ) that the camera's wavelength span
#: must cover for a true-colour rendering; below it the pseudo-colour fallback is used.
TRUE_COLOUR_MIN_COVERAGE = 0.5

#: XYZ -> linear sRGB (IEC 61966-2-1).
_XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986],
                         [-0.9689, 1.8758, 0.0415],
                         [0.0557, -0.2040, 1.0570]])
#: Rendering of pixels that contain NaN (mid grey, so they are visibly "no data").
_NAN_GREY = 128


@functools.lru_cache(maxsize=None)
def _cie() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    header, data = load_table("cie1931_2deg_cmf_d65.csv")
    wl = data[:, 0]
    cmf = data[:, [header.index("xbar"), header.index("ybar"), header.index("zbar")]]
    d65 = data[:, header.index("d65")]
    return wl, cmf, d65


def _luminance_coverage(wl: np.ndarray) -> float:
    cwl, cmf, d65 = _cie()
    y = cmf[:, 1] * d65
    inside = (cwl >= wl[0] - 1e-9) & (cwl <= wl[-1] + 1e-9)
    return float(y[inside].sum() / y.sum())


def rgb_matrix(wavelengths_nm: object) -> tuple[np.ndarray, str]:
    """The linear map from a reflectance spectrum to linear RGB used by :func:`cube_to_rgb`.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (bands,)
        Ascending band centres in nm.

    Returns
    -------
    matrix : ndarray of shape (bands, 3), float64
        ``linear_rgb = spectrum @ matrix``; a flat spectrum of 1 maps to (1, 1, 1).
    mode : str
        ``"true_colour"`` or ``"pseudo_colour"``.
    """
    wl = _as_wavelengths(wavelengths_nm)
    if wl.size > 1 and not np.all(np.diff(wl) > 0):
        raise DataFormatError("wavelengths_nm: must be strictly ascending")
    if wl.size >= 2 and _luminance_coverage(wl) >= TRUE_COLOUR_MIN_COVERAGE:
        cwl, cmf, d65 = _cie()
        # Linear interpolation of the bands onto the CIE grid, holding the end values outside
        # the camera range, written as a (cie, bands) matrix so the cube is touched once.
        interp = np.empty((cwl.size, wl.size))
        for j in range(wl.size):
            e = np.zeros(wl.size)
            e[j] = 1.0
            interp[:, j] = np.interp(cwl, wl, e)
        xyz = interp.T @ (cmf * d65[:, None]) / np.sum(cmf[:, 1] * d65)
        m = xyz @ _XYZ_TO_SRGB.T
        # White balance: a perfect white reflector gives exactly (1, 1, 1); this removes the
        # small residual of the 5 nm tables and the 4-digit matrix.
        m = m / m.sum(axis=0, keepdims=True)
        return m, "true_colour"
    # Pseudo-colour: three equal wavelength windows, shortest -> blue, longest -> red.
    edges = np.linspace(wl[0], wl[-1], 4)
    m = np.zeros((wl.size, 3))
    for ch, (lo, hi) in zip((2, 1, 0), zip(edges[:-1], edges[1:])):
        sel = (wl >= lo - 1e-9) & (wl <= hi + 1e-9)
        if not np.any(sel):
            sel = np.abs(wl - (lo + hi) / 2) == np.min(np.abs(wl - (lo + hi) / 2))
        m[sel, ch] = 1.0 / sel.sum()
    return m, "pseudo_colour"


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear,
                    1.055 * np.power(linear, 1.0 / 2.4) - 0.055)


def cube_to_rgb(reflectance: object, wavelengths_nm: object, *, gain: float = 1.0) -> np.ndarray:
    """Render reflectance spectra as an 8-bit sRGB image.

    True colour: when the band range covers at least half of the D65-weighted luminance
    (:data:`TRUE_COLOUR_MIN_COVERAGE`; e.g. 500-1000 nm or 460-600 nm cameras), the spectra
    are linearly interpolated onto the CIE 5 nm grid (380-780 nm; values beyond the first/last
    band are held constant), integrated against the CIE 1931 2° colour-matching functions
    under D65 to XYZ (Y = 1 for a perfect white), converted to linear sRGB, white-balanced so
    a flat spectrum is exactly neutral, clipped to [0, 1] and sRGB-gamma encoded.

    Pseudo-colour fallback: for cameras without enough visible range (e.g. 665-960 nm), the
    band range is split into three equal wavelength windows whose mean reflectance drives
    blue (shortest), green and red (longest), then clipped and gamma encoded the same way.
    The log says which rendering was used.

    Parameters
    ----------
    reflectance : array_like, shape (..., bands)
        Reflectance (1 = perfect white), e.g. a (rows, cols, bands) cube.
    wavelengths_nm : array_like, shape (bands,)
        Ascending band centres in nm.
    gain : float
        Multiplies the reflectance before rendering (brightens dark tissue previews).

    Returns
    -------
    ndarray of shape (..., 3), uint8
        sRGB image; pixels with any NaN band render mid grey (128, 128, 128).
    """
    cube = np.asarray(reflectance)
    wl = _as_wavelengths(wavelengths_nm)
    if cube.ndim < 1 or cube.shape[-1] != wl.size:
        raise DataFormatError(
            f"reflectance: last axis must have one value per wavelength ({wl.size}), "
            f"got shape {cube.shape}")
    if not (np.isfinite(gain) and gain > 0):
        raise DataFormatError(f"gain: expected a finite value > 0, got {gain!r}")
    m, mode = rgb_matrix(wl)
    log.debug("cube_to_rgb: %s rendering of %d bands %g-%g nm", mode, wl.size, wl[0], wl[-1])
    dtype = np.float32 if cube.dtype == np.float32 else np.float64
    lin = cube.astype(dtype, copy=False) @ (m * gain).astype(dtype)
    out = np.round(_srgb_encode(np.nan_to_num(lin, nan=0.0)) * 255.0).astype(np.uint8)
    nan = np.isnan(lin).any(axis=-1)
    if np.any(nan):
        out[nan] = _NAN_GREY
    return out
