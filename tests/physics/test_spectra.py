"""Chromophore tables and the shared absorbance basis (edge.physics.spectra)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataFormatError
from edge.physics import (
    BASELINE_TERMS,
    CHROMOPHORES,
    baseline_terms,
    chromophore_range,
    chromophore_spectra,
    load_table,
    molar_extinction,
)

# FACTS.md "Tissue optics": Prahl's ε (cm^-1/M), HbO2 / Hb.
SPOT_EPS = {
    500: (20932.8, 20862.0),
    560: (32613.2, 53788.0),
    660: (319.6, 3226.6),
    800: (816.0, 761.7),
    900: (1198.0, 761.8),
}


@pytest.mark.parametrize("wl", sorted(SPOT_EPS))
def test_molar_extinction_spot_values(wl):
    eps = molar_extinction(["HbO2", "Hb"], [wl])[:, 0]
    # FACTS.md rounds to 0.1 cm^-1/M (the table holds e.g. 3226.56 and 761.72).
    np.testing.assert_allclose(eps, SPOT_EPS[wl], atol=0.05, rtol=0)


def test_blood_mua_from_epsilon():
    wl = np.array([500.0, 560.0, 660.0, 800.0, 900.0])
    mua = chromophore_spectra(["HbO2", "Hb"], wl)
    expected = np.log(10) * np.array(list(SPOT_EPS.values())).T * 150 / 64500
    # FACTS.md spot values are rounded to 0.1 (<= 6e-5 relative).
    np.testing.assert_allclose(mua, expected, rtol=1e-4)


def test_blood_matches_simpa_cross_check():
    header, data = load_table("simpa_absorption.csv")
    wl = data[:, 0]
    for name in ("HbO2", "Hb"):
        ours = chromophore_spectra(name, wl)[0]
        theirs = data[:, header.index(name)]
        # simpa rounds to 3 significant digits; the two agree within 0.5 %.
        np.testing.assert_allclose(ours, theirs, rtol=5e-3)


def test_simpa_chromophores_are_copied_values():
    header, data = load_table("simpa_absorption.csv")
    wl = data[:, 0]
    assert wl[0] == 450 and wl[-1] == 1000 and np.all(np.diff(wl) == 1)
    mu = chromophore_spectra(["water", "fat", "melanin"], wl)
    for i, name in enumerate(["water", "fat", "melanin"]):
        np.testing.assert_array_equal(mu[i], data[:, header.index(name)])
    # Water has its 970 nm absorption peak well above its 800 nm value.
    w = chromophore_spectra("water", [800.0, 970.0])[0]
    assert w[1] > 10 * w[0]


def test_interpolation_is_linear_between_samples():
    wl = np.array([501.0])  # Prahl table has 500 and 502 nm
    eps = molar_extinction("HbO2", wl)[0, 0]
    e500, e502 = molar_extinction("HbO2", [500.0, 502.0])[0]
    assert eps == pytest.approx((e500 + e502) / 2, rel=1e-12)


def test_shapes_and_ranges():
    wl = np.linspace(500, 1000, 100)
    assert chromophore_spectra(CHROMOPHORES, wl).shape == (5, 100)
    assert chromophore_spectra("fat", wl).shape == (1, 100)
    assert chromophore_range("Hb") == (250.0, 1000.0)
    assert chromophore_range("water") == (450.0, 1000.0)
    assert np.all(chromophore_spectra(CHROMOPHORES, wl) > 0)


def test_unknown_chromophore_lists_allowed_names():
    with pytest.raises(DataFormatError, match=r"unknown name 'HbCO'; allowed: HbO2, Hb, water"):
        chromophore_spectra(["HbO2", "HbCO"], [600.0])


def test_wavelength_out_of_range_names_range():
    with pytest.raises(DataFormatError, match=r"440 nm is outside the simpa table of 'water'; "
                                              r"allowed 450-1000 nm"):
        chromophore_spectra(["HbO2", "water"], [440.0, 600.0])
    with pytest.raises(DataFormatError, match=r"1001 nm .*allowed 250-1000 nm"):
        chromophore_spectra("Hb", [1001.0])


def test_molar_extinction_rejects_non_blood():
    with pytest.raises(DataFormatError, match=r"unknown name 'water'; allowed: HbO2, Hb"):
        molar_extinction("water", [600.0])


def test_bad_wavelength_arrays():
    with pytest.raises(DataFormatError, match="must be finite"):
        chromophore_spectra("Hb", [np.nan])
    with pytest.raises(DataFormatError, match="1-D"):
        chromophore_spectra("Hb", np.ones((2, 2)) * 600)
    with pytest.raises(DataFormatError, match="empty sequence"):
        chromophore_spectra([], [600.0])


def test_baseline_terms_definition():
    wl = np.array([450.0, 500.0, 750.0, 1000.0])
    t = baseline_terms(wl, BASELINE_TERMS)
    assert t.shape == (3, 4)
    np.testing.assert_array_equal(t[0], 1.0)
    np.testing.assert_allclose(t[1], [-0.1, 0.0, 0.5, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(t[2], (wl / 500.0) ** -1.286, rtol=1e-15)
    assert baseline_terms(wl, "linear").shape == (1, 4)
    with pytest.raises(DataFormatError, match=r"unknown name 'quadratic'; allowed: constant, "
                                              r"linear, scatter"):
        baseline_terms(wl, ["constant", "quadratic"])
