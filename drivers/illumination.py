"""The illumination contract and its hsi-edge controller implementation.

An illumination controller has named channels addressed by name or index::

    with drivers.open_illumination("/dev/serial/by-id/usb-HSIEDGE_TIC-1_SN0001") as light:
        light.set_intensity("green", 0.4)   # fraction 0..1
        light.set_on("green", True)
        light.state()    # {"green": {"on": True, "intensity": 0.4}, ...}
        light.status()   # {"flags": [...], "temperature_c": 36.2, ...}

Public methods validate (channel, fraction), then call ``_do_*`` hooks that do the I/O
(DESIGN.md house style 2).  Safe defaults: every implementation switches its LEDs off on
construction, reconnect, :meth:`Illumination.close` and after an error that reaches the caller.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Sequence

from edge.errors import DeviceError

__all__ = ["Illumination", "HsiIllumination", "resolve_channel"]

log = logging.getLogger(__name__)


def resolve_channel(names: Sequence[str], channel: int | str) -> int:
    """Index of ``channel`` (a name, matched case-insensitively, or an index) in ``names``.

    Raises
    ------
    DeviceError
        For an unknown name or an index out of range (the message lists the channels).
    """
    if isinstance(channel, bool) or not isinstance(channel, (int, str)):
        raise DeviceError(f"channel: expected a name or index, got {channel!r}")
    if isinstance(channel, int):
        if 0 <= channel < len(names):
            return channel
        raise DeviceError(f"channel: index {channel} out of range 0-{len(names) - 1}")
    folded = [name.casefold() for name in names]
    if channel.casefold() in folded:  # "green" and "GREEN" name one channel on every device
        return folded.index(channel.casefold())
    raise DeviceError(f"channel: unknown name {channel!r}; channels are {', '.join(names)}")


class Illumination(ABC):
    """Base class of every illumination controller (LED engine)."""

    @property
    @abstractmethod
    def channels(self) -> tuple[str, ...]:
        """Channel names, index order."""

    @property
    @abstractmethod
    def serial_number(self) -> str:
        """Serial number reported by the device."""

    def channel_index(self, channel: int | str) -> int:
        """Resolve a channel name or index (see :func:`resolve_channel`)."""
        return resolve_channel(self.channels, channel)

    def set_on(self, channel: int | str, on: bool) -> None:
        """Switch one channel on or off."""
        if not isinstance(on, bool):
            raise DeviceError(f"on: expected True or False, got {on!r}")
        ch = self.channel_index(channel)
        log.debug("%s: channel %s %s", type(self).__name__, self.channels[ch],
                  "on" if on else "off")
        self._do_set_on(ch, on)

    def set_intensity(self, channel: int | str, fraction: float) -> None:
        """Set one channel's intensity as a fraction 0..1 of its maximum."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise DeviceError(f"fraction: expected a number in [0, 1], got {fraction!r}")
        self._do_set_intensity(self.channel_index(channel), float(fraction))

    def set_state(self, mapping: dict) -> None:
        """Apply ``{channel: fraction}``: intensity set, on when fraction > 0, others off."""
        wanted = {self.channel_index(k): v for k, v in mapping.items()}
        for ch in range(len(self.channels)):
            fraction = wanted.get(ch, 0.0)
            if fraction > 0:
                self.set_intensity(ch, fraction)
            self.set_on(ch, fraction > 0)

    def state(self, refresh: bool = False) -> dict[str, dict]:
        """``{name: {"on": bool, "intensity": fraction}}`` as the driver knows it; with
        ``refresh`` re-read from the device first."""
        on, fractions = self._do_state(refresh)
        return {name: {"on": on[i], "intensity": fractions[i]}
                for i, name in enumerate(self.channels)}

    @abstractmethod
    def status(self) -> dict:
        """Device status: ``flags`` (list of fault/state names), ``temperature_c``, ``serial``."""

    @abstractmethod
    def safe(self) -> None:
        """All channels off (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """All channels off and release the port (idempotent)."""

    def __enter__(self) -> "Illumination":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _do_set_on(self, ch: int, on: bool) -> None: ...

    @abstractmethod
    def _do_set_intensity(self, ch: int, fraction: float) -> None: ...

    @abstractmethod
    def _do_state(self, refresh: bool) -> tuple[Sequence[bool], Sequence[float]]: ...


class HsiIllumination(Illumination):
    """LED channels of an hsi-edge controller (:class:`drivers.trigger.HsiConnection`).

    Intensities travel as integers 0..MAXINT (1000) on the wire.
    """

    def __init__(self, connection) -> None:
        self.connection = connection

    @property
    def channels(self) -> tuple[str, ...]:
        return self.connection.channels

    @property
    def serial_number(self) -> str:
        return self.connection.serial_number

    def _do_set_on(self, ch: int, on: bool) -> None:
        self.connection.set_led(ch, on)

    def _do_set_intensity(self, ch: int, fraction: float) -> None:
        self.connection.set_int(ch, round(fraction * self.connection.max_intensity))

    def _do_state(self, refresh: bool) -> tuple[Sequence[bool], Sequence[float]]:
        conn = self.connection
        if refresh:
            conn.get_leds()
        else:
            conn.poll_events()  # a watchdog or fault event may have switched LEDs off
        return list(conn.led_on), [v / conn.max_intensity for v in conn.intensity]

    def set_max_on(self, channel: int | str, seconds: float) -> None:
        """Device-side limit of continuous on-time for one channel (0 = no limit)."""
        if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
            raise DeviceError(f"seconds: expected 0 (no limit) to 3600, got {seconds!r}")
        self.connection.set_max_on(self.channel_index(channel), round(seconds * 1000))

    def status(self) -> dict:
        return self.connection.status()

    def safe(self) -> None:
        self.connection.safe()

    def close(self) -> None:
        self.connection.close()
