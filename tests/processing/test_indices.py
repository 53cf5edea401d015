"""TIVITA-style indices against a direct loop implementation of the FACTS.md formulas."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge.errors import DataFormatError
from edge.processing import IndexParams, tivita_indices
from edge.processing.indices import savgol_coeffs, savgol_matrix

WL = np.linspace(500, 1000, 100)


def test_savgol_coefficients_known_values():
    # Classic table (Savitzky & Golay 1964): 2nd derivative, 5 points, cubic = [2,-1,-2,-1,2]/7
    np.testing.assert_allclose(savgol_coeffs(5, 3, 2), np.array([2, -1, -2, -1, 2]) / 7,
                               atol=1e-12)


def test_savgol_matrix_exact_on_cubics():
    x = np.arange(12, dtype=float)
    y = 0.3 * x**3 - 2 * x**2 + x - 5
    d2 = y @ savgol_matrix(12)
    np.testing.assert_allclose(d2, 1.8 * x - 4, atol=1e-9)   # exact, edges included


def _direct(r, wl, p=IndexParams()):
    a = -np.log(np.maximum(r.astype(np.float64), 1e-4))
    c = np.array([2, -1, -2, -1, 2]) / 7.0

    def d2(i):
        return float(np.dot(a[i - 2:i + 3], c))

    def mean(lo, hi):
        return a[(wl >= lo) & (wl <= hi)].mean()
    r1 = min(d2(i) for i in np.flatnonzero((wl >= 570) & (wl <= 590)))
    r2 = min(d2(i) for i in np.flatnonzero((wl >= 740) & (wl <= 780)))
    sto2 = (r1 / 1) / (r1 / 1 + r2 / 0.15)
    nir = mean(825, 925) / mean(655, 735) / 1.9
    thi = (mean(530, 590) / mean(785, 825) - 1.3) / 1.7
    twi = (mean(955, 980) / mean(880, 900) - 0.4) / 1.6
    return {k: float(np.clip(v, 0, 1)) for k, v in
            dict(sto2_index=sto2, nir=nir, thi=thi, twi=twi).items()}


def test_indices_match_direct_formula():
    from edge.processing.sto2 import simulate_spectra
    refl, _ = simulate_spectra(WL, 12, seed=5, fwhm_nm=10.0)
    got = tivita_indices(refl, WL)
    for i in range(12):
        ref = _direct(refl[i], WL)
        for k, v in ref.items():
            assert got[k].dtype == np.float32
            np.testing.assert_allclose(got[k][i], v, rtol=1e-5, atol=1e-6, err_msg=k)
    # the simulated tissue gives non-trivial (not all clipped) values for most indices
    assert 0 < np.nanmean(got["sto2_index"]) < 1   # (THI saturates at 1 on model spectra)


def test_invalid_pixels_and_missing_windows(caplog):
    r = np.full((2, 100), 0.4, np.float32)
    r[1, 10] = np.nan
    out = tivita_indices(r, WL)
    assert all(np.isnan(v[1]) for v in out.values())
    # a grid no other test uses: the warning is issued once per grid and process
    wl16 = np.linspace(461.5, 600.5, 16)
    with caplog.at_level(logging.WARNING):
        out = tivita_indices(np.full((3, 16), 0.3, np.float32), wl16)
        tivita_indices(np.full((3, 16), 0.3, np.float32), wl16)
    assert np.isnan(out["nir"]).all() and np.isnan(out["twi"]).all()
    assert caplog.text.count("index nir") == 1   # warned once per grid


def test_errors():
    with pytest.raises(DataFormatError, match="expected 100 bands"):
        tivita_indices(np.ones((2, 50)), WL)
    with pytest.raises(DataFormatError, match="sg_window/sg_order"):
        IndexParams(sg_window=4)
    with pytest.raises(DataFormatError, match="nir_num_nm: expected \\(lo, hi\\)"):
        IndexParams(nir_num_nm=(925.0, 825.0))


def test_index_terms_never_build_a_dense_bands_by_bands_matrix():
    """Issue 15 item 17: the filter is per-band taps; 3000 bands once took a 72 MB matrix."""
    import tracemalloc

    from edge.processing.indices import index_linear_terms, savgol_taps

    wl = np.linspace(400.0, 1000.0, 3000)
    tracemalloc.start()
    mat, layout = index_linear_terms(wl)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n_d2 = layout["r2"].stop
    assert peak < 3000 * (n_d2 + 8) * 8 * 4      # a few copies of the result, not 3000 x 3000
    # the taps give exactly the columns of the dense operator on a small grid
    starts, taps = savgol_taps(12)
    dense = savgol_matrix(12)
    for i in range(12):
        np.testing.assert_array_equal(dense[starts[i]:starts[i] + 5, i], taps[i])
