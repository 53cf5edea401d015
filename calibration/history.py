"""Calibration history per camera serial, with drift trends.

Every field calibration (accepted or refused) and every quick check is appended as one JSON
line to ``<root>/<serial>/history.jsonl`` -- a monitoring base like ASTM E925's [25] and htc's
dated per-camera white-balance archive [3] (``../shared/research/field_calibration.md``).

The first accepted calibration of a serial is its *commissioning baseline*: the checks without
absolute limits are judged against it.  :meth:`History.trend` fits the drift of white level
(median over bands, relative to commissioning), dark level, hot pixels, minimum SNR and
wavelength shift over time and flags the ones whose latest value crosses its limit.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from calibration.thresholds import FAIL, PASS, CheckResult, ThresholdTable
from edge.core.fileio import json_safe
from edge.errors import CalibrationError

__all__ = ["History", "HISTORY_FILE"]

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"


def _safe(serial: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(serial)) or "_"


class History:
    """The history of one camera under ``root``.

    Parameters
    ----------
    root : path
        Folder holding one sub-folder per camera serial.
    serial : str
    """

    def __init__(self, root: str | os.PathLike, serial: str) -> None:
        self.root = Path(root)
        self.serial = str(serial)
        self.path = self.root / _safe(self.serial) / HISTORY_FILE

    def entries(self) -> list[dict[str, Any]]:
        """All entries, oldest first (a damaged line is skipped with a warning)."""
        if not self.path.is_file():
            return []
        out = []
        try:
            # a damaged byte spoils its line only (that line is then skipped as not JSON)
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CalibrationError(f"{self.path}: cannot read calibration history: "
                                   f"{exc.strerror or exc}") from None
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is not JSON; skipped", self.path, i)
                continue
            if not isinstance(entry, dict):
                log.warning("%s: line %d is not a JSON object; skipped", self.path, i)
                continue
            out.append(entry)
        return out

    def append(self, entry: dict[str, Any]) -> None:
        """Append one entry (a line written and fsynced in one call)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps(json_safe(entry), allow_nan=False) + "\n"
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise CalibrationError(f"{self.path}: cannot append to the calibration history: "
                                   f"{exc.strerror or exc}") from exc

    def commissioning(self) -> dict[str, Any] | None:
        """The first accepted calibration (verdict PASS or WARN), or None."""
        for e in self.entries():
            if e.get("kind") == "calibration" and e.get("verdict") in ("PASS", "WARN"):
                return e
        return None

    def baseline(self) -> dict[str, Any] | None:
        """Commissioning figures: the first accepted calibration's summary, completed with
        the first value of each figure it lacks (e.g. SNR or MTF50 measured only later)."""
        out: dict[str, Any] = {}
        for e in self.entries():
            if e.get("kind") == "calibration" and e.get("verdict") in ("PASS", "WARN") \
                    and isinstance(e.get("summary"), dict):
                for k, v in e["summary"].items():
                    if v is not None:
                        out.setdefault(k, v)
        return out or None

    def latest(self, kind: str | None = None) -> dict[str, Any] | None:
        es = [e for e in self.entries() if kind is None or e.get("kind") == kind]
        return es[-1] if es else None

    def trend(self, table: ThresholdTable) -> list[CheckResult]:
        """Drift flags from the accepted calibrations and quick checks (see module doc)."""
        es = [e for e in self.entries()
              if e.get("verdict") != FAIL and isinstance(e.get("summary"), dict)]
        if len(es) < 2:
            return []
        t = np.array([float(e.get("epoch", i)) for i, e in enumerate(es)])
        days = (t - t[0]) / 86400.0
        out = []
        level = [e["summary"].get("white_level") for e in es]
        if all(v is not None for v in level) and level[0]:
            rel = 100.0 * (np.asarray(level, float) / float(level[0]) - 1.0)
            slope = _slope(days, rel)
            out.append(table.result("drift_white_level", float(abs(rel[-1])),
                                    detail=f"{rel[-1]:+.2f} % since commissioning, "
                                           f"{slope:+.2f} %/30 days",
                                    data={"days": days.tolist(), "series": rel.tolist(),
                                          "metric": "white level %"}))
        bands = [e["summary"].get("white_band_mean") for e in es]
        pts = [(d, np.asarray(b, float)) for d, b in zip(days, bands)
               if b is not None and len(b) == len(bands[0] or [])]
        if len(pts) >= 2 and pts[0][1].size:
            # colour drift per band since commissioning, the level divided out
            shape = [100.0 * float(np.max(np.abs(b / pts[0][1] / np.median(b / pts[0][1]) - 1)))
                     for _, b in pts]
            r = table.result("white_drift_shape", shape[-1],
                             detail="white per band against commissioning, level removed",
                             data={"days": [p[0] for p in pts], "series": shape,
                                   "metric": "max band change %"})
            r.name = "drift_white_bands"
            out.append(r)
        hot = [e["summary"].get("hot_pct") for e in es]
        if all(v is not None for v in hot):
            growth = float(hot[-1]) - float(hot[0])
            r = table.result("hot_pixels", max(growth, 0.0), detail="trend since commissioning",
                             data={"days": days.tolist(), "series": hot, "metric": "hot %"})
            r.name = "drift_hot_pixels"
            out.append(r)
        shift = [e["summary"].get("wavelength_shift_nm") for e in es]
        pts = [(d, s) for d, s in zip(days, shift) if s is not None]
        if len(pts) >= 2:
            r = table.result("wavelength_shift", abs(pts[-1][1] - pts[0][1]),
                             detail="change since commissioning",
                             data={"days": [p[0] for p in pts], "series": [p[1] for p in pts],
                                   "metric": "shift nm"})
            r.name = "drift_wavelength_shift"
            out.append(r)
        snr = [e["summary"].get("snr_min") for e in es]
        pts = [(d, s) for d, s in zip(days, snr) if s]
        if len(pts) >= 2:
            r = table.result("snr", pts[-1][1] / pts[0][1], detail="min SNR against commissioning",
                             data={"days": [p[0] for p in pts], "series": [p[1] for p in pts],
                                   "metric": "min SNR"})
            r.name = "drift_snr"
            out.append(r)
        dark = [e["summary"].get("dark_mean") for e in es]
        if all(v is not None for v in dark):
            out.append(CheckResult("drift_dark_level", float(dark[-1]) - float(dark[0]),
                                   "counts", PASS, None, None, "info",
                                   "dark level change since commissioning (shown, not judged)",
                                   "trend only",
                                   data={"days": days.tolist(), "series": dark,
                                         "metric": "dark counts"}))
        return out


def _slope(days: np.ndarray, y: np.ndarray) -> float:
    if len(days) < 2 or np.ptp(days) <= 0:
        return 0.0
    return float(np.polyfit(days, y, 1)[0] * 30.0)

