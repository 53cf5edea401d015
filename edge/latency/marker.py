"""Glass to glass on the simulated bench: find the marker in the output, time the whole path.

:class:`MarkerDetector` is a stage put after the last processing stage.  It looks at the
chain's per-pixel flags in the marker patch (:data:`edge.latency.paced.MARKER_PATCH`): when
every pixel there is flagged saturated, the marker LED was on in that exposure, and the time
is noted.  :func:`glass_to_glass` matches each detection to the latest marker flash before it
(flashes are at least a second apart in practice, far longer than any latency), so the
latency comes from the light and the pixels, not from the frame's metadata; flashes never
detected (their frame was dropped or missed) are counted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.backends.base import FLAG_SATURATED
from edge.core.frame import Frame
from edge.latency.paced import MARKER_PATCH
from edge.latency.stats import describe
from edge.pipeline.stages import Stage

__all__ = ["MarkerDetector", "glass_to_glass"]


class MarkerDetector(Stage):
    """Notes ``time.monotonic_ns()`` whenever the marker patch is saturated in the output."""

    name = "marker"

    def __init__(self) -> None:
        self.detections_ns: list[int] = []     # bounded by the flashes of a round

    def reset(self) -> None:
        self.detections_ns = []

    def process(self, frame: Frame) -> Frame:
        flags = frame.products.get("flags")
        if flags is not None and np.all(flags[MARKER_PATCH] & FLAG_SATURATED):
            self.detections_ns.append(time.monotonic_ns())
        return frame


def glass_to_glass(flashes_ns: list[int], detections_ns: list[int]) -> dict[str, Any]:
    """Latencies from each detection back to the latest unmatched flash before it.

    Returns
    -------
    dict
        ``flashes``, ``detected``, ``undetected`` (flashes never seen in the output) and the
        :func:`~edge.latency.stats.describe` figures of the latencies (ms).
    """
    flashes = np.sort(np.asarray(flashes_ns, dtype=np.int64))
    used = np.zeros(flashes.size, bool)
    lat = []
    for t in sorted(detections_ns):
        i = int(np.searchsorted(flashes, t, side="right")) - 1
        if i >= 0 and not used[i]:
            used[i] = True
            lat.append(t - flashes[i])
    out: dict[str, Any] = {"flashes": int(flashes.size), "detected": len(lat),
                           "undetected": int(flashes.size - len(lat))}
    out.update(describe(np.asarray(lat, dtype=np.int64)))
    return out
