"""One pyserial port with line reads bounded by monotonic deadlines (:class:`SerialLink`).

The transport under :class:`drivers.serial_link.Connection`; split from ``serial_link.py`` so
that module holds only the transaction engine.  ``serial.serial_for_url`` opens a device path,
a ``/dev/serial/by-id/...`` link, ``socket://host:port``, ...
"""

from __future__ import annotations

import logging
import time

import serial

try:  # tcdrain/tcsetattr raise termios.error, which is not an OSError
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    _TermiosError = OSError

#: What pyserial lets escape when a port vanishes.
_PORT_ERRORS = (serial.SerialException, OSError, _TermiosError)

from edge.errors import DeviceError, DeviceProtocolError, DeviceTimeout  # noqa: E402

__all__ = ["SerialLink", "LinkLost"]

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
