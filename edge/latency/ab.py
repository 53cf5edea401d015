"""Measure, A/B and compare: the workflows behind ``hsi-edge latency``.

``measure``   one arm, R rounds; the result stores per-round statistics so that two stored
              results can be compared later (``compare``), round by round.
``run_ab``    two arms interleaved in ABBA rounds in one run (the gate's intended use: drift
              and background load hit both arms alike); an arm is a session in this process
              or another build's worker (:mod:`edge.latency.worker`); INCONCLUSIVE adds
              rounds up to a cap, or stops it from twice the first look's rounds on when no
              gated median ratio is above its tolerance (no slowdown in sight).  A round
              whose clocks changed (:mod:`edge.latency.clocks`) voids the run: INCONCLUSIVE
              naming the round and the change.
``compare``   two stored results; refused across hardware keys unless allowed, and then the
              comparison says so.  Stored results were not interleaved: rounds are paired by
              index and the comparison says that drift between the runs is not controlled.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from edge.errors import ConfigError
from edge.latency import fingerprint as fpmod
from edge.latency.gate import INCONCLUSIVE, abba_arms, gate, planned_looks
from edge.latency.records import FrameRecords
from edge.latency.session import LatencySession
from edge.latency.stats import round_stats, summarise

__all__ = ["measure", "run_ab", "compare", "check_hardware", "check_settings", "Settings",
           "stored_void", "void_rounds", "void_reason"]

log = logging.getLogger(__name__)

#: Rounds ``run_ab`` adds while INCONCLUSIVE (rounded up to whole ABBA blocks); the gate's
#: level is split over the looks this schedule makes (:func:`~edge.latency.gate.planned_looks`,
#: :func:`~edge.latency.gate.look_level`).
BLOCK_ROUNDS = 16


class Settings(dict):
    """frames, warmup, rounds, max_rounds, deadline_ms (a dict, stored as JSON)."""


def check_settings(frames: int, warmup: int, rounds: int, max_rounds: int | None,
              deadline_ms: float | None) -> Settings:
    for name, value, least in (("--frames", frames, 1), ("--warmup", warmup, 0),
                               ("--rounds", rounds, 1)):
        if int(value) < least:
            raise ConfigError(f"{name}: expected an integer >= {least}, got {value!r}")
    if max_rounds is not None and max_rounds < rounds:
        raise ConfigError(f"--max-rounds: expected >= --rounds ({rounds}), got {max_rounds}")
    if deadline_ms is not None and not deadline_ms > 0:
        raise ConfigError(f"--deadline-ms: expected a value > 0, got {deadline_ms!r}")
    return Settings(frames=int(frames), warmup=int(warmup), rounds=int(rounds),
                    max_rounds=max_rounds, deadline_ms=deadline_ms)


def void_rounds(rounds: list[dict]) -> list[dict]:
    """The void rounds (clocks changed during them, :mod:`edge.latency.clocks`):
    ``[{"round": index, "arm": arm, "changes": [...]}]``."""
    return [{"round": r["index"], "arm": r.get("arm", ""), "changes": list(r["void"])}
            for r in rounds if r.get("void")]


def void_reason(void: list[dict], where: str = "") -> str:
    """One line naming every void round and its changes (at most 3 changes per round)."""
    parts = []
    for v in void:
        arm = f" ({v['arm']})" if v.get("arm") else ""
        more = f" and {len(v['changes']) - 3} more" if len(v["changes"]) > 3 else ""
        parts.append(f"{where}round {v['round']}{arm}: {'; '.join(v['changes'][:3])}{more}")
    return ("clocks changed during the run, the data is void (never a pass or a regression): "
            + " | ".join(parts))


def _void_gate(result, void: list[dict], where: str = ""):
    """INCONCLUSIVE naming the void rounds, whatever the statistics said."""
    if void:
        result.verdict = INCONCLUSIVE
        result.reason = void_reason(void, where)
    return result


def _deadline_ns(settings: Settings, period_ns: int) -> int:
    d = settings.get("deadline_ms")
    return period_ns if d is None else int(d * 1e6)


def measure(session: LatencySession, *, frames: int, warmup: int = 10, rounds: int = 1,
            deadline_ms: float | None = None,
            progress: Callable[[str], None] | None = None) -> tuple[dict, FrameRecords]:
    """Run ``rounds`` rounds of one arm; returns (result document, records)."""
    st = check_settings(frames, warmup, rounds, None, deadline_ms)
    parts = []
    for i in range(rounds):
        parts.append(session.run_round(frames, warmup=warmup, index=i, arm=""))
        if progress:
            progress(f"round {i + 1}/{rounds}")
    rec = FrameRecords.concatenate(parts)
    period, deadline = session.period_ns, _deadline_ns(st, session.period_ns)
    doc = {"kind": "run", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "settings": dict(st, period_ms=period / 1e6, deadline_ms=deadline / 1e6),
           "fingerprint": session.fingerprint(),
           "summary": summarise(rec, period_ns=period, deadline_ns=deadline, warmup=warmup),
           "rounds": round_stats(rec, period_ns=period, deadline_ns=deadline, warmup=warmup)}
    doc["void"] = void_rounds(doc["rounds"])
    markers = [r["marker"] for r in rec.rounds if "marker" in r]
    if markers:
        from edge.latency.marker import glass_to_glass
        doc["summary"]["glass_to_glass"] = glass_to_glass(
            [t for m in markers for t in m["flashes_ns"]],
            [t for m in markers for t in m["detections_ns"]])
    return doc, rec


def run_ab(a: LatencySession, b: LatencySession, *, frames: int, warmup: int = 10,
           rounds: int = 48, max_rounds: int = 288, deadline_ms: float | None = None,
           seed: int = 0, progress: Callable[[str], None] | None = None,
           **gate_kw: Any) -> tuple[dict, FrameRecords]:
    """ABBA rounds of two arms, then the gate; more rounds while INCONCLUSIVE, up to a cap.

    Returns
    -------
    (document, records)
        ``document["gate"]`` holds the verdict; records of both arms with ``arm`` per round.
    """
    rounds = rounds + (-rounds) % 4            # whole ABBA blocks
    st = check_settings(frames, warmup, rounds, max_rounds, deadline_ms)
    if a.period_ns != b.period_ns:
        raise ConfigError(f"camera.fps: arms A and B run at different frame rates "
                          f"({a.fps:g} vs {b.fps:g} fps); an A/B run needs one rate")
    period, deadline = a.period_ns, _deadline_ns(st, a.period_ns)
    parts: list[FrameRecords] = []
    stats: list[dict] = []
    target = rounds
    result = None
    looks, look = planned_looks(rounds, max_rounds, BLOCK_ROUNDS), 0
    while True:
        arms = abba_arms(target)
        for i in range(len(parts), target):
            sess = a if arms[i] == "A" else b
            rec = sess.run_round(frames, warmup=warmup, index=i, arm=arms[i])
            parts.append(rec)
            stats += round_stats(rec, period_ns=period, deadline_ns=deadline, warmup=warmup)
            if progress:
                progress(f"round {i + 1}/{target} ({arms[i]})")
        from edge.latency.gate import pair_rounds
        look += 1
        result = gate(pair_rounds(stats), seed=seed, looks=looks, look=look, **gate_kw)
        void = void_rounds(stats)
        _void_gate(result, void)
        log.info("after %d rounds: %s (%s)", target, result.verdict, result.reason)
        # void data stays void: more rounds cannot make it a pass or a regression
        if result.verdict != INCONCLUSIVE or target >= max_rounds or void:
            break
        if target >= 2 * rounds and _no_slowdown_in_sight(result):
            result.reason = (f"stopped after {target} of up to {max_rounds} rounds: no gated "
                             f"median ratio above 1 + δ, not shown to be safe either: "
                             + result.reason.removeprefix("undecided: "))
            break
        target = min(max_rounds, target + BLOCK_ROUNDS)
        target += (-target) % 4
    rec = FrameRecords.concatenate(parts)
    summaries = {arm: summarise(_arm(rec, arm), period_ns=period, deadline_ns=deadline,
                                warmup=warmup) for arm in ("A", "B")}
    fp_a, fp_b = a.fingerprint(), b.fingerprint()
    doc = {"kind": "ab", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "interleaved": True,
           "settings": dict(st, rounds=len(parts), period_ms=period / 1e6,
                            deadline_ms=deadline / 1e6),
           "fingerprint": fp_a, "fingerprint_b": fp_b,
           "software_differences": fpmod.software_differences(fp_a, fp_b),
           "summary": summaries, "rounds": stats, "gate": result.as_dict(), "void": void}
    return doc, rec


def _no_slowdown_in_sight(result) -> bool:
    """True when no gated hypothesis has a median ratio above its 1 + δ: more rounds could
    only give PASS, which the run's intervals have not shown, or rarely REGRESSION.  Futility
    stop of ``run_ab`` (it ends a run without the slowdown sooner; stopping early can only
    lower the false-alarm rate).  Offline, on 20 runs of a 10 % chain slowdown on this VM, no
    run was stopped this way from round 96 on (one was at round 48, hence 2 x ``rounds``)."""
    gated = [h for h in result.hypotheses if h.gated]
    return bool(gated) and all(h.median_ratio <= 1.0 + h.delta for h in gated)


def _arm(rec: FrameRecords, arm: str) -> FrameRecords:
    idx = {r["index"] for r in rec.rounds if r.get("arm") == arm}
    import numpy as np
    sub = rec.select(np.isin(rec.fields["round"], sorted(idx)))
    sub.rounds = [r for r in rec.rounds if r["index"] in idx]
    return sub


def check_hardware(fp_a: dict, fp_b: dict, allow: bool) -> str | None:
    """None when the hardware keys agree; else refuse, or (``allow``) the warning to print.

    Raises
    ------
    ConfigError
        The keys differ and ``allow`` is False (names both keys and the option).
    """
    ka, kb = fp_a.get("hardware_key"), fp_b.get("hardware_key")
    if ka == kb:
        return None
    diff = ", ".join(f"{k}: {fp_a.get(k)!r} vs {fp_b.get(k)!r}" for k in fpmod.HARDWARE_FIELDS
                     if fp_a.get(k) != fp_b.get(k))
    if not allow:
        raise ConfigError(f"hardware keys differ ({ka} vs {kb}: {diff}); results from different "
                          f"units are not compared (--allow-different-hardware to compare "
                          f"anyway)")
    return f"DIFFERENT HARDWARE compared on request: {ka} vs {kb} ({diff})"


def stored_void(doc: dict) -> list[dict]:
    """A stored result's void rounds (``void``; older results: from their rounds)."""
    return list(doc.get("void") or void_rounds(doc.get("rounds", [])))


