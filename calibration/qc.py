"""The quality-control part of a calibration record (issue 12).

A field calibration signs its record with a ``qc`` mapping in ``record.yaml`` (so it is
covered by the record's metadata checksum, ``record_sha256``) and ships its report beside the
arrays, written in the same atomic save::

    qc:
      workflow: field
      verdict: PASS | WARN | FAIL
      operator, signed, valid_until           ISO times (UTC)
      thresholds_version, software_version
      factory_calibration_hash
      tiles: {white: {tile_id, certificate, expires, wavelengths_nm, reflectance}, ...}
      steps: {identify: PASS, ...}
      checks: [{name, value, unit, verdict, warn, fail, method, source, fix, detail}, ...]
      summary, baseline                       trend figures; the commissioning baseline
    report.html, report.json                  the signed report (checksummed in ``files``)

A record without ``qc`` (``hsi-edge calibrate capture``, older versions) loads as before;
:func:`read_qc` returns None for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from calibration.history import clean
from calibration.records import RECORD_FILE, CalibrationRecord
from edge.core.config import load_yaml
from edge.core.fileio import sha256_file
from edge.errors import CalibrationError, ConfigError

__all__ = ["save_record", "read_qc", "QC_KEY"]

QC_KEY = "qc"


class _SignedRecord(CalibrationRecord):
    """A record saved with its ``qc`` metadata and report files (same atomic save)."""

    _qc: dict[str, Any] = {}
    _files: dict[str, bytes] = {}
    _digests: dict[str, str] = {}

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta[QC_KEY] = self._qc
        meta["report_files"] = {name: self._digests[name] for name in self._files}
        return meta

    def _write_into(self, d: Path) -> None:
        self._digests = {}
        for name, blob in self._files.items():
            path = d / name
            with open(path, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            self._digests[name] = sha256_file(path)
        super()._write_into(d)


def save_record(record: CalibrationRecord, out: str | os.PathLike, qc: dict[str, Any],
                files: dict[str, bytes] | None = None) -> Path:
    """Save ``record`` with its ``qc`` and report ``files`` atomically into ``out`` (a
    previous record there is kept as a timestamped backup)."""
    signed = _SignedRecord(**{k: getattr(record, k) for k in record.__dataclass_fields__})
    signed._qc = clean(qc)
    signed._files = dict(files or {})
    path = signed.save(out, overwrite=True)
    record.path = path
    return path


def read_qc(record: CalibrationRecord | str | os.PathLike) -> dict[str, Any] | None:
    """The ``qc`` of a record (loaded and verified first when given a folder); None when the
    record has none.  Report files listed in the record are verified too.

    Raises
    ------
    CalibrationError
        The record does not load, or a report file is missing or modified.
    """
    rec = record if isinstance(record, CalibrationRecord) else CalibrationRecord.load(record)
    if rec.path is None:
        return getattr(rec, "_qc", None) or None
    meta_path = Path(rec.path) / RECORD_FILE
    try:
        meta = load_yaml(meta_path, what="calibration record")
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None
    qc = meta.get(QC_KEY) if isinstance(meta, dict) else None
    if qc is not None and not isinstance(qc, dict):
        raise CalibrationError(f"{meta_path}: {QC_KEY}: expected a mapping, got {qc!r}"[:200])
    for name, digest in (meta.get("report_files") or {}).items():
        path = Path(rec.path) / Path(str(name)).name
        if not path.is_file() or sha256_file(path) != digest:
            raise CalibrationError(f"{path}: report file missing or modified since the record "
                                   "was signed")
    return qc
