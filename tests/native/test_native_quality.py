"""Native chain with StO2 quality rules (issue 14) against the NumPy reference: sigma, the
validity bits, the spatial step and the network input's map channels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.backends.native import NativeBackend
from edge.backends.numpy_backend import NumpyBackend
from edge.core.chain import FLAG_SPECULAR, MAP_NAMES, QUALITY_MAP_NAMES, PackSpec
from edge.processing.plan import ChainPlan
from edge.processing.quality import QualityRules

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "processing"))
from test_quality import (EXPOSURE, _camera, _tissue, check_low_blood_rule,  # noqa: E402
                          low_blood_patch)


def _maps_agree(a, b):
    """Flags equal on >= 99.5 % of pixels; every map's NaN pattern equal and values within
    1e-3 where both agree on the flags. Returns the mask of those pixels."""
    same = a.flags == b.flags
    assert same.mean() >= 0.995
    for name in MAP_NAMES + QUALITY_MAP_NAMES:
        x, y = a.maps[name][same], b.maps[name][same]
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        fin = np.isfinite(x)
        np.testing.assert_allclose(y[fin], x[fin], atol=1e-3, err_msg=name)
    return same


@pytest.mark.parametrize("preset", ["tivita", "snapshot16", "snapshot25"])
@pytest.mark.parametrize("spatial", ["none", "bilateral"])
def test_native_quality_matches_numpy(native, preset, spatial):
    """24x30 noisy frame (the preset's sensor, crosstalk included) with a brightness edge and
    a highlight: flags equal on >= 99.5 % of pixels; maps within 1e-3 (StO2 units) where
    both agree on the flags -- float32 sums in band order against sgemm's."""
    rows, cols = 24, 30
    p, sensor, ff, noise = _camera(preset, rows, cols)
    refl, _ = _tissue(p.wavelength_array(), p.fwhm_nm, rows * cols, 9)
    refl = refl.reshape(rows, cols, -1)
    refl[:, cols // 2:] *= 0.7
    refl[2:8, 2:8] += 0.8        # a highlight, wider than the mosaic's misregistration
    raw = sensor.expose(refl, EXPOSURE, 1.0, 3)
    pack = PackSpec(spectra_bands=(0, 2, 4), maps=("sto2", "thb"))
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm, pack=pack,
                           quality=QualityRules(noise, spatial=spatial))
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    b = NativeBackend(plan, cache_dir=native.cache_dir).run(raw, exposure_us=EXPOSURE)
    assert set(b.maps) == set(MAP_NAMES + QUALITY_MAP_NAMES)
    assert np.all(b.flags[4:6, 4:6] & FLAG_SPECULAR)
    same = _maps_agree(a, b)
    np.testing.assert_allclose(b.input[0, :, same], a.input[0, :, same], atol=1e-3)
    assert "quality" in b.timings_ms


def test_native_registered_frame_matches_numpy(native):
    """snapshot25 with the band registration (edge.processing.register): both backends
    register in ChainPlan.check_frame and take the band gain through the crosstalk
    correction; the same tolerances as test_native_quality_matches_numpy."""
    import dataclasses

    from test_native_register import registered_scene

    p, ff, noise, raw, _, reg = registered_scene()
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(dataclasses.replace(
                               noise, band_gain=reg.variance_gain), spatial="bilateral"),
                           registration=reg)
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    b = NativeBackend(plan, cache_dir=native.cache_dir).run(raw, exposure_us=EXPOSURE)
    assert "register" in b.timings_ms
    np.testing.assert_array_equal(b.reflectance, a.reflectance)
    _maps_agree(a, b)


def test_native_quality_without_counts(native):
    """Float32 reflectance input: no counts, so sigma is NaN and no pixel is 'uncertain'."""
    p, sensor, ff, noise = _camera("snapshot16", 6, 8)
    refl, _ = _tissue(p.wavelength_array(), p.fwhm_nm, 48, 2)
    plan = ChainPlan.build(p.wavelength_array(), fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(noise, spatial="bilateral"))
    cube = refl.reshape(6, 8, -1)
    a = NumpyBackend(plan).run(cube, exposure_us=None)
    b = NativeBackend(plan, cache_dir=native.cache_dir).run(cube, exposure_us=None)
    assert np.all(np.isnan(b.maps["sto2_sigma"]))
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_allclose(b.maps["sto2"], a.maps["sto2"], atol=1e-4)


