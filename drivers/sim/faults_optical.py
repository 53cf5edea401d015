"""Optical and sensor faults of the simulated camera, each with a magnitude (issue 12).

The checks of a field calibration exist to catch these (``../shared/research/
field_calibration.md``, section 2, column "How to simulate"); the simulated camera applies
them when ``camera.faults`` is an :class:`OpticalFaults`::

    cam.faults = OpticalFaults(wavelength_shift_nm=2.0, lamp_dimming=0.10)

=========================== ===========================================================
fault (parameter)           model
=========================== ===========================================================
``wavelength_shift_nm``     every band's true centre is nominal + shift (targets rendered
                            by :mod:`drivers.sim.targets`; the tissue scene is not shifted)
``wavelength_field_nm``     extra shift growing as r² towards the corners (r = 1 there),
                            the angle-of-incidence shift of thin-film filters (∝ sin²θ)
``lamp_dimming``            illumination × (1 − dimming)
``lamp_colour``             illumination × (1 + colour · (λ − λ_mid) / (λ_max − λ_min)):
                            a colour-temperature change, red up for colour > 0
``warmup_drift``            illumination × (1 − drift · exp(−t / ``warmup_tau_s``)), t the
                            camera's scene time (frame id / fps)
``tile_smudge``             a soft dark disk (radius 15 % of the short side, off centre) of
                            this relative depth on the white tile
``tile_scratch``            a 2-pixel line of this relative depth across the white tile
``nonlinearity``            signal above black × (1 − nl · (s / s_fs)²): compression that is
                            ``nl`` at full scale, 0.56 · ``nl`` at 75 %
``ambient``                 room light (fluorescent: Hg/Eu/Tb lines on a phosphor continuum)
                            whose largest per-band ratio to the default white light is
                            ``ambient``; present with the LEDs off too, absent when capped
``hot_pixels``              this fraction of pixels gains dark signal of 20 % of full scale
                            per 10 ms (seeded positions, beyond the sensor's own)
``defocus_px``              Gaussian blur of the view, sigma in pixels
``light_leak``              a dark-signal ramp along the columns, 0 to this many counts
=========================== ===========================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from edge.errors import ConfigError
from edge.physics import band_integrate

__all__ = ["OpticalFaults", "fluorescent_spectrum"]

_LIMITS: dict[str, tuple[float, float]] = {
    "wavelength_shift_nm": (-20.0, 20.0), "wavelength_field_nm": (-20.0, 20.0),
    "lamp_dimming": (0.0, 0.95), "lamp_colour": (-0.9, 0.9), "warmup_drift": (0.0, 0.9),
    "warmup_tau_s": (0.001, 1e6), "tile_smudge": (0.0, 1.0), "tile_scratch": (0.0, 1.0),
    "nonlinearity": (0.0, 0.5), "ambient": (0.0, 2.0), "hot_pixels": (0.0, 0.5),
    "defocus_px": (0.0, 50.0), "light_leak": (0.0, 10000.0)}
#: Fluorescent lamp lines (nm, relative peak): Hg 405/436/546/578, Tb 487/545, Eu 611/650/707.
_FLUORESCENT_LINES = ((405.0, 0.3), (436.0, 0.6), (487.0, 0.5), (546.0, 1.0), (578.0, 0.4),
                      (611.0, 0.9), (650.0, 0.15), (707.0, 0.1))


def fluorescent_spectrum(wavelengths_nm: np.ndarray) -> np.ndarray:
    """Relative spectrum of a tri-phosphor fluorescent room lamp (lines 2 nm wide on a
    continuum falling into the NIR); peak 1."""
    lam = np.asarray(wavelengths_nm, dtype=np.float64)
    s = 0.05 * np.exp(-0.5 * ((lam - 560.0) / 90.0) ** 2) + 0.002
    for centre, height in _FLUORESCENT_LINES:
        s += height * np.exp(-0.5 * ((lam - centre) / 1.0) ** 2)
    return s / s.max()


@dataclass(frozen=True)
class OpticalFaults:
    """Fault magnitudes (see module docstring); all zero = a healthy unit.

    Raises
    ------
    ConfigError
        A magnitude outside its range (names it, the value and the range).
    """

    wavelength_shift_nm: float = 0.0
    wavelength_field_nm: float = 0.0
    lamp_dimming: float = 0.0
    lamp_colour: float = 0.0
    warmup_drift: float = 0.0
    warmup_tau_s: float = 2.0
    tile_smudge: float = 0.0
    tile_scratch: float = 0.0
    nonlinearity: float = 0.0
    ambient: float = 0.0
    hot_pixels: float = 0.0
    defocus_px: float = 0.0
    light_leak: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (lo, hi) in _LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not lo <= value <= hi:
                raise ConfigError(f"faults.{name}: expected a number in [{lo:g}, {hi:g}], "
                                  f"got {value!r}")

    def active(self) -> dict[str, float]:
        """The faults with a non-zero magnitude."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("warmup_tau_s", "seed") and getattr(self, f.name)}

    # -- spectral ---------------------------------------------------------------------
    def shift_map(self, rows: int, cols: int) -> np.ndarray | None:
        """Band-centre shift per pixel (nm), shape (rows, cols); None when there is none."""
        if not (self.wavelength_shift_nm or self.wavelength_field_nm):
            return None
        y = (np.arange(rows) - (rows - 1) / 2) / max(rows / 2, 1)
        x = (np.arange(cols) - (cols - 1) / 2) / max(cols / 2, 1)
        r2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0
        return self.wavelength_shift_nm + self.wavelength_field_nm * r2

    def light(self, light: np.ndarray, wavelengths_nm: np.ndarray, t_s: float) -> np.ndarray:
        """The LED/lamp light per band with dimming, colour change and warm-up applied."""
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
        factor = 1.0 - self.lamp_dimming
        if self.lamp_colour:
            span = max(float(wl[-1] - wl[0]), 1.0)
            factor = factor * (1.0 + self.lamp_colour * (wl - 0.5 * (wl[0] + wl[-1])) / span)
        if self.warmup_drift:
            factor = factor * (1.0 - self.warmup_drift * math.exp(-t_s / self.warmup_tau_s))
        return np.asarray(light, dtype=np.float64) * factor

    def ambient_light(self, wavelengths_nm: np.ndarray, fwhm_nm: float,
                      white_light: np.ndarray) -> np.ndarray | None:
        """Room light per band, scaled so max(ambient / white_light) = ``ambient``."""
        if not self.ambient:
            return None
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
        fine = np.arange(math.floor(wl[0] - 3 * fwhm_nm), math.ceil(wl[-1] + 3 * fwhm_nm)
                         + 0.5, 0.25)
        shape = band_integrate(fine, fluorescent_spectrum(fine), wl, fwhm_nm)
        ratio = shape / np.maximum(white_light, 1e-12)
        return self.ambient * shape / float(ratio.max())

    # -- spatial ------------------------------------------------------------------------
    def tile_map(self, rows: int, cols: int) -> np.ndarray | None:
        """Multiplicative dirt map of the white tile, shape (rows, cols); None if clean."""
        if not (self.tile_smudge or self.tile_scratch):
            return None
        m = np.ones((rows, cols))
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
        if self.tile_smudge:
            radius = 0.15 * min(rows, cols)
            cy, cx = 0.40 * rows, 0.60 * cols
            d = np.hypot(yy - cy, xx - cx)
            m *= 1.0 - self.tile_smudge * np.clip(radius + 0.5 - d, 0.0, 1.0)
        if self.tile_scratch:
            # a line from (0.2 rows, 0.1 cols) to (0.8 rows, 0.9 cols), 2 px wide
            y0, x0, y1, x1 = 0.2 * rows, 0.1 * cols, 0.8 * rows, 0.9 * cols
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
            dist = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
            m *= 1.0 - self.tile_scratch * (dist <= 1.0)
        return m

    def blur(self, reflectance: np.ndarray) -> np.ndarray:
        """The view through a defocused lens (Gaussian, ``defocus_px`` sigma)."""
        if not self.defocus_px:
            return reflectance
        from scipy.ndimage import gaussian_filter
        return gaussian_filter(np.asarray(reflectance, np.float32),
                               (self.defocus_px, self.defocus_px, 0), mode="nearest")

    # -- sensor ---------------------------------------------------------------------------
    def apply_raw(self, raw: np.ndarray, *, black_level: float, full_scale: float,
                  exposure_us: float) -> np.ndarray:
        """Non-linearity, extra hot pixels and light leak on raw counts (uint16 in and out)."""
        if not (self.nonlinearity or self.hot_pixels or self.light_leak):
            return raw
        x = raw.astype(np.float32)
        rows, cols = raw.shape[:2]
        if self.hot_pixels:
            rng = np.random.default_rng([self.seed, 0x407])
            hot = rng.random((rows, cols)) < self.hot_pixels
            x[hot] += np.float32(0.2 * full_scale * exposure_us / 10_000.0)
        if self.light_leak:
            x += (self.light_leak * np.arange(cols) / max(cols - 1, 1)).astype(
                np.float32)[None, :, None]
        if self.nonlinearity:
            span = full_scale - black_level
            s = np.maximum(x - black_level, 0.0) / span
            x = black_level + span * s * (1.0 - self.nonlinearity * s * s) \
                + np.minimum(x - black_level, 0.0)
        return np.clip(np.rint(x), 0, full_scale).astype(np.uint16)
