"""A tensor that lives in device (GPU) memory: where the data is, not the data.

The chain's output -- the network input -- is either a host ``numpy.ndarray`` or a
:class:`DeviceTensor`: a device address with the shape, dtype and stream that go with it, as
Polygraphy's runners take a ``DeviceView`` beside host arrays.  A GPU backend asked for device
output returns one (the packed input stays where the kernel wrote it), and a runtime that
declares ``accepts_device_input`` (:class:`edge.inference.base.Runtime`) reads it there; no
runtime reaches into a backend for pointers or streams.

No CUDA library is imported here: a DeviceTensor is a description, made and checked anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import DataFormatError

__all__ = ["DeviceTensor", "describe"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class DeviceTensor:
    """A C-contiguous tensor in device memory.

    Parameters
    ----------
    ptr : int
        Device address of the first element (``CUdeviceptr`` as int), > 0.
    shape : tuple of int
        Dimensions, each >= 0 (e.g. ``(1, channels, rows, cols)`` for a packed NCHW input).
    dtype : numpy dtype or str
        Element type (``float32``, ``float16``, ...).
    stream : int
        The ``cudaStream_t`` handle (as int) the data is written on; a consumer orders its work
        after that stream (runs on it, or waits for it).  0: the legacy default stream.

    Raises
    ------
    DataFormatError
        A field that cannot describe device memory (names the field, the value and what is
        allowed).
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    stream: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.ptr) or self.ptr <= 0:
            raise DataFormatError(f"DeviceTensor.ptr: expected a device address > 0 (int), got "
                                  f"{self.ptr!r}")
        try:
            shape = tuple(self.shape)
        except TypeError:
            shape = None
        if shape is None or not all(_is_int(d) and d >= 0 for d in shape):
            raise DataFormatError(f"DeviceTensor.shape: expected a tuple of integers >= 0, got "
                                  f"{self.shape!r}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise DataFormatError(f"DeviceTensor.dtype: expected a numpy dtype such as "
                                  f"'float32', got {self.dtype!r}") from None
        if dtype.hasobject or dtype.itemsize == 0:
            raise DataFormatError(f"DeviceTensor.dtype: expected a fixed-size numeric dtype, "
                                  f"got {dtype}")
        if not _is_int(self.stream) or self.stream < 0:
            raise DataFormatError(f"DeviceTensor.stream: expected a stream handle >= 0 (int; "
                                  f"0 = default stream), got {self.stream!r}")
        # Normalised forms (frozen: set through object.__setattr__).
        object.__setattr__(self, "ptr", int(self.ptr))
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "stream", int(self.stream))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        # Device memory must never become a host array by accident (np.asarray would make a
        # 0-d object array and the error would appear far away).
        raise DataFormatError(f"DeviceTensor: {describe(self)} lives in device memory; copy it "
                              f"to the host explicitly or pass it to a runtime that accepts "
                              f"device input")


def describe(x: Any) -> str:
    """One-line description of a tensor for messages: where it lives, shape and dtype."""
    if isinstance(x, DeviceTensor):
        return f"device tensor {x.dtype} {x.shape} at 0x{x.ptr:x}"
    if isinstance(x, np.ndarray):
        return f"host array {x.dtype} {x.shape}"
    return f"{type(x).__name__} (neither a numpy array nor a DeviceTensor)"
