"""Checks every reader applies before trusting a file: band count, cube shape, values, metadata.

None of the formats carries a checksum (TIVITA ``.dat``, ENVI, NPY; NPZ has zip CRCs but
``numpy.load`` does not verify them on every read), so a flipped bit in a payload cannot be
detected.  What can be checked is that the numbers are possible at all:

- **Band count** at most :data:`MAX_BANDS` = 2301: one band per nanometre over the
  200-2500 nm range that :func:`edge.core.frame.validate_wavelengths` accepts.  The cameras
  hsi-edge knows have 16, 25 and 100 bands, the compiled kernels take at most 256, and no
  imaging spectrometer samples finer than 1 nm over that range.  The bound is checked from the
  header, before anything is allocated (a 240 KB TIVITA file claiming 60,000 bands once made a
  run ask for 26.8 GiB).
- **Raw counts** (integer cubes) at most ``2**bit_depth - 1`` of the recorded bit depth.
- **Reflectance** (float cubes) within +-:data:`REFLECTANCE_LIMIT` = 100 where finite.
  Reflectance is ``(raw - dark) / (white - dark)``; a sensor saturates at full scale, so it
  cannot exceed full scale over the white's signal, which is 100 even for a white reference
  that fills only 1 % of the sensor's range (and symmetrically for a dark above the signal).
  A cube of 3e38 is corruption, not tissue.  NaN/inf are passed on (replay flags them).
- **Frame metadata** (NPZ ``meta``, JSON sidecars): each :class:`~edge.core.frame.FrameMeta`
  field has the type it needs.

Every failure is one :class:`~edge.errors.DataFormatError` naming the file and the key.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge.errors import DataFormatError

__all__ = ["MAX_BANDS", "REFLECTANCE_LIMIT", "check_band_count", "check_cube", "check_values",
           "check_meta"]

#: Most bands a cube may have: one per nm over 200-2500 nm (see module docstring).
MAX_BANDS = 2301
#: Largest plausible |reflectance| (see module docstring).
REFLECTANCE_LIMIT = 100.0


def check_band_count(bands: int, source: str, key: str = "bands") -> int:
    """Refuse a band count outside 1..MAX_BANDS (before any allocation)."""
    if not 1 <= int(bands) <= MAX_BANDS:
        raise DataFormatError(
            f"{source}: {key}: expected 1-{MAX_BANDS} bands (one per nm over 200-2500 nm at "
            f"most), got {bands}")
    return int(bands)


def check_cube(cube: np.ndarray, source: str) -> np.ndarray:
    """A cube must be (rows, cols, bands) with every dimension >= 1 and bands <= MAX_BANDS."""
    if not isinstance(cube, np.ndarray) or cube.ndim != 3:
        shape = getattr(cube, "shape", type(cube).__name__)
        raise DataFormatError(f"{source}: cube: expected shape (rows, cols, bands), got {shape}")
    if min(cube.shape) < 1:
        raise DataFormatError(f"{source}: cube: expected every dimension >= 1, got {cube.shape}")
    check_band_count(cube.shape[2], source, "cube bands")
    return cube


def check_values(cube: np.ndarray, source: str, bit_depth: int | None = None) -> None:
    """Refuse values no sensor can deliver (see module docstring).

    Parameters
    ----------
    cube : ndarray of shape (rows, cols, bands)
        Integer raw counts or float reflectance.
    bit_depth : int, optional
        Sensor bit depth of integer counts; None checks only the dtype's own range.
    """
    if cube.size == 0:
        return
    if cube.dtype.kind in "ui":
        lo, hi = int(cube.min()), int(cube.max())
        top = 2 ** int(bit_depth) - 1 if bit_depth is not None else None
        if lo < 0 or (top is not None and hi > top):
            raise DataFormatError(
                f"{source}: raw counts {lo}..{hi} outside 0..{top if top is not None else 'max'}"
                f" of a {bit_depth}-bit sensor (bit_depth)")
        return
    if cube.dtype.kind != "f":
        return
    lo, hi = float(cube.min()), float(cube.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        finite = cube[np.isfinite(cube)]
        if finite.size == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
    if lo < -REFLECTANCE_LIMIT or hi > REFLECTANCE_LIMIT:
        raise DataFormatError(
            f"{source}: reflectance {lo:.4g}..{hi:.4g} is outside what a camera can deliver "
            f"(|R| <= {REFLECTANCE_LIMIT:g}); the file is corrupt or not reflectance")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_meta(meta: Any, source: str) -> dict[str, Any]:
    """Check the types of stored frame metadata; returns it as a dict.

    Raises
    ------
    DataFormatError
        ``meta`` is not a mapping, or a FrameMeta field has the wrong type (names the key, the
        value and what is allowed).
    """
    if not isinstance(meta, dict):
        raise DataFormatError(f"{source}: meta: expected a JSON object, got "
                              f"{type(meta).__name__} {str(meta)[:60]}")

    def bad(key: str, allowed: str) -> DataFormatError:
        return DataFormatError(f"{source}: meta key {key!r}: expected {allowed}, got "
                               f"{meta[key]!r}"[:300])

    for key in ("frame_id", "timestamp_ns", "bit_depth"):
        if key in meta and not (isinstance(meta[key], (int, np.integer))
                                and not isinstance(meta[key], bool)):
            raise bad(key, "an integer")
    for key in ("exposure_us", "gain"):
        if key in meta and not (_number(meta[key]) and math.isfinite(meta[key])
                                and meta[key] > 0):
            raise bad(key, "a finite number > 0")
    if "bit_depth" in meta and not 1 <= meta["bit_depth"] <= 16:
        raise bad("bit_depth", "an integer 1-16")
    if "frame_id" in meta and meta["frame_id"] < 0:
        raise bad("frame_id", "an integer >= 0")
    if "illumination" in meta and not (
            isinstance(meta["illumination"], dict)
            and all(_number(v) for v in meta["illumination"].values())):
        raise bad("illumination", "an object of channel name -> number")
    if "serials" in meta and not (
            isinstance(meta["serials"], dict)
            and all(isinstance(v, str) for v in meta["serials"].values())):
        raise bad("serials", "an object of device -> serial string")
    return meta
