"""The wire commands of the hsi-edge controller (``drivers/PROTOCOL.md``), one method each.

:class:`HsiCommands` is a mixin of :class:`drivers.hsi_connection.HsiConnection`, kept in its
own module so the connection module holds the transport (sequence numbers, CRC, retries,
reconnect and resync, events, heartbeat) and this one the command vocabulary.  Every method
goes through the connection's ``query`` / ``write`` / ``read_back`` / ``transact`` (the
templates of :class:`drivers.serial_link.Connection`) or ``_set``, so the retry
policy of the module docstring of :mod:`drivers.hsi_connection` applies to all of them, and
updates the connection's cached state (``led_on``, ``intensity``, ``armed``, ``counter``) only
after the device confirmed.
"""

from __future__ import annotations

from typing import Sequence

from drivers import protocol as P
from drivers.serial_link import reply_flag, reply_float, reply_int
from edge.errors import DeviceProtocolError

__all__ = ["HsiCommands"]


class HsiCommands:
    """Wire commands; needs the attributes and transaction methods of ``HsiConnection``."""

    def set_led(self, ch: int, on: bool) -> None:
        self.write("SET", "LED", ch, int(on),
                   verify=lambda: reply_flag("LED", self.read_back("LED", ch), 1) == bool(on))
        self.led_on[ch] = bool(on)

    def set_int(self, ch: int, value: int) -> None:
        self._set("INT", str(ch), int(value))
        self.intensity[ch] = int(value)

    def get_armed(self) -> bool:
        """``GET ARMED``; refreshes the cache (the device disarms itself after its pulse count
        or a fault, which the cached flag would not show)."""
        self.armed = reply_flag("ARMED", self.query("ARMED"))
        return self.armed

    def get_leds(self) -> tuple[list[bool], list[int]]:
        """``GET LEDS`` -> (on flags, intensities); refreshes the cache."""
        v = self.query("LEDS")
        if len(v) != len(self.channels) + 1:
            raise DeviceProtocolError(f"malformed reply {' '.join(('LEDS', *v))!r}: expected "
                                      f"a mask and {len(self.channels)} intensities")
        mask = reply_int("LEDS", v, 0, hi=2**len(self.channels) - 1)
        ints = [reply_int("LEDS", v, i, hi=self.max_intensity) for i in range(1, len(v))]
        self.led_on = [bool(mask >> i & 1) for i in range(len(ints))]
        self.intensity = ints
        return list(self.led_on), list(ints)

    def set_max_on(self, ch: int, ms: int) -> None:
        self._set("MAXON", str(ch), int(ms))

    def set_trigger(self, cmd: str, value: object) -> None:
        """``SET TSRC|TPER|TWID|TDLY|TCNT value``."""
        self._set(cmd, None, value)

    def set_sequence(self, steps: Sequence[Sequence[int]]) -> None:
        tokens = ["+".join(str(c) for c in s) if s else "-" for s in steps]
        self._set("SEQ", None, *tokens) if tokens else self._set("SEQ", None, "OFF")

    def set_sequence_enabled(self, on: bool) -> None:
        self._set("SEQEN", None, int(on))

    def arm(self, on: bool = True) -> None:
        self.write("DO", "ARM" if on else "DISARM",
                   verify=lambda: reply_flag("ARMED", self.read_back("ARMED")) == bool(on))
        self.armed = on

    def fire(self) -> int:
        """``DO FIRE``: one software pulse; returns the 32-bit trigger counter after it."""
        with self._lock:
            before = self.get_counter() if self.counter is None else self.counter
            fired = []

            def verify() -> bool:
                now = reply_int("TCTR", self.read_back("TCTR"))
                fired.append(now)
                return now != before

            reply = self.write("DO", "FIRE", verify=verify)
            self.counter = (reply_int("FIRE", reply.values) if reply is not None
                            else fired[-1])
            return self.counter

    def reset_counter(self) -> None:
        self.write("SET", "TCTR", 0, verify=lambda: self.read_back("TCTR")[:1] == ("0",))
        self.counter = 0

    def status(self) -> dict:
        """``GET STAT`` and ``GET TEMP`` decoded (see PROTOCOL.md)."""
        flags = reply_int("STAT", self.query("STAT"), hi=255)
        temp = reply_float("TEMP", self.query("TEMP"))
        return {"flags": [name for bit, name in P.STATUS_FLAGS.items() if flags & bit],
                "temperature_c": temp, "serial": self.serial_number,
                "firmware": self.identity[3] if len(self.identity) > 3 else "?",
                "port": self.port, "reconnects": self.stats["reconnects"]}

    def get_counter(self) -> int:
        """``GET TCTR``: the 32-bit trigger counter; refreshes the cache."""
        self.counter = reply_int("TCTR", self.query("TCTR"))
        return self.counter

    def heartbeat_once(self) -> None:
        self.transact("DO", "HB", (), idempotent=True)

    def safe(self) -> None:
        """``DO SAFE`` (idempotent): LEDs off, disarmed, sequence off."""
        with self._lock:
            self._do_safe()

    def clear_faults(self) -> None:
        self.transact("DO", "CLR", (), idempotent=True)
