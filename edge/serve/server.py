"""Run the service page on uvicorn in a background thread; address and token rules.

The page binds to ``127.0.0.1`` unless told otherwise.  Any other address (including
``0.0.0.0``) needs a token: the one given, or one generated with :mod:`secrets` and printed
once by the CLI.  One uvicorn worker, one process: the pipeline and the page share the
:class:`~edge.serve.live.FrameHub`.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
import time

from edge.errors import ConfigError, HsiEdgeError
from edge.serve import require_serve

__all__ = ["parse_addr", "is_loopback", "resolve_token", "ServerThread", "DEFAULT_HOST",
           "DEFAULT_PORT"]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Shortest token accepted from the user (a generated one has 32 characters).
MIN_TOKEN_CHARS = 16


def parse_addr(addr: str | None, option: str = "--serve") -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``:PORT`` or ``PORT`` -> (host, port); None: the default.

    IPv6 hosts go in brackets (``[::1]:8765``).  Port 0 asks the system for a free port.

    Raises
    ------
    ConfigError
        Unparseable, or a port outside 0-65535 (names the option and the value).
    """
    if addr is None or addr == "":
        return DEFAULT_HOST, DEFAULT_PORT
    text = str(addr).strip()
    host, port = DEFAULT_HOST, str(DEFAULT_PORT)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != ":"):
            raise ConfigError(f"{option}: expected [IPV6]:PORT, got {addr!r}")
        host, rest = text[1:end], text[end + 2:]
        port = rest or port
    elif text.isdigit():
        port = text
    elif text.count(":") == 1:
        h, port = text.split(":")
        host = h or DEFAULT_HOST
        port = port or str(DEFAULT_PORT)
    elif ":" in text:
        raise ConfigError(f"{option}: an IPv6 address goes in brackets ([{text}]:PORT), "
                          f"got {addr!r}")
    else:
        host = text
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option}: port must be an integer in 0-65535, got {port!r} "
                          f"(in {addr!r})")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (no token needed there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None, option: str = "--token") -> tuple[str | None, bool]:
    """The token to enforce and whether it was generated here.

    Loopback without a token: none.  Any other address without a token: a new one
    (``secrets.token_urlsafe``).  A given token is always enforced.

    Raises
    ------
    ConfigError
        A given token shorter than :data:`MIN_TOKEN_CHARS` or with characters that do not
        survive a URL query unquoted.
    """
    if token is not None:
        if len(token) < MIN_TOKEN_CHARS or not all(c.isalnum() or c in "-_.~" for c in token):
            raise ConfigError(f"{option}: expected at least {MIN_TOKEN_CHARS} characters of "
                              f"A-Z a-z 0-9 - _ . ~, got {len(token)} characters"
                              + ("" if len(token) < MIN_TOKEN_CHARS else " with others"))
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


class ServerThread:
    """uvicorn serving ``app`` in a daemon thread; a context manager.

    Parameters
    ----------
    app : ASGI application (:func:`edge.serve.app.create_app`)
    host : str
    port : int
        0: a free port chosen by the system; read :attr:`port` after :meth:`start`.
    option : str
        The option that named the address, for messages.
    sock : socket.socket, optional
        An already bound socket to serve on instead of binding ``host:port``.  The server
        owns it and closes it in :meth:`stop`; to keep an address across a restart, hand
        each server ``held.dup()`` of a socket kept open meanwhile.
    """

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 option: str = "--serve", sock: socket.socket | None = None):
        require_serve()
        import uvicorn

        self.host = host
        self._config = uvicorn.Config(app, host=host, port=int(port), log_level="warning",
                                      lifespan="on", access_log=False, workers=1,
                                      # open streams must not hold a shutdown forever
                                      timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._given = sock
        self.option = option
        self.port: int | None = None

    def start(self, timeout_s: float = 20.0) -> "ServerThread":
        """Bind, then start serving; returns when uvicorn is up.

        The socket is bound here (not by uvicorn; unless one was given as ``sock``), so a bad
        address is one line naming it instead of uvicorn's exit from its thread.

        Raises
        ------
        HsiEdgeError
            The address cannot be bound (in use, not an address of this machine), or the
            server did not come up.
        """
        sock = self._given if self._given is not None else self._bind()
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="hsi-edge-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise HsiEdgeError(f"{self.option}: the server on {self.host}:{self.port} "
                                   f"did not start (see the log above)")
            time.sleep(0.02)
        return self

    def _bind(self) -> socket.socket:
        port = self._config.port
        sock = None
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
        except OSError as exc:
            if sock is not None:  # socket() itself may fail (IPv6 disabled)
                sock.close()
            raise HsiEdgeError(f"{self.option}: cannot serve on {self.host}:{port}: "
                               f"{exc.strerror or exc}") from None
        return sock

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (idempotent): open streams are closed, the thread joined."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=timeout_s)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
