"""The spectrum at one pixel: measured reflectance over recent frames and the fitted model.

The fit is the unmixing's own model (:class:`~edge.processing.unmixing.Unmixer`, modified
Beer-Lambert, FACTS.md "Tissue optics"): ``c = P @ A`` with ``A = -ln(max(R, eps))`` and
``P = pinv(E)``, then the reconstruction ``A_fit = E @ c`` and ``R_fit = exp(-A_fit)``.  The
residual says how well the chromophore basis explains the pixel (drapes, instruments and
specular highlights fit badly).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from edge.errors import ConfigError, DataFormatError
from edge.serve.live import KeptFrame

__all__ = ["UnmixerCache", "pixel_spectrum", "parse_pixel"]

log = logging.getLogger(__name__)


class UnmixerCache:
    """Builds the unmixer for a wavelength grid once (the run's chromophores and baseline).

    Parameters
    ----------
    chromophores, baseline : sequence of str or None
        As ``processing.chromophores``/``processing.baseline`` of the run's configuration;
        None: :func:`edge.processing.unmixing.recommended_components` for the grid.
    fwhm_nm : float or None
        Band FWHM of the camera (None: band centres sampled).
    """

    def __init__(self, chromophores: Sequence[str] | None = None,
                 baseline: Sequence[str] | None = None, fwhm_nm: float | None = None,
                 factory: Callable[[np.ndarray], Any] | None = None):
        self.chromophores, self.baseline, self.fwhm_nm = chromophores, baseline, fwhm_nm
        self._factory = factory
        self._key: bytes | None = None
        self._unmixer = None

    def use_camera(self, camera) -> None:
        """Take the opened camera's band FWHM (a recording's own, a preset's, or the
        configured ``camera.fwhm_nm``: what the chain's unmixer uses); rebuilds on next use."""
        fwhm = camera.fwhm_nm
        if fwhm != self.fwhm_nm:
            self.fwhm_nm, self._key = fwhm, None

    def get(self, wavelengths: np.ndarray):
        key = np.asarray(wavelengths, np.float64).tobytes()
        if key != self._key:
            if self._factory is not None:
                self._unmixer = self._factory(wavelengths)
            else:
                from edge.processing.unmixing import Unmixer, recommended_components
                rc, rb = recommended_components(wavelengths)
                self._unmixer = Unmixer(
                    wavelengths, rc if self.chromophores is None else self.chromophores,
                    rb if self.baseline is None else self.baseline, fwhm_nm=self.fwhm_nm)
            self._key = key
        return self._unmixer


def parse_pixel(x: str | None, y: str | None, rows: int, cols: int) -> tuple[int, int]:
    """Validate the query ``x`` (column) and ``y`` (row) against the frame size.

    Raises
    ------
    ConfigError
        Missing, not an integer, or outside the frame (names the parameter and the range).
    """
    out = []
    for name, value, n in (("x", x, cols), ("y", y, rows)):
        if value is None:
            raise ConfigError(f"{name}: required (pixel {'column' if name == 'x' else 'row'}, "
                              f"0..{n - 1})")
        try:
            v = int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer in 0..{n - 1}, got {value!r}") \
                from None
        if not 0 <= v < n:
            raise ConfigError(f"{name}: expected an integer in 0..{n - 1}, got {v}")
        out.append(v)
    return out[0], out[1]


def _finite(v: np.ndarray) -> list[float | None]:
    return [float(a) if np.isfinite(a) else None for a in np.asarray(v, np.float64)]


def pixel_spectrum(frames: Sequence[KeptFrame], x: int, y: int,
                   unmixers: UnmixerCache) -> dict[str, Any]:
    """Reflectance at pixel (``y``, ``x``) averaged over ``frames`` and its fitted model.

    Parameters
    ----------
    frames : sequence of KeptFrame
        Recent frames, oldest first; only those with a reflectance cube and the newest
        frame's grid and shape are used.
    x, y : int
        Column and row (validated by :func:`parse_pixel`).
    unmixers : UnmixerCache

    Returns
    -------
    dict
        ``x``, ``y``, ``seqs`` (frames averaged), ``wavelengths_nm`` (bands,),
        ``reflectance`` (bands,) mean over the frames, ``reflectance_latest`` (bands,),
        ``fit``: ``{"reflectance", "absorbance", "absorbance_measured", "components":
        {name: value}, "rms_absorbance"}``, ``sto2`` and ``class_id`` of the newest frame
        (None where absent or invalid).  Non-finite values are null.

    Raises
    ------
    DataFormatError
        No recent frame carries reflectance.
    """
    usable = [f for f in frames if f.reflectance is not None]
    if not usable:
        raise DataFormatError("spectrum: no recent frame carries reflectance (no live run, or "
                              "the backend returns no reflectance cube)")
    newest = usable[-1]
    same = [f for f in usable if f.reflectance.shape == newest.reflectance.shape
            and np.array_equal(f.wavelengths, newest.wavelengths)]
    stack = np.stack([f.reflectance[y, x, :] for f in same]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean = stack.mean(axis=0)
    doc: dict[str, Any] = {
        "x": x, "y": y, "seqs": [f.seq for f in same],
        "wavelengths_nm": [float(w) for w in newest.wavelengths],
        "reflectance": _finite(mean), "reflectance_latest": _finite(stack[-1]),
        "sto2": None, "class_id": None, "fit": None}
    if newest.sto2 is not None and np.isfinite(newest.sto2[y, x]):
        doc["sto2"] = float(newest.sto2[y, x])
    if newest.classes is not None:
        doc["class_id"] = int(newest.classes[y, x])
    try:
        um = unmixers.get(newest.wavelengths)
    except Exception as exc:  # a grid the unmixing cannot handle: show the data, say why
        doc["fit_error"] = str(exc)
        return doc
    from edge.processing.unmixing import absorbance
    a = absorbance(mean.astype(np.float32), um.eps).astype(np.float64)
    if np.all(np.isfinite(a)):
        c = np.asarray(um.pinv, np.float64) @ a
        a_fit = um.basis @ c
        doc["fit"] = {"reflectance": _finite(np.exp(-a_fit)), "absorbance": _finite(a_fit),
                      "absorbance_measured": _finite(a),
                      "components": {n: float(v) for n, v in zip(um.components, c)},
                      "rms_absorbance": float(np.sqrt(np.mean((a - a_fit) ** 2)))}
    return doc
