"""Index a recording on disk as a sequence of frames, whatever its file format.

A recording is one of

- a single file: TIVITA ``.dat``, ENVI ``.hdr`` (or its data file), NPZ frame, or ``.npy``
  stack (n, rows, cols, bands);
- a directory of NPZ frames (``*.npz``), ENVI frames (``*.hdr`` + data) or TIVITA cubes
  (``*.dat``; if the directory has none directly, ``*_SpecCube.dat`` below it, as in htc's
  ``subject/timestamp/`` layout), read in sorted file-name order.

Frames written by :class:`drivers.recorder.Recorder` in ENVI or TIVITA format have a JSON
sidecar ``<base>.json`` (``meta``: FrameMeta fields, ``wavelengths``: nm) and optionally
``<base>.truth.npz`` (ground truth arrays), where ``<base>`` is the file name without
``.hdr`` / ``_SpecCube.dat`` / ``.dat``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.formats.envi import read_envi
from drivers.formats.npyseq import read_npy_stack, read_npz_frame
from drivers.formats.tivita import read_tivita_cube
from edge.errors import DataFormatError

__all__ = ["FrameSequence", "LoadedFrame", "open_sequence", "sidecar_base", "MANIFEST"]

#: Recording manifest written by the recorder (format, software version, creation time).
MANIFEST = "recording.json"
_TIVITA_SUFFIX = "_SpecCube.dat"


@dataclass
class LoadedFrame:
    """One frame as stored: cube in its file dtype, optional wavelengths, meta and truth."""

    cube: np.ndarray
    wavelengths: np.ndarray | None
    meta: dict[str, Any] | None
    truth: dict[str, np.ndarray] | None
    source: str


def sidecar_base(path: Path) -> Path:
    """``frame_000001_SpecCube.dat`` / ``frame_000001.hdr`` -> ``frame_000001`` (same dir)."""
    name = path.name
    if name.endswith(_TIVITA_SUFFIX):
        return path.with_name(name[: -len(_TIVITA_SUFFIX)])
    return path.with_suffix("")


def _read_sidecars(path: Path) -> tuple[np.ndarray | None, dict | None, dict | None]:
    base = sidecar_base(path)
    wl = meta = truth = None
    js = base.with_name(base.name + ".json")
    if js.is_file():
        try:
            doc = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{js}: frame sidecar is not valid JSON: {exc}") from exc
        meta = doc.get("meta")
        if doc.get("wavelengths") is not None:
            wl = np.asarray(doc["wavelengths"], dtype=np.float64)
    tz = base.with_name(base.name + ".truth.npz")
    if tz.is_file():
        with np.load(tz, allow_pickle=False) as npz:
            truth = {k: npz[k] for k in npz.files}
    return wl, meta, truth


class FrameSequence:
    """Random access to the frames of a recording (see module docstring)."""

    def __init__(self, kind: str, items: list[Path], stack: np.ndarray | None = None,
                 stack_wavelengths: np.ndarray | None = None, root: Path | None = None) -> None:
        self.kind = kind
        self.items = items
        self._stack = stack
        self._stack_wl = stack_wavelengths
        self.root = root

    def __len__(self) -> int:
        return len(self._stack) if self._stack is not None else len(self.items)

    def load(self, index: int) -> LoadedFrame:
        """Read frame ``index`` (0-based) from disk."""
        if self._stack is not None:
            return LoadedFrame(np.array(self._stack[index]), self._stack_wl, None, None,
                               f"{self.items[0]}[{index}]")
        path = self.items[index]
        if self.kind == "npz":
            cube, wl, meta, truth = read_npz_frame(path)
            return LoadedFrame(cube, wl, meta, truth, str(path))
        cube, wl = read_tivita_cube(path) if self.kind == "tivita" else read_envi(path)
        side_wl, meta, truth = _read_sidecars(path)
        return LoadedFrame(cube, side_wl if side_wl is not None else wl, meta, truth, str(path))


def _scan_dir(root: Path) -> tuple[str, list[Path]]:
    hdrs = sorted(root.glob("*.hdr"))
    envi_data = {h.with_suffix(s) for h in hdrs for s in (".dat", ".img", ".raw")}
    found = {
        "npz": sorted(p for p in root.glob("*.npz") if not p.name.endswith(".truth.npz")),
        "envi": hdrs,
        "tivita": sorted(p for p in root.glob("*.dat") if p not in envi_data),
    }
    kinds = [k for k, v in found.items() if v]
    if len(kinds) > 1:
        raise DataFormatError(
            f"{root}: recording directory mixes formats ({', '.join(kinds)}); keep one per "
            "directory")
    if not kinds:
        nested = sorted(root.rglob("*" + _TIVITA_SUFFIX))
        if nested:
            return "tivita", nested
        raise DataFormatError(
            f"{root}: no frames found (expected *.npz, *.hdr or *.dat files, or "
            f"*{_TIVITA_SUFFIX} below it)")
    return kinds[0], found[kinds[0]]


def open_sequence(path: str | os.PathLike, wavelengths: Any = None) -> FrameSequence:
    """Index the recording at ``path`` without reading any cube (except ``.npy`` headers).

    Raises
    ------
    DataFormatError
        If ``path`` does not exist, holds no frames, mixes formats, or has an unknown suffix.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"path: no such file or directory: {str(path)!r}")
    if path.is_dir():
        kind, items = _scan_dir(path)
        return FrameSequence(kind, items, root=path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        stack, wl = read_npy_stack(path, wavelengths)
        return FrameSequence("npy", [path], stack=stack, stack_wavelengths=wl)
    if suffix == ".npz":
        return FrameSequence("npz", [path])
    if suffix == ".hdr" or path.with_suffix(".hdr").is_file() or \
            path.with_name(path.name + ".hdr").is_file():
        return FrameSequence("envi", [path])
    if suffix == ".dat":
        return FrameSequence("tivita", [path])
    raise DataFormatError(
        f"path: unknown recording type {str(path)!r}: expected a directory, .dat (TIVITA), "
        ".hdr (ENVI), .npz or .npy")
