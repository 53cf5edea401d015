"""Endpoints of the service page on a real uvicorn (ephemeral loopback port).

Streams are read from the running server (Starlette's TestClient buffers whole bodies, so it
cannot read an endless MJPEG stream: ../shared/research/latency_preview.md, B.3).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from edge.serve.app import BOUNDARY, ServeState, create_app
from edge.serve.live import FrameHub, KeptFrame
from serve_scene import COLS, ROWS, STO2, Served, scene_reflectance, serving, wait_for

websockets_sync = pytest.importorskip("websockets.sync.client")


class Pusher:
    """Pushes scene frames every ``period_s`` from a thread (a stand-in pipeline)."""

    def __init__(self, served: Served, period_s: float = 0.05):
        self.served, self.period_s = served, period_s
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.served.push(1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=10)


def test_every_route_is_read_only():
    from starlette.routing import Route, WebSocketRoute

    app = create_app(ServeState(hub=FrameHub()))
    kinds = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            kinds.add("ws")
            continue
        assert isinstance(route, Route), route
        assert route.methods <= {"GET", "HEAD"}, (route.path, route.methods)
        kinds.add("get")
    assert kinds == {"get", "ws"}


def test_endpoint_contracts(served):
    c = httpx.Client(base_url=served.base, timeout=10)
    assert c.post("/api/status").status_code == 405
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # one static page: nothing fetched from elsewhere
    assert 'id="live"' in page.text
    for needle in ('src="http', "src='http", 'href="http', "@import", "cdn"):
        assert needle not in page.text
    # before the first frame: one line saying why
    r = c.get("/snapshot.jpg")
    assert r.status_code == 503 and r.json()["error"].startswith("snapshot: no frame yet")
    assert c.get("/api/spectrum?x=1&y=1").json() == {"error": "spectrum: no frame yet "
                                                              "(no live run)"}
    served.push(3)
    snap = c.get("/snapshot.jpg")
    assert snap.headers["content-type"] == "image/jpeg" and snap.headers["x-seq"] == "3"
    assert Image.open(io.BytesIO(snap.content)).size == (2 * COLS, ROWS)

    spec = c.get("/api/spectrum", params={"x": 4, "y": 5}).json()
    np.testing.assert_allclose(spec["reflectance"], scene_reflectance()[5, 4], rtol=1e-6)
    assert spec["seqs"] == [1, 2, 3] and spec["sto2"] == pytest.approx(STO2[0], abs=1e-6)
    bad = c.get("/api/spectrum", params={"x": COLS, "y": 0})
    assert bad.status_code == 400
    assert bad.json() == {"error": f"x: expected an integer in 0..{COLS - 1}, got {COLS}"}

    lat = c.get("/api/latency").json()
    assert lat["frames"] == 3 and lat["stages"]["chain"]["p50_ms"] == pytest.approx(2.0)
    assert lat["deadline_ms"] == pytest.approx(250.0) and lat["misses"] == 0

    st = c.get("/api/status").json()
    assert st["versions"]["hsi-edge"] and st["live"]["encoded"] == 3
    assert st["token_required"] is False and st["calibration"]["record"] is None
    assert "ports" in st["serial"]
    assert c.get("/healthz").text == "ok\n"


def _parts(chunks, want):
    """JPEGs from a multipart/x-mixed-replace byte stream."""
    buf, out = b"", []
    for chunk in chunks:
        buf += chunk
        while True:
            start = buf.find(f"--{BOUNDARY}\r\n".encode())
            head_end = buf.find(b"\r\n\r\n", start)
            if start < 0 or head_end < 0:
                break
            headers = dict(line.split(": ", 1) for line in
                           buf[start:head_end].decode().split("\r\n")[1:])
            n = int(headers["Content-Length"])
            if len(buf) < head_end + 4 + n:
                break
            assert headers["Content-Type"] == "image/jpeg"
            out.append(buf[head_end + 4: head_end + 4 + n])
            buf = buf[head_end + 4 + n:]
        if len(out) >= want:
            return out
    return out


def test_mjpeg_stream_and_it_stops_when_the_client_goes_away(served):
    with Pusher(served), httpx.Client(timeout=10) as c:
        with c.stream("GET", served.base + "/mjpeg") as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            wait_for(lambda: len(served.hub.clients()) == 1, what="the stream to register")
            jpegs = _parts(r.iter_bytes(), want=3)
        assert len(jpegs) >= 3
        for j in jpegs:
            assert Image.open(io.BytesIO(j)).size == (2 * COLS, ROWS)
        # the client went away: the server's stream task ends and unregisters
        wait_for(lambda: served.hub.clients() == [], what="the server to stop streaming")


def test_websocket_frames_with_metadata_and_disconnect(served):
    url = served.base.replace("http://", "ws://") + "/ws"
    with Pusher(served):
        with websockets_sync.connect(url, open_timeout=10) as ws:
            seen = []
            for _ in range(3):
                meta = json.loads(ws.recv(timeout=10))
                jpeg = ws.recv(timeout=10)
                assert isinstance(jpeg, bytes) and len(jpeg) == meta["jpeg_bytes"]
                assert Image.open(io.BytesIO(jpeg)).size == (2 * COLS, ROWS)
                seen.append(meta["seq"])
            assert seen == sorted(seen) and len(set(seen)) == 3
            assert meta["stage_ms"]["chain"] == pytest.approx(2.0)
            assert meta["trigger_ns"] == meta["seq"] * 250_000_000
            assert [p["name"] for p in meta["panels"]] == ["overlay", "sto2"]
            assert {"sent", "skipped", "client"} <= set(meta)
        wait_for(lambda: served.hub.clients() == [], what="the websocket task to end")


def _raw_ws(base: str, path: str = "/ws", rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket handshake on a plain socket that then reads only when told to."""
    host, port = base.removeprefix("http://").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _noise_frame(seq: int, rng) -> KeptFrame:
    # a noisy StO2 map makes big JPEGs (~100 kB), so a stalled socket fills quickly
    sto2 = rng.random((240, 320)).astype(np.float32)
    return KeptFrame(seq, 0, 0, np.linspace(500, 1000, 8), None, sto2, None)


