"""capture_dark / capture_white against a deterministic camera."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.references import capture_dark, capture_white, hot_pixels
from edge.errors import CalibrationError

from bench_camera import DEAD, HOT, OVER, UNDER, BenchCamera


def _only(mask, *pixels):
    expected = np.zeros_like(mask)
    for p in pixels:
        expected[p] = True
    np.testing.assert_array_equal(mask, expected)


def test_dark_mean_std_and_hot_pixels(bench_camera):
    dark = capture_dark(bench_camera, 12)
    stack = np.stack(bench_camera.frames).astype(np.float64)
    assert len(bench_camera.frames) == 12
    np.testing.assert_allclose(dark.mean, stack.mean(axis=0), rtol=1e-6, atol=0)
    np.testing.assert_allclose(dark.std, stack.std(axis=0, ddof=1), rtol=1e-5, atol=1e-6)
    assert dark.mean.dtype == np.float32 and dark.std.dtype == np.float32
    _only(dark.hot, HOT)
    assert (dark.exposure_us, dark.gain, dark.n_frames, dark.serial, dark.bit_depth) == \
        (1000.0, 1.0, 12, "BENCH-1", 10)
    np.testing.assert_array_equal(dark.wavelengths, bench_camera.wavelengths)
    # The camera was not armed before, so it is left disarmed, in software mode.
    assert not bench_camera.is_armed and bench_camera.trigger_mode == "software"


def test_white_masks(bench_camera):
    dark = capture_dark(bench_camera, 8)
    bench_camera.target = "white"
    white = capture_white(bench_camera, 6, dark=dark)
    stack = np.stack(bench_camera.frames[8:]).astype(np.float64)
    np.testing.assert_allclose(white.mean, stack.mean(axis=0), rtol=1e-6)
    _only(white.dead, DEAD)
    _only(white.overexposed, OVER)
    _only(white.underexposed, UNDER, DEAD)  # a dead pixel is also under-exposed
    # Without a dark, nothing can be called dead and under-exposure uses the white alone.
    white2 = capture_white(bench_camera, 2)
    assert not white2.dead.any() and not white2.underexposed.any()


def test_settings_are_applied(bench_camera):
    dark = capture_dark(bench_camera, 2, exposure_us=2000.0, gain=2.0)
    assert dark.exposure_us == 2000.0 and dark.gain == 2.0
    assert bench_camera.exposure_us == 2000.0


def test_free_run_camera_is_switched_to_software(bench_camera):
    bench_camera.configure(trigger_mode="free_run")
    bench_camera.arm()
    capture_dark(bench_camera, 2)
    assert bench_camera.trigger_mode == "software" and bench_camera.is_armed


def test_hot_pixels_noiseless_dark_flags_nothing():
    assert not hot_pixels(np.full((4, 4, 3), 64.0)).any()


def test_errors(bench_camera):
    with pytest.raises(CalibrationError, match="n: expected a number of frames >= 1, got 0"):
        capture_dark(bench_camera, 0)
    with pytest.raises(CalibrationError, match="references need raw uint16 frames.*float32"):
        capture_dark(BenchCamera(float_frames=True), 2)
    other = capture_dark(BenchCamera(shape=(8, 9, 4)), 2)
    bench_camera.target = "white"
    with pytest.raises(CalibrationError, match=r"dark: shape \(8, 9, 4\) does not match the "
                                               r"white frames \(8, 9, 5\)"):
        capture_white(bench_camera, 2, dark=other)
    foreign = capture_dark(BenchCamera(serial="OTHER"), 2)
    with pytest.raises(CalibrationError, match="dark: recorded on camera 'OTHER', white on 'BENCH-1'"):
        capture_white(bench_camera, 2, dark=foreign)


def test_simulated_camera_references():
    """References from drivers.simulated match the sensor model's own mean counts."""
    simulated = pytest.importorskip(
        "drivers.simulated", reason="drivers.simulated.SimulatedCamera not available")
    n = 16
    with simulated.SimulatedCamera(preset="snapshot16", rows=16, cols=16, seed=3) as cam:
        cam.target = "dark"
        dark = capture_dark(cam, n)
        cam.target = "white"
        white = capture_white(cam, n, dark=dark)
        cam.target = "scene"
        cam.arm()
        scene = cam.grab()
    truth = scene.truth
    assert dark.mean.shape == white.mean.shape == (16, 16, 16)
    # Mean of n frames: within 6 standard errors (+0.5 count of ADC rounding) of the model.
    for ref, model in ((dark, truth["dark"]), (white, truth["white"])):
        tol = 6.0 * ref.std / np.sqrt(n) + 0.5
        assert np.all(np.abs(ref.mean - model) <= tol)
    assert not (dark.hot.any() or white.dead.any() or white.overexposed.any())
