"""Recovery of a serial :class:`~drivers.serial_link.Connection`: the errors that say an
exchange did not complete, and getting the device back after a reset or a lost port.

Split from ``serial_link.py`` (which keeps the transaction engine and re-exports these names).
:class:`Recovery` is a base of :class:`~drivers.serial_link.Connection` and works on its
state: ``url``, ``search``, ``baudrate``, ``exclusive``, ``reconnect_timeout``,
``device_kind``, ``serial_number``, ``stats``, ``on_reconnect``, ``_link`` and the hooks
``_identify`` and ``_resync``.
"""

from __future__ import annotations

import glob
import logging
import time

from drivers.serial_port import LinkLost, SerialLink
from edge.errors import DeviceError

__all__ = ["Interrupted", "NotExecuted", "Refused", "Recovery"]

log = logging.getLogger(__name__)


class Interrupted(DeviceError):
    """The exchange was cut by a device reset or reconnect; its effect is unknown."""


class NotExecuted(DeviceError):
    """The device refused the command without executing it (busy, CRC); safe to resend."""


class Refused(Exception):
    """Raised by :meth:`Connection._exchange` for a device error reply: ``error`` (a
    :class:`DeviceError`) reaches the caller as is, never retried."""

    def __init__(self, error: DeviceError) -> None:
        super().__init__(str(error))
        self.error = error


class Recovery:
    """Reconnect (same serial number, with back-off, over ``search`` paths) and resync."""

    def _recover(self, exc: DeviceError) -> None:
        """Reconnect (port lost) or resync (device reset), again if that is cut short too."""
        for _ in range(3):
            try:
                if isinstance(exc, LinkLost):
                    self._reconnect(exc)
                else:
                    self._resync()
                return
            except (LinkLost, Interrupted) as again:
                exc = again
        raise DeviceError(f"{self.device_kind} {self.serial_number}: could not resynchronise "
                          f"after repeated resets/disconnects ({exc})")

    # -- reconnect --------------------------------------------------------------------------
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
