"""Bounded streaming statistics (issue 15 item 10): exact counts, percentiles within 1 %."""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest

from edge.pipeline.app import TruthScorer
from edge.pipeline.metrics import LatencyStats, StreamingHistogram, summarise_ms

QS = np.array([0.0, 1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal"])
def test_percentiles_within_stated_precision_of_numpy(seed, dist):
    rng = np.random.default_rng(seed)
    if dist == "lognormal":
        x = rng.lognormal(np.log(5e6), 0.6, 20_000)          # ~5 ms in ns
    elif dist == "uniform":
        x = rng.uniform(1e3, 1e9, 20_000)
    else:
        x = np.concatenate([rng.normal(2e6, 1e5, 15_000), rng.normal(4e7, 1e6, 300)])
    h = StreamingHistogram(0.01)
    h.add_many(x[:10_000])
    for v in x[10_000:12_000]:
        h.add(v)                                            # scalar path, same buckets
    h.add_many(x[12_000:])
    ref = np.percentile(x, QS)
    got = h.percentile(QS)
    np.testing.assert_array_less(np.abs(got - ref) / ref, 0.01 + 1e-12)
    assert h.count == x.size
    assert h.min == x.min() and h.max == x.max()            # exact
    assert h.mean == pytest.approx(x.mean(), rel=1e-12)
    assert h.std == pytest.approx(x.std(), rel=1e-9)


def test_precision_is_a_parameter():
    x = np.random.default_rng(5).lognormal(12, 1.0, 5000)
    h = StreamingHistogram(0.001)
    h.add_many(x)
    ref = np.percentile(x, [50, 99])
    assert np.all(np.abs(h.percentile([50, 99]) - ref) / ref <= 0.001)


def test_memory_does_not_grow_after_a_million_adds():
    h = StreamingHistogram()
    h.add(1e6)
    size0 = h.buckets.nbytes
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    rng = np.random.default_rng(0)
    for chunk in range(100):
        h.add_many(rng.lognormal(14, 0.5, 10_000))
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert h.count == 1_000_001
    assert h.buckets.nbytes == size0 < 16_000
    assert after - before < 4096                             # no per-sample storage


def test_latency_stats_memory_constant_in_scalar_adds():
    stats = LatencyStats()
    for i in range(1000):
        stats.add("chain", 1_000_000 + i)
    size = sys.getsizeof(stats._hists) + stats.histogram("chain").buckets.nbytes
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for i in range(200_000):
        stats.add("chain", 1_000_000 + (i % 5000))
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stats.count("chain") == 201_000
    assert sys.getsizeof(stats._hists) + stats.histogram("chain").buckets.nbytes == size
    assert after - before < 4096


def test_summary_matches_exact_summary():
    x = np.random.default_rng(3).lognormal(np.log(8e6), 0.3, 3000).astype(np.int64)
    stats = LatencyStats()
    for v in x:
        stats.add("infer", int(v))
    got, ref = stats.summary()["infer"], summarise_ms(x)
    assert got["mean_ms"] == pytest.approx(ref["mean_ms"], rel=1e-12)
    assert got["max_ms"] == ref["max_ms"]
    for k in ("p50_ms", "p90_ms", "p99_ms"):
        assert got[k] == pytest.approx(ref[k], rel=0.01)


def test_empty_and_edge_values():
    h = StreamingHistogram()
    assert np.isnan(h.percentile(50)) and np.isnan(h.mean) and np.isnan(h.std)
    assert all(np.isnan(v) for v in h.summary_ms().values())
    h.add(0)                     # a zero duration (coarse clock) is counted, shown as 0
    h.add(5e6)
    assert h.count == 2 and h.min == 0 and h.percentile(0) == 0 and h.percentile(100) == 5e6
    with pytest.raises(ValueError, match=r"rel_precision: expected a value in \(0, 0.5\), got 0.7"):
        StreamingHistogram(0.7)


class _F:
    def __init__(self, est, truth):
        self.products, self.truth = {"sto2": est}, {"sto2": truth}


def test_truth_scorer_keeps_running_sums_not_lists():
    s = TruthScorer()
    truth = np.array([[0.5, 0.7, np.nan]], np.float32)
    for est in ([0.6, 0.6, 0.1], [0.5, 0.9, 0.3]):
        s.write(_F(np.array([est], np.float32), truth))
    # frame errors: mean(+0.1, -0.1)=0, mean|.|=0.1 ; mean(0, +0.2)=0.1, mean|.|=0.1
    summary = s.summary()
    assert summary["sto2_mae_pp"] == pytest.approx(10.0, abs=1e-5)
    assert summary["sto2_bias_pp"] == pytest.approx(5.0, abs=1e-5)
    assert not any(isinstance(v, list) for v in vars(s).values())


def test_border_mask_grows_two_pixels_from_class_and_sto2_edges():
    from edge.pipeline.truth import border_mask

    classes = np.zeros((3, 12), np.uint8)
    classes[:, 6:] = 1
    sto2 = np.full((3, 12), 0.7, np.float32)
    m = border_mask(classes, sto2)
    assert m[0].tolist() == [False] * 3 + [True] * 6 + [False] * 3
    classes[:] = 1
    sto2[:, 9:] = 0.6                          # a 10-point StO2 step inside one organ
    m = border_mask(classes, sto2)
    assert m[0].tolist() == [False] * 6 + [True] * 6
    sto2[:, 9:] = 0.68                         # 2 points: texture, not an edge
    assert not border_mask(classes, sto2).any()


class _Q:
    def __init__(self, products, truth):
        self.products, self.truth = products, truth


def test_truth_scorer_reports_valid_all_share_border_and_coverage():
    """2x6 tissue, one organ edge between columns 2 and 3: valid pixels err by +0.02 (sigma
    0.03 covers them), two masked pixels by -0.2 in sto2_all."""
    truth = np.full((2, 6), 0.5, np.float32)
    classes = np.zeros((2, 6), np.uint8)
    classes[:, 3:] = 1
    est_all = truth + np.float32(0.02)
    est_all[0, 0] = est_all[1, 0] = 0.3
    est = est_all.copy()
    est[:, 0] = np.nan
    sigma = np.full((2, 6), 0.03, np.float32)
    s = TruthScorer()
    s.write(_Q({"sto2": est, "sto2_all": est_all, "sto2_sigma": sigma},
               {"sto2": truth, "classes": classes}))
    q = s.summary()
    assert q["sto2_mae_pp"] == pytest.approx(2.0, abs=1e-4)
    assert q["sto2_valid_fraction"] == pytest.approx(10 / 12)
    assert q["sto2_mae_all_pp"] == pytest.approx((10 * 2.0 + 2 * 20.0) / 12, abs=1e-4)
    assert q["sto2_bias_all_pp"] == pytest.approx((10 * 2.0 - 2 * 20.0) / 12, abs=1e-4)
    assert q["sto2_mae_border_pp"] == pytest.approx(2.0, abs=1e-4)   # all within 2 px
    assert "sto2_mae_interior_pp" not in q                            # of the edge
    assert q["sto2_sigma_coverage"] == 1.0
