"""The A/B gate: paired round-based comparison with three verdicts.

The sample unit is the ROUND, never the pooled frames: successive frames are correlated
(queues, caches, clocks, background load), so a frame-level test is far too confident (a
Mann-Whitney test on pooled frames raised 6/80 false alarms at a nominal 1 % under load in
../shared/research/latency_preview.md, A.5).  Rounds run A B B A A B B A ... so a linear drift
cancels; each adjacent pair (A, B) gives one log-ratio ``log(stat_B / stat_A)`` per statistic.

For every gated hypothesis (metric x statistic):

* a one-sided Wilcoxon signed-rank test of "B is slower" (``scipy.stats.wilcoxon``,
  ``alternative="greater"``), Holm-corrected across all hypotheses;
* a seeded bootstrap interval (percentile, ``confidence``) of the median ratio.

==========  =========  ========================================================================
statistic   δ          notes
==========  =========  ========================================================================
p50         3 %        median latency of a round
p99         10 %       tail of a round (noisier; a round of F frames resolves p99 for F >= 100)
miss_rate   50 %       end-to-end deadline misses per slot of a round, smoothed
                       ``(k + 0.5) / (n + 1)`` so rounds without misses give a finite ratio
==========  =========  ========================================================================

Verdicts (``alpha`` = 0.01):

REGRESSION
    some hypothesis has a Holm-adjusted p below the level of this look (:func:`look_level`;
    alpha when the run is tested once) (B is slower, beyond doubt) AND its median
    ratio > 1 + δ (by more than the tolerance).  The research note proposed "interval's lower
    bound > 1 + δ"; on this project's shared 2-core machine that rule left a 10 % chain
    slowdown INCONCLUSIVE after 48 rounds (ratio 1.10, interval [1.02, 1.17]), while the
    false-alarm rate is held by the Holm-corrected test either way.
PASS
    at least ``min_pairs`` pairs and every hypothesis has its interval's upper bound < 1 + δ.
INCONCLUSIVE
    anything else: run more rounds (``hsi-edge latency ab`` does, up to a cap); never a pass.

``looks`` is how often the same growing run may be tested: ``hsi-edge latency ab`` tests
after its first rounds and again after every block it adds while INCONCLUSIVE, and each test
is another chance of a false alarm.  The level is split over the planned looks (a
Bonferroni split, so the chance of any false REGRESSION in the whole run stays <= alpha
whatever the dependence between looks), unevenly: the last look keeps ``FINAL_SHARE`` (half)
of alpha and the earlier ones share the rest evenly (:func:`look_level`).  A clear regression
is caught early even at the small early levels; a marginal one needs the most rounds, and it
gets them at the largest level.  Before any split, an A/A run under a CPU hog on the 2-core
development machine was flagged at its second look (p_holm 0.0094 < 0.01); with an even
split over 7 looks (48 -> 96 rounds) a 10 % chain slowdown was flagged in 11 of 20 runs on
that machine, and an offline replay of the same rounds, joined in threes (up to 288 rounds,
a look every 16, half the level kept for the last), flagged 6 of 6 (README, "What was
measured here").

A metric is gated only if its median p50 in arm A is at least ``min_gate_ms`` (a 20 µs sink
cannot be resolved at 3 %); the others are reported, not gated.  ``to_overlay`` is reported,
not gated: it differs from ``end_to_end`` only by the sinks, and a duplicate hypothesis costs
power under the Holm correction.  With H hypotheses and L looks the
smallest Wilcoxon p of m pairs is 2^-m, so REGRESSION at a look of level ℓ needs
m > log2(H / ℓ) pairs (H = 7 with a model-less chain: acquire, chain and end_to_end gated;
the first of 16 looks of ``ab --rounds 48 --max-rounds 288`` has ℓ = 0.005 / 15: 15 pairs,
30 rounds); fewer rounds can only be INCONCLUSIVE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: Metrics reported but never gated (see the module docstring).
REPORT_ONLY = ("to_overlay",)

__all__ = ["THRESHOLDS", "REPORT_ONLY", "GateResult", "Hypothesis", "gate", "pair_rounds", "holm",
           "planned_looks", "look_level", "FINAL_SHARE",
           "REGRESSION", "PASS", "INCONCLUSIVE", "EXIT_CODES"]

REGRESSION, PASS, INCONCLUSIVE = "REGRESSION", "PASS", "INCONCLUSIVE"
#: Exit status of ``hsi-edge latency ab|compare|baseline check`` per verdict (2: an error).
EXIT_CODES = {PASS: 0, REGRESSION: 1, INCONCLUSIVE: 3}
#: δ per statistic: the slowdown (ratio - 1) the gate tolerates.
THRESHOLDS = {"p50": 0.03, "p99": 0.10, "miss_rate": 0.50}
#: Share of alpha kept for the last planned look; the earlier looks share the rest evenly.
FINAL_SHARE = 0.5


@dataclass
class Hypothesis:
    """One gated (or reported) comparison."""

    metric: str
    statistic: str
    ratios: np.ndarray            # per pair, B / A
    median_ratio: float
    ci: tuple[float, float]
    p: float
    p_holm: float = float("nan")
    delta: float = 0.0
    gated: bool = True
    verdict: str = INCONCLUSIVE

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "statistic": self.statistic,
                "median_ratio": self.median_ratio, "ci": list(self.ci), "p": self.p,
                "p_holm": self.p_holm, "delta": self.delta, "gated": self.gated,
                "verdict": self.verdict, "pairs": int(self.ratios.size),
                "ratios": [float(r) for r in self.ratios]}


@dataclass
class GateResult:
    verdict: str
    pairs: int
    hypotheses: list[Hypothesis] = field(default_factory=list)
    reason: str = ""
    alpha: float = 0.01
    confidence: float = 0.95
    looks: int = 1
    look: int = 1

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "pairs": self.pairs,
                "alpha": self.alpha, "confidence": self.confidence, "looks": self.looks,
                "look": self.look, "level": look_level(self.alpha, self.look, self.looks),
                "thresholds": dict(THRESHOLDS),
                "hypotheses": [h.as_dict() for h in self.hypotheses]}


def look_level(alpha: float, look: int, looks: int) -> float:
    """The level of the ``look``-th (1-based) of ``looks`` planned tests of one run.

    One look: ``alpha``.  Else the last look gets ``alpha * FINAL_SHARE`` and each earlier one
    ``alpha * (1 - FINAL_SHARE) / (looks - 1)``; the levels sum to ``alpha``.
    """
    if looks == 1:
        return alpha
    if look == looks:
        return alpha * FINAL_SHARE
    return alpha * (1.0 - FINAL_SHARE) / (looks - 1)


def planned_looks(rounds: int, max_rounds: int, step: int = 16) -> int:
    """Tests an A/B run makes at most: after ``rounds`` (whole ABBA blocks), then after every
    ``step`` more rounds (rounded up to whole blocks) until ``max_rounds``."""
    target = rounds + (-rounds) % 4
    n = 1
    while target < max_rounds:
        target = min(max_rounds, target + step)
        target += (-target) % 4
        n += 1
    return n


def abba_arms(rounds: int) -> list[str]:
    """Arm of each round: A B B A A B B A ... (``rounds`` entries)."""
    return [("A", "B", "B", "A")[i % 4] for i in range(rounds)]


def pair_rounds(rounds: Sequence[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Adjacent rounds (0,1), (2,3), ... as (A, B) pairs; each pair must hold one of each."""
    pairs = []
    for i in range(0, len(rounds) - 1, 2):
        x, y = rounds[i], rounds[i + 1]
        arms = {x.get("arm"), y.get("arm")}
        if arms != {"A", "B"}:
            raise ValueError(f"rounds {i} and {i + 1}: expected one A and one B round, got "
                             f"{x.get('arm')!r} and {y.get('arm')!r}")
        pairs.append((x, y) if x["arm"] == "A" else (y, x))
    return pairs


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as ``p``)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def _wilcoxon_greater(d: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    nz = d[d != 0]
    if nz.size == 0:
        return 1.0
    return float(wilcoxon(nz, alternative="greater").pvalue)


def _bootstrap_median(d: np.ndarray, confidence: float, rng: np.random.Generator,
                      n_boot: int = 4000) -> tuple[float, float]:
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    med = np.median(d[idx], axis=1)
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(med, [a, 1 - a])
    return float(lo), float(hi)


def _round_value(r: dict[str, Any], metric: str, stat: str) -> float:
    if stat == "miss_rate":
        return (r["misses"] + 0.5) / (r["slots"] + 1.0)
    return float(r["metrics"][metric][stat])


def gate(pairs: Sequence[tuple[dict, dict]], *, alpha: float = 0.01, confidence: float = 0.95,
         min_pairs: int = 8, min_gate_ms: float = 0.5, metrics: Sequence[str] | None = None,
         thresholds: dict[str, float] | None = None, seed: int = 0,
         looks: int = 1, look: int | None = None) -> GateResult:
    """Compare paired rounds; see the module docstring for the rule.

    Parameters
    ----------
    pairs : sequence of (round_A, round_B)
        Entries of :func:`edge.latency.stats.round_stats` (``metrics``, ``misses``, ``slots``).
    metrics : sequence of str, optional
        Metrics to consider (default: every metric of the rounds).
    looks, look : int
        Planned number of tests of this run (:func:`planned_looks`) and which of them this is
        (1-based; default: the last); REGRESSION needs a Holm-adjusted p below
        :func:`look_level`.
    """
    if isinstance(looks, bool) or not isinstance(looks, (int, np.integer)) or looks < 1:
        raise ValueError(f"looks: expected an integer >= 1, got {looks!r}")
    look = int(looks) if look is None else look
    if isinstance(look, bool) or not isinstance(look, (int, np.integer)) \
            or not 1 <= look <= looks:
        raise ValueError(f"look: expected an integer in [1, {looks}] (looks), got {look!r}")
    looks, look = int(looks), int(look)
    level = look_level(alpha, look, looks)
    th = dict(THRESHOLDS if thresholds is None else thresholds)
    if not pairs:
        return GateResult(INCONCLUSIVE, 0, reason="no pairs of rounds", alpha=alpha,
                          confidence=confidence, looks=looks, look=look)
    names = list(metrics) if metrics is not None else list(pairs[0][0]["metrics"])
    rng = np.random.default_rng(seed)
    hyps: list[Hypothesis] = []
    for metric in names:
        stats = ["p50", "p99"] + (["miss_rate"] if metric == "end_to_end" else [])
        a_p50 = np.median([_round_value(a, metric, "p50") for a, _ in pairs])
        gated = bool(a_p50 >= min_gate_ms) and metric not in REPORT_ONLY
        for stat in stats:
            a = np.array([_round_value(x, metric, stat) for x, _ in pairs])
            b = np.array([_round_value(y, metric, stat) for _, y in pairs])
            if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0)
                    and np.all(b > 0)):
                hyps.append(Hypothesis(metric, stat, b / a, float("nan"),
                                       (float("nan"), float("nan")), 1.0, delta=th[stat],
                                       gated=False))
                continue
            d = np.log(b) - np.log(a)
            lo, hi = _bootstrap_median(d, confidence, rng)
            hyps.append(Hypothesis(metric, stat, np.exp(d), float(np.exp(np.median(d))),
                                   (math.exp(lo), math.exp(hi)), _wilcoxon_greater(d),
                                   delta=th[stat], gated=gated))
    gated = [h for h in hyps if h.gated]
    for h, ph in zip(gated, holm([h.p for h in gated]) if gated else []):
        h.p_holm = float(ph)
        if ph < level and h.median_ratio > 1.0 + h.delta:
            h.verdict = REGRESSION
        elif h.ci[1] < 1.0 + h.delta:
            h.verdict = PASS
    for h in hyps:
        if not h.gated:
            h.verdict = "not gated"
    result = GateResult(INCONCLUSIVE, len(pairs), hyps, alpha=alpha, confidence=confidence,
                        looks=looks, look=look)
    flagged = [h for h in gated if h.verdict == REGRESSION]
    if not gated:
        result.reason = "no metric long enough to gate"
    elif flagged:
        result.verdict = REGRESSION
        result.reason = "; ".join(f"{h.metric} {h.statistic} x{h.median_ratio:.3f} "
                                  f"[{h.ci[0]:.3f}, {h.ci[1]:.3f}] p_holm={h.p_holm:.2g}"
                                  for h in flagged)
    elif len(pairs) < min_pairs:
        result.reason = f"{len(pairs)} pairs of rounds, at least {min_pairs} needed for a pass"
    elif all(h.verdict == PASS for h in gated):
        result.verdict = PASS
        result.reason = f"every gated ratio's upper bound is below 1 + δ ({len(pairs)} pairs)"
    else:
        open_ = [h for h in gated if h.verdict != PASS]
        result.reason = "undecided: " + "; ".join(
            f"{h.metric} {h.statistic} x{h.median_ratio:.3f} [{h.ci[0]:.3f}, {h.ci[1]:.3f}]"
            for h in open_[:4])
    return result
