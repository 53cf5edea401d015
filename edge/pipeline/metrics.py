"""Latency statistics from monotonic-clock samples, in bounded memory.

A live run (``Pipeline.run(None)``) may last hours, so the running statistics never keep the
samples: :class:`StreamingHistogram` keeps the exact count, mean, standard deviation, minimum
and maximum, and percentiles from a fixed array of logarithmic buckets (the DDSketch layout,
Masson et al., VLDB 2019): a value ``x`` falls into bucket ``ceil(log_gamma(x))`` with
``gamma = (1 + a) / (1 - a)``, and the bucket's representative ``2 gamma^i / (gamma + 1)`` lies
within relative error ``a`` of every value in it.  A percentile interpolated between two such
order-statistic estimates (numpy's default linear method) is then within ``a`` of numpy's
``np.percentile`` on the same samples.  With ``a = 1 %`` and values from 1 ns to 1000 s the
structure is about 1,400 int64 buckets (11 kB) per stage, whatever the run length.

Per-frame records for latency regression runs are kept elsewhere (:mod:`edge.latency`), bounded
by the frame count the user asked for.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LatencyStats", "StreamingHistogram", "summarise_ms"]

_SUMMARY_KEYS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")


def summarise_ms(samples_ns: list[int] | np.ndarray, scale: float = 1e-6) -> dict[str, float]:
    """Mean, p50, p90, p99 and max of durations given in ns, in milliseconds (exact).

    ``scale`` converts a sample to ms (1.0 for samples already in ms).  An empty sample list
    gives NaN for every figure (never 0, which would look like a result).
    """
    a = np.asarray(samples_ns, dtype=np.float64) * scale
    if a.size == 0:
        return {k: float("nan") for k in _SUMMARY_KEYS}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean_ms": float(a.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "max_ms": float(a.max())}


class StreamingHistogram:
    """Count, mean, std, min, max (exact) and percentiles (relative precision) of values > 0.

    Parameters
    ----------
    rel_precision : float
        Stated relative precision ``a`` of percentiles, in (0, 0.5); default 1 %.
    min_value, max_value : float
        Range resolved by the buckets (ns for durations: 1 ns to 1000 s by default).  Values
        below ``min_value`` (including 0 and negative clock steps) share one bucket reported as
        ``min_value``; values above ``max_value`` share the top bucket.  min/max/mean stay exact.

    Notes
    -----
    Memory is fixed at construction: ``buckets.nbytes`` plus a few floats.
    """

    def __init__(self, rel_precision: float = 0.01, *, min_value: float = 1.0,
                 max_value: float = 1e12):
        if not 0.0 < rel_precision < 0.5:
            raise ValueError(f"rel_precision: expected a value in (0, 0.5), got {rel_precision!r}")
        if not 0.0 < min_value < max_value:
            raise ValueError(f"min_value/max_value: expected 0 < min < max, got "
                             f"{min_value!r}, {max_value!r}")
        self.rel_precision = float(rel_precision)
        self._gamma = (1.0 + rel_precision) / (1.0 - rel_precision)
        self._log_gamma = math.log(self._gamma)
        self._lo = math.ceil(math.log(min_value) / self._log_gamma)
        hi = math.ceil(math.log(max_value) / self._log_gamma)
        self.min_value, self.max_value = float(min_value), float(max_value)
        # bucket 0: values <= min_value; bucket k: index lo + k
        self.buckets = np.zeros(hi - self._lo + 1, dtype=np.int64)
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _index(self, x: float) -> int:
        if x <= self.min_value:
            return 0
        i = math.ceil(math.log(x) / self._log_gamma) - self._lo
        return min(max(i, 0), self.buckets.size - 1)

    def add(self, value: float) -> None:
        """Add one sample."""
        x = float(value)
        self.buckets[self._index(x)] += 1
        self.count += 1
        delta = x - self._mean  # Welford: stable running mean and variance
        self._mean += delta / self.count
        self._m2 += delta * (x - self._mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def add_many(self, values: np.ndarray) -> None:
        """Add an array of samples (vectorised; same result as calling :meth:`add` on each)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            idx = np.ceil(np.log(np.maximum(x, self.min_value)) / self._log_gamma) - self._lo
        idx = np.where(x <= self.min_value, 0, np.clip(idx, 0, self.buckets.size - 1))
        self.buckets += np.bincount(idx.astype(np.int64), minlength=self.buckets.size)
        n, mean, m2 = x.size, float(x.mean()), float(((x - x.mean()) ** 2).sum())
        total = self.count + n  # Chan et al.: merge two (count, mean, M2) summaries
        delta = mean - self._mean
        self._m2 += m2 + delta * delta * self.count * n / total
        self._mean += delta * n / total
        self.count = total
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))

    @property
    def mean(self) -> float:
        return self._mean if self.count else float("nan")

    @property
    def std(self) -> float:
        """Population standard deviation (numpy's default ``ddof=0``)."""
        return math.sqrt(self._m2 / self.count) if self.count else float("nan")

    def _value(self, k: int) -> float:
        if k == 0:
            return self.min_value
        i = k + self._lo
        return 2.0 * self._gamma ** i / (self._gamma + 1.0)

    def percentile(self, q: float | np.ndarray) -> float | np.ndarray:
        """Percentile(s) ``q`` in [0, 100], as numpy's linear method, within ``rel_precision``.

        NaN when empty.  The result is clipped to the exact [min, max].
        """
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if self.count == 0:
            out = np.full(qs.shape, np.nan)
        else:
            cum = np.cumsum(self.buckets)
            pos = qs / 100.0 * (self.count - 1)  # numpy's "linear": ranks floor and ceil
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, self.count - 1)
            frac = pos - lo
            b_lo = np.searchsorted(cum, lo, side="right")
            b_hi = np.searchsorted(cum, hi, side="right")
            v_lo = np.array([self._value(int(b)) for b in b_lo])
            v_hi = np.array([self._value(int(b)) for b in b_hi])
            out = np.clip(v_lo + frac * (v_hi - v_lo), self.min, self.max)
            out = np.where(qs <= 0, self.min, np.where(qs >= 100, self.max, out))
        return float(out[0]) if np.ndim(q) == 0 else out

    def summary_ms(self, scale: float = 1e-6) -> dict[str, float]:
        """The :func:`summarise_ms` figures (values in ns scaled to ms by ``scale``)."""
        if self.count == 0:
            return {k: float("nan") for k in _SUMMARY_KEYS}
        p50, p90, p99 = self.percentile(np.array([50.0, 90.0, 99.0]))
        return {"mean_ms": self.mean * scale, "p50_ms": float(p50) * scale,
                "p90_ms": float(p90) * scale, "p99_ms": float(p99) * scale,
                "max_ms": self.max * scale}


class LatencyStats:
    """Per-stage durations (ns) in insertion order of stage names, in bounded memory.

    Each stage keeps a :class:`StreamingHistogram` (exact count/mean/max, percentiles within
    ``rel_precision``); memory does not grow with the number of frames.
    """

    def __init__(self, rel_precision: float = 0.01) -> None:
        self.rel_precision = rel_precision
        self._hists: dict[str, StreamingHistogram] = {}

    def add(self, name: str, duration_ns: int) -> None:
        h = self._hists.get(name)
        if h is None:
            h = self._hists[name] = StreamingHistogram(self.rel_precision)
        h.add(duration_ns)

    def names(self) -> list[str]:
        return list(self._hists)

    def count(self, name: str) -> int:
        h = self._hists.get(name)
        return 0 if h is None else h.count

    def histogram(self, name: str) -> StreamingHistogram | None:
        return self._hists.get(name)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: h.summary_ms() for name, h in self._hists.items()}
