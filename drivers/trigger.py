"""The trigger device of the hsi-edge controller (protocol: ``drivers/PROTOCOL.md``).

:class:`TriggerController` sits on a :class:`drivers.hsi_connection.HsiConnection` (which holds
the transaction, retry and reconnect logic); :class:`drivers.illumination.HsiIllumination` is
the LED device on the same connection.
"""

from __future__ import annotations

import logging
from typing import Sequence

from drivers.hsi_connection import TRIGGER_SOURCES, HsiConnection
from drivers.illumination import resolve_channel
from edge.errors import DeviceError

__all__ = ["HsiConnection", "TriggerController", "TRIGGER_SOURCES"]

log = logging.getLogger(__name__)


class TriggerController:
    """The trigger side of an hsi-edge controller.

    Use :func:`drivers.open_trigger` or pass an open :class:`HsiConnection`.  A context
    manager; :meth:`close` disarms, switches LEDs off and releases the port.
    """

    def __init__(self, connection: HsiConnection) -> None:
        self.connection = connection

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

    def arm(self) -> None:
        self.connection.arm(True)

    def disarm(self) -> None:
        self.connection.arm(False)

    @property
    def armed(self) -> bool:
        """Whether the device is armed, read from the device (it disarms itself after its
        pulse count or on a fault)."""
        return self.connection.get_armed()

    def fire(self) -> int:
        """One software trigger (source "software", armed); returns the pulse counter."""
        if not self.connection.get_armed():
            raise DeviceError("fire(): trigger is not armed; call arm() first")
        return self.connection.fire()

    @property
    def counter(self) -> int:
        """The device's 32-bit trigger counter (wraps at 2**32)."""
        value = int(self.connection.query("TCTR")[0])
        self.connection.counter = value
        return value

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

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "TriggerController":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

