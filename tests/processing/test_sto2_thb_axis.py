"""StO2 tables with a THb axis (issue 14): the raw -> true curve per blood volume.

The arithmetic is the contract every backend implements (``sto2_calibrate`` in
``cuda_kernels/pixel_math.cuh``); these tests hold the NumPy reference to a plain float64
bilinear interpolation, the CSV format, the slope used by sigma, the fit, and the error
messages a user can hit with a hand-edited table.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import CalibrationError, ConfigError
from edge.processing.quality import calibration_slope, row_slopes
from edge.processing.sto2 import (MAX_THB_ROWS, Sto2Calibration, simulate_spectra,
                                  table_2d_from_pairs, table_from_pairs)
from edge.processing.unmixing import Unmixer, recommended_basis, recommended_components


def _table(rows: int = 4, knots: int = 9) -> Sto2Calibration:
    x = np.linspace(-0.2, 1.2, knots)
    base = np.clip(np.linspace(0.0, 1.0, knots), 0, 1)
    y = np.stack([np.clip(base ** (1.0 + 0.3 * j), 0, 1) for j in range(rows)])
    return Sto2Calibration(x, y, {"note": "test"}, thb_axis=(0.1, 0.05))


def _reference(cal: Sto2Calibration, s, thb) -> np.ndarray:
    """Bilinear interpolation in float64, clamped on both axes."""
    x = np.asarray(cal.table_x, np.float64)
    grid = cal.table_grid.astype(np.float64)
    q = np.sqrt(np.maximum(thb, 0.0))
    axis = cal.thb_x0 + cal.thb_dx * np.arange(cal.n_rows)
    rows = np.stack([np.interp(s, x, g) for g in grid])          # (R, n)
    out = np.array([np.interp(qq, axis, rows[:, k]) for k, qq in enumerate(q)])
    return np.where(np.isfinite(s) & np.isfinite(thb), out, np.nan)


def test_apply_is_bilinear_and_clamps_on_both_axes():
    cal = _table()
    rng = np.random.default_rng(3)
    s = np.concatenate([rng.uniform(-0.5, 1.5, 200), [-1.0, 2.0, 0.3, 0.3, np.nan, 0.4]])
    thb = np.concatenate([rng.uniform(0.0, 0.2, 200), [0.02, 0.02, -0.5, 1.0, 0.02, np.nan]])
    got = cal.apply(s, thb)
    want = _reference(cal, s.astype(np.float32).astype(np.float64),
                      thb.astype(np.float32).astype(np.float64))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)       # float32 steps vs float64
    assert np.isnan(got[-2]) and np.isnan(got[-1])
    # thb <= 0 reads row 0, above the axis the last row
    np.testing.assert_allclose(got[202], np.interp(0.3, cal.table_x, cal.table_grid[0]),
                               atol=1e-6)
    np.testing.assert_allclose(got[203], np.interp(0.3, cal.table_x, cal.table_grid[-1]),
                               atol=1e-6)


def test_two_dimensional_table_needs_thb():
    with pytest.raises(CalibrationError, match="thb: this StO2 table has a THb axis"):
        _table().apply(np.array([0.5]))
    with pytest.raises(ConfigError, match="thb: this StO2 table has a THb axis"):
        calibration_slope(_table(), np.array([0.5]))


def test_one_row_table_ignores_thb():
    cal = Sto2Calibration(np.linspace(0, 1, 5), [0.0, 0.2, 0.5, 0.8, 1.0])
    s = np.array([0.1, 0.6, np.nan])
    np.testing.assert_array_equal(cal.apply(s), cal.apply(s, np.array([np.nan, -1.0, 0.1])))
    assert cal.n_rows == 1 and cal.table_grid.shape == (1, 5)
    assert (cal.thb_x0, cal.thb_dx) == (0.0, 1.0)


@pytest.mark.parametrize("y, axis, match", [
    (np.zeros((1, 9)), (0.1, 0.05), "needs 2..16 rows"),
    (np.zeros((MAX_THB_ROWS + 1, 9)), (0.1, 0.05), "needs 2..16 rows"),
    (np.zeros((3, 9)), None, "thb_axis: expected"),
    (np.zeros(9), (0.1, 0.05), "thb_axis: expected"),
    (np.zeros((3, 9)), (0.1, 0.0), "a step > 0"),
    (np.zeros((3, 9)), (np.nan, 0.1), "a first value >= 0"),
    (np.stack([np.linspace(0, 1, 9), np.linspace(1, 0, 9)]), (0.1, 0.05), "non-decreasing"),
    (np.zeros((3, 8)), (0.1, 0.05), "table_y \\(K,\\) or \\(rows, K\\)"),
])
def test_table_validation_names_the_parameter(y, axis, match):
    with pytest.raises(CalibrationError, match=match):
        Sto2Calibration(np.linspace(0, 1, 9), y, thb_axis=axis)


def test_csv_round_trip_is_exact(tmp_path):
    cal = _table(rows=5)
    path = tmp_path / "sto2_test.csv"
    cal.to_csv(path, header=["a two-dimensional test table"])
    text = path.read_text()
    assert "# thb_axis: sqrt 0.100000001 0.0500000007" in text
    assert "sto2_raw,sto2[0],sto2[1],sto2[2],sto2[3],sto2[4]" in text
    back = Sto2Calibration.from_csv(path)
    np.testing.assert_array_equal(back.table_grid, cal.table_grid)
    np.testing.assert_array_equal(back.table_x, cal.table_x)
    assert (back.thb_x0, back.thb_dx) == (cal.thb_x0, cal.thb_dx)
    assert back.meta == {"note": "test"}
    s, t = np.array([0.2, 0.7]), np.array([0.03, 0.09])
    np.testing.assert_array_equal(back.apply(s, t), cal.apply(s, t))


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("# thb_axis: sqrt", "# thb_axis: log"), "thb_axis header: expected"),
    (lambda t: t.replace("# thb_axis: sqrt 0.100000001", "# thb_axis: sqrt x"),
     "thb_axis header: expected"),
    (lambda t: t.rsplit(",", 1)[0] + "\n", "of equal length"),
    (lambda t: t.replace("# thb_axis: sqrt 0.100000001 0.0500000007\n", ""),
     "expected rows 'sto2_raw,sto2'"),
])
def test_corrupt_two_dimensional_csv_is_one_line(tmp_path, edit, match):
    path = tmp_path / "sto2_bad.csv"
    _table().to_csv(path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(CalibrationError, match=match):
        Sto2Calibration.from_csv(path)


def test_slope_interpolates_the_rows_slopes():
    cal = _table(rows=3, knots=17)
    rs = row_slopes(cal)
    assert rs.shape == (3, 16) and rs.dtype == np.float32
    # on a row's THb the slope is that row's; halfway it is the mean of the two
    s = np.array([0.5, 0.5, 0.5])
    q = np.array([cal.thb_x0, cal.thb_x0 + cal.thb_dx, cal.thb_x0 + 0.5 * cal.thb_dx])
    got = calibration_slope(cal, s, q.astype(np.float32) ** 2)
    i = int(np.floor((np.float32(0.5) - np.float32(cal.x0)) / np.float32(cal.dx)))
    np.testing.assert_allclose(got, [rs[0, i], rs[1, i], 0.5 * (rs[0, i] + rs[1, i])],
                               rtol=1e-4)
    one = Sto2Calibration(cal.table_x, cal.table_grid[1])
    np.testing.assert_array_equal(calibration_slope(one, s), np.full(3, row_slopes(one)[0, i]))
    assert np.isnan(calibration_slope(cal, np.array([0.5]), np.array([np.nan]))[0])


def test_thb_axis_removes_the_low_blood_bias():
    """Fat-like tissue (0.5-1.7 % blood, 28-30 % fat, 50 % water, a' 25-31) reads 2-5 points
    off on one curve fitted over the whole prior; the rows bring it within 1.5 points while
    the prior's error falls too (snapshot25 grid, noise-free, 30,000 fit spectra)."""
    from edge.processing.sto2 import SimulationRanges

    wl = np.linspace(665.0, 960.0, 25)
    chrom, base = recommended_components(wl)
    um = Unmixer(wl, chrom, base, fwhm_nm=20.0, basis=recommended_basis(wl))
    prior = SimulationRanges(blood_volume=(0.005, 0.065), water=(0.5, 0.8), fat=(0.0, 0.3),
                             scatter_a=(5.0, 40.0), scatter_b=(0.5, 2.0))
    r, t = simulate_spectra(wl, 30000, 1, ranges=prior, fwhm_nm=20.0)
    m = um.maps(r)
    one = Sto2Calibration(*table_from_pairs(m["sto2_raw"], t))
    two_x, two_y, axis = table_2d_from_pairs(m["sto2_raw"], m["thb"], t, 16)
    two = Sto2Calibration(two_x, two_y, thb_axis=axis)
    fat = SimulationRanges(sto2=(0.75, 0.87), blood_volume=(0.005, 0.017), water=(0.5, 0.53),
                           fat=(0.277, 0.3), scatter_a=(25.0, 31.4), scatter_b=(0.97, 1.19))
    rf, tf = simulate_spectra(wl, 3000, 2, ranges=fat, fwhm_nm=20.0)
    mf = um.maps(rf)
    bias1 = 100 * np.mean(one.apply(mf["sto2_raw"]) - tf)
    bias2 = 100 * np.mean(two.apply(mf["sto2_raw"], mf["thb"]) - tf)
    assert abs(bias1) > 1.5 and abs(bias2) < 1.5 and abs(bias2) < abs(bias1) / 2, (bias1, bias2)
    rp, tp = simulate_spectra(wl, 4000, 3, ranges=prior, fwhm_nm=20.0)
    mp = um.maps(rp)
    mae1 = 100 * np.mean(np.abs(one.apply(mp["sto2_raw"]) - tp))
    mae2 = 100 * np.mean(np.abs(two.apply(mp["sto2_raw"], mp["thb"]) - tp))
    assert mae2 < 0.85 * mae1, (mae1, mae2)


def test_2d_fit_rejects_bad_rows():
    with pytest.raises(CalibrationError, match="rows: expected 2..16"):
        table_2d_from_pairs(np.zeros(10), np.ones(10), np.zeros(10), 1)


def test_a_rows_flat_ends_keep_its_end_slope():
    """A row extended flat beyond its spectra's raw values (the fit's np.interp) keeps its
    first and last non-zero slope there, as the table keeps its end slope beyond its knots:
    a pixel in that stretch is not given a standard error of 0."""
    x = np.linspace(0.0, 1.0, 17)
    ramp = np.clip((x - 0.25) / 0.5, 0, 1)          # flat below 0.25 and above 0.75
    cal = Sto2Calibration(x, np.stack([x, ramp]), thb_axis=(0.1, 0.1))
    rs = row_slopes(cal)
    k = np.arange(16)                                 # the centred difference over +-3 knots
    lo, hi = np.maximum(k - 2, 0), np.minimum(k + 3, 16)
    plain = (ramp[hi] - ramp[lo]) / ((hi - lo) * cal.dx)
    live = np.flatnonzero(plain > 0)
    assert live[0] > 0 and live[-1] < 15 and np.all(rs > 0)
    np.testing.assert_allclose(rs[1, live[0]:live[-1] + 1], plain[live[0]:live[-1] + 1],
                               rtol=1e-6)
    np.testing.assert_array_equal(rs[1, :live[0]], rs[1, live[0]])
    np.testing.assert_array_equal(rs[1, live[-1] + 1:], rs[1, live[-1]])
    s = np.array([0.05, 0.5, 0.95], np.float32)
    on_row1 = np.full(3, np.float32(0.2) ** 2, np.float32)     # sqrt(thb) = 0.2: row 1
    assert np.all(calibration_slope(cal, s, on_row1) > 0)
