"""A paced load: triggers at the camera's frame rate, as on a unit.

:class:`PacedCamera` wraps a software-triggered camera and fires its trigger on a fixed grid
``t0 + k / fps`` of the monotonic clock, whatever the consumer does.  When the acquisition
thread comes late for a slot (the pipeline is busy, the machine stalls), the slots it missed
are skipped, and ``frame_id`` is the slot number, so skipped slots show as gaps (counted as
missed frames by the pipeline and as "not shown" by the latency statistics) exactly as a
camera triggered by a hardware clock would drop them.  The frame's ``timestamp_ns`` stays the
inner camera's trigger time.

Glass to glass on the simulated bench: with ``marker_every=N`` the simulated marker LED lights
a corner patch (:data:`MARKER_PATCH`, saturated counts) in the exposures of every N-th slot,
and the firing times of those trigger edges are kept in ``flashes_ns``.
:class:`edge.latency.marker.MarkerDetector` finds the patch in the output (the chain's
saturation flags), so the whole path -- camera read, queue, every stage -- is timed from the
pixels, not from the frame's metadata.
"""

from __future__ import annotations

import collections
import dataclasses
import time

from edge.core.frame import Frame
from edge.errors import ConfigError

__all__ = ["PacedCamera", "SoftwareTriggered", "MARKER_PATCH"]

#: Rows and columns of the marker patch (top-left corner).
MARKER_PATCH = (slice(0, 4), slice(0, 4))


class SoftwareTriggered:
    """Base of the latency workflow's camera wrappers: wraps a camera armed for software
    triggers, and everything it does not define is the inner camera's."""

    #: Named in the error for an inner camera not in software-trigger mode.
    what = "this wrapper"

    def __init__(self, inner, *, clock_ns=time.monotonic_ns, sleep=time.sleep):
        if inner.trigger_mode != "software":
            raise ConfigError(f"camera trigger mode: {self.what} needs 'software', got "
                              f"{inner.trigger_mode!r}")
        self.inner = inner
        self._clock, self._sleep = clock_ns, sleep

    def __getattr__(self, name):  # everything not wrapped is the inner camera's
        return getattr(self.inner, name)

    @property
    def trigger_mode(self) -> str:
        return "software"


class PacedCamera(SoftwareTriggered):
    """Delegates to ``inner`` (opened, software trigger) and paces :meth:`trigger`.

    Parameters
    ----------
    inner : drivers.camera.Camera
    fps : float
        Trigger rate (> 0).
    clock_ns, sleep : callables, optional
        The monotonic clock and sleep used for the grid (tests give a scripted clock).
    marker_every : int
        Light the marker in every N-th slot (0: never).  Raw (uint16) cameras only.
    """

    what = "PacedCamera"

    def __init__(self, inner, fps: float, *, clock_ns=time.monotonic_ns, sleep=time.sleep,
                 marker_every: int = 0):
        if not fps or fps <= 0:
            raise ConfigError(f"camera.fps: a paced latency run needs a frame rate > 0, got "
                              f"{fps!r}")
        super().__init__(inner, clock_ns=clock_ns, sleep=sleep)
        self.fps = float(fps)
        self.period_ns = int(round(1e9 / self.fps))
        self._t0 = 0
        self._next = 0
        self._slots: collections.deque[int] = collections.deque()
        self.slots_skipped = 0
        if int(marker_every) < 0:
            raise ConfigError(f"marker_every: expected an integer >= 0, got {marker_every!r}")
        self.marker_every = int(marker_every)
        self.flashes_ns: list[int] = []   # bounded by the slots of a round (cleared at arm)

    def arm(self) -> None:
        self.inner.arm()
        self._slots.clear()
        self.flashes_ns = []
        self._next = 0
        self._t0 = self._clock() + self.period_ns

    def disarm(self) -> None:
        self.inner.disarm()

    def trigger(self) -> None:
        """Wait for the next free slot of the grid and trigger; late slots are skipped."""
        now = self._clock()
        due = -(-(now - self._t0) // self.period_ns)          # ceil: first slot not passed
        k = max(self._next, int(due))
        self.slots_skipped += k - self._next
        wait = self._t0 + k * self.period_ns - now
        if wait > 0:
            self._sleep(wait / 1e9)
        if self.marker_every and k % self.marker_every == 0:
            self.flashes_ns.append(self._clock())   # the marker LED's edge: this trigger
        self.inner.trigger()
        self._slots.append(k)
        self._next = k + 1

    def read(self, timeout: float = 1.0) -> Frame:
        frame = self.inner.read(timeout=timeout)
        if self._slots:
            k = self._slots.popleft()
            frame.meta = dataclasses.replace(frame.meta, frame_id=k)
            if self.marker_every and k % self.marker_every == 0 and frame.cube.dtype.kind == "u":
                cube = frame.cube.copy()
                cube[MARKER_PATCH] = (1 << frame.meta.bit_depth) - 1   # the LED saturates it
                frame.cube = cube
        return frame
