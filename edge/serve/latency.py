"""Rolling per-stage latency for the service page, fed by the pipeline's per-frame records.

:meth:`RollingLatency.add` is the pipeline's ``on_record`` callback (one dict per processed
frame, times ``time.monotonic_ns()``; see :class:`~edge.pipeline.runner.Pipeline`): it keeps
the last ``window`` records' durations in fixed-size arrays (O(1), no allocation per frame)
and :meth:`summary` computes percentiles on request.  End to end is trigger -> sinks done;
``overlay`` is trigger -> end of the last stage (what the surgeon's screen can show).  A frame
misses its deadline when end to end exceeds ``deadline_ms``; without one, the deadline is the
median trigger interval (one frame period), as ``hsi-edge latency`` does.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from edge.errors import ConfigError
from edge.pipeline.metrics import summarise_ms

__all__ = ["RollingLatency"]


class RollingLatency:
    """The last ``window`` frames' stage durations (ms), end to end and deadline misses.

    Parameters
    ----------
    window : int
        Frames kept (>= 2).
    deadline_ms : float or None
        End-to-end deadline; None: one frame period (median trigger interval).
    then : callable, optional
        Also called as ``then(record, durations_ms)`` with every record (the service page
        hands the durations to :meth:`~edge.serve.live.FrameHub.note_stages`).
    """

    def __init__(self, window: int = 600, deadline_ms: float | None = None,
                 then: Callable[[dict, dict], None] | None = None):
        if int(window) < 2:
            raise ConfigError(f"window: expected an integer >= 2, got {window!r}")
        if deadline_ms is not None and not float(deadline_ms) > 0:
            raise ConfigError(f"--deadline-ms: expected a value > 0, got {deadline_ms!r}")
        self.window = int(window)
        self.deadline_ms = None if deadline_ms is None else float(deadline_ms)
        self._then = then
        self._lock = threading.Lock()
        self._cols: dict[str, np.ndarray] = {}
        self._trigger = np.zeros(self.window, np.int64)
        self._n = 0          # records seen in total
        self._last_seq: int | None = None
        self.missed_seq = 0  # gaps in the camera's frame ids (missed triggers, drops)

    def _col(self, name: str) -> np.ndarray:
        col = self._cols.get(name)
        if col is None:
            col = self._cols[name] = np.full(self.window, np.nan)
        return col

    def add(self, record: dict[str, Any]) -> None:
        """Take one per-frame record (the ``on_record`` hook); O(number of stages)."""
        trig = int(record["trigger_ns"])
        durations = {name: (t1 - t0) / 1e6 for name, t0, t1 in record["stages"]}
        durations["overlay"] = (int(record["overlay_ready_ns"]) - trig) / 1e6
        durations["end_to_end"] = (int(record["done_ns"]) - trig) / 1e6
        if "arrival_ns" in record and "dequeue_ns" in record:
            durations["queue"] = (int(record["dequeue_ns"]) - int(record["arrival_ns"])) / 1e6
        with self._lock:
            i = self._n % self.window
            for name, ms in durations.items():
                self._col(name)[i] = ms
            for name, col in self._cols.items():
                if name not in durations:
                    col[i] = np.nan
            self._trigger[i] = trig
            seq = int(record["seq"])
            if self._last_seq is not None and seq > self._last_seq + 1:
                self.missed_seq += seq - self._last_seq - 1
            self._last_seq = seq
            self._n += 1
        if self._then is not None:
            self._then(record, durations)

    def summary(self) -> dict[str, Any]:
        """Percentiles per stage over the window.

        Returns
        -------
        dict
            ``frames`` (in the window), ``total`` (ever), ``deadline_ms``, ``deadline_source``
            ("given" or "frame period"), ``misses`` (end to end over the deadline, in the
            window), ``miss_fraction``, ``missed_frames`` (frame-id gaps, ever), ``stages``:
            name -> ``{"mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"}``
            (:func:`~edge.pipeline.metrics.summarise_ms`; None when no sample), in pipeline order, then ``queue``, ``overlay``, ``end_to_end``.
        """
        with self._lock:
            n = min(self._n, self.window)
            cols = {k: v.copy() for k, v in self._cols.items()}
            trig = self._trigger.copy()
            total, newest = self._n, (self._n - 1) % self.window
        order = [k for k in cols if k not in ("queue", "overlay", "end_to_end")]
        order += [k for k in ("queue", "overlay", "end_to_end") if k in cols]
        stages = {}
        for name in order:
            v = cols[name][:n] if total <= self.window else cols[name]
            v = v[np.isfinite(v)]
            figures = summarise_ms(v, scale=1.0)
            # None, not NaN, without a sample: the page gets JSON
            stages[name] = figures if v.size else dict.fromkeys(figures)
        deadline, source = self.deadline_ms, "given"
        if deadline is None:
            source = "frame period"
            if n >= 2:
                # triggers in arrival order (the ring wraps at newest)
                t = np.roll(trig, -(newest + 1))[-n:] if total > self.window else trig[:n]
                d = np.diff(t)
                d = d[d > 0]
                deadline = float(np.median(d)) / 1e6 if d.size else None
        misses = None
        if deadline is not None and "end_to_end" in cols:
            e2e = cols["end_to_end"][:n] if total <= self.window else cols["end_to_end"]
            misses = int(np.count_nonzero(e2e[np.isfinite(e2e)] > deadline))
        return {"frames": n, "total": total, "deadline_ms": deadline,
                "deadline_source": source, "misses": misses,
                "miss_fraction": None if misses is None or not n else misses / n,
                "missed_frames": self.missed_seq, "stages": stages}
