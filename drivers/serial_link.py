"""Serial transport and the request/reply connection engine shared by the serial drivers.

:class:`SerialLink` wraps one pyserial port opened with ``serial.serial_for_url`` (a device path,
a ``/dev/serial/by-id/...`` link, ``socket://host:port``, ...) and reads terminated lines
against monotonic deadlines.  :class:`Connection` adds what every serial device needs
(DESIGN.md, "Drivers and simulators"; FACTS.md, "Serial hardware"):

- exclusive open and an identity check (subclass hook :meth:`Connection._identify`);
- one lock per transaction (an ``RLock``: a resync may run inside a transaction);
- reconnect with back-off when the port disappears, on the same path or on any path matching
  the ``search`` globs, accepting only the device with the same serial number, followed by the
  subclass's :meth:`Connection._resync` (LEDs off, cached configuration re-applied).

Protocol details (framing, sequence numbers, CRC, what may be retried) live in the
subclasses: :class:`drivers.trigger.HsiConnection`, :class:`drivers.lumencor.LumencorConnection`.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from typing import Callable, Sequence

import serial

try:  # tcdrain/tcsetattr raise termios.error, which is not an OSError
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    _TermiosError = OSError

#: What pyserial lets escape when a port vanishes.
_PORT_ERRORS = (serial.SerialException, OSError, _TermiosError)
from edge.errors import DeviceError, DeviceProtocolError, DeviceTimeout

__all__ = ["SerialLink", "Connection", "LinkLost"]

log = logging.getLogger(__name__)

#: pyserial read timeout: the granularity at which a deadline is checked (seconds).
_POLL_S = 0.01


class LinkLost(DeviceError):
    """The port went away (unplugged, simulator disconnected); the connection may reconnect."""


class SerialLink:
    """One open pyserial port with line reads bounded by a deadline.

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` accepts.
    baudrate : int
        Line rate (ignored by ``socket://``).
    exclusive : bool
        Lock the port (``flock``) so no second process can use it.
    max_line : int
        Longest accepted line in bytes; a longer run without terminator is a protocol error.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, exclusive: bool = True,
                 max_line: int = 256) -> None:
        self.url = url
        self.max_line = max_line
        self._buf = bytearray()
        #: Set after an overlong line: drop bytes up to the next terminator (PROTOCOL.md, Link).
        self._skip_to_terminator = False
        try:
            kwargs = {"baudrate": baudrate, "timeout": _POLL_S, "write_timeout": 1.0}
            if not url.startswith(("socket://", "loop://", "rfc2217://")):
                kwargs["exclusive"] = exclusive
            self._port = serial.serial_for_url(url, **kwargs)
        except (*_PORT_ERRORS, ValueError) as exc:
            text = str(exc)
            if "exclusive" in text.lower() or "lock" in text.lower():
                raise DeviceError(f"port {url!r} is in use by another program ({text})") from exc
            raise LinkLost(f"cannot open port {url!r}: {text}") from exc

    def close(self) -> None:
        try:
            self._port.close()
        except _PORT_ERRORS:  # already gone: nothing to release
            pass

    def discard_input(self) -> bytes:
        """Drop buffered input (stale replies) and return what was dropped."""
        dropped = bytes(self._buf)
        self._buf.clear()
        try:
            # loop: socket:// reports in_waiting as 0/1 (readable or not), not a byte count
            while len(dropped) < 65536:
                waiting = self._port.in_waiting
                if not waiting:
                    break
                dropped += self._port.read(waiting)
        except _PORT_ERRORS as exc:
            raise LinkLost(f"port {self.url!r} went away: {exc}") from exc
        if self._skip_to_terminator and b"\n" in dropped:
            self._skip_to_terminator = False  # the overlong line ended inside what was dropped
        return dropped

    def write(self, data: bytes) -> None:
        try:
            # No flush(): it is tcdrain(), which has no timeout and blocks for as long as a
            # stalled USB device refuses data.  write() already hands every byte to the kernel
            # (bounded by write_timeout), and a reply deadline follows every write.
            self._port.write(data)
        except _PORT_ERRORS as exc:
            raise LinkLost(f"port {self.url!r} went away while writing: {exc}") from exc

    def read_line(self, deadline: float, terminator: bytes = b"\n") -> bytes:
        """Return the next line including its terminator.

        Raises
        ------
        DeviceTimeout
            If no complete line arrives before ``deadline`` (``time.monotonic()``); the
            message shows any partial data (pyserial returns partial data without raising).
        DeviceProtocolError
            If a line is longer than ``max_line`` bytes (terminator included); the rest of
            that line, up to its terminator, is discarded as it arrives.
        LinkLost
            If the port disappears.
        """
        while True:
            end = self._buf.find(terminator)
            if self._skip_to_terminator:
                if end < 0:
                    self._buf.clear()
                else:
                    del self._buf[:end + len(terminator)]
                    self._skip_to_terminator = False
                    continue
            elif end >= 0:
                size = end + len(terminator)
                line = bytes(self._buf[:size])
                del self._buf[:size]
                if size > self.max_line:
                    raise DeviceProtocolError(
                        f"line of {size} bytes from {self.url} exceeds max_line={self.max_line}: "
                        f"{line[:40]!r}...")
                return line
            elif len(self._buf) >= self.max_line:
                # Checked whatever the chunking: without this a long line could pass or fail
                # depending on how many bytes one read() happened to return.
                junk = bytes(self._buf)
                self._buf.clear()
                self._skip_to_terminator = True
                raise DeviceProtocolError(
                    f"{len(junk)} bytes without line terminator {terminator!r} from {self.url} "
                    f"(max_line={self.max_line}): {junk[:40]!r}...")
            if time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"no complete reply from {self.url} before the deadline"
                    + (f" (partial data {bytes(self._buf)!r}, missing terminator)"
                       if self._buf else ""))
            try:
                chunk = self._port.read(max(1, self._port.in_waiting))
            except _PORT_ERRORS as exc:
                raise LinkLost(f"port {self.url!r} went away while reading: {exc}") from exc
            self._buf += chunk


class Connection:
    """Base of a line-protocol serial connection: lock, deadlines, reconnect.

    Parameters
    ----------
    url : str
        Port to open (see :class:`SerialLink`).
    baudrate : int
        Line rate.
    reply_timeout : float
        Seconds to wait for one reply.
    retries : int
        Extra attempts for idempotent requests after a timeout or protocol error.
    reconnect_timeout : float
        Seconds to keep trying to find the device again after the port disappears; 0 disables
        reconnecting.
    search : sequence of str
        Glob patterns of other paths the device may reappear under (e.g.
        ``"/dev/serial/by-id/usb-HSIEDGE*"``); only a device with the same serial number is
        accepted.
    """

    #: Human name used in messages ("trigger controller", "Lumencor light engine").
    device_kind = "serial device"
    terminator = b"\n"

    def __init__(self, url: str, *, baudrate: int = 115200, reply_timeout: float = 0.25,
                 retries: int = 2, reconnect_timeout: float = 3.0,
                 search: Sequence[str] = (), exclusive: bool = True) -> None:
        for name, value, lo in (("reply_timeout", reply_timeout, 0.001),
                                ("reconnect_timeout", reconnect_timeout, 0.0)):
            if not isinstance(value, (int, float)) or not value >= lo or value > 600:
                raise DeviceError(f"{name}: expected seconds in [{lo:g}, 600], got {value!r}")
        if not isinstance(retries, int) or not 0 <= retries <= 10:
            raise DeviceError(f"retries: expected an integer 0-10, got {retries!r}")
        self.url = url
        self.baudrate = baudrate
        self.reply_timeout = float(reply_timeout)
        self.retries = retries
        self.reconnect_timeout = float(reconnect_timeout)
        self.search = tuple(search)
        self.exclusive = exclusive
        self.serial_number: str | None = None
        self.identity: tuple[str, ...] = ()
        #: Counters for diagnostics and the soak test.
        self.stats = {"transactions": 0, "retries": 0, "timeouts": 0, "protocol_errors": 0,
                      "reconnects": 0, "resyncs": 0, "stale": 0, "busy": 0, "events": 0}
        self.on_reconnect: Callable[[], None] | None = None
        self._lock = threading.RLock()
        self._link: SerialLink | None = None
        self._closed = True

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._closed

    @property
    def port(self) -> str | None:
        """The path currently open (may differ from ``url`` after a reconnect)."""
        return self._link.url if self._link else None

    def open(self) -> "Connection":
        """Open the port, check the device's identity and resynchronise (idempotent)."""
        with self._lock:
            if not self._closed:
                return self
            link = SerialLink(self.url, baudrate=self.baudrate, exclusive=self.exclusive)
            try:
                self.identity, self.serial_number = self._identify(link)
            except BaseException:
                link.close()
                raise
            self._link = link
            self._closed = False
            try:
                self._initial_sync()
            except BaseException:
                self.close()
                raise
            log.info("%s %s opened on %s", self.device_kind, self.serial_number, self.url)
            return self

    def close(self) -> None:
        """Release the port (idempotent; subclasses switch LEDs off first)."""
        with self._lock:
            self._closed = True
            if self._link is not None:
                self._link.close()
                self._link = None

    # -- hooks ----------------------------------------------------------------------------
    def _identify(self, link: SerialLink) -> tuple[tuple[str, ...], str]:
        """Query identity on a freshly opened link; return (identity fields, serial number).

        Raise DeviceProtocolError if another kind of device answers, DeviceTimeout if nothing
        does.
        """
        raise NotImplementedError

    def _initial_sync(self) -> None:
        """First resync after open (subclasses may retry it after a reset)."""
        self._resync()

    def _resync(self) -> None:
        """Bring a (re)connected device to a known state: LEDs off, cached config applied."""

    # -- helpers for subclasses -----------------------------------------------------------
    def _require_link(self) -> SerialLink:
        if self._closed:
            raise DeviceError(f"{self.device_kind} on {self.url} is closed")
        if self._link is None:
            self._reconnect(LinkLost("port not open"))
        assert self._link is not None
        return self._link

    def _candidates(self) -> list[str]:
        paths = [self.url]
        for pattern in self.search:
            paths += [p for p in sorted(glob.glob(pattern)) if p not in paths]
        return paths

    def _reconnect(self, cause: BaseException) -> None:
        """Find the device again (same serial number) with back-off, then resync.

        Raises
        ------
        DeviceError
            If it does not come back within ``reconnect_timeout`` seconds.
        """
        if self._link is not None:
            self._link.close()
            self._link = None
        if self.reconnect_timeout <= 0:
            raise LinkLost(f"{self.device_kind} on {self.url} disconnected ({cause}); "
                           "reconnecting is disabled (reconnect_timeout=0)") from cause
        log.warning("%s %s lost (%s); reconnecting", self.device_kind, self.serial_number, cause)
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = 0.02
        while True:
            for i, path in enumerate(self._candidates()):
                if i and time.monotonic() > deadline:
                    break  # many silent candidates must not stretch the deadline
                link = None
                try:
                    link = SerialLink(path, baudrate=self.baudrate, exclusive=self.exclusive)
                    _, serial_number = self._identify(link)
                except DeviceError as exc:
                    log.debug("reconnect: %s not usable: %s", path, exc)
                    if link is not None:
                        link.close()
                    continue
                if serial_number != self.serial_number:
                    log.info("reconnect: %s is serial %s, want %s; skipped", path,
                             serial_number, self.serial_number)
                    link.close()
                    continue
                self._link = link
                log.warning("%s %s back on %s", self.device_kind, self.serial_number, path)
                try:
                    self._resync()
                except DeviceError as exc:  # lost again while resyncing: keep searching
                    log.info("reconnect: resync on %s failed: %s", path, exc)
                    link.close()
                    self._link = None
                    continue
                self.stats["reconnects"] += 1
                if self.on_reconnect is not None:
                    self.on_reconnect()
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceError(
                    f"{self.device_kind} {self.serial_number} on {self.url} disconnected and did "
                    f"not come back within reconnect_timeout={self.reconnect_timeout:g} s "
                    f"(searched {', '.join(self._candidates())})") from cause
            # Sleep at most up to the deadline and look once more there: giving up as soon as
            # the next back-off would overshoot stopped searching up to 40 % early.
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 0.5)
