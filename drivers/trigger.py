"""The trigger contract and the trigger device of the hsi-edge controller.

:class:`Trigger` is the contract every trigger source implements, named as the camera names
the same things (:class:`drivers.camera.Camera`): ``open``/``close`` (idempotent; a context
manager), ``configure``, ``arm``/``disarm``, ``is_armed``, ``trigger()`` (one software pulse),
``counter``.  Safe defaults: ``close`` disarms and switches LEDs off, and never raises for a
closed device.

:class:`TriggerController` sits on a :class:`drivers.hsi_connection.HsiConnection` (which holds
the transaction, retry and reconnect logic; protocol: ``drivers/PROTOCOL.md``);
:class:`drivers.illumination.HsiIllumination` is the LED device on the same connection.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Sequence

from drivers.hsi_connection import TRIGGER_SOURCES, HsiConnection
from drivers.illumination import resolve_channel
from edge.errors import DeviceError

__all__ = ["HsiConnection", "Trigger", "TriggerController", "TRIGGER_SOURCES"]

log = logging.getLogger(__name__)


class Trigger(ABC):
    """Base class of every trigger source.

    Public methods validate and keep the lifecycle; the ``_do_*`` hooks do the I/O.
    """

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """Whether the device is open."""

    @property
    @abstractmethod
    def is_armed(self) -> bool:
        """Whether the device is armed, as the device reports it (it may disarm itself)."""

    @property
    @abstractmethod
    def counter(self) -> int:
        """Pulses emitted (the device's counter; wraps at 2**32)."""

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> "Trigger":
        """Open the device (idempotent); it is disarmed with LEDs off afterwards."""
        if not self.is_open:
            self._do_open()
        return self

    def close(self) -> None:
        """Disarm, LEDs off and release the device (idempotent, never raises)."""
        if self.is_open:
            self._do_close()

    def __enter__(self) -> "Trigger":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- acquisition ----------------------------------------------------------------------
    def arm(self) -> None:
        """Start emitting pulses per the configured source."""
        self._require_open("arm()")
        self._do_arm(True)

    def disarm(self) -> None:
        """Stop emitting pulses (a no-op on a closed device)."""
        if self.is_open:
            self._do_arm(False)

    def trigger(self) -> int:
        """One software pulse (source "software", armed); returns the pulse counter."""
        self._require_open("trigger()")
        if not self.is_armed:
            raise DeviceError("trigger(): trigger is not armed; call arm() first")
        return self._do_trigger()

    def _require_open(self, what: str) -> None:
        if not self.is_open:
            raise DeviceError(f"{what}: {type(self).__name__} is closed; call open() first")

    # -- hooks ----------------------------------------------------------------------------
    @abstractmethod
    def configure(self, **settings) -> None:
        """Set the trigger source and timing; raises DeviceError while armed."""

    @abstractmethod
    def _do_open(self) -> None: ...

    @abstractmethod
    def _do_close(self) -> None: ...

    @abstractmethod
    def _do_arm(self, on: bool) -> None: ...

    @abstractmethod
    def _do_trigger(self) -> int: ...


class TriggerController(Trigger):
    """The trigger side of an hsi-edge controller.

    Use :func:`drivers.open_trigger` or pass a :class:`HsiConnection` (opened here if it is
    not yet).  :meth:`close` disarms, switches LEDs off and releases the port.
    """

    def __init__(self, connection: HsiConnection) -> None:
        self.connection = connection
        connection.open()

    @property
    def is_open(self) -> bool:
        return self.connection.is_open

    @property
    def is_armed(self) -> bool:
        """Whether the device is armed, read from the device (it disarms itself after its
        pulse count or on a fault)."""
        return self.connection.get_armed()

    @property
    def counter(self) -> int:
        """The device's 32-bit trigger counter (wraps at 2**32)."""
        return self.connection.get_counter()

    def configure(self, *, source: str | None = None, period_us: int | None = None,
                  width_us: int | None = None, delay_us: int | None = None,
                  count: int | None = None) -> None:
        """Set trigger source (internal, external, software), period, pulse width, delay and
        pulse count (0 = run until disarmed); ``None`` keeps a setting."""
        if source is not None and source not in TRIGGER_SOURCES:
            raise DeviceError(f"source: expected one of {', '.join(TRIGGER_SOURCES)}, "
                              f"got {source!r}")
        limits = {"period_us": (period_us, 100, 10_000_000), "width_us": (width_us, 1, 1_000_000),
                  "delay_us": (delay_us, 0, 1_000_000), "count": (count, 0, 2**32 - 1)}
        for name, (value, lo, hi) in limits.items():
            if value is not None and not (isinstance(value, int) and lo <= value <= hi):
                raise DeviceError(f"{name}: expected an integer {lo}-{hi}, got {value!r}")
        if self.connection.get_armed():
            raise DeviceError("configure(): trigger is armed; call disarm() first")
        for cmd, value in (("TSRC", TRIGGER_SOURCES.get(source or "")), ("TPER", period_us),
                           ("TWID", width_us), ("TDLY", delay_us), ("TCNT", count)):
            if value is not None:
                self.connection.set_trigger(cmd, value)

    def reset_counter(self) -> None:
        self.connection.reset_counter()

    def set_sequence(self, steps: Sequence[Sequence[int | str] | int | str]) -> None:
        """LED pattern stepped by trigger edges: one entry per pulse, each a channel, a list of
        channels (names or indices) or an empty list for dark; ``[]`` clears it."""
        names = self.connection.channels
        resolved = []
        for step in steps:
            group = [step] if isinstance(step, (int, str)) else list(step)
            resolved.append([resolve_channel(names, c) for c in group])
        self.connection.set_sequence(resolved)

    def enable_sequence(self, on: bool = True) -> None:
        self.connection.set_sequence_enabled(on)

    def status(self) -> dict:
        return self.connection.status()

    def safe(self) -> None:
        self.connection.safe()

    def _do_open(self) -> None:
        self.connection.open()

    def _do_close(self) -> None:
        self.connection.close()

    def _do_arm(self, on: bool) -> None:
        self.connection.arm(on)

    def _do_trigger(self) -> int:
        return self.connection.fire()
