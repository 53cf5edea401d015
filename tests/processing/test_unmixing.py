"""Unmixing reference: exact recovery of Beer-Lambert spectra, maps, validation."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataFormatError
from edge.physics import baseline_terms, beer_lambert_reflectance, chromophore_spectra
from edge.processing import Unmixer, absorbance

WL = np.linspace(500, 1000, 100)


def test_absorbance_formula_and_nan():
    r = np.array([0.5, 1.0, 2.0, 0.0, -1.0, np.nan, 1e-5], np.float32)
    a = absorbance(r, eps=1e-4)
    assert a.dtype == np.float32
    ref = -np.log(np.maximum([0.5, 1.0, 2.0, 0.0, -1.0, 1e-5], 1e-4))
    np.testing.assert_allclose(np.delete(a, 5), ref, rtol=1e-6)  # float32 log
    assert np.isnan(a[5])
    with pytest.raises(DataFormatError, match="eps: expected a positive number"):
        absorbance(r, eps=0)


def test_basis_and_pinv_layout():
    u = Unmixer(WL)
    assert u.components == ("HbO2", "Hb", "water", "fat", "constant", "linear")
    e = np.concatenate([chromophore_spectra(["HbO2", "Hb", "water", "fat"], WL),
                        baseline_terms(WL, ["constant", "linear"])]).T
    np.testing.assert_allclose(u.basis, e, rtol=0)
    assert u.pinv.dtype == np.float32 and u.pinv.shape == (6, 100)
    np.testing.assert_allclose(u.pinv, np.linalg.pinv(e), rtol=1e-6, atol=1e-9)


def test_beer_lambert_recovered_exactly():
    rng = np.random.default_rng(1)
    c = {"HbO2": rng.uniform(0, 0.005, 50), "Hb": rng.uniform(0, 0.005, 50),
         "water": rng.uniform(0, 0.5, 50), "fat": rng.uniform(0, 0.3, 50)}
    base = (rng.uniform(0, 0.5, 50), rng.uniform(-0.2, 0.2, 50))
    r = beer_lambert_reflectance(WL, c, base)
    got = Unmixer(WL).unmix(r.astype(np.float32))
    truth = np.stack([c["HbO2"], c["Hb"], c["water"], c["fat"], *base], axis=1)
    # float32 absorbance and pinv: absolute error ~1e-6 relative to the column scales
    # float32 absorbance and float32 pinv: errors ~1e-7 of A, i.e. ~1e-8..1e-6 in c
    np.testing.assert_allclose(got[:, :2], truth[:, :2], atol=1e-6)
    np.testing.assert_allclose(got, truth, atol=2e-5)
    assert np.abs(got[:, :2] - truth[:, :2]).max() < 1e-6
    m = Unmixer(WL).maps(r)
    np.testing.assert_allclose(m["sto2_raw"], c["HbO2"] / (c["HbO2"] + c["Hb"]), atol=2e-3)
    np.testing.assert_allclose(m["thb"], c["HbO2"] + c["Hb"], atol=2e-6)


def test_unmix_matches_lstsq_on_random_data():
    rng = np.random.default_rng(2)
    r = rng.uniform(0.05, 0.9, (4, 5, 100)).astype(np.float32)
    u = Unmixer(WL)
    ref = np.linalg.lstsq(u.basis, -np.log(r.astype(np.float64)).reshape(-1, 100).T,
                          rcond=None)[0].T.reshape(4, 5, 6)
    np.testing.assert_allclose(u.unmix(r), ref, rtol=1e-4, atol=1e-5)


def test_maps_invalid_pixels_are_nan_not_crash():
    wl = WL
    r = beer_lambert_reflectance(wl, {"HbO2": 0.02, "Hb": 0.01, "water": 0.3, "fat": 0.1})
    cube = np.tile(r.astype(np.float32), (2, 3, 1))
    cube[0, 0, 5] = np.nan
    cube[0, 1, 7] = np.inf
    cube[0, 2] = 0.0                    # all-zero pixel: A constant -> thb 0 -> NaN
    cube[1, 0, :3] = -0.5               # bands at the absorbance floor: out of domain -> NaN
    m = Unmixer(wl).maps(cube)
    assert np.isnan(m["thb"][0]).all() and np.isnan(m["sto2_raw"][0]).all()
    assert np.isnan(m["thb"][1, 0]) and np.isnan(m["sto2_raw"][1, 0])
    assert np.isfinite(m["thb"][1, 1:]).all()
    np.testing.assert_allclose(m["sto2_raw"][1, 1:], 2 / 3, atol=1e-3)


def test_band_at_reflectance_floor_is_invalid_not_silently_wrong():
    """One band with R <= eps (sensor noise on a dark pixel) used to be floored to A = -ln(eps)
    = 9.2 and shifted StO2 by 16-50 points with no flag; now the pixel is NaN."""
    from edge.processing.sto2 import simulate_spectra
    from edge.processing.unmixing import floored

    wl = np.linspace(500, 1000, 100)
    refl, _ = simulate_spectra(wl, 50, seed=3, fwhm_nm=10.0)
    u = Unmixer(wl, fwhm_nm=10.0)
    ok = u.maps(refl)["sto2_raw"]
    assert np.isfinite(ok).all()
    for band, value in ((0, -0.001), (50, 0.0), (99, np.float32(u.eps))):
        bad = refl.copy()
        bad[:, band] = value
        m = u.maps(bad)
        assert np.isnan(m["sto2_raw"]).all() and np.isnan(m["thb"]).all()
    # Just above the floor is still in the domain; NaN does not count as floored.
    above = refl.copy()
    above[:, 10] = np.nextafter(np.float32(u.eps), np.float32(1))
    assert not floored(above, u.eps).any()
    assert not floored(np.array([np.nan, 0.5], np.float32), u.eps)
    assert floored(np.array([0.5, -1.0], np.float32), u.eps)


def test_fwhm_basis_is_band_average():
    u = Unmixer(WL, fwhm_nm=10.0)
    u0 = Unmixer(WL)
    # Band averaging smooths the spectra: same scale, different values near peaks.
    assert np.allclose(u.basis[:, 4:], u0.basis[:, 4:])
    rel = np.abs(u.basis[:, :2] - u0.basis[:, :2]).max() / np.abs(u0.basis[:, :2]).max()
    assert 1e-3 < rel < 0.2


@pytest.mark.parametrize("kwargs, match", [
    ({"chromophores": ("HbO2", "Hb", "blood")}, "chromophores: unknown name 'blood'"),
    ({"baseline": ("cubic",)}, "baseline: unknown name 'cubic'"),
    ({"chromophores": ("HbO2", "water")}, "must include 'HbO2' and 'Hb'"),
    ({"chromophores": ("HbO2", "Hb", "Hb")}, "names must be unique"),
])
def test_validation(kwargs, match):
    with pytest.raises(DataFormatError, match=match):
        Unmixer(WL, **kwargs)


def test_too_few_bands_and_degenerate_basis():
    with pytest.raises(DataFormatError, match="need at least 6 bands, got 4"):
        Unmixer(np.linspace(500, 900, 4))
    # 460-600 nm: water and fat are flat there, collinear with the baseline
    with pytest.raises(DataFormatError, match="nearly\\) degenerate.*condition number"):
        Unmixer(np.linspace(460, 600, 16))
    # melanin table starts at 450 nm
    with pytest.raises(DataFormatError, match="outside"):
        Unmixer(np.linspace(420, 600, 16), chromophores=("HbO2", "Hb", "melanin"))


def test_band_count_mismatch():
    with pytest.raises(DataFormatError, match="expected 100 bands .* got shape \\(3, 99\\)"):
        Unmixer(WL).unmix(np.ones((3, 99), np.float32))


def test_from_basis():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    u = Unmixer.from_basis([500, 600, 700], e, ("HbO2", "Hb"))
    a = np.array([0.2, 0.1, 0.3])
    np.testing.assert_allclose(u.unmix(np.exp(-a)), [0.2, 0.1], atol=1e-6)
    with pytest.raises(DataFormatError, match="basis: expected shape"):
        Unmixer.from_basis([500, 600], e, ("HbO2", "Hb"))


# ---- the "pathlength" basis (linearised diffusion model) -----------------------------------
def test_recommended_basis_by_grid():
    from edge.processing.unmixing import recommended_basis, recommended_components

    assert recommended_basis(np.linspace(665, 960, 25)) == "pathlength"
    assert recommended_basis(np.linspace(500, 1000, 100)) == "extinction"
    assert recommended_basis(np.linspace(460, 600, 16)) == "extinction"
    assert recommended_components(np.linspace(665, 960, 25)) == (
        ("HbO2", "Hb", "water", "fat"), ("constant", "scatter"))
    assert Unmixer(np.linspace(665, 960, 25), ("HbO2", "Hb"), ()).basis_kind == "pathlength"
    assert Unmixer(np.linspace(500, 1000, 100)).basis_kind == "extinction"


def test_pathlength_basis_recovers_blood_near_the_reference_tissue():
    """The columns are dA/dc of the forward model at REFERENCE_TISSUE: diffusion-model
    spectra close to it unmix to the true oxygenated/deoxygenated blood volume fractions
    (first-order accurate: the error shrinks with the distance squared)."""
    from edge.physics import tissue_reflectance
    from edge.processing.unmixing import REFERENCE_TISSUE

    wl = np.linspace(665, 960, 25)
    um = Unmixer(wl, ("HbO2", "Hb", "water", "fat"), (), fwhm_nm=20.0, basis="pathlength")
    ref = dict(REFERENCE_TISSUE)
    c_ref = um.unmix(tissue_reflectance(wl, fwhm_nm=20.0, **ref).astype(np.float64))
    errs = []
    for d in (0.004, 0.002):
        p = {**ref, "blood_volume": ref["blood_volume"] + d}
        c = um.unmix(tissue_reflectance(wl, fwhm_nm=20.0, **p).astype(np.float64))
        true_oxy, true_deoxy = d * ref["sto2"], d * (1 - ref["sto2"])
        errs.append(abs((c[0] - c_ref[0]) - true_oxy) + abs((c[1] - c_ref[1]) - true_deoxy))
        assert errs[-1] < 0.1 * d, (d, c - c_ref)
    assert errs[1] < 0.5 * errs[0]            # second-order error: halving d quarters it


def test_bad_basis_kind_names_the_choices():
    with pytest.raises(DataFormatError, match=r"basis: expected one of extinction, pathlength "
                                              r"or None, got 'mbll'"):
        Unmixer(np.linspace(500, 1000, 100), basis="mbll")
