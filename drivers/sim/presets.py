"""Camera presets of the simulated camera.

======== ===================== ========== ========== ======= ===== ====================
preset   bands                 resolution FWHM       bits    fps   modelled on
======== ===================== ========== ========== ======= ===== ====================
tivita   100, 500-1000 nm      480 × 640  10 nm      10      10    TIVITA push-broom
snapshot16 16, 460-600 nm      256 × 512  15 nm      10      25    4×4 mosaic snapshot
snapshot25 25, 665-960 nm      217 × 409  20 nm      10      25    5×5 mosaic snapshot
======== ===================== ========== ========== ======= ===== ====================

- ``tivita``: grid ``np.linspace(500, 1000, 100)`` and 480×640, 10-bit raw (FACTS.md, "TIVITA
  cube files").  The real camera scans for seconds per cube; the simulator delivers frames at
  a video-like 10 fps so pipelines can be exercised.
- ``snapshot16``: a 4×4 mosaic sensor (VIS) on a 2048×1088 CMOSIS CMV2000-class chip gives
  about 272×512 spectral pixels; we use 256×512 (a cropped active area, both multiples of 16
  so the networks' stride-32 encoders need no padding beyond 256/512).
- ``snapshot25``: 217×409 spectral pixels, typical of 5×5 mosaic sensors (2048×1088 chip with
  a 5-pixel pitch, minus the border); 665-960 nm as in DKFZ snapshot laparoscopy (Ayala et al.,
  Sci. Adv. 2023).  Bands are spaced evenly here; real mosaic filters are not exactly even.

Band FWHM values are typical, not measured (documented defaults; override with ``fwhm_nm``).
``rows``/``cols`` may be overridden per camera (e.g. small frames in tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edge.errors import ConfigError
from edge.physics.spectra import FWHM_RANGE_NM

__all__ = ["CameraPreset", "PRESETS", "get_preset", "BIT_DEPTHS"]

#: ADC bit depths the simulated sensor supports.
BIT_DEPTHS: tuple[int, ...] = (8, 10, 12, 14, 16)


@dataclass(frozen=True)
class CameraPreset:
    """Geometry and spectral layout of a simulated camera.

    Attributes
    ----------
    name : str
    wavelengths : tuple of float
        Band centres, nm, ascending.
    rows, cols : int
        Frame size in spectral pixels.
    fwhm_nm : float
        Gaussian band FWHM in nm.
    bit_depth : int
        ADC bit depth.
    fps : float
        Nominal frame rate (free-run, realtime pacing and scene time).
    """

    name: str
    wavelengths: tuple[float, ...]
    rows: int
    cols: int
    fwhm_nm: float
    bit_depth: int = 10
    fps: float = 25.0

    @property
    def bands(self) -> int:
        return len(self.wavelengths)

    def wavelength_array(self) -> np.ndarray:
        """Band centres as float64 ndarray of shape (bands,)."""
        return np.asarray(self.wavelengths, dtype=np.float64)


def _grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(float(x) for x in np.linspace(lo, hi, n))


PRESETS: dict[str, CameraPreset] = {
    "tivita": CameraPreset("tivita", _grid(500.0, 1000.0, 100), 480, 640, 10.0, 10, 10.0),
    "snapshot16": CameraPreset("snapshot16", _grid(460.0, 600.0, 16), 256, 512, 15.0, 10, 25.0),
    "snapshot25": CameraPreset("snapshot25", _grid(665.0, 960.0, 25), 217, 409, 20.0, 10, 25.0),
}


def _positive_int(name: str, value: object, hi: int = 8192) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= hi:
        raise ConfigError(f"{name}: expected an integer 1-{hi}, got {value!r}")
    return int(value)


def get_preset(name: str, *, rows: int | None = None, cols: int | None = None,
               bit_depth: int | None = None, fps: float | None = None,
               fwhm_nm: float | None = None) -> CameraPreset:
    """Return a preset, optionally with rows/cols/bit depth/fps/FWHM overridden.

    Raises
    ------
    ConfigError
        For an unknown preset name or an invalid override (the message names the parameter,
        shows the value and says what is allowed).
    """
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown camera preset {name!r}; allowed: "
                          f"{', '.join(PRESETS)}")
    p = PRESETS[name]
    changes: dict[str, object] = {}
    if rows is not None:
        changes["rows"] = _positive_int("rows", rows)
    if cols is not None:
        changes["cols"] = _positive_int("cols", cols)
    if bit_depth is not None:
        if isinstance(bit_depth, bool) or bit_depth not in BIT_DEPTHS:
            raise ConfigError(f"bit_depth: expected one of {', '.join(map(str, BIT_DEPTHS))}, "
                              f"got {bit_depth!r}")
        changes["bit_depth"] = int(bit_depth)
    if fps is not None:
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and 0 < fps <= 10_000):
            raise ConfigError(f"fps: expected frames per second in (0, 10000], got {fps!r}")
        changes["fps"] = float(fps)
    if fwhm_nm is not None:
        lo, hi = FWHM_RANGE_NM
        if not (isinstance(fwhm_nm, (int, float)) and np.isfinite(fwhm_nm)
                and lo <= fwhm_nm <= hi):
            raise ConfigError(f"fwhm_nm: expected nm in [{lo:g}, {hi:g}], got {fwhm_nm!r}")
        changes["fwhm_nm"] = float(fwhm_nm)
    return replace(p, **changes) if changes else p
