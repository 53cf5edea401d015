"""The native CPU chain (cuda_kernels/cpu_chain.cpp via edge.backends.native) against the
NumPy reference backend.

Tolerances (why they are what they are):

- reflectance and flags: the flat field is compiled with ``-ffp-contract=off`` and follows
  NumPy's ``((I - D) * scale) * factor`` operation for operation, and the flag rules are the
  reference's: **bit-identical** (NaN positions included).
- maps: the absorbance uses ``hsi_logf`` (within 1 ulp of the correctly rounded log, checked
  below) and the unmixing / window sums / Savitzky-Golay taps add in another order (8-lane
  FMA accumulators) than OpenBLAS's sgemm in ``NumpyBackend.run``: float32 rounding of sums
  of ~100 terms, so finite values agree within **rtol 1e-5, atol 1e-6** (the atol covers
  values near 0, e.g. clipped indices and small haemoglobin totals); NaN positions identical.
- packed input: float32 within the same rtol/atol (the L1 sum runs in 4 partial sums);
  float16 within **one float16 ulp** of the reference (both round a float32 that differs only
  by float32 rounding to the nearest float16).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging

import numpy as np
import pytest
import yaml

from edge.backends.base import FLAG_NONFINITE, FLAG_SATURATED, FLAG_UNMIX_INVALID, PackSpec
from edge.backends.cuda_params import MAX_BANDS
from edge.backends.native import MAP_NAMES, NativeBackend
from edge.backends.numpy_backend import NumpyBackend
from edge.errors import CalibrationError, ConfigError, DataFormatError

from hsi_cuda_scenes import make_scene, synthetic_calibration, synthetic_calibration_2d

RTOL, ATOL = 1e-5, 1e-6
F32 = np.finfo(np.float32)


# ---- helpers -------------------------------------------------------------------------------
def _log(native, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.full_like(x, -7.0)                       # poisoned: every element must be written
    native.lib.hsi_cpu_log(x.ctypes.data, x.size, out.ctypes.data)
    return out


def _backends(scene, native, *, pack=None, flatfield=True, **kw):
    """A NativeBackend and a NumpyBackend on the same configuration."""
    common = dict(flatfield=scene.flatfield if flatfield else None,
                  chromophores=scene.unmixer.chromophores, baseline=scene.unmixer.baseline,
                  calibration=scene.calibration, pack=pack)
    return (NativeBackend(scene.wl, cache_dir=native.cache_dir, **common, **kw),
            NumpyBackend(scene.wl, **common))


def assert_matches(res, ref, *, pack_dtype=None):
    """The tolerances of the module docstring, output by output."""
    assert res.reflectance.dtype == np.float32 and res.reflectance.shape == ref.reflectance.shape
    assert np.array_equal(res.reflectance, ref.reflectance, equal_nan=True), "reflectance"
    assert res.flags.dtype == np.uint8
    np.testing.assert_array_equal(res.flags, ref.flags, err_msg="flags")
    assert set(res.maps) == set(MAP_NAMES)
    for name in MAP_NAMES:
        out, exp = res.maps[name], ref.maps[name]
        assert out.dtype == np.float32 and out.shape == exp.shape, name
        np.testing.assert_array_equal(np.isnan(out), np.isnan(exp), err_msg=f"{name}: NaN")
        fin = ~np.isnan(exp)
        np.testing.assert_allclose(out[fin], exp[fin], rtol=RTOL, atol=ATOL, err_msg=name)
    if pack_dtype is None:
        assert res.input is None and ref.input is None
        return
    assert res.input.dtype == np.dtype(pack_dtype) and res.input.shape == ref.input.shape
    out, exp = res.input.astype(np.float64), ref.input.astype(np.float64)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(exp), err_msg="input finite")
    if pack_dtype == "float32":
        np.testing.assert_allclose(out, exp, rtol=RTOL, atol=ATOL, err_msg="input")
    else:
        ulp = np.spacing(np.abs(ref.input)).astype(np.float64)
        bad = np.abs(out - exp) > ulp
        assert not bad.any(), f"float16 input: {bad.sum()} values differ by more than 1 ulp"


# ---- 1. hsi_logf ---------------------------------------------------------------------------
def _ulps(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Error of ``out`` against the correctly rounded float32 log, in ulps of the smaller of
    the two values (so a result just below a power of two counts the finer spacing)."""
    ref = np.log(x.astype(np.float64)).astype(np.float32)
    assert np.all(np.sign(out) == np.sign(ref))
    sp = np.spacing(np.minimum(np.abs(out), np.abs(ref))).astype(np.float64)
    return np.abs(out.astype(np.float64) - ref.astype(np.float64)) / sp