def compare(doc_a: dict, doc_b: dict, *, allow_different_hardware: bool = False, seed: int = 0,
            **gate_kw: Any) -> dict:
    """Gate two stored results (round i of A against round i of B).

    A result with a void round (its clocks changed, :mod:`edge.latency.clocks`) is never
    passed: the verdict is INCONCLUSIVE naming the rounds and the changes.

    Returns
    -------
    dict
        ``gate``, ``hardware_warning`` (None or the text), ``software_differences``,
        ``interleaved`` (False), ``pairs``, ``void``.
    """
    warning = check_hardware(doc_a["fingerprint"], doc_b["fingerprint"],
                             allow_different_hardware)
    ra = [dict(r, arm="A") for r in doc_a["rounds"]]
    rb = [dict(r, arm="B") for r in doc_b["rounds"]]
    n = min(len(ra), len(rb))
    if len(ra) != len(rb):
        log.warning("A has %d rounds, B %d: comparing the first %d of each", len(ra), len(rb), n)
    result = gate([(ra[i], rb[i]) for i in range(n)], seed=seed, **gate_kw)
    void = ([dict(v, arm="A") for v in stored_void(doc_a)]
            + [dict(v, arm="B") for v in stored_void(doc_b)])
    _void_gate(result, void)
    return {"kind": "compare", "void": void, "interleaved": False, "hardware_warning": warning,
            "a": doc_a.get("_path"), "b": doc_b.get("_path"),
            "software_differences": fpmod.software_differences(doc_a["fingerprint"],
                                                               doc_b["fingerprint"]),
            "gate": result.as_dict(), "pairs": n}
