"""A simulated camera that costs no CPU while it is measured: frames rendered once, replayed.

On a unit the camera is hardware: exposure and read-out happen on the sensor and the frame
arrives by DMA, so the CPU and the GPU belong to the chain.  The simulated camera instead
renders every frame (scene, sensor noise, mosaic) on the acquisition thread, which on a small
machine competes with the measured chain for the cores and the GIL: on the 2-core development
machine the per-round median of a 15 ms chain then wandered by +-20 % with nothing else
running, which hid a 10 % slowdown from the gate.  :class:`FrameBank` renders ``size`` frames
before the run and then behaves as a software-triggered camera: a trigger starts an
"exposure", :meth:`FrameBank.read` waits (sleeps) until the exposure has ended and returns the
next banked cube with the trigger's time and sequence number.  Rendering happens once per
session, outside every round.

The timing model is the simulated camera's own for software triggers: the frame is ready
``exposure_us`` after its trigger, and no earlier than one sensor frame time
(``1 / preset fps``) after the previous one.
"""

from __future__ import annotations

import collections
import dataclasses
import time

from edge.core.frame import Frame
from edge.errors import ConfigError, DeviceTimeout
from edge.latency.paced import SoftwareTriggered

__all__ = ["FrameBank", "DEFAULT_BANK_SIZE"]

#: Frames rendered per session (distinct noise and breathing phase; replayed in turn).
DEFAULT_BANK_SIZE = 16


class FrameBank(SoftwareTriggered):
    """Pre-rendered frames of ``inner`` (a configured, software-triggered camera).

    Parameters
    ----------
    inner : drivers.camera.Camera
        Opened and configured with trigger mode ``"software"``; it is armed, triggered
        ``size`` times and disarmed here.
    size : int
        Frames to render (>= 1).
    sensor_fps : float, optional
        The sensor's own frame rate (a preset's): no frame is ready sooner than one sensor
        frame time after the previous one.  None: no such bound.
    clock_ns, sleep : callables, optional
        Monotonic clock and sleep (tests give a scripted clock).
    """

    what = "a frame bank"

    def __init__(self, inner, size: int = DEFAULT_BANK_SIZE, *, sensor_fps: float | None = None,
                 clock_ns=time.monotonic_ns, sleep=time.sleep):
        if int(size) < 1:
            raise ConfigError(f"frame bank size: expected an integer >= 1, got {size!r}")
        super().__init__(inner, clock_ns=clock_ns, sleep=sleep)
        self.frames: list[Frame] = []
        inner.arm()
        try:
            for _ in range(int(size)):
                inner.trigger()
                f = inner.read(timeout=60.0)
                f.cube.setflags(write=False)       # shared by every replay of it
                self.frames.append(f)
        finally:
            inner.disarm()
        self._min_gap_ns = int(1e9 / sensor_fps) if sensor_fps else 0
        self._pending: collections.deque[tuple[int, int]] = collections.deque()
        self._next_id = 0
        self._last_ready = 0

    def arm(self) -> None:
        self._pending.clear()

    def disarm(self) -> None:
        self._pending.clear()

    def trigger(self) -> None:
        """Start an exposure now (no CPU work: the cube is already rendered)."""
        self._pending.append((self._next_id, self._clock()))
        self._next_id += 1

    def read(self, timeout: float = 1.0) -> Frame:
        """The next triggered frame once its exposure has ended.

        Raises
        ------
        DeviceTimeout
            No trigger is pending, or the exposure ends after ``timeout`` seconds.
        """
        if not self._pending:
            raise DeviceTimeout(f"camera {self.inner.serial}: no frame before the read timeout "
                                f"(no software trigger pending)")
        frame_id, ts = self._pending[0]
        exp_ns = int(self.inner.exposure_us * 1e3)
        ready = max(ts + exp_ns, self._last_ready + self._min_gap_ns)
        wait = ready - self._clock()
        if wait > timeout * 1e9:
            self._sleep(timeout)
            raise DeviceTimeout(f"camera {self.inner.serial}: exposure of frame {frame_id} not "
                                f"finished before the read timeout")
        if wait > 0:
            self._sleep(wait / 1e9)
        self._pending.popleft()
        self._last_ready = ready
        src = self.frames[frame_id % len(self.frames)]
        meta = dataclasses.replace(src.meta, frame_id=frame_id, timestamp_ns=ts)
        return Frame(cube=src.cube, wavelengths=src.wavelengths, meta=meta, truth=src.truth)
