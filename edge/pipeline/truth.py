"""Truth scoring: StO2 of a run against the simulator's ground truth, in bounded memory."""

from __future__ import annotations

import numpy as np

from edge.pipeline.sinks import Sink

__all__ = ["TruthScorer"]


class TruthScorer(Sink):
    """Scores StO2 against the simulator's ground truth (valid tissue pixels only)."""

    name = "truth"

    def __init__(self) -> None:
        # running sums, not one float per frame: a live run may last hours (issue 15 item 10)
        self.frames = 0
        self.sum_abs_err = 0.0
        self.sum_err = 0.0

    def write(self, frame) -> None:
        truth, est = frame.truth, frame.products.get("sto2")
        if not truth or est is None or "sto2" not in truth:
            return
        ok = np.isfinite(truth["sto2"]) & np.isfinite(est)
        if ok.any():
            d = (est[ok] - truth["sto2"][ok]).astype(np.float64)
            self.frames += 1
            self.sum_err += float(d.mean())
            self.sum_abs_err += float(np.abs(d).mean())

    def summary(self) -> dict[str, float] | None:
        if not self.frames:
            return None
        return {"sto2_mae_pp": 100 * self.sum_abs_err / self.frames,
                "sto2_bias_pp": 100 * self.sum_err / self.frames}
