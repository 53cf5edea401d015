"""Validation of calibration record metadata (``record.yaml``) and references: every bad
value becomes a :class:`~edge.errors.CalibrationError` naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import CalibrationError

__all__ = ["meta_shape", "check_rho", "meta_number", "meta_wavelengths", "meta_checksum",
           "meta_count", "meta_temperature", "check_references", "META_CHECKSUM_KEY"]


def meta_shape(meta_path: Path, value: Any) -> tuple[int, int, int]:
    """``shape`` of record.yaml as three positive integers, or CalibrationError."""
    try:
        shape = tuple(int(n) for n in value)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CalibrationError(
            f"{meta_path}: shape: expected [rows, cols, bands] (positive integers), got {value!r}")
    return shape  # type: ignore[return-value]


def check_rho(rho_ref: Any, bands: int) -> np.ndarray:
    """Validate the white tile's reflectance: one value or one per band, each in (0, 1]."""
    try:
        rho = np.asarray(rho_ref, dtype=np.float64)
    except (TypeError, ValueError):
        rho = np.asarray(np.nan)
    if rho.ndim > 1 or (rho.ndim == 1 and rho.shape[0] != bands) \
            or not np.all(np.isfinite(rho)) or np.any(rho <= 0) or np.any(rho > 1):
        raise CalibrationError(
            f"rho_ref: expected the white tile's reflectance in (0, 1], one value or one per "
            f"band ({bands}), got {rho_ref!r}"[:300])
    return rho


def meta_number(meta_path: Path, meta: dict, key: str, kind: type = float, default: Any = None) -> Any:
    """``meta[key]`` as a number of ``kind``, or CalibrationError naming the key."""
    value = meta.get(key, default)
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(value)):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise CalibrationError(f"{meta_path}: {key}: expected "
                               f"{'an integer' if kind is int else 'a number'}, got {value!r}"
                               ) from None


def meta_wavelengths(meta_path: Path, value: Any) -> np.ndarray:
    try:
        wl = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{meta_path}: wavelengths: expected a list of numbers (nm), "
                               f"got {value!r}"[:300]) from None
    return wl.reshape(-1) if wl.ndim == 1 else wl


#: Key of record.yaml holding the sha256 of the rest of its metadata.
META_CHECKSUM_KEY = "record_sha256"
#: A record whose references leave more than this fraction of pixels unusable is refused.
MAX_UNUSABLE_FRACTION = 0.5


def meta_checksum(meta: dict) -> str:
    """sha256 of record.yaml's metadata (every key but :data:`META_CHECKSUM_KEY`), over
    canonical JSON: key order and YAML layout do not matter, any value change does."""
    import hashlib
    import json

    body = {k: v for k, v in meta.items() if k != META_CHECKSUM_KEY}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def meta_count(meta_path: Path, meta: dict, key: str) -> int:
    """``n_dark``/``n_white``: an integer >= 0 (0: not recorded)."""
    value = meta_number(meta_path, meta, key, int, 0)
    if value < 0:
        raise CalibrationError(f"{meta_path}: {key}: expected a number of frames >= 0, got "
                               f"{value}")
    return value


def meta_temperature(meta_path: Path, meta: dict) -> float | None:
    """``temperature_c``: null, or a number in [-60, 150] °C (a sensor's range)."""
    if meta.get("temperature_c") is None:
        return None
    value = meta_number(meta_path, meta, "temperature_c")
    if not -60.0 <= value <= 150.0:
        raise CalibrationError(f"{meta_path}: temperature_c: expected null or a number in "
                               f"[-60, 150] °C, got {value!r}")
    return value


def check_references(where: Path, arrays: dict[str, np.ndarray | None], bit_depth: int,
                     unusable: np.ndarray) -> None:
    """Refuse physically impossible references (issue: a dark of -1e6 or a NaN white was
    accepted and flagged every pixel silently).

    Parameters
    ----------
    where : Path
        The record (for messages).
    arrays : dict
        ``dark``, ``white``, optional ``white_dark`` (rows, cols, bands) in counts, and
        ``*_std`` arrays.
    bit_depth : int
        Sensor bit depth: means and noise must lie in [0, 2**bit_depth - 1].
    unusable : ndarray of shape (rows, cols), bool
        Pixels the record's masks flag as bad (hot, dead).

    Raises
    ------
    CalibrationError
        A reference of a non-real dtype, with NaN/Inf, outside the sensor's range, or one
        where white is not above dark on more than half of the pixels.
    """
    full = 2.0 ** bit_depth - 1.0
    for name, arr in arrays.items():
        if arr is None:
            continue
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise CalibrationError(f"{where}: {name}: dtype {arr.dtype} is not allowed; "
                                   f"expected real numbers (float32 counts)")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise CalibrationError(f"{where}: {name}: {int(bad.sum())} value(s) are NaN or "
                                   f"infinite; expected finite counts")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > full:
            raise CalibrationError(
                f"{where}: {name}: values {lo:g}..{hi:g} lie outside the {bit_depth}-bit "
                f"sensor's range [0, {full:g}] counts; the reference is not a real capture")
    dark = arrays["white_dark"] if arrays.get("white_dark") is not None else arrays["dark"]
    span = arrays["white"].astype(np.float64) - dark
    no_light = (span <= 0).any(axis=2)
    lost = no_light | unusable
    fraction = float(lost.mean())
    if fraction > MAX_UNUSABLE_FRACTION:
        raise CalibrationError(
            f"{where}: white is not above dark on {100 * float(no_light.mean()):.0f} % of "
            f"pixels ({100 * fraction:.0f} % unusable with the masks; at most "
            f"{100 * MAX_UNUSABLE_FRACTION:.0f} % allowed): the references cannot calibrate "
            f"(swapped, blank or equal dark and white?); capture them again")