def test_logf_within_one_ulp_log_uniform(native):
    rng = np.random.default_rng(20240611)
    x = np.exp(rng.uniform(np.log(1e-4), np.log(1e4), 1_000_000)).astype(np.float32)
    err = _ulps(_log(native, x), x)
    assert err.max() <= 1.0, f"max {err.max()} ulp at x={x[err.argmax()]!r}"
    assert np.mean(err == 0) > 0.9      # mostly correctly rounded, not merely "close"


def test_logf_near_one_and_powers_of_two(native):
    k = np.arange(1, 4097, dtype=np.float64)
    # 1 + k ulp above one, 1 - k ulp below (the ulp below 1 is 2^-24): where log's relative
    # accuracy is hardest (cancellation in f = m - 1), plus 1 itself (log 1 = 0 exactly).
    near = np.concatenate([1 + k * 2.0**-23, 1 - k * 2.0**-24, 1 - k * 2.0**-23, [1.0]])
    near = near.astype(np.float32)
    out = _log(native, near)
    assert out[-1] == 0.0
    assert _ulps(out, near).max() <= 1.0
    # every power of two of the normal range: k * ln2 with the split constant
    p2 = np.ldexp(np.float32(1), np.arange(-126, 128)).astype(np.float32)
    assert _ulps(_log(native, p2), p2).max() <= 1.0


def test_logf_whole_normal_range(native):
    # The chain clips R to eps >= FLT_MIN first, so every normal float32 can reach the log.
    rng = np.random.default_rng(7)
    x = np.exp(rng.uniform(np.log(F32.tiny), np.log(F32.max), 200_000)).astype(np.float32)
    x = np.concatenate([x[np.isfinite(x)], [F32.tiny, F32.max]]).astype(np.float32)
    assert _ulps(_log(native, x), x).max() <= 1.0


def test_logf_nan_and_inf_pass_through(native):
    out = _log(native, np.array([np.nan, np.inf, -np.nan], np.float32))
    assert np.isnan(out[0]) and out[1] == np.inf and np.isnan(out[2])


# ---- 2. parity with NumpyBackend.run -----------------------------------------------------
@pytest.fixture(scope="module")
def simulated():
    """A 37x53 TIVITA-preset frame from the simulated camera, with the flat field captured
    from it by the pipeline's own helper (as ``hsi-edge run`` does)."""
    from edge.core.config import from_mapping
    from edge.pipeline.app import build_camera, obtain_flatfield
    from edge.pipeline.config import AppConfig

    cfg = from_mapping(AppConfig, {"camera": {"preset": "tivita", "rows": 37, "cols": 53,
                                              "seed": 5},
                                   "calibration": {"frames": 2}, "model": {"card": "none"}})
    with contextlib.ExitStack() as stack:
        cam, _ = build_camera(cfg, stack)
        ff = obtain_flatfield(cfg, cam)
        cam.arm()
        frame = cam.grab(5.0)
        return cfg, cam.wavelengths, cam.fwhm_nm, ff, frame


@pytest.mark.parametrize("pack_dtype", [None, "float32", "float16"])
def test_simulated_frame_matches_numpy(native, simulated, pack_dtype):
    _, wl, fwhm, ff, frame = simulated
    assert frame.cube.shape == (37, 53, 100) and frame.cube.dtype == np.uint16
    pack = None if pack_dtype is None else PackSpec(
        spectra_bands=tuple(range(100)), maps=("sto2", "nir", "thi", "twi"), dtype=pack_dtype)
    kw = dict(flatfield=ff, fwhm_nm=fwhm, pack=pack)
    res = NativeBackend(wl, cache_dir=native.cache_dir, **kw).run(
        frame.cube, exposure_us=frame.meta.exposure_us)
    ref = NumpyBackend(wl, **kw).run(frame.cube, exposure_us=frame.meta.exposure_us)
    # the scene is not trivial: tissue, and background without haemoglobin
    assert np.mean(ref.flags == 0) > 0.3 and np.any(ref.flags == FLAG_UNMIX_INVALID)
    assert_matches(res, ref, pack_dtype=pack_dtype)


