"""The CUDA quality step (cuda_kernels/quality.cu) emulated on the CPU, block by block,
against the NumPy reference backend with quality rules (tests/cuda/quality_emulation.cpp).

The whole CUDA path runs: chain.cu (emulated) -> quality_pixel (emulated) -> the backend's own
host part (edge.backends.cuda_quality.finish_frame, i.e. finish_quality) with the spatial
step by bilateral_f32 (emulated, the launches of bilateral_launches). Shared memory is
NaN-poisoned before every block, so a tile row or halo slot no thread staged fails.

Tolerances: the spatial step alone (same float32 operations in the same order as
bilateral_filter, expf against NumPy's exp) within relative 2e-6 and the same NaN pattern.
End to end on noisy preset frames: flags exact, NaN patterns exact, every map within
relative 1e-5 (norm over the pixels; sigma 5e-5) where the estimate is well conditioned,
5e-3 where it is not (:func:`_compare` says why: sums over bands in band order against
sgemm's, amplified where c_o + c_d is near 0).
"""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge.backends.cuda_ops import tile_launch
from edge.backends.cuda_params import chain_params
from edge.backends.cuda_quality import (BIL_TERMS_PER_LAUNCH, bilateral_launches,
                                        filter_mask, finish_frame, host_finish_reason,
                                        knot_slopes, pixel_launch, quality_terms,
                                        range_factor, rule_limits, spatial_weights)
from edge.backends.numpy_backend import NumpyBackend
from edge.core.chain import FLAG_SPECULAR, MAP_NAMES, PackSpec
from edge.processing.plan import ChainPlan
from edge.processing.quality import QualityRules
from edge.processing.spatial import BilateralParams, bilateral_filter

from host_shim_build import EMU_SIGNATURES, build_library
from hsi_cuda_scenes import ptr
from quality_cases import EXPOSURE, _tissue, compare, scene
from test_quality import check_low_blood_rule, low_blood_patch  # (tests/processing)

_P, _LL, _I, _F = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float
SIGNATURES = dict(EMU_SIGNATURES, **{
    "emu_quality_pixel": [_P, _P, _P, _P, _P, _P, _LL, _I, _I, _P, _I, _F, _F, _P, _P, _F,
                          _F, _P, _P, _P, _P],
    "emu_quality_finish": [_P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _P, _F, _F, _LL, _P, _P,
                           _P, _P, _P],
    "emu_bilateral": [_P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _F, _P, _I, _I, _P, _P,
                      _P],
})
SRC = Path(__file__).resolve().parent / "quality_emulation.cpp"


@pytest.fixture(scope="module")
def qemu(tmp_path_factory):
    return build_library(SRC, tmp_path_factory.mktemp("qemu") / "libhsi_qemu.so",
                         ["-ffp-contract=off"], SIGNATURES, "host emulation of quality.cu")


def _c(a, dtype=np.float32):
    return None if a is None else np.ascontiguousarray(a, dtype)


def emulated_filter(lib, rows, cols, keep):
    """bilateral_filter's signature, run by the emulated bilateral_f32 launches (as
    CudaQuality._filter runs the real ones); ``keep`` holds the arrays alive."""
    def run(values, variance, guide, valid, params, terms=None):
        G = guide.shape[2]
        n = 0 if terms is None else terms.shape[2]
        s = _c(values)
        v = _c(variance)
        ok = filter_mask(values, variance, valid)
        g = _c(np.moveaxis(guide, -1, 0))
        t = None if terms is None else _c(np.moveaxis(terms, -1, 0))
        ks = spatial_weights(params)
        out = np.full((2 + n, rows, cols), -7.0, np.float32)       # poisoned outputs
        plane = rows * cols * 4
        keep.extend([s, v, ok, g, t, ks, out])
        for i, ln in enumerate(bilateral_launches(rows, cols, params.radius, G, n)):
            first = i == 0
            lib.emu_bilateral(
                ptr(s), ptr(v), ptr(ok), ptr(g), ptr(t), rows, cols, G, ln.t0, ln.tc,
                params.radius, float(range_factor(params, G)), ptr(ks), ln.block[0],
                ln.block[1], out.ctypes.data if first else None,
                out.ctypes.data + plane if first and v is not None else None,
                out.ctypes.data + 2 * plane)
        tt = None if terms is None else np.moveaxis(out[2:], 0, -1)
        return out[0], (out[1] if v is not None else None), tt
    return run


