"""The newest-frame slot: decimation, copies, one pending frame, bounded ring, client cap."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from edge.errors import ConfigError
from edge.physics import cube_to_rgb
from edge.processing.post import colormap_table
from edge.serve.live import FrameHub, LiveSink
from edge.serve.render import render_panels
from serve_scene import (COLORS, COLS, ROWS, STO2, scene_frame,
                                  scene_reflectance)


class Clock:
    """A scripted monotonic clock (ns)."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def test_sink_keeps_one_frame_per_period_as_read_only_views():
    hub, clock = FrameHub(ring=4), Clock()
    sink = LiveSink(hub, fps=4.0, clock=clock)
    kept_seqs = []
    for i in range(20):            # 20 frames at 20 fps = 1 s: 4 kept at 4 fps
        clock.t = i * 50_000_000
        f = scene_frame(i)
        sink.write(f)
        if hub.kept > len(kept_seqs):
            kept_seqs.append(i)
            kept = hub.recent()[-1]
            # no copy on the pipeline thread: views of the products, which the page
            # cannot write through
            for name in ("reflectance", "sto2", "classes"):
                view = getattr(kept, name)
                assert np.shares_memory(view, f.products[name]) and not view.flags.writeable
    assert kept_seqs == [0, 5, 10, 15]
    assert sink.passed == 16
    recent = hub.recent()
    assert [k.seq for k in recent] == kept_seqs           # ring of 4, oldest first


def test_write_never_waits_for_clients_or_encoder():
    """By construction: with clients registered that never take a frame and no encoder
    thread, write() returns, the slot holds one pending frame and the ring stays bounded."""
    hub = FrameHub(ring=3, max_clients=2)
    clients = [hub.open_client("ws"), hub.open_client("mjpeg")]
    sink = LiveSink(hub, fps=60.0)
    for i in range(50):
        sink._next_ns = None
        sink.write(scene_frame(i))
    assert hub.kept == 50
    assert len(hub.recent()) == 3
    assert hub._pending is not None and hub._pending.seq == 49   # one slot, newest wins
    assert hub.latest is None                                   # nothing encoded yet
    assert all(c.in_flight == 0 and c.sent == 0 for c in clients)


def test_client_cap_and_skip_count():
    hub = FrameHub(max_clients=2)
    a, b = hub.open_client("ws"), hub.open_client("ws")
    assert hub.open_client("ws") is None
    hub.close_client(b)
    assert hub.open_client("mjpeg") is not None

    for i in range(1, 6):
        from edge.serve.live import KeptFrame
        hub.encode_now(KeptFrame(i, 0, 0, np.linspace(500, 1000, 40), None,
                                 np.full((4, 4), 0.5, np.float32), None))
    pub = asyncio.run(hub.next_frame(a))          # a was registered before frame 1
    assert pub.meta["seq"] == 5
    assert a.skipped == 0 and a.last_index == 5   # a new client's first frame skips nothing
    for i in range(6, 10):
        hub.encode_now(KeptFrame(i, 0, 0, np.linspace(500, 1000, 40), None,
                                 np.full((4, 4), 0.5, np.float32), None))
    pub = asyncio.run(hub.next_frame(a))
    assert pub.meta["seq"] == 9 and a.skipped == 3    # 6, 7, 8 were never sent to a


def test_render_panels_colours():
    refl = scene_reflectance()
    f = scene_frame(1)
    from edge.serve.live import KeptFrame
    kept = KeptFrame(1, 0, 0, f.wavelengths, refl, f.products["sto2"], f.products["classes"])
    image, panels = render_panels(kept, COLORS, alpha=0.4)
    assert image.shape == (ROWS, 2 * COLS, 3)
    assert [(p["name"], p["x0"], p["width"]) for p in panels] == [("overlay", 0, COLS),
                                                                  ("sto2", COLS, COLS)]
    rgb = cube_to_rgb(refl, f.wavelengths).astype(np.float64)
    want_left = np.rint(0.6 * rgb[5, 3] + 0.4 * COLORS[0])
    want_right = np.rint(0.6 * rgb[5, COLS - 3] + 0.4 * COLORS[1])
    np.testing.assert_array_equal(image[5, 3], want_left)
    np.testing.assert_array_equal(image[5, COLS - 3], want_right)
    table = colormap_table("sto2")
    idx = [int(np.rint(float(np.float32(v)) * 255)) for v in STO2]  # the map is float32
    np.testing.assert_array_equal(image[5, COLS + 3], table[idx[0]])
    np.testing.assert_array_equal(image[5, 2 * COLS - 3], table[idx[1]])


def test_published_jpeg_decodes_with_metadata():
    hub = FrameHub(colors=COLORS, class_names=("left", "right"))
    hub.note_stages(7, {"chain": 2.5})
    sink = LiveSink(hub)
    sink.write(scene_frame(7))
    pub = hub.encode_now(hub.recent()[-1])
    img = Image.open(io.BytesIO(pub.jpeg))
    assert img.format == "JPEG" and img.size == (2 * COLS, ROWS)
    assert pub.meta["seq"] == 7 and pub.meta["stage_ms"] == {"chain": 2.5}
    assert pub.meta["classes"][1] == {"id": 1, "name": "right", "color": [0, 0, 255]}


@pytest.mark.parametrize("fps", [0, -1, float("nan"), 61, "x"])
def test_bad_fps_is_one_line(fps):
    with pytest.raises(ConfigError, match=r"--serve-fps: expected a number in \(0, 60\]"):
        LiveSink(FrameHub(), fps=fps)


def test_bad_limits_are_one_line():
    with pytest.raises(ConfigError, match="max_clients: expected an integer >= 1, got 0"):
        FrameHub(max_clients=0)
    with pytest.raises(ConfigError, match="ring: expected an integer >= 1, got 0"):
        FrameHub(ring=0)
