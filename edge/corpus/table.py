"""The results table: one row per recording, flat columns, Parquet (pyarrow) or CSV.

Columns, in this order:

- ``id``, ``status`` (ok/failed), ``error`` (one line), ``error_type``, ``frames``,
  ``frames_expected``, ``frames_flagged``, ``model``, ``backend``, ``runtime``;
- ``<map>_<stat>`` for each index map over all valid pixels (``sto2``, ``sto2_index``,
  ``nir``, ``thi``, ``twi``: ``n``, ``mean``, ``p5``, ``p50``, ``p95``; ``thb``: ``n``,
  ``mean``);
- ``class_<name>_<stat>`` per class: ``area_px``, ``area_frac``, ``sto2_mean``, ``sto2_p5``,
  ``sto2_p50``, ``sto2_p95``, and ``<index>_mean``;
- ``time_*``: ``time_task_s``, ``time_wall_s``, ``time_fps``, ``time_<stage>_ms``.

Every column except ``time_*`` is a pure function of the recording, configuration and model,
so the serial path and any cluster give identical values there; ``time_*`` are measurements.
The rows are sorted by ``id``.  The file is ``results.parquet`` when pyarrow is installed
(part of the ``corpus`` extra), else ``results.csv`` (the summary names which).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from edge.core.fileio import atomic_write_bytes

__all__ = ["flatten", "write_table", "read_table", "BASE_COLUMNS"]

BASE_COLUMNS = ("id", "status", "error", "error_type", "frames", "frames_expected",
                "frames_flagged", "model", "backend", "runtime")


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One record (see :mod:`edge.corpus.task`) as a flat row."""
    row: dict[str, Any] = {k: record.get(k) for k in BASE_COLUMNS}
    for name, stats in sorted((record.get("indices") or {}).items()):
        for key, value in stats.items():
            row[f"{name}_{key}"] = value
    for cname, c in (record.get("classes") or {}).items():
        row[f"class_{cname}_area_px"] = c.get("area_px")
        row[f"class_{cname}_area_frac"] = c.get("area_frac")
        for key, value in (c.get("sto2") or {}).items():
            if key != "n":
                row[f"class_{cname}_sto2_{key}"] = value
        for iname, value in sorted((c.get("index_means") or {}).items()):
            row[f"class_{cname}_{iname}_mean"] = value
    t = record.get("timings") or {}
    row["time_task_s"] = t.get("task_s")
    row["time_wall_s"] = t.get("wall_s")
    row["time_fps"] = t.get("fps")
    for stage, ms in sorted((t.get("stages_ms") or {}).items()):
        row[f"time_{stage}_ms"] = ms
    return row


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            seen.setdefault(k, None)
    cols = list(seen)
    # base first, time last, the rest as first met (per-index, then per-class)
    return ([c for c in cols if c in BASE_COLUMNS]
            + [c for c in cols if c not in BASE_COLUMNS and not c.startswith("time_")]
            + sorted(c for c in cols if c.startswith("time_")))


def write_table(out: str | os.PathLike, records: list[dict[str, Any]]) -> dict[str, str]:
    """Write ``results.parquet`` (or ``results.csv``) into ``out``; returns path and format."""
    rows = [flatten(r) for r in sorted(records, key=lambda r: r["id"])]
    cols = _columns(rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path = Path(out) / "results.csv"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v)
                             for k, v in row.items()})
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
        return {"path": str(path), "format": "csv"}
    columns = {c: [row.get(c) for row in rows] for c in cols}
    table = pa.table({c: pa.array(v, type=_arrow_type(pa, v)) for c, v in columns.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path = Path(out) / "results.parquet"
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return {"path": str(path), "format": "parquet"}


def _arrow_type(pa, values: list[Any]):
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in present):
        return pa.float64()
    return pa.string() if present else pa.float64()


def read_table(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of the table in ``out`` (Parquet or CSV), as dicts."""
    out = Path(out)
    pq_path = out / "results.parquet"
    if pq_path.is_file():
        import pyarrow.parquet as pq
        return pq.read_table(pq_path).to_pylist()
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
