"""Calibration and QA targets of the simulated camera, with their certified spectra.

A field calibration (issue 12, ``../shared/research/field_calibration.md`` section 2) needs a
white tile, a grey or colour reference tile, sometimes a wavelength standard and a slanted
edge.  Each simulated target has a certificate the calibration code checks against, exactly as
a real tile comes with a certified reflectance spectrum:

=================== ===================== =====================================================
target              tile id               reflectance (fine grid, nm)
=================== ===================== =====================================================
``white``           SIM-WHITE-99          0.99, flat (Spectralon SRS-99 class, FACTS.md)
``grey_tile``       SIM-GREY-50           0.50 + 0.02 · (λ − 750) / 500 (a carbon-doped PTFE
                                          grey, ASTM E1791 class; slight slope on purpose)
``colour_tile``     SIM-COLOUR-RED        0.08 + 0.60 / (1 + exp(−(λ − 610) / 20)) (a red
                                          patch: dark in blue/green, bright in red/NIR)
``wavelength_std``  SIM-WLS-RE            0.90 · Π (1 − d_i · exp(−½((λ − c_i)/σ_i)²)):
                                          ten Gaussian absorption features 470-970 nm
                                          (:data:`WAVELENGTH_FEATURES`), a rare-earth-glass-
                                          like standard over a white tile (SRM 2065 class)
``slanted_edge``    SIM-EDGE-5            0.90 left of a line 5° from vertical, 0.05 right,
                                          each pixel the area-weighted mean (ISO 12233 target)
=================== ===================== =====================================================

The features of the wavelength standard are made up (not a certified material): what matters
is that they are known exactly, cover every preset's range and are resolved by its bands.

Rendering integrates each spectrum over the camera's Gaussian bands at the *true* band centres
``nominal + shift`` (a wavelength-shift fault, :mod:`drivers.sim.faults_optical`), so a shifted
camera sees the features moved while reporting its nominal wavelengths.
"""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np

from edge.errors import ConfigError
from edge.physics import band_integrate

__all__ = ["TILE_TARGETS", "TILE_IDS", "WAVELENGTH_FEATURES", "EDGE_ANGLE_DEG",
           "tile_spectrum", "band_reflectance", "render_target", "certificate",
           "PLACEMENT_RMS"]

#: Target name -> tile id of its certificate.
TILE_IDS: dict[str, str] = {"white": "SIM-WHITE-99", "grey_tile": "SIM-GREY-50",
                            "colour_tile": "SIM-COLOUR-RED", "wavelength_std": "SIM-WLS-RE",
                            "slanted_edge": "SIM-EDGE-5"}
#: Targets rendered by this module (the camera adds ``scene`` and ``dark``).
TILE_TARGETS: tuple[str, ...] = tuple(TILE_IDS)
#: (centre nm, depth, sigma nm) of the wavelength standard's absorption features.
WAVELENGTH_FEATURES: tuple[tuple[float, float, float], ...] = (
    (470.0, 0.45, 7.0), (536.0, 0.55, 7.0), (590.0, 0.50, 8.0), (645.0, 0.55, 8.0),
    (700.0, 0.50, 9.0), (755.0, 0.55, 10.0), (810.0, 0.50, 10.0), (865.0, 0.55, 11.0),
    (915.0, 0.50, 12.0), (970.0, 0.55, 12.0))
#: Angle of the slanted edge from the column axis (ISO 12233 recommends about 5°).
EDGE_ANGLE_DEG = 5.0
#: Relative rms gain change when a tile is placed again (angle, distance): repeatability.
PLACEMENT_RMS = 0.003


def tile_spectrum(name: str, wavelengths_nm: np.ndarray) -> np.ndarray:
    """Certified reflectance of a target at ``wavelengths_nm``.

    Parameters
    ----------
    name : str
        One of :data:`TILE_TARGETS` (the slanted edge: its bright side).
    wavelengths_nm : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,), float64
    """
    lam = np.asarray(wavelengths_nm, dtype=np.float64)
    if name == "white":
        return np.full(lam.shape, 0.99)
    if name == "grey_tile":
        return 0.50 + 0.02 * (lam - 750.0) / 500.0
    if name == "colour_tile":
        return 0.08 + 0.60 / (1.0 + np.exp(-(lam - 610.0) / 20.0))
    if name == "wavelength_std":
        r = np.full(lam.shape, 0.90)
        for centre, depth, sigma in WAVELENGTH_FEATURES:
            r *= 1.0 - depth * np.exp(-0.5 * ((lam - centre) / sigma) ** 2)
        return r
    if name == "slanted_edge":
        return np.full(lam.shape, 0.90)
    raise ConfigError(f"target: unknown calibration target {name!r}; allowed: "
                      f"{', '.join(TILE_TARGETS)}")


def _fine(wl: np.ndarray, fwhm: float, pad: float = 10.0) -> np.ndarray:
    return np.arange(math.floor(wl[0] - 3 * fwhm - pad), math.ceil(wl[-1] + 3 * fwhm + pad)
                     + 0.5, 0.25)


