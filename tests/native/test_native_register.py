"""Compiled band registration (``hsi_cpu_register``, cuda_kernels/cpu_register.h, issue 14)
against the NumPy reference, BandRegistration.apply: bit for bit, except a statically flagged
pixel's fill value (the mean of its valid 3x3 neighbours), which may differ from NumPy's in the
last bit and so moves a registered count of its 5x5 neighbourhood by at most 1."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.mosaic import mosaic_offsets
from edge.backends.native import NativeBackend
from edge.backends.numpy_backend import NumpyBackend
from edge.errors import DataFormatError
from edge.processing.flatfield import FlatField
from edge.processing.plan import ChainPlan
from edge.processing.register import BandRegistration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "processing"))
from test_quality import EXPOSURE, _camera, _tissue  # noqa: E402

MOSAICS = [(16, 4), (25, 5)]
SHAPES = [(37, 53), (1, 53), (37, 1), (1, 1), (2, 3)]


def _reg(bands: int, mosaic: int) -> BandRegistration:
    return BandRegistration.from_offsets(mosaic_offsets(bands, mosaic), bands)


def _frame(shape, bands, seed, top=3000):
    """Random counts below ``top`` and a float32 dark of 50-80 counts."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, top, (*shape, bands), dtype=np.uint16)
    dark = rng.uniform(50.0, 80.0, (*shape, bands)).astype(np.float32)
    return raw, dark


def _native(lib, reg, raw, dark=None, flags=None, saturation=float("inf"), threads=2):
    """hsi_cpu_register on ``raw``, into an output poisoned with 0xBEEF first."""
    ky = np.ascontiguousarray(reg.ky, np.float32)
    kx = np.ascontiguousarray(reg.kx, np.float32)
    out = np.full(raw.shape, 0xBEEF, np.uint16)
    rows, cols, bands = raw.shape
    rc = lib.hsi_cpu_register(raw.ctypes.data, None if dark is None else dark.ctypes.data,
                              None if flags is None else flags.ctypes.data, rows, cols, bands,
                              ky.ctypes.data, kx.ctypes.data, saturation, out.ctypes.data,
                              threads)
    assert rc == 0
    return out


@pytest.mark.parametrize("bands,mosaic", MOSAICS)
@pytest.mark.parametrize("shape", SHAPES)
def test_register_equals_numpy(native, bands, mosaic, shape):
    """No flags, no saturation: every count equal, edges (1 row, 1 column) included."""
    reg = _reg(bands, mosaic)
    raw, dark = _frame(shape, bands, seed=shape[0] * 100 + shape[1])
    want = reg.apply(raw, dark)
    np.testing.assert_array_equal(_native(native.lib, reg, raw, dark), want)
    np.testing.assert_array_equal(_native(native.lib, reg, raw), reg.apply(raw))   # no dark


def test_register_rounds_and_clips_like_numpy(native):
    """Counts near 0 and 65535 with a dark above them: the clip at both ends, and halves
    rounded to even (a flat frame of x.5 counts above a zero dark)."""
    reg = _reg(25, 5)
    rng = np.random.default_rng(3)
    raw = rng.choice(np.array([0, 1, 65534, 65535], np.uint16), (9, 11, 25))
    dark = np.full(raw.shape, 90.0, np.float32)
    np.testing.assert_array_equal(_native(native.lib, reg, raw, dark), reg.apply(raw, dark))
    half = np.full((5, 6, 25), 7, np.uint16)
    dark = np.full(half.shape, -0.5, np.float32)      # x = 7.5 everywhere, out = rint(8.0)
    np.testing.assert_array_equal(_native(native.lib, reg, half, dark), reg.apply(half, dark))


def test_register_zero_taps(native):
    """Kernels with taps that are zero for every band (skipped, as the reference skips
    them) and an identity band: equal to the reference."""
    reg = _reg(16, 4)
    ky = reg.ky.copy()
    ky[:, 0] = 0.0
    ky[:, 4] = 0.0
    ky[0] = [0, 0, 1, 0, 0]
    custom = BandRegistration(reg.offsets, ky, reg.kx)
    raw, dark = _frame((13, 17), 16, seed=5)
    np.testing.assert_array_equal(_native(native.lib, custom, raw, dark),
                                  custom.apply(raw, dark))