def run_emulated(lib, plan, raw, *, block=None, **temporal):
    """The CUDA backend's quality path with every kernel emulated: returns (maps, flags,
    packed) as CudaBackend.run would."""
    rows, cols, nb = raw.shape
    npix = rows * cols
    counts = raw.dtype == np.uint16 and plan.flatfield is not None
    ff = plan.flatfield if counts else None
    params = chain_params(plan.wavelengths, plan.unmixer, plan.calibration, plan.index_params,
                          plan.pack, saturation=plan.saturation)
    ln = tile_launch(npix, nb)
    maps = np.full((6, npix), -9, np.float32)
    flags = np.full(npix, 255, np.uint8)
    spec = plan.pack
    packed = np.full((spec.channels, npix), -9, np.float32) if spec else None
    refl = np.full((npix, nb), -9, np.float32)
    rawc = np.ascontiguousarray(raw)
    dark = _c(ff.dark) if ff else None
    scale = _c(ff.scale) if ff else None
    static = _c(ff.static_flags, np.uint8) if ff else None
    keep = [params, rawc, dark, scale, static]       # alive across the calls (raw addresses)
    ffargs = (ptr(dark), ptr(scale), ptr(static))
    lib.emu_chain(ptr(params), ptr(rawc), int(counts), *ffargs, npix, ln.block[0], ln.stride,
                  1.0, ptr(maps), ptr(flags), ptr(packed), ptr(refl))
    # quality_pixel
    ext, G, n = quality_terms(plan)
    m = ext.shape[0]
    noise = plan.quality.noise
    use_counts = counts and noise is not None
    corr = noise.correction() if use_counts else None
    c_t, ct = (None, None) if corr is None else corr
    spec_level, thb_min, max_sigma, model2 = rule_limits(plan)
    q = np.full((2, npix), -9, np.float32)
    ok = np.full(npix, 0xAB, np.uint8)
    ext_out = np.full((max(m, 1), npix), -9, np.float32)
    pl = pixel_launch(npix, nb, use_counts)
    blk = block or pl.block[0]
    lib.emu_quality_pixel(
        ptr(params), ptr(refl), ptr(flags), ptr(maps), ptr(rawc) if use_counts else None,
        ptr(dark) if use_counts else None, npix, blk, pl.stride, ptr(ext), m,
        noise.counts_per_electron if use_counts else 0.0,
        noise.read_noise_counts ** 2 if use_counts else 0.0, ptr(ct), ptr(c_t),
        float(spec_level), float(thb_min), q[0].ctypes.data,
        q[1].ctypes.data if use_counts else None, ext_out.ctypes.data, ptr(ok))
    spatial = plan.quality.spatial != "none"
    if host_finish_reason(plan) is None:          # the device finish
        fout = np.full((2 + n, npix), -9, np.float32)
        if spatial:
            ks = spatial_weights(plan.bilateral)
            var_p = q[1].ctypes.data if use_counts else None
            terms_p = ext_out[G:].ctypes.data if n else None
            keep.extend([ks, fout])
            for i, lb in enumerate(bilateral_launches(rows, cols, plan.bilateral.radius, G, n)):
                first = i == 0
                lib.emu_bilateral(
                    q[0].ctypes.data, var_p, ptr(ok), ext_out.ctypes.data, terms_p, rows, cols,
                    G, lb.t0, lb.tc, plan.bilateral.radius,
                    float(range_factor(plan.bilateral, G)), ptr(ks), lb.block[0], lb.block[1],
                    fout[0].ctypes.data if first else None,
                    fout[1].ctypes.data if first and use_counts else None,
                    fout[2].ctypes.data if n else fout.ctypes.data)
        slopes = knot_slopes(plan.calibration)
        out2 = np.full((2, npix), -9, np.float32)
        n1 = plan.index_layout["r1"].stop - plan.index_layout["r1"].start
        lib.emu_quality_finish(
            ptr(params), q[0].ctypes.data, q[1].ctypes.data if use_counts else None,
            fout[0].ctypes.data if spatial else None,
            fout[1].ctypes.data if spatial and use_counts else None,
            fout[2].ctypes.data if spatial and n else None,
            ext_out[G].ctypes.data if spatial and n else None, ptr(ok), n, n1, ptr(slopes),
            float(max_sigma), float(model2), npix, ptr(flags), ptr(maps), out2[0].ctypes.data,
            out2[1].ctypes.data, ptr(packed))
        out = {name: maps[i].reshape(rows, cols) for i, name in enumerate(MAP_NAMES)}
        out["sto2_sigma"] = out2[0].reshape(rows, cols)
        out["sto2_all"] = out2[1].reshape(rows, cols)
        pk = None if packed is None else packed.reshape(1, spec.channels, rows, cols)
        return out, flags.reshape(rows, cols), pk, refl
    guide = terms = None                          # the host finish
    if m:
        e = ext_out[:m].reshape(m, rows, cols)
        guide = np.moveaxis(e[:G], 0, -1).copy()
        terms = np.moveaxis(e[G:], 0, -1).copy() if n else None
    flags2 = flags.reshape(rows, cols).copy()
    pk = None if packed is None else packed.reshape(1, spec.channels, rows, cols).copy()
    filt = emulated_filter(lib, rows, cols, keep) if spatial else None
    out = finish_frame(plan, maps.reshape(6, rows, cols), flags2, q[0].reshape(rows, cols),
                       q[1].reshape(rows, cols) if use_counts else None, guide, terms, filt,
                       pk, **temporal)
    return out, flags2, pk, refl


