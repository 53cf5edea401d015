"""SimulatedCamera, its scene generator and its sensor model (drivers.simulated/scene/sensor)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.sim.presets import PRESETS, get_preset
from drivers.sim.scene import SCENE_CLASSES, SurgicalScene
from drivers.sim.sensor import LED_CHANNELS, SensorModel
from drivers.simulated import SimulatedCamera
from edge.errors import ConfigError, DeviceError, DeviceTimeout
from edge.physics import tissue_reflectance

SMALL = dict(rows=24, cols=32)


def grab(cam: SimulatedCamera, **configure):
    cam.configure(trigger_mode="software", **configure)
    cam.arm()
    return cam.grab(timeout=5.0)


# -- presets -------------------------------------------------------------------------------
def test_presets_layout():
    t = PRESETS["tivita"]
    np.testing.assert_array_equal(t.wavelength_array(), np.linspace(500, 1000, 100))
    assert (t.rows, t.cols, t.bit_depth) == (480, 640, 10)
    assert PRESETS["snapshot16"].bands == 16 and PRESETS["snapshot16"].wavelengths[0] == 460
    assert PRESETS["snapshot25"].bands == 25 and PRESETS["snapshot25"].wavelengths[-1] == 960
    assert get_preset("tivita", rows=8, cols=9).rows == 8


@pytest.mark.parametrize("kwargs,match", [
    (dict(preset="hyperx"), r"preset: unknown camera preset 'hyperx'; allowed: tivita, "
                            r"snapshot16, snapshot25"),
    (dict(bit_depth=11), r"bit_depth: expected one of 8, 10, 12, 14, 16, got 11"),
    (dict(rows=0), r"rows: expected an integer 1-8192, got 0"),
    (dict(fps=-1.0), r"fps: expected frames per second in \(0, 10000\], got -1.0"),
    (dict(seed=-3), r"seed: expected an integer >= 0, got -3"),
    (dict(max_queue=0), r"max_queue: expected an integer >= 1, got 0"),
    (dict(noise="fast"), r"noise: expected one of pool, exact, got 'fast'"),
    (dict(illumination={"uv": 1.0}), r"LED channel: unknown channel 'uv'; allowed: white, blue"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SimulatedCamera(**{"preset": "snapshot25", **SMALL, **kwargs})


def test_runtime_setting_errors():
    cam = SimulatedCamera("snapshot25", **SMALL)
    with pytest.raises(ConfigError,
                       match=r"target: expected one of scene, white, dark, grey_tile, .*, got 'grey'"):
        cam.target = "grey"
    with pytest.raises(ConfigError, match=r"LED intensity of 'red': expected 0-1, got 1.5"):
        cam.set_led_state({"red": 1.5})
    with pytest.raises(ConfigError, match=r"illumination: expected 25 finite values >= 0"):
        cam.set_illumination(np.ones(3))
    with pytest.raises(DeviceError, match="gain: expected 1-16, got 0.5"):
        cam.configure(gain=0.5)


# -- frames and determinism ----------------------------------------------------------------
def test_frame_layout_and_meta():
    with SimulatedCamera("snapshot25", seed=3, bit_depth=12, **SMALL) as cam:
        f = grab(cam, exposure_us=5000.0, gain=2.0)
    assert f.cube.shape == (24, 32, 25) and f.cube.dtype == np.uint16
    np.testing.assert_array_equal(f.wavelengths, np.linspace(665, 960, 25))
    assert f.meta.frame_id == 0 and f.meta.bit_depth == 12
    assert f.meta.exposure_us == 5000.0 and f.meta.gain == 2.0
    assert f.meta.serials == {"camera": "SIM-snapshot25-0003"}
    assert f.meta.illumination == {"white": 1.0}
    t = f.truth
    assert t["classes"].shape == (24, 32) and t["classes"].dtype == np.uint8
    assert t["classes"].max() < len(SCENE_CLASSES)
    for k in ("sto2", "blood_volume"):
        assert t[k].dtype == np.float32 and t[k].shape == (24, 32)
    for k in ("reflectance", "dark", "white"):
        assert t[k].dtype == np.float32 and t[k].shape == (24, 32, 25)
    bg = t["classes"] == 0
    assert np.all(np.isnan(t["sto2"][bg])) and np.all(np.isfinite(t["sto2"][~bg]))
    assert np.all((t["blood_volume"][~bg] >= 0.005) & (t["blood_volume"][~bg] <= 0.065))


def test_deterministic_for_a_seed():
    frames = []
    for seed in (7, 7, 8):
        with SimulatedCamera("snapshot16", seed=seed, **SMALL) as cam:
            cam.arm()
            frames.append([cam.grab(timeout=5.0) for _ in range(2)])
    for a, b in zip(frames[0], frames[1]):
        np.testing.assert_array_equal(a.cube, b.cube)
        np.testing.assert_array_equal(a.truth["classes"], b.truth["classes"])
    assert not np.array_equal(frames[0][0].cube, frames[2][0].cube)
    # successive frames differ by their noise
    assert not np.array_equal(frames[0][0].cube, frames[0][1].cube)


@pytest.mark.parametrize("noise", ["pool", "exact"])
def test_reflectance_recovered_within_noise(noise):
    with SimulatedCamera("tivita", rows=40, cols=48, seed=2, noise=noise) as cam:
        f = grab(cam)
    raw = f.cube.astype(np.float64)
    dark = f.truth["dark"].astype(np.float64)
    white = f.truth["white"].astype(np.float64)
    truth = f.truth["reflectance"].astype(np.float64)
    est = (raw - dark) / (white - dark) * 0.99
    ok = raw < 2 ** 10 - 1
    assert ok.mean() > 0.95
    # Predicted noise of each sample (shot + read + quantisation) in reflectance units.
    s = cam._sensor
    mean_counts = dark + truth * (white - dark) / 0.99
    var = s.counts_per_e * (mean_counts - s.black_level) + s.read_noise_counts ** 2 + 1 / 12
    sigma_r = np.sqrt(var) / (white - dark) * 0.99
    z = ((est - truth) / sigma_r)[ok]
    assert abs(z.mean()) < 0.03
    assert z.std() == pytest.approx(1.0, abs=0.05)
    assert np.mean(np.abs(est - truth)[ok]) < 0.03


def test_saturation_at_full_scale():
    for bits in (10, 12):
        with SimulatedCamera("snapshot16", bit_depth=bits, **SMALL) as cam:
            f = grab(cam, exposure_us=200_000.0, gain=16.0)
        assert f.cube.max() == 2 ** bits - 1
        assert np.mean(f.cube == 2 ** bits - 1) > 0.5


def test_white_and_dark_targets():
    with SimulatedCamera("snapshot25", **SMALL) as cam:
        cam.target = "white"
        w = grab(cam)
        cam.target = "dark"
        d = cam.grab(timeout=5.0)
    assert np.all(w.truth["reflectance"] == np.float32(0.99))
    np.testing.assert_allclose(w.cube.mean(axis=(0, 1)), w.truth["white"].mean(axis=(0, 1)),
                               rtol=0.01)
    np.testing.assert_allclose(d.cube.mean(), d.truth["dark"].mean(), atol=0.2)
    # White tile at the centre of the brightest band reads ~75 % of full scale.
    assert 0.6 * 1023 < w.truth["white"].max() < 0.8 * 1023


def test_all_leds_off_gives_dark_frame():
    with SimulatedCamera("snapshot25", **SMALL) as cam:
        cam.set_led_state({name: 0.0 for name in LED_CHANNELS})
        f = grab(cam)
    assert f.meta.illumination == {name: 0.0 for name in LED_CHANNELS}
    np.testing.assert_array_equal(f.truth["white"], f.truth["dark"])
    np.testing.assert_allclose(f.cube.mean(), f.truth["dark"].mean(), atol=0.2)
    # read noise only: a few counts of spread at 10 bit
    assert f.cube.std() < 3.0


def test_single_led_lights_only_its_bands():
    with SimulatedCamera("snapshot25", **SMALL) as cam:
        cam.set_led_state({"nir740": 1.0})
        f = grab(cam)
    signal = (f.truth["white"] - f.truth["dark"]).mean(axis=(0, 1))
    wl = f.wavelengths
    assert signal[np.argmin(np.abs(wl - 740))] > 50 * signal[np.argmin(np.abs(wl - 960))]
    assert np.argmax(signal) == np.argmin(np.abs(wl - 740))


def test_light_is_latched_at_the_trigger():
    with SimulatedCamera("snapshot25", **SMALL) as cam:
        cam.configure(trigger_mode="external")
        cam.arm()
        cam.set_led_state({"nir850": 1.0})
        cam.external_pulse()
        cam.set_led_state({})  # the LED sequence moves on before the frame is read
        cam.external_pulse()
        lit, dark = cam.read(timeout=5.0), cam.read(timeout=5.0)
    assert lit.meta.illumination["nir850"] == 1.0 and dark.meta.illumination["nir850"] == 0.0
    assert lit.cube.mean() > dark.cube.mean() + 20
    np.testing.assert_allclose(dark.cube.mean(), dark.truth["dark"].mean(), atol=0.2)


# -- trigger modes -------------------------------------------------------------------------
@pytest.mark.parametrize("mode,match", [("software", "no software trigger pending"),
                                        ("external", "no trigger pulse received")])
def test_read_without_trigger_times_out(mode, match):
    with SimulatedCamera("snapshot25", **SMALL) as cam:
        cam.configure(trigger_mode=mode)
        cam.arm()
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match=match):
            cam.read(timeout=0.2)
        assert time.monotonic() - t0 < 0.2 + 0.5


def test_external_pulses_and_missed_pulse_gap():
    with SimulatedCamera("snapshot25", max_queue=2, **SMALL) as cam:
        assert cam.external_pulse() is False  # not armed: ignored, not counted
        cam.configure(trigger_mode="external")
        cam.arm()
        accepted = [cam.external_pulse(timestamp_ns=1000 + i) for i in range(4)]
        assert accepted == [True, True, False, False]
        a, b = cam.read(timeout=5.0), cam.read(timeout=5.0)
        assert (a.meta.frame_id, b.meta.frame_id) == (0, 1)
        assert (a.meta.timestamp_ns, b.meta.timestamp_ns) == (1000, 1001)
        cam.external_pulse()
        c = cam.read(timeout=5.0)
        assert c.meta.frame_id == 4  # frames 2 and 3 were missed


def test_realtime_external_pulse_during_readout_is_missed():
    with SimulatedCamera("snapshot25", realtime=True, fps=50.0, **SMALL) as cam:
        cam.configure(trigger_mode="external", exposure_us=1000.0)
        cam.arm()
        t = time.monotonic_ns()
        assert cam.external_pulse(t) is True
        assert cam.external_pulse(t + 5_000_000) is False  # camera busy for 20 ms
        assert cam.external_pulse(t + 25_000_000) is True
        ids = [cam.read(timeout=5.0).meta.frame_id for _ in range(2)]
        assert ids == [0, 2]


def test_free_run_sequences_and_realtime_pacing():
    with SimulatedCamera("snapshot25", **SMALL) as cam:
        cam.configure(trigger_mode="free_run")
        cam.arm()
        assert [cam.read(timeout=5.0).meta.frame_id for _ in range(3)] == [0, 1, 2]
        with pytest.raises(DeviceError, match="only valid in trigger_mode 'software'"):
            cam.trigger()
    with SimulatedCamera("snapshot25", realtime=True, fps=40.0, **SMALL) as cam:
        cam.configure(trigger_mode="free_run", exposure_us=1000.0)
        cam.arm()
        frames = [cam.read(timeout=5.0) for _ in range(3)]
    ts = np.diff([f.meta.timestamp_ns for f in frames])
    ids = np.diff([f.meta.frame_id for f in frames])
    np.testing.assert_array_equal(ts, ids * 25_000_000)  # timestamps on the 40 fps grid


# -- scene ---------------------------------------------------------------------------------
def test_scene_diffuse_model_matches_physics():
    wl = np.linspace(500, 1000, 11)
    scene = SurgicalScene(wl, 8, 8, fwhm_nm=0.01, seed=0)
    p = np.array([[0.7], [0.03], [0.75], [0.1], [20.0], [1.2]])
    ours = scene.diffuse_reflectance(p)[0]
    ref = tissue_reflectance(wl, sto2=0.7, blood_volume=0.03, water=0.75, fat=0.1,
                             scatter_a=20.0, scatter_b=1.2)
    np.testing.assert_allclose(ours, ref, rtol=2e-5)


def test_scene_dynamics():
    wl = np.linspace(665, 960, 25)
    scene = SurgicalScene(wl, 60, 80, fwhm_nm=20.0, seed=4)
    s0 = scene.render(0.0)
    s1 = scene.render(60.0)
    mal = SCENE_CLASSES.index("malperfused")
    assert np.any(s0.classes == mal)
    assert scene.malperfused_sto2(0) == pytest.approx(0.55)
    assert scene.malperfused_sto2(60.0) < scene.malperfused_sto2(10.0) < 0.55
    # breathing: the view moves by whole pixels and comes back after one period
    assert scene.offset(1.0) != scene.offset(0.0)
    assert scene.offset(4.0) == scene.offset(0.0)
    # the first sample is not changed by later renders
    assert np.nanmean(s0.sto2[s0.classes == mal]) > np.nanmean(s1.sto2[s1.classes == mal]) + 0.1
    with pytest.raises(ValueError):
        s0.reflectance[0, 0, 0] = 1.0  # read-only


def test_sensor_response_scales_with_exposure_and_gain():
    wl = np.linspace(665, 960, 25)
    s = SensorModel(wl, 4, 5, seed=0)
    d1, u1, w1 = s.response(10_000.0, 1.0)
    d2, u2, w2 = s.response(20_000.0, 2.0)
    np.testing.assert_allclose(u2, 4 * u1, rtol=1e-6)
    np.testing.assert_allclose(w1, d1 + 0.99 * u1, rtol=1e-6)
    # dark current grows with exposure x gain on top of the black level
    np.testing.assert_allclose(d2 - s.black_level, 4 * (d1 - s.black_level), rtol=1e-5)
