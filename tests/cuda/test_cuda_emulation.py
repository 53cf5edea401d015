"""The tiled chain kernel (cuda_kernels/chain.cu) emulated on the CPU, block by block, against
the NumPy reference backend (tests/cuda/host_emulation.cpp).

This is the GPU-only part the host shim does not reach: the staging of a tile through shared
memory (tile_pixels for the last, partial block; the incremental (pixel, band) walk of
for_tile_elements for every block size and band count; the odd row stride; the flag OR;
write_reflectance) and the per-thread tail with its planar stores -- the same source the
kernel compiles, with the CUDA built-ins emulated and the barriers as phase boundaries.
Shared memory is NaN-poisoned and the flag slots carry an unused bit before every block, so
a read of anything no thread staged fails the comparison. Real concurrency, __ldg,
coalescing and timing still need a GPU (tests/gpu).

Tolerances as test_cuda_pixel_math.py: reflectance and flags exact, maps and the packed input
within relative error 1e-5 (the same float32 arithmetic as the reference, another order).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.cuda_ops import tile_launch
from edge.backends.numpy_backend import NumpyBackend

from hsi_cuda_scenes import make_scene, params_for, ptr, rel_err

TOL = 1e-5
MAP_ORDER = ("sto2", "thb", "sto2_index", "nir", "thi", "twi")   # HsiMapId


def _run(emu, s, *, source, block, stride, rows, cols):
    spec = s.pack
    ff = s.flatfield if source == "uint16" else None
    be = NumpyBackend(s.wl, flatfield=ff, chromophores=s.unmixer.chromophores,
                      baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec)
    cube = s.raw if source == "uint16" else s.reflectance
    ref = be.run(cube, exposure_us=1000.0)
    npix, bands = rows * cols, s.wl.size
    raw = np.ascontiguousarray(cube, np.uint16 if source == "uint16" else np.float32)
    maps = np.full((6, npix), -9, np.float32)
    flags = np.full(npix, 255, np.uint8)
    packed = np.full((spec.channels, npix), -9, np.float32)
    refl = np.full((npix, bands), -9, np.float32)
    args = (ptr(ff.dark), ptr(ff.scale), ptr(ff.static_flags)) if ff else (None, None, None)
    params = params_for(s, spec)         # kept alive across the call (ptr is a raw address)
    emu.emu_chain(ptr(params), ptr(raw), int(source == "uint16"), *args, npix,
                  block, stride, 1.0, ptr(maps), ptr(flags), ptr(packed), ptr(refl))
    return ref, maps, flags, packed, refl


def _close(out, exp, what):
    """rel_err below TOL; where the reference is all zero (an index clipped to 0 on a coarse
    grid), exact equality instead (rel_err needs a non-zero reference)."""
    fin = ~np.isnan(exp)
    if not np.any(exp[fin]):
        np.testing.assert_array_equal(out[fin], exp[fin], err_msg=what)
    else:
        assert rel_err(out, exp) < TOL, what


def _check(ref, maps, flags, packed, refl, spec, npix, bands):
    np.testing.assert_array_equal(flags, ref.flags.ravel())
    assert np.count_nonzero(flags) >= 2, "scene must contain flagged pixels"
    np.testing.assert_array_equal(refl, ref.reflectance.reshape(npix, bands))
    for j, name in enumerate(MAP_ORDER):
        exp = ref.maps[name].ravel()
        np.testing.assert_array_equal(np.isnan(maps[j]), np.isnan(exp), err_msg=name)
        if not np.all(np.isnan(exp)):
            _close(maps[j], exp, name)
    _close(packed, ref.input[0].reshape(spec.channels, npix), "packed input")


@pytest.mark.parametrize("bands", [16, 25, 100])
@pytest.mark.parametrize("source", ["uint16", "float32"])
def test_kernel_launch_as_the_backend_configures_it(emu, bands, source):
    """Block and stride from tile_launch (the CUDA backend's own launch), a frame whose pixel
    count is not a multiple of the block (the last block is partial)."""
    rows, cols = 9, 37
    s = make_scene(rows, cols, bands, seed=30 + bands)
    ln = tile_launch(rows * cols, bands)
    assert (rows * cols) % ln.block[0] != 0
    out = _run(emu, s, source=source, block=ln.block[0], stride=ln.stride, rows=rows,
               cols=cols)
    _check(*out, s.pack, rows * cols, bands)


@pytest.mark.parametrize("block,bands", [(32, 7), (64, 31), (96, 33), (128, 100),
                                         (256, 13), (32, 256)])
def test_block_sizes_and_band_counts_the_walk_must_handle(emu, block, bands):
    """for_tile_elements steps (pixel, band) by (block // nb, block % nb) with a carry: block
    sizes smaller and larger than the band count, equal remainders, the 256-band maximum."""
    rows, cols = 5, 23
    s = make_scene(rows, cols, bands, seed=50 + block + bands)
    out = _run(emu, s, source="uint16", block=block, stride=bands | 1, rows=rows, cols=cols)
    _check(*out, s.pack, rows * cols, bands)
