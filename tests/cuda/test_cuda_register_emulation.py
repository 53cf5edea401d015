"""The band registration kernels (cuda_kernels/register.cu) emulated on the CPU against the
NumPy reference, BandRegistration.apply (tests/cuda/register_emulation.cpp includes the .cu).

The arguments are the ones the CUDA backend passes (edge.backends.cuda_register: tap masks,
saturated count, block size).  Contract (register_math.cuh): the reference's counts bit for
bit; where an output pixel's 5x5 neighbourhood holds a statically flagged pixel, within
1 count (the flagged pixel's fill, a float32 mean, may differ from NumPy's in the last bit);
saturated windows exactly.  Outputs are poisoned (0xBEEF) before every launch.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from drivers.sim.mosaic import mosaic_offsets
from edge.backends.cuda_register import (REGISTER_BLOCK, register_launch, saturated_count,
                                         tap_mask)
from edge.processing.register import TAPS, BandRegistration

from host_shim_build import build_library
from hsi_cuda_scenes import ptr

_P, _LL, _I, _F, _U, _H = (ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float,
                           ctypes.c_uint, ctypes.c_ushort)
SIGNATURES = {
    "emu_register_sat_pixel": [_P, _LL, _I, _F, _I, _P],
    "emu_register_u16": [_P, _P, _P, _P, _I, _I, _I, _P, _P, _U, _U, _H, _I, _P],
}
SRC = Path(__file__).resolve().parent / "register_emulation.cpp"
POISON = 0xBEEF


@pytest.fixture(scope="module")
def remu(tmp_path_factory):
    return build_library(SRC, tmp_path_factory.mktemp("remu") / "libhsi_remu.so",
                         ["-ffp-contract=off"], SIGNATURES, "host emulation of register.cu")


def _reg(bands: int, mosaic: int) -> BandRegistration:
    return BandRegistration.from_offsets(mosaic_offsets(bands, mosaic), bands)


def _frame(rows, cols, bands, seed):
    """Counts around 1500-3000 with texture and edges, and a dark near 100."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(1500, 3000, (rows, cols, 1)) * rng.uniform(0.7, 1.3, (1, 1, bands))
    base[:, cols // 2:] *= 0.6                             # an organ border
    raw = np.clip(np.rint(base + rng.normal(0, 40, (rows, cols, bands))), 0,
                  65535).astype(np.uint16)
    dark = rng.uniform(90, 110, (rows, cols, bands)).astype(np.float32)
    return raw, dark


def emulated(lib, reg, raw, dark=None, static_flags=None, saturation=float("inf"),
             block=REGISTER_BLOCK):
    """What CudaRegistration.launch queues, run by the emulated kernels."""
    rows, cols, nb = raw.shape
    npix = rows * cols
    raw = np.ascontiguousarray(raw)
    dark = None if dark is None else np.ascontiguousarray(dark, dtype=np.float32)
    sflags = None if static_flags is None else np.ascontiguousarray(static_flags, np.uint8)
    ky = np.ascontiguousarray(reg.ky, dtype=np.float32)
    kx = np.ascontiguousarray(reg.kx, dtype=np.float32)
    sat = None
    if np.isfinite(saturation):
        sat = np.full(npix, 0xAB, np.uint8)                # poisoned: every pixel is written
        lib.emu_register_sat_pixel(ptr(raw), npix, nb, saturation, block, ptr(sat))
        assert set(np.unique(sat)) <= {0, 1}
    out = np.full(raw.shape, POISON, np.uint16)
    lib.emu_register_u16(ptr(raw), ptr(dark), ptr(sflags), ptr(sat), rows, cols, nb, ptr(ky),
                         ptr(kx), tap_mask(reg.ky), tap_mask(reg.kx),
                         saturated_count(saturation) if sat is not None else 0, block,
                         ptr(out))
    return out


SHAPES = [(37, 53), (1, 41), (29, 1), (1, 1), (6, 5)]


@pytest.mark.parametrize("bands,mosaic", [(16, 4), (25, 5)])
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_counts_equal_the_reference_bit_for_bit(remu, bands, mosaic, rows, cols):
    reg = _reg(bands, mosaic)
    raw, dark = _frame(rows, cols, bands, seed=rows * 100 + cols)
    np.testing.assert_array_equal(emulated(remu, reg, raw, dark), reg.apply(raw, dark))


def test_without_a_dark_and_with_a_partial_last_block(remu):
    reg = _reg(25, 5)
    raw, _ = _frame(11, 13, 25, seed=1)                  # 3575 elements: 96 does not divide
    np.testing.assert_array_equal(emulated(remu, reg, raw, block=96), reg.apply(raw))


def test_a_tap_zero_for_every_band_is_skipped_as_the_reference_skips_it(remu):
    """Only offsets -1..1 along rows and 0..2 along columns (a zero column is left out of the
    sums, which changes the float32 rounding when it is not)."""
    rng = np.random.default_rng(4)
    nb = 7
    ky = np.zeros((nb, 2 * TAPS + 1))
    ky[:, 1:4] = rng.dirichlet(np.ones(3), nb)
    kx = np.zeros((nb, 2 * TAPS + 1))
    kx[:, 2:] = rng.dirichlet(np.ones(3), nb)
    kx[3, 4] = 0.0                                         # zero for one band only: kept
    reg = BandRegistration(np.zeros((nb, 2)), ky, kx)
    assert tap_mask(ky) == 0b01110 and tap_mask(kx) == 0b11100
    raw, dark = _frame(23, 19, nb, seed=5)
    np.testing.assert_array_equal(emulated(remu, reg, raw, dark), reg.apply(raw, dark))


@pytest.mark.parametrize("bands,mosaic", [(16, 4), (25, 5)])
def test_flagged_pixels_keep_their_counts_and_their_neighbours_are_within_one_count(
        remu, bands, mosaic):
    reg = _reg(bands, mosaic)
    rows, cols = 37, 53
    raw, dark = _frame(rows, cols, bands, seed=7)
    flags = np.zeros((rows, cols), np.uint8)
    for r, c in [(0, 0), (0, 52), (36, 0), (36, 52), (10, 10), (10, 11), (11, 10), (20, 30),
                 (0, 25), (18, 0)]:
        flags[r, c] = 8
    flags[25:28, 40:43] = 8                                # one with no valid neighbour
    raw[flags != 0] = 60000                                # a hot pixel: must not leak
    want = reg.apply(raw, dark, flags)
    got = emulated(remu, reg, raw, dark, flags)
    np.testing.assert_array_equal(got[flags != 0], raw[flags != 0])
    near = np.zeros((rows, cols), bool)
    for r, c in np.argwhere(flags):
        near[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = True
    np.testing.assert_array_equal(got[~near], want[~near])
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1, f"{diff.max()} counts off next to a flagged pixel"
    assert got[near & (flags == 0)].max() < 10000          # the hot counts stayed out


@pytest.mark.parametrize("bands,mosaic", [(16, 4), (25, 5)])
@pytest.mark.parametrize("rows,cols", [(37, 53), (1, 31), (31, 1)])
def test_saturated_windows_equal_the_reference(remu, bands, mosaic, rows, cols):
    reg = _reg(bands, mosaic)
    raw, dark = _frame(rows, cols, bands, seed=11)
    rng = np.random.default_rng(12)
    for _ in range(4):
        r, c, b = rng.integers(rows), rng.integers(cols), rng.integers(bands)
        raw[r, c, b] = 4095
    raw[0, 0, 0] = 4095                                    # a corner: windows past the edge
    flags = np.zeros((rows, cols), np.uint8)
    flags[rows // 2, cols // 2] = 8                        # saturation wins over a flag
    for level in (4095.0, 4094.5):
        want = reg.apply(raw, dark, flags, saturation=level)
        got = emulated(remu, reg, raw, dark, flags, saturation=level)
        assert (want == 4095).sum() >= 5
        sat_px = np.all(want == 4095, axis=2)
        np.testing.assert_array_equal(got[sat_px], want[sat_px])
        assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1


def test_launch_configuration_covers_every_element():
    assert register_launch(1).grid == (1, 1, 1)
    ln = register_launch(217 * 409 * 25)
    assert ln.grid[0] * ln.block[0] >= 217 * 409 * 25 > (ln.grid[0] - 1) * ln.block[0]
    assert saturated_count(4094.5) == 4095 and saturated_count(1e9) == 65535
    assert saturated_count(-3.0) == 0
