"""The camera contract (DESIGN.md, "Drivers and simulators").

Public methods validate arguments, keep state and log; they then call a ``_do_*`` hook that
implementations override to do the I/O.  A camera is a context manager::

    with SimulatedCamera(preset="tivita") as cam:
        cam.configure(exposure_us=8000, trigger_mode="software")
        cam.arm()
        cam.trigger()
        frame = cam.read(timeout=1.0)

Trigger modes
-------------
``"software"``
    Each :meth:`Camera.trigger` call starts one exposure; :meth:`Camera.read` returns it.
``"external"``
    Exposures start on external trigger pulses (e.g. the trigger controller); ``read``
    returns the next one.  A missed pulse shows as a gap in ``frame.meta.frame_id``.
``"free_run"``
    The camera exposes continuously at its frame rate.

:meth:`Camera.read` never blocks forever: with no frame before ``timeout`` seconds it raises
:class:`~edge.errors.DeviceTimeout`.

What callers may ask every camera (with the defaults of this base class)
-------------------------------------------------------------------------
``dtype``
    dtype of the delivered cubes: uint16 raw counts (default) or float32 reflectance
    (e.g. a calibrated recording, which needs no flat field).
``exhausted``
    True once a finite source (a recording) has delivered its last frame; a DeviceTimeout
    then means end of stream, not a fault.  Default False (a live camera never is).
``serial_known``
    False when :attr:`Camera.serial` is a stand-in (a recording that does not say which
    camera made it), so serial checks are skipped.  Default True.
``target``
    What a :class:`CalibrationTarget` camera looks at (``"scene"``, ``"white"``, ``"dark"``);
    None (default) for a camera that cannot put a target in view by itself.

Capabilities beyond the contract are mixins checked with ``isinstance``:
:class:`CalibrationTarget` (places a white/dark target itself: simulators),
:class:`ExternalTrigger` (takes trigger edges from a trigger controller) and
:class:`IlluminationInput` (takes the light state emitted by an LED controller).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from typing import Literal

import numpy as np

from edge.core.frame import Frame
from edge.errors import DeviceError

__all__ = ["DEFAULT_EXPOSURE_US",
           "Camera", "CalibrationTarget", "ExternalTrigger", "IlluminationInput", "VirtualClock",
           "TriggerMode",
           "TRIGGER_MODES", "TARGETS"]

#: The exposure every entry point defaults to (``hsi-edge run``'s ``camera.exposure_us``,
#: ``calibrate capture``, ``simulate``, a freshly opened camera), so a calibration record
#: captured with defaults fits a run with defaults (issue 15 item 22: 10,000 vs 8,000 µs).
DEFAULT_EXPOSURE_US = 8000.0

log = logging.getLogger(__name__)

TriggerMode = Literal["software", "external", "free_run"]
TRIGGER_MODES: tuple[str, ...] = ("software", "external", "free_run")
#: What a :class:`CalibrationTarget` camera can look at.
TARGETS: tuple[str, ...] = ("scene", "white", "dark")


class Camera(ABC):
    """Base class of every camera.

    Subclasses set ``self._wavelengths`` (float64 nm, ascending), ``self._shape``
    ``(rows, cols, bands)``, ``self._serial``, ``self._bit_depth``, the exposure/gain limits,
    and implement the ``_do_*`` hooks.
    """

    #: Allowed exposure range in microseconds; subclasses may narrow it.
    exposure_range_us: tuple[float, float] = (10.0, 1_000_000.0)
    #: Allowed analogue gain range (linear).
    gain_range: tuple[float, float] = (1.0, 16.0)
    #: True once a finite source delivered its last frame (see module docstring).
    exhausted: bool = False
    #: False when ``serial`` is a stand-in, not the camera's own serial number.
    serial_known: bool = True
    #: The calibration target in view; None: this camera cannot place one by itself.
    target: str | None = None
    #: How often the current target was placed again (CalibrationTarget cameras).
    placement: int = 0
    #: sha256 of the camera's factory calibration (band centres, FWHM, serial) as read from
    #: the device; None: this camera reports none.
    factory_calibration_hash: str | None = None
    #: The sensor's noise model for the StO2 standard error (``counts_per_electron``,
    #: ``read_noise_counts``, optional ``crosstalk``); None: unknown (give it in the config).
    sensor_noise: dict | None = None
    #: Where each band of the delivered cube samples the scene, (dy, dx) in spectral pixels
    #: from the pixel centre, ndarray (bands, 2): a snapshot mosaic camera's bands sit at their
    #: filter positions in the super-pixel (``edge.processing.register``, issue 14); None:
    #: unknown or registered (every band at the centre).
    band_offsets: np.ndarray | None = None

    def __init__(self) -> None:
        self._opened = False
        self._armed = False
        self._exposure_us = DEFAULT_EXPOSURE_US
        self._gain = 1.0
        self._trigger_mode: str = "software"
        self._wavelengths = np.zeros(0)
        self._shape: tuple[int, int, int] = (0, 0, 0)
        self._serial = "unknown"
        self._bit_depth = 10
        self._fwhm_nm: float | None = None

    # -- properties ---------------------------------------------------------------------
    @property
    def wavelengths(self) -> np.ndarray:
        """Band centres, ndarray of shape (bands,), float64 nm."""
        return self._wavelengths

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(rows, cols, bands)`` of every frame."""
        return self._shape

    @property
    def fwhm_nm(self) -> float | None:
        """Band full width at half maximum in nm (None if unknown); the unmixing basis is
        band-integrated with it."""
        return self._fwhm_nm

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def dtype(self) -> np.dtype:
        """dtype of the delivered cubes: uint16 raw counts (this default) or float32
        reflectance."""
        return np.dtype(np.uint16)

    @property
    def bit_depth(self) -> int:
        return self._bit_depth

    @property
    def exposure_us(self) -> float:
        return self._exposure_us

    @property
    def gain(self) -> float:
        return self._gain

    @property
    def trigger_mode(self) -> str:
        return self._trigger_mode

    @property
    def is_open(self) -> bool:
        return self._opened

    @property
    def is_armed(self) -> bool:
        return self._armed

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> "Camera":
        """Open the device (idempotent)."""
        if not self._opened:
            self._do_open()
            self._opened = True
            log.debug("camera %s opened", self._serial)
        return self

    def close(self) -> None:
        """Disarm and close the device (idempotent, never raises for an already closed one)."""
        if not self._opened:
            return
        try:
            if self._armed:
                self._do_disarm()
        finally:
            self._armed = False
            self._opened = False
            self._do_close()
            log.debug("camera %s closed", self._serial)

    def __enter__(self) -> "Camera":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings -----------------------------------------------------------------------
    def configure(self, *, exposure_us: float | None = None, gain: float | None = None,
                  trigger_mode: str | None = None) -> None:
        """Set exposure (µs), gain (linear) and/or trigger mode; ``None`` keeps a setting.

        Raises
        ------
        DeviceError
            If a value is outside the allowed range or not a known trigger mode (the message
            names the parameter, the bad value and what is allowed).
        """
        if exposure_us is not None:
            lo, hi = self.exposure_range_us
            if not (isinstance(exposure_us, (int, float)) and math.isfinite(exposure_us)
                    and lo <= exposure_us <= hi):
                raise DeviceError(
                    f"exposure_us: expected {lo:g}-{hi:g} µs, got {exposure_us!r}")
        if gain is not None:
            lo, hi = self.gain_range
            if not (isinstance(gain, (int, float)) and math.isfinite(gain) and lo <= gain <= hi):
                raise DeviceError(f"gain: expected {lo:g}-{hi:g}, got {gain!r}")
        if trigger_mode is not None and trigger_mode not in TRIGGER_MODES:
            raise DeviceError(
                f"trigger_mode: expected one of {', '.join(TRIGGER_MODES)}, got {trigger_mode!r}")
        if self._armed and trigger_mode is not None and trigger_mode != self._trigger_mode:
            raise DeviceError("trigger_mode: cannot change while armed; call disarm() first")
        self._do_configure(exposure_us, gain, trigger_mode)
        if exposure_us is not None:
            self._exposure_us = float(exposure_us)
        if gain is not None:
            self._gain = float(gain)
        if trigger_mode is not None:
            self._trigger_mode = trigger_mode

    def arm(self) -> None:
        """Start acquisition in the configured trigger mode (opens the device if needed)."""
        self.open()
        if not self._armed:
            self._do_arm()
            self._armed = True

    def disarm(self) -> None:
        """Stop acquisition; frames not yet read are discarded."""
        if self._armed:
            self._do_disarm()
            self._armed = False

    def trigger(self) -> None:
        """Fire one software trigger (trigger mode ``"software"`` only)."""
        if not self._armed:
            raise DeviceError("trigger(): camera is not armed; call arm() first")
        if self._trigger_mode != "software":
            raise DeviceError(
                f"trigger(): only valid in trigger_mode 'software', camera is in "
                f"{self._trigger_mode!r}")
        self._do_trigger()

    def read(self, timeout: float = 1.0) -> Frame:
        """Return the next frame, waiting at most ``timeout`` seconds.

        Raises
        ------
        DeviceError
            If the camera is not armed or ``timeout`` is not a positive finite number.
        DeviceTimeout
            If no frame arrives before the deadline.
        """
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise DeviceError(f"timeout: expected seconds > 0, got {timeout!r}")
        if not self._armed:
            raise DeviceError("read(): camera is not armed; call arm() first")
        deadline = time.monotonic() + float(timeout)
        return self._do_read(deadline)

    def grab(self, timeout: float = 1.0) -> Frame:
        """Software-trigger one exposure and read it (convenience for ``"software"`` mode)."""
        self.trigger()
        return self.read(timeout)

    # -- hooks ----------------------------------------------------------------------------
    def _do_open(self) -> None:
        pass

    def _do_close(self) -> None:
        pass

    def _do_configure(self, exposure_us: float | None, gain: float | None,
                      trigger_mode: str | None) -> None:
        pass

    def _do_arm(self) -> None:
        pass

    def _do_disarm(self) -> None:
        pass

    def _do_trigger(self) -> None:
        raise DeviceError(f"{type(self).__name__} does not support software triggers")

    @abstractmethod
    def _do_read(self, deadline: float) -> Frame:
        """Return the next frame or raise DeviceTimeout once ``time.monotonic() > deadline``."""


