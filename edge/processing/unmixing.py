"""Linear spectral unmixing on absorbance: concentrations, total haemoglobin, raw StO2.

Model (modified Beer-Lambert, FACTS.md "Tissue optics")::

    A = -ln(max(R, eps)) = E @ c        E = [chromophore_spectra(...).T | baseline_terms(...).T]

with ``E`` (bands, k): chromophore µa in cm⁻¹ (``edge.physics.chromophore_spectra``: HbO2/Hb
as whole blood at 150 g/L, water, fat, melanin) and the baseline columns of
``edge.physics.baseline_terms`` (``constant``, ``linear`` = (λ-500)/500, ``scatter``).  The
least-squares solution is ``c = P @ A`` with ``P = pinv(E)`` (k, bands), computed once
(``np.linalg.pinv``, never ``inv``).  Spectra made with ``edge.physics.beer_lambert_reflectance``
on the same basis are recovered exactly; spectra of the diffusion model are not (the raw StO2
is biased by 15-29 points on the 100-band grid, FACTS.md) -- :mod:`edge.processing.sto2`
calibrates it.

FCLS (sum-to-one) is not physical for concentrations and NNLS equals the pseudo-inverse unless
a component goes negative (FACTS.md), so the plain pseudo-inverse is the reference.

Two kinds of chromophore columns (``basis``):

- ``"extinction"``: the µa spectra above -- absorbance as µa times a wavelength-independent
  pathlength (modified Beer-Lambert).
- ``"pathlength"``: the sensitivity ``dA/dc`` of the diffusion forward model
  (``edge.physics.tissue_reflectance``, Farrell 1992 with the Jacques 2013 mix) to each
  chromophore's volume fraction at a reference tissue (:data:`REFERENCE_TISSUE`), i.e. µa
  times the modelled, wavelength-dependent differential pathlength (the linearised diffusion
  model). HbO2 and Hb are the oxygenated and deoxygenated blood volume fractions, so ``thb``
  estimates the blood volume fraction. On a near-infrared-only grid, where scattering makes
  the pathlength vary most across the bands, this halves the part of the StO2 error the
  calibration curve cannot remove (snapshot25: 3.3 -> 2.3 points MAE); on the 500-1000 nm grid
  the extinction basis calibrates better (README, "Science and accuracy").

The pseudo-inverse of either is a plain (k, bands) matrix: the GPU and CPU kernels run both.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from edge.core.frame import validate_wavelengths
from edge.errors import DataFormatError

__all__ = ["absorbance", "floored", "Unmixer", "DEFAULT_CHROMOPHORES", "DEFAULT_BASELINE",
           "recommended_components", "recommended_basis", "BASIS_KINDS", "REFERENCE_TISSUE",
           "pathlength_basis"]

log = logging.getLogger(__name__)

DEFAULT_CHROMOPHORES = ("HbO2", "Hb", "water", "fat")
DEFAULT_BASELINE = ("constant", "linear")
#: Condition number of E above which the unmixing is numerically meaningless in float32.
MAX_CONDITION = 1e6
BASIS_KINDS = ("extinction", "pathlength")
#: Tissue at which the "pathlength" basis linearises the forward model: mid-range blood,
#: water and fat of the physiological ranges (edge.processing.sto2.SimulationRanges), a
#: typical StO2, and the soft-tissue mean scattering of Jacques 2013 (FACTS.md).
REFERENCE_TISSUE = {"sto2": 0.7, "blood_volume": 0.03, "water": 0.65, "fat": 0.15,
                    "melanin": 0.0, "scatter_a": 18.9, "scatter_b": 1.286}


def recommended_components(wavelengths_nm) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Chromophores and baseline terms that are well conditioned and calibrate well on a grid.

    Chosen by fitting StO2 calibrations for every combination on simulated spectra
    (``tools/fit_sto2_calibration.py``, Nov 2026): on a visible-only grid (max < 650 nm, e.g.
    the 460-600 nm snapshot camera) water and fat are flat and collinear with the baseline, so
    ``(HbO2, Hb) + (constant, linear)``; on a NIR-only grid (min > 650 nm, e.g. 665-960 nm)
    with the "pathlength" basis (:func:`recommended_basis`) ``(HbO2, Hb, water, fat) +
    (constant, scatter)`` (2.2 points MAE; with the extinction basis the best set was
    ``(HbO2, Hb, water) + (scatter,)`` at 3.3); otherwise the defaults (HbO2, Hb, water, fat)
    + (constant, linear).

    Returns
    -------
    (chromophores, baseline) : two tuples of str
    """
    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    if wl[-1] < 650.0:
        return ("HbO2", "Hb"), ("constant", "linear")
    if wl[0] > 650.0:
        return DEFAULT_CHROMOPHORES, ("constant", "scatter")
    return DEFAULT_CHROMOPHORES, DEFAULT_BASELINE


