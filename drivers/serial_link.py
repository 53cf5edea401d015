"""Serial transport and the request/reply connection engine shared by the serial drivers.

:class:`SerialLink` wraps one pyserial port opened with ``serial.serial_for_url`` (a device path,
a ``/dev/serial/by-id/...`` link, ``socket://host:port``, ...) and reads terminated lines
against monotonic deadlines.  :class:`Connection` is the transaction engine every serial device
shares (DESIGN.md, "Drivers and simulators"; FACTS.md, "Serial hardware"), as template
methods: verified identity on open, one lock per transaction, bounded retries, verified
writes, the fail-safe, reconnect and resync.

Recovery from a lost port or a device reset (reconnect search, resync) and the errors that
say an exchange did not complete are in :mod:`drivers.serial_recovery`; the port itself in
:mod:`drivers.serial_port`; the names stay importable from here.

Protocol details (framing, sequence numbers, CRC, echo checks) live in the subclasses' hooks
(``_identify``, ``_exchange``, ``_do_resync``, ``_do_safe``): :class:`drivers.trigger.HsiConnection`, :class:`drivers.lumencor.LumencorConnection`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

from drivers.serial_port import LinkLost, SerialLink
from drivers.serial_recovery import Interrupted, NotExecuted, Recovery, Refused
from drivers.serial_replies import reply_flag, reply_float, reply_int, reply_names
from edge.errors import DeviceError, DeviceProtocolError, DeviceTimeout

__all__ = ["SerialLink", "Connection", "LinkLost", "Interrupted", "NotExecuted", "Refused",
           "reply_int", "reply_float", "reply_flag", "reply_names"]

log = logging.getLogger(__name__)


class Connection(Recovery):
    """Base of a line-protocol serial connection: the transaction engine of every protocol.

    A protocol subclass implements only its exchange (framing and parsing) and its state:

    - :meth:`_identify` -- one identity query on a fresh link;
    - :meth:`_exchange` -- send one request, return the parsed reply (or raise
      DeviceTimeout / DeviceProtocolError, which are retried for idempotent requests,
      :class:`Interrupted`, :class:`NotExecuted`, :class:`LinkLost` or :class:`Refused`);
    - :meth:`_do_resync` -- bring a (re)connected device to a known state;
    - :meth:`_do_safe` -- switch every LED off (the fail-safe).

    Everything else is here, once (DESIGN.md "Drivers and simulators"; FACTS.md "Serial
    hardware"): exclusive open and a verified identity (two reads that agree, a bounded number
    of tries); one lock per transaction (an ``RLock``: a resync may run inside a transaction);
    bounded retries on monotonic deadlines (:meth:`transact`); verified writes
    (:meth:`write`: a failed write is re-read, and re-sent only when it did not take effect);
    the fail-safe after an error that reaches the caller (:meth:`fail_safe`); reconnect with
    back-off when the port disappears, on the same path or on any path matching the ``search``
    globs, accepting only the device with the same serial number, followed by a resync.

    Parameters
    ----------
    url : str
        Port to open (see :class:`SerialLink`).
    baudrate : int
        Line rate.
    reply_timeout : float
        Seconds to wait for one reply.
    retries : int
        Extra attempts for idempotent requests after a timeout or protocol error (also the
        extra identity reads and first-resync attempts on open).
    reconnect_timeout : float
        Seconds to keep trying to find the device again after the port disappears; 0 disables
        reconnecting.
    search : sequence of str
        Glob patterns of other paths the device may reappear under (e.g.
        ``"/dev/serial/by-id/usb-HSIEDGE*"``); only a device with the same serial number is
        accepted.
    exclusive : bool
        Lock the port against other programs (default True).
    busy_retries : int
        Re-sends after a "not executed" reply (busy, CRC), with 20 ms, 40 ms, ... back-off.
    """

    #: Human name used in messages ("trigger controller", "Lumencor light engine").
    device_kind = "serial device"
    terminator = b"\n"

    def __init__(self, url: str, *, baudrate: int = 115200, reply_timeout: float = 0.25,
                 retries: int = 2, reconnect_timeout: float = 3.0,
                 search: Sequence[str] = (), exclusive: bool = True,
                 busy_retries: int = 3) -> None:
        for name, value, lo in (("reply_timeout", reply_timeout, 0.001),
                                ("reconnect_timeout", reconnect_timeout, 0.0)):
            if not isinstance(value, (int, float)) or not value >= lo or value > 600:
                raise DeviceError(f"{name}: expected seconds in [{lo:g}, 600], got {value!r}")
        for name, value in (("retries", retries), ("busy_retries", busy_retries)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
                raise DeviceError(f"{name}: expected an integer 0-10, got {value!r}")
        self.url = url
        self.baudrate = baudrate
        self.reply_timeout = float(reply_timeout)
        self.retries = retries
        self.busy_retries = busy_retries
        self.reconnect_timeout = float(reconnect_timeout)
        self.search = tuple(search)
        self.exclusive = exclusive
        self.serial_number: str | None = None
        self.identity: tuple[str, ...] = ()
        #: Counters for diagnostics and the soak test.
        self.stats = {"transactions": 0, "retries": 0, "timeouts": 0, "protocol_errors": 0,
                      "reconnects": 0, "resyncs": 0, "stale": 0, "busy": 0, "events": 0,
                      "recovered_writes": 0, "identity_reads": 0}
        self.on_reconnect: Callable[[], None] | None = None
        self._lock = threading.RLock()
        self._link: SerialLink | None = None
        self._closed = True
        self._in_resync = False

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._closed

    @property
    def connected(self) -> bool:
        """Open and holding a port (False while the port is lost and not yet reconnected)."""
        return not self._closed and self._link is not None

    @property
    def lock(self) -> threading.RLock:
        """The transaction lock: hold it to make several calls one unit."""
        return self._lock

    @property
    def port(self) -> str | None:
        """The path currently open (may differ from ``url`` after a reconnect)."""
        return self._link.url if self._link else None

    def open(self) -> "Connection":
        """Open the port, verify the device's identity and resynchronise (idempotent).

        The identity is read until two reads agree (identity replies may carry no CRC, so one
        damaged read must never be stored) and the first resync is retried, each at most
        ``retries + 2`` times.

        Raises
        ------
        DeviceTimeout, DeviceProtocolError
            If no such device answers consistently; DeviceError if the port is in use.
        """
        with self._lock:
            if not self._closed:
                return self
            link = SerialLink(self.url, baudrate=self.baudrate, exclusive=self.exclusive)
            try:
                self.identity, self.serial_number = self._verified_identity(link)
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
        """Switch LEDs off (best effort) and release the port (idempotent, never raises)."""
        with self._lock:
            if self.connected:
                try:
                    self._do_close()
                except DeviceError as exc:
                    log.warning("close(): could not switch %s off: %s", self.url, exc)
            self._closed = True
            if self._link is not None:
                self._link.close()
                self._link = None

    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol hooks -------------------------------------------------------------------
    def _identify(self, link: SerialLink) -> tuple[tuple[str, ...], str]:
        """Query identity once on a freshly opened link; return (identity fields, serial).

        Raise DeviceProtocolError if another kind of device answers, DeviceTimeout if nothing
        does.
        """
        raise NotImplementedError

    def _exchange(self, verb: str, cmd: str, args: tuple[str, ...], **options):
        """Send one request on the current link and return the parsed reply (no retries)."""
        raise NotImplementedError

    def _do_resync(self) -> None:
        """Bring a (re)connected device to a known state: LEDs off, cached config applied."""

    def _do_safe(self) -> None:
        """Every LED off (one transaction each, no fail-safe of its own)."""

    def _do_close(self) -> None:
        """What ``close`` sends before releasing the port (default: the fail-safe)."""
        self._do_safe()

    # -- identity ---------------------------------------------------------------------------
    def _verified_identity(self, link: SerialLink) -> tuple[tuple[str, ...], str]:
        """Identity read until two consecutive reads agree.

        Identity replies may carry no CRC (``GET IDN`` is sent before CRC mode is known), so
        a reply that lost or flipped a byte would otherwise be stored as the serial number
        and make every later reconnect refuse the real device.  At most ``2 * (retries + 2)``
        reads; it gives up early after two timeouts in a row (nothing answers) or
        the same refusal twice in a row (another device answers).
        """
        previous: tuple | None = None
        errors: list[DeviceError] = []
        timeouts = 0
        for _ in range(2 * (self.retries + 2)):
            self.stats["identity_reads"] += 1
            try:
                identity = self._identify(link)
            except (DeviceTimeout, DeviceProtocolError) as exc:
                previous = None
                timeouts = timeouts + 1 if isinstance(exc, DeviceTimeout) else 0
                refused = (isinstance(exc, DeviceProtocolError) and bool(errors)
                           and str(errors[-1]) == str(exc))
                errors.append(exc)
                if refused or timeouts >= 2:
                    break
                continue
            timeouts = 0
            if identity == previous:
                return identity
            previous = identity
        if not errors or previous is not None:
            raise DeviceProtocolError(
                f"{self.device_kind} on {link.url}: no two identity replies agreed in "
                f"{2 * (self.retries + 2)} reads (last {previous!r})")
        last = errors[-1]
        text = str(last) if str(errors[0]) == str(last) else (
            f"{last}; first attempt: {errors[0]}")
        raise type(last)(text)

    def _initial_sync(self) -> None:
        """First resync after open, retried ``retries + 1`` times (a reset or a damaged reply
        during the open must not fail it)."""
        for attempt in range(self.retries + 2):
            try:
                try:
                    self._resync()
                except (LinkLost, Interrupted) as exc:
                    self._recover(exc)
                return
            except (DeviceTimeout, DeviceProtocolError, Interrupted) as exc:
                if attempt == self.retries + 1:
                    raise
                log.info("%s: first resync failed (%s); again", self.device_kind, exc)

    def _resync(self) -> None:
        with self._lock:
            self._in_resync = True
            try:
                self._do_resync()
                self.stats["resyncs"] += 1
            finally:
                self._in_resync = False

    # -- transactions -----------------------------------------------------------------------
    def _require_link(self) -> SerialLink:
        if self._closed:
            raise DeviceError(f"{self.device_kind} on {self.url} is closed")
        if self._link is None:
            self._reconnect(LinkLost("port not open"))
        assert self._link is not None
        return self._link

    def transact(self, verb: str, cmd: str, args: Sequence[object] = (), *,
                 idempotent: bool, reconnect: bool = True, **options):
        """One request/reply under the lock, with the retry policy.

        Timeouts and protocol errors are retried ``retries`` times when ``idempotent``; a
        "not executed" reply is re-sent with back-off (``busy_retries``); a lost port is
        reconnected (unless ``reconnect=False``: LinkLost is raised) and a device reset
        resynchronised, after which an idempotent request is sent again and any other raises
        :class:`Interrupted`.  No fail-safe here (see :meth:`query`, :meth:`write`).
        """
        sargs = tuple(str(a) for a in args)
        with self._lock:
            attempt = busy = 0
            while True:
                self.stats["transactions"] += 1
                try:
                    return self._exchange(verb, cmd, sargs, **options)
                except Refused as exc:
                    raise exc.error from None
                except (LinkLost, Interrupted) as exc:
                    if self._in_resync or (isinstance(exc, LinkLost) and not reconnect):
                        raise
                    self._recover(exc)
                    err: DeviceError = Interrupted(f"{verb} {cmd} interrupted by a device "
                                                   f"reset or reconnect ({exc})")
                except NotExecuted as exc:
                    busy += 1
                    self.stats["busy"] += 1
                    if busy > self.busy_retries:
                        raise DeviceError(f"{exc}; gave up after {self.busy_retries} "
                                          "re-sends") from None
                    time.sleep(0.02 * 2 ** (busy - 1))
                    continue
                except DeviceTimeout as exc:
                    self.stats["timeouts"] += 1
                    err = exc
                except DeviceProtocolError as exc:
                    self.stats["protocol_errors"] += 1
                    err = exc
                if not idempotent or attempt >= self.retries:
                    raise err
                attempt += 1
                self.stats["retries"] += 1

    def query(self, cmd: str, *args: object) -> tuple[str, ...]:
        """``GET cmd args`` (retried); returns the reply values; the fail-safe runs if it
        fails."""
        with self._lock:
            try:
                return self._values(self.transact("GET", cmd, args, idempotent=True))
            except DeviceError as exc:
                self.fail_safe(exc)
                raise

    def write(self, verb: str, cmd: str, *args: object,
              verify: Callable[[], bool] | None = None, resend: bool = True):
        """Send a write that is never re-sent blindly.

        After a timeout, protocol error or interruption ``verify()`` re-reads the state: if the
        write took effect it is done (returns None), else it is re-sent (``resend``, at most
        ``retries`` times).  Without ``verify`` the error is raised.  Any error that reaches
        the caller runs the fail-safe first.

        Returns
        -------
        The reply, or None when the write was confirmed by re-reading.
        """
        with self._lock:
            attempt = 0
            while True:
                try:
                    return self.transact(verb, cmd, args, idempotent=False)
                except (DeviceTimeout, DeviceProtocolError, Interrupted) as exc:
                    if verify is None:
                        self.fail_safe(exc)
                        raise
                    try:
                        done = verify()
                    except DeviceError as exc2:
                        self.fail_safe(exc2)
                        raise exc2 from exc
                    if done:
                        self.stats["recovered_writes"] += 1
                        return None
                    if not resend or attempt >= self.retries:
                        self.fail_safe(exc)
                        raise
                    attempt += 1
                    self.stats["retries"] += 1
                except DeviceError as exc:
                    self.fail_safe(exc)
                    raise

    def read_back(self, cmd: str, *args: object) -> tuple[str, ...]:
        """``GET cmd args`` for a ``verify`` of :meth:`write` (retried, no fail-safe)."""
        return self._values(self.transact("GET", cmd, args, idempotent=True))

    def fail_safe(self, exc: BaseException | None = None) -> None:
        """LEDs off after an error that reached the caller (best effort, never raises); not
        while resyncing, closed or without a port (a reconnect switches them off anyway)."""
        if self._in_resync or not self.connected:
            return
        try:
            with self._lock:
                self._do_safe()
        except DeviceError as second:
            log.error("could not switch %s off after %s: %s", self.url, exc, second)

    @staticmethod
    def _values(reply) -> tuple[str, ...]:
        """Values of what :meth:`_exchange` returned: a values tuple or a reply object."""
        return reply if isinstance(reply, tuple) else reply.values
