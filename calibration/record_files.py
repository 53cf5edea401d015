"""The files of a calibration record on disk: their names, and writing them atomically.

Split from ``calibration/records.py`` (the record itself, loading and verification), which
re-exports :data:`RECORD_FILE` and :data:`MASK_NAMES`.  :func:`save_locked` does the steps
of :meth:`CalibrationRecord.save <calibration.records.CalibrationRecord.save>` with the parent
folder locked: write into a temporary sibling, journal, keep an old record as a timestamped
backup, rename into place (:mod:`calibration._replace`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from calibration import _replace
from calibration._checks import META_CHECKSUM_KEY, meta_checksum
from edge.core.fileio import fsync_dir, sha256_file
from edge.errors import CalibrationError

__all__ = ["RECORD_FILE", "MASK_NAMES", "check_target", "save_locked"]

log = logging.getLogger(__name__)

RECORD_FILE = "record.yaml"
MASK_NAMES = ("hot", "dead", "overexposed", "underexposed")


def check_target(directory: str | os.PathLike, *, overwrite: bool = False,
                 overwrite_hint: str = "overwrite=True") -> bool:
    """Check that a record can be saved to ``directory``; True if it holds files.

    Call it before capturing references (capping the lens, placing the tile) so a
    capture is never wasted on a folder it cannot be saved to.

    Raises
    ------
    CalibrationError
        ``directory`` is a file, holds files and ``overwrite`` is False, or its parent
        cannot be written (read-only, permissions).
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise CalibrationError(f"{target}: exists and is not a directory")
    occupied = target.is_dir() and any(target.iterdir())
    if occupied and not overwrite:
        what = ("a calibration record" if (target / RECORD_FILE).exists()
                else "other files")
        raise CalibrationError(
            f"{target}: already holds {what}; choose a new directory or pass "
            f"{overwrite_hint} (the old one is kept as a timestamped backup)")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # os.access lies for root and on read-only mounts; creating a file does not.
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise CalibrationError(
            f"{target}: cannot write calibration record: {exc.strerror or exc}") from exc
    return occupied


def save_locked(rec, target: Path, occupied: bool,
                extra: dict[str, bytes] | None = None) -> None:
    """The steps of saving ``rec`` (a :class:`~calibration.records.CalibrationRecord`) to
    ``target`` (see :mod:`calibration._replace`), with the parent locked."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_replace.tmp_prefix(target), dir=target.parent))
    except OSError as exc:
        raise CalibrationError(
            f"{target}: cannot write calibration record: {exc.strerror or exc}") from exc
    backup = None
    if occupied:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        backup = target.with_name(f"{target.name}.backup-{stamp}")
    try:
        _write_into(rec, tmp, extra)
        _replace.crash_point("written")
        _replace.write_journal(target, tmp, backup)
        _replace.crash_point("journal")
        if backup is not None:
            os.rename(target, backup)
            log.warning("calibration: previous record kept as %s", backup)
            _replace.crash_point("backup")
        elif target.is_dir():
            target.rmdir()  # empty directory: nothing to keep
        os.rename(tmp, target)
        _replace.crash_point("renamed")
        _replace.journal_path(target).unlink()
    except OSError as exc:
        # Disk full or read-only: the old record is put back if it was moved, the
        # half-written one is removed.
        if backup is not None and backup.is_dir() and not target.exists():
            os.rename(backup, target)
        shutil.rmtree(tmp, ignore_errors=True)
        _replace.journal_path(target).unlink(missing_ok=True)
        raise CalibrationError(
            f"{target}: cannot write calibration record: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _replace.journal_path(target).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)

def _write_into(rec, d: Path, extra: dict[str, bytes] | None = None) -> None:
    """The record's arrays, ``extra`` files and record.yaml (with their checksums) in ``d``."""
    arrays = {"dark.npz": {"mean": rec.dark, "std": rec.dark_std},
              "white.npz": {"mean": rec.white, "std": rec.white_std},
              "masks.npz": {k: np.asarray(rec.masks[k], bool) for k in MASK_NAMES}}
    if rec.white_dark is not None:
        arrays["white_dark.npz"] = {"mean": rec.white_dark,
                                    "std": (rec.white_dark_std if rec.white_dark_std
                                            is not None else np.zeros_like(rec.white_dark))}
    files = {}
    for name, content in arrays.items():
        path = d / name
        with open(path, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in content.items()})
            fh.flush()
            os.fsync(fh.fileno())
        files[name] = sha256_file(path)
        _replace.crash_point("writing")
    for name, blob in (extra or {}).items():
        with open(d / name, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        files[name] = sha256_file(d / name)
    meta = rec.metadata()
    meta["files"] = files
    meta[META_CHECKSUM_KEY] = meta_checksum(meta)
    with open(d / RECORD_FILE, "w", encoding="utf-8") as fh:
        fh.write("# hsi-edge calibration record (see calibration/records.py)\n")
        yaml.safe_dump(meta, fh, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
