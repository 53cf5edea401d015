"""Summaries of latency records: per stage and end to end, per round and for a whole run.

Durations derived from a record (all on the pipeline's monotonic clock):

==============  ==============================================================================
``acquire``     arrival - trigger (exposure, readout and transfer; the camera's part)
``queue``       dequeue - arrival (waiting for the processing thread)
stage names     end - start of each stage (``sink``: all sinks)
``to_overlay``  overlay ready - trigger
``end_to_end``  done (sinks finished: on screen) - trigger
==============  ==============================================================================

Deadline misses (end to end) are counted against a deadline that defaults to the frame period:
a processed frame is late when its end-to-end latency exceeds it, and a frame that never
reached the screen (a gap in the sequence numbers: dropped by the pipeline or missed by the
camera) missed its slot too, so ``slots = frames + not_shown``.  The miss rate carries a
two-sided Clopper-Pearson interval (exact binomial, ``scipy.stats.beta``).  Percentiles are
numpy's (linear) on the raw records, which are bounded by the frame count asked for.
Warm-up frames (the first ``warmup`` of every round) are left out and counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge.latency.records import FrameRecords

__all__ = ["describe", "clopper_pearson", "durations", "summarise", "round_stats",
           "PERCENTILES"]

#: Percentiles reported (key suffix -> q).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval of a rate ``k / n``; (nan, nan) when n == 0."""
    from scipy.stats import beta

    if n <= 0:
        return float("nan"), float("nan")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def describe(samples_ns: np.ndarray) -> dict[str, float]:
    """n, min, p50, p90, p99, p99.9, max, mean, std and jitter (p99 - p50) in ms.

    Parameters
    ----------
    samples_ns : ndarray of shape (n,)
        Durations in ns.  Empty: n = 0 and NaN figures (never 0).
    """
    x = np.asarray(samples_ns, dtype=np.float64) / 1e6
    out: dict[str, float] = {"n": int(x.size)}
    if x.size == 0:
        out.update({k: float("nan") for k in ("min_ms", *(f"{p}_ms" for p in PERCENTILES),
                                               "max_ms", "mean_ms", "std_ms", "jitter_ms")})
        return out
    qs = np.percentile(x, list(PERCENTILES.values()))
    out["min_ms"] = float(x.min())
    out.update({f"{name}_ms": float(v) for name, v in zip(PERCENTILES, qs)})
    out["max_ms"] = float(x.max())
    out["mean_ms"] = float(x.mean())
    out["std_ms"] = float(x.std())
    out["jitter_ms"] = out["p99_ms"] - out["p50_ms"]
    return out


def durations(rec: FrameRecords) -> dict[str, np.ndarray]:
    """Named durations (ns, shape (n,)) of ``rec`` in report order (see the module doc)."""
    f = rec.fields
    out = {"acquire": f["arrival_ns"] - f["trigger_ns"],
           "queue": f["dequeue_ns"] - f["arrival_ns"]}
    for name in rec.stage_names:
        out[name] = rec.stage_ns(name)
    out["to_overlay"] = f["overlay_ready_ns"] - f["trigger_ns"]
    out["end_to_end"] = f["done_ns"] - f["trigger_ns"]
    return out


def _after_warmup(rec: FrameRecords, warmup: int) -> tuple[FrameRecords, int]:
    """Records without the first ``warmup`` of each round, and how many were left out."""
    keep = np.ones(len(rec), bool)
    rounds = rec.fields["round"]
    for r in np.unique(rounds):
        idx = np.flatnonzero(rounds == r)
        keep[idx[:warmup]] = False
    return rec.select(keep), int((~keep).sum())


def _not_shown(rec: FrameRecords) -> int:
    """Frames that never reached the screen: gaps in ``seq`` within each round."""
    total = 0
    for r in np.unique(rec.fields["round"]):
        seq = rec.fields["seq"][rec.fields["round"] == r]
        if seq.size > 1:
            total += int(np.clip(np.diff(seq) - 1, 0, None).sum())
    return total