def test_native_spatial_step_equals_the_reference(native):
    """hsi_cpu_bilateral against edge.processing.spatial.bilateral_filter on 30x40 random
    values, variances, a 5-group guide with a step and 14 terms, invalid pixels included:
    the same float32 operations in the same order, so within 2e-6 (expf against NumPy's
    exp)."""
    from edge.backends.native_quality import NativeQuality
    from edge.processing.spatial import BilateralParams, bilateral_filter

    rng = np.random.default_rng(1)
    rows, cols = 30, 40
    values = rng.uniform(0.2, 0.9, (rows, cols)).astype(np.float32)
    var = rng.uniform(1e-4, 4e-3, (rows, cols)).astype(np.float32)
    guide = rng.normal(0, 0.03, (rows, cols, 5)).astype(np.float32)
    guide[:, cols // 2:] += 0.3
    terms = rng.normal(0, 1, (rows, cols, 14)).astype(np.float32)
    valid = rng.uniform(size=(rows, cols)) > 0.1
    values[0, 0] = np.nan
    p, _, ff, noise = _camera("snapshot16", 4, 5)
    plan = ChainPlan.build(p.wavelength_array(), fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(noise, spatial="bilateral"))
    nb = NativeBackend(plan, cache_dir=native.cache_dir)
    run = NativeQuality(plan, nb._lib)._filter(2)
    for params in (BilateralParams(), BilateralParams(radius=5, sigma_s=10 / 3, h=0.04)):
        want = bilateral_filter(values, var, guide, valid, params, terms)
        got = run(values, var, guide, valid, params, terms)
        for w, g in zip(want, got):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            np.testing.assert_allclose(g[np.isfinite(w)], w[np.isfinite(w)], rtol=2e-6,
                                       atol=2e-7)


@pytest.mark.parametrize("preset", ["snapshot16", "snapshot25"])
def test_native_temporal_matches_numpy_over_a_breathing_sequence(native, preset):
    """The temporal step (processing.temporal) over 8 frames of a breathing scene: the native
    backend holds its own state and gives the NumPy backend's maps (same tolerance as the
    single-frame test), and both restart on an exposure change."""
    from drivers.sim.scene import SurgicalScene
    from edge.processing.temporal import TemporalParams

    rows, cols = 24, 30
    p, sensor, ff, noise = _camera(preset, rows, cols)
    wl = p.wavelength_array()
    scene = SurgicalScene(wl, rows, cols, fwhm_nm=p.fwhm_nm, seed=4, pixel_mm=p.pixel_mm)
    plan = ChainPlan.build(wl, flatfield=ff, fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(noise, spatial="bilateral",
                                                temporal=TemporalParams("recursive", 4, 4.0)))
    a_b, n_b = NumpyBackend(plan), NativeBackend(plan, cache_dir=native.cache_dir)
    for i in range(8):
        # 0.6 s apart: the breathing shift changes between frames
        raw = sensor.expose(scene.render(0.6 * i).reflectance, EXPOSURE, 1.0, i)
        a = a_b.run(raw, exposure_us=EXPOSURE)
        b = n_b.run(raw, exposure_us=EXPOSURE)
        same = a.flags == b.flags
        assert same.mean() >= 0.99       # 'uncertain' at the threshold (float32 sums)
        for name in ("sto2", "sto2_sigma", "sto2_all"):
            x, y = a.maps[name][same], b.maps[name][same]
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
            fin = np.isfinite(x)
            np.testing.assert_allclose(y[fin], x[fin], rtol=1e-4, atol=1e-3,
                                       err_msg=f"{name} frame {i}")
    np.testing.assert_array_equal(a_b._temporal.n, n_b._quality._temporal.n)
    assert a_b._temporal.n.max() == 4
    b = n_b.run(raw, exposure_us=EXPOSURE / 2)
    assert n_b._quality._temporal.n.max() == 1


def test_native_low_blood_pixels_enter_no_average(native):
    """The spatial step's rule (tests/processing low_blood_patch): the native step
    (hsi_cpu_bilateral with finish_quality's mask) leaves the low-blood patch out of its
    neighbours' means and gives the patch its own raw values, as numpy does; maps within
    1e-5 of numpy's (noise-free counts: float32 sums in band order against sgemm's)."""
    plan, raw, patch = low_blood_patch()
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    b = NativeBackend(plan, cache_dir=native.cache_dir).run(raw, exposure_us=EXPOSURE)
    bare, _, _ = low_blood_patch(spatial="none")
    check_low_blood_rule(b.maps, b.flags, NumpyBackend(bare).run(raw, exposure_us=EXPOSURE),
                         patch)
    np.testing.assert_array_equal(b.flags, a.flags)
    for name in MAP_NAMES + QUALITY_MAP_NAMES:
        x, y = a.maps[name], b.maps[name]
        np.testing.assert_array_equal(np.isnan(y), np.isnan(x), err_msg=name)
        fin = np.isfinite(x)
        np.testing.assert_allclose(y[fin], x[fin], rtol=1e-5, atol=1e-6, err_msg=name)
