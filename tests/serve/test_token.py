"""The token: checked on every HTTP and WebSocket request, in the ASGI app and off loopback."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from edge.serve.app import ServeState, TokenGuard, create_app
from edge.serve.live import FrameHub
from edge.serve.server import is_loopback, resolve_token
from serve_scene import serving

websockets_sync = pytest.importorskip("websockets.sync.client")
TOKEN = "t0ken-for-the-tests-0123456789"


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback (None if it has none).

    A UDP connect sends nothing; it only makes the kernel pick the outgoing address.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if is_loopback(ip) or ip == "0.0.0.0" else ip


def _asgi_client(token=TOKEN):
    app = create_app(ServeState(hub=FrameHub(), token=token))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://unit")


@pytest.mark.parametrize("how, ok", [
    ({}, False),
    ({"headers": {"Authorization": f"Bearer {TOKEN}"}}, True),
    ({"headers": {"X-Hsi-Edge-Token": TOKEN}}, True),
    ({"params": {"token": TOKEN}}, True),
    ({"params": {"token": TOKEN[:-1]}}, False),
    ({"headers": {"Authorization": "Bearer "}}, False),
])
def test_token_checked_on_every_http_route(how, ok):
    async def go():
        async with _asgi_client() as c:
            return [await c.get(path, **how) for path in
                    ("/", "/api/status", "/api/latency", "/snapshot.jpg", "/healthz")]
    for r in asyncio.run(go()):
        if ok:
            assert r.status_code != 401, r.request.url
        else:
            assert r.status_code == 401 and r.text.startswith("token required:"), r.request.url


def test_token_checked_on_websocket_before_accept():
    guard = create_app(ServeState(hub=FrameHub(), token=TOKEN))
    assert isinstance(guard, TokenGuard)
    sent = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    asyncio.run(guard(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "token required"}]


def test_off_loopback_the_token_is_required():
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address; the token check is "
                    "covered at the ASGI level (tests above)")
    token, generated = resolve_token(ip, None)
    assert generated
    with serving(host=ip, token=token) as served:
        assert served.base == f"http://{ip}:{served.server.port}"
        served.push(2)
        c = httpx.Client(base_url=served.base, timeout=10)
        assert c.get("/").status_code == 401
        assert c.get("/snapshot.jpg", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/", params={"token": token}).status_code == 200
        st = c.get("/api/status", headers={"Authorization": f"Bearer {token}"}).json()
        assert st["token_required"] is True
        ws_url = f"ws://{ip}:{served.server.port}/ws"
        with pytest.raises(Exception, match="403"):
            with websockets_sync.connect(ws_url, open_timeout=10):
                pass
        with websockets_sync.connect(f"{ws_url}?token={token}", open_timeout=10) as ws:
            served.push(1)
            meta = json.loads(ws.recv(timeout=10))
            assert meta["seq"] >= 2 and isinstance(ws.recv(timeout=10), bytes)
