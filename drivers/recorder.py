"""``Recorder``: write a sequence of Frames that :class:`drivers.replay.ReplayCamera` reads back.

Layout of a recording directory::

    recording.json                  manifest: format, software version, creation time
    frame_000000.npz                format "npz": cube, wavelengths, meta (JSON), truth_<name>
    frame_000000.hdr/.img + .json   format "envi": ENVI cube + sidecar (meta, wavelengths)
    frame_000000_SpecCube.dat + .json   format "tivita" (float32 cubes only)
    frame_000000.truth.npz          ground truth for "envi"/"tivita" frames that have any

Every file is written to a temporary name and renamed into place (``os.replace``), sidecars
before the cube file (and ENVI data before its header), so an interrupted recording never leaves a corrupt frame: the last
frame is either complete or absent.  A directory that already holds a recording is never
overwritten unless ``overwrite=True`` (then only the recording's own files are removed).
The round trip is bit-exact: cube, wavelengths, truth and every FrameMeta field come back
unchanged (``timestamp_ns`` with ``ReplayCamera(..., original_timestamps=True)``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from drivers.formats._io import atomic_open
from drivers.formats.envi import write_envi
from drivers.formats.npyseq import write_npz_frame
from drivers.formats.sequence import MANIFEST
from drivers.formats.tivita import write_tivita_cube
from edge import __version__
from edge.core.frame import Frame
from edge.errors import DataFormatError

__all__ = ["Recorder", "RECORD_FORMATS", "meta_to_dict"]

log = logging.getLogger(__name__)

RECORD_FORMATS = ("npz", "envi", "tivita")
# Files that belong to a recording (removed by overwrite=True, detected as "existing").
_OWN_FILE = re.compile(
    r"^(recording\.json|frame_\d{6}(\.npz|\.hdr|\.img|\.json|\.truth\.npz|_SpecCube\.dat))$")


def meta_to_dict(meta: Any) -> dict[str, Any]:
    """FrameMeta -> JSON-serialisable dict (mappings become dicts, numpy scalars Python)."""
    out = {}
    for f in dataclasses.fields(meta):
        value = getattr(meta, f.name)
        if isinstance(value, np.generic):
            value = value.item()
        elif f.name in ("illumination", "serials"):
            value = {str(k): (v.item() if isinstance(v, np.generic) else v)
                     for k, v in dict(value).items()}
        out[f.name] = value
    return out


class Recorder:
    """Write frames into ``out_dir``, one file (set) per frame.

    Parameters
    ----------
    out_dir : path-like
        Created if missing.
    format : {"npz", "envi", "tivita"}
        ``"tivita"`` stores float32 cubes only (the format holds reflectance).
    overwrite : bool
        Replace an existing recording in ``out_dir`` (default: refuse).
    envi_interleave : {"bsq", "bil", "bip"}
        Interleave of ENVI frames.
    fwhm_nm : float, optional
        Band width of the camera (``camera.fwhm_nm``); written as the ENVI ``fwhm`` header key
        (the same value for every band) so a replay gets it back.  Other formats ignore it.

    Raises
    ------
    DataFormatError
        Unknown format, ``fwhm_nm`` not a finite number > 0, or ``out_dir`` already holds a
        recording and ``overwrite`` is False.
    """

    def __init__(self, out_dir: str | os.PathLike, format: str = "npz", *,  # noqa: A002
                 overwrite: bool = False, envi_interleave: str = "bsq",
                 fwhm_nm: float | None = None) -> None:
        if format not in RECORD_FORMATS:
            raise DataFormatError(
                f"format: expected one of {', '.join(RECORD_FORMATS)}, got {format!r}")
        if envi_interleave not in ("bsq", "bil", "bip"):
            raise DataFormatError(
                f"envi_interleave: expected one of bsq, bil, bip, got {envi_interleave!r}")
        if fwhm_nm is not None and not (isinstance(fwhm_nm, (int, float))
                                        and not isinstance(fwhm_nm, bool)
                                        and np.isfinite(fwhm_nm) and fwhm_nm > 0):
            raise DataFormatError(
                f"fwhm_nm: expected a band width in nm > 0 or None, got {fwhm_nm!r}")
        self.fwhm_nm = None if fwhm_nm is None else float(fwhm_nm)
        self.out_dir = Path(out_dir)
        self.format = format
        self.envi_interleave = envi_interleave
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise DataFormatError(f"out_dir: {str(self.out_dir)!r} exists and is not a directory")
        existing = self._own_files()
        if existing:
            if not overwrite:
                raise DataFormatError(
                    f"out_dir: {str(self.out_dir)!r} already holds a recording "
                    f"({len(existing)} file(s)); choose a new directory or pass overwrite=True")
            for p in existing:
                p.unlink()
            log.warning("recorder: removed %d file(s) of the previous recording in %s",
                        len(existing), self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        manifest = {"format": format, "software": f"hsi-edge {__version__}",
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        with atomic_open(self.out_dir / MANIFEST) as fh:
            fh.write(json.dumps(manifest, indent=1).encode("utf-8"))
        self.count = 0
        self._closed = False

    def _own_files(self) -> list[Path]:
        if not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.iterdir() if _OWN_FILE.match(p.name))

    def write(self, frame: Frame) -> Path:
        """Append one frame; returns the path of its main file.

        Raises
        ------
        DataFormatError
            If the recorder is closed, or format "tivita" is given a non-float32 cube.
        """
        if self._closed:
            raise DataFormatError("recorder: write() after close()")
        if not isinstance(frame, Frame):
            raise DataFormatError(f"frame: expected a Frame, got {type(frame).__name__}")
        base = self.out_dir / f"frame_{self.count:06d}"
        meta = meta_to_dict(frame.meta)
        truth = frame.truth or {}
        if self.format == "npz":
            path = base.with_name(base.name + ".npz")
            write_npz_frame(path, frame.cube, frame.wavelengths, meta, truth)
        else:
            if self.format == "tivita" and frame.cube.dtype != np.float32:
                raise DataFormatError(
                    f"frame: TIVITA recordings hold float32 reflectance, got {frame.cube.dtype}"
                    " cube; record raw counts with format='npz' or 'envi'")
            # Sidecars first, the cube last: a frame is listed only once its cube file exists,
            # so an interruption leaves at most an orphan sidecar, never a frame without meta.
            if truth:
                with atomic_open(base.with_name(base.name + ".truth.npz")) as fh:
                    np.savez(fh, **{k: np.asarray(v) for k, v in truth.items()})
            doc = {"meta": meta, "wavelengths": [float(v) for v in frame.wavelengths]}
            with atomic_open(base.with_name(base.name + ".json")) as fh:
                fh.write(json.dumps(doc, indent=1).encode("utf-8"))
            if self.format == "tivita":
                path = base.with_name(base.name + "_SpecCube.dat")
                write_tivita_cube(path, frame.cube)
            else:
                path = base.with_name(base.name + ".hdr")
                write_envi(path, frame.cube, frame.wavelengths, fwhm=self.fwhm_nm,
                           interleave=self.envi_interleave)
        self.count += 1
        return path

    def close(self) -> None:
        """Finish the recording (idempotent)."""
        if not self._closed:
            self._closed = True
            log.info("recorder: %d frame(s) in %s", self.count, self.out_dir)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
