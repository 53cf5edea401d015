"""Connection to the hsi-edge trigger/illumination controller (protocol: ``drivers/PROTOCOL.md``).

:class:`HsiConnection` is the connection object: sequence numbers, optional CRC, echo checks,
retries of idempotent requests, state re-read after a failed write, reconnect and resync,
device events, heartbeat; one method per wire command comes from
:class:`drivers.hsi_commands.HsiCommands`.  The devices on top of it are
:class:`drivers.trigger.TriggerController` and :class:`drivers.illumination.HsiIllumination`
(both can share one connection, as :class:`drivers.bench.SimulatedBench` does).

Retry policy (PROTOCOL.md, "Host behaviour"): queries (``GET``) and idempotent actions
(``DO SAFE``, ``DO HB``, ``DO CLR``) are retried after a timeout or a protocol error.  A write
(``SET``, ``DO ARM``/``DISARM``/``FIRE``) is never blindly re-sent: the driver re-reads the
state; if the write took effect it succeeded, else an absolute ``SET``/``ARM``/``DISARM`` is
sent again, while ``FIRE`` (counts pulses) is only re-sent when the counter proves it did not
fire.  A device error reply that means "not executed" (busy, CRC) is always retried.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from drivers import protocol as P
from drivers.hsi_commands import HsiCommands
from drivers.serial_link import (Connection, Interrupted, LinkLost, NotExecuted, SerialLink,
                                 reply_int, reply_names)
from edge.errors import DeviceError, DeviceFault, DeviceProtocolError, DeviceTimeout

__all__ = ["HsiConnection", "TRIGGER_SOURCES"]

log = logging.getLogger(__name__)

#: Trigger sources: driver name -> wire token.
TRIGGER_SOURCES = {"internal": "INT", "external": "EXT", "software": "SW"}


def _caps(values: tuple[str, ...]) -> dict[str, int]:
    """``A CAPS NCH=<n> MAXINT=<n> SEQMAX=<n>`` -> {key: int}; unknown keys are kept, a
    known key with a bad value is a DeviceProtocolError naming the reply."""
    limits = {"NCH": (1, 64), "MAXINT": (1, 1_000_000), "SEQMAX": (1, 65535)}
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if key in limits:
            lo, hi = limits[key]
            if not (sep and value.isascii() and value.isdigit() and lo <= int(value) <= hi):
                raise DeviceProtocolError(
                    f"malformed reply {' '.join(('CAPS', *values))!r}: {key} is {value!r}, "
                    f"expected an integer {lo}-{hi}")
            out[key] = int(value)
    return out


class HsiConnection(HsiCommands, Connection):
    """Connection to an hsi-edge controller (see :class:`drivers.serial_link.Connection`).

    Parameters
    ----------
    url : str
        Port for ``serial.serial_for_url``.
    crc : bool
        Switch CRC-16 on for this connection (recommended; detects garbled values).
    watchdog_s : float
        Device watchdog period; 0 disables it.  With ``heartbeat`` the driver sends ``DO HB``
        every third of the period from a daemon thread.
    heartbeat : bool
        Run the heartbeat thread (turn off to test the watchdog).
    busy_retries : int
        Re-sends after ``E ... 30 busy``, with 20 ms, 40 ms, ... back-off.
    **options
        ``reply_timeout``, ``retries``, ``reconnect_timeout``, ``search``, ``baudrate``,
        ``exclusive`` of :class:`~drivers.serial_link.Connection`.
    """

    device_kind = "hsi-edge trigger controller"

    def __init__(self, url: str, *, crc: bool = True, watchdog_s: float = 2.0,
                 heartbeat: bool = True, **options) -> None:
        super().__init__(url, **options)
        if not isinstance(watchdog_s, (int, float)) or not (watchdog_s == 0
                                                             or 0.05 <= watchdog_s <= 60):
            raise DeviceError(f"watchdog_s: expected 0 (off) or 0.05-60 s, got {watchdog_s!r}")
        self.crc = bool(crc)
        self.watchdog_s = float(watchdog_s)
        self.heartbeat = bool(heartbeat)
        self.channels: tuple[str, ...] = ()
        self.max_intensity = 1000
        self.led_on: list[bool] = []
        self.intensity: list[int] = []
        self.armed = False
        self.counter: int | None = None
        self.events: collections.deque = collections.deque(maxlen=256)
        self.on_event: Callable[[P.Reply], None] | None = None
        self._config: dict[tuple[str, str | None], tuple] = {}
        self._crc_on = False
        self._seq = 0
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> "HsiConnection":
        super().open()
        if self.heartbeat and self.watchdog_s > 0 and self._hb_thread is None:
            # A fresh event per thread: a thread that close() gave up joining (stuck in a
            # transaction past the 2 s join) keeps its own, set, event and ends, instead of
            # being revived beside the new one by a shared event cleared here.
            self._hb_stop = threading.Event()
            self._hb_thread = threading.Thread(target=self._beat, args=(self._hb_stop,),
                                               daemon=True,
                                               name=f"hsi-heartbeat-{self.serial_number}")
            self._hb_thread.start()
        return self

    def close(self) -> None:
        """LEDs off, disarm, watchdog off, release the port (idempotent, never raises)."""
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2.0)
            self._hb_thread = None
        super().close()

    def _do_close(self) -> None:
        self.transact("DO", "SAFE", (), idempotent=True)
        self.transact("SET", "WDT", ("0",), idempotent=True)

    def _beat(self, stop: threading.Event) -> None:
        interval = self.watchdog_s / 3
        lost = False
        while not stop.wait(interval):
            try:
                # Never reconnect from here: a reconnect holds the transaction lock for up to
                # reconnect_timeout, and repeated every interval it made the caller's next call
                # wait that long *before* its own reconnect (twice its deadline).  The caller's
                # next call reconnects; meanwhile the device watchdog has the LEDs off.
                with self._lock:
                    if self._closed or self._link is None:
                        continue
                    self.transact("DO", "HB", (), idempotent=True, reconnect=False)
                lost = False
            except LinkLost as exc:
                if not lost:
                    log.warning("heartbeat: %s lost (%s); the next call reconnects", self.url, exc)
                lost = True
            except DeviceError as exc:
                log.warning("heartbeat to %s failed: %s", self.url, exc)

    # -- identity and resync --------------------------------------------------------------
    def _identify(self, link: SerialLink) -> tuple[tuple[str, ...], str]:
        link.write(b"\n")  # flush a half-received line on the device side
        time.sleep(0.005)
        link.discard_input()
        deadline = time.monotonic() + self.reply_timeout
        # seq 0 is reserved for this query (_exchange never uses it), so a late reply to an
        # earlier command (a previous session's, or the device's answer to the half line our
        # empty line completed) is recognised and skipped instead of failing the identity check.
        link.write(P.encode_command("GET", "IDN", (), seq=0, crc=True))
        ignored: list[bytes] = []
        while True:
            try:
                line = link.read_line(deadline)
            except DeviceTimeout as exc:
                seen = f"; ignored {', '.join(map(repr, ignored[:3]))}" if ignored else ""
                raise DeviceTimeout(f"no {self.device_kind} answered GET IDN on {link.url} "
                                    f"within {self.reply_timeout:g} s ({exc}{seen})") from None
            try:
                reply = P.parse_line(line)
            except DeviceProtocolError as exc:
                raise DeviceProtocolError(
                    f"device on {link.url} is not an {self.device_kind}: it answered GET IDN "
                    f"with {line!r} ({exc})") from None
            if reply.kind == "!":
                continue
            if (reply.seq is not None and reply.seq != 0) or (
                    reply.seq is None and reply.cmd != "IDN"):
                ignored.append(line)  # a stale reply: not the answer to GET IDN
                continue
            vals = reply.values
            if reply.kind != "A" or reply.cmd != "IDN" or len(vals) < 5 or vals[:2] != (
                    P.VENDOR, P.MODEL):
                raise DeviceProtocolError(
                    f"device on {link.url} is not an {self.device_kind}: GET IDN answered "
                    f"{line!r}, expected 'A IDN {P.VENDOR} {P.MODEL} <serial> <fw> <protocol>'")
            major = vals[4].split(".")[0]
            if major != str(P.PROTOCOL_VERSION):
                raise DeviceProtocolError(
                    f"{self.device_kind} on {link.url} speaks protocol {vals[4]}, this driver "
                    f"needs major version {P.PROTOCOL_VERSION}; update the firmware or driver")
            return vals, vals[2]

    def _do_resync(self) -> None:
        """Known state after open/reconnect/reset: CRC mode, identity re-checked under CRC,
        LEDs off, cached config re-sent, counter re-read."""
        self._crc_on = False
        self.transact("SET", "CRC", ("1" if self.crc else "0",), idempotent=True,
                      send_crc=True)
        self._crc_on = self.crc
        if self._crc_on:
            # GET IDN's first answers carried no CRC; now one does: a serial number damaged
            # on the line and agreed twice by chance is caught here, never kept
            idn = self.transact("GET", "IDN", (), idempotent=True).values
            if idn[2:3] != (self.serial_number,):
                raise DeviceProtocolError(
                    f"{self.device_kind} on {self.port}: GET IDN under CRC answered "
                    f"{' '.join(idn)!r}, serial {self.serial_number!r} expected")
        self.transact("DO", "SAFE", (), idempotent=True)
        caps = _caps(self.transact("GET", "CAPS", (), idempotent=True).values)
        self.channels = reply_names("CHMAP", self.transact("GET", "CHMAP", (),
                                                           idempotent=True).values,
                                    count=caps.get("NCH"))
        self.max_intensity = caps.get("MAXINT", 1000)
        n = len(self.channels)
        self.led_on = [False] * n
        self.armed = False
        self.intensity = [0] * n
        for (cmd, _), args in list(self._config.items()):
            self.transact("SET", cmd, args, idempotent=True)
        self.transact("SET", "WDT", (str(round(self.watchdog_s * 1000)),), idempotent=True)
        for ch in range(n):
            self.intensity[ch] = reply_int(
                "INT", self.transact("GET", "INT", (ch,), idempotent=True).values, 1,
                hi=self.max_intensity)
        # a reset or power cycle restarts the 32-bit counter: re-read, never assume
        self.counter = reply_int("TCTR", self.transact("GET", "TCTR", (), idempotent=True).values)

    def _do_safe(self) -> None:
        # the cache changes only once the device confirmed: after a failed SAFE the LEDs may
        # still be on, and state() must not claim otherwise
        self.transact("DO", "SAFE", (), idempotent=True)
        self.led_on = [False] * len(self.led_on)
        self.armed = False

    # -- transactions ---------------------------------------------------------------------
    def _handle_event(self, ev: P.Reply) -> None:
        self.events.append(ev)
        self.stats["events"] += 1
        v = ev.values
        if ev.cmd == "FAULT":
            kind = v[0] if v else "?"
            log.warning("%s %s reports fault %s", self.device_kind, self.serial_number,
                        " ".join(v))
            if kind == "MAXON" and len(v) > 1 and v[1].isdigit() and int(v[1]) < len(self.led_on):
                self.led_on[int(v[1])] = False
            else:  # WDT, OVERTEMP, INTERLOCK: the device switched every LED off, disarmed
                self.led_on = [False] * len(self.led_on)
                self.armed = False
        if self.on_event is not None:
            self.on_event(ev)

    def _drain(self, link: SerialLink) -> None:
        """Dispatch events that arrived between transactions; drop stale replies."""
        data = link.discard_input()
        for line in data.split(b"\n")[:-1]:
            try:
                r = P.parse_line(line + b"\n", require_crc=self._crc_on and b"BOOT" not in line)
            except DeviceProtocolError:
                continue
            if r.kind == "!":
                self._handle_event(r)
                if r.cmd == "BOOT" and not self._in_resync:
                    self._resync()
            else:
                self.stats["stale"] += 1

    def _crc_mode_lost(self, line: bytes, seq: int) -> bool:
        """After a reply without CRC in CRC mode: has the device left CRC mode (a reset whose
        ``! BOOT`` was lost, e.g. garbled while the UART came up)?  Asks ``GET CRC``; a reply
        that merely lost its ``*`` to line noise does not trigger a resync (LEDs off)."""
        try:
            r = P.parse_line(line)
            if r.kind == "!" or r.seq != seq:
                return False
            return self._exchange("GET", "CRC", (), send_crc=True,
                                  probe=True).values[:1] == ("0",)
        except DeviceError:
            return False

    def _exchange(self, verb: str, cmd: str, args: tuple[str, ...], *, send_crc: bool = False,
                  probe: bool = False) -> P.Reply:
        link = self._require_link()
        self._drain(link)
        self._seq = self._seq % 0xFFFF + 1  # 1..65535, wrapping; 0 is GET IDN's (_identify)
        seq = self._seq
        link.write(P.encode_command(verb, cmd, args, seq=seq, crc=send_crc or self._crc_on))
        deadline = time.monotonic() + self.reply_timeout
        while True:
            try:
                line = link.read_line(deadline)
            except DeviceTimeout as exc:
                raise DeviceTimeout(f"{verb} {cmd} {' '.join(args)}".rstrip()
                                    + f": {exc} ({self.reply_timeout:g} s)") from None
            try:
                r = P.parse_line(line, require_crc=self._crc_on and not probe
                                 and not line.startswith(b"! BOOT"))
            except DeviceProtocolError:
                if self._crc_on and not probe and b"*" not in line and self._crc_mode_lost(
                        line, seq):
                    raise Interrupted(
                        f"{self.device_kind} answered {verb} {cmd} without CRC although CRC "
                        f"mode was on: it was reset and its ! BOOT banner was lost") from None
                raise
            if r.kind == "!":
                self._handle_event(r)
                if r.cmd == "BOOT":
                    raise Interrupted(f"{self.device_kind} reset during {verb} {cmd}")
                continue
            if r.seq != seq:
                self.stats["stale"] += 1
                continue
            if r.cmd != cmd:
                raise DeviceProtocolError(f"reply to {verb} {cmd} echoes {r.cmd!r}: {line!r}")
            if r.kind == "E":
                code, text = r.code, f"{verb} {cmd} {' '.join(args)}: {r.text} (E{r.code})"
                if code in (P.E_BUSY, P.E_CRC, P.E_CRC_REQUIRED):
                    raise NotExecuted(text)
                if code in (P.E_INTERLOCK, P.E_OVERTEMP):
                    self.led_on = [False] * len(self.led_on)
                    raise DeviceFault(f"{self.device_kind} refused {text}")
                raise DeviceError(f"{self.device_kind} rejected {text}")
            if verb == "SET" and r.values != tuple(args):
                raise DeviceProtocolError(
                    f"reply to SET {cmd} {' '.join(args)} echoes {' '.join(r.values)!r}")
            return r

    def _set(self, cmd: str, key: str | None, *args: object) -> None:
        """Absolute ``SET cmd [key] args``: verified by ``GET cmd [key]``, cached for resync."""
        full = ((key,) if key is not None else ()) + tuple(str(a) for a in args)
        getargs = (key,) if key is not None else ()
        self.write("SET", cmd, *full,
                   verify=lambda: self.read_back(cmd, *getargs) == full)
        self._config[(cmd, key)] = full

    def poll_events(self) -> list[P.Reply]:
        """Read events that arrived while idle; returns the ones seen by this call."""
        with self._lock:
            before = len(self.events)
            link = self._require_link()
            try:
                self._drain(link)
            except LinkLost as exc:
                self._reconnect(exc)
            return list(self.events)[before:] if len(self.events) > before else []