@pytest.mark.parametrize("preset,rows,cols,radius", [
    ("tivita", 37, 53, 3),          # odd sizes: partial 2-D tiles at the right and bottom
    ("snapshot16", 37, 53, 1),
    ("snapshot25", 29, 41, 5),      # crosstalk correction (mixed variance)
    ("tivita", 19, 23, 5),
])
def test_quality_path_matches_numpy(qemu, preset, rows, cols, radius):
    p, ff, noise, raw = scene(preset, rows, cols, seed=rows + cols + radius)
    pack = PackSpec(spectra_bands=(0, 2, 4), maps=("sto2", "thb", "sto2_index"))
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm, pack=pack,
                           quality=QualityRules(noise, spatial="bilateral",
                                                spatial_radius=radius))
    if preset.startswith("snapshot"):
        assert noise.crosstalk is not None, "the snapshot presets model filter crosstalk"
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    maps, flags, packed, _ = run_emulated(qemu, plan, raw)
    assert np.all(flags[3:5, 3:5] & FLAG_SPECULAR)
    assert np.count_nonzero(flags == 0) >= 20       # snapshot16: most pixels "uncertain"
    assert np.isfinite(maps["sto2_sigma"]).sum() > rows * cols // 2
    compare(a, maps, flags, packed)


@pytest.mark.parametrize("preset,mosaic", [("snapshot16", 4), ("snapshot25", 5)])
def test_registered_frame_matches_numpy(qemu, preset, mosaic):
    """With the band registration (edge.processing.register): the CUDA backend gets the frame
    registered on the host (ChainPlan.check_frame) and the noise model's band gain folded into
    the crosstalk correction it already takes, so the kernels are unchanged: flags exact, maps
    as in test_quality_path_matches_numpy."""
    from drivers.sim.mosaic import mosaic_offsets
    from edge.processing.register import BandRegistration

    p, ff, noise, raw = scene(preset, 23, 31, seed=11)
    reg = BandRegistration.from_offsets(mosaic_offsets(len(p.wavelength_array()), mosaic),
                                        len(p.wavelength_array()))
    noise = dataclasses.replace(noise, band_gain=reg.variance_gain)
    pack = PackSpec(spectra_bands=(0, 2, 4), maps=("sto2", "thb"))
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm, pack=pack,
                           quality=QualityRules(noise, spatial="bilateral", spatial_radius=3),
                           registration=reg)
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    assert "register" in a.timings_ms
    maps, flags, packed, _ = run_emulated(qemu, plan, plan.register(plan.check_frame(raw, compiled=True)))
    compare(a, maps, flags, packed)
    # the registration changed the frame, and sigma fell with the band gain
    b = NumpyBackend(dataclasses.replace(plan, registration=None)).run(raw,
                                                                      exposure_us=EXPOSURE)
    assert not np.array_equal(a.flags, b.flags) or not np.allclose(
        a.maps["sto2_all"], b.maps["sto2_all"], equal_nan=True)


