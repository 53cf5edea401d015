"""tools/measure_sto2_regressor.py: the quadratic ridge it measures against the default StO2
chain (issue 14) fits what it should, and predicts with the features it was trained on."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "measure_sto2_regressor.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("measure_sto2_regressor", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def _problem(n: int, seed: int):
    """Reflectance (n, 4) and a target exactly linear + quadratic in its absorbance ``A`` (in
    ``z = (A - 1.4) / 0.6``: any affine change of ``A``, as the tool's standardisation, keeps
    it in the span of the features)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.3, 2.5, size=(n, 4))
    refl = np.exp(-a).astype(np.float32)
    a32 = -np.log(refl.astype(np.float32))           # what the tool's features see
    z = (a32.astype(np.float64) - 1.4) / 0.6
    y = 0.5 + 0.08 * z[:, 0] - 0.05 * z[:, 2] + 0.03 * z[:, 1] * z[:, 3] - 0.02 * z[:, 3] ** 2
    return refl, y.astype(np.float64)


def test_features_are_absorbance_and_pairwise_products(tool):
    refl = np.array([[0.5, 0.25, 0.1]], np.float32)
    mean, std = np.array([0.5, 1.0, 2.0]), np.array([1.0, 2.0, 0.5])
    f = tool.features(refl, mean, std)
    z = (-np.log(refl[0].astype(np.float64)) - mean) / std
    want = np.r_[z, [z[i] * z[j] for i in range(3) for j in range(i, 3)]]
    assert f.shape == (1, 3 + 6)
    np.testing.assert_allclose(f[0], want, rtol=1e-5, atol=1e-6)


def test_ridge_recovers_a_linear_plus_quadratic_target(tool):
    """Noise-free target in the model's span: the validation split picks a small lambda and
    the fit predicts held-out spectra within 1e-5 (float32 features; measured 8e-8)."""
    refl, y = _problem(4000, 1)
    model = tool.fit_ridge(refl, y, seed=0)
    test_refl, test_y = _problem(1000, 2)
    pred = model.predict(test_refl, clip=False)
    assert np.max(np.abs(pred - test_y)) < 1e-5
    assert model.sigma < 1e-5
    assert model.lam <= tool.LAMBDA_GRID[2] * refl.shape[0]


def test_training_features_equal_prediction_features(tool):
    """predict() (the quadratic form z.w + z^T Q z) is the fitted linear model on the same
    features the fit used: for the same spectra it equals features(...) @ w + b (float32
    chunks: within 1e-5), and it leaves NaN for a pixel with a non-finite band and clips to
    [0, 1] by default."""
    refl, y = _problem(3000, 3)
    model = tool.fit_ridge(refl, y, seed=1)
    x = tool.features(refl, model.mean, model.std).astype(np.float64)
    direct = x @ model.weights + model.intercept
    cube = refl.reshape(30, 100, 4)
    got = model.predict(cube, clip=False)
    assert got.shape == (30, 100)
    np.testing.assert_allclose(got.reshape(-1), direct, rtol=0, atol=1e-5)
    bad = refl.copy()
    bad[5, 2] = np.nan
    bad[6] *= 1e-3                                   # very dark: a prediction beyond [0, 1]
    clipped = model.predict(bad)
    assert np.isnan(clipped[5]) and np.isfinite(np.delete(clipped, 5)).all()
    assert clipped[6] in (0.0, 1.0) and model.predict(bad, clip=False)[6] not in (0.0, 1.0)


def test_training_noise_follows_the_registration_gain(tool):
    """registered: each band's noise is one frame's times sqrt(g_b); mix: the first half so,
    the second half one frame's."""
    g = np.full(25, 0.25)
    kw = dict(n=2000, seed=5, band_gain=g)
    frame, truth = tool.training_set("snapshot25", noise="frame", **kw)
    reg, truth2 = tool.training_set("snapshot25", noise="registered", **kw)
    mix, _ = tool.training_set("snapshot25", noise="mix", **kw)
    np.testing.assert_array_equal(truth, truth2)
    from edge.processing.sto2 import simulate_spectra
    wl, fwhm = tool.preset_grid("snapshot25")
    clean, _ = simulate_spectra(wl, 2000, 5, ranges=tool.SCENE_RANGES, fwhm_nm=fwhm)
    d_frame = frame.astype(np.float64) - clean
    d_reg = reg.astype(np.float64) - clean
    assert np.std(d_frame) > 0
    np.testing.assert_allclose(d_reg, 0.5 * d_frame, rtol=0, atol=2e-7)
    np.testing.assert_array_equal(mix[:1000], reg[:1000])
    np.testing.assert_array_equal(mix[1000:], frame[1000:])


@pytest.mark.parametrize("argv,match", [
    (["--presets", "nope"], r"--presets: invalid choice: 'nope'"),
    (["--n-train", "-5"], r"--n-train: expected an integer >= 100, got -5"),
    (["--frames", "3", "--warmup", "3"], r"--warmup: expected fewer than --frames \(3\)"),
])
def test_bad_arguments_are_one_line(tool, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(match, err), err


def test_a_bad_camera_setting_is_one_line(tool, capsys):
    assert tool.main(["--presets", "snapshot25", "--seeds", "2", "--rows", "0",
                      "--n-train", "200", "--frames", "2", "--warmup", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "measure_sto2_regressor: rows: expected an integer 1-8192, got 0"