def band_reflectance(name: str, wavelengths_nm: np.ndarray, fwhm_nm: float,
                     shift_nm: float | np.ndarray = 0.0) -> np.ndarray:
    """A target's reflectance as the camera's bands see it (Gaussian band integration).

    Parameters
    ----------
    wavelengths_nm : ndarray of shape (bands,)
        Nominal band centres.
    fwhm_nm : float
    shift_nm : float or ndarray of shape (k,)
        True centre minus nominal centre; an array gives one spectrum per shift.

    Returns
    -------
    ndarray of shape (bands,) or (k, bands), float64
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    shifts = np.atleast_1d(np.asarray(shift_nm, dtype=np.float64))
    fine = _fine(wl, fwhm_nm, pad=float(np.max(np.abs(shifts))) + 10.0)
    spec = tile_spectrum(name, fine)
    out = np.stack([band_integrate(fine, spec, wl + s, fwhm_nm) for s in shifts])
    return out[0] if np.ndim(shift_nm) == 0 else out


def _placement_gain(seed: int, placement: int) -> float:
    if placement <= 0:
        return 1.0
    rng = np.random.default_rng([int(seed), 0x71E, int(placement)])
    return float(1.0 + PLACEMENT_RMS * rng.standard_normal())


def render_target(name: str, wavelengths_nm: np.ndarray, rows: int, cols: int,
                  fwhm_nm: float, *, shift_map: np.ndarray | None = None,
                  placement: int = 0, seed: int = 0) -> np.ndarray:
    """Reflectance cube of a target filling the view.

    Parameters
    ----------
    name : str
        One of :data:`TILE_TARGETS`.
    wavelengths_nm : ndarray of shape (bands,)
    rows, cols : int
    fwhm_nm : float
    shift_map : ndarray of shape (rows, cols), optional
        Band-centre shift per pixel (nm); None: no shift.
    placement : int
        0: the tile as first placed; k > 0: placed again (a seeded gain change of
        :data:`PLACEMENT_RMS` rms, the geometry changing between placements).
    seed : int

    Returns
    -------
    ndarray of shape (rows, cols, bands), float32
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if name == "slanted_edge":
        bright = band_reflectance("slanted_edge", wl, fwhm_nm)
        r0, c0 = (rows - 1) / 2.0, (cols - 1) / 2.0
        edge_col = c0 + math.tan(math.radians(EDGE_ANGLE_DEG)) * (np.arange(rows) - r0)
        # fraction of each pixel [c - 0.5, c + 0.5) left of the edge: ideal pixel sampling
        cover = np.clip(edge_col[:, None] - (np.arange(cols)[None, :] - 0.5), 0.0, 1.0)
        refl = 0.05 + (cover[:, :, None] * (bright - 0.05)[None, None, :])
    elif shift_map is None or not np.any(shift_map):
        refl = np.broadcast_to(band_reflectance(name, wl, fwhm_nm), (rows, cols, wl.size))
    else:
        shift_map = np.asarray(shift_map, dtype=np.float64)
        lo, hi = float(shift_map.min()), float(shift_map.max())
        if hi - lo < 1e-6:
            refl = np.broadcast_to(band_reflectance(name, wl, fwhm_nm, lo), (rows, cols, wl.size))
        else:
            # spectra on a 0.05 nm grid of shifts, interpolated per pixel
            grid = np.arange(lo, hi + 0.05, 0.05)
            table = band_reflectance(name, wl, fwhm_nm, grid)
            pos = (shift_map - lo) / 0.05
            i = np.clip(np.floor(pos).astype(int), 0, grid.size - 2)
            f = (pos - i)[:, :, None]
            refl = table[i] * (1.0 - f) + table[i + 1] * f
    gain = _placement_gain(seed, placement)
    return (np.asarray(refl, dtype=np.float64) * gain).astype(np.float32)


def certificate(name: str, *, wavelengths_nm: np.ndarray | None = None,
                expires: str | None = None, number: str | None = None) -> dict:
    """The certificate of a simulated target, as a calibration tile certificate file holds it.

    Parameters
    ----------
    wavelengths_nm : ndarray, optional
        Grid of the certified spectrum (default 400-1000 nm every 5 nm, as lab certificates
        tabulate; the 1 nm features of the wavelength standard are given on a 1 nm grid).
    expires : str, optional
        ISO date (default: one year from today).

    Returns
    -------
    dict
        ``tile_id``, ``kind``, ``certificate``, ``expires``, ``wavelengths_nm``,
        ``reflectance`` (and ``features_nm`` for the wavelength standard).
    """
    if wavelengths_nm is None:
        step = 1.0 if name == "wavelength_std" else 5.0
        wavelengths_nm = np.arange(400.0, 1050.0 + 0.5 * step, step)
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if expires is None:
        expires = (_dt.date.today() + _dt.timedelta(days=365)).isoformat()
    cert = {"tile_id": TILE_IDS[name] if name in TILE_IDS else name, "kind": name,
            "certificate": number or f"CERT-{TILE_IDS.get(name, name)}-001",
            "expires": expires, "wavelengths_nm": [float(v) for v in wl],
            "reflectance": [round(float(v), 6) for v in tile_spectrum(name, wl)]}
    if name == "wavelength_std":
        cert["features_nm"] = [c for c, _, _ in WAVELENGTH_FEATURES]
    return cert
