"""Latency results on disk, and baselines per hardware key.

A result is a folder with ``latency.json`` (settings, fingerprint, summary, per-round
statistics, gate verdict for A/B runs) and ``latency.npz`` (the raw per-frame records,
:class:`~edge.latency.records.FrameRecords`).  A baseline store is a folder with one
sub-folder per hardware key; each stored baseline is a copy of a result named
``<UTC time>_<commit>``.  ``history`` reads them in time order for trend plots.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, DataFormatError
from edge.latency.records import FrameRecords

__all__ = ["save_result", "load_result", "load_records", "BaselineStore", "RESULT_FORMAT",
           "DEFAULT_STORE_ENV", "history_point"]

log = logging.getLogger(__name__)

RESULT_FORMAT = "hsi-edge-latency-result/1"
#: Environment variable naming the default baseline store.
DEFAULT_STORE_ENV = "HSI_EDGE_LATENCY_STORE"
JSON_NAME, NPZ_NAME = "latency.json", "latency.npz"


def save_result(out_dir: str | os.PathLike, doc: dict[str, Any],
                records: FrameRecords) -> Path:
    """Write ``latency.npz`` then ``latency.json`` into ``out_dir``; returns the JSON path."""
    from edge.pipeline.app import write_json

    out = Path(out_dir)
    doc = dict(doc, format=RESULT_FORMAT)
    records.save(out / NPZ_NAME)
    write_json(out / JSON_NAME, doc)
    return out / JSON_NAME


def _json_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / JSON_NAME if p.is_dir() else p


def load_result(path: str | os.PathLike, *, kind: str | None = None,
                what: str = "") -> dict[str, Any]:
    """Read a result (its folder or its ``latency.json``).

    Parameters
    ----------
    kind : {"run", "ab"}, optional
        The kind required (``run``: one unit's measurement from ``hsi-edge latency run``).
    what : str
        Names the use in the error for a result of another kind (e.g. ``baseline add``).

    Raises
    ------
    DataFormatError
        Missing, unreadable, not a latency result, or of another kind (names the file).
    """
    p = _json_path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise DataFormatError(f"{p}: no latency result here (expected {JSON_NAME} from "
                              f"`hsi-edge latency run`)") from exc
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{p}: cannot read latency result: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise DataFormatError(f"{p}: not a latency result (expected format {RESULT_FORMAT!r})")
    for key in ("fingerprint", "rounds", "summary", "settings"):
        if key not in doc:
            raise DataFormatError(f"{p}: latency result lacks {key!r}")
    if kind is not None and doc.get("kind", "run") != kind:
        got = {"ab": "an A/B result (hsi-edge latency ab)",
               "compare": "a comparison"}.get(doc.get("kind"), f"kind {doc.get('kind')!r}")
        raise DataFormatError(f"{p}: {what + ': ' if what else ''}expected one unit's result "
                              f"from `hsi-edge latency run`, got {got}")
    doc["_path"] = str(p)
    return doc


def history_point(path: str | os.PathLike) -> dict[str, Any]:
    """The trend figures of a stored baseline: ``label``, ``p50_ms``, ``p99_ms``,
    ``miss_rate``.

    Raises
    ------
    DataFormatError
        The entry is damaged or not a run result (names the file).
    """
    doc = load_result(path, kind="run", what="baseline history")
    try:
        e = doc["summary"]["end_to_end"]
        return {"label": Path(path).name, "p50_ms": float(e["p50_ms"]),
                "p99_ms": float(e["p99_ms"]), "miss_rate": float(e["deadline"]["rate"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{doc['_path']}: damaged latency result: summary lacks "
                              f"end_to_end figures ({type(exc).__name__}: {exc})") from exc


def load_records(path: str | os.PathLike) -> FrameRecords:
    return FrameRecords.load(_json_path(path).parent / NPZ_NAME)


class BaselineStore:
    """Baselines under ``root/<hardware_key>/<stamp>/``."""

    def __init__(self, root: str | os.PathLike | None = None):
        root = root or os.environ.get(DEFAULT_STORE_ENV) or "latency-baselines"
        self.root = Path(root)

    def add(self, result_path: str | os.PathLike) -> Path:
        """Copy a result into the store under its hardware key; returns the new folder.

        Raises
        ------
        DataFormatError
            Not one unit's run result (e.g. an A/B result), or a run with void rounds (its
            clocks changed: it cannot be a reference).
        """
        from edge.latency.ab import stored_void

        doc = load_result(result_path, kind="run", what="baseline add")
        void = stored_void(doc)
        if void:
            first = void[0]
            raise DataFormatError(
                f"{doc['_path']}: baseline add: the run is void ({len(void)} round(s) whose "
                f"clocks changed, first round {first['round']}: "
                f"{'; '.join(first['changes'])}); measure again with settled clocks")
        key = doc["fingerprint"]["hardware_key"]
        commit = (doc["fingerprint"].get("git_commit") or "nocommit")[:10]
        dirty = "-dirty" if doc["fingerprint"].get("git_dirty") else ""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.root / key / f"{stamp}_{commit}{dirty}"
        n = 1
        while dest.exists():
            n += 1
            dest = self.root / key / f"{stamp}_{commit}{dirty}_{n}"
        dest.mkdir(parents=True)
        src = Path(doc["_path"]).parent
        for name in (JSON_NAME, NPZ_NAME):
            shutil.copy2(src / name, dest / name)
        return dest

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def history(self, key: str) -> list[Path]:
        """Stored baselines of ``key``, oldest first."""
        d = self.root / key
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if (p / JSON_NAME).is_file())

    def latest(self, key: str) -> Path:
        """The newest baseline of ``key``.

        Raises
        ------
        ConfigError
            None stored for this key (names the store and the keys it has).
        """
        hist = self.history(key)
        if not hist:
            have = ", ".join(self.keys()) or "none"
            raise ConfigError(f"--store: no baseline for hardware key {key!r} in {self.root} "
                              f"(keys there: {have}); add one with `hsi-edge latency baseline "
                              f"add RESULT`")
        return hist[-1]