@pytest.mark.parametrize("bands,mosaic", MOSAICS)
@pytest.mark.parametrize("shape", [(37, 53), (1, 53), (37, 1), (3, 3)])
def test_register_static_flags(native, bands, mosaic, shape):
    """A few flagged pixels (a corner, an edge, a pair of neighbours): equal outside the 5x5
    neighbourhoods of flagged pixels, within 1 count inside, a flagged pixel keeps its raw
    counts."""
    reg = _reg(bands, mosaic)
    raw, dark = _frame(shape, bands, seed=7)
    flags = np.zeros(shape, np.uint8)
    rows, cols = shape
    for r, c in [(0, 0), (rows // 2, cols - 1), (rows - 1, cols // 2),
                 (rows // 2, cols // 2), (rows // 2, min(cols // 2 + 1, cols - 1))]:
        flags[r, c] = 4
    want = reg.apply(raw, dark, flags)
    got = _native(native.lib, reg, raw, dark, flags)
    near = np.zeros(shape, bool)
    for r, c in np.argwhere(flags):
        near[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = True
    np.testing.assert_array_equal(got[~near], want[~near])
    assert np.abs(got.astype(np.int32) - want).max() <= 1
    np.testing.assert_array_equal(got[flags != 0], raw[flags != 0])


def test_register_all_flagged(native):
    """Every pixel flagged: no valid neighbour anywhere (the fill is 0), every pixel keeps its
    counts."""
    reg = _reg(16, 4)
    raw, dark = _frame((4, 5), 16, seed=8)
    flags = np.ones((4, 5), np.uint8)
    got = _native(native.lib, reg, raw, dark, flags)
    np.testing.assert_array_equal(got, reg.apply(raw, dark, flags))
    np.testing.assert_array_equal(got, raw)


@pytest.mark.parametrize("bands,mosaic", MOSAICS)
@pytest.mark.parametrize("shape", [(37, 53), (1, 53), (37, 1), (2, 3)])
def test_register_saturation_windows(native, bands, mosaic, shape):
    """Saturated pixels (one band at/above the level) at edges and inside, with a flagged
    pixel among them: every pixel whose window reads one is ceil(saturation) in every band,
    exactly the reference's window; a non-integer level is rounded up as there."""
    reg = _reg(bands, mosaic)
    raw, dark = _frame(shape, bands, seed=11)
    rows, cols = shape
    for i, (r, c) in enumerate([(0, cols - 1), (rows // 2, cols // 2), (rows - 1, 0)]):
        raw[r, c, i % bands] = 4000
    flags = np.zeros(shape, np.uint8)
    flags[rows // 2, 0] = 1
    for level in (4000.0, 3999.5):
        want = reg.apply(raw, dark, flags, level)
        got = _native(native.lib, reg, raw, dark, flags, level)
        win = np.all(want == 4000, axis=2)
        assert win.any() and not win.all() or rows * cols <= 6
        np.testing.assert_array_equal(np.all(got == 4000, axis=2), win)
        near = np.zeros(shape, bool)
        near[max(rows // 2 - 2, 0):rows // 2 + 3, 0:3] = True
        np.testing.assert_array_equal(got[~near], want[~near])
        assert np.abs(got.astype(np.int32) - want).max() <= 1


def test_register_threads_agree(native):
    """threads=1, 2 and more threads than rows give the same counts."""
    reg = _reg(25, 5)
    raw, dark = _frame((41, 29), 25, seed=13)
    flags = np.zeros((41, 29), np.uint8)
    flags[20, 14] = flags[0, 3] = 1
    raw[30, 7, 2] = 4095
    one = _native(native.lib, reg, raw, dark, flags, 4095.0, threads=1)
    np.testing.assert_array_equal(_native(native.lib, reg, raw, dark, flags, 4095.0, 2), one)
    np.testing.assert_array_equal(_native(native.lib, reg, raw, dark, flags, 4095.0, 64), one)


def test_register_refuses_bad_sizes(native):
    """Sizes < 1 and NULL buffers: an error code, nothing written."""
    reg = _reg(16, 4)
    ky = np.ascontiguousarray(reg.ky, np.float32)
    raw = np.zeros((2, 2, 16), np.uint16)
    out = np.full_like(raw, 7)
    lib = native.lib
    args = (raw.ctypes.data, None, None)
    assert lib.hsi_cpu_register(*args, 0, 2, 16, ky.ctypes.data, ky.ctypes.data,
                                float("inf"), out.ctypes.data, 1) == 1
    assert lib.hsi_cpu_register(*args, 2, 2, 0, ky.ctypes.data, ky.ctypes.data,
                                float("inf"), out.ctypes.data, 1) == 1
    assert lib.hsi_cpu_register(*args, 2, 2, 16, None, ky.ctypes.data, float("inf"),
                                out.ctypes.data, 1) == 2
    assert np.all(out == 7)


# ---- through the backend ---------------------------------------------------------------------
def registered_scene(rows=24, cols=30):
    """A noisy snapshot25 frame with a brightness edge and its registration:
    (preset, flat field, noise model, raw, reflectance, BandRegistration)."""
    p, sensor, ff, noise = _camera("snapshot25", rows, cols)
    refl, _ = _tissue(p.wavelength_array(), p.fwhm_nm, rows * cols, 5)
    refl = refl.reshape(rows, cols, -1)
    refl[:, cols // 2:] *= 0.7
    raw = sensor.expose(refl, EXPOSURE, 1.0, 4)
    reg = BandRegistration.from_offsets(mosaic_offsets(25, 5), 25)
    return p, ff, noise, raw, refl, reg


def _registered_plan(rows=24, cols=30, flagged=((3, 4), (10, 29))):
    p, ff, _, raw, refl, reg = registered_scene(rows, cols)
    flags = np.array(ff.static_flags, np.uint8)
    for r, c in flagged:
        flags[r, c] = 1
    ff = FlatField(ff.dark, ff.scale, flags, exposure_us=ff.exposure_us,
                   saturation=ff.saturation)
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm,
                           registration=reg)
    return plan, raw, refl


def test_backend_registers_natively(native):
    """NativeBackend registers uint16 counts with the compiled pass: its registered counts are
    the plan's (NumPy) within 1 count, equal away from flagged pixels, and its reflectance is
    NumpyBackend's bit for bit wherever the registered counts agree."""
    plan, raw, _ = _registered_plan()
    nat = NativeBackend(plan, threads=2, cache_dir=native.cache_dir)
    want = plan.register(raw)
    got = nat.register(raw)
    assert np.abs(got.astype(np.int32) - want).max() <= 1
    agree = np.all(got == want, axis=2)
    assert agree.mean() >= 0.95
    flagged = np.array(plan.flatfield.static_flags) != 0
    near = np.zeros(agree.shape, bool)
    for r, c in np.argwhere(flagged):
        near[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = True
    assert agree[~near].all()
    a = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    b = nat.run(raw, exposure_us=EXPOSURE)
    assert b.timings_ms["register"] > 0
    np.testing.assert_array_equal(b.reflectance[agree], a.reflectance[agree])
    np.testing.assert_array_equal(b.flags[agree], a.flags[agree])
    # check_frame only checks: the frame stays as delivered
    np.testing.assert_array_equal(plan.check_frame(raw, compiled=True), raw)


def test_backend_float32_frames_use_the_reference(native):
    """Float32 reflectance (no counts) is registered by the plan's NumPy reference: the same
    reflectance as NumpyBackend's."""
    plan, _, refl = _registered_plan()
    cube = np.ascontiguousarray(refl, np.float32)
    a = NumpyBackend(plan).run(cube, exposure_us=None)
    b = NativeBackend(plan, cache_dir=native.cache_dir).run(cube, exposure_us=None)
    np.testing.assert_array_equal(b.reflectance, a.reflectance)


def test_backend_register_refuses_other_frames(native):
    """NativeBackend.register takes the flat field's uint16 shape only (one line)."""
    plan, raw, _ = _registered_plan()
    nat = NativeBackend(plan, cache_dir=native.cache_dir)
    with pytest.raises(DataFormatError, match=r"raw: expected uint16 counts of shape "
                                              r"\(24, 30, 25\) .* got float32 \(24, 30, 25\)"):
        nat.register(raw.astype(np.float32))
    with pytest.raises(DataFormatError, match=r"raw: expected uint16 counts .* got uint16 "
                                              r"\(24, 29, 25\)"):
        nat.register(np.ascontiguousarray(raw[:, :29]))
    bare = NativeBackend(ChainPlan.build(plan.wavelengths, flatfield=plan.flatfield),
                         cache_dir=native.cache_dir)
    with pytest.raises(DataFormatError, match=r"needs a plan with a registration"):
        bare.register(raw)