class CalibrationTarget(ABC):
    """Capability mixin: the camera puts a calibration target in view by itself (simulators).

    ``target`` is one of :data:`TARGETS`; ``placement`` counts re-placements of a tile (a
    small seeded change of its geometry).  References are captured through the normal
    ``read`` path.
    """

    @property
    @abstractmethod
    def target(self) -> str:
        """``"scene"``, ``"white"`` (reference tile) or ``"dark"`` (lens capped)."""

    @target.setter
    @abstractmethod
    def target(self, value: str) -> None: ...


class VirtualClock(ABC):
    """Capability mixin: device time can be advanced at once (simulators), so a scripted
    calibration waits for warm-up without sleeping."""

    @abstractmethod
    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` of device time pass."""


class ExternalTrigger(ABC):
    """Capability mixin: the camera takes trigger edges from a trigger controller (the
    simulated bench wires the controller simulator's pulses to it)."""

    @abstractmethod
    def external_pulse(self, timestamp_ns: int | None = None) -> bool:
        """One trigger edge; True if it starts an exposure, False if the camera missed it."""


class IlluminationInput(ABC):
    """Capability mixin: the camera takes the light state an LED controller emits."""

    @abstractmethod
    def set_led_state(self, state) -> None:
        """``{channel: intensity 0-1}`` for the following exposures; channels not named are
        off (all off: a dark frame)."""
