"""Calibrated StO2: accuracy on held-out simulated spectra, table properties, PAVA."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import CalibrationError
from edge.processing import Sto2Calibration, estimate_sto2, evaluate_sto2
from edge.processing.sto2 import isotonic_regression, simulate_spectra

TIVITA = np.linspace(500, 1000, 100)


def test_isotonic_regression_against_brute_force():
    y = np.array([1.0, 3.0, 2.0, 4.0, 3.5, 3.0, 6.0])
    fit = isotonic_regression(y)
    # Known PAVA solution: (3,2) -> 2.5; (4,3.5,3) -> 3.5
    np.testing.assert_allclose(fit, [1, 2.5, 2.5, 3.5, 3.5, 3.5, 6], rtol=1e-12)
    rng = np.random.default_rng(0)
    y = rng.standard_normal(200).cumsum() * 0.1 + rng.standard_normal(200)
    fit = isotonic_regression(y)
    assert np.all(np.diff(fit) >= 0)
    assert abs(fit.sum() - y.sum()) < 1e-9   # PAVA preserves the mean


@pytest.mark.parametrize("name", ["tivita", "snapshot16", "snapshot25"])
def test_shipped_tables_monotone_uniform(name):
    cal = Sto2Calibration.shipped()[name]
    assert cal.table_x.dtype == np.float32 and cal.table_y.dtype == np.float32
    assert cal.table_x.size == 256
    assert np.all(np.diff(cal.table_y) >= 0)
    assert 0 <= cal.table_y.min() and cal.table_y.max() <= 1
    np.testing.assert_allclose(np.diff(cal.table_x), cal.dx, rtol=1e-3)
    assert cal.meta["seed"] == "0" and cal.meta["version"] == "1"


# Target (issue 3): MAE <= 3 points on spectra not used for fitting, for every camera preset.
# snapshot25 (665-960 nm, no visible bands) reaches it with the "pathlength" basis (2.2
# points; 3.3 with the extinction basis, checked below).
@pytest.mark.parametrize("wl, fwhm, mae_max", [
    (TIVITA, 10.0, 3.0),
    (np.linspace(460, 600, 16), 15.0, 3.0),
    (np.linspace(665, 960, 25), 20.0, 3.0),
])
def test_mae_on_held_out_spectra(wl, fwhm, mae_max):
    ev = evaluate_sto2(wl, fwhm_nm=fwhm, n=2000, seed=777)
    assert ev["mae"] <= mae_max, ev
    assert abs(ev["bias"]) < 1.0, ev
    assert ev["mae_raw"] > ev["mae"]
    assert ev["invalid_fraction"] == 0.0


def test_apply_is_uniform_linear_interpolation():
    cal = Sto2Calibration(np.linspace(-0.5, 1.5, 5), [0.0, 0.1, 0.5, 0.9, 1.0])
    x = np.array([-1.0, -0.5, 0.0, 0.25, 1.5, 2.0, np.nan])
    np.testing.assert_allclose(cal.apply(x)[:-1], np.interp(x[:-1], cal.table_x, cal.table_y),
                               atol=1e-7)
    assert np.isnan(cal.apply(x)[-1])


def test_table_validation():
    with pytest.raises(CalibrationError, match="uniformly spaced"):
        Sto2Calibration([0, 0.1, 0.5], [0, 0.5, 1])
    with pytest.raises(CalibrationError, match="non-decreasing"):
        Sto2Calibration([0, 0.5, 1], [0, 0.6, 0.5])


def test_for_grid_fits_unknown_grid_and_caches(caplog):
    wl = np.linspace(505, 995, 60)
    with caplog.at_level("WARNING"):
        cal = Sto2Calibration.for_grid(wl)
    assert "no shipped StO2 calibration" in caplog.text
    assert Sto2Calibration.for_grid(wl) is cal
    assert np.all(np.diff(cal.table_y) >= 0)


def test_estimate_sto2_shape_nan_and_range():
    refl, truth = simulate_spectra(TIVITA, 64, seed=99, fwhm_nm=10.0)
    cube = refl.reshape(8, 8, 100).copy()
    cube[0, 0, 3] = np.nan
    est = estimate_sto2(cube, TIVITA, fwhm_nm=10.0)
    assert est.shape == (8, 8) and est.dtype == np.float32
    assert np.isnan(est[0, 0]) and np.isfinite(est.ravel()[1:]).all()
    assert np.all((est[np.isfinite(est)] >= 0) & (est[np.isfinite(est)] <= 1))
    assert np.mean(np.abs(est.ravel()[1:] - truth[1:])) < 0.05


def test_csv_roundtrip(tmp_path):
    cal = Sto2Calibration.shipped()["tivita"]
    cal.to_csv(tmp_path / "t.csv", ["test"])
    back = Sto2Calibration.from_csv(tmp_path / "t.csv")
    np.testing.assert_array_equal(back.table_y, cal.table_y)
    assert back.meta["key"] == cal.meta["key"]
    (tmp_path / "bad.csv").write_text("sto2_raw,sto2\n0,x\n")
    with pytest.raises(CalibrationError, match="bad table row"):
        Sto2Calibration.from_csv(tmp_path / "bad.csv")


def test_noise_scale_and_spatial_radius_headers():
    """The two per-table choices are read from the header; a bad value is one error naming
    the header, what it holds and what is allowed; absent means None (an on-demand fit)."""
    base = Sto2Calibration.shipped()["snapshot16"]

    def with_meta(**meta):
        return base.replace(meta={**base.meta, **meta})

    cal = with_meta(noise_scale="0.12", spatial_radius="5")
    assert (cal.noise_scale, cal.spatial_radius) == (0.12, 5)
    bare = base.replace(meta={})
    assert (bare.noise_scale, bare.spatial_radius) == (None, None)
    with pytest.raises(CalibrationError, match=r"StO2 table: spatial_radius header must be a "
                                               r"number in \[1, 8\], got '9'"):
        with_meta(spatial_radius="9").spatial_radius
    with pytest.raises(CalibrationError, match=r"spatial_radius header must be an integer in "
                                               r"\[1, 8\], got '2.5'"):
        with_meta(spatial_radius="2.5").spatial_radius
    with pytest.raises(CalibrationError, match=r"noise_scale header must be a number in "
                                               r"\[0, 1000\], got 'quarter'"):
        with_meta(noise_scale="quarter").noise_scale


def test_preset_grids_use_shipped_tables():
    for wl, fwhm in ((TIVITA, 10.0), (np.linspace(460, 600, 16), 15.0),
                     (np.linspace(665, 960, 25), 20.0)):
        assert Sto2Calibration.for_grid(wl, fwhm_nm=fwhm).meta["n_spectra"] in ("20000", "60000")


def test_nir_grid_calibrates_better_with_the_pathlength_basis():
    """Why recommended_basis picks "pathlength" on a near-infrared-only grid: on the same
    held-out spectra the extinction basis (its best components) misses the 3-point target."""
    wl = np.linspace(665, 960, 25)
    common = dict(fwhm_nm=20.0, n=2000, seed=778)
    path = evaluate_sto2(wl, **common)
    ext = evaluate_sto2(wl, chromophores=("HbO2", "Hb", "water"), baseline=("scatter",),
                        basis="extinction", **common)
    assert path["mae"] <= 3.0 < ext["mae"], (path, ext)
    assert Sto2Calibration.shipped()["snapshot25"].meta["basis"] == "pathlength"