def summarise(rec: FrameRecords, *, period_ns: int, deadline_ns: int | None = None,
              warmup: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """The summary of a run (all rounds pooled; the gate uses :func:`round_stats`).

    Parameters
    ----------
    rec : FrameRecords
    period_ns : int
        Frame period of the camera (1 / fps).
    deadline_ns : int, optional
        End-to-end deadline; default the frame period.
    warmup : int
        Frames left out at the start of every round.

    Returns
    -------
    dict
        ``frames``, ``warmup_excluded``, ``frames_dropped``, ``frames_missed`` (as the
        pipeline counted them, all rounds, warm-up included), ``not_shown``, ``period_ms``,
        ``deadline_ms``, ``stages``: name -> :func:`describe` (+ ``late``: frames longer than a
        frame period), ``end_to_end`` (+ ``deadline``: misses, slots, rate, ci, and
        ``frame_periods``: p50/p99/max of the latency in whole frame periods, rounded up),
        ``sub_stages``: the stages' finer timings (reported, not gated; on a GPU the CUDA-event
        times a stage reports through ``Stage.sub_timings_ms``).
    """
    if period_ns <= 0:
        raise ValueError(f"period_ns: expected > 0, got {period_ns!r}")
    deadline_ns = int(period_ns if deadline_ns is None else deadline_ns)
    kept, excluded = _after_warmup(rec, warmup)
    d = durations(kept)
    stages = {}
    for name, x in d.items():
        s = describe(x)
        s["late"] = int((x > period_ns).sum())
        stages[name] = s
    e2e = stages.pop("end_to_end")
    late = int((d["end_to_end"] > deadline_ns).sum())
    not_shown = _not_shown(kept)
    slots = len(kept) + not_shown
    misses = late + not_shown
    lo, hi = clopper_pearson(misses, slots, confidence)
    e2e["deadline"] = {"late": late, "not_shown": not_shown, "misses": misses, "slots": slots,
                       "rate": misses / slots if slots else float("nan"),
                       "ci": [lo, hi], "confidence": confidence}
    periods = np.ceil(d["end_to_end"] / period_ns) if len(kept) else np.zeros(0)
    e2e["frame_periods"] = ({"p50": float(np.percentile(periods, 50)),
                             "p99": float(np.percentile(periods, 99)),
                             "max": int(periods.max()),
                             "counts": {str(int(k)): int(c) for k, c in
                                        zip(*np.unique(periods, return_counts=True))}}
                            if periods.size else {})
    subs = {name: describe(np.round(col[np.isfinite(col)] * 1e6).astype(np.int64))
            for name, col in zip(kept.sub_names, kept.sub_ms.T)}
    return {"frames": len(kept), "warmup_excluded": excluded, "sub_stages": subs,
            "frames_dropped": int(sum(r.get("frames_dropped", 0) for r in rec.rounds)),
            "frames_missed": int(sum(r.get("frames_missed", 0) for r in rec.rounds)),
            "not_shown": not_shown, "period_ms": period_ns / 1e6,
            "deadline_ms": deadline_ns / 1e6, "stages": stages, "end_to_end": e2e}


def round_stats(rec: FrameRecords, *, period_ns: int, deadline_ns: int | None = None,
                warmup: int = 0) -> list[dict[str, Any]]:
    """Per round: the statistics the gate compares (one entry per round, in order).

    Each entry: ``index``, ``arm``, ``metrics``: name -> {``p50``, ``p99`` in ms}, and
    ``misses``/``slots`` of the end-to-end deadline; ``void`` (the clock changes) only for a
    void round.
    """
    out = []
    for info in rec.rounds:
        r = rec.round(info["index"])
        s = summarise(r, period_ns=period_ns, deadline_ns=deadline_ns, warmup=warmup)
        metrics = {name: {"p50": v["p50_ms"], "p99": v["p99_ms"]}
                   for name, v in [*s["stages"].items(), ("end_to_end", s["end_to_end"])]}
        dl = s["end_to_end"]["deadline"]
        entry = {"index": info["index"], "arm": info.get("arm", ""), "metrics": metrics,
                 "misses": dl["misses"], "slots": dl["slots"], "frames": s["frames"]}
        if info.get("void"):      # clocks changed during the round (edge.latency.clocks)
            entry["void"] = list(info["void"])
        out.append(entry)
    return out


def frame_periods(latency_ns: float, period_ns: float) -> int:
    """Latency in whole frame periods (rounded up, as a display shows it at the next slot)."""
    return int(math.ceil(latency_ns / period_ns))