def _raw_with_faults(scene) -> np.ndarray:
    """The scene's raw counts (static flags, a saturated band) plus pixels darker than the
    dark reference: negative reflectance -> the eps floor -> FLAG_UNMIX_INVALID."""
    raw = scene.raw.copy()
    raw[2, 3, :3] = 0
    raw[4, 1, -1] = 0
    raw[0, 5] = 0                        # the whole spectrum below dark
    raw[1, 2, raw.shape[2] // 2] = 1023  # saturated (10-bit full scale)
    return raw


@pytest.mark.parametrize("bands, wl_range", [
    (7, (500.0, 1000.0)), (31, (500.0, 1000.0)), (100, (500.0, 1000.0)),
    (128, (450.0, 1000.0)), (MAX_BANDS, (450.0, 1000.0))])
@pytest.mark.parametrize("pack_dtype", [None, "float32", "float16"])
@pytest.mark.parametrize("exposure_us", [1000.0, 950.0])     # factor 1 and 1000/950
def test_uint16_frames_match_numpy(native, bands, wl_range, pack_dtype, exposure_us):
    s = make_scene(13, 17, bands, seed=100 + bands, wl_range=wl_range)
    raw = _raw_with_faults(s)
    # irregular band selection (a gather, not a stride) and every map once
    pack = None if pack_dtype is None else PackSpec(
        spectra_bands=tuple(range(0, bands, 3)) + (bands - 1,), maps=MAP_NAMES,
        dtype=pack_dtype)
    nat, ref_be = _backends(s, native, pack=pack)
    res = nat.run(raw, exposure_us=exposure_us)
    ref = ref_be.run(raw, exposure_us=exposure_us)
    flags = ref.flags
    assert flags[2, 3] == flags[4, 1] == flags[0, 5] == FLAG_UNMIX_INVALID
    assert flags[1, 2] & FLAG_SATURATED and np.any(flags == 0)
    # the static flags of the scene's flat field (bad pixel, under-exposed white)
    assert np.any(s.flatfield.static_flags) and np.all(flags[s.flatfield.static_flags != 0])
    assert_matches(res, ref, pack_dtype=pack_dtype)


@pytest.mark.parametrize("rows", [2, 5, 16])
def test_table_with_thb_axis_matches_numpy(native, rows):
    """A StO2 table with a THb axis (issue 14): the native chain picks the rows by the pixel's
    own THb (chain_finish -> sto2_calibrate) like Sto2Calibration.apply(sto2_raw, thb);
    sqrt(THb) axis 0.14 + j * 0.03 / (rows - 1) inside the scene's (about 0.124-0.198), so
    pixels fall below, between and above the rows."""
    s = make_scene(13, 17, 31, seed=140 + rows)
    s.calibration = synthetic_calibration_2d(rows=rows, dq=0.03 / (rows - 1))
    raw = _raw_with_faults(s)
    pack = PackSpec(spectra_bands=(0, 5), maps=("sto2", "thb"), dtype="float32")
    nat, ref_be = _backends(s, native, pack=pack)
    res = nat.run(raw, exposure_us=1000.0)
    ref = ref_be.run(raw, exposure_us=1000.0)
    assert_matches(res, ref, pack_dtype="float32")
    # the THb axis changes the map: the same raw StO2 through row 0 alone differs
    ok = np.isfinite(ref.maps["sto2"])
    q = np.sqrt(ref.maps["thb"][ok])
    assert (q < s.calibration.thb_x0).any() and (q > s.calibration.thb_x0 + 0.03).any()
    row0 = s.calibration.table_grid[0]
    one = type(s.calibration)(s.calibration.table_x, row0)
    assert not np.allclose(res.maps["sto2"][ok], one.apply(ref_be.unmixer.maps(
        ref.reflectance)["sto2_raw"][ok]), atol=1e-3)


@pytest.mark.parametrize("pack_dtype", [None, "float32", "float16"])
@pytest.mark.parametrize("bands", [7, 100])
def test_float32_reflectance_with_nan_and_inf_matches_numpy(native, bands, pack_dtype):
    s = make_scene(11, 9, bands, seed=200 + bands)
    cube = s.reflectance.copy()           # has one NaN and one +inf pixel
    cube[3, 3, bands // 2] = -np.inf
    cube[5, 5, :2] = -0.01                # negative reflectance -> floor -> unmix invalid
    pack = None if pack_dtype is None else PackSpec(
        spectra_bands=tuple(range(bands)), maps=("sto2", "thi"), dtype=pack_dtype)
    for flatfield in (False, True):       # float32 input passes through either way
        nat, ref_be = _backends(s, native, pack=pack, flatfield=flatfield)
        res = nat.run(cube, exposure_us=1000.0)
        ref = ref_be.run(cube, exposure_us=1000.0)
        assert np.count_nonzero(ref.flags == FLAG_NONFINITE) == 3
        assert ref.flags[5, 5] == FLAG_UNMIX_INVALID
        assert_matches(res, ref, pack_dtype=pack_dtype)


def test_non_contiguous_frame_matches_numpy(native):
    s = make_scene(10, 12, 31, seed=51)
    raw = _raw_with_faults(s)
    view = raw[::-1]      # a mirrored frame: negative strides, same shape as the flat field
    assert not view.flags.c_contiguous
    nat, ref_be = _backends(s, native)
    assert_matches(nat.run(view, exposure_us=1000.0), ref_be.run(view, exposure_us=1000.0))


def test_byte_swapped_uint16_matches_numpy(native):
    """Big-endian uint16 counts (e.g. an ENVI file with ``byte order = 1`` read by a user's
    own code) are uint16 data: the NumPy reference calibrates them; so must the native
    backend (or both must refuse them)."""
    s = make_scene(6, 7, 31, seed=52)
    raw = _raw_with_faults(s).astype(">u2")
    nat, ref_be = _backends(s, native)
    ref = ref_be.run(raw, exposure_us=1000.0)
    assert_matches(nat.run(raw, exposure_us=1000.0), ref)


def test_threads_one_and_two_are_bit_identical(native):
    # 48x50 pixels: more than one OpenMP chunk (32 tiles of 32 pixels), so two threads work.
    s = make_scene(48, 50, 31, seed=301)
    raw = _raw_with_faults(s)
    pack = PackSpec(spectra_bands=tuple(range(31)), maps=("sto2", "thb"), dtype="float32")
    results = []
    for threads in (1, 2):
        nat, _ = _backends(s, native, pack=pack, threads=threads)
        assert nat.threads == (threads if native.openmp else 1)
        results.append(nat.run(raw, exposure_us=1000.0))
    a, b = results
    assert np.array_equal(a.reflectance, b.reflectance, equal_nan=True)
    np.testing.assert_array_equal(a.flags, b.flags)
    for name in MAP_NAMES:
        assert np.array_equal(a.maps[name], b.maps[name], equal_nan=True), name
    assert np.array_equal(a.input, b.input, equal_nan=True)


# ---- 3. limits and bad input ---------------------------------------------------------------
def test_too_many_bands_is_config_error(native):
    wl = np.linspace(450.0, 1000.0, MAX_BANDS + 1)
    with pytest.raises(ConfigError, match=r"bands: .*1-256 bands, got 257"):
        NativeBackend(wl, calibration=synthetic_calibration(), cache_dir=native.cache_dir)


@pytest.mark.parametrize("eps", [1e-39, 0.0, -1e-4, float("nan"), float("inf")])
def test_eps_below_smallest_normal_float32_is_config_error(native, eps):
    with pytest.raises(ConfigError, match=r"^eps: .*>= 1\.18e-38 .*got " + repr(eps)[:4]):
        NativeBackend(np.linspace(500, 1000, 31), eps=eps, cache_dir=native.cache_dir)


def test_eps_at_smallest_normal_float32_is_accepted(native):
    s = make_scene(3, 4, 31, seed=5)
    nat = NativeBackend(s.wl, eps=float(F32.tiny), calibration=s.calibration,
                        cache_dir=native.cache_dir)
    assert nat.params["eps"] == F32.tiny


@pytest.mark.parametrize("threads", [0, -2, 1.5, "2", True])
def test_bad_threads_is_config_error(native, threads):
    with pytest.raises(ConfigError, match=r"^threads: expected an integer >= 1 or None, got "
                                          + repr(threads).replace(".", r"\.")):
        NativeBackend(np.linspace(500, 1000, 31), threads=threads, cache_dir=native.cache_dir)


@pytest.fixture(scope="module")
def small(native):
    s = make_scene(6, 7, 31, seed=9)
    nat, _ = _backends(s, native)
    return s, nat


def test_int32_raw_is_data_format_error(native, small):
    s, nat = small
    with pytest.raises(DataFormatError,
                       match="raw: expected uint16 counts or float32 reflectance, got int32"):
        nat.run(s.raw.astype(np.int32), exposure_us=1000.0)
    with pytest.raises(DataFormatError, match="got float64"):
        nat.run(s.raw.astype(np.float64), exposure_us=1000.0)
    no_ff, _ = _backends(s, native, flatfield=False)
    with pytest.raises(DataFormatError, match="without a flatfield the backend takes float32 "
                                              "reflectance, got uint16"):
        no_ff.run(s.raw, exposure_us=1000.0)


def test_frame_shape_unlike_flatfield_is_calibration_error(small):
    s, nat = small
    with pytest.raises(CalibrationError, match=r"raw: frame shape \(5, 7, 31\) does not match "
                                               r"the calibration reference shape \(6, 7, 31\)"):
        nat.run(s.raw[:5], exposure_us=1000.0)


@pytest.mark.parametrize("shape", [(6, 7, 30), (6, 7, 32), (42, 31)])
def test_wrong_band_count_is_data_format_error(small, shape):
    s, nat = small
    with pytest.raises(DataFormatError, match=r"raw: expected shape \(rows, cols, 31\), got "
                                              + repr(shape).replace("(", r"\(").replace(")", r"\)")):
        nat.run(np.zeros(shape, np.uint16), exposure_us=1000.0)


@pytest.mark.parametrize("exposure", [0.0, -5.0, float("nan")])
def test_bad_exposure_is_calibration_error(small, exposure):
    s, nat = small
    with pytest.raises(CalibrationError, match=r"exposure_us: expected a finite exposure > 0"):
        nat.run(s.raw, exposure_us=exposure)


def test_unknown_pack_map_is_rejected(native, small):
    s, _ = small
    with pytest.raises(DataFormatError, match=r"pack.maps: unknown map\(s\) \['oxygen'\]"):
        _backends(s, native, pack=PackSpec(maps=("oxygen",)))


# ---- 4. output buffer pool -----------------------------------------------------------------
def _snapshot(res) -> dict[str, np.ndarray]:
    snap = {f"map_{n}": v.copy() for n, v in res.maps.items()}
    snap.update(flags=res.flags.copy(), reflectance=res.reflectance.copy(),
                input=res.input.copy())
    return snap


def _arrays(res) -> list[np.ndarray]:
    return [*res.maps.values(), res.flags, res.reflectance, res.input]


def test_kept_result_is_never_overwritten(native):
    s = make_scene(9, 11, 31, seed=41)
    other = make_scene(9, 11, 31, seed=42)
    pack = PackSpec(spectra_bands=tuple(range(31)), maps=("sto2",))
    nat, _ = _backends(s, native, pack=pack)
    r1 = nat.run(s.raw, exposure_us=1000.0)
    before = _snapshot(r1)
    for _ in range(4):                     # more runs than the pool holds sets
        r2 = nat.run(other.raw, exposure_us=1000.0)
        assert not np.array_equal(r2.reflectance, r1.reflectance, equal_nan=True)
        for a in _arrays(r1):
            assert all(a is not b for b in _arrays(r2))
            assert not np.shares_memory(a, r2.reflectance)
    for key, value in _snapshot(r1).items():
        assert np.array_equal(value, before[key], equal_nan=True), key


def test_kept_view_blocks_reuse(native):
    s = make_scene(9, 11, 31, seed=43)
    nat, _ = _backends(s, native)
    r1 = nat.run(s.raw, exposure_us=1000.0)
    sto2 = r1.maps["sto2"]                 # a view of the (6, rows, cols) maps block
    kept = sto2.copy()
    del r1
    raw2 = make_scene(9, 11, 31, seed=44).raw
    r2 = nat.run(raw2, exposure_us=1000.0)
    assert not np.shares_memory(r2.maps["sto2"], sto2)
    assert np.array_equal(sto2, kept, equal_nan=True)


def test_dropped_result_buffers_are_reused(native):
    """After the caller drops a result and every view of it, the next run writes into the
    same arrays (the page faults of fresh memory are what the pool saves)."""
    s = make_scene(9, 11, 31, seed=45)
    nat, _ = _backends(s, native)
    r1 = nat.run(s.raw, exposure_us=1000.0)
    refl_id, flags_id = id(r1.reflectance), id(r1.flags)
    del r1
    r2 = nat.run(s.raw, exposure_us=1000.0)
    assert id(r2.reflectance) == refl_id and id(r2.flags) == flags_id, \
        "the pool allocated new arrays although the earlier result was dropped"


def test_concurrent_runs_get_separate_buffers_and_right_results(native):
    """Runs from several threads at once (ctypes releases the GIL): every result matches the
    reference of its own frame, so no two runs shared an output set."""
    import threading

    scenes = [make_scene(9, 11, 31, seed=60 + i) for i in range(4)]
    nat, ref = _backends(scenes[0], native)
    expected = [ref.run(sc.raw, exposure_us=1000.0) for sc in scenes]
    results: dict = {}

    def work(i):
        for _ in range(5):
            r = nat.run(scenes[i].raw, exposure_us=1000.0)
            if not np.array_equal(r.reflectance, expected[i].reflectance, equal_nan=True):
                results[i] = "reflectance differs"
                return
        results[i] = r

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i in range(4):
        assert not isinstance(results[i], str), (i, results[i])
        assert_matches(results[i], expected[i])


# ---- 6. pipeline and CLI -------------------------------------------------------------------
def test_make_backend_native(native, simulated, monkeypatch):
    from edge.pipeline.app import make_backend

    monkeypatch.setenv("HSI_EDGE_NATIVE_CACHE", str(native.cache_dir))
    cfg, wl, fwhm, ff, frame = simulated

    class Cam:                             # what make_backend reads of a camera
        wavelengths, fwhm_nm = wl, fwhm

    # Without the StO2 quality step (tests/native/test_native_quality.py compares it): the
    # chain alone, like numpy's.
    cfg = dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing,
                                                                  quality=False))
    be = make_backend("native", Cam(), ff, None, cfg)
    assert isinstance(be, NativeBackend) and be.name == "native"
    ref = make_backend("numpy", Cam(), ff, None, cfg)
    assert_matches(be.run(frame.cube, exposure_us=frame.meta.exposure_us),
                   ref.run(frame.cube, exposure_us=frame.meta.exposure_us))


def test_cli_run_with_native_backend(native, tmp_path, monkeypatch, caplog):
    from edge.cli import main

    monkeypatch.setenv("HSI_EDGE_NATIVE_CACHE", str(native.cache_dir))
    cfg = {"camera": {"rows": 24, "cols": 32, "seed": 3}, "calibration": {"frames": 2},
           "model": {"card": "none"}, "sinks": {"png_every": 0, "npz_every": 1}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="edge.backends.native_build"):
        rc = main(["run", "--config", str(path), "--backend", "native", "--frames", "2",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    assert not any("compiling" in r.getMessage() for r in caplog.records), \
        "the run rebuilt a library that the session cache already holds"
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == "native" and m["frames_processed"] == 2
    assert "chain" in m["stages"]
    maps = sorted(out.glob("maps_*.npz"))
    assert len(maps) == 2
    with np.load(maps[0]) as z:
        valid = z["flags"] == 0
        assert valid.any() and np.all(np.isnan(z["sto2"][~valid]))
        assert np.nanmin(z["sto2"]) >= 0 and np.nanmax(z["sto2"]) <= 1
