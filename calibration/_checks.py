"""Validation of calibration record metadata (``record.yaml``) and references: every bad
value becomes a :class:`~edge.errors.CalibrationError` naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import CalibrationError

__all__ = ["meta_shape", "check_rho", "meta_number", "meta_wavelengths"]


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
