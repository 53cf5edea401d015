"""The ``Frame``: one spectral cube with its wavelengths and acquisition metadata.

Conventions (DESIGN.md, "Data conventions"): the cube has shape ``(rows, cols, bands)`` with
the band axis last; raw sensor data is ``uint16`` (or ``float32`` for already-calibrated
recordings); wavelengths are float64 nm, strictly ascending.  Derived products (reflectance,
StO2 map, network input, logits, overlay, ...) are attached to the frame by the pipeline stages
in ``Frame.products``; simulated frames carry their ground truth in ``Frame.truth``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edge.errors import DataFormatError

__all__ = ["Frame", "FrameMeta", "validate_wavelengths", "CUBE_DTYPES"]

#: Cube dtypes a Frame accepts: raw counts (uint16) and calibrated or simulated data (float32).
CUBE_DTYPES = (np.dtype(np.uint16), np.dtype(np.float32))


def validate_wavelengths(wavelengths_nm: Any, *, bands: int | None = None,
                         name: str = "wavelengths") -> np.ndarray:
    """Check and return a wavelength grid as float64 nm.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (bands,)
        Band centres in nm; finite, strictly ascending, within 200-2500 nm.
    bands : int, optional
        Expected number of bands.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    ndarray of shape (bands,), float64

    Raises
    ------
    DataFormatError
        If the grid is not 1-D, has the wrong length, is not finite, not strictly ascending or
        out of range.
    """
    try:
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{name}: expected numbers in nm, got {wavelengths_nm!r}") from exc
    if wl.ndim != 1 or wl.size == 0:
        raise DataFormatError(f"{name}: expected a non-empty 1-D array, got shape {wl.shape}")
    if bands is not None and wl.size != bands:
        raise DataFormatError(f"{name}: expected {bands} values (one per band), got {wl.size}")
    if not np.all(np.isfinite(wl)):
        raise DataFormatError(f"{name}: values must be finite, got NaN or inf")
    if wl.size > 1 and not np.all(np.diff(wl) > 0):
        i = int(np.argmin(np.diff(wl) > 0))
        raise DataFormatError(
            f"{name}: must be strictly ascending, got {wl[i]:g} nm followed by {wl[i + 1]:g} nm"
            f" at index {i}")
    if wl[0] < 200.0 or wl[-1] > 2500.0:
        raise DataFormatError(
            f"{name}: must lie within 200-2500 nm, got {wl[0]:g}-{wl[-1]:g} nm")
    return wl


@dataclass(frozen=True)
class FrameMeta:
    """Acquisition metadata of one frame.

    Attributes
    ----------
    frame_id : int
        Sequence number from the camera (a gap means a missed trigger or a dropped frame).
    timestamp_ns : int
        ``time.monotonic_ns()`` at the trigger (used for end-to-end latency).
    exposure_us : float
        Exposure time in microseconds.
    gain : float
        Analogue gain (linear, >= 1).
    illumination : mapping of str to float
        Light state at the exposure: channel name -> intensity fraction (0 = off).
    serials : mapping of str to str
        Device serial numbers, e.g. ``{"camera": "SIM-0001", "light": "..."}``.
    bit_depth : int
        Sensor ADC bit depth for raw frames (counts saturate at ``2**bit_depth - 1``).
    """

    frame_id: int = 0
    timestamp_ns: int = field(default_factory=time.monotonic_ns)
    exposure_us: float = 10_000.0
    gain: float = 1.0
    illumination: Mapping[str, float] = field(default_factory=dict)
    serials: Mapping[str, str] = field(default_factory=dict)
    bit_depth: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.frame_id, (int, np.integer)) or self.frame_id < 0:
            raise DataFormatError(f"frame_id: expected an integer >= 0, got {self.frame_id!r}")
        if not (np.isfinite(self.exposure_us) and self.exposure_us > 0):
            raise DataFormatError(f"exposure_us: expected a finite value > 0, got {self.exposure_us!r}")
        if not (np.isfinite(self.gain) and self.gain > 0):
            raise DataFormatError(f"gain: expected a finite value > 0, got {self.gain!r}")
        if not 1 <= int(self.bit_depth) <= 16:
            raise DataFormatError(f"bit_depth: expected 1-16, got {self.bit_depth!r}")


@dataclass
class Frame:
    """One spectral cube flowing through the pipeline.

    Attributes
    ----------
    cube : ndarray of shape (rows, cols, bands), uint16 or float32
        Raw counts (uint16) or calibrated/simulated reflectance (float32).
    wavelengths : ndarray of shape (bands,), float64
        Band centres in nm, strictly ascending.
    meta : FrameMeta
        Acquisition metadata.
    products : dict of str to ndarray
        Results attached by stages (``reflectance``, ``sto2``, ``valid``, ``input``, ...).
    truth : dict of str to ndarray, optional
        Ground truth of simulated frames (``classes``, ``sto2``, ``blood_volume``, ...).
    flags : set of str
        Frame-level flags (e.g. ``"nan_in_output"``); a flagged frame is shown as suspect.
    """

    cube: np.ndarray
    wavelengths: np.ndarray
    meta: FrameMeta = field(default_factory=FrameMeta)
    products: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, np.ndarray] | None = None
    flags: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        cube = self.cube
        if not isinstance(cube, np.ndarray):
            raise DataFormatError(f"cube: expected a numpy array, got {type(cube).__name__}")
        if cube.ndim != 3:
            raise DataFormatError(
                f"cube: expected shape (rows, cols, bands), got {cube.ndim}-D shape {cube.shape}")
        if min(cube.shape) < 1:
            raise DataFormatError(f"cube: every dimension must be >= 1, got shape {cube.shape}")
        if cube.dtype not in CUBE_DTYPES:
            raise DataFormatError(
                f"cube: dtype must be one of uint16, float32; got {cube.dtype}")
        self.wavelengths = validate_wavelengths(self.wavelengths, bands=cube.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(rows, cols, bands)``."""
        return tuple(self.cube.shape)  # type: ignore[return-value]

    @property
    def is_raw(self) -> bool:
        """True for uint16 sensor counts, False for float32 (calibrated) data."""
        return self.cube.dtype == np.uint16

    def replace(self, **changes: Any) -> "Frame":
        """Return a copy with some fields replaced (products, truth and flags are shallow-copied)."""
        base = dict(products=dict(self.products), flags=set(self.flags),
                    truth=None if self.truth is None else dict(self.truth))
        base.update(changes)
        return dataclasses.replace(self, **base)
