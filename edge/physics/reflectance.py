"""Forward models of tissue reflectance and Gaussian band integration.

Formulas (FACTS.md, "Tissue optics"):

- Absorption mix (Jacques 2013, Phys. Med. Biol. 58:R37):
  ``µa = B·[S·µa,HbO2 + (1−S)·µa,Hb] + W·µa,water + F·µa,fat + M·µa,mel``.
- Reduced scattering (power law): ``µs′ = a′·(λ/500 nm)^(−b)``; soft tissue a′ = 18.9 cm⁻¹,
  b = 1.286.
- Semi-infinite diffuse reflectance (Farrell, Patterson & Wilson 1992, Med. Phys. 19:879):
  ``a = µs′/(µa+µs′)``, ``Rd = (a/2)·exp(−√(3(1−a)))·[1 + exp(−(4/3)·A·√(3(1−a)))]``,
  ``A = (1+r)/(1−r)``, ``r = −1.440/n² + 0.710/n + 0.668 + 0.0636·n``.
- Modified Beer–Lambert (for exactly invertible test spectra):
  ``R = exp(−(Σ cᵢ·µa,ᵢ(λ) + c0 + c1·(λ−500)/500))``.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from edge.errors import DataFormatError
from edge.physics.spectra import (
    _as_wavelengths,
    baseline_terms,
    chromophore_range,
    chromophore_spectra,
)

__all__ = [
    "tissue_reflectance",
    "tissue_absorption",
    "reduced_scattering",
    "farrell_reflectance",
    "internal_reflection_A",
    "beer_lambert_reflectance",
    "band_weights",
    "band_integrate",
    "FWHM_TO_SIGMA",
]

#: Gaussian σ = FWHM · FWHM_TO_SIGMA.
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Gaussian band responses are truncated at this many σ from the centre.
_TRUNCATE_SIGMA = 4.0
#: Chromophores of the tissue model, in the order of the parameters.
_TISSUE_CHROMOPHORES = ("HbO2", "Hb", "water", "fat", "melanin")


def _param(name: str, value: object, lo: float, hi: float, *, lo_open: bool = False,
           what: str = "") -> np.ndarray:
    """Return ``value`` as float64 array after checking it is finite and in range."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{name}: expected a number or array, got {value!r}") from exc
    bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
    if lo_open:
        bad |= arr <= lo
    if np.any(bad):
        v = arr.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
        rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise DataFormatError(f"{name}: expected {what or 'values'} in {rng}, got {float(v)!r}")
    return arr


def internal_reflection_A(n: float | np.ndarray) -> np.ndarray:
    """Farrell's internal-reflection parameter ``A = (1+r)/(1−r)`` for refractive index ``n``."""
    n = np.asarray(n, dtype=np.float64)
    r = -1.440 / n ** 2 + 0.710 / n + 0.668 + 0.0636 * n
    return (1.0 + r) / (1.0 - r)


def farrell_reflectance(mua: np.ndarray, musp: np.ndarray, n: float | np.ndarray = 1.4
                        ) -> np.ndarray:
    """Diffuse reflectance of a semi-infinite medium (Farrell et al. 1992).

    Parameters
    ----------
    mua, musp : array_like (broadcastable)
        Absorption and reduced scattering coefficients, cm⁻¹ (µs′ > 0, µa >= 0).
    n : float or array_like
        Refractive index of the tissue (1.4 for soft tissue).

    Returns
    -------
    ndarray (broadcast shape), float64 (float32 if both inputs are float32)
        Total diffuse reflectance Rd in [0, 1].
    """
    mua = np.asarray(mua)
    musp = np.asarray(musp)
    albedo = musp / (mua + musp)
    root = np.sqrt(3.0 * (1.0 - albedo))
    big_a = internal_reflection_A(n).astype(albedo.dtype)
    return (albedo / 2) * np.exp(-root) * (1 + np.exp((-4.0 / 3.0) * big_a * root))


def reduced_scattering(wavelengths_nm: object, scatter_a: object = 18.9,
                       scatter_b: object = 1.286) -> np.ndarray:
    """Power-law reduced scattering ``µs′ = a·(λ/500)^(−b)`` in cm⁻¹.

    Returns
    -------
    ndarray of shape ``broadcast(a, b).shape + (bands,)``, float64
    """
    wl = _as_wavelengths(wavelengths_nm)
    a = _param("scatter_a", scatter_a, 0.0, 1e4, lo_open=True, what="cm⁻¹")
    b = _param("scatter_b", scatter_b, 0.0, 10.0)
    return a[..., None] * (wl / 500.0) ** (-b[..., None])


