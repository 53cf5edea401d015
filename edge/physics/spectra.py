"""Chromophore absorption tables shipped with the package, and the shared absorbance basis.

Data (FACTS.md, "Tissue optics"; details, versions and licences in ``data/SOURCES.md``):

- ``prahl_extinction.csv``: Prahl's molar extinction coefficient ε of HbO2 and Hb in cm⁻¹/M
  (decadic), 250-1000 nm every 2 nm, copied from ``patato`` 0.7.0 (MIT).
- ``simpa_absorption.csv``: absorption coefficient µa in cm⁻¹ of water, fat and melanin (and of
  whole blood, used only as a cross-check), 450-1000 nm every 1 nm, copied from ``simpa``
  1.0.0 (MIT).

The absorption of the blood chromophores is computed from ε for whole blood at 150 g/L
haemoglobin: ``µa = ln(10)·ε·150/64500`` cm⁻¹ (64500 g/mol is the molar mass of
haemoglobin).  All tables are interpolated linearly; nothing is extrapolated.

The same functions define the absorbance basis used both by the simulator
(:func:`edge.physics.beer_lambert_reflectance`) and by spectral unmixing, so that both sides
share one definition: chromophore columns come from :func:`chromophore_spectra` (cm⁻¹) and
the baseline columns from :func:`baseline_terms`.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from typing import Iterable, Sequence

import numpy as np

from edge.errors import DataFormatError

__all__ = [
    "CHROMOPHORES",
    "BASELINE_TERMS",
    "HB_CONCENTRATION_G_PER_L",
    "HB_MOLAR_MASS_G_PER_MOL",
    "chromophore_spectra",
    "molar_extinction",
    "chromophore_range",
    "baseline_terms",
    "load_table",
]

log = logging.getLogger(__name__)

#: Chromophores known to :func:`chromophore_spectra`, in a stable order.
CHROMOPHORES: tuple[str, ...] = ("HbO2", "Hb", "water", "fat", "melanin")
#: Baseline terms known to :func:`baseline_terms`.
BASELINE_TERMS: tuple[str, ...] = ("constant", "linear", "scatter")
#: Band FWHM (nm) accepted everywhere a band width is given (config, presets, replay): the
#: widest band of a spectral camera is far below 200 nm; 0.1 nm is below any grating's.
FWHM_RANGE_NM: tuple[float, float] = (0.1, 200.0)
#: Haemoglobin concentration of whole blood assumed for the blood µa (FACTS.md).
HB_CONCENTRATION_G_PER_L = 150.0
#: Molar mass of haemoglobin (g/mol) used to convert ε to µa (FACTS.md).
HB_MOLAR_MASS_G_PER_MOL = 64500.0

#: Reference wavelength and scale of the linear and scatter baseline terms (nm).
_BASELINE_REF_NM = 500.0
#: Power-law exponent of the "scatter" baseline shape (Jacques 2013 soft-tissue mean b).
_SCATTER_B = 1.286
#: Tolerance for wavelengths that sit on a table edge up to floating-point noise (nm).
_EDGE_TOL_NM = 1e-6

_BLOOD = ("HbO2", "Hb")


def load_table(filename: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Read one CSV table from ``edge/physics/data``.

    Lines starting with ``#`` are comments; the first other line is the header.

    Returns
    -------
    columns : tuple of str
        Column names (the first is ``wavelength_nm``).
    data : ndarray of shape (rows, columns), float64
    """
    return _load_table_cached(filename)


@functools.lru_cache(maxsize=None)
def _load_table_cached(filename: str) -> tuple[tuple[str, ...], np.ndarray]:
    text = resources.files("edge.physics").joinpath("data", filename).read_text("utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    header = tuple(h.strip() for h in lines[0].split(","))
    data = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]], dtype=np.float64)
    data.setflags(write=False)
    return header, data


