"""A tiny deterministic camera for calibration tests (a real Camera implementation)."""

from __future__ import annotations

import numpy as np
from drivers.camera import Camera
from edge.core.frame import Frame, FrameMeta
from edge.errors import DeviceTimeout

HOT = (2, 3)
DEAD = (5, 5)
OVER = (1, 1)
UNDER = (6, 6)


class BenchCamera(Camera):
    """Dark level + target-dependent signal + seeded Gaussian read noise, 10-bit counts.

    Pixel defects: ``HOT`` has a high dark level in one band, ``DEAD`` never responds to
    light, ``OVER`` reads 95 % of full scale on the white in one band, ``UNDER`` reads only
    20 counts above dark in one band.  Every delivered cube is kept in ``self.frames``.
    """

    def __init__(self, shape=(8, 9, 5), *, serial="BENCH-1", seed=0, float_frames=False):
        super().__init__()
        self._shape = shape
        self._wavelengths = np.linspace(500.0, 900.0, shape[2])
        self._serial = serial
        self._bit_depth = 10
        self._exposure_us = 1000.0
        full = 2 ** self._bit_depth - 1
        rng = np.random.default_rng(seed)
        self.dark_level = rng.uniform(60.0, 64.0, shape)
        self.dark_level[HOT + (1,)] = 300.0
        self.signal = np.full(shape, 0.7 * full) - self.dark_level  # white at 1000 µs
        self.signal[DEAD] = 0.0
        self.signal[OVER + (2,)] = 0.95 * full - self.dark_level[OVER + (2,)]
        self.signal[UNDER + (0,)] = 20.0
        self.target = "dark"
        self.float_frames = float_frames
        self._noise = np.random.default_rng(seed + 1)
        self._pending = 0
        self._next_id = 0
        self.frames: list[np.ndarray] = []

    def _do_trigger(self) -> None:
        self._pending += 1

    def _do_read(self, deadline: float) -> Frame:
        if not self._pending:
            raise DeviceTimeout("bench camera: no trigger pending")
        self._pending -= 1
        level = self.dark_level.copy()
        if self.target == "white":
            level += self.signal * (self.exposure_us / 1000.0)
        counts = np.clip(np.rint(level + self._noise.normal(0.0, 2.0, self._shape)), 0, 1023)
        cube = counts.astype(np.float32 if self.float_frames else np.uint16)
        self.frames.append(cube)
        meta = FrameMeta(frame_id=self._next_id, exposure_us=self.exposure_us, gain=self.gain,
                         serials={"camera": self.serial}, bit_depth=self.bit_depth)
        self._next_id += 1
        return Frame(cube, self._wavelengths, meta)