def test_client_that_never_reads_keeps_server_memory_bounded():
    rng = np.random.default_rng(0)
    with serving() as served:
        sock = _raw_ws(served.base)
        try:
            client = wait_for(lambda: served.hub.clients(), what="the client")[0]
            # publish until the server is stuck in a send to this client (how many frames
            # that takes depends on the kernel's socket buffers: bounded, not fixed)
            biggest, seq, last_sent, still = 0, 0, -1, 0
            while still < 20 and seq < 600:
                seq += 1
                pub = served.hub.encode_now(_noise_frame(seq, rng))
                biggest = max(biggest, len(pub.jpeg))
                time.sleep(0.01)
                if client.in_flight > 0 and client.sent == last_sent:
                    still += 1
                else:
                    still, last_sent = 0, client.sent
            assert still >= 20, "the server never blocked on a client that does not read"
            conns = served.server._server.server_state.connections
            buffered = sum(p.transport.get_write_buffer_size() for p in conns
                           if getattr(p, "transport", None) is not None)
            # flow control: transport buffer <= high-water mark (64 KiB) + the message that
            # crossed it; plus the one frame in flight -- not every frame published
            assert buffered <= 64 * 1024 + 2 * biggest + 4096, (buffered, biggest)
            assert client.in_flight <= biggest and client.sent < seq
            assert served.hub.summary()["encoded"] == seq    # one shared slot, no backlog
            # now read everything: the client is sent the newest frame next, the ones
            # published while it was stuck are skipped and counted
            sock.settimeout(0.2)
            latest = served.hub.latest.index

            def drained():
                try:
                    while sock.recv(1 << 16):
                        pass
                except (TimeoutError, socket.timeout):
                    pass
                return client.last_index == latest

            wait_for(drained, what="the client to catch up")
            # every frame was either sent or skipped (counted), none queued for later
            assert client.skipped > 0 and client.sent + client.skipped == latest
        finally:
            sock.close()
        wait_for(lambda: served.hub.clients() == [], what="the server to drop the client")


def test_client_cap(tmp_path):
    with serving(max_clients=1) as served:
        url = served.base.replace("http://", "ws://") + "/ws"
        with websockets_sync.connect(url, open_timeout=10):
            wait_for(lambda: len(served.hub.clients()) == 1, what="the first client")
            with websockets_sync.connect(url, open_timeout=10) as second:
                with pytest.raises(Exception) as exc:
                    second.recv(timeout=10)
                assert second.close_code == 1013
                assert "busy: 1 clients are streaming already" in second.close_reason
            r = httpx.get(served.base + "/mjpeg", timeout=10)
            assert r.status_code == 503 and r.text.startswith("busy: 1 clients")
        assert exc.type.__name__.startswith("ConnectionClosed")
