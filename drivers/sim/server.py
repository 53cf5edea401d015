"""Serve a simulated device over a real pseudo-terminal or a TCP socket, with fault injection.

A :class:`DeviceServer` runs one device model in a daemon thread.  Over a pty
(``transport="pty"``) the driver opens the slave path with ``serial.serial_for_url`` exactly as
it opens a USB serial port; with ``link`` the server keeps a symlink pointing at the current pty
(as udev keeps ``/dev/serial/by-id/...``), so a disconnect followed by a reappearance under a
new ``/dev/pts/N`` looks like a USB device coming back.  Give a ``link`` whenever the device may
disconnect: the kernel hands a freed ``/dev/pts/N`` to the next program that asks, so a driver
reconnecting to the bare pty path could open another program's pty (or find it locked, "in
use by another program"); the link is removed before the pty is freed.  Over TCP (``transport="socket"``) the
driver opens ``socket://127.0.0.1:PORT``; one client at a time (a second one is closed).

Pty subtleties handled here: the slave is put in raw mode (no echo, no line editing), the
server keeps its own slave fd open so the master never reads EIO while no driver is attached,
the master is non-blocking so nothing stalls when nobody reads, and every fd is closed on
disconnect and :meth:`DeviceServer.stop`.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import tty

from drivers.sim.faults import FaultPlan

__all__ = ["DeviceServer"]

log = logging.getLogger(__name__)


class DeviceServer:
    """Run ``model`` (a ``ControllerModel`` or ``LumencorModel``) behind a port.

    Parameters
    ----------
    model
        Object with ``handle(line, now)``, ``tick(now)``, ``next_due(now)``, ``reset(now)``,
        ``trip(kind, now, hold_s)``, ``supported_faults``.
    transport : {"pty", "socket"}
    faults : FaultPlan, optional
        Faults to inject (a fresh empty plan by default; :meth:`inject` adds one-shot faults).
    link : str, optional
        Path of a symlink kept pointing at the current pty (pty transport only).
    """

    def __init__(self, model, *, transport: str = "pty", faults: FaultPlan | None = None,
                 link: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        if transport not in ("pty", "socket"):
            raise ValueError(f"transport: expected 'pty' or 'socket', got {transport!r}")
        self.model = model
        self.transport = transport
        self.faults = faults if faults is not None else FaultPlan()
        self.link = link
        self.lock = threading.RLock()  # held while the model changes; tests read under it
        self.generation = 0
        self._host, self._port = host, port
        self._master = self._slave = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._pty_path: str | None = None
        self._current_link: str | None = None
        self._next_new_path = False
        self._connected = False
        self._reappear_at = 0.0
        self._disconnect_req: tuple[float, bool] | None = None
        self._out: list[tuple[float, bytes]] = []
        self._inbuf = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = self.faults.rng()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "DeviceServer":
        if self.transport == "socket":
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((self._host, self._port))
            self._listener.listen(2)
            self._port = self._listener.getsockname()[1]
        self._appear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"sim-{type(self.model).__name__}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close every fd (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._current_link:
            _unlink(self._current_link)
            self._current_link = None
        self._vanish()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> "DeviceServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """What to give the driver: the symlink, the pty path or ``socket://host:port``."""
        if self.transport == "socket":
            return f"socket://{self._host}:{self._port}"
        return self._current_link or self._pty_path  # type: ignore[return-value]

    @property
    def pty_path(self) -> str | None:
        return self._pty_path

    @property
    def link_path(self) -> str | None:
        """The symlink currently pointing at the pty (None while unplugged or without link)."""
        return self._current_link

    @property
    def connected(self) -> bool:
        return self._connected

    # -- control from tests -------------------------------------------------------------
    def inject(self, kind: str, count: int = 1) -> None:
        self.faults.inject(kind, count)

    def disconnect(self, duration_s: float | None = None, new_path: bool | None = None) -> None:
        """Make the port disappear now and reappear after ``duration_s`` seconds."""
        with self.lock:
            self._disconnect_req = (self.faults.disconnect_s if duration_s is None
                                    else duration_s, self.faults.new_path if new_path is None
                                    else new_path)

    def external_edge(self) -> None:
        with self.lock:
            self.model.external_edge(time.monotonic())

    # -- port handling ------------------------------------------------------------------
    def _appear(self) -> None:
        self.generation += 1
        if self.transport == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._master, self._slave = master, slave
            self._pty_path = os.ttyname(slave)
            if self.link:
                name = (f"{self.link}-{self.generation}"
                        if self._next_new_path and self.generation > 1 else self.link)
                tmp = f"{name}.tmp"
                _unlink(tmp)
                os.symlink(self._pty_path, tmp)
                os.replace(tmp, name)  # atomic, like udev
                self._current_link = name
        self._connected = True
        self._out.clear()
        self._inbuf.clear()

    def _vanish(self) -> None:
        self._connected = False
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._out.clear()

    def _drop_connection(self, now: float, duration: float, new_path: bool) -> None:
        log.info("simulated %s disconnects for %.2f s", type(self.model).__name__, duration)
        if self._current_link:  # unplugged: udev removes the by-id link
            # before the pty is freed: the link must never name a /dev/pts/N another program
            # may be given next (a driver reconnecting through it would open that one)
            _unlink(self._current_link)
            self._current_link = None
        self._vanish()
        self._next_new_path = new_path
        self._reappear_at = now + duration

    # -- main loop ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self.lock:
                if self._disconnect_req is not None:
                    duration, new_path = self._disconnect_req
                    self._disconnect_req = None
                    self._drop_connection(now, duration, new_path)
                if not self._connected and now >= self._reappear_at:
                    self._appear()
                    self._send(self.model.reset(now), now)
                if self._connected:
                    self._send(self.model.tick(now), now)
            self._flush(now)
            wait = 0.02
            due = [t for t, _ in self._out] + [self.model.next_due(now) or now + wait]
            if not self._connected:
                due.append(self._reappear_at)
            wait = max(0.0, min([now + wait] + due) - now)
            data = self._receive(wait) if self._connected else (time.sleep(wait) or b"")
            if data:
                self._inbuf += data
                while True:
                    end = self._inbuf.find(b"\n")
                    if end < 0:
                        if len(self._inbuf) > 4096:
                            self._inbuf.clear()
                        break
                    line = bytes(self._inbuf[:end + 1])
                    del self._inbuf[:end + 1]
                    with self.lock:
                        self._process(line, time.monotonic())

    def _receive(self, wait: float) -> bytes:
        try:
            if self.transport == "pty":
                ready, _, _ = select.select([self._master], [], [], wait)
                return os.read(self._master, 4096) if ready else b""
            socks = [self._listener] + ([self._client] if self._client else [])
            ready, _, _ = select.select(socks, [], [], wait)
            if self._listener in ready:
                conn, _ = self._listener.accept()
                if self._client is not None or not self._connected:
                    conn.close()  # exclusive: one client, and none while "unplugged"
                else:
                    self._client = conn
            if self._client is not None and self._client in ready:
                data = self._client.recv(4096)
                if not data:
                    self._client.close()
                    self._client = None
                return data
        except (OSError, ValueError) as exc:  # fd closed under us during stop/disconnect
            log.debug("simulator receive: %s", exc)
            time.sleep(wait)
        return b""

    def _send(self, lines: list[bytes], due: float) -> None:
        if lines:
            self._out.append((due, b"".join(lines)))

    def _flush(self, now: float) -> None:
        keep = []
        for due, data in sorted(self._out, key=lambda item: item[0]):
            if due > now:
                keep.append((due, data))
                continue
            try:
                if self.transport == "pty" and self._master is not None:
                    os.write(self._master, data)
                elif self._client is not None:
                    self._client.sendall(data)
            except BlockingIOError:
                log.debug("simulator output dropped: nobody is reading")
            except OSError as exc:
                log.debug("simulator write failed: %s", exc)
        self._out = keep

    def _process(self, line: bytes, now: float) -> None:
        kind = self.faults.draw(self.model.supported_faults) if line.strip() else None
        f = self.faults
        if kind == "noreply":
            return
        if kind == "busy":
            reply = self.model.busy_reply(line)
            if reply is not None:
                self._send([reply], now)
                return
        if kind == "reset":
            self._send(self.model.reset(now), now)
            return
        if kind == "disconnect":
            self._drop_connection(now, f.disconnect_s, f.new_path)
            return
        pre = self.model.trip(kind, now, f.hold_s) if kind in ("overtemp", "interlock") else []
        out = self.model.handle(line, now)
        reply = b"".join(out)
        if kind == "delay":
            self._send(pre, now)
            self._send([reply], now + f.delay_s)
        elif kind == "drop" and reply:
            data = bytearray(reply)
            for _ in range(min(len(data), self._rng.randint(1, 3))):
                del data[self._rng.randrange(len(data))]
            self._send(pre + [bytes(data)], now)
        elif kind == "garble" and reply:
            data = bytearray(reply)
            data[self._rng.randrange(len(data))] ^= 1 << self._rng.randrange(7)
            self._send(pre + [bytes(data)], now)
        elif kind == "split" and len(reply) > 1:
            cut = self._rng.randrange(1, len(reply))
            self._send(pre + [reply[:cut]], now)
            self._send([reply[cut:]], now + f.split_gap_s)
        elif kind == "merge" and hasattr(self.model, "note_line"):
            self._send(pre + [self.model.note_line(now), reply], now)
        else:
            self._send(pre + out, now)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
