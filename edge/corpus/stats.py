"""Per-recording statistics in bounded memory: class areas, StO2 and index statistics.

StO2 and the TIVITA-style indices are fractions in [0, 1] (DESIGN.md "Data conventions"), so
their percentiles come from a fixed histogram of :data:`BINS` bins over [0, 1] (resolution
0.001, i.e. 0.1 percentage point): a recording of any length needs the same memory, and the
figures are the same whichever machine or worker computed them.  Means are exact (float64
running sums).  ``thb`` (a concentration, not a fraction) gets its mean only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MapStats", "RecordingStats", "BINS", "INDEX_MAPS", "PERCENTILES", "NO_CLASS"]

#: Histogram bins over [0, 1] for percentiles (bin width 0.001).
BINS = 1000
#: Maps summarised over all valid pixels (those a backend produces; missing ones skipped).
INDEX_MAPS = ("sto2", "sto2_index", "nir", "thi", "twi", "thb")
#: Maps that are fractions in [0, 1] and get percentiles.
FRACTION_MAPS = ("sto2", "sto2_index", "nir", "thi", "twi")
PERCENTILES = (5, 50, 95)
#: Class id of withheld pixels (edge.pipeline.stages.PostStage.NO_CLASS).
NO_CLASS = 255


class MapStats:
    """Running count, sum and (for fractions) histogram of one map's finite values."""

    def __init__(self, fraction: bool = True) -> None:
        self.n = 0
        self.total = 0.0
        self.hist = np.zeros(BINS, np.int64) if fraction else None

    def add(self, values: np.ndarray) -> None:
        """Add the finite values of ``values`` (any shape, float)."""
        v = values[np.isfinite(values)].astype(np.float64)
        if not v.size:
            return
        self.n += int(v.size)
        self.total += float(v.sum())
        if self.hist is not None:
            self.hist += np.bincount(_bin(v), minlength=BINS)

    def summary(self) -> dict[str, Any]:
        """``n``, ``mean`` and ``p5``/``p50``/``p95`` (bin centres; None without values)."""
        doc: dict[str, Any] = {"n": self.n, "mean": self.total / self.n if self.n else None}
        if self.hist is not None:
            cum = np.cumsum(self.hist)
            for q in PERCENTILES:
                if not self.n:
                    doc[f"p{q}"] = None
                    continue
                # smallest bin whose cumulative count reaches q % of the values
                i = int(np.searchsorted(cum, q / 100.0 * self.n, side="left"))
                doc[f"p{q}"] = (min(i, BINS - 1) + 0.5) / BINS
        return doc


def _bin(v: np.ndarray) -> np.ndarray:
    """Histogram bin of each value (float64, any shape) -> int64 in [0, BINS)."""
    return np.clip((v * BINS).astype(np.int64), 0, BINS - 1)


def _add_by_class(accs: list[MapStats], values: np.ndarray, classes: np.ndarray) -> None:
    """Add each pixel's finite value to its class's accumulator, all classes at once.

    ``values`` float (rows, cols), ``classes`` (rows, cols) class ids; ids >= len(accs)
    (withheld) are skipped.  One ``bincount`` per figure over class x bin instead of a mask
    and a histogram per class: the same counts, and sums within float64 rounding.
    """
    k = len(accs)
    keep = np.isfinite(values) & (classes < k)
    cls = classes[keep].astype(np.int64)
    if not cls.size:
        return
    v = values[keep].astype(np.float64)
    n = np.bincount(cls, minlength=k)
    total = np.bincount(cls, weights=v, minlength=k)
    hist = (np.bincount(cls * BINS + _bin(v), minlength=k * BINS).reshape(k, BINS)
            if accs[0].hist is not None else None)
    for c, acc in enumerate(accs):
        if n[c]:
            acc.n += int(n[c])
            acc.total += float(total[c])
            if hist is not None:
                acc.hist += hist[c]


class RecordingStats:
    """Accumulates the figures of one recording frame by frame.

    Parameters
    ----------
    class_names : sequence of str
        Names by class id (empty without a model: no per-class figures).
    """

    def __init__(self, class_names: tuple[str, ...] = ()) -> None:
        self.class_names = tuple(class_names)
        self.frames = 0
        self.pixels = 0
        self.maps = {name: MapStats(name in FRACTION_MAPS) for name in INDEX_MAPS}
        self.areas = np.zeros(len(self.class_names) + 1, np.int64)  # last: withheld
        self.class_sto2 = [MapStats() for _ in self.class_names]
        # only their means are reported: no histograms
        self.class_index = {name: [MapStats(fraction=False) for _ in self.class_names]
                            for name in INDEX_MAPS if name != "sto2"}

    def add(self, products: dict[str, np.ndarray]) -> None:
        """Add one frame's maps (``sto2`` etc. of shape (rows, cols), ``classes`` uint8)."""
        self.frames += 1
        classes = products.get("classes")
        sto2 = products.get("sto2")
        shape = next(iter(v.shape for v in products.values() if np.ndim(v) == 2), (0, 0))
        self.pixels += int(np.prod(shape))
        for name, acc in self.maps.items():
            if name in products:
                acc.add(products[name])
        if classes is None or not self.class_names:
            return
        k = len(self.class_names)
        counts = np.bincount(np.where(classes < k, classes, k).ravel(), minlength=k + 1)
        self.areas += counts[: k + 1]
        if sto2 is not None:
            _add_by_class(self.class_sto2, sto2, classes)
        for name, accs in self.class_index.items():
            if name in products:
                _add_by_class(accs, products[name], classes)

    def summary(self) -> dict[str, Any]:
        """JSON-able figures: ``indices`` (per map) and ``classes`` (per class name)."""
        doc: dict[str, Any] = {
            "pixels": self.pixels,
            "indices": {name: acc.summary() for name, acc in self.maps.items() if acc.n},
            "classes": {},
        }
        if self.class_names:
            total = max(self.pixels, 1)
            for c, name in enumerate(self.class_names):
                entry = {"area_px": int(self.areas[c]), "area_frac": self.areas[c] / total,
                         "sto2": self.class_sto2[c].summary()}
                entry["index_means"] = {n: accs[c].summary()["mean"]
                                        for n, accs in self.class_index.items()}
                entry["index_n"] = {n: accs[c].n for n, accs in self.class_index.items()}
                doc["classes"][name] = entry
            doc["withheld_px"] = int(self.areas[-1])
        return doc
