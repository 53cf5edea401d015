"""The service page: live view, pixel spectra, latency and unit status in a browser.

A workflow above the pipeline (DESIGN.md, "Layout and layering"): the pipeline knows nothing
of it and offers plain hooks -- extra sinks and the per-frame record callback of
:class:`~edge.pipeline.runner.Pipeline`.  The pipeline never waits for the page:

- :class:`~edge.serve.live.LiveSink` keeps the newest frame in one slot, decimated to a few
  frames per second, and a short ring of recent reflectance cubes for the spectrum endpoint;
- :class:`~edge.serve.live.FrameHub` renders and JPEG-encodes each kept frame once, in its
  own thread, and shares the bytes with every client; a client still busy with the last
  frame skips the next ones (counted per client); the number of clients is capped.
- :mod:`edge.serve.app` is the Starlette application (read-only: GET and WebSocket routes),
  :mod:`edge.serve.server` runs it on uvicorn in a thread.

Starlette and uvicorn are the optional extra ``serve``; :func:`require_serve` turns their
absence into one :class:`~edge.errors.BackendUnavailable` line.  Design notes and the
pitfalls avoided: ``../shared/research/latency_preview.md``, Part B.
"""

from __future__ import annotations

from edge.errors import BackendUnavailable

__all__ = ["require_serve", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'hsi-edge[serve]'"


def require_serve() -> None:
    """Import-check the optional web stack.

    Raises
    ------
    BackendUnavailable
        Starlette, uvicorn or a WebSocket implementation is missing (names the extra).
    """
    missing = []
    for mod in ("starlette", "uvicorn"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if not missing:
        try:
            __import__("websockets")
        except ImportError:
            try:
                __import__("wsproto")
            except ImportError:
                missing.append("websockets")
    if missing:
        raise BackendUnavailable(f"the service page needs {', '.join(missing)}, which "
                                 f"{'is' if len(missing) == 1 else 'are'} not installed: "
                                 f"{INSTALL_HINT}")
