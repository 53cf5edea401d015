"""Check a camera's band offsets (where each band samples the scene) before storing or using them.

A snapshot mosaic camera's bands sit at their filter positions in the super-pixel
(:attr:`drivers.camera.Camera.band_offsets`): per band a (dy, dx) offset in spectral pixels
from the pixel centre, each component strictly inside (-1, 1) (a position inside the pixel's
own neighbourhood; a whole pixel or more would be another pixel).  The recorder stores them in
``recording.json`` (``camera.band_offsets``, a list of ``[dy, dx]`` pairs) and the replay
camera reads them back, so a replayed snapshot recording is registered like the live camera.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import DataFormatError

__all__ = ["check_band_offsets"]

_ALLOWED = "(dy, dx) per band in spectral pixels, finite, each |value| < 1"


def _show(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_band_offsets(value: Any, source: str, bands: int | None = None) -> np.ndarray:
    """Validate band offsets and return them as a new float64 array.

    Parameters
    ----------
    value : array_like of shape (bands, 2)
        (dy, dx) per band in spectral pixels.
    source : str
        What the value is, for the message (``"band_offsets"``, or the file and key).
    bands : int, optional
        The band count the offsets must match (the cube's last axis); None: any count >= 1.

    Returns
    -------
    ndarray of shape (bands, 2), float64
        A copy, never a view of ``value``.

    Raises
    ------
    DataFormatError
        One line naming ``source``, the bad value or shape, and what is allowed: not numbers,
        a shape other than (bands, 2), NaN/inf, or a component with |value| >= 1.
    """
    want = f"shape ({bands}, 2)" if bands is not None else "shape (bands, 2)"
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):   # ragged nested lists
        raise DataFormatError(f"{source}: expected numbers of {want}, {_ALLOWED}; got "
                              f"{_show(value)}") from None
    if arr.dtype.kind not in "iuf":
        raise DataFormatError(f"{source}: expected numbers of {want}, {_ALLOWED}; got "
                              f"{_show(value)}")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1 or (
            bands is not None and arr.shape[0] != bands):
        raise DataFormatError(f"{source}: expected {want}, {_ALLOWED}; got shape "
                              f"{arr.shape}")
    arr = np.array(arr, dtype=np.float64)
    bad = ~np.isfinite(arr) | (np.abs(arr) >= 1.0)
    if bad.any():
        band, axis = (int(i) for i in np.argwhere(bad)[0])
        raise DataFormatError(
            f"{source}: expected {_ALLOWED}; got {float(arr[band, axis])!r} as "
            f"{'dy' if axis == 0 else 'dx'} of band {band}")
    return arr
