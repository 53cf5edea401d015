"""NumPy backend: the fused blocked chain equals the functions called one by one."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.base import (FLAG_NONFINITE, FLAG_SATURATED, FLAG_UNMIX_INVALID, PackSpec)
from edge.backends.numpy_backend import MAP_NAMES, NumpyBackend
from edge.errors import CalibrationError, DataFormatError
from edge.processing import Unmixer, pack_input, tivita_indices
from edge.processing.flatfield import FlatField
from edge.processing.sto2 import Sto2Calibration, simulate_spectra

WL = np.linspace(500, 1000, 100)
ROWS, COLS = 6, 7


@pytest.fixture(scope="module")
def scene():
    refl, _ = simulate_spectra(WL, ROWS * COLS, seed=3, fwhm_nm=10.0)
    refl = refl.reshape(ROWS, COLS, 100)
    dark = np.full(refl.shape, 40.0, np.float32)
    white = np.full(refl.shape, 900.0, np.float32)
    ff = FlatField.from_references(dark, white, exposure_us=1000, white_exposure_us=1000)
    raw = np.rint(40 + refl / 0.99 * 860).astype(np.uint16)
    raw[0, 0, 10] = 1023            # saturated
    raw[1, 1] = 40                  # zero reflectance -> unmix invalid
    return ff, raw, refl


def _one_by_one(ff, raw, spec):
    refl, flags = ff.apply(raw, 1000)
    u = Unmixer(WL, fwhm_nm=10.0)
    m = u.maps(refl)
    cal = Sto2Calibration.for_grid(WL, fwhm_nm=10.0)
    maps = {"sto2": cal.apply(m["sto2_raw"], m["thb"]), "thb": m["thb"], **tivita_indices(refl, WL)}
    flags = flags | np.where((flags == 0) & np.isnan(m["thb"]), FLAG_UNMIX_INVALID, 0)
    for v in maps.values():
        v[flags != 0] = np.nan
    packed = pack_input(refl, [maps[n] for n in spec.maps], spec)
    # Unusable reflectance packs as 0; FLAG_UNMIX_INVALID alone keeps the spectra.
    packed[0, :, (flags & ~FLAG_UNMIX_INVALID) != 0] = 0
    return maps, flags.astype(np.uint8), packed, refl


@pytest.mark.parametrize("block_rows, bands", [
    (None, tuple(range(0, 100, 3))),      # evenly spaced: a strided view
    (1, tuple(range(0, 100, 3))),
    (4, (2, 3, 7, 50, 99)),               # irregular: a gather
    (None, tuple(range(100))),            # all bands (htc)
    (None, (42,)),
])
def test_fused_equals_functions(scene, block_rows, bands):
    ff, raw, _ = scene
    spec = PackSpec(spectra_bands=bands, maps=("sto2", "thi"))
    be = NumpyBackend(WL, flatfield=ff, fwhm_nm=10.0, pack=spec, block_rows=block_rows)
    res = be.run(raw, exposure_us=1000)
    maps, flags, packed, refl = _one_by_one(ff, raw, spec)
    np.testing.assert_array_equal(res.reflectance, refl)      # bit-identical calibration
    np.testing.assert_array_equal(res.flags, flags)
    assert res.flags[0, 0] & FLAG_SATURATED and res.flags[1, 1] & FLAG_UNMIX_INVALID
    for name in MAP_NAMES:
        assert res.maps[name].dtype == np.float32 and res.maps[name].shape == (ROWS, COLS)
        np.testing.assert_array_equal(np.isnan(res.maps[name]), np.isnan(maps[name]))
        # fused float32 matmul vs float64 reference sums: rtol 1e-5 (+ atol for values ~0)
        np.testing.assert_allclose(res.maps[name], maps[name], rtol=1e-5, atol=2e-6,
                                   err_msg=name)
    assert res.input.shape == (1, spec.channels, ROWS, COLS)
    np.testing.assert_allclose(res.input, packed, rtol=1e-5, atol=1e-7)
    assert set(res.timings_ms) == {"calibrate", "unmix", "indices", "pack"}
    ref = be.run_reference(raw, exposure_us=1000)
    np.testing.assert_array_equal(ref.flags, flags)


def test_float_input_without_flatfield(scene):
    _, _, refl = scene
    cube = refl.copy()
    cube[2, 2, 5] = np.inf
    be = NumpyBackend(WL, fwhm_nm=10.0)
    res = be.run(cube, exposure_us=1000)
    assert res.input is None
    assert res.flags[2, 2] == FLAG_NONFINITE and np.isnan(res.reflectance[2, 2]).all()
    assert all(np.isnan(v[2, 2]) for v in res.maps.values())
    ref = be.run_reference(cube, exposure_us=1000)
    for name in MAP_NAMES:
        np.testing.assert_allclose(res.maps[name], ref.maps[name], rtol=1e-5, atol=2e-6)


def test_exposure_rescale_matches_flatfield(scene):
    ff, raw, _ = scene
    be = NumpyBackend(WL, flatfield=ff, fwhm_nm=10.0)
    res = be.run(raw, exposure_us=2000)
    refl, _ = ff.apply(raw, 2000)
    np.testing.assert_array_equal(res.reflectance, refl)


def test_errors(scene):
    ff, raw, refl = scene
    with pytest.raises(DataFormatError, match="pack.maps: unknown map"):
        NumpyBackend(WL, pack=PackSpec(maps=("oxygen",)))
    be = NumpyBackend(WL, flatfield=ff, fwhm_nm=10.0)
    with pytest.raises(DataFormatError, match="raw: expected shape \\(rows, cols, 100\\)"):
        be.run(raw[:, :, :50], exposure_us=1000)
    with pytest.raises(CalibrationError, match="does not match the calibration reference"):
        be.run(raw[:3], exposure_us=1000)
    with pytest.raises(DataFormatError, match="without a flatfield the backend takes float32"):
        NumpyBackend(WL).run(raw, exposure_us=1000)
    with pytest.raises(DataFormatError, match="block_rows: expected an integer >= 1"):
        NumpyBackend(WL, block_rows=0)


def test_unmix_invalid_pixels_keep_their_spectra_in_the_network_input():
    """Drape/instrument pixels (no haemoglobin) and pixels with a band at R <= eps are
    FLAG_UNMIX_INVALID with NaN maps, but their (valid) spectra still reach the network as
    x / sum|x| (the post stage keeps their classes); unusable pixels (NaN) pack as 0.

    Before the fix every FLAG_UNMIX_INVALID pixel packed as all zeros, i.e. the segmentation
    model saw "no signal" on the whole background (24 % of a simulated TIVITA frame)."""
    from edge.physics import beer_lambert_reflectance

    tissue, _ = simulate_spectra(WL, 4, seed=11, fwhm_nm=10.0)
    cube = np.empty((1, 4, 100), np.float32)
    cube[0, 0] = tissue[0]
    # negative haemoglobin total (a grey, water-only "drape")
    cube[0, 1] = beer_lambert_reflectance(WL, {"HbO2": -0.002, "Hb": -0.002, "water": 0.3},
                                          (0.4, 0.1))
    cube[0, 2] = tissue[2]
    cube[0, 2, 40] = -0.001                  # one band below the absorbance floor
    cube[0, 3] = tissue[3]
    cube[0, 3, 7] = np.nan
    spec = PackSpec(spectra_bands=tuple(range(100)), maps=("sto2",))
    for be_run in ("run", "run_reference"):
        be = NumpyBackend(WL, fwhm_nm=10.0, pack=spec)
        res = getattr(be, be_run)(cube, exposure_us=1000)
        assert list(res.flags[0]) == [0, FLAG_UNMIX_INVALID, FLAG_UNMIX_INVALID,
                                      FLAG_NONFINITE], be_run
        assert np.isfinite(res.maps["sto2"][0, 0])
        assert np.isnan(res.maps["sto2"][0, 1:]).all()
        for px in (0, 1, 2):                  # independent: x / sum(|x|), sign kept
            x = cube[0, px].astype(np.float64)
            np.testing.assert_allclose(res.input[0, :100, 0, px], x / np.abs(x).sum(),
                                       rtol=1e-5, atol=1e-9, err_msg=f"{be_run} pixel {px}")
        assert res.input[0, 100, 0, 1] == 0 and res.input[0, 100, 0, 2] == 0   # NaN map -> 0
        assert not res.input[0, :, 0, 3].any()
