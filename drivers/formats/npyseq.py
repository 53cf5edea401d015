"""NumPy frame files: NPZ frames (one per file) and ``.npy`` stacks.

NPZ frame (``frame_000000.npz``), written by :func:`write_npz_frame`:

- ``cube``: (rows, cols, bands), uint16 raw counts or float32 reflectance;
- ``wavelengths``: (bands,), float64 nm;
- ``meta`` (optional): 0-d unicode array holding a JSON object of
  :class:`edge.core.frame.FrameMeta` fields;
- ``truth_<name>`` (optional): ground-truth arrays of simulated frames.

NPY stack: one ``.npy`` of shape (n, rows, cols, bands) (or (rows, cols, bands) for a single
frame) plus wavelengths from a sidecar next to it: ``<stem>.wavelengths.npy``,
``<stem>_wavelengths.npy``, ``<stem>.wavelengths.txt``, ``wavelengths.npy`` or
``wavelengths.txt`` (one value per band, nm), unless given explicitly.  The stack is memory
mapped so long recordings do not have to fit in memory.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from drivers.formats._io import atomic_open
from drivers.formats.checks import check_band_count, check_cube, check_meta
from edge.errors import DataFormatError

__all__ = ["read_npz_frame", "write_npz_frame", "read_npy_stack", "find_wavelength_sidecar",
           "read_npz_arrays", "TRUTH_PREFIX"]

TRUTH_PREFIX = "truth_"


def write_npz_frame(path: str | os.PathLike, cube: np.ndarray, wavelengths: Any,
                    meta: Mapping[str, Any] | None = None,
                    truth: Mapping[str, np.ndarray] | None = None) -> None:
    """Write one NPZ frame atomically (uncompressed: replay speed matters more than size).

    Parameters
    ----------
    cube : ndarray of shape (rows, cols, bands)
    wavelengths : array_like of shape (bands,), nm
    meta : mapping, optional
        JSON-serialisable metadata (FrameMeta fields).
    truth : mapping of str to ndarray, optional
        Stored as ``truth_<name>``.
    """
    arrays: dict[str, np.ndarray] = {"cube": np.asarray(cube),
                                     "wavelengths": np.asarray(wavelengths, dtype=np.float64)}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(dict(meta), sort_keys=True))
    for name, value in (truth or {}).items():
        arrays[TRUTH_PREFIX + name] = np.asarray(value)
    with atomic_open(path) as fh:
        np.savez(fh, **arrays)


def read_npz_frame(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None,
                                                     dict[str, Any] | None,
                                                     dict[str, np.ndarray] | None]:
    """Read one NPZ frame.

    Returns
    -------
    cube : ndarray of shape (rows, cols, bands)
    wavelengths : ndarray of shape (bands,), float64, or None if absent
    meta : dict or None
    truth : dict of str to ndarray, or None if the file has no ``truth_*`` arrays

    Raises
    ------
    DataFormatError
        If the file is not a readable NPZ (zip), holds object arrays, has no ``cube`` array of
        shape (rows, cols, bands), or ``meta`` is not a JSON object of FrameMeta fields with
        the right types.
    """
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        # numpy would try to unpickle it and answer with advice to allow pickles
        raise DataFormatError(f"{path}: cannot read NPZ frame: not an NPZ (zip) file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "cube" not in keys:
                raise DataFormatError(
                    f"{path}: NPZ frame has no 'cube' array (found {', '.join(keys) or 'none'})")
            cube = npz["cube"]
            wl = npz["wavelengths"].astype(np.float64) if "wavelengths" in keys else None
            meta_text = str(npz["meta"]) if "meta" in keys else None
            truth = {k[len(TRUTH_PREFIX):]: npz[k] for k in keys if k.startswith(TRUTH_PREFIX)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read NPZ frame: {_why(exc)}") from exc
    check_cube(cube, f"{path}: NPZ key 'cube'")
    meta = None
    if meta_text is not None:
        try:
            meta = json.loads(meta_text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: NPZ key 'meta': expected a JSON object: {exc}") from exc
        check_meta(meta, f"{path}: NPZ key 'meta'")
    return cube, wl, meta, (truth or None)


def _why(exc: BaseException) -> str:
    """numpy's reason, without its advice to load pickles (never safe on foreign files)."""
    text = str(exc)
    if "allow_pickle" in text or "pickle" in text.lower():
        return "holds object (pickled) arrays, which hsi-edge never loads"
    return text


def read_npz_arrays(path: str | os.PathLike, what: str = "NPZ file") -> dict[str, np.ndarray]:
    """All arrays of an NPZ file (e.g. ``<base>.truth.npz``), loaded without pickles.

    Raises
    ------
    DataFormatError
        Not a zip file, corrupt, or holding object arrays; names the file.
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            raise DataFormatError(f"{path}: cannot read {what}: not an NPZ (zip) file")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataFormatError(f"{path}: cannot read {what}: {_why(exc)}") from exc


def find_wavelength_sidecar(path: str | os.PathLike) -> Path | None:
    """Return the wavelength sidecar of a ``.npy`` stack (see module docstring), or None."""
    path = Path(path)
    stem = path.with_suffix("")
    for candidate in (stem.with_name(stem.name + ".wavelengths.npy"),
                      stem.with_name(stem.name + "_wavelengths.npy"),
                      stem.with_name(stem.name + ".wavelengths.txt"),
                      path.with_name("wavelengths.npy"), path.with_name("wavelengths.txt")):
        if candidate.is_file():
            return candidate
    return None


def read_npy_stack(path: str | os.PathLike, wavelengths: Any = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Open a ``.npy`` stack (memory mapped) and its wavelengths.

    Returns
    -------
    stack : ndarray of shape (n, rows, cols, bands), memory mapped, read-only
    wavelengths : ndarray of shape (bands,), float64 nm

    Raises
    ------
    DataFormatError
        Unreadable file, wrong number of dimensions, no frames, too many bands, or no
        wavelengths (neither given nor in a sidecar).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":
            raise DataFormatError(f"{path}: cannot read NPY stack: not an NPY file")
        stack = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot read NPY stack: {_why(exc)}") from exc
    if stack.ndim == 3:
        stack = stack[np.newaxis]
    if stack.ndim != 4:
        raise DataFormatError(
            f"{path}: NPY stack: expected shape (n, rows, cols, bands) or (rows, cols, bands), "
            f"got {stack.shape}")
    if stack.shape[0] == 0 or min(stack.shape[1:]) < 1:
        raise DataFormatError(
            f"{path}: NPY stack: expected at least one frame with every dimension >= 1, got "
            f"shape {stack.shape}")
    check_band_count(stack.shape[3], f"{path}: NPY stack", "bands")
    if wavelengths is None:
        sidecar = find_wavelength_sidecar(path)
        if sidecar is None:
            raise DataFormatError(
                f"{path}: no wavelengths: put them in {path.with_suffix('').name}.wavelengths.npy "
                "(or .txt; nm, one per band, ascending) next to the stack")
        try:
            wavelengths = (np.loadtxt(sidecar, dtype=np.float64, ndmin=1)
                           if sidecar.suffix == ".txt" else np.load(sidecar, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{sidecar}: cannot read wavelengths: {exc}") from exc
    return stack, np.asarray(wavelengths, dtype=np.float64)