def tissue_absorption(wavelengths_nm: object, *, sto2: object, blood_volume: object,
                      water: object, fat: object, melanin: object = 0.0) -> np.ndarray:
    """Absorption coefficient of a tissue mix (Jacques 2013), cm⁻¹.

    Parameters are as in :func:`tissue_reflectance`.

    Returns
    -------
    ndarray of shape ``broadcast(params).shape + (bands,)``, float64
    """
    wl = _as_wavelengths(wavelengths_nm)
    s = _param("sto2", sto2, 0.0, 1.0, what="a fraction")
    b = _param("blood_volume", blood_volume, 0.0, 1.0, what="a volume fraction")
    w = _param("water", water, 0.0, 1.0, what="a volume fraction")
    f = _param("fat", fat, 0.0, 1.0, what="a volume fraction")
    m = _param("melanin", melanin, 0.0, 1.0, what="a volume fraction")
    mu = chromophore_spectra(_TISSUE_CHROMOPHORES, wl)
    s, b, w, f, m = np.broadcast_arrays(s, b, w, f, m)
    # Weights of the five pure-chromophore spectra; one matmul mixes every pixel.
    weights = np.stack([b * s, b * (1.0 - s), w, f, m], axis=-1)
    return weights @ mu


def _fine_grid(centers: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """A 1 nm grid covering every band ±4σ, clipped to the tissue tables."""
    lo_tab = max(chromophore_range(c)[0] for c in _TISSUE_CHROMOPHORES)
    hi_tab = min(chromophore_range(c)[1] for c in _TISSUE_CHROMOPHORES)
    half = _TRUNCATE_SIGMA * FWHM_TO_SIGMA * fwhm
    lo = max(lo_tab, math.floor(float(np.min(centers - half))))
    hi = min(hi_tab, math.ceil(float(np.max(centers + half))))
    return np.arange(lo, hi + 0.5, 1.0)


def tissue_reflectance(wavelengths_nm: object, *, sto2: object, blood_volume: object,
                       water: object, fat: object, melanin: object = 0.0,
                       scatter_a: object = 18.9, scatter_b: object = 1.286, n: float = 1.4,
                       fwhm_nm: object = None) -> np.ndarray:
    """Diffuse reflectance of tissue from its composition (Jacques mix + Farrell model).

    Every parameter may be a scalar or an array; arrays broadcast against each other.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (bands,)
        Wavelengths (or band centres when ``fwhm_nm`` is given) in nm, within 450-1000 nm.
    sto2 : float or array_like
        Haemoglobin oxygen saturation S in [0, 1].
    blood_volume : float or array_like
        Blood volume fraction B in [0, 1] (physiological 0.005-0.065).
    water, fat, melanin : float or array_like
        Volume fractions in [0, 1].
    scatter_a : float or array_like
        Reduced scattering at 500 nm, cm⁻¹ (> 0).
    scatter_b : float or array_like
        Scattering power-law exponent (>= 0).
    n : float
        Refractive index of the tissue, 1.0-2.0.
    fwhm_nm : float or array_like of shape (bands,), optional
        If given, return band-integrated reflectance: the model is evaluated on a 1 nm grid
        and integrated with Gaussian band responses of this FWHM (see :func:`band_integrate`;
        the responses are truncated to the 450-1000 nm table range and renormalised).

    Returns
    -------
    ndarray of shape ``broadcast(params).shape + (bands,)``, float64
        Reflectance Rd in (0, 1).

    Raises
    ------
    DataFormatError
        If a parameter is outside its range (the message names it and shows the bad value) or
        a wavelength is outside 450-1000 nm.
    """
    n_arr = _param("n", n, 1.0, 2.0, what="a refractive index")
    wl = _as_wavelengths(wavelengths_nm)
    if fwhm_nm is not None:
        fwhm = _param("fwhm_nm", fwhm_nm, 0.0, 500.0, lo_open=True, what="nm")
        fwhm = np.broadcast_to(fwhm, wl.shape)
        fine = _fine_grid(wl, fwhm)
        r_fine = tissue_reflectance(fine, sto2=sto2, blood_volume=blood_volume, water=water,
                                    fat=fat, melanin=melanin, scatter_a=scatter_a,
                                    scatter_b=scatter_b, n=n)
        return band_integrate(fine, r_fine, wl, fwhm)
    mua = tissue_absorption(wl, sto2=sto2, blood_volume=blood_volume, water=water, fat=fat,
                            melanin=melanin)
    musp = reduced_scattering(wl, scatter_a, scatter_b)
    return farrell_reflectance(mua, musp, n_arr[..., None] if n_arr.ndim else float(n_arr))


def beer_lambert_reflectance(wavelengths_nm: object, concentrations: Mapping[str, object],
                             baseline: tuple[object, object] = (0.0, 0.0)) -> np.ndarray:
    """Modified Beer–Lambert reflectance, exactly invertible by linear least squares.

    ``R = exp(−A)`` with absorbance ::

        A(λ) = Σᵢ cᵢ·µa,ᵢ(λ) + c0·1 + c1·(λ − 500)/500

    The basis is exactly the one unmixing uses: the chromophore columns are
    ``chromophore_spectra(names, wl)`` (µa of the pure chromophore in cm⁻¹; HbO2/Hb as whole
    blood at 150 g/L from Prahl's ε) and the baseline columns are
    ``baseline_terms(wl, ["constant", "linear"])``.  So ``-ln R`` solved by
    ``np.linalg.lstsq`` on ``[chromophore_spectra(names, wl); baseline_terms(wl,
    ["constant", "linear"])].T`` returns ``(c..., c0, c1)`` to rounding error.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (bands,)
        Wavelengths in nm.
    concentrations : mapping of str to float or array_like
        Chromophore name (see :data:`~edge.physics.CHROMOPHORES`) -> coefficient cᵢ in cm
        (volume fraction × effective path length); arrays broadcast against each other.
    baseline : (c0, c1)
        Constant and linear absorbance offsets (dimensionless, may be arrays).

    Returns
    -------
    ndarray of shape ``broadcast(c..., c0, c1).shape + (bands,)``, float64
    """
    wl = _as_wavelengths(wavelengths_nm)
    if not isinstance(concentrations, Mapping) or not concentrations:
        raise DataFormatError(
            f"concentrations: expected a non-empty mapping name -> coefficient, "
            f"got {concentrations!r}")
    try:
        c0, c1 = baseline
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"baseline: expected a pair (c0, c1), got {baseline!r}") from exc
    names = list(concentrations)
    mu = chromophore_spectra(names, wl)
    basis = np.concatenate([mu, baseline_terms(wl, ("constant", "linear"))])
    coeffs = [_param(f"concentrations[{k!r}]", concentrations[k], -1e6, 1e6)
              for k in names]
    coeffs += [_param("baseline[0]", c0, -1e6, 1e6), _param("baseline[1]", c1, -1e6, 1e6)]
    weights = np.stack(np.broadcast_arrays(*coeffs), axis=-1)
    return np.exp(-(weights @ basis))