def recommended_basis(wavelengths_nm) -> str:
    """``"pathlength"`` on a near-infrared-only grid (min > 650 nm), else ``"extinction"``
    (chosen like :func:`recommended_components`; see the module docstring)."""
    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    return "pathlength" if wl[0] > 650.0 else "extinction"


def pathlength_basis(wavelengths_nm, chromophores: Sequence[str],
                     fwhm_nm: float | None = None) -> np.ndarray:
    """Chromophore columns ``dA/dc`` of the diffusion model at :data:`REFERENCE_TISSUE`.

    Central differences of ``A = -ln R`` (``edge.physics.tissue_reflectance``, band-integrated
    when ``fwhm_nm`` is given) in float64: HbO2 and Hb are the oxygenated and deoxygenated
    blood volume fractions (B*S and B*(1-S)), water, fat and melanin their volume fractions
    (melanin, 0 at the reference, by a forward difference).

    Returns
    -------
    ndarray (k_c, bands), float64 -- absorbance per unit volume fraction.
    """
    from edge import physics

    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    ref = dict(REFERENCE_TISSUE)
    oxy, deoxy = ref["blood_volume"] * ref["sto2"], ref["blood_volume"] * (1 - ref["sto2"])

    def absorb(oxy: float = oxy, deoxy: float = deoxy, **change: float) -> np.ndarray:
        p = {**ref, **change, "sto2": oxy / (oxy + deoxy), "blood_volume": oxy + deoxy}
        return -np.log(np.asarray(physics.tissue_reflectance(wl, fwhm_nm=fwhm_nm, **p),
                                  dtype=np.float64))

    h_blood, h = 1e-4, 1e-3
    rows = []
    for name in chromophores:
        if name == "HbO2":
            rows.append((absorb(oxy=oxy + h_blood) - absorb(oxy=oxy - h_blood)) / (2 * h_blood))
        elif name == "Hb":
            rows.append((absorb(deoxy=deoxy + h_blood) - absorb(deoxy=deoxy - h_blood))
                        / (2 * h_blood))
        elif name == "melanin":
            rows.append((absorb(melanin=ref["melanin"] + h) - absorb()) / h)
        else:
            rows.append((absorb(**{name: ref[name] + h}) - absorb(**{name: ref[name] - h}))
                        / (2 * h))
    return np.asarray(rows, dtype=np.float64)


