"""Test-only: slow a named stage by a set amount, to prove that the gate catches it.

Used by ``hsi-edge latency run|ab --slow`` (and ``HSI_EDGE_LATENCY_SLOW``, read only by the
``latency`` commands) and by the tests; the normal ``hsi-edge run`` never wraps a stage.  The
delay is a busy wait (the CPU stays busy, as with more work; ``time.sleep`` would hand the core
to the other threads and has a coarse, load-dependent granularity).

Spec: ``STAGE=AMOUNT[,STAGE=AMOUNT...]`` where AMOUNT is a percentage of the stage's own time
on that frame (``chain=10%``) or a fixed time (``chain=2ms``, ``post=500us``).
"""

from __future__ import annotations

import re
import time

from edge.core.frame import Frame
from edge.errors import ConfigError
from edge.pipeline.stages import Stage

__all__ = ["SlowStage", "parse_slow", "apply_slow", "ENV_VAR"]

#: Environment variable with a slow spec, read by the ``latency`` commands only.
ENV_VAR = "HSI_EDGE_LATENCY_SLOW"
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%|ms|us|µs)\s*$")


class SlowStage(Stage):
    """``inner`` followed by a busy wait of ``fixed_ns + fraction * (inner's time)``.

    Keeps the inner stage's name, so the slowdown shows where it was put.
    """

    def __init__(self, inner: Stage, *, fraction: float = 0.0, fixed_ns: int = 0):
        self.inner = inner
        self.name = inner.name
        self.fraction = float(fraction)
        self.fixed_ns = int(fixed_ns)

    def process(self, frame: Frame) -> Frame:
        t0 = time.perf_counter_ns()
        out = self.inner.process(frame)
        took = time.perf_counter_ns() - t0
        until = t0 + took + self.fixed_ns + int(self.fraction * took)
        while time.perf_counter_ns() < until:
            pass
        return out

    def sub_timings_ms(self) -> dict[str, float]:
        return self.inner.sub_timings_ms()

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"SlowStage({self.inner.name}, +{self.fraction:.0%} +{self.fixed_ns / 1e6:g} ms)"


def parse_slow(spec: str | None, option: str = "--slow") -> dict[str, tuple[float, int]]:
    """``"chain=10%,post=2ms"`` -> ``{"chain": (0.10, 0), "post": (0.0, 2_000_000)}``.

    Raises
    ------
    ConfigError
        A malformed entry, naming the option, the entry and the accepted forms.
    """
    out: dict[str, tuple[float, int]] = {}
    if not spec:
        return out
    for entry in spec.split(","):
        name, sep, amount = entry.partition("=")
        m = _AMOUNT.match(amount)
        if not sep or not name.strip() or m is None:
            raise ConfigError(f"{option}: expected STAGE=AMOUNT with AMOUNT like 10% , 2ms or "
                              f"500us, got {entry.strip()!r}")
        value, unit = float(m.group(1)), m.group(2)
        frac, fixed = out.get(name.strip(), (0.0, 0))
        if unit == "%":
            frac += value / 100.0
        else:
            fixed += int(value * (1e6 if unit == "ms" else 1e3))
        out[name.strip()] = (frac, fixed)
    return out


def apply_slow(stages: list[Stage], slow: dict[str, tuple[float, int]],
               option: str = "--slow") -> list[Stage]:
    """``stages`` with the named ones wrapped in :class:`SlowStage`.

    Raises
    ------
    ConfigError
        A named stage is not in the pipeline (names the stage and the ones there are).
    """
    names = [s.name for s in stages]
    for name in slow:
        if name not in names:
            raise ConfigError(f"{option}: no stage {name!r} in this pipeline (stages: "
                              f"{', '.join(names)})")
    return [SlowStage(s, fraction=slow[s.name][0], fixed_ns=slow[s.name][1])
            if s.name in slow else s for s in stages]
