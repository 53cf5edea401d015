"""Rolling latency percentiles and the pixel spectrum with its fitted model."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError, DataFormatError
from edge.serve.latency import RollingLatency
from edge.serve.live import FrameHub, LiveSink
from edge.serve.spectrum import UnmixerCache, parse_pixel, pixel_spectrum
from serve_scene import (BASELINE, CHROMOPHORES, COLS, LEFT_C, RIGHT_C, ROWS, STO2,
                         scene_frame, scene_reflectance)


def _rec(seq, trigger_ns, chain_ms, sink_ms=1.0):
    t1 = trigger_ns + int(chain_ms * 1e6)
    t2 = t1 + int(sink_ms * 1e6)
    return {"seq": seq, "trigger_ns": trigger_ns, "arrival_ns": trigger_ns,
            "dequeue_ns": trigger_ns, "stages": [("chain", trigger_ns, t1), ("sink", t1, t2)],
            "overlay_ready_ns": t1, "done_ns": t2}


def test_percentiles_and_deadline_misses_over_the_window():
    lat = RollingLatency(window=100, deadline_ms=50.0)
    # 300 frames; only the last 100 count: chain 1..100 ms in the window
    for i in range(300):
        chain = (i - 199) if i >= 200 else 1000.0
        lat.add(_rec(i, i * 100_000_000, chain))
    s = lat.summary()
    assert s["frames"] == 100 and s["total"] == 300
    chain = s["stages"]["chain"]
    assert chain["p50_ms"] == pytest.approx(50.5, abs=1e-6)
    assert chain["p99_ms"] == pytest.approx(99.01, abs=1e-6)
    assert chain["max_ms"] == pytest.approx(100.0, abs=1e-6)
    # end to end = chain + 1 ms sink: > 50 ms for chain 50..100 -> 51 misses
    assert s["misses"] == 51 and s["deadline_source"] == "given"
    assert list(s["stages"])[-3:] == ["queue", "overlay", "end_to_end"]


def test_a_stage_without_samples_in_the_window_is_null_not_nan():
    lat = RollingLatency(window=4)
    rec = _rec(0, 0, chain_ms=3.0)
    rec["stages"].append(("extra", 0, 2_000_000))
    lat.add(rec)
    for i in range(1, 5):            # 4 more frames without "extra": it leaves the window
        lat.add(_rec(i, i * 10_000_000, chain_ms=3.0))
    s = lat.summary()["stages"]
    assert s["extra"] == dict.fromkeys(["mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"])
    assert s["chain"]["mean_ms"] == pytest.approx(3.0) and s["chain"]["max_ms"] == 3.0


def test_deadline_defaults_to_the_frame_period_and_gaps_are_counted():
    lat = RollingLatency(window=10)
    for seq in (1, 2, 3, 6, 7):      # 4 and 5 missing
        lat.add(_rec(seq, seq * 40_000_000, chain_ms=45.0 if seq == 7 else 10.0))
    s = lat.summary()
    assert s["deadline_ms"] == pytest.approx(40.0) and s["deadline_source"] == "frame period"
    assert s["misses"] == 1 and s["missed_frames"] == 2


def test_bad_deadline_is_one_line():
    with pytest.raises(ConfigError, match=r"--deadline-ms: expected a value > 0, got -1"):
        RollingLatency(deadline_ms=-1)


def _hub_with(n):
    hub = FrameHub(ring=4)
    sink = LiveSink(hub, fps=60)
    for i in range(n):
        sink._next_ns = None
        sink.write(scene_frame(i))
    return hub


def test_spectrum_is_the_known_one_and_the_fit_reproduces_it():
    hub = _hub_with(6)
    cache = UnmixerCache(CHROMOPHORES, BASELINE)
    refl = scene_reflectance()
    for x, c, sto2 in ((3, LEFT_C, STO2[0]), (COLS - 2, RIGHT_C, STO2[1])):
        doc = pixel_spectrum(hub.recent(), x, 7, cache)
        assert doc["seqs"] == [2, 3, 4, 5]                 # the ring: last 4 frames
        r = np.array(doc["reflectance"])
        np.testing.assert_allclose(r, refl[7, x], rtol=1e-6)
        fit = np.array(doc["fit"]["reflectance"])
        assert np.linalg.norm(fit - r) / np.linalg.norm(r) < 1e-4
        comps = doc["fit"]["components"]
        np.testing.assert_allclose([comps[k] for k in (*CHROMOPHORES, *BASELINE)], c,
                                   rtol=1e-3, atol=1e-4)
        assert doc["sto2"] == pytest.approx(sto2, abs=1e-6)
        assert doc["fit"]["rms_absorbance"] < 1e-4


def test_spectrum_needs_reflectance():
    hub = FrameHub()
    sink = LiveSink(hub)
    f = scene_frame(1)
    f = f.replace(cube=np.zeros(f.cube.shape, np.uint16))
    del f.products["reflectance"]
    sink.write(f)
    with pytest.raises(DataFormatError, match="spectrum: no recent frame carries reflectance"):
        pixel_spectrum(hub.recent(), 0, 0, UnmixerCache())


@pytest.mark.parametrize("x, y, msg", [
    (None, "1", r"x: required \(pixel column, 0..31\)"),
    ("a", "1", r"x: expected an integer in 0..31, got 'a'"),
    ("32", "1", r"x: expected an integer in 0..31, got 32"),
    ("1", "-1", r"y: expected an integer in 0..23, got -1"),
])
def test_pixel_errors_name_the_parameter_and_range(x, y, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_pixel(x, y, ROWS, COLS)


def test_the_fit_uses_the_cameras_band_width():
    """The spectrum fit took only camera.fwhm_nm from the config (None for a simulated preset
    or a recording that stores its FWHM): its unmixer sampled band centres while the chain's
    integrated the bands; the run now hands the opened camera to the cache."""
    from drivers.simulated import SimulatedCamera

    cache = UnmixerCache(CHROMOPHORES, BASELINE)
    with SimulatedCamera("tivita", rows=4, cols=4, seed=0) as cam:
        wl = cam.wavelengths
        before = cache.get(wl)
        cache.use_camera(cam)
        assert cam.fwhm_nm is not None and cache.fwhm_nm == cam.fwhm_nm
        after = cache.get(wl)
    assert after is not before and after.fwhm_nm == cam.fwhm_nm
    assert not np.allclose(after.pinv, before.pinv)      # the band integration changed it
    cache.use_camera(cam)
    assert cache.get(wl) is after                         # same width: the cache holds
