"""``Recorder``: write a sequence of Frames that :class:`drivers.replay.ReplayCamera` reads back.

Layout of a recording directory::

    recording.json                  manifest: format, software, creation time, camera, frames,
                                    completion mark (see drivers.formats.sequence)
    frame_000000.npz                format "npz": cube, wavelengths, meta (JSON), truth_<name>
    frame_000000.hdr/.img + .json   format "envi": ENVI cube + sidecar (meta, wavelengths)
    frame_000000_SpecCube.dat + .json   format "tivita" (float32 cubes only)
    frame_000000.truth.npz          ground truth for "envi"/"tivita" frames that have any

Every file is written to a temporary name and renamed into place (``os.replace``), sidecars
before the cube file (and ENVI data before its header), so an interrupted recording never
leaves a corrupt frame: the last frame is either complete or absent.  ``recording.json`` is
written at the start with ``"complete": false`` and again by :meth:`Recorder.close` with the
frame count and ``"complete": true`` (only when no exception ended the recording and, if
``expected_frames`` was given, every expected frame was written), so a replay tells an
interrupted recording from a finished one.

A directory that already holds a recording is never overwritten unless ``overwrite=True``;
then the new recording is written into a temporary folder beside it and swapped in only when
it is complete (``close``): until then the old recording stays untouched, and an interrupted
new one leaves it as it was.  Files in the directory that belong to neither recording are
carried over; ``companions`` names further files of a recording (previews, a calibration
record) that are replaced with it.
The round trip is bit-exact: cube, wavelengths, truth and every FrameMeta field come back
unchanged (``timestamp_ns`` with ``ReplayCamera(..., original_timestamps=True)``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from drivers.formats._io import atomic_open
from drivers.formats.envi import write_envi
from drivers.formats.npyseq import write_npz_frame
from drivers.formats.sequence import MANIFEST
from drivers.formats.tivita import write_tivita_cube
from edge import __version__
from edge.core.fileio import fsync_dir
from edge.core.frame import Frame
from edge.errors import DataFormatError
from edge.processing.register import check_band_offsets

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
        Band width of the camera (``camera.fwhm_nm``); written into ``recording.json`` and as
        the ENVI ``fwhm`` header key (the same value for every band) so a replay gets it back.
    band_offsets : array_like of shape (bands, 2), optional
        Where each band samples the scene (``camera.band_offsets``: (dy, dx) in spectral
        pixels, finite, each |value| < 1; a snapshot mosaic's filter positions); written into
        ``recording.json`` (``camera.band_offsets``, a list of ``[dy, dx]`` pairs, null when
        None) so a replay registers the bands as the live camera did.  Its band count must
        match the frames'.
    preset : str, optional
        Camera preset that made the frames (``recording.json`` ``camera.preset``), so a
        replay picks the same processing (model, band layout) without being told.
    expected_frames : int, optional
        Frames the recording should hold; ``close`` marks it complete only when all came.
    companions : sequence of str
        File-name patterns (``fnmatch``) in ``out_dir`` that belong to a recording besides
        the recorder's own files (e.g. ``"calibration"``, ``"frame_*.png"``): replaced with
        it on ``overwrite``.
    keep_replaced : sequence of str
        Companions that must never be lost (a calibration record): on ``overwrite`` the old
        one is kept beside the new recording as ``<name>.backup-<UTC time>``.

    Attributes
    ----------
    out_dir : Path
        The recording's directory.
    work_dir : Path
        Where files go while recording: ``out_dir``, or the temporary folder beside it when an
        old recording is being replaced.  Companions are written here too.

    Raises
    ------
    DataFormatError
        Unknown format, ``fwhm_nm`` not a finite number > 0, ``band_offsets`` not of shape
        (bands, 2) with finite components of |value| < 1, or ``out_dir`` already holds a
        recording and ``overwrite`` is False.
    """

    def __init__(self, out_dir: str | os.PathLike, format: str = "npz", *,  # noqa: A002
                 overwrite: bool = False, envi_interleave: str = "bsq",
                 fwhm_nm: float | None = None, band_offsets: Any = None,
                 preset: str | None = None,
                 expected_frames: int | None = None, companions: Sequence[str] = (),
                 keep_replaced: Sequence[str] = ()) -> None:
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
        if expected_frames is not None and not (isinstance(expected_frames, int)
                                                and expected_frames >= 0):
            raise DataFormatError(
                f"expected_frames: expected an integer >= 0 or None, got {expected_frames!r}")
        self.fwhm_nm = None if fwhm_nm is None else float(fwhm_nm)
        #: ndarray (bands, 2) float64, or None (see the parameter)
        self.band_offsets = (None if band_offsets is None
                             else check_band_offsets(band_offsets, "band_offsets"))
        self.preset = preset
        self.expected_frames = expected_frames
        self.companions = tuple(companions)
        self.keep_replaced = tuple(keep_replaced)
        self.out_dir = Path(out_dir)
        self.format = format
        self.envi_interleave = envi_interleave
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise DataFormatError(f"out_dir: {str(self.out_dir)!r} exists and is not a directory")
        existing = self._own_files()
        self._staging: Path | None = None
        if existing and not overwrite:
            raise DataFormatError(
                f"out_dir: {str(self.out_dir)!r} already holds a recording "
                f"({len(existing)} file(s)); choose a new directory or allow replacing it (--overwrite)")
        if existing:
            # The old recording stays until the new one is complete (close swaps them).
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-",
                                                  dir=self.out_dir.parent))
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir = self._staging or self.out_dir
        self._first: Frame | None = None
        self.count = 0
        self._closed = False
        self._write_manifest(complete=False)

    def _own_files(self) -> list[Path]:
        if not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.iterdir() if _OWN_FILE.match(p.name))

    def _belongs(self, name: str) -> bool:
        return bool(_OWN_FILE.match(name)) or any(fnmatch.fnmatchcase(name, pat)
                                                  for pat in self.companions)

    def _write_manifest(self, complete: bool) -> None:
        offsets = (None if self.band_offsets is None
                   else [[float(dy), float(dx)] for dy, dx in self.band_offsets])
        camera: dict[str, Any] = {"preset": self.preset, "fwhm_nm": self.fwhm_nm,
                                  "band_offsets": offsets}
        doc: dict[str, Any] = {
            "format": self.format, "software": f"hsi-edge {__version__}",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "frames_expected": self.expected_frames, "complete": complete, "camera": camera}
        if complete:
            doc["frames"] = self.count
        if self._first is not None:
            m = self._first.meta
            camera.update(serial=dict(m.serials).get("camera"), bit_depth=int(m.bit_depth),
                          exposure_us=float(m.exposure_us), gain=float(m.gain),
                          shape=[int(n) for n in self._first.cube.shape],
                          dtype=str(self._first.cube.dtype))
            doc["wavelengths"] = [float(v) for v in self._first.wavelengths]
        with atomic_open(self.work_dir / MANIFEST) as fh:
            fh.write(json.dumps(doc, indent=1).encode("utf-8"))

    def write(self, frame: Frame) -> Path:
        """Append one frame; returns the path of its main file.

        Raises
        ------
        DataFormatError
            If the recorder is closed, format "tivita" is given a non-float32 cube, or the
            frame's band count differs from ``band_offsets``.
        """
        if self._closed:
            raise DataFormatError("recorder: write() after close()")
        if not isinstance(frame, Frame):
            raise DataFormatError(f"frame: expected a Frame, got {type(frame).__name__}")
        if self.band_offsets is not None and frame.cube.shape[-1] != len(self.band_offsets):
            raise DataFormatError(
                f"band_offsets: {len(self.band_offsets)} (dy, dx) pairs given, but the frame has "
                f"{frame.cube.shape[-1]} bands; expected one pair per band")
        base = self.work_dir / f"frame_{self.count:06d}"
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
        if self._first is None:
            self._first = frame
        self.count += 1
        return path

    def close(self) -> None:
        """Finish the recording: mark it complete and swap it in (idempotent).

        A recording with fewer frames than ``expected_frames`` is left marked incomplete (a
        replay refuses it); when it replaces an old one, the old one is kept instead.
        """
        if self._closed:
            return
        self._closed = True
        if self.expected_frames is not None and self.count != self.expected_frames:
            log.warning("recorder: %d of %d expected frame(s) written; the recording stays "
                        "marked incomplete", self.count, self.expected_frames)
            self._abort()
            return
        self._write_manifest(complete=True)
        if self._staging is not None:
            self._swap_in()
        log.info("recorder: %d frame(s) in %s", self.count, self.out_dir)

    def _abort(self) -> None:
        """Leave an old recording as it was (drop the unfinished replacement)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            log.warning("recorder: the new recording was not completed; %s keeps the previous "
                        "one", self.out_dir)

    def _swap_in(self) -> None:
        """Replace the old recording by the complete new one (two renames, then clean-up)."""
        assert self._staging is not None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        old = self.out_dir.with_name(f".{self.out_dir.name}.old-{stamp}")
        os.rename(self.out_dir, old)
        os.rename(self._staging, self.out_dir)
        fsync_dir(self.out_dir.parent)
        # data that must never be lost (a calibration record) is kept beside the new one
        for name in self.keep_replaced:
            if (old / name).exists():
                os.rename(old / name, self.out_dir / f"{name}.backup-{stamp}")
        # files that belong to neither recording stay in the directory
        for entry in sorted(old.iterdir()):
            if not self._belongs(entry.name) and not (self.out_dir / entry.name).exists():
                os.rename(entry, self.out_dir / entry.name)
        shutil.rmtree(old, ignore_errors=True)
        self.work_dir = self.out_dir
        self._staging = None
        log.warning("recorder: replaced the previous recording in %s", self.out_dir)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            # an exception ended the recording: it stays marked incomplete
            self._closed = True
            self._abort()
