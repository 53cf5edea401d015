"""Unit status for the service page: versions, release, self-test, calibration, serial devices.

Everything here only reads.  In particular the calibration record is read as its
``record.yaml`` metadata (``CalibrationRecord.load`` may finish an interrupted save, which
writes) and the deploy state as the ``current``/``previous`` links and the release registry
(``deploy.install.status`` may recover a journal, which writes).  A source that is not given
or cannot be read is reported as such in its entry (``"error"``), never as a failed request.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edge import __version__
from edge.core.install_root import LINKS, REGISTRY, link_version, read_registry

__all__ = ["StatusSources", "unit_status", "VERSION_PACKAGES"]

log = logging.getLogger(__name__)

#: Distributions whose versions the page lists (absent ones are null).
VERSION_PACKAGES = ("numpy", "onnxruntime", "pycuda", "tensorrt", "pyserial", "pillow",
                    "starlette", "uvicorn")


@dataclass
class StatusSources:
    """Where the status comes from (all optional).

    Attributes
    ----------
    calibration_record : path or None
        A calibration record folder (``record.yaml`` inside), e.g. ``calibration.record``.
    calibration_max_age_days : float or None
        Expiry = record creation + this, when the record states no ``expires`` itself.
    selftest_report : path or None
        JSON written by ``hsi-edge selftest --json``, or a folder of them (the newest by
        name is shown); None with ``unit_root``: deploy's ``<root>/unit/selftest``.
    unit_root : path or None
        Install root of a deployed unit (``/opt/hsi-edge``).
    serial_urls : dict of str to str
        Devices the run uses (name -> pyserial URL).
    run : dict
        What the run is (backend, runtime, model, camera), set by ``hsi-edge run --serve``.
    """

    calibration_record: str | os.PathLike | None = None
    calibration_max_age_days: float | None = None
    selftest_report: str | os.PathLike | None = None
    unit_root: str | os.PathLike | None = None
    serial_urls: dict[str, str] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"hsi-edge": __version__, "python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _calibration(src: StatusSources, today: _dt.date) -> dict[str, Any]:
    if not src.calibration_record:
        return {"record": None, "verdict": None, "expires": None, "expired": None,
                "error": "no calibration record given (the run captures references at start)"}
    from edge.core.config import load_yaml

    path = Path(src.calibration_record) / "record.yaml"
    doc: dict[str, Any] = {"record": str(src.calibration_record)}
    try:
        meta = load_yaml(path, what="calibration record")
    except Exception as exc:
        return doc | {"verdict": None, "expires": None, "expired": None, "error": str(exc)}
    qc = meta.get("qc") if isinstance(meta.get("qc"), dict) else {}
    doc["verdict"] = meta.get("verdict") or qc.get("verdict") or "not recorded"
    doc["created"] = str(meta.get("created")) if meta.get("created") is not None else None
    doc["camera_serial"] = meta.get("camera_serial")
    doc["software_version"] = meta.get("software_version")
    expires = meta.get("expires") or qc.get("expires")
    if expires is None and src.calibration_max_age_days is not None and doc["created"]:
        try:
            created = _dt.datetime.fromisoformat(doc["created"].replace("Z", "+00:00"))
            expires = (created + _dt.timedelta(days=float(src.calibration_max_age_days))).date()
        except ValueError:
            expires = None
    if isinstance(expires, _dt.datetime):
        expires = expires.date()
    if expires is not None and not isinstance(expires, _dt.date):
        try:
            expires = _dt.date.fromisoformat(str(expires)[:10])
        except ValueError:
            doc["error"] = f"expires: expected an ISO date, got {expires!r}"
            expires = None
    doc["expires"] = expires.isoformat() if expires else None
    doc["expired"] = None if expires is None else today > expires
    return doc


def _selftest(src: StatusSources) -> dict[str, Any] | None:
    where = src.selftest_report
    if not where and src.unit_root:
        # deploy keeps one report per self-test run: <unit dir>/selftest/<UTC stamp>-<release>.json
        where = Path(src.unit_root) / "unit" / "selftest"
        if not where.is_dir():
            return None
    if not where:
        return None
    p = Path(where)
    if p.is_dir():
        reports = sorted(p.glob("*.json"))   # names start with a UTC stamp: newest last
        if not reports:
            return {"report": str(p), "error": f"{p}: no self-test report yet"}
        p = reports[-1]
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        return {"report": str(p), "error": f"{p}: cannot read: {exc}"}
    if not isinstance(doc, dict):
        return {"report": str(p), "error": f"{p}: expected a JSON object"}
    checks = doc.get("checks") if isinstance(doc.get("checks"), list) else []
    return {"report": str(p), "passed": doc.get("passed"), "time": doc.get("time"),
            "release": doc.get("release"),
            "failed": [c.get("name") for c in checks
                       if isinstance(c, dict) and c.get("status") == "FAIL"]}


def _release(src: StatusSources) -> dict[str, Any] | None:
    if not src.unit_root:
        return None
    root = Path(src.unit_root)
    doc: dict[str, Any] = {"root": str(root)}
    for link in LINKS:
        doc[link] = link_version(root / link)
    try:
        reg = read_registry(root / REGISTRY)
        doc["releases"] = {v: e.get("state") for v, e in reg.items() if isinstance(e, dict)}
    except (OSError, ValueError) as exc:
        doc["error"] = f"release registry: cannot read: {exc}"
    return doc


def _serial(src: StatusSources) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    try:
        from serial.tools import list_ports
        for p in list_ports.comports():
            ports.append({"device": p.device, "description": p.description,
                          "serial_number": p.serial_number, "vid": p.vid, "pid": p.pid})
    except Exception as exc:  # sysfs unreadable in a container: say so
        ports.append({"error": f"cannot list serial ports: {exc}"})
    return {"configured": dict(src.serial_urls), "ports": ports}


def unit_status(src: StatusSources, *, live: dict[str, Any] | None = None,
                started_ns: int | None = None) -> dict[str, Any]:
    """The ``/api/status`` document (JSON-able; see the module docstring)."""
    today = _dt.datetime.now(_dt.timezone.utc).date()
    return {"versions": _versions(), "host": platform.node(), "machine": platform.machine(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "uptime_s": None if started_ns is None else (time.monotonic_ns() - started_ns) / 1e9,
            "run": dict(src.run) or None, "release": _release(src),
            "selftest": _selftest(src), "calibration": _calibration(src, today),
            "serial": _serial(src), "live": live}