def absorbance(reflectance: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Absorbance ``A = -ln(max(R, eps))`` (natural log, DESIGN.md "Data conventions").

    Parameters
    ----------
    reflectance : ndarray (..., bands), float
    eps : float > 0
        Floor for R: zero and negative reflectance give ``-ln(eps)`` (the caller flags them).

    Returns
    -------
    ndarray, same shape, float32. NaN stays NaN; +inf gives -inf.
    """
    if not eps > 0:
        raise DataFormatError(f"eps: expected a positive number, got {eps!r}")
    r = np.asarray(reflectance, dtype=np.float32)
    with np.errstate(divide="ignore"):
        out = np.maximum(r, np.float32(eps))      # np.maximum propagates NaN
        np.log(out, out=out)
    np.negative(out, out=out)
    return out


def floored(reflectance: np.ndarray, eps: float) -> np.ndarray:
    """Pixels with any band at the absorbance floor, i.e. reflectance R <= eps.

    Parameters
    ----------
    reflectance : ndarray (..., bands), float
    eps : float -- the floor of :func:`absorbance`

    Returns
    -------
    ndarray (...,), bool (NaN bands do not count: callers flag them as non-finite).
    Compared in float32 like :func:`absorbance` (the CUDA ``unmix_pixel`` does the same).
    """
    r = np.asarray(reflectance, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.any(r <= np.float32(eps), axis=-1)


def _names(value: Sequence[str] | str, param: str, allowed: Sequence[str]) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    for n in names:
        if n not in allowed:
            raise DataFormatError(f"{param}: unknown name {n!r}; allowed: {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise DataFormatError(f"{param}: names must be unique, got {names}")
    return names


def _band_basis(wl: np.ndarray, chromophores: tuple[str, ...], fwhm_nm: float | None
                ) -> np.ndarray:
    """Chromophore µa (k_c, bands), band-integrated with Gaussian responses if fwhm_nm."""
    from edge import physics

    if fwhm_nm is None:
        return physics.chromophore_spectra(chromophores, wl)
    if not fwhm_nm > 0:
        raise DataFormatError(f"fwhm_nm: expected a positive number or None, got {fwhm_nm!r}")
    # Integrate on a 1 nm grid over the range every requested table covers; band responses
    # reaching past a table edge are truncated there (band_integrate renormalises weights).
    ranges = [physics.chromophore_range(n) for n in chromophores]
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    fine = np.arange(np.ceil(lo), np.floor(hi) + 0.5, 1.0)
    spectra = physics.chromophore_spectra(chromophores, fine)
    return np.asarray(physics.band_integrate(fine, spectra, wl, fwhm_nm), dtype=np.float64)


class Unmixer:
    """Least-squares unmixing of absorbance with a fixed basis.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (bands,)
    chromophores : sequence of str
        Must contain ``"HbO2"`` and ``"Hb"``; others among water, fat, melanin.
    baseline : sequence of str
        Among ``constant``, ``linear``, ``scatter`` (may be empty).
    fwhm_nm : float or None
        Band FWHM; if given the chromophore spectra are averaged over Gaussian band responses
        (``edge.physics.band_integrate``) instead of sampled at the band centres.
    eps : float
        Reflectance floor of :func:`absorbance`.
    basis : {"extinction", "pathlength"} or None
        Kind of chromophore columns (module docstring); None: :func:`recommended_basis`.

    Attributes
    ----------
    basis : ndarray (bands, k), float64   -- ``E``
    basis_kind : str                      -- "extinction" or "pathlength"
    pinv : ndarray (k, bands), float32    -- ``P = pinv(E)``
    components : tuple of str             -- names of the k columns of E, in order
    condition : float                     -- condition number of E
    """

    def __init__(self, wavelengths_nm, chromophores: Sequence[str] = DEFAULT_CHROMOPHORES,
                 baseline: Sequence[str] = DEFAULT_BASELINE, fwhm_nm: float | None = None,
                 eps: float = 1e-4, basis: str | None = None):
        from edge import physics

        wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
        kind = recommended_basis(wl) if basis is None else basis
        if kind not in BASIS_KINDS:
            raise DataFormatError(f"basis: expected one of {', '.join(BASIS_KINDS)} or None, "
                                  f"got {basis!r}")
        chrom = _names(chromophores, "chromophores", physics.CHROMOPHORES)
        base = _names(baseline, "baseline", physics.BASELINE_TERMS) if baseline else ()
        for req in ("HbO2", "Hb"):
            if req not in chrom:
                raise DataFormatError(f"chromophores: must include 'HbO2' and 'Hb' (needed for "
                                      f"StO2 and THb), got {chrom}")
        k = len(chrom) + len(base)
        if wl.size < k:
            raise DataFormatError(f"wavelengths_nm: {k} components {chrom + base} need at least "
                                  f"{k} bands, got {wl.size}")
        if kind == "pathlength":
            if fwhm_nm is not None and not fwhm_nm > 0:
                raise DataFormatError(f"fwhm_nm: expected a positive number or None, got "
                                      f"{fwhm_nm!r}")
            cols = [pathlength_basis(wl, chrom, fwhm_nm)]
        else:
            cols = [_band_basis(wl, chrom, fwhm_nm)]
        if base:
            cols.append(physics.baseline_terms(wl, base))
        matrix = np.concatenate(cols, axis=0).T
        self._setup(wl, matrix, chrom + base, eps)
        self.chromophores, self.baseline, self.fwhm_nm = chrom, base, fwhm_nm
        self.basis_kind = kind

    @classmethod
    def from_basis(cls, wavelengths_nm, basis: np.ndarray, components: Sequence[str],
                   eps: float = 1e-4) -> "Unmixer":
        """An unmixer for an explicit basis ``E`` (bands, k); components name its columns."""
        wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
        basis = np.asarray(basis, dtype=np.float64)
        comps = tuple(components)
        if basis.ndim != 2 or basis.shape[0] != wl.size or basis.shape[1] != len(comps):
            raise DataFormatError(f"basis: expected shape (bands={wl.size}, k={len(comps)}), "
                                  f"got {basis.shape}")
        if "HbO2" not in comps or "Hb" not in comps:
            raise DataFormatError(f"components: must include 'HbO2' and 'Hb', got {comps}")
        if wl.size < len(comps):
            raise DataFormatError(f"basis: {len(comps)} components need at least "
                                  f"{len(comps)} bands, got {wl.size}")
        self = cls.__new__(cls)
        self._setup(wl, basis, comps, eps)
        self.chromophores, self.baseline, self.fwhm_nm = comps, (), None
        self.basis_kind = "explicit"
        return self

    def _setup(self, wl: np.ndarray, basis: np.ndarray, comps: tuple[str, ...],
               eps: float) -> None:
        if not np.all(np.isfinite(basis)):
            raise DataFormatError("basis: contains NaN or inf")
        sv = np.linalg.svd(basis, compute_uv=False)
        cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
        if cond > MAX_CONDITION:
            raise DataFormatError(
                f"components {comps}: the basis is (nearly) degenerate on this grid "
                f"({wl[0]:g}-{wl[-1]:g} nm, {wl.size} bands; condition number {cond:.3g} > "
                f"{MAX_CONDITION:g}); drop components that are flat or collinear here")
        if not eps > 0:
            raise DataFormatError(f"eps: expected a positive number, got {eps!r}")
        self.wavelengths = wl
        self.basis = basis
        self.components = comps
        self.condition = cond
        self.eps = float(eps)
        self.pinv = np.linalg.pinv(basis).astype(np.float32)
        self.i_hbo2, self.i_hb = comps.index("HbO2"), comps.index("Hb")

    @property
    def bands(self) -> int:
        return self.wavelengths.size

    def __repr__(self) -> str:
        return (f"Unmixer(bands={self.bands}, components={self.components}, "
                f"basis={self.basis_kind}, fwhm_nm={self.fwhm_nm}, "
                f"condition={self.condition:.3g})")

    def _check(self, reflectance: np.ndarray) -> np.ndarray:
        r = np.asarray(reflectance)
        if r.ndim < 1 or r.shape[-1] != self.bands:
            raise DataFormatError(f"reflectance: expected {self.bands} bands (last axis) to "
                                  f"match the unmixer's wavelengths, got shape {r.shape}")
        return r

    def unmix(self, reflectance: np.ndarray) -> np.ndarray:
        """Concentrations ``c = A @ P.T``.

        Parameters
        ----------
        reflectance : ndarray (..., bands), float

        Returns
        -------
        ndarray (..., k), float32 in the order of ``components`` (chromophores as volume
        fractions of the pure µa tables in the modified Beer-Lambert sense; NaN where the
        input has NaN).
        """
        a = absorbance(self._check(reflectance), self.eps)
        with np.errstate(invalid="ignore"):   # inf input -> NaN concentrations, by design
            return np.matmul(a, self.pinv.T)

    def maps(self, reflectance: np.ndarray) -> dict[str, np.ndarray]:
        """Total haemoglobin and raw (uncalibrated) StO2.

        Returns
        -------
        dict with ``thb`` = c_HbO2 + c_Hb and ``sto2_raw`` = c_HbO2 / thb, each (...,) float32;
        NaN where thb <= 0, any input band is non-finite, or any band has R <= eps (its
        absorbance sits at the floor ``-ln(eps)``: the band carries no information and one
        such band moves StO2 by 15-50 points, so the pixel is out of the unmixing domain).
        """
        r = self._check(reflectance)
        a = absorbance(r, self.eps)
        with np.errstate(invalid="ignore"):   # inf input -> NaN concentrations, by design
            c = np.matmul(a, self.pinv.T)
        hbo2, hb = c[..., self.i_hbo2], c[..., self.i_hb]
        with np.errstate(invalid="ignore"):
            thb = hbo2 + hb
        bad = ~np.all(np.isfinite(r), axis=-1) | ~(thb > 0) | floored(r, self.eps)
        thb = np.where(bad, np.float32(np.nan), thb).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            sto2 = np.where(bad, np.float32(np.nan), hbo2 / thb).astype(np.float32)
        return {"thb": thb, "sto2_raw": sto2}
