"""Motion-gated temporal step (issue 14, edge/processing/temporal.py): the blend against hand
computations on constructed sequences, gating, NaN pixels, config errors, and the NumPy
backend's run() against run_reference() over a sequence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.pipeline.config import load_app_config
from edge.processing.temporal import MEDIAN_CHI2_1, TemporalFilter, TemporalParams


def _guide(rows=8, cols=8, groups=3, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    return (0.5 + noise * rng.standard_normal((rows, cols, groups))).astype(np.float32)


def _feed_static(f, value, frames, rows=8, cols=8, key=None):
    """Feed ``frames`` frames of constant StO2 ``value`` (variance 0.01, every pixel ok, guide
    noise only); returns the all-true mask and the variance map."""
    ok = np.ones((rows, cols), bool)
    v = np.full((rows, cols), 0.01, np.float32)
    for i in range(frames):
        f.apply(np.full((rows, cols), value, np.float32), v, _guide(rows, cols, seed=i), ok,
                key=key)
    return ok, v


def test_static_scene_mean_and_variance_by_hand():
    """Static pixels: for n <= N the output is the plain mean of the frames and its variance
    v / n; after N the exponential average with weight 1/N, variance as stated."""
    p = TemporalParams("recursive", window=4, gate=50.0)
    f = TemporalFilter(p)
    rows, cols = 8, 8
    rng = np.random.default_rng(1)
    ok = np.ones((rows, cols), bool)
    xs, v = [], np.full((rows, cols), 0.04, np.float32)
    for i in range(7):
        x = rng.normal(0.6, 0.2, (rows, cols)).astype(np.float32)
        xs.append(x)
        out, var, _ = f.apply(x, v, _guide(seed=i), ok, key=1.0)
        n = min(i + 1, 4)
        if i < 4:
            np.testing.assert_allclose(out, np.mean(xs, axis=0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(var, 0.04 / n, rtol=1e-5)
    # by hand for frames 5-7: m <- m + (x - m)/4, V <- (3/4)^2 V + v/16
    m, vv = np.mean(xs[:4], axis=0), 0.04 / 4
    for x in xs[4:]:
        m = m + (x - m) / 4
        vv = (0.75 ** 2) * vv + 0.04 / 16
    np.testing.assert_allclose(out, m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, vv, rtol=1e-5)
    assert vv < 0.04 / 4 and vv > 0.04 / (2 * 4 - 1)      # tends to v / (2N - 1) = 0.0057
    assert np.all(f.n == 4)


def test_moved_edge_restarts_only_the_pixels_it_crossed():
    # gate 30: a static pixel's 3 * d2 (chi-squared, 3 dof) exceeds 90 with p ~ 1e-19, so
    # only the moved edge restarts; the edge's guide step is 50 noise sigmas
    f = TemporalFilter(TemporalParams("recursive", window=8, gate=30.0))
    rows, cols = 16, 16
    ok, v = _feed_static(f, 0.5, 4, rows, cols, key=1.0)
    g = _guide(rows, cols, seed=9)
    g[:, 10:] += 0.5               # a new organ slides under columns 10-15
    x = np.full((rows, cols), 0.5, np.float32)
    x[:, 10:] = 0.9
    out, var, _ = f.apply(x, v, g, ok, key=1.0)
    np.testing.assert_allclose(out[:, 10:], 0.9)          # restarted: this frame only
    np.testing.assert_allclose(var[:, 10:], 0.01)
    assert np.all(f.n[:, 10:] == 1)
    np.testing.assert_allclose(out[:, :10], 0.5)
    np.testing.assert_allclose(var[:, :10], 0.01 / 5, rtol=1e-5)
    assert np.all(f.n[:, :10] == 5)
    assert f.last_reset_fraction == pytest.approx(6 / 16)


def test_noise_scale_is_the_median_of_squared_guide_differences():
    f = TemporalFilter(TemporalParams("recursive"))
    rows, cols = 64, 64
    ok = np.ones((rows, cols), bool)
    x = np.zeros((rows, cols), np.float32)
    f.apply(x, None, _guide(rows, cols, seed=0, noise=0.02), ok)
    g1 = _guide(rows, cols, seed=1, noise=0.02)
    d2 = (g1 - f.guide) ** 2
    f.apply(x, None, g1, ok)
    np.testing.assert_allclose(f.last_scale, np.median(d2.reshape(-1, 3), axis=0)
                               / MEDIAN_CHI2_1, rtol=1e-5)
    # a difference of two N(0, 0.02^2) guides has variance 8e-4
    np.testing.assert_allclose(f.last_scale, 8e-4, rtol=0.1)


def test_nan_and_flagged_pixels_pass_through_and_restart():
    f = TemporalFilter(TemporalParams("recursive", window=8, gate=50.0))
    rows, cols = 8, 8
    ok, v = _feed_static(f, 0.4, 3, rows, cols)
    x = np.full((rows, cols), 0.7, np.float32)
    x[0, 0] = np.nan
    flagged = ok.copy()
    flagged[1, 1] = False
    out, var, _ = f.apply(x, v, _guide(seed=5), flagged)
    assert np.isnan(out[0, 0]) and out[1, 1] == np.float32(0.7)   # input kept
    assert f.n[0, 0] == 0 and f.n[1, 1] == 0
    np.testing.assert_allclose(out[2, 2], (3 * 0.4 + 0.7) / 4, rtol=1e-6)
    x2 = np.full((rows, cols), 0.1, np.float32)
    out2, _, _ = f.apply(x2, v, _guide(seed=6), ok)
    assert out2[0, 0] == np.float32(0.1) and out2[1, 1] == np.float32(0.1)  # fresh start
    assert f.n[0, 0] == 1


def test_terms_are_averaged_and_stream_key_restarts():
    f = TemporalFilter(TemporalParams("recursive", window=8, gate=50.0))
    ok = np.ones((8, 8), bool)
    t1 = np.full((8, 8, 2), 1.0, np.float32)
    t2 = np.full((8, 8, 2), 3.0, np.float32)
    x = np.zeros((8, 8), np.float32)
    f.apply(x, None, _guide(seed=0), ok, t1, key=8000.0)
    _, _, t = f.apply(x, None, _guide(seed=1), ok, t2, key=8000.0)
    np.testing.assert_allclose(t, 2.0)
    _, _, t = f.apply(x, None, _guide(seed=2), ok, t2, key=4000.0)   # exposure changed
    np.testing.assert_allclose(t, 3.0)
    assert np.all(f.n == 1)
    f.reset()
    _, _, t = f.apply(x, None, _guide(seed=3), ok, t1, key=4000.0)
    np.testing.assert_allclose(t, 1.0)


def test_params_refuse_bad_values():
    with pytest.raises(ConfigError, match=r"processing.temporal.method: expected one of none, "
                                          r"recursive, got 'kalman'"):
        TemporalParams("kalman")
    with pytest.raises(ConfigError, match=r"processing.temporal.window: expected an integer "
                                          r"in \[2, 64\], got 1"):
        TemporalParams("recursive", window=1)
    with pytest.raises(ConfigError, match=r"processing.temporal.gate: expected a number in "
                                          r"\(0, 100\], got nan"):
        TemporalParams("recursive", gate=float("nan"))


def test_config_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("processing:\n  temporal:\n    method: recursive\n    window: 12\n")
    cfg = load_app_config(str(f))
    assert cfg.processing.temporal.method == "recursive"
    assert cfg.processing.temporal.window == 12 and cfg.processing.temporal.gate == 4.0
    f.write_text("processing:\n  temporal:\n    method: kalman\n")
    with pytest.raises(ConfigError, match=r"processing.temporal.method: expected one of "
                                          r"'none', 'recursive', got 'kalman'"):
        load_app_config(str(f))
    f.write_text("processing:\n  temporal:\n    window: 100\n")
    with pytest.raises(ConfigError, match=r"processing.temporal.window: expected an integer "
                                          r"in \[2, 64\], got 100"):
        load_app_config(str(f))


def test_numpy_backend_run_matches_reference_over_a_sequence():
    from test_quality import EXPOSURE, _camera

    from edge.backends.numpy_backend import NumpyBackend
    from edge.processing.plan import ChainPlan
    from edge.processing.quality import QualityRules
    from drivers.sim.scene import SurgicalScene

    p, sensor, ff, noise = _camera("snapshot25", 24, 32)
    wl = p.wavelength_array()
    scene = SurgicalScene(wl, 24, 32, fwhm_nm=p.fwhm_nm, seed=3, pixel_mm=p.pixel_mm)
    rules = QualityRules(noise, spatial="bilateral",
                         temporal=TemporalParams("recursive", 8, 4.0))
    plan = ChainPlan.build(wl, flatfield=ff, fwhm_nm=p.fwhm_nm, quality=rules)
    b = NumpyBackend(plan)
    plain = NumpyBackend(ChainPlan.build(wl, flatfield=ff, fwhm_nm=p.fwhm_nm,
                                         quality=dataclasses.replace(rules,
                                                                     temporal=TemporalParams())))
    sig = []
    for i in range(6):
        raw = sensor.expose(scene.render(i / 25.0).reflectance, EXPOSURE, 1.0, i)
        a, r = b.run(raw, exposure_us=EXPOSURE), b.run_reference(raw, exposure_us=EXPOSURE)
        for name in ("sto2", "sto2_sigma", "sto2_all"):
            np.testing.assert_allclose(a.maps[name], r.maps[name], rtol=2e-4, atol=2e-5,
                                       equal_nan=True, err_msg=name)
        np.testing.assert_array_equal(a.flags, r.flags)
        c = plain.run(raw, exposure_us=EXPOSURE)
        ok = np.isfinite(a.maps["sto2_sigma"]) & (c.maps["sto2_sigma"] > 0)   # 0: flat table
        sig.append(np.median(a.maps["sto2_sigma"][ok] / c.maps["sto2_sigma"][ok]))
    # the sequence is static for the first frames (breathing starts at a sine's zero): the
    # noise part of sigma shrinks about as 1/sqrt(frames averaged)
    assert sig[0] == pytest.approx(1.0, abs=1e-6)
    assert sig[3] < 0.6
