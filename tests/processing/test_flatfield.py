"""FlatField: exactness against the FACTS.md formula and the pixel flags."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge.backends.base import FLAG_BAD_PIXEL, FLAG_NONFINITE, FLAG_SATURATED, FLAG_UNDEREXPOSED
from edge.errors import CalibrationError
from edge.processing.flatfield import FlatField, default_saturation, default_underexposed_level

SHAPE = (6, 7, 5)


def _refs(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    dark = rng.uniform(40, 60, shape).astype(np.float32)
    white_dark = rng.uniform(50, 70, shape).astype(np.float32)
    white = (white_dark + rng.uniform(500, 800, shape)).astype(np.float32)
    raw = rng.integers(60, 900, shape).astype(np.uint16)
    return dark, white, white_dark, raw


def _direct(raw, dark, white, white_dark, t_i, t_w, rho):
    """R = ((I - D_I)/t_I) / ((W - D_W)/t_W) * rho, in float64 (FACTS.md)."""
    i, d, w, wd = (np.asarray(a, np.float64) for a in (raw, dark, white, white_dark))
    return ((i - d) / t_i) / ((w - wd) / t_w) * rho


def test_matches_direct_formula():
    dark, white, white_dark, raw = _refs()
    rho = np.linspace(0.97, 0.99, SHAPE[2])
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=4000.0,
                                   white_exposure_us=2500.0, rho_ref=rho)
    assert ff.scale.dtype == np.float32 and ff.dark.dtype == np.float32
    refl, flags = ff.apply(raw, 4000.0)
    assert refl.dtype == np.float32 and refl.shape == SHAPE
    assert flags.dtype == np.uint8 and not flags.any()
    ref = _direct(raw, dark, white, white_dark, 4000.0, 2500.0, rho)
    np.testing.assert_allclose(refl, ref, rtol=1e-6, atol=0)
    # The documented per-frame form: R = (I - D) * scale.
    np.testing.assert_array_equal(refl, (raw.astype(np.float32) - ff.dark) * ff.scale)


def test_other_exposure_rescales_and_warns(caplog):
    dark, white, white_dark, raw = _refs(1)
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=4000.0,
                                   white_exposure_us=2500.0)
    with caplog.at_level(logging.WARNING, logger="edge.processing.flatfield"):
        refl, _ = ff.apply(raw, 8000.0)
        ff.apply(raw, 8000.0)
    ref = _direct(raw, dark, white, white_dark, 8000.0, 2500.0, 0.99)
    np.testing.assert_allclose(refl, ref, rtol=1e-6, atol=0)
    assert ff.dark_mismatch
    warnings = [r for r in caplog.records if "capture a new dark" in r.getMessage()]
    assert len(warnings) == 1  # once per exposure


def test_white_dark_defaults_to_dark():
    dark, white, _, raw = _refs(2)
    ff = FlatField.from_references(dark, white, exposure_us=1000.0, white_exposure_us=1000.0)
    refl, _ = ff.apply(raw)
    np.testing.assert_allclose(refl, _direct(raw, dark, white, dark, 1, 1, 0.99), rtol=1e-6)


def test_saturation_flag():
    dark, white, white_dark, raw = _refs(3)
    assert default_saturation(10) == pytest.approx(1001.0)
    raw[2, 3, 4] = 1001  # htc: any band > 1000 of 1023 is saturated
    raw[1, 1, 0] = 1000
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=1.0, white_exposure_us=1.0)
    refl, flags = ff.apply(raw)
    assert flags[2, 3] == FLAG_SATURATED and flags[1, 1] == 0
    assert np.isnan(refl[2, 3]).all()
    assert np.count_nonzero(flags) == 1 and np.isfinite(refl[flags == 0]).all()
    ff12 = FlatField.from_references(dark, white, white_dark, exposure_us=1.0,
                                     white_exposure_us=1.0, saturation=880)
    _, flags12 = ff12.apply(raw)
    np.testing.assert_array_equal(flags12 != 0, (raw >= 880).any(axis=2))
    assert 0 < np.count_nonzero(flags12) < flags12.size


def test_static_flags_underexposed_bad_overexposed_nonfinite():
    dark, white, white_dark, raw = _refs(4)
    white[0, 0, 2] = white_dark[0, 0, 2] + 39.0  # below 40/1023 of full scale
    white[0, 1, 1] = 1010.0                      # saturated white
    dark[0, 2, 0] = np.nan
    bad = np.zeros(SHAPE[:2], bool)
    bad[3, 3] = True
    over = np.zeros(SHAPE[:2], bool)
    over[4, 4] = True
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=1.0, white_exposure_us=1.0,
                                   bad_pixels=bad, overexposed=over)
    refl, flags = ff.apply(raw)
    assert default_underexposed_level(10) == pytest.approx(40.0)
    expected = np.zeros(SHAPE[:2], np.uint8)
    expected[0, 0] = FLAG_UNDEREXPOSED
    expected[0, 1] = FLAG_SATURATED
    expected[0, 2] = FLAG_NONFINITE
    expected[3, 3] = FLAG_BAD_PIXEL
    expected[4, 4] = FLAG_SATURATED
    np.testing.assert_array_equal(flags, expected)
    assert np.isnan(refl[flags != 0]).all() and np.isfinite(refl[flags == 0]).all()


def test_float_input_passes_through_with_nonfinite_flags():
    dark, white, white_dark, _ = _refs(5)
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=1.0, white_exposure_us=1.0)
    cube = np.random.default_rng(5).normal(0.5, 0.2, (3, 4, 9)).astype(np.float32)  # any shape
    refl, flags = ff.apply(cube)
    np.testing.assert_array_equal(refl, cube)
    assert refl is not cube and not flags.any()
    cube[1, 2, 3] = np.nan
    cube[2, 0, 0] = np.inf
    refl, flags = ff.apply(cube)
    assert flags[1, 2] == FLAG_NONFINITE and flags[2, 0] == FLAG_NONFINITE
    assert np.count_nonzero(flags) == 2
    assert np.isnan(refl[1, 2]).all() and np.isnan(refl[2, 0]).all()
    np.testing.assert_array_equal(refl[flags == 0], cube[flags == 0])


def test_shape_mismatch():
    dark, white, white_dark, raw = _refs(6)
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=1.0, white_exposure_us=1.0)
    with pytest.raises(CalibrationError, match=r"frame shape \(6, 7, 4\) does not match the "
                                               r"calibration reference shape \(6, 7, 5\)"):
        ff.apply(raw[:, :, :4])
    with pytest.raises(CalibrationError, match=r"white: shape \(6, 7, 4\) does not match dark "
                                               r"shape \(6, 7, 5\)"):
        FlatField.from_references(dark, white[:, :, :4], exposure_us=1.0, white_exposure_us=1.0)
    with pytest.raises(CalibrationError, match=r"bad_pixels: expected a \(rows, cols\) mask"):
        FlatField.from_references(dark, white, exposure_us=1.0, white_exposure_us=1.0,
                                  bad_pixels=np.zeros((2, 2), bool))


@pytest.mark.parametrize("kwargs, match", [
    ({"exposure_us": 0.0}, "exposure_us: expected a finite exposure > 0"),
    ({"white_exposure_us": float("nan")}, "white_exposure_us: expected a finite exposure > 0"),
    ({"rho_ref": [0.9, 0.9]}, r"rho_ref: expected a positive number or one per band \(5\)"),
    ({"rho_ref": -1.0}, "rho_ref: expected a positive number"),
    ({"bit_depth": 20}, "bit_depth: expected an integer 1-16, got 20"),
])
def test_bad_parameters(kwargs, match):
    dark, white, white_dark, _ = _refs(7)
    args = dict(exposure_us=1.0, white_exposure_us=1.0)
    args.update(kwargs)
    with pytest.raises(CalibrationError, match=match):
        FlatField.from_references(dark, white, white_dark, **args)


def test_bad_frame_input():
    dark, white, white_dark, raw = _refs(8)
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=1.0, white_exposure_us=1.0)
    with pytest.raises(CalibrationError, match="expected uint16 counts or float32 reflectance, got float64"):
        ff.apply(raw.astype(np.float64))
    with pytest.raises(CalibrationError, match="exposure_us: expected a finite exposure > 0"):
        ff.apply(raw, -5.0)


def test_out_buffer_is_reused():
    dark, white, white_dark, raw = _refs(9)
    ff = FlatField.from_references(dark, white, white_dark, exposure_us=1.0, white_exposure_us=1.0)
    buf = np.full(SHAPE, -7.0, np.float32)  # poisoned: every element must be written
    refl, _ = ff.apply(raw, out=buf)
    assert refl is buf
    np.testing.assert_array_equal(refl, ff.apply(raw)[0])
    with pytest.raises(CalibrationError, match=r"out: expected a float32 buffer of shape \(6, 7, 5\)"):
        ff.apply(raw, out=np.empty(SHAPE, np.float64))
