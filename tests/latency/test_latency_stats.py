"""Summaries of per-frame records from a scripted clock: exact counts and percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from edge.latency.records import FrameRecords, RecordCollector
from edge.latency.stats import clopper_pearson, describe, round_stats, summarise

from latency_scripted import MS, scripted_records

PERIOD = 40 * MS


def test_describe_matches_numpy_exactly():
    x = np.random.default_rng(0).lognormal(np.log(12e6), 0.3, 1000).astype(np.int64)
    d = describe(x)
    ms = x / 1e6
    assert d["n"] == 1000
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p99_9_ms", 99.9)):
        assert d[key] == np.percentile(ms, q)
    assert (d["min_ms"], d["max_ms"], d["std_ms"]) == (ms.min(), ms.max(), ms.std())
    assert d["jitter_ms"] == d["p99_ms"] - d["p50_ms"]
    assert np.isnan(describe(np.zeros(0))["p50_ms"]) and describe(np.zeros(0))["n"] == 0


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (1, 1000), (57, 300)])
def test_clopper_pearson_matches_scipy_binomtest(k, n):
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1, rel=1e-9)   # 0.3085
    assert np.isnan(clopper_pearson(0, 0)[0])


def test_deadline_drops_and_warmup_counted_exactly():
    # 12 frames; seq 5 and 6 never shown (a gap of 2), seq 9 missing (gap of 1);
    # latencies: two over the 40 ms deadline after warm-up, one in the warm-up
    seqs = [0, 1, 2, 3, 4, 7, 8, 10, 11, 12, 13, 14]
    lat = [45.0, 20, 20, 20, 20, 41, 20, 20, 80, 20, 20, 20]
    rec = scripted_records(lat, seqs=seqs, frames_dropped=2, frames_missed=1)
    s = summarise(rec, period_ns=PERIOD, warmup=2)
    assert s["frames"] == 10 and s["warmup_excluded"] == 2
    assert (s["frames_dropped"], s["frames_missed"]) == (2, 1)
    dl = s["end_to_end"]["deadline"]
    assert dl["late"] == 2 and dl["not_shown"] == 3 and s["not_shown"] == 3
    assert dl["misses"] == 5 and dl["slots"] == 13
    assert dl["rate"] == 5 / 13
    assert dl["ci"] == list(clopper_pearson(5, 13))
    e2e = s["end_to_end"]
    assert e2e["max_ms"] == 80.0 and e2e["min_ms"] == 20.0
    assert e2e["p50_ms"] == 20.0
    assert e2e["frame_periods"]["counts"] == {"1": 8, "2": 2}   # 41, 80 ms -> 2 periods
    assert s["stages"]["acquire"]["p50_ms"] == 10.0
    assert s["stages"]["sink"]["max_ms"] == 0.0
    # stages add up to the end-to-end latency exactly
    chain, infer = s["stages"]["chain"], s["stages"]["infer"]
    assert chain["n"] == infer["n"] == 10
    # a deadline other than the period
    s2 = summarise(rec, period_ns=PERIOD, deadline_ns=30 * MS, warmup=2)
    assert s2["end_to_end"]["deadline"]["late"] == 2 and s2["deadline_ms"] == 30.0
    s3 = summarise(rec, period_ns=PERIOD, deadline_ns=19 * MS, warmup=2)
    assert s3["end_to_end"]["deadline"]["late"] == 10


def test_a_single_200ms_stall_shows_in_max_p999_and_misses():
    # 1000 frames (40 s at 25 fps) at 15 ms; a 200 ms stall hits frame 500: it and the two
    # frames queued behind it are shown late (215, 175, 135 ms), the next three slots never
    lat = [15.0] * 997
    lat[500:503] = [215.0, 175.0, 135.0]
    seqs = list(range(503)) + list(range(506, 1000))
    rec = scripted_records(lat, seqs=seqs)
    s = summarise(rec, period_ns=PERIOD, warmup=0)
    e = s["end_to_end"]
    assert e["max_ms"] == 215.0
    x = np.array(lat)
    assert e["p99_9_ms"] == np.percentile(x, 99.9) and e["p99_9_ms"] > 170.0
    assert e["p99_ms"] == 15.0 and e["p50_ms"] == 15.0          # the bulk does not see it
    assert e["deadline"]["late"] == 3 and e["deadline"]["not_shown"] == 3
    assert e["deadline"]["misses"] == 6 and e["deadline"]["slots"] == 1000
    assert e["frame_periods"]["max"] == 6                          # 215 ms = 5.4 periods
    quiet = summarise(scripted_records([15.0] * 1000), period_ns=PERIOD)
    assert quiet["end_to_end"]["deadline"]["misses"] == 0
    assert quiet["end_to_end"]["p99_9_ms"] == 15.0 and quiet["end_to_end"]["max_ms"] == 15.0


def test_rounds_keep_their_own_warmup_and_gaps():
    r0 = scripted_records([20.0] * 5, round_index=0, arm="A")
    r1 = scripted_records([30.0] * 5, seqs=[0, 1, 2, 4, 5], round_index=1, arm="B")
    rec = FrameRecords.concatenate([r0, r1])
    s = summarise(rec, period_ns=PERIOD, warmup=1)
    assert s["warmup_excluded"] == 2 and s["frames"] == 8 and s["not_shown"] == 1
    rs = round_stats(rec, period_ns=PERIOD, warmup=1)
    assert [r["arm"] for r in rs] == ["A", "B"]
    assert rs[0]["metrics"]["end_to_end"]["p50"] == 20.0
    assert rs[1]["metrics"]["end_to_end"]["p50"] == 30.0
    assert (rs[1]["misses"], rs[1]["slots"]) == (1, 5)


def test_records_roundtrip_npz(tmp_path):
    rec = FrameRecords.concatenate([scripted_records([20.0, 25.0], round_index=0, arm="A"),
                                    scripted_records([21.0, 26.0], round_index=1, arm="B")])
    back = FrameRecords.load(rec.save(tmp_path / "r.npz"))
    assert back.stage_names == ("chain", "infer", "sink")
    assert back.rounds == rec.rounds
    for k in rec.fields:
        np.testing.assert_array_equal(back.fields[k], rec.fields[k])
    np.testing.assert_array_equal(back.stage_end_ns, rec.stage_end_ns)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception, match=r"bad.npz: cannot read latency records"):
        FrameRecords.load(tmp_path / "bad.npz")


def test_collector_is_bounded_and_counts_overflow():
    rec = scripted_records([20.0] * 10, capacity=4)
    assert len(rec) == 4 and rec.rounds[0]["overflow"] == 6
    with pytest.raises(ValueError, match=r"capacity: expected an integer >= 1, got 0"):
        RecordCollector(0)


def test_sub_timings_are_recorded_and_summarised(tmp_path):
    col = RecordCollector(3)
    for i, sub in enumerate(({"unmix": 2.0, "pack": 0.5}, {"unmix": 4.0}, {"unmix": 3.0})):
        t = i * 40 * MS
        col({"seq": i, "trigger_ns": t, "exposure_us": 8000.0, "arrival_ns": t, "dequeue_ns": t,
             "queue_depth": 0, "stages": [("chain", t, t + 5 * MS), ("sink", t + 5 * MS,
                                                                     t + 5 * MS)],
             "overlay_ready_ns": t + 5 * MS, "done_ns": t + 5 * MS, "sub_ms": sub})
    rec = FrameRecords.load(col.records().save(tmp_path / "s.npz"))
    assert rec.sub_names == ("unmix", "pack")
    np.testing.assert_array_equal(rec.sub_ms[:, 0], [2.0, 4.0, 3.0])
    assert rec.sub_ms[0, 1] == 0.5 and np.isnan(rec.sub_ms[1:, 1]).all()
    s = summarise(rec, period_ns=PERIOD)
    assert s["sub_stages"]["unmix"]["p50_ms"] == 3.0 and s["sub_stages"]["pack"]["n"] == 1
