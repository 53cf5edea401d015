"""TIVITA ``*_SpecCube.dat`` cube files.

Layout (FACTS.md, "TIVITA cube files", from htc ``htc/tivita/hsi.py``):

- header: 3 x int32 **big-endian** = stored shape ``(width, height, bands)``, normally
  ``(640, 480, 100)``;
- payload: float32 **big-endian**, C order over the stored shape (band fastest); a full cube is
  ``12 + 640*480*100*4 = 122,880,012`` bytes;
- to ``(rows, cols, bands)``: reshape to the stored shape, flip axis 1, swap axes 0 and 1, i.e.
  ``cube[r, c, b] = stored[c, height - 1 - r, b]``;
- values are reflectance already corrected by the camera (may exceed 1 or be <= 0, NaN/inf
  are possible and are *not* rejected here: :class:`drivers.replay.ReplayCamera` flags them);
- wavelengths are ``np.linspace(500, 1000, bands)`` (5.0505 nm spacing, not 5 nm).

Header shapes other than (640, 480, 100) are accepted when every dimension is >= 1, ``bands``
is at most :data:`TIVITA_MAX_BANDS` (501: one band per nm on the format's fixed 500-1000 nm
grid) and the file size is exactly ``12 + width*height*bands*4`` bytes (cropped or binned
exports, small test cubes); the wavelength grid then still spans 500-1000 nm over ``bands``
bands.  Both are checked from the header before anything is allocated.

The format has no checksum: a flipped bit in the payload cannot be detected.  The reader refuses
what cannot be reflectance at all (finite values beyond +-100, see
:mod:`drivers.formats.checks`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drivers.formats._io import atomic_open
from drivers.formats.checks import check_values
from edge.errors import DataFormatError

__all__ = ["TIVITA_SHAPE", "TIVITA_MAX_BANDS", "read_tivita_cube", "write_tivita_cube",
           "tivita_wavelengths", "read_tivita_header"]

#: ``(rows, cols, bands)`` of a full TIVITA cube.
TIVITA_SHAPE = (480, 640, 100)
_HEADER = np.dtype(">i4")
_PAYLOAD = np.dtype(">f4")
_HEADER_BYTES = 3 * _HEADER.itemsize
#: Most bands of a TIVITA cube: one per nm over its fixed 500-1000 nm grid.
TIVITA_MAX_BANDS = 501


def tivita_wavelengths(bands: int = 100) -> np.ndarray:
    """Band centres of a TIVITA cube, ndarray of shape (bands,), float64 nm (500-1000 nm)."""
    return np.linspace(500.0, 1000.0, bands)


def read_tivita_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """Validate the header and file size; return ``(rows, cols, bands)`` of the cube.

    Raises
    ------
    DataFormatError
        If the file is shorter than the header, a dimension is < 1, or the file size does not
        equal header + payload (truncated or oversized file); the message names the file and
        gives the expected and actual byte counts.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_BYTES)
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read TIVITA cube: {exc.strerror}") from exc
    if len(head) < _HEADER_BYTES:
        raise DataFormatError(
            f"{path}: not a TIVITA cube: expected a {_HEADER_BYTES}-byte header of 3 big-endian"
            f" int32, file has {size} bytes")
    width, height, bands = (int(v) for v in np.frombuffer(head, dtype=_HEADER))
    if min(width, height, bands) < 1:
        raise DataFormatError(
            f"{path}: bad TIVITA header: stored shape (width, height, bands) must be >= 1 each,"
            f" got ({width}, {height}, {bands}); expected (640, 480, 100)")
    if bands > TIVITA_MAX_BANDS:
        raise DataFormatError(
            f"{path}: bad TIVITA header: bands: expected 1-{TIVITA_MAX_BANDS} (one per nm over "
            f"the format's 500-1000 nm grid at most), got {bands}")
    expected = _HEADER_BYTES + width * height * bands * _PAYLOAD.itemsize
    if size != expected:
        what = "truncated" if size < expected else "oversized"
        raise DataFormatError(
            f"{path}: {what} TIVITA cube: header shape ({width}, {height}, {bands}) needs "
            f"{expected} bytes, file has {size} bytes")
    return height, width, bands


def read_tivita_cube(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a TIVITA ``.dat`` cube.

    Parameters
    ----------
    path : path-like
        The ``*_SpecCube.dat`` file.

    Returns
    -------
    cube : ndarray of shape (rows, cols, bands), float32, C-contiguous, native byte order
        Reflectance, normally (480, 640, 100).
    wavelengths : ndarray of shape (bands,), float64
        ``np.linspace(500, 1000, bands)`` nm.

    Raises
    ------
    DataFormatError
        Bad header, truncated or oversized file (see :func:`read_tivita_header`), or finite
        values that cannot be reflectance (:func:`drivers.formats.checks.check_values`).
    """
    rows, cols, bands = read_tivita_header(path)
    stored = np.fromfile(path, dtype=_PAYLOAD, offset=_HEADER_BYTES)
    stored = stored.reshape(cols, rows, bands)
    # Stored (width, height, bands) with the image upside down: flip height, then transpose.
    cube = np.flip(stored, axis=1).swapaxes(0, 1)
    cube = np.ascontiguousarray(cube, dtype=np.float32)
    check_values(cube, str(path))
    return cube, tivita_wavelengths(bands)


def write_tivita_cube(path: str | os.PathLike, cube: np.ndarray) -> None:
    """Write ``cube`` as a TIVITA ``.dat`` file, the exact inverse of :func:`read_tivita_cube`.

    Parameters
    ----------
    path : path-like
        Output file; written atomically (temporary file + rename).
    cube : ndarray of shape (rows, cols, bands), float32
        Reflectance; other dtypes are rejected because the format stores float32 only and a
        silent conversion would not round-trip.

    Raises
    ------
    DataFormatError
        If ``cube`` is not a 3-D float32 array.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3 or cube.dtype != np.float32:
        raise DataFormatError(
            f"cube: TIVITA files hold float32 (rows, cols, bands) cubes, got {cube.dtype} "
            f"shape {cube.shape}")
    rows, cols, bands = cube.shape
    # Inverse of the reader: stored[c, rows - 1 - r, b] = cube[r, c, b].
    stored = np.flip(cube.swapaxes(0, 1), axis=1).astype(_PAYLOAD, order="C")
    header = np.array([cols, rows, bands], dtype=_HEADER)
    with atomic_open(path) as fh:
        fh.write(header.tobytes())
        fh.write(stored.tobytes())