def band_weights(wavelengths_fine: object, centers_nm: object, fwhm_nm: object) -> np.ndarray:
    """Normalised Gaussian band responses sampled on a fine wavelength grid.

    Parameters
    ----------
    wavelengths_fine : array_like, shape (n_fine,)
        Strictly ascending sampling grid in nm.
    centers_nm : array_like, shape (bands,)
        Band centres in nm; each must lie inside the fine grid.
    fwhm_nm : float or array_like of shape (bands,)
        Full width at half maximum (nm, > 0).

    Returns
    -------
    ndarray of shape (bands, n_fine), float64
        Row ``k`` holds the Gaussian response of band ``k`` times the trapezoid width of each
        fine sample, truncated at ±4σ and normalised to sum 1 (so a flat spectrum is kept).
    """
    fine = _as_wavelengths(wavelengths_fine, "wavelengths_fine")
    if fine.size > 1 and not np.all(np.diff(fine) > 0):
        raise DataFormatError("wavelengths_fine: must be strictly ascending")
    centers = _as_wavelengths(centers_nm, "centers_nm")
    fwhm = np.broadcast_to(_param("fwhm_nm", fwhm_nm, 0.0, 500.0, lo_open=True, what="nm"),
                           centers.shape)
    outside = (centers < fine[0] - 1e-9) | (centers > fine[-1] + 1e-9)
    if np.any(outside):
        raise DataFormatError(
            f"centers_nm: {centers[np.argmax(outside)]:g} nm lies outside wavelengths_fine "
            f"({fine[0]:g}-{fine[-1]:g} nm)")
    dw = np.gradient(fine) if fine.size > 1 else np.ones(1)
    sigma = (fwhm * FWHM_TO_SIGMA)[:, None]
    z = (fine[None, :] - centers[:, None]) / sigma
    w = np.where(np.abs(z) <= _TRUNCATE_SIGMA, np.exp(-0.5 * z * z), 0.0) * dw[None, :]
    total = w.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        # A band narrower than the grid spacing: fall back to the nearest sample.
        k = np.flatnonzero(total[:, 0] <= 0)
        w[k, np.abs(fine[None, :] - centers[k, None]).argmin(axis=1)] = 1.0
        total = w.sum(axis=1, keepdims=True)
    return w / total


def band_integrate(wavelengths_fine: object, spectra: object, centers_nm: object,
                   fwhm_nm: object) -> np.ndarray:
    """Integrate fine-grid spectra over Gaussian camera bands.

    Parameters
    ----------
    wavelengths_fine : array_like, shape (n_fine,)
        Ascending grid of ``spectra`` in nm.
    spectra : array_like, shape (..., n_fine)
        Spectra sampled on ``wavelengths_fine``.
    centers_nm : array_like, shape (bands,)
        Band centres in nm.
    fwhm_nm : float or array_like of shape (bands,)
        Band FWHM in nm.

    Returns
    -------
    ndarray of shape (..., bands), float64
        Weighted means with the weights of :func:`band_weights`.
    """
    w = band_weights(wavelengths_fine, centers_nm, fwhm_nm)
    s = np.asarray(spectra, dtype=np.float64)
    if s.shape[-1:] != (w.shape[1],):
        raise DataFormatError(
            f"spectra: last axis must match wavelengths_fine ({w.shape[1]} samples), "
            f"got shape {s.shape}")
    return s @ w.T
