"""The paired round-based A/B gate on constructed rounds (no clock involved)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.latency.gate import (INCONCLUSIVE, PASS, REGRESSION, THRESHOLDS, abba_arms, gate,
                               holm, look_level, pair_rounds, planned_looks)
from edge.latency.ab import BLOCK_ROUNDS, _no_slowdown_in_sight

PERIOD_MS = 40.0


def make_rounds(seed, n_rounds=24, slowdown=1.0, frames=100, round_sd=0.02):
    """ABBA rounds of log-normal frame latencies; arm B scaled by ``slowdown``."""
    rng = np.random.default_rng(seed)
    rounds = []
    for i, arm in enumerate(abba_arms(n_rounds)):
        level = np.exp(rng.normal(0, round_sd))          # load of this round (shared by stages)
        scale = slowdown if arm == "B" else 1.0
        chain = rng.lognormal(np.log(12.0), 0.15, frames) * level * scale
        acquire = rng.lognormal(np.log(8.0), 0.05, frames) * level
        e2e = chain + acquire
        metrics = {name: {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99))}
                   for name, x in (("acquire", acquire), ("chain", chain), ("end_to_end", e2e))}
        rounds.append({"index": i, "arm": arm, "metrics": metrics,
                       "misses": int((e2e > PERIOD_MS).sum()), "slots": frames})
    return rounds


def test_ten_percent_slowdown_is_a_regression():
    flagged = 0
    for seed in range(10):
        res = gate(pair_rounds(make_rounds(seed, slowdown=1.10)), seed=seed)
        flagged += res.verdict == REGRESSION
        assert res.exit_code == (1 if res.verdict == REGRESSION else 3)
    assert flagged == 10
    chain_p50 = next(h for h in res.hypotheses if (h.metric, h.statistic) == ("chain", "p50"))
    assert chain_p50.verdict == REGRESSION
    assert chain_p50.median_ratio == pytest.approx(1.10, abs=0.02)
    assert chain_p50.ci[0] > 1 + THRESHOLDS["p50"]
    acquire = [h for h in res.hypotheses if h.metric == "acquire"]
    assert all(h.verdict != REGRESSION for h in acquire)      # untouched stage not blamed


@pytest.mark.parametrize("seed", range(20))
def test_identical_distributions_never_regression(seed):
    res = gate(pair_rounds(make_rounds(1000 + seed, slowdown=1.0)), seed=seed)
    assert res.verdict in (PASS, INCONCLUSIVE)
    assert not any(h.verdict == REGRESSION for h in res.hypotheses)


def test_identical_distributions_with_enough_rounds_pass():
    res = gate(pair_rounds(make_rounds(7, n_rounds=40, round_sd=0.005, frames=400)), seed=0)
    assert res.verdict == PASS, res.reason
    assert res.exit_code == 0


def test_too_few_rounds_is_inconclusive_even_for_a_big_slowdown():
    res = gate(pair_rounds(make_rounds(3, n_rounds=8, slowdown=1.5)), seed=0)
    assert res.verdict == INCONCLUSIVE and res.exit_code == 3
    # 4 pairs: the smallest one-sided Wilcoxon p is 2^-4, never below alpha after Holm
    assert min(h.p_holm for h in res.hypotheses if h.gated) >= 1 / 16
    res = gate(pair_rounds(make_rounds(3, n_rounds=8, slowdown=1.0, round_sd=0.001)), seed=0)
    assert res.verdict == INCONCLUSIVE
    assert "4 pairs of rounds, at least 8 needed for a pass" in res.reason


def test_rounds_not_pooled_frames():
    # one pair per two rounds, whatever the number of frames per round
    rounds = make_rounds(0, n_rounds=12, frames=500)
    res = gate(pair_rounds(rounds), seed=0)
    assert res.pairs == 6 and all(h.ratios.size == 6 for h in res.hypotheses)


def test_short_metrics_are_reported_not_gated():
    rounds = make_rounds(0)
    res = gate(pair_rounds(rounds), min_gate_ms=10.0, seed=0)
    by = {(h.metric, h.statistic): h for h in res.hypotheses}
    assert not by[("acquire", "p50")].gated and by[("acquire", "p50")].verdict == "not gated"
    assert by[("chain", "p50")].gated


def test_miss_rate_without_misses_is_a_ratio_of_one():
    rounds = make_rounds(0)
    for r in rounds:
        r["misses"] = 0
    res = gate(pair_rounds(rounds), seed=0)
    h = next(h for h in res.hypotheses if h.statistic == "miss_rate")
    assert h.median_ratio == 1.0 and h.ci == (1.0, 1.0) and h.p == 1.0


def test_pairs_need_one_round_of_each_arm():
    rounds = make_rounds(0, n_rounds=4)
    rounds[1]["arm"] = "A"
    with pytest.raises(ValueError, match=r"rounds 0 and 1: expected one A and one B round, "
                                         r"got 'A' and 'A'"):
        pair_rounds(rounds)


def test_holm_matches_the_textbook_example():
    # Holm (1979) step-down: sorted p * (m, m-1, ...), made monotone
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]),
                               [0.03, 0.06, 0.06, 0.02])


def test_abba_order():
    assert "".join(abba_arms(10)) == "ABBAABBAAB"


def test_significant_but_tolerated_slowdown_is_not_a_regression():
    # 1 % slower with very little noise: beyond doubt, but below every δ
    res = gate(pair_rounds(make_rounds(5, n_rounds=40, slowdown=1.01, round_sd=0.001,
                                       frames=2000)), seed=0)
    chain = next(h for h in res.hypotheses if (h.metric, h.statistic) == ("chain", "p50"))
    assert chain.p_holm < 0.01 and chain.median_ratio < 1 + THRESHOLDS["p50"]
    assert res.verdict != REGRESSION


def test_planned_looks_follow_the_block_schedule_of_ab():
    assert planned_looks(24, 24, 8) == 1
    assert planned_looks(24, 48, 8) == 4              # 24, 32, 40, 48
    assert planned_looks(24, 64, 8) == 6              # ... 56, 64
    assert planned_looks(22, 30, 8) == 2              # 24 (whole blocks), then 30 -> 32
    assert planned_looks(24, 50, 8) == 5              # 24, 32, 40, 48, 50 -> 52
    assert BLOCK_ROUNDS == 16
    assert planned_looks(48, 288) == 16               # ab's defaults: 48, 64, ..., 288


def test_look_levels_sum_to_alpha_and_keep_half_for_the_last_look():
    for looks in (1, 2, 7, 16):
        levels = [look_level(0.01, k, looks) for k in range(1, looks + 1)]
        assert sum(levels) == pytest.approx(0.01)
        assert levels[-1] == pytest.approx(0.01 if looks == 1 else 0.005)
    assert look_level(0.01, 3, 11) == pytest.approx(0.0005)


def test_more_looks_need_stronger_evidence():
    # 12 pairs, 11 slower and the least one faster: the Wilcoxon p is 2/4096; chain p50 and p99
    # both hold it, so Holm over the 2 gated hypotheses gives 2 * 2/4096 = 9.8e-4
    rounds = []
    for i, arm in enumerate(abba_arms(24)):
        pair = i // 2
        up = 1.0 + (0.05 + 0.01 * pair if pair else -0.05)
        x = 12.0 * (up if arm == "B" else 1.0)
        rounds.append({"index": i, "arm": arm, "misses": 0, "slots": 100,
                       "metrics": {"chain": {"p50": x, "p99": 2 * x}}})
    one = gate(pair_rounds(rounds), metrics=["chain"], seed=0)
    assert one.verdict == REGRESSION and one.looks == 1
    p = next(h for h in one.hypotheses if h.statistic == "p50").p_holm
    assert p == pytest.approx(2 * 2 / 4096)
    # the same data at the first of 4 looks: level 0.005 / 3 = 0.0017 still above 9.8e-4
    assert gate(pair_rounds(rounds), metrics=["chain"], seed=0, looks=4,
                look=1).verdict == REGRESSION
    # ... at the first of 11 looks (level 0.005 / 10 = 5e-4): not enough, INCONCLUSIVE, and
    # the level is reported
    many = gate(pair_rounds(rounds), metrics=["chain"], seed=0, looks=11, look=1)
    assert many.verdict == INCONCLUSIVE
    assert many.as_dict()["level"] == pytest.approx(0.0005)
    assert (many.as_dict()["look"], many.as_dict()["looks"]) == (1, 11)
    # ... at the last of the 11 (default look: the last; level 0.005): a regression
    last = gate(pair_rounds(rounds), metrics=["chain"], seed=0, looks=11)
    assert last.verdict == REGRESSION and last.as_dict()["level"] == pytest.approx(0.005)
    with pytest.raises(ValueError, match=r"looks: expected an integer >= 1, got 0"):
        gate(pair_rounds(rounds), looks=0)
    with pytest.raises(ValueError, match=r"look: expected an integer in \[1, 4\] \(looks\), "
                                         r"got 5"):
        gate(pair_rounds(rounds), looks=4, look=5)


def test_no_slowdown_in_sight_stops_only_runs_without_one():
    # noisy A/A rounds: undecided (intervals too wide for a pass), every median within δ
    aa = gate(pair_rounds(make_rounds(3, n_rounds=48, round_sd=0.15, frames=10)), seed=0)
    assert aa.verdict == INCONCLUSIVE
    assert all(h.median_ratio <= 1 + h.delta for h in aa.hypotheses if h.gated)
    assert _no_slowdown_in_sight(aa)
    # the same noise with a 10 % slowdown of the chain: undecided at this look, and the chain's
    # median ratio is above 1 + δ, so the run goes on
    slow = gate(pair_rounds(make_rounds(3, n_rounds=48, slowdown=1.10, round_sd=0.15,
                                        frames=10)), seed=0, looks=16, look=1)
    chain = next(h for h in slow.hypotheses if (h.metric, h.statistic) == ("chain", "p50"))
    assert slow.verdict == INCONCLUSIVE and chain.median_ratio > 1 + THRESHOLDS["p50"]
    assert not _no_slowdown_in_sight(slow)
    # nothing gated (all stages too short): never called futile
    assert not _no_slowdown_in_sight(gate(pair_rounds(make_rounds(3)), min_gate_ms=1e9))
