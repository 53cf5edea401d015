"""The Starlette application of the service page: read-only GET and WebSocket routes.

=================  ==============================================================================
route              serves
=================  ==============================================================================
``/``              the page (``index.html``: HTML, CSS and JS inline; nothing fetched
                   from the internet, no build step)
``/ws``            WebSocket: per frame one text message (JSON metadata: ``seq``,
                   ``trigger_ns``, ``stage_ms``, ``panels``, this client's ``sent``/``skipped``)
                   then one binary message (the JPEG)
``/mjpeg``         ``multipart/x-mixed-replace`` stream of the same JPEGs (fallback)
``/snapshot.jpg``  the newest JPEG
``/api/spectrum``  ``?x=&y=``: reflectance and fitted model at a pixel (:mod:`.spectrum`)
``/api/latency``   rolling per-stage percentiles and deadline misses (:mod:`.latency`)
``/api/status``    versions, release, self-test, calibration, serial devices, live counters
``/healthz``       ``ok``
=================  ==============================================================================

With a token every request must carry it: header ``Authorization: Bearer T`` or
``X-Hsi-Edge-Token: T``, or the query ``?token=T`` (browsers cannot set headers on a
WebSocket); it is compared in constant time (``hmac.compare_digest``).  A refused HTTP request
gets 401 with one line; a refused WebSocket is closed before it is accepted (HTTP 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from edge.errors import ConfigError, DataFormatError
from edge.serve.latency import RollingLatency
from edge.serve.live import FrameHub
from edge.serve.spectrum import UnmixerCache, parse_pixel, pixel_spectrum
from edge.serve.status import StatusSources, unit_status

__all__ = ["ServeState", "create_app", "TokenGuard", "BOUNDARY"]

log = logging.getLogger(__name__)

BOUNDARY = "hsiframe"


@dataclass
class ServeState:
    """What the application serves (shared with the pipeline through the hub)."""

    hub: FrameHub
    latency: RollingLatency | None = None
    unmixers: UnmixerCache = field(default_factory=UnmixerCache)
    sources: StatusSources = field(default_factory=StatusSources)
    token: str | None = None
    started_ns: int = field(default_factory=time.monotonic_ns)


def _json_safe(obj: Any) -> Any:
    from edge.pipeline.app import json_safe
    return json_safe(obj)


class TokenGuard:
    """ASGI middleware: every HTTP and WebSocket request must carry ``token``."""

    def __init__(self, app, token: str):
        self.app = app
        self._token = token.encode("utf-8")

    def _presented(self, scope) -> bytes:
        for key, value in scope.get("headers", ()):
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                return value[7:].strip()
            if key == b"x-hsi-edge-token":
                return value.strip()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return query.get("token", [""])[0].encode("utf-8")

    def accepts(self, scope) -> bool:
        return hmac.compare_digest(self._presented(scope), self._token)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.accepts(scope):
            await self.app(scope, receive, send)
            return
        log.warning("service page: request to %s without a valid token refused",
                    scope.get("path"))
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "token required"})
            return
        body = (b"token required: open the URL printed by hsi-edge (?token=...) or send "
                b"'Authorization: Bearer <token>'\n")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def page_html() -> str:
    """The page (package data ``edge/serve/index.html``)."""
    return resources.files("edge.serve").joinpath("index.html").read_text("utf-8")


def create_app(state: ServeState):
    """The ASGI application for ``state`` (wrapped in :class:`TokenGuard` when it has one)."""
    from starlette.applications import Starlette
    from starlette.responses import (HTMLResponse, JSONResponse, PlainTextResponse, Response,
                                     StreamingResponse)
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    hub = state.hub
    html = page_html()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request):
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def healthz(request):
        return PlainTextResponse("ok\n")

    async def snapshot(request):
        pub = hub.latest
        if pub is None:
            return error(503, "snapshot: no frame yet (no live run, or the first frame is "
                              "still being processed)")
        return Response(pub.jpeg, media_type="image/jpeg",
                        headers={"x-seq": str(pub.meta["seq"]), "cache-control": "no-store"})

    async def spectrum(request):
        frames = hub.recent()
        if not frames:
            return error(503, "spectrum: no frame yet (no live run)")
        rows, cols = frames[-1].shape
        try:
            x, y = parse_pixel(request.query_params.get("x"), request.query_params.get("y"),
                               rows, cols)
            # the fit is a few small matrix products; off the event loop all the same
            doc = await asyncio.to_thread(pixel_spectrum, frames, x, y, state.unmixers)
        except ConfigError as exc:
            return error(400, str(exc))
        except DataFormatError as exc:
            return error(409, str(exc))
        return JSONResponse(_json_safe(doc))

    async def latency(request):
        if state.latency is None:
            return error(503, "latency: no live run")
        return JSONResponse(_json_safe(state.latency.summary()))

    async def status(request):
        doc = await asyncio.to_thread(unit_status, state.sources, live=hub.summary(),
                                      started_ns=state.started_ns)
        doc["token_required"] = state.token is not None
        return JSONResponse(_json_safe(doc))

    async def mjpeg(request):
        client = hub.open_client("mjpeg")
        if client is None:
            return PlainTextResponse(f"busy: {hub.max_clients} clients are streaming already "
                                     f"(the limit); close one and retry\n", status_code=503)

        async def parts():
            try:
                while True:
                    pub = await hub.next_frame(client)
                    client.in_flight = len(pub.jpeg)
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                           f"Content-Length: {len(pub.jpeg)}\r\nX-Seq: {pub.meta['seq']}"
                           f"\r\n\r\n").encode("ascii") + pub.jpeg + b"\r\n"
                    client.in_flight = 0
                    client.sent += 1
            finally:
                hub.close_client(client)

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; "
                                                     f"boundary={BOUNDARY}",
                                 headers={"cache-control": "no-store"})

    async def ws(websocket: WebSocket):
        client = hub.open_client("ws")
        await websocket.accept()
        if client is None:
            await websocket.close(code=1013, reason=f"busy: {hub.max_clients} clients are "
                                                    f"streaming already (the limit)")
            return

        async def until_gone():
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    msg = await websocket.receive()
                    if msg["type"] == "websocket.disconnect":
                        return

        gone = asyncio.create_task(until_gone())
        try:
            while True:
                nxt = asyncio.create_task(hub.next_frame(client))
                done, _ = await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    nxt.cancel()
                    break
                pub = nxt.result()
                meta = dict(pub.meta, client=client.id, sent=client.sent,
                            skipped=client.skipped, server_ns=time.monotonic_ns())
                client.in_flight = len(pub.jpeg)
                await websocket.send_text(json.dumps(_json_safe(meta)))
                await websocket.send_bytes(pub.jpeg)
                client.in_flight = 0
                client.sent += 1
        except Exception as exc:  # the peer went away mid-send: nothing to report to it
            log.debug("service page: websocket client %d ended: %s", client.id, exc)
        finally:
            gone.cancel()
            hub.close_client(client)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        hub.attach_loop(asyncio.get_running_loop())
        try:
            yield
        finally:
            hub.detach_loop()

    routes = [Route("/", index), Route("/healthz", healthz), Route("/snapshot.jpg", snapshot),
              Route("/mjpeg", mjpeg), Route("/api/spectrum", spectrum),
              Route("/api/latency", latency), Route("/api/status", status),
              WebSocketRoute("/ws", ws)]
    app = Starlette(routes=routes, lifespan=lifespan)
    return TokenGuard(app, state.token) if state.token else app
