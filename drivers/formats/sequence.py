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
``.hdr`` / ``_SpecCube.dat`` / ``.dat``.  Sidecar wavelengths replace the implied TIVITA grid,
but must equal an ENVI header's when both have them (a header that disagrees is refused, never
silently overridden).

A directory made by the recorder has a manifest ``recording.json`` (:func:`read_manifest`):
``complete`` is written ``true`` with the frame count ``frames`` when the recording was closed
normally, so :func:`open_sequence` refuses a recording that was interrupted or lost frames
(one line: frames found vs expected) and warns about one made before the mark existed.  The
manifest's ``camera`` object holds what replay needs to process the frames as recorded:
``preset``, ``fwhm_nm``, ``bit_depth``, ``exposure_us``, ``gain``, ``serial`` and, for a mosaic
camera, ``band_offsets`` (checked by :class:`drivers.replay.ReplayCamera`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.formats.checks import check_cube, check_meta
from drivers.formats.envi import read_envi
from drivers.formats.npyseq import read_npy_stack, read_npz_arrays, read_npz_frame
from drivers.formats.tivita import read_tivita_cube
from edge.errors import DataFormatError

__all__ = ["FrameSequence", "LoadedFrame", "open_sequence", "sidecar_base", "MANIFEST",
           "read_manifest"]

log = logging.getLogger(__name__)

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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{js}: frame sidecar is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise DataFormatError(f"{js}: frame sidecar: expected a JSON object, got "
                                  f"{type(doc).__name__}")
        if doc.get("meta") is not None:
            meta = check_meta(doc["meta"], f"{js}")
        if doc.get("wavelengths") is not None:
            try:
                wl = np.asarray(doc["wavelengths"], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataFormatError(f"{js}: key 'wavelengths': expected numbers in nm, got "
                                      f"{str(doc['wavelengths'])[:60]}") from None
    tz = base.with_name(base.name + ".truth.npz")
    if tz.is_file():
        truth = read_npz_arrays(tz, "ground truth")
    return wl, meta, truth


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The recorder's manifest ``root/recording.json`` with its types checked, or None.

    Raises
    ------
    DataFormatError
        Unreadable JSON or a key of the wrong type (names the file and the key).
    """
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: recording manifest is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(doc).__name__}")

    def bad(key: str, value: Any, allowed: str) -> DataFormatError:
        return DataFormatError(f"{path}: key {key!r}: expected {allowed}, got {value!r}"[:300])

    for key in ("frames", "frames_expected"):
        v = doc.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise bad(key, v, "an integer >= 0")
    if "complete" in doc and not isinstance(doc["complete"], bool):
        raise bad("complete", doc["complete"], "true or false")
    cam = doc.get("camera")
    if cam is None:
        doc["camera"] = {}
    elif not isinstance(cam, dict):
        raise bad("camera", cam, "an object")
    else:
        if cam.get("preset") is not None and not isinstance(cam["preset"], str):
            raise bad("camera.preset", cam["preset"], "a preset name")
        fw = cam.get("fwhm_nm")
        if fw is not None and not (isinstance(fw, (int, float)) and not isinstance(fw, bool)
                                   and math.isfinite(fw) and 0 < fw < 500):
            raise bad("camera.fwhm_nm", fw, "a band width in nm (0-500) or null")
    return doc


def _check_complete(root: Path, manifest: dict[str, Any], found: int) -> None:
    """Refuse an interrupted or truncated recording; warn when it predates the mark."""
    path = root / MANIFEST
    if "complete" not in manifest:
        log.warning("%s: no completion mark (recorded before hsi-edge wrote one): cannot tell "
                    "whether every frame was written; replaying the %d frame(s) found",
                    path, found)
        return
    if not manifest["complete"]:
        expected = manifest.get("frames_expected")
        of = f"{found} of {expected}" if expected is not None else f"{found}"
        raise DataFormatError(
            f"{path}: incomplete recording: found {of} frame(s); the recording was interrupted "
            "before it was closed")
    expected = manifest.get("frames")
    if expected is not None and found != expected:
        raise DataFormatError(
            f"{path}: incomplete recording: found {found} of {expected} frame(s) "
            f"({'missing' if found < expected else 'extra'} frame files)")


class FrameSequence:
    """Random access to the frames of a recording (see module docstring)."""

    def __init__(self, kind: str, items: list[Path], stack: np.ndarray | None = None,
                 stack_wavelengths: np.ndarray | None = None, root: Path | None = None,
                 manifest: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.items = items
        self._stack = stack
        self._stack_wl = stack_wavelengths
        self.root = root
        #: The recorder's manifest (:func:`read_manifest`), or None
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self._stack) if self._stack is not None else len(self.items)

    def load(self, index: int) -> LoadedFrame:
        """Read frame ``index`` (0-based) from disk.

        Raises
        ------
        DataFormatError
            Unreadable files, a cube that is not (rows, cols, bands), wrong metadata types, or
            sidecar wavelengths that disagree with the ENVI header's.
        """
        if self._stack is not None:
            return LoadedFrame(np.array(self._stack[index]), self._stack_wl, None, None,
                               f"{self.items[0]}[{index}]")
        path = self.items[index]
        if self.kind == "npz":
            cube, wl, meta, truth = read_npz_frame(path)
            return LoadedFrame(cube, wl, meta, truth, str(path))
        cube, wl = read_tivita_cube(path) if self.kind == "tivita" else read_envi(path)
        check_cube(cube, str(path))
        side_wl, meta, truth = _read_sidecars(path)
        # A TIVITA file has no wavelengths of its own (the format implies 500-1000 nm): its
        # sidecar's win.  An ENVI header states them: a sidecar may only repeat them.
        if self.kind == "envi" and side_wl is not None and wl is not None and \
                not np.array_equal(side_wl, wl):
            raise DataFormatError(
                f"{sidecar_base(path)}.json: key 'wavelengths' disagrees with the wavelengths of "
                f"{path.name} ({_span(side_wl)} vs {_span(wl)}); fix or remove one of them")
        return LoadedFrame(cube, side_wl if side_wl is not None else wl, meta, truth, str(path))


def _span(wl: np.ndarray) -> str:
    return f"{wl.size} bands {wl[0]:g}..{wl[-1]:g} nm" if wl.size else "no bands"


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
        If ``path`` does not exist, holds no frames, mixes formats, has an unknown suffix, or
        is a recording whose manifest says it is incomplete.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"path: no such file or directory: {str(path)!r}")
    if path.is_dir():
        manifest = read_manifest(path)
        try:
            kind, items = _scan_dir(path)
        except DataFormatError:
            if manifest is not None and manifest.get("complete") is False:
                _check_complete(path, manifest, 0)   # says "interrupted", not "no frames"
            raise
        if manifest is not None:
            _check_complete(path, manifest, len(items))
        return FrameSequence(kind, items, root=path, manifest=manifest)
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
