"""A scripted clock and record stream for exact statistics tests."""

from __future__ import annotations

from edge.latency.records import RecordCollector

MS = 1_000_000


def scripted_records(latencies_ms, *, period_ms=40.0, seqs=None, round_index=0, arm="",
                     stages=(("chain", 0.5), ("infer", 0.3)), acquire_ms=10.0, capacity=None,
                     **round_info):
    """Records of frames triggered on a grid, each with a given end-to-end latency.

    Frame i (sequence ``seqs[i]``, default i) is triggered at ``seq * period``, arrives after
    ``acquire_ms``, is dequeued at once, and its stages share the rest of its latency in the
    proportions given (the sinks take 0); so end_to_end == latencies_ms[i] exactly (in ns).
    """
    seqs = list(range(len(latencies_ms))) if seqs is None else list(seqs)
    col = RecordCollector(capacity or len(latencies_ms), round_index=round_index)
    for seq, lat in zip(seqs, latencies_ms):
        t = int(seq * period_ms * MS)
        arrival = t + int(acquire_ms * MS)
        rest = int(lat * MS) - int(acquire_ms * MS)
        spans, cur = [], arrival
        for name, share in stages:
            d = int(rest * share / sum(s for _, s in stages))
            spans.append((name, cur, cur + d))
            cur += d
        end = t + int(lat * MS)
        spans[-1] = (spans[-1][0], spans[-1][1], end)
        spans.append(("sink", end, end))
        col({"seq": seq, "trigger_ns": t, "exposure_us": 8000.0, "arrival_ns": arrival,
             "dequeue_ns": arrival, "queue_depth": 0, "stages": spans,
             "overlay_ready_ns": end, "done_ns": end})
    return col.records(arm=arm, **round_info)
