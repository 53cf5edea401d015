"""Per-frame latency records: collected from the pipeline's ``on_record`` hook, saved as NPZ.

One record per processed frame, every time on the one ``time.monotonic_ns()`` clock of the
pipeline (see :class:`edge.pipeline.runner.Pipeline`): sequence number, trigger time,
exposure, arrival (camera read returned), dequeue, start and end of every stage (the sinks last
as ``"sink"``), overlay-ready and done times, queue depth, and the round the frame belongs to.
Memory is bounded by the capacity the caller gives (the frame count the user asked for);
records beyond it are counted in ``overflow``, never stored.

The file (:meth:`FrameRecords.save`, NPZ, no pickles) holds the arrays and the rounds' entries
as JSON (``rounds``).  A round's clock states (``clocks``: ``before`` and ``after``,
:mod:`edge.latency.clocks`) are stored compactly: the state at the start of the first round
once (``clocks_start``), and in each round's entry ``clock_changes``: ``before`` (the changes
from the state the previous round ended in, or from ``clocks_start``) and ``after`` (the
changes during the round), each as :func:`~edge.latency.clocks.state_changes` gives them and
left out when empty, so a round whose clocks did not move stores ``"clock_changes": {}``.
:meth:`FrameRecords.load` gives the full states back.  Files of older builds (full
``clocks`` in every round, no ``clocks_start``) load as they are; the format name is
unchanged, so an older build (e.g. a worker of another install) still reads a newer file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edge.errors import DataFormatError
from edge.latency.clocks import apply_changes, state_changes

__all__ = ["FrameRecords", "RecordCollector", "RECORD_FIELDS"]

log = logging.getLogger(__name__)

#: Scalar fields of a record (int64 ns unless noted).
RECORD_FIELDS = ("seq", "trigger_ns", "arrival_ns", "dequeue_ns", "overlay_ready_ns",
                 "done_ns", "queue_depth", "round")
_FORMAT = "hsi-edge-latency-records/1"


@dataclass
class FrameRecords:
    """Records of one or more rounds as arrays.

    Attributes
    ----------
    stage_names : tuple of str
        The stages in pipeline order (the sinks last as ``"sink"``); S names.
    fields : dict of str to ndarray of shape (n,), int64
        :data:`RECORD_FIELDS`.
    exposure_us : ndarray of shape (n,), float64
    stage_start_ns, stage_end_ns : ndarray of shape (n, S), int64
    rounds : list of dict
        Per round: ``index``, ``arm`` ("A", "B" or ""), ``frames_dropped``, ``frames_missed``,
        ``warmup`` (frames excluded at its start), ``overflow``.
    sub_names : tuple of str
        Finer timings reported by the stages (``Stage.sub_timings_ms``: the backend's
        calibrate/unmix/... steps; on a GPU, CUDA-event times of the kernels on their stream).
    sub_ms : ndarray of shape (n, K), float64
        Their values per frame in ms (NaN where a frame had none).
    """

    stage_names: tuple[str, ...]
    fields: dict[str, np.ndarray]
    exposure_us: np.ndarray
    stage_start_ns: np.ndarray
    stage_end_ns: np.ndarray
    rounds: list[dict[str, Any]] = field(default_factory=list)
    sub_names: tuple[str, ...] = ()
    sub_ms: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sub_ms is None:
            self.sub_ms = np.zeros((len(self), len(self.sub_names)), np.float64)

    def __len__(self) -> int:
        return int(self.fields["seq"].size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def stage_ns(self, name: str) -> np.ndarray:
        """Durations of stage ``name``, shape (n,), int64 ns."""
        i = self.stage_names.index(name)
        return self.stage_end_ns[:, i] - self.stage_start_ns[:, i]

    def select(self, mask: np.ndarray) -> "FrameRecords":
        """The records where ``mask`` (shape (n,), bool) is True (same rounds list)."""
        return FrameRecords(self.stage_names, {k: v[mask] for k, v in self.fields.items()},
                            self.exposure_us[mask], self.stage_start_ns[mask],
                            self.stage_end_ns[mask], list(self.rounds), self.sub_names,
                            self.sub_ms[mask])

    def round(self, index: int) -> "FrameRecords":
        sub = self.select(self.fields["round"] == index)
        sub.rounds = [r for r in self.rounds if r["index"] == index]
        return sub

    @staticmethod
    def concatenate(parts: list["FrameRecords"]) -> "FrameRecords":
        """Records of several rounds in one object (stage names must agree)."""
        if not parts:
            raise DataFormatError("records: nothing to concatenate (no rounds)")
        names = parts[0].stage_names
        for p in parts[1:]:
            if p.stage_names != names:
                raise DataFormatError(f"records: stage names differ between rounds: "
                                      f"{list(names)} vs {list(p.stage_names)}")
        subs = tuple(dict.fromkeys(n for p in parts for n in p.sub_names))
        sub_ms = np.concatenate([
            np.stack([p.sub_ms[:, p.sub_names.index(n)] if n in p.sub_names
                      else np.full(len(p), np.nan) for n in subs], axis=1)
            if subs else np.zeros((len(p), 0)) for p in parts])
        return FrameRecords(
            names, {k: np.concatenate([p.fields[k] for p in parts]) for k in RECORD_FIELDS},
            np.concatenate([p.exposure_us for p in parts]),
            np.concatenate([p.stage_start_ns for p in parts]),
            np.concatenate([p.stage_end_ns for p in parts]),
            [r for p in parts for r in p.rounds], subs, sub_ms)

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the raw samples to ``path`` (``.npz``, no pickles); returns the path."""
        import json

        path = Path(path)
        arrays = {f"f_{k}": v for k, v in self.fields.items()}
        start, rounds = _compact_clocks(self.rounds)
        if start is not None:
            arrays["clocks_start"] = np.array(json.dumps(start))
        np.savez_compressed(
            path, format=np.array(_FORMAT), stage_names=np.array(self.stage_names, dtype=str),
            exposure_us=self.exposure_us, stage_start_ns=self.stage_start_ns,
            stage_end_ns=self.stage_end_ns, rounds=np.array(json.dumps(rounds)),
            sub_names=np.array(self.sub_names, dtype=str), sub_ms=self.sub_ms, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FrameRecords":
        """Read records written by :meth:`save`.

        Raises
        ------
        DataFormatError
            Not a records file of this format (names the file).
        """
        import json
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or str(z["format"]) != _FORMAT:
                    raise DataFormatError(f"{path}: not a latency records file "
                                          f"(expected format {_FORMAT!r})")
                names = tuple(str(s) for s in z["stage_names"])
                fields = {k: z[f"f_{k}"].astype(np.int64) for k in RECORD_FIELDS}
                subs = tuple(str(s) for s in z["sub_names"]) if "sub_names" in z else ()
                rounds = json.loads(str(z["rounds"]))
                if "clocks_start" in z:
                    rounds = _expand_clocks(json.loads(str(z["clocks_start"])), rounds)
                return cls(names, fields, z["exposure_us"].astype(np.float64),
                           z["stage_start_ns"].astype(np.int64),
                           z["stage_end_ns"].astype(np.int64), rounds,
                           subs, z["sub_ms"].astype(np.float64) if subs else None)
        except (OSError, ValueError, KeyError, TypeError, IndexError,
                zipfile.BadZipFile) as exc:
            raise DataFormatError(f"{path}: cannot read latency records: {exc}") from exc


def _compact_clocks(rounds: list[dict[str, Any]]) -> tuple[dict | None, list[dict[str, Any]]]:
    """(the first round's state before, the rounds with ``clock_changes`` for ``clocks``);
    (None, rounds) when no round has clock states.  See the module docstring."""
    start, prev, out = None, None, []
    for r in rounds:
        clocks = r.get("clocks")
        if not isinstance(clocks, dict):
            out.append(r)
            continue
        before, after = clocks.get("before") or {}, clocks.get("after") or {}
        if start is None:
            start = prev = before
        changes = {"before": state_changes(prev, before), "after": state_changes(before, after)}
        r = {k: v for k, v in r.items() if k != "clocks"}
        r["clock_changes"] = {k: v for k, v in changes.items() if v}
        out.append(r)
        prev = after
    return start, out


def _expand_clocks(start: dict[str, Any], rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inverse of :func:`_compact_clocks`: full ``clocks`` states in every round."""
    prev = start
    for r in rounds:
        changes = r.pop("clock_changes", None)
        if changes is None:
            continue
        before = apply_changes(prev, changes.get("before", []))
        after = apply_changes(before, changes.get("after", []))
        r["clocks"] = {"before": before, "after": after}
        prev = after
    return rounds


class RecordCollector:
    """The pipeline's ``on_record`` hook: stores up to ``capacity`` records in arrays.

    Parameters
    ----------
    capacity : int
        Most records kept (>= 1); later ones are counted in ``overflow``.
    round_index : int
        Stored with every record.
    """

    def __init__(self, capacity: int, round_index: int = 0):
        if int(capacity) < 1:
            raise ValueError(f"capacity: expected an integer >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        self.round_index = int(round_index)
        self.n = 0
        self.overflow = 0
        self._fields = {k: np.zeros(self.capacity, np.int64) for k in RECORD_FIELDS}
        self._exposure = np.zeros(self.capacity, np.float64)
        self._names: tuple[str, ...] | None = None
        self._start: np.ndarray | None = None
        self._end: np.ndarray | None = None
        self._sub: dict[str, np.ndarray] = {}

    def __call__(self, rec: Mapping[str, Any]) -> None:
        if self.n >= self.capacity:
            self.overflow += 1
            return
        spans = rec["stages"]
        if self._names is None:
            self._names = tuple(s[0] for s in spans)
            self._start = np.zeros((self.capacity, len(spans)), np.int64)
            self._end = np.zeros_like(self._start)
        elif tuple(s[0] for s in spans) != self._names:
            raise DataFormatError(f"record: stages changed within a round: "
                                  f"{[s[0] for s in spans]} vs {list(self._names)}")
        i = self.n
        for k in RECORD_FIELDS:
            self._fields[k][i] = self.round_index if k == "round" else int(rec[k])
        self._exposure[i] = float(rec["exposure_us"])
        for j, (_, t0, t1) in enumerate(spans):
            self._start[i, j] = t0
            self._end[i, j] = t1
        for name, ms in (rec.get("sub_ms") or {}).items():
            col = self._sub.get(name)
            if col is None:
                if len(self._sub) >= 32:      # bounded: a stage inventing names is ignored
                    continue
                col = self._sub[name] = np.full(self.capacity, np.nan)
            col[i] = float(ms)
        self.n += 1

    def records(self, **round_info: Any) -> FrameRecords:
        """The records so far; ``round_info`` is stored in the round's entry."""
        n = self.n
        names = self._names or ()
        start = self._start[:n].copy() if self._start is not None else np.zeros((0, 0), np.int64)
        end = self._end[:n].copy() if self._end is not None else np.zeros((0, 0), np.int64)
        info = {"index": self.round_index, "overflow": self.overflow}
        info.update(round_info)
        subs = tuple(self._sub)
        sub_ms = (np.stack([self._sub[k][:n] for k in subs], axis=1) if subs
                  else np.zeros((n, 0)))
        return FrameRecords(names, {k: v[:n].copy() for k, v in self._fields.items()},
                            self._exposure[:n].copy(), start, end, [info], subs, sub_ms)
