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
    report.html, report.json                  the signed report, checksummed in ``files``
                                              (:meth:`CalibrationRecord.save` extra_files)

A record without ``qc`` (``hsi-edge calibrate capture``, older versions) loads as before;
:func:`read_qc` returns None for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.core.fileio import json_safe
from calibration.records import CalibrationRecord

__all__ = ["save_record", "read_qc"]


def save_record(record: CalibrationRecord, out: str | os.PathLike, qc: dict[str, Any],
                files: dict[str, bytes] | None = None) -> Path:
    """Sign ``record`` with ``qc`` and save it with the report ``files`` atomically into
    ``out`` (a previous record there is kept as a timestamped backup)."""
    record.qc = json_safe(qc)
    return record.save(out, overwrite=True, extra_files=files)


def read_qc(record: CalibrationRecord | str | os.PathLike) -> dict[str, Any] | None:
    """The ``qc`` of a record (a folder is loaded and verified first, report files
    included); None for a record without field calibration QC.

    Raises
    ------
    CalibrationError
        The record does not load (a modified report or ``qc`` fails its checksum).
    """
    rec = record if isinstance(record, CalibrationRecord) else CalibrationRecord.load(record)
    return rec.qc
