"""What a calibration record is worth right now, and the quick start-of-day check.

:func:`record_status` reads a record's ``qc`` (:mod:`calibration.qc`) and the camera's
history: ``valid`` (signed, PASS or WARN, before ``valid_until``), ``expired`` (after it, or
the latest quick check since signing was above its FAIL limit -- the research proposal:
"above fail, treat as expired"), ``failed`` (signed with verdict FAIL) or ``unchecked`` (a
record without field QC, e.g. ``hsi-edge calibrate capture``).

:func:`quick_check` grabs a few white frames and compares them with the record's white
(level and colour), appends the result to the history and returns it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration import checks as C
from calibration.history import History
from calibration.qc import read_qc
from calibration.records import CalibrationRecord
from calibration.references import average_frames
from calibration.thresholds import FAIL, CheckResult, ThresholdTable

__all__ = ["RecordStatus", "record_status", "quick_check", "STATES", "default_history_root"]

log = logging.getLogger(__name__)

STATES = ("valid", "expired", "failed", "unchecked")


def default_history_root(record_dir: str | Path) -> Path:
    """Where the history lives when none is configured: beside the record folder."""
    return Path(record_dir).resolve().parent / "calibration-history"


@dataclass(frozen=True)
class RecordStatus:
    """``state`` (one of :data:`STATES`), the record's verdict and validity, and why."""

    state: str
    reason: str
    verdict: str | None = None
    valid_until: str | None = None
    signed: str | None = None
    quick_check: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "verdict": self.verdict,
                "valid_until": self.valid_until, "signed": self.signed,
                "quick_check": self.quick_check}


def _parse_time(text: Any) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def record_status(record: CalibrationRecord, *, history_root: str | Path | None = None,
                  now: _dt.datetime | None = None) -> RecordStatus:
    """The status of a loaded record (see module docstring)."""
    qc = read_qc(record)
    if not qc:
        return RecordStatus("unchecked", "the record has no field calibration QC (captured with "
                                         "`hsi-edge calibrate capture` or an older version)")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    verdict, until = qc.get("verdict"), qc.get("valid_until")
    signed = qc.get("signed")
    common = dict(verdict=verdict, valid_until=until, signed=signed)
    if verdict == FAIL:
        bad = [c["name"] for c in qc.get("checks", []) if c.get("verdict") == FAIL]
        return RecordStatus("failed", f"the calibration failed ({', '.join(bad) or '?'})",
                            **common)
    end = _parse_time(until)
    if end is None:
        return RecordStatus("expired", f"valid_until {until!r} is not a time", **common)
    if now > end:
        return RecordStatus("expired", f"the calibration expired at {until}", **common)
    if history_root is not None:
        last = History(history_root, record.camera_serial).latest("check")
        t_signed = _parse_time(signed)
        t_check = _parse_time((last or {}).get("time"))
        if last and t_check and t_signed and t_check >= t_signed and last.get("verdict") == FAIL:
            return RecordStatus("expired", f"the quick check of {last['time']} was above its "
                                           f"limit ({last.get('detail', '')})",
                                quick_check={k: last.get(k) for k in
                                             ("time", "verdict", "value", "detail")},
                                **common)
    return RecordStatus("valid", f"valid until {until}", **common)


def quick_check(camera, record: CalibrationRecord, table: ThresholdTable, *, n: int = 4,
                history_root: str | Path | None = None, placer=None,
                operator: str = "unknown") -> CheckResult:
    """A few white frames against the record's white (start of the day).

    The tile must be in view and the light on (``placer`` puts it there on a simulated
    bench).  The record's dark is used (no capping needed); frames are taken at the record's
    white exposure and gain.

    Raises
    ------
    CalibrationError
        The record does not fit the camera.
    """
    record.check_compatible(camera.serial, camera.shape, record.exposure_us, record.gain,
                            wavelengths=camera.wavelengths)
    if placer is not None:
        placer.place("white")
        placer.lights(True)
    avg = average_frames(camera, n, exposure_us=record.white_exposure_us, gain=record.gain,
                         what="quick check white")
    rec_dark = record.white_dark if record.white_dark is not None else record.dark
    result = C.quick_check(table, avg.mean, rec_dark, record.white, rec_dark)
    if history_root is not None:
        now = _dt.datetime.now(_dt.timezone.utc)
        band = C._band_means(avg.mean - rec_dark)
        History(history_root, record.camera_serial).append({
            "time": now.isoformat(timespec="microseconds"), "epoch": now.timestamp(),
            "kind": "check", "verdict": result.verdict, "value": result.value,
            "detail": result.detail, "record": str(record.path), "operator": operator,
            "thresholds_version": table.version,
            "summary": {"white_level": float(np.median(band)) * 1e4 / record.white_exposure_us,
                        "white_band_mean": band.tolist()}})
    if placer is not None and camera.target is not None:
        placer.place("scene")
    return result
