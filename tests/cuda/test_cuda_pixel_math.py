"""The kernels' per-pixel arithmetic (cuda_kernels/pixel_math.cuh) against the NumPy reference.

Runs on the CPU through the host shim (see conftest.py), in every CI run.  Tolerances: the
flat field, flags, StO2 table, argmax and overlay follow the reference operation for
operation and must match exactly; sums over bands (unmixing, window means, L1 norm) add in a
different order than NumPy's BLAS/pairwise sums, so those compare with
‖out − ref‖/‖ref‖ < 1e-5 (float32) and identical NaN patterns.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.base import PackSpec
from edge.backends.cuda_params import (CHAIN_PARAMS_DTYPE, D2_TAPS, MAX_BANDS, MAX_CLASSES,
                                       MAX_COMPONENTS, MAX_TABLE, MAX_TABLE_ROWS, MAP_NAMES,
                                       chain_params)
from edge.backends.cuda_quality import knot_slopes
from edge.backends.numpy_backend import MAP_NAMES as NUMPY_MAP_NAMES, NumpyBackend
from edge.errors import ConfigError
from edge.processing import post
from edge.processing.indices import IndexParams, tivita_indices
from edge.processing.pack import pack_input
from edge.processing.quality import calibration_slope
from edge.processing.sto2 import MAX_THB_ROWS
from edge.processing.unmixing import absorbance

from hsi_cuda_scenes import make_scene, params_for, ptr, rel_err, synthetic_calibration_2d

TOL = 1e-5


def test_params_layout_matches_header(shim):
    out = np.zeros(14, np.int64)
    shim.shim_params_layout(ptr(out))
    f = CHAIN_PARAMS_DTYPE.fields
    assert out[0] == CHAIN_PARAMS_DTYPE.itemsize
    assert list(out[1:7]) == [f[n][1] for n in ("mean_lo", "d2_start", "pinv", "table_y",
                                                "spec_bands", "map_ids")]
    assert list(out[7:12]) == [MAX_BANDS, MAX_COMPONENTS, MAX_TABLE, MAX_CLASSES, D2_TAPS]
    assert out[12] == f["n_rows"][1] and out[13] == MAX_TABLE_ROWS == MAX_THB_ROWS
    assert MAP_NAMES == NUMPY_MAP_NAMES
    # the constant block stays far below the 64 KB of __constant__ memory (MEMORY.md)
    assert CHAIN_PARAMS_DTYPE.itemsize == 31_956


@pytest.mark.parametrize("factor_exposure", [1000.0, 800.0])
def test_flatfield_matches_reference_exactly(shim, factor_exposure):
    s = make_scene(9, 11, 25, seed=1)
    ff = s.flatfield
    ref_r, ref_f = ff.apply(s.raw, factor_exposure)
    raw = np.ascontiguousarray(s.raw, dtype=np.float32)      # uint16 -> float is exact
    refl, flags = np.full(raw.shape, -7.0, np.float32), np.full(raw.shape[:2], 255, np.uint8)
    factor = np.float32(ff.exposure_us / factor_exposure)
    shim.shim_flatfield(ptr(raw), ptr(ff.dark), ptr(ff.scale), ptr(ff.static_flags),
                        raw.shape[0] * raw.shape[1], raw.shape[2], factor, ff.saturation,
                        ptr(refl), ptr(flags))
    np.testing.assert_array_equal(flags, ref_f)
    assert set(np.unique(ref_f)) >= {0, 1, 2, 8}, "scene must exercise every static flag"
    np.testing.assert_array_equal(refl, ref_r)


def test_flatfield_float32_pass_through(shim):
    s = make_scene(6, 7, 16, seed=2)
    ref_r, ref_f = s.flatfield.apply(s.reflectance)
    refl, flags = np.empty_like(s.reflectance), np.full(ref_f.shape, 255, np.uint8)
    shim.shim_flatfield(ptr(s.reflectance), None, None, None, ref_f.size, 16, 1.0, 0.0,
                        ptr(refl), ptr(flags))
    np.testing.assert_array_equal(flags, ref_f)
    assert np.count_nonzero(ref_f) == 2
    np.testing.assert_array_equal(refl, ref_r)


def test_absorbance(shim):
    rng = np.random.default_rng(3)
    r = rng.uniform(-0.2, 1.5, 4000).astype(np.float32)
    r[:4] = [np.nan, np.inf, 0.0, 1e-6]
    out = np.empty_like(r)
    shim.shim_absorbance(ptr(r), r.size, 1e-4, ptr(out))
    ref = absorbance(r, 1e-4)
    assert out[1] == ref[1] == -np.inf
    assert rel_err(out[2:], ref[2:]) < 1e-6
    assert np.isnan(out[0])


@pytest.mark.parametrize("bands", [16, 25, 100])
def test_unmix_matches_unmixer(shim, bands):
    s = make_scene(8, 9, bands, seed=bands)
    r = np.ascontiguousarray(s.reflectance)
    npix = r.shape[0] * r.shape[1]
    p = params_for(s)
    k = len(s.unmixer.components)
    conc, thb, sraw = (np.full((npix, k), -9, np.float32), np.full(npix, -9, np.float32),
                       np.full(npix, -9, np.float32))
    shim.shim_unmix(ptr(p), ptr(r), npix, ptr(conc), ptr(thb), ptr(sraw))
    ref_c = s.unmixer.unmix(r).reshape(npix, k)
    ref_m = s.unmixer.maps(r)
    assert rel_err(conc, ref_c) < TOL
    assert rel_err(thb, ref_m["thb"].ravel()) < TOL
    assert rel_err(sraw, ref_m["sto2_raw"].ravel()) < TOL


def test_unmix_flags_non_positive_haemoglobin(shim):
    s = make_scene(1, 4, 25, seed=5)
    r = np.ascontiguousarray(s.reflectance.copy())
    r[0, 1] = 1.0 / r[0, 1]          # A -> -A: negative haemoglobin total
    p = params_for(s)
    k = len(s.unmixer.components)
    conc, thb, sraw = np.empty((4, k), np.float32), np.empty(4, np.float32), np.empty(4, np.float32)
    shim.shim_unmix(ptr(p), ptr(r), 4, ptr(conc), ptr(thb), ptr(sraw))
    ref = s.unmixer.maps(r)
    assert np.isnan(thb[1]) and np.isnan(ref["thb"][0, 1])
    assert rel_err(sraw, ref["sto2_raw"].ravel()) < TOL


def test_sto2_table_matches_reference_exactly(shim):
    s = make_scene(1, 1, 25, seed=6)
    p = params_for(s)
    x = np.concatenate([np.linspace(-0.5, 1.5, 5001),
                        [np.nan, np.inf, -np.inf, -0.2, 1.2]]).astype(np.float32)
    out = np.empty_like(x)
    shim.shim_sto2(ptr(p), ptr(x), None, x.size, ptr(out))
    np.testing.assert_array_equal(out, s.calibration.apply(x))
    # a 1-D table ignores THb, even a non-finite one
    thb = np.resize(np.array([np.nan, -1.0, 0.0, 0.05, np.inf], np.float32), x.size)
    shim.shim_sto2(ptr(p), ptr(x), ptr(thb), x.size, ptr(out))
    np.testing.assert_array_equal(out, s.calibration.apply(x))
    assert np.isfinite(out[:5001]).all()


def _x_thb_cases(cal):
    """Raw StO2 x thb covering the inside of both axes, below/above each (clamping), rows and
    knots hit exactly, thb <= 0, -0.0, NaN/inf thb and NaN/inf x."""
    rng = np.random.default_rng(14)
    q_axis = cal.thb_x0 + cal.thb_dx * np.arange(cal.n_rows)
    thb_grid = np.concatenate([
        np.linspace(0.0, 0.12, 61), (q_axis ** 2), [-0.01, -0.0, 1e-30, 5.0, np.nan, np.inf,
                                                    -np.inf]]).astype(np.float32)
    x_grid = np.concatenate([np.linspace(-0.5, 1.5, 201), cal.table_x[::37],
                             [np.nan, np.inf, -np.inf]]).astype(np.float32)
    xx, tt = np.meshgrid(x_grid, thb_grid)
    x = np.concatenate([xx.ravel(), rng.uniform(-0.3, 1.3, 20_000)]).astype(np.float32)
    thb = np.concatenate([tt.ravel(), rng.uniform(-0.01, 0.12, 20_000)]).astype(np.float32)
    return x, thb


def test_sto2_table_2d_matches_reference_exactly(shim):
    """The THb axis (issue 14): sto2_calibrate against Sto2Calibration.apply(x, thb), bit for
    bit, with the kernel's and the shim's rounding (no FMA, correctly rounded sqrt)."""
    s = make_scene(1, 1, 25, seed=6)
    cal = synthetic_calibration_2d()
    p = chain_params(s.wl, s.unmixer, cal, s.index_params)
    assert (int(p["n_rows"]), int(p["n_table"])) == (5, 256)
    x, thb = _x_thb_cases(cal)
    out = np.full_like(x, -9)
    shim.shim_sto2(ptr(p), ptr(x), ptr(thb), x.size, ptr(out))
    ref = cal.apply(x, thb)
    np.testing.assert_array_equal(out, ref)
    assert np.array_equal(np.isnan(out), ~(np.isfinite(x) & np.isfinite(thb)))
    # the rows differ, so THb matters: below the axis is row 0, above it the last row
    lo, hi = np.float32(0.0), np.float32(0.1)
    xs = np.full(3, 0.45, np.float32)
    first = cal.apply(xs, np.full(3, lo))
    shim.shim_sto2(ptr(p), ptr(xs), ptr(np.full(3, hi)), 3, ptr(out[:3]))
    assert abs(float(out[0]) - float(first[0])) > 0.05
    np.testing.assert_array_equal(out[:3], cal.apply(xs, np.full(3, hi)))
    # without THb a 2-D table gives NaN (the wrapper refuses to launch it: cuda_ops.sto2)
    shim.shim_sto2(ptr(p), ptr(xs), None, 3, ptr(out[:3]))
    assert np.isnan(out[:3]).all()


@pytest.mark.parametrize("rows", [1, 2, 5, MAX_THB_ROWS])
def test_quality_slope_matches_calibration_slope(shim, rows):
    """q_slope on knot_slopes' (R, K-1) table equals quality.calibration_slope(cal, s, thb)
    exactly: the interval index as apply's, two rows blended with apply's THb weight."""
    s = make_scene(1, 1, 25, seed=6)
    cal = s.calibration if rows == 1 else synthetic_calibration_2d(rows=rows, dq=0.2 / rows)
    p = chain_params(s.wl, s.unmixer, cal, s.index_params)
    slopes = knot_slopes(cal)
    assert slopes.shape == (rows, cal.n_knots - 1) and slopes.flags.c_contiguous
    x, thb = _x_thb_cases(cal)
    out = np.full_like(x, -9)
    shim.shim_q_slope(ptr(p), ptr(slopes), ptr(x), ptr(thb), x.size, ptr(out))
    ref = calibration_slope(cal, x, thb if rows > 1 else None)
    np.testing.assert_array_equal(out, ref)
    fin = np.isfinite(x) & (np.isfinite(thb) | (rows == 1))
    assert np.array_equal(np.isfinite(out), fin)
    if rows > 1:
        assert np.unique(out[np.isfinite(out)]).size > cal.n_knots   # blended, not one row


def test_chain_params_rejects_tables_beyond_the_kernels():
    s = make_scene(1, 1, 25, seed=6)

    class Wide:      # a table the kernels cannot hold (Sto2Calibration itself caps its rows)
        table_grid = np.zeros((MAX_TABLE_ROWS + 1, 8), np.float32)
        x0, dx, thb_x0, thb_dx = 0.0, 0.1, 0.0, 1.0

    with pytest.raises(ConfigError, match=r"support 1-16 rows on its THb axis, got 17"):
        chain_params(s.wl, s.unmixer, Wide(), s.index_params)
    Wide.table_grid = np.zeros((2, MAX_TABLE + 1), np.float32)
    with pytest.raises(ConfigError, match=r"support 2-256 knots, got 257"):
        chain_params(s.wl, s.unmixer, Wide(), s.index_params)


@pytest.mark.parametrize("bands,wl_range", [(16, (500.0, 1000.0)), (25, (500.0, 1000.0)),
                                            (100, (500.0, 1000.0)), (16, (460.0, 600.0))])
def test_indices_match_tivita_reference(shim, bands, wl_range):
    s = make_scene(7, 13, bands, seed=7, wl_range=wl_range)
    r = np.ascontiguousarray(s.reflectance)
    npix = 7 * 13
    p = params_for(s)
    out = np.full((4, npix), -9, np.float32)
    shim.shim_indices(ptr(p), ptr(r), npix, ptr(out))
    ref = tivita_indices(r, s.wl, s.index_params)
    for j, name in enumerate(("sto2_index", "nir", "thi", "twi")):
        if np.all(np.isnan(ref[name])):       # window missing on this grid
            assert np.all(np.isnan(out[j])), name
            continue
        assert rel_err(out[j], ref[name].ravel()) < TOL, name


def test_indices_with_sg_window_3(shim):
    s = make_scene(5, 5, 25, seed=8)
    s.index_params = IndexParams(sg_window=3, sg_order=2)
    r = np.ascontiguousarray(s.reflectance)
    p = params_for(s)
    out = np.empty((4, 25), np.float32)
    shim.shim_indices(ptr(p), ptr(r), 25, ptr(out))
    ref = tivita_indices(r, s.wl, s.index_params)
    assert rel_err(out[0], ref["sto2_index"].ravel()) < TOL


def test_pack_matches_pack_input(shim):
    s = make_scene(6, 5, 25, seed=9)
    spec = PackSpec(spectra_bands=(3, 1, 7, 20), maps=("thi", "sto2"), dtype="float32")
    r = np.ascontiguousarray(s.reflectance)
    rng = np.random.default_rng(9)
    maps = rng.uniform(0, 1, (2, 6, 5)).astype(np.float32)
    maps[0, 0, 0] = np.nan
    p = params_for(s, spec, zero_flagged=False)
    out = np.full((spec.channels, 30), -9, np.float32)
    shim.shim_pack(ptr(p), ptr(r), ptr(maps), None, 30, ptr(out))
    ref = pack_input(r, [maps[0], maps[1]], spec)[0].reshape(spec.channels, 30)
    assert rel_err(out, ref) < 1e-6


@pytest.mark.parametrize("bands", [16, 25, 100])
@pytest.mark.parametrize("source", ["uint16", "float32"])
@pytest.mark.parametrize("table", ["1d", "2d"])
def test_fused_chain_matches_numpy_backend(shim, bands, source, table):
    """The fused chain; "2d": a table with a THb axis, the row picked by the pixel's own THb
    (the chain's thb, summed in band order: THb differs from sgemm's in the last bits, so the
    StO2 map compares with the sums' tolerance)."""
    s = make_scene(7, 13, bands, seed=10 + bands)
    if table == "2d":
        s.calibration = synthetic_calibration_2d()
    spec = s.pack
    ff = s.flatfield if source == "uint16" else None
    be = NumpyBackend(s.wl, flatfield=ff, chromophores=s.unmixer.chromophores,
                      baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec)
    cube = s.raw if source == "uint16" else s.reflectance
    ref = be.run(cube, exposure_us=1000.0)
    p = params_for(s, spec)
    raw = np.ascontiguousarray(cube, dtype=np.float32)
    npix = 7 * 13
    maps = np.full((6, npix), -9, np.float32)
    flags = np.full(npix, 255, np.uint8)
    packed = np.full((spec.channels, npix), -9, np.float32)
    refl = np.full((npix, bands), -9, np.float32)
    args = (ptr(ff.dark), ptr(ff.scale), ptr(ff.static_flags)) if ff else (None, None, None)
    shim.shim_chain(ptr(p), ptr(raw), *args, npix, 1.0, ptr(maps), ptr(flags), ptr(packed),
                    ptr(refl))
    np.testing.assert_array_equal(flags, ref.flags.ravel())
    assert np.count_nonzero(flags) >= 2, "scene must contain flagged pixels"
    np.testing.assert_array_equal(refl, ref.reflectance.reshape(npix, bands))
    for j, name in enumerate(MAP_NAMES):
        if np.all(np.isnan(ref.maps[name])):
            assert np.all(np.isnan(maps[j])), name
            continue
        assert rel_err(maps[j], ref.maps[name].ravel()) < TOL, name
    assert rel_err(packed, ref.input[0].reshape(spec.channels, npix)) < TOL


def test_argmax_matches_numpy_ties_and_nan(shim):
    rng = np.random.default_rng(11)
    logits = rng.integers(0, 4, (1, 19, 5, 7)).astype(np.float32)   # many ties
    logits[0, 3, 0, 0] = np.nan
    labels = np.full(35, 255, np.uint8)
    shim.shim_argmax(ptr(np.ascontiguousarray(logits[0])), 35, 19, ptr(labels))
    np.testing.assert_array_equal(labels, post.argmax(logits)[0].ravel())


@pytest.mark.parametrize("alpha", [0.0, 0.4, 0.5, 1.0])
def test_overlay_matches_post_overlay(shim, alpha):
    rng = np.random.default_rng(12)
    rgb = rng.integers(0, 256, (9, 10, 3), dtype=np.uint8)
    classes = rng.integers(0, 19, (9, 10)).astype(np.uint8)
    colours = rng.integers(0, 256, (19, 3), dtype=np.uint8)
    invalid = rng.random((9, 10)) < 0.2
    ref = post.overlay(rgb, classes, colours, alpha, invalid)
    out = np.zeros_like(rgb)
    (h0, h1) = [(c[0] << 16) | (c[1] << 8) | c[2] for c in post.HATCH_COLORS]
    a1, a2 = np.float32(1.0 - alpha), np.float32(alpha)
    shim.shim_overlay(ptr(classes), ptr(rgb), ptr(invalid.astype(np.uint8)), ptr(colours), 90,
                      10, a1, a2, h0, h1, ptr(out))
    np.testing.assert_array_equal(out, ref)


def test_params_reject_what_the_kernels_cannot_do():
    s = make_scene(1, 1, 25, seed=13)
    with pytest.raises(ConfigError, match=r"sg_window: the compiled kernels \(cuda, native\) support windows up to 5, got 7"):
        chain_params(s.wl, s.unmixer, s.calibration, IndexParams(sg_window=7))
    with pytest.raises(ConfigError, match=r"pack.maps: unknown map\(s\) \['foo'\]"):
        chain_params(s.wl, s.unmixer, s.calibration, IndexParams(), PackSpec(maps=("foo",)))
    with pytest.raises(ConfigError, match=r"pack.spectra_bands: indices must be in \[0, 24\]"):
        chain_params(s.wl, s.unmixer, s.calibration, IndexParams(),
                     PackSpec(spectra_bands=(0, 25)))
    wl = np.linspace(400, 1000, MAX_BANDS + 1)
    with pytest.raises(ConfigError, match=r"bands: the compiled kernels \(cuda, native\) support 1-256 bands, got 257"):
        chain_params(wl, s.unmixer, s.calibration, IndexParams())


def test_chain_out_of_domain_pixels_match_numpy_backend(shim):
    """A band at R <= eps makes the pixel FLAG_UNMIX_INVALID (maps NaN) on both sides, and
    FLAG_UNMIX_INVALID pixels keep their L1 spectra in the packed input (pixel_math.cuh
    unmix_pixel / pack_zeroed mirror unmixing.floored and NumpyBackend.run)."""
    from edge.backends.base import FLAG_NONFINITE, FLAG_UNMIX_INVALID

    s = make_scene(1, 6, 25, seed=21)
    spec = s.pack
    cube = np.ascontiguousarray(s.reflectance.astype(np.float32).copy())
    cube[0, 1, 3] = -0.01                     # below the floor
    cube[0, 2, 0] = np.float32(s.unmixer.eps)  # exactly at the floor
    cube[0, 3] = 1.0 / cube[0, 3]             # A -> -A: negative haemoglobin, valid spectrum
    cube[0, 4, 5] = np.nan
    be = NumpyBackend(s.wl, chromophores=s.unmixer.chromophores, baseline=s.unmixer.baseline,
                      calibration=s.calibration, pack=spec)
    ref = be.run(cube, exposure_us=1000.0)
    assert list(ref.flags[0, 1:5]) == [FLAG_UNMIX_INVALID] * 3 + [FLAG_NONFINITE]
    p = params_for(s, spec)
    npix = 6
    maps = np.full((6, npix), -9, np.float32)
    flags = np.full(npix, 255, np.uint8)
    packed = np.full((spec.channels, npix), -9, np.float32)
    shim.shim_chain(ptr(p), ptr(cube), None, None, None, npix, 1.0, ptr(maps), ptr(flags),
                    ptr(packed), None)
    np.testing.assert_array_equal(flags, ref.flags.ravel())
    for j, name in enumerate(MAP_NAMES):
        np.testing.assert_array_equal(np.isnan(maps[j]), np.isnan(ref.maps[name].ravel()))
    ref_packed = ref.input[0].reshape(spec.channels, npix)
    assert np.abs(ref_packed[:len(spec.spectra_bands), 1:4]).sum() > 0   # spectra kept
    assert rel_err(packed, ref_packed) < TOL
    # the standalone unmix kernel flags the floored pixels like Unmixer.maps
    k = len(s.unmixer.components)
    conc, thb, sraw = (np.empty((npix, k), np.float32), np.empty(npix, np.float32),
                       np.empty(npix, np.float32))
    shim.shim_unmix(ptr(p), ptr(cube), npix, ptr(conc), ptr(thb), ptr(sraw))
    np.testing.assert_array_equal(np.isnan(thb), np.isnan(s.unmixer.maps(cube)["thb"].ravel()))
    assert np.isnan(thb[1:5]).all()