@pytest.mark.parametrize("spatial", ["none", "bilateral"])
def test_quality_without_spatial_step_and_small_blocks(qemu, spatial):
    """No spatial step (no guide, no terms), and the per-pixel pass with 32-pixel blocks so
    several blocks and a partial last one run."""
    p, ff, noise, raw = scene("snapshot16", 11, 13, seed=4)
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(noise, spatial=spatial))
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    maps, flags, _, _ = run_emulated(qemu, plan, raw, block=32)
    compare(a, maps, flags, None)


@pytest.mark.parametrize("temporal", [False, True])
def test_low_blood_pixels_enter_no_average(qemu, temporal):
    """The spatial step's rule on tests/processing's low_blood_patch, by the emulated kernels:
    quality_pixel's ok plane keeps the patch out of bilateral_f32's means, and the device
    finish gives the patch its raw value, variance and StO2 index (from quality_pixel's own
    index terms); with the temporal step the host finish (finish_quality) does.  Equal to
    numpy's within compare's tolerances."""
    from edge.processing.temporal import TemporalFilter, TemporalParams

    pack = PackSpec(spectra_bands=(0, 2, 4), maps=("sto2", "sto2_index"))
    plan, raw, patch = low_blood_patch(pack=pack)
    extra = {}
    if temporal:
        rules = dataclasses.replace(plan.quality, temporal=TemporalParams("recursive", 4, 4.0))
        plan = dataclasses.replace(plan, quality=rules)
        extra = dict(temporal=TemporalFilter(rules.temporal), stream_key=float(EXPOSURE))
    assert (host_finish_reason(plan) is None) != temporal
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    maps, flags, packed, _ = run_emulated(qemu, plan, raw, **extra)
    bare, _, _ = low_blood_patch(spatial="none")
    check_low_blood_rule(maps, flags, NumpyBackend(bare).run(raw, exposure_us=EXPOSURE),
                         patch)
    compare(a, maps, flags, packed)


def _thb_axis_plan(plan, raw, rows=4):
    """``plan`` with a StO2 table that has a THb axis (issue 14): its own curve raised to
    powers 0.7 .. 0.7 + 0.2 (rows - 1) (monotone, in [0, 1], distinct), rows between the 20th
    and 80th percentiles of the frame's sqrt(THb), so pixels fall below, between and above."""
    from edge.processing.sto2 import Sto2Calibration

    base = plan.calibration
    thb = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE).maps["thb"]
    lo, hi = np.percentile(np.sqrt(thb[np.isfinite(thb) & (thb > 0)]), [20, 80])
    grid = np.stack([base.table_grid[0].astype(np.float64) ** (0.7 + 0.2 * j)
                     for j in range(rows)]).astype(np.float32)
    cal = Sto2Calibration(base.table_x, grid, base.meta,
                          thb_axis=(float(lo), float(hi - lo) / (rows - 1)))
    return dataclasses.replace(plan, calibration=cal)


@pytest.mark.parametrize("spatial,counts", [("bilateral", True), ("none", True),
                                            ("bilateral", False)])
