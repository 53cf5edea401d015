"""Driver for Lumencor light engines (SPECTRA III / CELESTA / Aura III text protocol).

Protocol facts (FACTS.md, "Serial hardware"): 115200 8N1, ``GET|SET <CMD> [args]\\n`` ->
``A <CMD> [values]\\r\\n`` or ``E <CMD> <code>``; no reply within 100 ms means the command
failed; the first command after power-up may fail, so an empty line is sent first.  STAT:
0 ok, 1 fan, 2 high temp, 4 safety lock, 6 standby, 7 warming up.

The protocol has no sequence numbers and no checksum: a stale reply is recognised only by its
command name and channel argument, and a corrupted digit cannot be detected.  Use the hsi-edge
controller protocol (CRC) where integrity matters.  Writes are verified by re-reading
(``GET CHACT``, ``GET CHINT``) after a failure, by the same template
(:meth:`drivers.serial_link.Connection.write`) as the hsi-edge controller's.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from drivers.illumination import Illumination
from drivers.serial_link import (Connection, Refused, SerialLink, reply_flag, reply_float,
                                 reply_int, reply_names)
from edge.errors import DeviceError, DeviceFault, DeviceProtocolError, DeviceTimeout

__all__ = ["LumencorConnection", "LumencorIllumination", "STAT_CODES"]

log = logging.getLogger(__name__)

STAT_CODES = {0: "ok", 1: "fan", 2: "high_temperature", 4: "safety_lock", 6: "standby",
              7: "warming_up"}


class LumencorConnection(Connection):
    """One Lumencor engine on a serial port (see :class:`drivers.serial_link.Connection`)."""

    device_kind = "Lumencor light engine"

    def __init__(self, url: str, *, reply_timeout: float = 0.1, **options) -> None:
        super().__init__(url, reply_timeout=reply_timeout, **options)
        self.channels: tuple[str, ...] = ()
        self.max_intensity = 1000
        self.active: list[bool] = []
        self.intensity: list[int] = []
        self._config: dict[tuple[str, str], tuple[str, ...]] = {}

    def _line(self, link: SerialLink, text: str, cmd: str, first: str | None,
              deadline: float) -> tuple[str, tuple[str, ...]]:
        """Send ``text``; return (kind, values) of the reply to ``cmd`` (first value ``first``)."""
        link.write(text.encode("ascii") + b"\n")
        while True:
            raw = link.read_line(deadline)
            try:
                tokens = raw.decode("ascii").split()
            except UnicodeDecodeError:
                raise DeviceProtocolError(f"non-ASCII reply {raw!r} to {text!r}") from None
            if not raw.endswith(b"\r\n"):
                raise DeviceProtocolError(f"reply {raw!r} to {text!r} lacks the CR LF terminator")
            if len(tokens) < 2 or tokens[0] not in ("A", "E"):
                raise DeviceProtocolError(f"unexpected reply {raw!r} to {text!r}")
            if tokens[1] != cmd or (tokens[0] == "A" and first is not None
                                    and tokens[2:3] != [first]):
                self.stats["stale"] += 1  # a late reply to an earlier command
                continue
            return tokens[0], tuple(tokens[2:])

    def _identify(self, link: SerialLink) -> tuple[tuple[str, ...], str]:
        try:
            return self._identify_once(link)
        except DeviceTimeout as exc:
            raise DeviceTimeout(f"no {self.device_kind} answered on {link.url} within "
                                f"{self.reply_timeout:g} s ({exc})") from None
        except DeviceProtocolError as exc:
            if "not a" in str(exc):
                raise
            raise DeviceProtocolError(
                f"device on {link.url} is not a {self.device_kind}: {exc}") from None

    def _identify_once(self, link: SerialLink) -> tuple[tuple[str, ...], str]:
        link.write(b"\n")  # the first command after power-up may fail (FACTS.md)
        time.sleep(0.02)
        link.discard_input()
        values = []
        for cmd in ("MODEL", "SN"):
            for attempt in range(2):
                kind, vals = self._line(link, f"GET {cmd}", cmd, None,
                                        time.monotonic() + self.reply_timeout)
                if kind == "A" and vals:
                    break
            else:
                raise DeviceProtocolError(
                    f"device on {link.url} is not a {self.device_kind}: GET {cmd} answered "
                    f"E {cmd} {' '.join(vals)}")
            values.append(" ".join(vals))
        return tuple(values), values[1]

    def _do_resync(self) -> None:
        self.channels = reply_names("CHMAP", self.transact("GET", "CHMAP", idempotent=True))
        self.max_intensity = reply_int("MAXINT", self.transact("GET", "MAXINT", idempotent=True),
                                       lo=1, hi=1_000_000)
        n = len(self.channels)
        for ch in range(n):
            self.transact("SET", "CH", (ch, 0), idempotent=True)
        for (cmd, _), args in list(self._config.items()):
            self.transact("SET", cmd, args, idempotent=True)
        self.active = [False] * n
        self.intensity = [reply_int("CHINT", self.transact("GET", "CHINT", (ch,),
                                                           idempotent=True), 1,
                                    hi=self.max_intensity) for ch in range(n)]

    def _exchange(self, verb: str, cmd: str, args: tuple[str, ...]) -> tuple[str, ...]:
        text = " ".join((verb, cmd) + args)
        first = args[0] if args and cmd in ("CHACT", "CHINT", "CH") else None
        link = self._require_link()
        link.discard_input()
        try:
            kind, values = self._line(link, text, cmd, first,
                                      time.monotonic() + self.reply_timeout)
        except DeviceTimeout as exc:
            raise DeviceTimeout(f"{self.device_kind}: no reply to {text!r} within "
                                f"{self.reply_timeout * 1000:.0f} ms ({exc})") from None
        if kind == "E":
            raise Refused(self._explain(text, values))
        return values

    def _explain(self, text: str, values: tuple) -> DeviceError:
        code = values[0] if values else "?"
        stat = 0
        if not text.startswith("GET STAT"):  # explaining a refused GET STAT by GET STAT recursed
            try:
                stat = reply_int("STAT", self.transact("GET", "STAT", idempotent=True), hi=255)
            except DeviceError:
                stat = 0
        if stat in (2, 4):
            self.active = [False] * len(self.active)
            return DeviceFault(f"{self.device_kind} refused {text!r} (E {code}): status "
                               f"{stat} {STAT_CODES[stat]}")
        if code == "51":
            return DeviceError(f"{self.device_kind} refused {text!r}: invalid channel (E 51)")
        return DeviceProtocolError(f"{self.device_kind} refused {text!r}: error code {code}")

    def _do_safe(self) -> None:
        for ch in range(len(self.channels)):
            self.transact("SET", "CH", (ch, 0), idempotent=True)
        self.active = [False] * len(self.channels)

    # -- wire commands (verified writes, parsed queries) -------------------------------------
    def all_off(self) -> None:
        """``SET CH <ch> 0`` for every channel (raises DeviceError if that fails)."""
        with self._lock:
            self._do_safe()

    def set_active(self, ch: int, on: bool) -> None:
        """``SET CH <ch> 0|1``, verified by ``GET CHACT`` after a failure."""
        self.write("SET", "CH", ch, int(on), verify=lambda: self._read_active(ch) == bool(on))
        self.active[ch] = bool(on)

    def set_intensity(self, ch: int, value: int) -> None:
        """``SET CHINT <ch> <0..MAXINT>``, verified by ``GET CHINT``; cached for resync."""
        self.write("SET", "CHINT", ch, int(value),
                   verify=lambda: self._read_intensity(ch) == int(value))
        self.intensity[ch] = int(value)
        self._config[("CHINT", str(ch))] = (str(ch), str(int(value)))

    def get_active(self, ch: int) -> bool:
        """``GET CHACT <ch>``; refreshes the cache."""
        self.active[ch] = reply_flag("CHACT", self.query("CHACT", ch), 1)
        return self.active[ch]

    def get_intensity(self, ch: int) -> int:
        """``GET CHINT <ch>``; refreshes the cache."""
        self.intensity[ch] = reply_int("CHINT", self.query("CHINT", ch), 1, hi=self.max_intensity)
        return self.intensity[ch]

    def get_status(self) -> tuple[int, float]:
        """``GET STAT`` and ``GET TEMP``: (status code, °C)."""
        return (reply_int("STAT", self.query("STAT"), hi=255),
                reply_float("TEMP", self.query("TEMP")))

    def _read_active(self, ch: int) -> bool:
        return reply_flag("CHACT", self.read_back("CHACT", ch), 1)

    def _read_intensity(self, ch: int) -> int:
        return reply_int("CHINT", self.read_back("CHINT", ch), 1, hi=self.max_intensity)


class LumencorIllumination(Illumination):
    """The :class:`~drivers.illumination.Illumination` contract over a Lumencor engine.

    Parameters
    ----------
    url : str
        Port for ``serial.serial_for_url``.
    **options
        Options of :class:`drivers.serial_link.Connection` (``reply_timeout`` defaults to the
        vendor's 100 ms).
    """

    def __init__(self, url: str, **options) -> None:
        self.connection = LumencorConnection(url, **options).open()

    @property
    def channels(self) -> tuple[str, ...]:
        return self.connection.channels

    @property
    def serial_number(self) -> str:
        return self.connection.serial_number or "?"

    def _do_set_on(self, ch: int, on: bool) -> None:
        self.connection.set_active(ch, on)

    def _do_set_intensity(self, ch: int, fraction: float) -> None:
        self.connection.set_intensity(ch, round(fraction * self.connection.max_intensity))

    def _do_state(self, refresh: bool) -> tuple[Sequence[bool], Sequence[float]]:
        conn = self.connection
        if refresh:
            for ch in range(len(conn.channels)):
                conn.get_active(ch)
                conn.get_intensity(ch)
        return list(conn.active), [v / conn.max_intensity for v in conn.intensity]

    def status(self) -> dict:
        conn = self.connection
        stat, temp = conn.get_status()
        flags = [] if stat == 0 else [STAT_CODES.get(stat, f"stat_{stat}")]
        return {"flags": flags, "temperature_c": temp, "serial": self.serial_number,
                "model": conn.identity[0] if conn.identity else "?", "port": conn.port,
                "reconnects": conn.stats["reconnects"]}

    def safe(self) -> None:
        self.connection.all_off()

    def close(self) -> None:
        self.connection.close()