def _column(filename: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    header, data = load_table(filename)
    return data[:, 0], data[:, header.index(name)]


def _table_for(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths and µa (cm⁻¹) of one chromophore."""
    if name in _BLOOD:
        wl, eps = _column("prahl_extinction.csv", name)
        return wl, np.log(10.0) * eps * HB_CONCENTRATION_G_PER_L / HB_MOLAR_MASS_G_PER_MOL
    return _column("simpa_absorption.csv", name)


def chromophore_range(name: str) -> tuple[float, float]:
    """Wavelength range (nm) covered by the table of one chromophore."""
    _check_names([name], CHROMOPHORES, "names")
    wl, _ = _table_for(name)
    return float(wl[0]), float(wl[-1])


def _as_names(names: str | Iterable[str], param: str) -> list[str]:
    if isinstance(names, str):
        return [names]
    try:
        out = list(names)
    except TypeError as exc:
        raise DataFormatError(f"{param}: expected a name or a sequence of names, got {names!r}") \
            from exc
    if not out:
        raise DataFormatError(f"{param}: expected at least one name, got an empty sequence")
    return out


def _check_names(names: Sequence[str], allowed: Sequence[str], param: str) -> None:
    for n in names:
        if n not in allowed:
            raise DataFormatError(
                f"{param}: unknown name {n!r}; allowed: {', '.join(allowed)}")


def _as_wavelengths(wavelengths_nm: object, param: str = "wavelengths_nm") -> np.ndarray:
    try:
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{param}: expected numbers in nm, got {wavelengths_nm!r}") from exc
    if wl.ndim == 0:
        wl = wl.reshape(1)
    if wl.ndim != 1 or wl.size == 0:
        raise DataFormatError(f"{param}: expected a non-empty 1-D array, got shape {wl.shape}")
    if not np.all(np.isfinite(wl)):
        raise DataFormatError(f"{param}: values must be finite, got NaN or inf")
    return wl


def _interp_checked(name: str, wl: np.ndarray, table_wl: np.ndarray, values: np.ndarray,
                    source: str, param: str = "wavelengths_nm") -> np.ndarray:
    lo, hi = table_wl[0], table_wl[-1]
    bad = (wl < lo - _EDGE_TOL_NM) | (wl > hi + _EDGE_TOL_NM)
    if np.any(bad):
        v = wl[np.argmax(bad)]
        raise DataFormatError(
            f"{param}: {v:g} nm is outside the {source} table of {name!r}; allowed "
            f"{lo:g}-{hi:g} nm")
    return np.interp(wl, table_wl, values)


def chromophore_spectra(names: str | Iterable[str], wavelengths_nm: object) -> np.ndarray:
    """Absorption coefficient µa of pure chromophores, linearly interpolated.

    Parameters
    ----------
    names : str or sequence of str
        Among :data:`CHROMOPHORES`: ``"HbO2"``, ``"Hb"`` (whole blood at 150 g/L haemoglobin,
        ``µa = ln(10)·ε·150/64500`` from Prahl's ε, 250-1000 nm), ``"water"``, ``"fat"``,
        ``"melanin"`` (simpa tables, 450-1000 nm).
    wavelengths_nm : array_like, shape (bands,)
        Wavelengths in nm (any order).

    Returns
    -------
    ndarray of shape (len(names), bands), float64
        µa in cm⁻¹ of each pure chromophore (volume fraction 1).

    Raises
    ------
    DataFormatError
        For an unknown name (the message lists the allowed names) or a wavelength outside the
        table of a requested chromophore (the message gives the allowed range).
    """
    names_l = _as_names(names, "names")
    _check_names(names_l, CHROMOPHORES, "names")
    wl = _as_wavelengths(wavelengths_nm)
    out = np.empty((len(names_l), wl.size), dtype=np.float64)
    for i, n in enumerate(names_l):
        twl, mua = _table_for(n)
        source = "Prahl" if n in _BLOOD else "simpa"
        out[i] = _interp_checked(n, wl, twl, mua, source)
    return out


def molar_extinction(names: str | Iterable[str], wavelengths_nm: object) -> np.ndarray:
    """Prahl's molar extinction coefficient ε of HbO2/Hb, linearly interpolated.

    Parameters
    ----------
    names : str or sequence of str
        ``"HbO2"`` and/or ``"Hb"``.
    wavelengths_nm : array_like, shape (bands,)
        Wavelengths in nm within 250-1000 nm.

    Returns
    -------
    ndarray of shape (len(names), bands), float64
        ε in cm⁻¹/M (decadic: absorbance per cm per mol/L).

    Raises
    ------
    DataFormatError
        For a name other than HbO2/Hb or a wavelength outside 250-1000 nm.
    """
    names_l = _as_names(names, "names")
    _check_names(names_l, _BLOOD, "names")
    wl = _as_wavelengths(wavelengths_nm)
    out = np.empty((len(names_l), wl.size), dtype=np.float64)
    for i, n in enumerate(names_l):
        twl, eps = _column("prahl_extinction.csv", n)
        out[i] = _interp_checked(n, wl, twl, eps, "Prahl")
    return out


def baseline_terms(wavelengths_nm: object, terms: str | Iterable[str]) -> np.ndarray:
    """Baseline columns of the absorbance basis shared by the simulator and unmixing.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (bands,)
        Wavelengths in nm.
    terms : str or sequence of str
        Among :data:`BASELINE_TERMS`:

        ``"constant"``
            ``1`` (a wavelength-flat absorbance offset, e.g. illumination/geometry).
        ``"linear"``
            ``(λ − 500) / 500`` with λ in nm.
        ``"scatter"``
            ``(λ / 500) ** -1.286``, the shape of a power-law reduced scattering spectrum
            (Jacques 2013 mean exponent for soft tissue).

    Returns
    -------
    ndarray of shape (len(terms), bands), float64

    Raises
    ------
    DataFormatError
        For an unknown term (the message lists the allowed terms).
    """
    terms_l = _as_names(terms, "terms")
    _check_names(terms_l, BASELINE_TERMS, "terms")
    wl = _as_wavelengths(wavelengths_nm)
    rows = []
    for t in terms_l:
        if t == "constant":
            rows.append(np.ones_like(wl))
        elif t == "linear":
            rows.append((wl - _BASELINE_REF_NM) / _BASELINE_REF_NM)
        else:
            rows.append((wl / _BASELINE_REF_NM) ** -_SCATTER_B)
    return np.stack(rows)
