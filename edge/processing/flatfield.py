"""Flat-field (dark/white) reflectance calibration, NumPy reference.

Formula (FACTS.md, "Calibration practice")::

    R = ((I - D_I) / t_I) / ((W - D_W) / t_W) * rho_ref(lambda)

with I the raw frame at exposure t_I, D_I the dark at that exposure, W the white tile at
exposure t_W with its dark D_W, and rho_ref the tile's reflectance (~0.99 for Spectralon
SRS-99).  Everything that does not change per frame is folded into one precomputed array::

    scale = rho_ref * (t_W / t_ref) / (W - D_W)        float32, (rows, cols, bands)
    R     = (I - D_I) * scale * (t_ref / t_I)          per frame

so a frame costs one subtract and one multiply per element (the ``t_ref / t_I`` factor is 1
and skipped when the frame has the reference exposure ``t_ref``).  The CUDA calibrate kernel
implements exactly this form with the same float32 ``dark`` and ``scale`` arrays.

Exposure changes: a frame whose exposure differs from ``t_ref`` is rescaled by ``t_ref/t_I``,
but D_I is still the dark recorded at ``t_ref``; dark current scales with exposure, so the
result is only approximate.  :meth:`FlatField.apply` logs a warning once per exposure and sets
:attr:`FlatField.dark_mismatch`; capture a new dark for the new exposure.
:meth:`FlatField.exposure_factor` and :meth:`FlatField.calibrate` are the same arithmetic
without that state (the backends use them through :class:`edge.processing.plan.ChainPlan`
and never change a flat field they were given).

Pixel flags (``edge.core.chain``), per pixel, OR-ed:

- ``FLAG_SATURATED``: any raw band >= ``saturation`` (default: htc's rule "any band > 1000 of
  1023", scaled to the bit depth), or the white reference itself saturated/over-exposed;
- ``FLAG_UNDEREXPOSED``: ``W - D_W`` below ``underexposed_level`` (default 40/1023 of full
  scale, DKFZ XiLens threshold) in any band;
- ``FLAG_NONFINITE``: NaN/inf in a float input or in the references;
- ``FLAG_BAD_PIXEL``: dead/hot pixels from the calibration record.

Flagged pixels have NaN in every band of the reflectance.

Float32 input is taken as reflectance already calibrated (e.g. TIVITA ``.dat`` recordings): it
passes through unchanged (copied, not rescaled, no reference flags) except that pixels with any
NaN/inf band become all-NaN with ``FLAG_NONFINITE``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge.core.chain import FLAG_BAD_PIXEL, FLAG_NONFINITE, FLAG_SATURATED, FLAG_UNDEREXPOSED
from edge.errors import CalibrationError

__all__ = ["FlatField", "default_saturation", "default_underexposed_level"]

log = logging.getLogger(__name__)


def default_saturation(bit_depth: int) -> float:
    """Saturation level in counts: htc flags any band > 1000 of 1023 (FACTS.md), i.e. >= 1001."""
    return 1001.0 / 1023.0 * (2 ** bit_depth - 1)


def default_underexposed_level(bit_depth: int) -> float:
    """Minimum usable white - dark in counts: 40/1023 of full scale (FACTS.md, XiLens)."""
    return 40.0 / 1023.0 * (2 ** bit_depth - 1)


def _as_cube(name: str, value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3:
        raise CalibrationError(f"{name}: expected shape (rows, cols, bands), got {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise CalibrationError(f"{name}: shape {arr.shape} does not match dark shape {shape}")
    return arr


def _mask(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise CalibrationError(f"{name}: expected a (rows, cols) mask of shape {shape}, got "
                               f"{arr.shape}")
    return arr.astype(bool)


class FlatField:
    """Precomputed flat-field reference; :meth:`apply` turns raw frames into reflectance.

    Build it with :meth:`from_references`.

    Attributes
    ----------
    dark : ndarray of shape (rows, cols, bands), float32
        D_I, subtracted from each frame.
    scale : ndarray of shape (rows, cols, bands), float32
        ``rho_ref * (t_W/t_ref) / (W - D_W)``; NaN where the pixel is statically flagged.
    static_flags : ndarray of shape (rows, cols), uint8
        Flags that do not depend on the frame (reference under/over-exposed, bad, non-finite).
    exposure_us : float
        t_ref, the exposure D_I was recorded at.
    saturation : float
        Raw counts at or above this are saturated.
    """

    def __init__(self, dark: np.ndarray, scale: np.ndarray, static_flags: np.ndarray, *,
                 exposure_us: float, saturation: float) -> None:
        self.dark = dark
        self.scale = scale
        self.static_flags = static_flags
        self.exposure_us = float(exposure_us)
        self.saturation = float(saturation)
        self.dark_mismatch = False
        self._warned: set[float] = set()

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(rows, cols, bands)`` of the reference."""
        return tuple(self.dark.shape)  # type: ignore[return-value]

    @classmethod
    def from_references(cls, dark: Any, white: Any, white_dark: Any = None, *,
                        exposure_us: float, white_exposure_us: float, rho_ref: Any = 0.99,
                        bit_depth: int = 10, saturation: float | None = None,
                        underexposed_level: float | None = None, bad_pixels: Any = None,
                        overexposed: Any = None) -> "FlatField":
        """Precompute ``dark`` and ``scale`` from averaged references.

        Parameters
        ----------
        dark : array_like of shape (rows, cols, bands)
            Mean dark D_I at the frame exposure ``exposure_us`` (counts).
        white : array_like of shape (rows, cols, bands)
            Mean white-tile frame W at ``white_exposure_us`` (counts).
        white_dark : array_like of shape (rows, cols, bands), optional
            Dark D_W at the white exposure; defaults to ``dark`` (valid only if the exposures
            are equal, otherwise a warning is logged).
        exposure_us, white_exposure_us : float
            t_ref and t_W in microseconds.
        rho_ref : float or array_like of shape (bands,)
            Reflectance of the white tile per band.
        bit_depth : int
            ADC bit depth; sets the default ``saturation`` and ``underexposed_level``.
        saturation, underexposed_level : float, optional
            Thresholds in counts (see module docstring for defaults).
        bad_pixels : array_like of shape (rows, cols), bool, optional
            Dead/hot pixels (``FLAG_BAD_PIXEL``).
        overexposed : array_like of shape (rows, cols), bool, optional
            White pixels over-exposed when captured (``FLAG_SATURATED``).

        Raises
        ------
        CalibrationError
            Shapes that do not match, non-positive exposures, bad ``rho_ref`` or ``bit_depth``.
        """
        d = _as_cube("dark", dark)
        w = _as_cube("white", white, d.shape)
        if white_dark is None:
            if white_exposure_us != exposure_us:
                log.warning("flat-field: no white_dark given and white exposure %g µs != frame "
                            "exposure %g µs; using the frame dark for the white", white_exposure_us,
                            exposure_us)
            wd = d
        else:
            wd = _as_cube("white_dark", white_dark, d.shape)
        for name, t in (("exposure_us", exposure_us), ("white_exposure_us", white_exposure_us)):
            if not (isinstance(t, (int, float)) and np.isfinite(t) and t > 0):
                raise CalibrationError(f"{name}: expected a finite exposure > 0 µs, got {t!r}")
        if not (isinstance(bit_depth, (int, np.integer)) and 1 <= bit_depth <= 16):
            raise CalibrationError(f"bit_depth: expected an integer 1-16, got {bit_depth!r}")
        rho = np.asarray(rho_ref, dtype=np.float64)
        if rho.ndim > 1 or (rho.ndim == 1 and rho.shape[0] != d.shape[2]) \
                or not np.all(np.isfinite(rho)) or np.any(rho <= 0):
            raise CalibrationError(
                f"rho_ref: expected a positive number or one per band ({d.shape[2]}), got "
                f"{rho_ref!r}")
        sat = default_saturation(bit_depth) if saturation is None else float(saturation)
        under = (default_underexposed_level(bit_depth) if underexposed_level is None
                 else float(underexposed_level))
        rows, cols = d.shape[:2]

        span = w - wd
        flags = np.zeros((rows, cols), np.uint8)
        finite = np.isfinite(d).all(axis=2) & np.isfinite(w).all(axis=2) & np.isfinite(wd).all(axis=2)
        flags[~finite] |= FLAG_NONFINITE
        with np.errstate(invalid="ignore"):
            flags[(span < under).any(axis=2)] |= FLAG_UNDEREXPOSED
            flags[(w >= sat).any(axis=2)] |= FLAG_SATURATED
        if overexposed is not None:
            flags[_mask("overexposed", overexposed, (rows, cols))] |= FLAG_SATURATED
        if bad_pixels is not None:
            flags[_mask("bad_pixels", bad_pixels, (rows, cols))] |= FLAG_BAD_PIXEL

        with np.errstate(divide="ignore", invalid="ignore"):
            scale = rho * (float(white_exposure_us) / float(exposure_us)) / span
        # NaN scale makes every statically flagged pixel NaN with no per-frame masking work.
        scale[flags != 0] = np.nan
        return cls(d.astype(np.float32), scale.astype(np.float32), flags,
                   exposure_us=exposure_us, saturation=sat)

    def apply(self, raw: np.ndarray, exposure_us: float | None = None, *,
              out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrate one frame.

        Parameters
        ----------
        raw : ndarray of shape (rows, cols, bands), uint16 (or float32 reflectance)
        exposure_us : float, optional
            Exposure of the frame; None means the reference exposure.
        out : ndarray of shape (rows, cols, bands), float32, optional
            Buffer for the reflectance of raw frames, reused across frames (allocating a
            fresh 120 MB array costs about as much as the arithmetic on a 2-core CPU).

        Returns
        -------
        reflectance : ndarray of shape (rows, cols, bands), float32
            NaN in every band of a flagged pixel.
        flags : ndarray of shape (rows, cols), uint8
            ``FLAG_*`` bits, 0 = valid.

        Raises
        ------
        CalibrationError
            Frame shape differs from the reference, unsupported dtype, or bad exposure.
        """
        raw = np.asarray(raw)
        if raw.dtype == np.float32:
            return self._pass_through(raw)
        self._check_counts(raw)
        factor = self.exposure_factor(exposure_us)
        if exposure_us is not None and exposure_us != self.exposure_us:
            self.dark_mismatch = True
            if exposure_us not in self._warned:
                self._warned.add(exposure_us)
                log.warning("flat-field: frame exposure %g µs differs from the reference's %g µs;"
                            " reflectance rescaled by %.4g but the dark was recorded at %g µs: "
                            "capture a new dark", exposure_us, self.exposure_us, factor,
                            self.exposure_us)
        return self.calibrate(raw, factor, out=out)

    def exposure_factor(self, exposure_us: float | None) -> float:
        """``t_ref / t_I`` for a raw frame of exposure ``exposure_us`` (1.0 for None or t_ref).

        Pure: no warning, no :attr:`dark_mismatch` (:meth:`apply` adds those).

        Raises
        ------
        CalibrationError
            ``exposure_us`` not a finite value > 0.
        """
        if exposure_us is None or exposure_us == self.exposure_us:
            return 1.0
        if not (np.isfinite(exposure_us) and exposure_us > 0):
            raise CalibrationError(
                f"exposure_us: expected a finite exposure > 0 µs, got {exposure_us!r}")
        return self.exposure_us / float(exposure_us)

    def _check_counts(self, raw: np.ndarray) -> None:
        if raw.dtype.kind not in "ui":
            raise CalibrationError(
                f"raw: expected uint16 counts or float32 reflectance, got {raw.dtype}")
        if raw.shape != self.dark.shape:
            raise CalibrationError(
                f"raw: frame shape {raw.shape} does not match the calibration reference shape "
                f"{self.dark.shape} (rows, cols, bands)")

    def calibrate(self, raw: np.ndarray, factor: float = 1.0, *,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance and flags of raw counts with a given exposure factor (no state change).

        Parameters
        ----------
        raw : ndarray of shape (rows, cols, bands), integer counts
        factor : float
            ``t_ref / t_I`` (:meth:`exposure_factor`).
        out : ndarray of shape (rows, cols, bands), float32, optional
            As :meth:`apply`.

        Returns
        -------
        reflectance, flags
            As :meth:`apply`.
        """
        raw = np.asarray(raw)
        self._check_counts(raw)
        if out is not None and (out.shape != self.dark.shape or out.dtype != np.float32):
            raise CalibrationError(
                f"out: expected a float32 buffer of shape {self.dark.shape}, got {out.dtype} "
                f"{out.shape}")
        refl = np.subtract(raw, self.dark, out=out, dtype=np.float32)
        np.multiply(refl, self.scale, out=refl)
        if factor != 1.0:
            np.multiply(refl, np.float32(factor), out=refl)
        flags = self.static_flags.copy()
        # One global max (a few ms) decides whether the per-pixel test (~6x dearer) is needed;
        # max over bands >= level  <=>  any band >= level, cheaper than a bool cube.
        if raw.size and raw.max() >= self.saturation:
            flags[raw.max(axis=2) >= self.saturation] |= FLAG_SATURATED
        refl[flags != 0] = np.nan
        return refl, flags

    @staticmethod
    def _pass_through(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        refl = cube.copy()
        flags = np.zeros(cube.shape[:2], np.uint8)
        if cube.size == 0 or (np.isfinite(cube.max()) and np.isfinite(cube.min())):
            return refl, flags  # max/min propagate NaN and show inf: no per-pixel test needed
        bad = ~np.isfinite(cube).all(axis=2)
        flags[bad] = FLAG_NONFINITE
        refl[bad] = np.nan
        return refl, flags