def test_table_with_thb_axis_matches_numpy(qemu, spatial, counts):
    """A StO2 table with a THb axis through the whole emulated CUDA quality path: the fused
    chain's sto2 (chain_finish), the device finish's sto2_all (sto2_calibrate on the filtered
    raw StO2 with the pixel's own THb map value) and its sigma (q_slope on knot_slopes'
    (R, K-1) rows, blended by THb) against NumpyBackend (finish_quality with
    apply(s, thb) / calibration_slope(cal, s, thb)); compare's tolerances."""
    p, ff, noise, raw = scene("snapshot25", 23, 29, seed=25)
    wl = p.wavelength_array()
    pack = PackSpec(spectra_bands=(0, 2), maps=("sto2", "thb"))
    plan = ChainPlan.build(wl, flatfield=ff, fwhm_nm=p.fwhm_nm, pack=pack,
                           quality=QualityRules(noise, spatial=spatial, spatial_radius=2))
    if not counts:          # reflectance input: no variance, no sigma
        raw = np.ascontiguousarray(ff.apply(raw, EXPOSURE)[0], np.float32)
    plan2 = _thb_axis_plan(plan, raw)
    assert plan2.calibration.n_rows == 4 and host_finish_reason(plan2) is None
    a = NumpyBackend(plan2).run(raw, exposure_us=EXPOSURE)
    maps, flags, packed, _ = run_emulated(qemu, plan2, raw)
    compare(a, maps, flags, packed)
    # the THb axis moved the maps: the plan's own table gives other values
    one = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    ok = np.isfinite(a.maps["sto2_all"])
    assert ok.sum() > 100
    assert np.abs(a.maps["sto2_all"][ok] - one.maps["sto2_all"][ok]).max() > 0.01
    if counts:
        assert np.isfinite(maps["sto2_sigma"]).sum() > 100


def test_float32_input_has_no_sigma(qemu):
    """Reflectance input: no counts, so var is not computed and sigma is NaN everywhere."""
    p, ff, noise, raw = scene("snapshot25", 9, 12, seed=5)
    refl, _ = _tissue(p.wavelength_array(), p.fwhm_nm, 9 * 12, 2)
    cube = np.ascontiguousarray(refl.reshape(9, 12, -1), np.float32)
    plan = ChainPlan.build(p.wavelength_array(), fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(noise, spatial="bilateral"))
    a = NumpyBackend(plan).run(cube, exposure_us=EXPOSURE)
    maps, flags, _, _ = run_emulated(qemu, plan, cube)
    assert np.all(np.isnan(maps["sto2_sigma"]))
    compare(a, maps, flags, None)


@pytest.mark.parametrize("radius,rows,cols,terms", [(1, 37, 53, 14), (3, 37, 53, 14),
                                                    (5, 17, 29, 3), (8, 40, 33, 9),
                                                    (3, 5, 4, 0)])
def test_spatial_step_equals_bilateral_filter(qemu, radius, rows, cols, terms):
    """bilateral_f32 (emulated) against bilateral_filter on random inputs with invalid pixels
    and a guide edge: partial tiles, halos larger than the frame (5x4 at radius 3), terms
    split over launches (14 = 6 + 6 + 2, 9 = 6 + 3), no terms."""
    rng = np.random.default_rng(radius * 100 + rows)
    values = rng.uniform(0.2, 0.9, (rows, cols)).astype(np.float32)
    var = rng.uniform(1e-4, 4e-3, (rows, cols)).astype(np.float32)
    guide = rng.normal(0, 0.03, (rows, cols, 5)).astype(np.float32)
    guide[:, cols // 2:] += 0.3
    t = rng.normal(0, 1, (rows, cols, terms)).astype(np.float32) if terms else None
    valid = rng.uniform(size=(rows, cols)) > 0.1
    values[0, 0] = np.nan
    var[1, 1] = 0.0                       # not > 0: left out like a NaN
    params = BilateralParams(radius=radius, sigma_s=2 * radius / 3, h=0.08)
    want = bilateral_filter(values, var, guide, valid, params, t)
    got = emulated_filter(qemu, rows, cols, [])(values, var, guide, valid, params, t)
    for w, g in zip(want, got):
        if w is None:
            assert g is None
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g[np.isfinite(w)], w[np.isfinite(w)], rtol=2e-6,
                                   atol=2e-7)
    # without a variance (no noise model)
    w2 = bilateral_filter(values, None, guide, valid, params, t)
    g2 = emulated_filter(qemu, rows, cols, [])(values, None, guide, valid, params, t)
    assert g2[1] is None
    np.testing.assert_allclose(g2[0], w2[0], rtol=2e-6, atol=2e-7)


