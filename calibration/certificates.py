"""Reference-tile certificates: load, validate, band values, expiry.

A certificate file (YAML or JSON) holds what a calibration lab issues with a tile
([27, 28] in ``../shared/research/field_calibration.md``)::

    tile_id: SIM-GREY-50          # printed on the tile
    kind: grey_tile               # white | grey_tile | colour_tile | wavelength_std | slanted_edge
    certificate: CERT-SIM-GREY-50-001
    expires: 2027-12-06           # ISO date
    wavelengths_nm: [400, 405, ...]
    reflectance: [0.49, ...]      # certified reflectance at those wavelengths
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.config import load_yaml
from edge.errors import ConfigError, CalibrationError
from edge.physics import band_integrate

__all__ = ["Certificate", "load_certificate", "KINDS"]

KINDS = ("white", "grey_tile", "colour_tile", "wavelength_std", "slanted_edge")


@dataclass(frozen=True)
class Certificate:
    """A validated tile certificate (see module docstring)."""

    tile_id: str
    kind: str
    number: str
    expires: _dt.date
    wavelengths_nm: tuple[float, ...]
    reflectance: tuple[float, ...]
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        """What the record keeps (the spectrum too, so the calibration can be redone)."""
        return {"tile_id": self.tile_id, "kind": self.kind, "certificate": self.number,
                "expires": self.expires.isoformat(), "source": self.source,
                "wavelengths_nm": list(self.wavelengths_nm),
                "reflectance": list(self.reflectance)}

    def spectrum(self) -> dict[str, Any]:
        return {"wavelengths_nm": self.wavelengths_nm, "reflectance": self.reflectance}

    def expired(self, today: _dt.date | None = None) -> bool:
        return (today or _dt.datetime.now(_dt.timezone.utc).date()) > self.expires

    def problems(self, wavelengths: np.ndarray, fwhm: float,
                 today: _dt.date | None = None) -> list[str]:
        """Why this certificate cannot be used with these bands today (empty: usable)."""
        out = []
        if self.expired(today):
            out.append(f"certificate {self.number} of tile {self.tile_id} expired on "
                       f"{self.expires.isoformat()}")
        wl = np.asarray(wavelengths, np.float64)
        lo, hi = self.wavelengths_nm[0], self.wavelengths_nm[-1]
        if lo > wl[0] - fwhm or hi < wl[-1] + fwhm:
            out.append(f"certificate of tile {self.tile_id} covers {lo:g}-{hi:g} nm, the "
                       f"camera needs {wl[0] - fwhm:g}-{wl[-1] + fwhm:g} nm")
        return out

    def band_values(self, wavelengths: np.ndarray, fwhm: float) -> np.ndarray:
        """The certified reflectance as the camera's Gaussian bands see it, shape (bands,)."""
        cw = np.asarray(self.wavelengths_nm, np.float64)
        fine = np.arange(cw[0], cw[-1] + 0.125, 0.25)
        spec = np.interp(fine, cw, np.asarray(self.reflectance, np.float64))
        return band_integrate(fine, spec, np.asarray(wavelengths, np.float64), fwhm)


def _parse(doc: Any, where: str) -> Certificate:
    if not isinstance(doc, dict):
        raise CalibrationError(f"{where}: expected a mapping with tile_id, kind, certificate, "
                               "expires, wavelengths_nm, reflectance")
    missing = [k for k in ("tile_id", "kind", "certificate", "expires", "wavelengths_nm",
                           "reflectance") if k not in doc]
    if missing:
        raise CalibrationError(f"{where}: missing key(s) {', '.join(missing)}")
    if doc["kind"] not in KINDS:
        raise CalibrationError(f"{where}: kind: expected one of {', '.join(KINDS)}, got "
                               f"{doc['kind']!r}")
    exp = doc["expires"]
    try:
        expires = exp if isinstance(exp, _dt.date) else _dt.date.fromisoformat(str(exp))
    except ValueError:
        raise CalibrationError(f"{where}: expires: expected an ISO date (YYYY-MM-DD), got "
                               f"{exp!r}") from None
    try:
        wl = np.asarray(doc["wavelengths_nm"], np.float64)
        r = np.asarray(doc["reflectance"], np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: wavelengths_nm/reflectance: expected lists of "
                               "numbers") from None
    if wl.ndim != 1 or wl.shape != r.shape or wl.size < 2 or np.any(np.diff(wl) <= 0) \
            or not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(r > 1.5):
        raise CalibrationError(f"{where}: wavelengths_nm/reflectance: expected equally long "
                               "lists, wavelengths ascending, reflectance 0-1.5")
    return Certificate(str(doc["tile_id"]), str(doc["kind"]), str(doc["certificate"]),
                       expires, tuple(float(v) for v in wl), tuple(float(v) for v in r),
                       where)


def load_certificate(path: str | os.PathLike | dict) -> Certificate:
    """Read and validate a certificate file (or an already-parsed mapping).

    Raises
    ------
    CalibrationError
        Unreadable file, invalid YAML, a missing key or a bad value (named).
    """
    if isinstance(path, dict):
        return _parse(path, f"certificate {path.get('tile_id', '?')}")
    p = Path(path)
    try:
        doc = load_yaml(p, what="certificate")   # the one YAML reader: one-line errors
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None
    return _parse(doc, str(p))
