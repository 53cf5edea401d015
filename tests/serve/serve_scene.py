"""Helpers of the service page tests: a constructed scene and a real uvicorn on port 0.

The scene (``scene_frame``) has two halves with known content: left class 0, StO2 0.3 and
the reflectance of concentrations ``LEFT_C``; right class 1, StO2 0.8 and ``RIGHT_C``.  The
reflectance is built on the unmixer's own basis (``R = exp(-E @ c)``), so the fitted model
at any pixel must reproduce it.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the service page needs the 'serve' extra")
pytest.importorskip("uvicorn", reason="the service page needs the 'serve' extra")

from edge.core.frame import Frame, FrameMeta  # noqa: E402
from edge.processing.unmixing import Unmixer  # noqa: E402
from edge.serve.app import ServeState, create_app  # noqa: E402
from edge.serve.latency import RollingLatency  # noqa: E402
from edge.serve.live import FrameHub, LiveSink  # noqa: E402
from edge.serve.server import ServerThread  # noqa: E402
from edge.serve.spectrum import UnmixerCache  # noqa: E402

ROWS, COLS, BANDS = 24, 32, 40
WAVELENGTHS = np.linspace(500.0, 1000.0, BANDS)
CHROMOPHORES = ("HbO2", "Hb", "water", "fat")
BASELINE = ("constant", "linear")
#: concentrations (order: HbO2, Hb, water, fat, constant, linear) of the two halves
LEFT_C = np.array([0.006, 0.004, 0.6, 0.3, 0.2, 0.1])
RIGHT_C = np.array([0.009, 0.002, 0.5, 0.2, 0.3, -0.05])
STO2 = (0.3, 0.8)
COLORS = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
CLASS_NAMES = ("left", "right")


def unmixer() -> Unmixer:
    return Unmixer(WAVELENGTHS, CHROMOPHORES, BASELINE)


def scene_reflectance() -> np.ndarray:
    """(ROWS, COLS, BANDS) float32: left half exp(-E @ LEFT_C), right exp(-E @ RIGHT_C)."""
    e = unmixer().basis
    cube = np.empty((ROWS, COLS, BANDS), np.float32)
    cube[:, : COLS // 2] = np.exp(-(e @ LEFT_C))
    cube[:, COLS // 2:] = np.exp(-(e @ RIGHT_C))
    return cube


def scene_frame(seq: int = 1) -> Frame:
    """One processed frame of the scene (products as the pipeline's stages attach them)."""
    refl = scene_reflectance()
    f = Frame(refl.copy(), WAVELENGTHS, FrameMeta(frame_id=seq, timestamp_ns=seq * 250_000_000))
    f.products["reflectance"] = refl
    sto2 = np.empty((ROWS, COLS), np.float32)
    sto2[:, : COLS // 2], sto2[:, COLS // 2:] = STO2
    f.products["sto2"] = sto2
    classes = np.zeros((ROWS, COLS), np.uint8)
    classes[:, COLS // 2:] = 1
    f.products["classes"] = classes
    return f


def record(seq: int, trigger_ns: int = 0, chain_ms: float = 2.0) -> dict:
    """A per-frame record as Pipeline.on_record hands it (chain then sink)."""
    t1 = trigger_ns + int(chain_ms * 1e6)
    return {"seq": seq, "trigger_ns": trigger_ns, "arrival_ns": trigger_ns,
            "dequeue_ns": trigger_ns, "stages": [("chain", trigger_ns, t1),
                                                 ("sink", t1, t1 + 1_000_000)],
            "overlay_ready_ns": t1, "done_ns": t1 + 1_000_000}


def wait_for(cond, timeout_s: float = 10.0, what: str = "condition"):
    """Poll ``cond`` until true (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Served:
    """A hub, its sink, rolling latency and a real uvicorn serving them."""

    def __init__(self, *, token: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 max_clients: int = 4, hub: FrameHub | None = None, sock=None):
        self.hub = hub or FrameHub(max_clients=max_clients, colors=COLORS,
                                   class_names=CLASS_NAMES)
        self.latency = RollingLatency(
            then=lambda rec, ms: self.hub.note_stages(int(rec["seq"]), ms))
        self.sink = LiveSink(self.hub, fps=60.0)
        self.state = ServeState(hub=self.hub, latency=self.latency, token=token,
                                unmixers=UnmixerCache(CHROMOPHORES, BASELINE))
        self.server = ServerThread(create_app(self.state), host, port,
                                   sock=sock).start()
        self.base = self.server.url.rstrip("/")
        self._seq = 0

    def push(self, n: int = 1) -> None:
        """Write ``n`` scene frames through the sink and encode each (synchronously)."""
        for _ in range(n):
            self._seq += 1
            f = scene_frame(self._seq)
            self.latency.add(record(self._seq, trigger_ns=self._seq * 250_000_000))
            self.sink._next_ns = None   # keep every pushed frame
            self.sink.write(f)
            kept = self.hub.recent()[-1]
            self.hub.encode_now(kept)

    def close(self) -> None:
        self.server.stop()
        self.hub.stop()


@contextlib.contextmanager
def serving(**kw):
    s = Served(**kw)
    try:
        yield s
    finally:
        s.close()