def test_launches_fit_shared_memory_and_cover_every_term():
    from cuda_kernels import KERNEL_DIR
    from edge.backends.cuda_ops import STATIC_SHARED_LIMIT
    header = (KERNEL_DIR / "quality_tail.cuh").read_text()
    assert f"#define HSI_BIL_TC {BIL_TERMS_PER_LAUNCH}\n" in header
    for radius in range(1, 9):
        for n in (0, 1, 8, 9, 14, 30):
            ls = bilateral_launches(480, 640, radius, 5, n)
            assert all(ln.shared <= STATIC_SHARED_LIMIT for ln in ls)
            assert sum(ln.tc for ln in ls) == n
            assert [ln.t0 for ln in ls] == list(range(0, max(n, 1), BIL_TERMS_PER_LAUNCH))
    assert bilateral_launches(480, 640, 3, 5, 14)[0].block == (16, 16, 1)
    for bands in (16, 25, 100, 256):
        for counts in (False, True):
            assert pixel_launch(1000, bands, counts).shared <= STATIC_SHARED_LIMIT


@pytest.mark.parametrize("radius", [3, None])
def test_temporal_step_runs_in_the_cuda_finish(qemu, radius):
    """A plan with the motion-gated temporal step (edge.processing.temporal): three frames
    through the emulated CUDA path with its own state equal the NumPy backend's frames (the
    finish is finish_quality itself, the guide downloaded from the device); 7x7 and
    snapshot25's own 15x15.  (While low-blood pixels entered the spatial step, 11x11 and
    15x15 failed here: a pixel with c_o + c_d near 0, whose float32 variance differs by 9e-4
    relative between band-order and sgemm sums, dominated its neighbours' averaged variance
    and passed that difference on to sigmas of 5-100 points.)"""
    from edge.processing.temporal import TemporalFilter, TemporalParams

    p, ff, noise, raw0 = scene("snapshot25", 17, 19, seed=8)
    rules = QualityRules(noise, spatial="bilateral", spatial_radius=radius,
                         temporal=TemporalParams("recursive", window=4, gate=4.0))
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm,
                           quality=rules)
    ref = NumpyBackend(plan)
    state = TemporalFilter(rules.temporal)
    for k in range(3):
        _, _, _, raw = scene("snapshot25", 17, 19, seed=20 + k)
        a = ref.run(raw, exposure_us=EXPOSURE)
        maps, flags, _, _ = run_emulated(qemu, plan, raw, temporal=state,
                                         stream_key=float(EXPOSURE))
        compare(a, maps, flags, None)


def test_header_flag_bits_and_where_the_finish_runs():
    """quality_math.cuh's flag bits are edge.core.chain's; the finish leaves the device only
    for what its kernel lacks (the temporal step, inverse-variance weights, the band
    registration's correlated noise)."""
    import dataclasses
    import re

    from cuda_kernels import KERNEL_DIR
    from edge.core.chain import FLAG_LOW_BLOOD, FLAG_SPECULAR, FLAG_UNCERTAIN
    from edge.processing.temporal import TemporalParams

    text = (KERNEL_DIR / "quality_math.cuh").read_text()
    bits = {k: int(v) for k, v in re.findall(r"#define HSI_FLAG_(\w+) (\d+)u", text)}
    assert bits == {"LOW_BLOOD": FLAG_LOW_BLOOD, "UNCERTAIN": FLAG_UNCERTAIN,
                    "SPECULAR": FLAG_SPECULAR}
    p, ff, noise, _ = scene("snapshot16", 4, 5, seed=1)
    wl = p.wavelength_array()
    plan = ChainPlan.build(wl, flatfield=ff, quality=QualityRules(noise, spatial="bilateral"))
    assert host_finish_reason(plan) is None
    video = ChainPlan.build(wl, flatfield=ff, quality=QualityRules(
        noise, temporal=TemporalParams("recursive")))
    assert host_finish_reason(video) == "the temporal step"
    inv = dataclasses.replace(plan, bilateral=BilateralParams(inverse_variance=True))
    assert host_finish_reason(inv) == "inverse-variance weights in the spatial step"
    registered = dataclasses.replace(plan, registration_gain=0.25)
    assert host_finish_reason(registered) == ("the band registration's correlated noise in "
                                              "the spatial step")
