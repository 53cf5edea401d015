"""The newest-frame slot: a pipeline sink that never blocks, and the hub that shares JPEGs.

The pipeline thread calls :meth:`LiveSink.write` for every frame.  The sink keeps one frame
in a few (``fps``, default 4): read-only views of the maps the page shows (StO2, class map) and
of the reflectance cube go into the hub's single pending slot -- overwriting a frame the
encoder has not taken yet -- and into a ring of the last ``ring`` frames (the spectrum
endpoint averages over it).  Views, not copies: a backend never writes into an output that a
caller still refers to (numpy and cuda return fresh arrays per frame; native reuses an output
set only when nothing outside its pool refers to it), and copying a 480x640x100 cube on the
pipeline thread took ~270 ms on a loaded 2-core machine (tools/serve_bench.py).  Keeping the
ring alive costs memory instead: ``ring`` cubes (123 MB each at 480x640x100 float32).  Nothing
in ``write`` waits for a client, a socket or the encoder: it takes one lock held only for
assignments.

The hub's encoder thread renders the kept frame (overlay and StO2 panels side by side),
encodes it once as JPEG (Pillow) and publishes it; asyncio clients of the web server are woken
through ``loop.call_soon_threadsafe`` (one wake-up pending at most).  Each client sends only
the newest published frame after its previous send completed, so a slow client skips frames
(counted per client) and holds at most one frame; memory does not grow with a client that
never reads.  ``max_clients`` streams at once (default 4); the next one is refused.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edge.core.frame import Frame
from edge.errors import ConfigError
from edge.pipeline.sinks import Sink
from edge.serve.render import DEFAULT_COLORS, encode_jpeg, render_panels

__all__ = ["LiveSink", "FrameHub", "KeptFrame", "Published", "Client"]

log = logging.getLogger(__name__)

@dataclass
class KeptFrame:
    """What the sink keeps of one frame (read-only views of the frame's products).

    Attributes
    ----------
    seq : int                      camera frame id
    trigger_ns : int               ``time.monotonic_ns()`` at the trigger
    kept_ns : int                  when the sink kept it
    wavelengths : ndarray (bands,), float64
    reflectance : ndarray (rows, cols, bands), float32, or None
    sto2 : ndarray (rows, cols), float32, or None
    classes : ndarray (rows, cols), uint8, or None (255 = withheld)
    flags : list of str            frame-level flags
    """

    seq: int
    trigger_ns: int
    kept_ns: int
    wavelengths: np.ndarray
    reflectance: np.ndarray | None
    sto2: np.ndarray | None
    classes: np.ndarray | None
    flags: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        for a in (self.sto2, self.classes, self.reflectance):
            if a is not None:
                return int(a.shape[0]), int(a.shape[1])
        return 0, 0


@dataclass(frozen=True)
class Published:
    """One encoded frame shared by every client: ``jpeg`` bytes and the JSON ``meta``."""

    index: int
    jpeg: bytes
    meta: dict[str, Any]


@dataclass
class Client:
    """One streaming client (WebSocket or MJPEG): what it was sent and what it skipped."""

    id: int
    kind: str
    sent: int = 0
    skipped: int = 0
    last_index: int = 0
    in_flight: int = 0   # bytes of the frame being sent now (0 or one frame)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "sent": self.sent, "skipped": self.skipped,
                "in_flight_bytes": self.in_flight}


class FrameHub:
    """Single-slot hand-over from the pipeline to the web clients (see module docstring).

    Parameters
    ----------
    ring : int
        Recent frames kept for the spectrum endpoint (>= 1; each holds a reflectance cube:
        480x640x100 float32 is 123 MB).
    max_clients : int
        Concurrent streams (WebSocket + MJPEG) allowed (>= 1).
    colors : ndarray of shape (K, 3), uint8, optional
        Class colours (the model card's); default :data:`DEFAULT_COLORS`.
    class_names : sequence of str
    alpha : float
        Overlay opacity.
    jpeg_quality : int
    """

    def __init__(self, *, ring: int = 4, max_clients: int = 4,
                 colors: np.ndarray | None = None, class_names: Sequence[str] = (),
                 alpha: float = 0.4, jpeg_quality: int = 90):
        if int(ring) < 1:
            raise ConfigError(f"ring: expected an integer >= 1, got {ring!r}")
        if int(max_clients) < 1:
            raise ConfigError(f"max_clients: expected an integer >= 1, got {max_clients!r}")
        self.colors = DEFAULT_COLORS if colors is None else np.asarray(colors, np.uint8)
        self.class_names = tuple(class_names)
        self.alpha = float(alpha)
        self.jpeg_quality = int(jpeg_quality)
        self.max_clients = int(max_clients)
        self._lock = threading.Lock()
        self._pending: KeptFrame | None = None
        self._ring: collections.deque[KeptFrame] = collections.deque(maxlen=int(ring))
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._latest: Published | None = None
        self._index = 0
        self.kept = 0
        self.encoded = 0
        self.encode_errors = 0
        self.encode_cpu_ns = 0   # CPU time of rendering + encoding (the page's main cost)
        self._clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._wake_pending = False
        self._stage_ms: collections.OrderedDict[int, dict[str, float]] = \
            collections.OrderedDict()
        self._thread: threading.Thread | None = None

    # -- pipeline side (never blocks) ------------------------------------------------------
    def offer(self, kept: KeptFrame) -> None:
        """Put ``kept`` into the slot (replacing an unencoded one) and the ring; O(1)."""
        with self._lock:
            self._pending = kept
            self._ring.append(kept)
            self.kept += 1
        self._kick.set()

    def note_stages(self, seq: int, stage_ms: dict[str, float]) -> None:
        """Stage latencies of frame ``seq`` (from the per-frame record), for the metadata."""
        with self._lock:
            self._stage_ms[seq] = stage_ms
            while len(self._stage_ms) > 64:
                self._stage_ms.popitem(last=False)

    def recent(self) -> list[KeptFrame]:
        """The ring, oldest first (a copy of the list; the frames are shared, read-only)."""
        with self._lock:
            return list(self._ring)

    # -- encoder thread --------------------------------------------------------------------
    def start(self) -> "FrameHub":
        """Start the encoder thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._encode_loop, name="hsi-edge-jpeg",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the encoder thread (idempotent)."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _encode_loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(timeout=0.5)
            self._kick.clear()
            with self._lock:
                kept, self._pending = self._pending, None
            if kept is None:
                continue
            try:
                self.encode_now(kept)
            except Exception:  # a bad frame must not end the preview of the next ones
                self.encode_errors += 1
                log.exception("service page: cannot render frame %d", kept.seq)

    def encode_now(self, kept: KeptFrame) -> Published:
        """Render, encode and publish ``kept`` (the encoder thread's work; callable in tests)."""
        cpu0 = time.thread_time_ns()
        image, panels = render_panels(kept, self.colors, self.alpha)
        jpeg = encode_jpeg(image, self.jpeg_quality)
        cpu_ns = time.thread_time_ns() - cpu0
        with self._lock:
            stage_ms = self._stage_ms.get(kept.seq, {})
        rows, cols = kept.shape
        meta = {"seq": kept.seq, "trigger_ns": kept.trigger_ns, "kept_ns": kept.kept_ns,
                "encoded_ns": time.monotonic_ns(), "rows": rows, "cols": cols,
                "panels": panels, "stage_ms": stage_ms, "flags": kept.flags,
                "jpeg_bytes": len(jpeg),
                "classes": [{"id": i, "name": n, "color": [int(v) for v in self.colors[i]]}
                            for i, n in enumerate(self.class_names[:len(self.colors)])]}
        with self._lock:
            self._index += 1
            pub = Published(self._index, jpeg, meta)
            self._latest = pub
            self.encoded += 1
            self.encode_cpu_ns += cpu_ns
            loop, wake = self._loop, not self._wake_pending
            if loop is not None and wake:
                self._wake_pending = True
        if loop is not None and wake:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # loop closed: the server stopped
                with self._lock:
                    self._wake_pending = False
        return pub

    # -- server side (asyncio) -------------------------------------------------------------
    @property
    def latest(self) -> Published | None:
        with self._lock:
            return self._latest

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (called at server start-up, in that loop)."""
        with self._lock:
            self._loop = loop
            self._event = asyncio.Event()
            self._wake_pending = False

    def detach_loop(self) -> None:
        with self._lock:
            self._loop = None
            self._event = None

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
            event = self._event
            self._event = asyncio.Event()
        if event is not None:
            event.set()

    async def next_frame(self, client: Client) -> Published:
        """Wait for a frame newer than the last one ``client`` got; counts skipped ones."""
        while True:
            with self._lock:
                latest, event = self._latest, self._event
            if latest is not None and latest.index > client.last_index:
                if client.last_index:
                    client.skipped += latest.index - client.last_index - 1
                client.last_index = latest.index
                return latest
            if event is None:
                await asyncio.sleep(0.1)
            else:
                await event.wait()

    def open_client(self, kind: str) -> Client | None:
        """Register a stream; None when ``max_clients`` are already streaming."""
        with self._lock:
            if len(self._clients) >= self.max_clients:
                return None
            c = Client(next(self._ids), kind)
            # a new client starts with the newest frame, not a backlog
            c.last_index = max(0, self._index - 1)
            self._clients[c.id] = c
            return c

    def close_client(self, client: Client) -> None:
        with self._lock:
            self._clients.pop(client.id, None)
            client.in_flight = 0

    def clients(self) -> list[Client]:
        with self._lock:
            return list(self._clients.values())

    def summary(self) -> dict[str, Any]:
        """Counters for ``/api/status``: frames kept/encoded, clients and their skips."""
        with self._lock:
            latest = self._latest
            return {"kept": self.kept, "encoded": self.encoded,
                    "encode_errors": self.encode_errors, "ring": len(self._ring),
                    "encode_cpu_ms_mean": (self.encode_cpu_ns / self.encoded / 1e6
                                           if self.encoded else None),
                    "ring_size": self._ring.maxlen, "max_clients": self.max_clients,
                    "latest_seq": None if latest is None else latest.meta["seq"],
                    "clients": [c.as_dict() for c in self._clients.values()]}


class LiveSink(Sink):
    """Pipeline sink: keeps one frame in ``1/fps`` seconds for the service page.

    Parameters
    ----------
    hub : FrameHub
    fps : float
        Most frames per second kept (> 0, default 4); the others are passed over.
    clock : callable returning int ns
        ``time.monotonic_ns`` (tests pass a scripted clock).
    """

    name = "live"

    def __init__(self, hub: FrameHub, fps: float = 4.0,
                 clock: Callable[[], int] = time.monotonic_ns):
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            fps = float("nan")
        if not (np.isfinite(fps) and 0 < fps <= 60):
            raise ConfigError(f"--serve-fps: expected a number in (0, 60], got {fps!r}")
        self.hub = hub
        self.period_ns = int(round(1e9 / fps))
        self._clock = clock
        self._next_ns: int | None = None
        self.passed = 0

    def write(self, frame: Frame) -> None:
        now = self._clock()
        if self._next_ns is not None and now < self._next_ns:
            self.passed += 1
            return
        self._next_ns = now + self.period_ns
        p = frame.products
        refl = p.get("reflectance")
        if refl is None and frame.cube.dtype == np.float32:
            refl = frame.cube   # the camera delivers calibrated reflectance
        sto2, classes = p.get("sto2"), p.get("classes")
        self.hub.offer(KeptFrame(
            seq=int(frame.meta.frame_id), trigger_ns=int(frame.meta.timestamp_ns), kept_ns=now,
            wavelengths=frame.wavelengths, reflectance=_frozen(refl, np.float32),
            sto2=_frozen(sto2, np.float32), classes=_frozen(classes, np.uint8),
            flags=sorted(frame.flags)))


def _frozen(a: np.ndarray | None, dtype) -> np.ndarray | None:
    """A read-only view of ``a`` (a copy only when it has another dtype)."""
    if a is None:
        return None
    v = np.asarray(a, dtype=dtype).view()
    v.flags.writeable = False
    return v
