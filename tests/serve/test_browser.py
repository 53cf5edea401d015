"""The page in a real browser: Playwright (sync API) driving Debian's chromium, headless.

Browsers are not downloaded (``playwright install`` cannot reach the internet here): the
tests launch ``/usr/bin/chromium`` (installed by ``.ci/run`` with apt) and are skipped with the
reason where it is missing.  Screenshots are kept under each test's tmp dir (path printed).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading

import numpy as np
import pytest
from PIL import Image

from edge.physics import cube_to_rgb
from edge.processing.post import colormap_table
from serve_scene import (COLORS, COLS, STO2, WAVELENGTHS, Served, scene_reflectance,
                         serving)
from test_server import Pusher
from test_token import non_loopback_address

CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright for Python is in the 'test' extra")

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    pg = ctx.new_page()
    try:
        yield pg
    finally:
        ctx.close()


def _shot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_frames_arrive_and_panels_fill(page, tmp_path):
    received = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: received.append(
        payload)))
    with serving() as served, Pusher(served, period_s=0.1):
        page.goto(served.base + "/")
        page.wait_for_function("window.hsi.frames >= 3", timeout=TIMEOUT_MS)
        # each frame is one JSON text message and one binary JPEG
        binary = [p for p in received if isinstance(p, bytes)]
        texts = [p for p in received if isinstance(p, str)]
        assert len(binary) >= 3 and len(texts) >= 3
        assert Image.open(io.BytesIO(binary[0])).format == "JPEG"
        page.wait_for_function(
            "document.querySelector('#latency').textContent.includes('end_to_end')",
            timeout=TIMEOUT_MS)
        page.wait_for_function(
            "document.querySelector('#status').textContent.includes('calibration')",
            timeout=TIMEOUT_MS)
        latency = page.inner_text("#latency")
        assert "chain" in latency and "deadline misses" in latency
        assert "left" in page.inner_text("#legend") and "right" in page.inner_text("#legend")
        _shot(page, tmp_path, "live")


def _pixel_xy(page, x, y):
    """Page coordinates of the centre of image pixel (x, y) of the live canvas."""
    box = page.locator("#live").bounding_box()
    w, h = page.evaluate("[document.querySelector('#live').width, "
                         "document.querySelector('#live').height]")
    return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h


def _table(page):
    rows = page.locator("#spectrum-table tr").all_inner_texts()[1:]
    vals = np.array([[float(v) for v in r.split("\t")] for r in rows])
    return vals[:, 0], vals[:, 1], vals[:, 2]


def test_clicking_a_pixel_shows_its_known_spectrum(page, tmp_path):
    refl = scene_reflectance()
    with serving() as served:
        served.push(3)
        page.goto(served.base + "/")
        page.wait_for_function("window.hsi.frames >= 1", timeout=TIMEOUT_MS)
        for (px, py), (x, y) in (((4, 5), (4, 5)),                   # overlay panel, left
                                 ((COLS + 25, 9), (25, 9))):          # StO2 panel, right
            page.evaluate("window.hsi.spectrum = null")
            page.mouse.click(*_pixel_xy(page, px, py))
            page.wait_for_function("window.hsi.spectrum !== null", timeout=TIMEOUT_MS)
            doc = page.evaluate("window.hsi.spectrum")
            assert (doc["x"], doc["y"]) == (x, y)
            wl, r, fit = _table(page)
            np.testing.assert_allclose(wl, WAVELENGTHS, atol=0.05)      # shown to 0.1 nm
            np.testing.assert_allclose(r, refl[y, x], atol=6e-5)         # shown to 4 places
            np.testing.assert_allclose(fit, refl[y, x], atol=2e-4)       # the model fits
            assert f"x {x}, y {y}" in page.inner_text("#pixel")
        _shot(page, tmp_path, "spectrum")


def test_overlay_colours_at_known_coordinates(page, tmp_path):
    refl = scene_reflectance()
    rgb = cube_to_rgb(refl, WAVELENGTHS).astype(np.float64)
    table = colormap_table("sto2")
    with serving() as served:
        served.push(2)
        page.goto(served.base + "/")
        page.wait_for_function("window.hsi.frames >= 1", timeout=TIMEOUT_MS)
        path = tmp_path / "canvas.png"
        page.locator("#live").screenshot(path=str(path))
        print(f"screenshot: {path}")
        shot = np.asarray(Image.open(path).convert("RGB")).astype(int)
        w = page.evaluate("document.querySelector('#live').width")
        zoom = shot.shape[1] / w
        checks = {  # image pixel -> expected colour
            (3, 6): np.rint(0.6 * rgb[6, 3] + 0.4 * COLORS[0]),
            (COLS - 4, 6): np.rint(0.6 * rgb[6, COLS - 4] + 0.4 * COLORS[1]),
            (COLS + 4, 12): table[int(np.rint(float(np.float32(STO2[0])) * 255))],
            (2 * COLS - 4, 12): table[int(np.rint(float(np.float32(STO2[1])) * 255))],
        }
        for (x, y), want in checks.items():
            got = shot[int((y + 0.5) * zoom), int((x + 0.5) * zoom)]
            # JPEG (quality 90, 4:4:4) moves flat regions by a few levels
            assert np.abs(got - want).max() <= 12, ((x, y), got, want)


@contextlib.contextmanager
def _refusing(sock):
    """While no server runs on ``sock`` (bound, listening): close every connection at once.

    The browser sees what a stopped server gives it (the WebSocket fails with 1006), while the
    address stays this test's: nothing else can take the port between the two servers.
    """
    stop = threading.Event()
    sock.settimeout(0.05)

    def refuse():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:  # the 50 ms timeout included: look at stop again
                continue
            conn.close()

    t = threading.Thread(target=refuse, name="refuse", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        sock.settimeout(None)


def test_page_reconnects_after_a_server_restart(page, tmp_path):
    # One socket holds the address for the whole test; each server gets a dup of it.
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        held.bind(("127.0.0.1", 0))
        held.listen(16)
        first = Served(sock=held.dup())
        try:
            first.push(2)
            page.goto(first.base + "/")
            page.wait_for_function("window.hsi.frames >= 1", timeout=TIMEOUT_MS)
        finally:
            first.close()
        with _refusing(held):
            page.wait_for_function("window.hsi.connected === false", timeout=TIMEOUT_MS)
            assert "retrying" in page.inner_text("#conn")
            # the server's close, then at least one retry that failed and was retried
            page.wait_for_function("window.hsi.closes.length >= 2", timeout=TIMEOUT_MS)
            assert page.evaluate("window.hsi.connects") == 1
        frames_before = page.evaluate("window.hsi.frames")
        with serving(sock=held.dup()) as second, Pusher(second, period_s=0.1):
            assert second.base == first.base
            page.wait_for_function(f"window.hsi.connects >= 2 && window.hsi.frames > "
                                   f"{frames_before}", timeout=TIMEOUT_MS)
            assert page.inner_text("#conn") == "live"
            _shot(page, tmp_path, "reconnected")
    finally:
        held.close()


def test_token_required_off_loopback_in_the_browser(page, tmp_path):
    ip = non_loopback_address()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address here; see test_token.py (ASGI level)")
    token = "browser-token-0123456789abcdef"
    with serving(host=ip, token=token) as served, Pusher(served, period_s=0.1):
        r = page.goto(served.base + "/")
        assert r.status == 401 and "token required" in page.content()
        page.goto(served.base + f"/?token={token}")
        page.wait_for_function("window.hsi.frames >= 2", timeout=TIMEOUT_MS)
        _shot(page, tmp_path, "token")
