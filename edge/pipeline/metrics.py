"""Latency statistics from monotonic-clock samples."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["LatencyStats", "summarise_ms"]


def summarise_ms(samples_ns: list[int] | np.ndarray) -> dict[str, float]:
    """Mean, p50, p90, p99 and max of durations given in ns, in milliseconds.

    An empty sample list gives NaN for every figure (never 0, which would look like a result).
    """
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        return {k: float("nan") for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean_ms": float(a.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "max_ms": float(a.max())}


class LatencyStats:
    """Collects per-stage durations (ns) in insertion order of stage names."""

    def __init__(self) -> None:
        self._samples: dict[str, list[int]] = defaultdict(list)

    def add(self, name: str, duration_ns: int) -> None:
        self._samples[name].append(int(duration_ns))

    def names(self) -> list[str]:
        return list(self._samples)

    def count(self, name: str) -> int:
        return len(self._samples.get(name, ()))

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: summarise_ms(s) for name, s in self._samples.items()}
