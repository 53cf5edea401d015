"""Tissue forward model, Beer-Lambert spectra and band integration (edge.physics.reflectance)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataFormatError
from edge.physics import (
    band_integrate,
    band_weights,
    baseline_terms,
    beer_lambert_reflectance,
    chromophore_spectra,
    farrell_reflectance,
    internal_reflection_A,
    tissue_absorption,
    tissue_reflectance,
)

WL = np.linspace(500, 1000, 100)  # TIVITA grid (FACTS.md)
TISSUE = dict(sto2=0.7, blood_volume=0.03, water=0.7, fat=0.1)


def test_internal_reflection_parameter():
    # FACTS.md: n = 1.4 -> A ~= 3.25
    assert float(internal_reflection_A(1.4)) == pytest.approx(3.25, abs=0.005)


def test_farrell_closed_form_reference():
    # Hand evaluation of Farrell et al. 1992 for mua = 1, musp = 10 cm^-1, n = 1.4.
    a = 10 / 11
    A = float(internal_reflection_A(1.4))
    root = np.sqrt(3 * (1 - a))
    ref = a / 2 * np.exp(-root) * (1 + np.exp(-4 / 3 * A * root))
    assert float(farrell_reflectance(1.0, 10.0)) == pytest.approx(ref, rel=1e-14)
    # No absorption: every photon comes back.
    assert float(farrell_reflectance(0.0, 10.0)) == pytest.approx(1.0, rel=1e-15)


def test_reflectance_in_open_unit_interval():
    rng = np.random.default_rng(0)
    n = 200
    r = tissue_reflectance(WL, sto2=rng.uniform(0, 1, n), blood_volume=rng.uniform(0.005, 0.065, n),
                           water=rng.uniform(0.5, 0.8, n), fat=rng.uniform(0, 0.3, n),
                           scatter_a=rng.uniform(8.7, 29.1, n), scatter_b=rng.uniform(0.77, 1.8, n))
    assert r.shape == (n, 100) and r.dtype == np.float64
    assert np.all(r > 0) and np.all(r < 1)


def test_absorption_mix_matches_jacques_formula():
    mu = chromophore_spectra(["HbO2", "Hb", "water", "fat", "melanin"], WL)
    got = tissue_absorption(WL, sto2=0.6, blood_volume=0.04, water=0.7, fat=0.2, melanin=0.01)
    ref = 0.04 * (0.6 * mu[0] + 0.4 * mu[1]) + 0.7 * mu[2] + 0.2 * mu[3] + 0.01 * mu[4]
    np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_more_blood_lowers_reflectance_at_560():
    r = tissue_reflectance([560.0], sto2=0.7, blood_volume=[0.01, 0.03, 0.06], water=0.7, fat=0.1)
    assert r.shape == (3, 1)
    assert r[0, 0] > r[1, 0] > r[2, 0]


def test_lower_sto2_raises_absorption_and_lowers_reflectance_at_660():
    mua = tissue_absorption([660.0], sto2=[0.9, 0.5, 0.1], blood_volume=0.03, water=0.7, fat=0.1)
    assert mua[0, 0] < mua[1, 0] < mua[2, 0]
    r = tissue_reflectance([660.0], sto2=[0.9, 0.5, 0.1], blood_volume=0.03, water=0.7, fat=0.1)
    assert r[0, 0] > r[1, 0] > r[2, 0]


def test_broadcasting_shapes():
    s = np.linspace(0, 1, 4).reshape(4, 1)
    b = np.array([0.01, 0.02, 0.05])
    r = tissue_reflectance(WL, sto2=s, blood_volume=b, water=0.7, fat=0.1)
    assert r.shape == (4, 3, 100)
    # each element equals the scalar evaluation
    r21 = tissue_reflectance(WL, sto2=float(s[2, 0]), blood_volume=0.02, water=0.7, fat=0.1)
    np.testing.assert_allclose(r[2, 1], r21, rtol=1e-14)
    assert tissue_reflectance(WL, **TISSUE).shape == (100,)
    img = tissue_reflectance(WL[:5], sto2=np.full((2, 3), 0.7), blood_volume=0.03, water=0.7,
                             fat=0.1, scatter_a=np.full((2, 3), 20.0))
    assert img.shape == (2, 3, 5)


def test_band_integrated_reflectance_close_to_point_values_and_smoother():
    point = tissue_reflectance(WL, **TISSUE)
    banded = tissue_reflectance(WL, **TISSUE, fwhm_nm=10.0)
    assert banded.shape == point.shape
    # 10 nm bands change a smooth tissue spectrum by at most ~1 % reflectance.
    assert np.max(np.abs(banded - point)) < 0.015
    # band integration is a weighted mean: never beyond the fine-grid extrema
    assert banded.min() >= point.min() - 0.01 and banded.max() <= point.max() + 0.01


@pytest.mark.parametrize("param,value,match", [
    ("sto2", 1.2, r"sto2: expected a fraction in \[0, 1\], got 1.2"),
    ("blood_volume", -0.01, r"blood_volume: expected a volume fraction in \[0, 1\], got -0.01"),
    ("water", np.nan, r"water: expected a volume fraction in \[0, 1\], got nan"),
    ("fat", [0.1, 2.0], r"fat: expected a volume fraction in \[0, 1\], got 2.0"),
    ("melanin", 5, r"melanin: .*got 5.0"),
    ("scatter_a", 0.0, r"scatter_a: expected cm⁻¹ in \(0, 10000\], got 0.0"),
    ("n", 0.9, r"n: expected a refractive index in \[1, 2\], got 0.9"),
])
def test_parameter_validation(param, value, match):
    kwargs = dict(TISSUE)
    kwargs[param] = value
    with pytest.raises(DataFormatError, match=match):
        tissue_reflectance(WL, **kwargs)


def test_wavelength_outside_tissue_tables():
    with pytest.raises(DataFormatError, match=r"allowed 450-1000 nm"):
        tissue_reflectance([420.0, 500.0], **TISSUE)


def test_beer_lambert_exact_inversion_by_lstsq():
    rng = np.random.default_rng(1)
    names = ["HbO2", "Hb", "water", "fat"]
    n = 50
    conc = {k: rng.uniform(0.0, 0.05, n) for k in names}
    c0 = rng.uniform(-0.2, 0.5, n)
    c1 = rng.uniform(-0.3, 0.3, n)
    r = beer_lambert_reflectance(WL, conc, baseline=(c0, c1))
    assert r.shape == (n, 100)
    basis = np.concatenate([chromophore_spectra(names, WL),
                            baseline_terms(WL, ["constant", "linear"])])
    coef, *_ = np.linalg.lstsq(basis.T, -np.log(r).T, rcond=None)
    truth = np.stack([conc[k] for k in names] + [c0, c1])
    np.testing.assert_allclose(coef, truth, rtol=0, atol=1e-10)


def test_beer_lambert_formula_and_errors():
    r = beer_lambert_reflectance([500.0, 1000.0], {"Hb": 0.0}, baseline=(0.1, 0.2))
    np.testing.assert_allclose(r, np.exp(-np.array([0.1, 0.1 + 0.2])), rtol=1e-15)
    with pytest.raises(DataFormatError, match="non-empty mapping"):
        beer_lambert_reflectance(WL, {})
    with pytest.raises(DataFormatError, match=r"baseline: expected a pair"):
        beer_lambert_reflectance(WL, {"Hb": 0.01}, baseline=(0.1,))
    with pytest.raises(DataFormatError, match=r"unknown name 'blood'"):
        beer_lambert_reflectance(WL, {"blood": 0.01})


def test_band_weights_normalised_and_gaussian():
    fine = np.arange(450.0, 1000.5, 1.0)
    w = band_weights(fine, [600.0, 700.0], [10.0, 20.0])
    assert w.shape == (2, fine.size)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-14)
    # FWHM: response at centre ± FWHM/2 is half the peak
    i = np.searchsorted(fine, 600.0)
    assert w[0, i + 5] / w[0, i] == pytest.approx(0.5, rel=1e-12)
    # a flat spectrum stays flat; a linear one keeps its value at symmetric band centres
    spectra = np.stack([np.full(fine.size, 0.3), fine])
    out = band_integrate(fine, spectra, [600.0, 700.0], 10.0)
    np.testing.assert_allclose(out, [[0.3, 0.3], [600.0, 700.0]], rtol=1e-12)


def test_band_integrate_errors():
    fine = np.arange(500.0, 601.0)
    with pytest.raises(DataFormatError, match=r"centers_nm: 650 nm lies outside wavelengths_fine"):
        band_weights(fine, [650.0], 10.0)
    with pytest.raises(DataFormatError, match=r"fwhm_nm: expected nm in \(0, 500\], got -1.0"):
        band_weights(fine, [550.0], -1.0)
    with pytest.raises(DataFormatError, match=r"spectra: last axis must match"):
        band_integrate(fine, np.ones((3, 10)), [550.0], 10.0)
    with pytest.raises(DataFormatError, match="strictly ascending"):
        band_weights(fine[::-1], [550.0], 10.0)
