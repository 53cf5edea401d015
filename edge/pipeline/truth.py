"""Truth scoring: StO2 of a run against the simulator's ground truth, in bounded memory.

Per frame, over tissue pixels (finite true StO2), in percentage points:

- ``sto2_mae_pp`` / ``sto2_bias_pp``: error on *valid* pixels (finite ``sto2``: no flag,
  including the StO2 validity bits of issue 14 when the chain has them);
- ``sto2_valid_fraction``: share of tissue pixels with a valid StO2;
- ``sto2_mae_all_pp`` / ``sto2_bias_all_pp``: error on every tissue pixel the chain gave an
  estimate for (``sto2_all``: before the validity mask; ``sto2`` when the chain has no quality
  rules);
- ``sto2_mae_border_pp`` / ``sto2_mae_interior_pp``: valid-pixel error within 2 pixels of an
  organ border or a true StO2 step above 5 points, and elsewhere;
- ``sto2_sigma_coverage``: share of valid pixels whose error is within one ``sto2_sigma``
  (about 0.68 for a calibrated standard error).

Each is the mean over frames of the per-frame value (frames without such pixels skipped).
"""

from __future__ import annotations

import numpy as np

from edge.pipeline.sinks import Sink

__all__ = ["TruthScorer", "border_mask"]

#: A true StO2 step larger than this between neighbours is an "StO2 edge" (fraction).
STO2_EDGE = 0.05
#: Pixels within this distance (Chebyshev, pixels) of an edge are "border".
BORDER_PX = 2


def border_mask(classes: np.ndarray | None, sto2: np.ndarray, width: int = BORDER_PX
                ) -> np.ndarray:
    """Pixels within ``width`` pixels of a class change or an StO2 step > 5 points.

    Parameters
    ----------
    classes : ndarray (rows, cols), int, or None
    sto2 : ndarray (rows, cols), float (NaN outside tissue)

    Returns
    -------
    ndarray (rows, cols), bool
    """
    s = np.nan_to_num(np.asarray(sto2, dtype=np.float64), nan=-1.0)
    edge = np.zeros(s.shape, bool)
    for ax in (0, 1):
        step = np.abs(np.diff(s, axis=ax)) > STO2_EDGE
        if classes is not None:
            step |= np.diff(np.asarray(classes).astype(np.int64), axis=ax) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= step
        edge[tuple(hi)] |= step
    out = edge.copy()
    for _ in range(int(width)):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


class _Mean:
    """Running mean of per-frame values (no list: a live run may last hours)."""

    __slots__ = ("n", "total")

    def __init__(self) -> None:
        self.n, self.total = 0, 0.0

    def add(self, value: float) -> None:
        self.n += 1
        self.total += float(value)

    def value(self) -> float | None:
        return self.total / self.n if self.n else None


class TruthScorer(Sink):
    """Scores StO2 against the simulator's ground truth (module docstring)."""

    name = "truth"

    def __init__(self) -> None:
        # running sums, not one float per frame: a live run may last hours (issue 15 item 10)
        self.frames = 0
        self.sum_abs_err = 0.0
        self.sum_err = 0.0
        self._extra = {k: _Mean() for k in (
            "sto2_valid_fraction", "sto2_mae_all_pp", "sto2_bias_all_pp",
            "sto2_mae_border_pp", "sto2_mae_interior_pp", "sto2_sigma_coverage")}

    def write(self, frame) -> None:
        truth, est = frame.truth, frame.products.get("sto2")
        if not truth or est is None or "sto2" not in truth:
            return
        true = truth["sto2"]
        tissue = np.isfinite(true)
        ok = tissue & np.isfinite(est)
        if tissue.any():
            self._extra["sto2_valid_fraction"].add(ok.sum() / tissue.sum())
        est_all = frame.products.get("sto2_all", est)
        every = tissue & np.isfinite(est_all)
        if every.any():
            d = (est_all[every] - true[every]).astype(np.float64)
            self._extra["sto2_mae_all_pp"].add(100 * np.abs(d).mean())
            self._extra["sto2_bias_all_pp"].add(100 * d.mean())
        if not ok.any():
            return
        d = (est[ok] - true[ok]).astype(np.float64)
        self.frames += 1
        self.sum_err += float(d.mean())
        self.sum_abs_err += float(np.abs(d).mean())
        err = np.abs(est.astype(np.float64) - true)
        border = border_mask(truth.get("classes"), true)
        for key, sel in (("sto2_mae_border_pp", ok & border),
                         ("sto2_mae_interior_pp", ok & ~border)):
            if sel.any():
                self._extra[key].add(100 * err[sel].mean())
        sigma = frame.products.get("sto2_sigma")
        if sigma is not None:
            cov = ok & np.isfinite(sigma)
            if cov.any():
                self._extra["sto2_sigma_coverage"].add(np.mean(err[cov] <= sigma[cov]))

    def summary(self) -> dict[str, float] | None:
        if not self.frames:
            return None
        out = {"sto2_mae_pp": 100 * self.sum_abs_err / self.frames,
               "sto2_bias_pp": 100 * self.sum_err / self.frames}
        for key, mean in self._extra.items():
            if mean.value() is not None:
                out[key] = mean.value()
        return out
