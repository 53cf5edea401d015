"""CPU checks of what the one GPU run (tests/gpu/run.sh) depends on -- no GPU needed.

- the host-side helpers of edge/backends/cuda_ops.py (parameter bytes, poison bytes, hatch
  colours, kernel pointer arguments);
- GPU rounding: nvcc fuses ``a * b + c`` into one FMA by default, which NumPy never does. The
  host shim of ``pixel_math.cuh`` is built here with FMA contraction on (``-mfma
  -ffp-contract=fast``), and the outputs the GPU tests compare *exactly* (StO2 table, flat
  field, overlay) must still match NumPy bit for bit, the others within the GPU tests'
  ‖out − ref‖/‖ref‖ < 1e-5;
- run.sh's memcheck ``-k`` selects a small launch of every kernel;
- the benchmark's plain-array chain (the CuPy baseline's math) equals the NumPy backend.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.backends.cuda_ops import _p, pack_rgb, params_bytes, poison_byte
from edge.backends.cuda_params import CHAIN_PARAMS_DTYPE, MAP_NAMES, chain_params
from edge.backends.numpy_backend import NumpyBackend
from host_shim_build import build_host_shim
from edge.errors import ConfigError
from edge.processing import post

from hsi_cuda_scenes import make_scene, ptr, rel_err, synthetic_calibration_2d

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5      # the GPU tests' float32 tolerance


# ---- cuda_ops helpers ------------------------------------------------------------------------
def test_params_bytes_is_the_raw_block():
    s = make_scene(2, 3, 25, seed=1)
    p = chain_params(s.wl, s.unmixer, s.calibration, s.index_params)
    b = params_bytes(p)
    assert b.dtype == np.uint8 and b.ndim == 1 and b.flags.c_contiguous
    assert b.size == CHAIN_PARAMS_DTYPE.itemsize == p.nbytes
    back = np.frombuffer(b.tobytes(), CHAIN_PARAMS_DTYPE)[0]
    assert back["nb"] == 25 and np.array_equal(back["pinv"], p["pinv"])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_poison_byte_makes_float_nan(dtype):
    byte = poison_byte(dtype)
    filled = np.full(4 * np.dtype(dtype).itemsize, byte, np.uint8).view(dtype)
    assert np.isnan(filled).all()


def test_poison_byte_for_bytes():
    assert poison_byte(np.uint8) == 0xAB


def test_pack_rgb_packs_python_ints():
    assert pack_rgb((70, 70, 70)) == 0x464646
    assert pack_rgb(np.array([150, 150, 150], np.uint8)) == 0x969696   # no uint8 overflow
    assert [pack_rgb(c) for c in post.HATCH_COLORS] == [0x464646, 0x969696]


@pytest.mark.parametrize("bad", [(1, 2), (0, 256, 0), (-1, 0, 0)])
def test_pack_rgb_rejects_bad_colours(bad):
    with pytest.raises(ConfigError, match=r"hatch: expected \(r, g, b\) colours with values 0-255"):
        pack_rgb(bad)


class _FakeGPUArray:
    """Just the attribute _p reads (a GPUArray's allocation)."""

    def __init__(self, address: int):
        self.gpudata = address


def test_kernel_pointer_arguments_are_uintp():
    for arg, want in ((None, 0), (0x7F00_0000_1000, 0x7F00_0000_1000),
                      (_FakeGPUArray(0x1234), 0x1234), (np.uintp(99), 99)):
        got = _p(arg)
        assert isinstance(got, np.uintp) and int(got) == want
        assert np.dtype(type(got)).itemsize == 8   # packed as a 64-bit pointer


# ---- GPU-like rounding (FMA contraction) --------------------------------------------------------
@pytest.fixture(scope="module")
def fma_shim(tmp_path_factory):
    if not re.search(r"\bfma\b", Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""):
        pytest.skip("needs an x86 CPU with FMA to emulate the GPU's fused multiply-add")
    return build_host_shim(tmp_path_factory.mktemp("fma") / "libhsi_shim_fma.so",
                           ["-mfma", "-ffp-contract=fast"], what="FMA host shim")


def test_sto2_table_exact_under_fma(fma_shim):
    s = make_scene(1, 1, 25, seed=6)
    p = chain_params(s.wl, s.unmixer, s.calibration, s.index_params)
    rng = np.random.default_rng(6)
    x = np.concatenate([np.linspace(-0.5, 1.5, 5001), rng.uniform(-0.3, 1.3, 50_000),
                        [np.nan, np.inf, -np.inf]]).astype(np.float32)
    out = np.empty_like(x)
    fma_shim.shim_sto2(ptr(p), ptr(x), None, x.size, ptr(out))
    np.testing.assert_array_equal(out, s.calibration.apply(x))
    # a table with a THb axis (issue 14): two more interpolations, still rounded like NumPy
    cal = synthetic_calibration_2d()
    p2 = chain_params(s.wl, s.unmixer, cal, s.index_params)
    thb = np.resize(np.linspace(-0.01, 0.05, 997), x.size).astype(np.float32)
    fma_shim.shim_sto2(ptr(p2), ptr(x), ptr(thb), x.size, ptr(out))
    np.testing.assert_array_equal(out, cal.apply(x, thb))


def test_flatfield_exact_under_fma(fma_shim):
    s = make_scene(9, 11, 25, seed=4)
    ff = s.flatfield
    raw = np.ascontiguousarray(s.raw, dtype=np.float32)
    refl = np.empty(raw.shape, np.float32)
    flags = np.empty(raw.shape[:2], np.uint8)
    fma_shim.shim_flatfield(ptr(raw), ptr(ff.dark), ptr(ff.scale), ptr(ff.static_flags),
                            99, 25, 1.25, ff.saturation, ptr(refl), ptr(flags))
    ref_r, ref_f = ff.apply(s.raw, exposure_us=800.0)       # factor 1000/800 = 1.25
    np.testing.assert_array_equal(flags, ref_f)
    np.testing.assert_array_equal(refl, ref_r)


def test_overlay_exact_under_fma(fma_shim):
    rng = np.random.default_rng(12)
    rows, cols = 17, 23
    labels = rng.integers(0, 19, (rows, cols)).astype(np.uint8)
    rgb = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (19, 3), dtype=np.uint8)
    invalid = (rng.random((rows, cols)) < 0.1).astype(np.uint8)
    h0, h1 = (pack_rgb(c) for c in post.HATCH_COLORS)
    for alpha in (0.0, 0.3, 0.4, 0.7, 1.0):
        out = np.empty_like(rgb)
        fma_shim.shim_overlay(ptr(labels), ptr(rgb), ptr(invalid), ptr(colours), rows * cols,
                              cols, np.float32(1.0 - alpha), np.float32(alpha), h0, h1, ptr(out))
        np.testing.assert_array_equal(out, post.overlay(rgb, labels, colours, alpha,
                                                        invalid.astype(bool)))


@pytest.mark.parametrize("bands", [16, 100])
def test_fused_chain_within_gpu_tolerance_under_fma(fma_shim, bands):
    s = make_scene(31, 29, bands, seed=bands)
    spec = s.pack
    ff = s.flatfield
    ref = NumpyBackend(s.wl, flatfield=ff, chromophores=s.unmixer.chromophores,
                       baseline=s.unmixer.baseline, calibration=s.calibration,
                       pack=spec).run(s.raw, exposure_us=1000.0)
    p = chain_params(s.wl, s.unmixer, s.calibration, s.index_params, spec,
                     saturation=ff.saturation)
    npix = 31 * 29
    raw = np.ascontiguousarray(s.raw, dtype=np.float32)
    maps, flags = np.empty((6, npix), np.float32), np.empty(npix, np.uint8)
    packed, refl = np.empty((spec.channels, npix), np.float32), np.empty((npix, bands), np.float32)
    fma_shim.shim_chain(ptr(p), ptr(raw), ptr(ff.dark), ptr(ff.scale), ptr(ff.static_flags),
                        npix, 1.0, ptr(maps), ptr(flags), ptr(packed), ptr(refl))
    np.testing.assert_array_equal(flags, ref.flags.ravel())
    np.testing.assert_array_equal(refl, ref.reflectance.reshape(npix, bands))
    for j, name in enumerate(MAP_NAMES):
        r = ref.maps[name].ravel()
        if np.abs(r[np.isfinite(r)]).sum() > 0:
            assert rel_err(maps[j], r) < TOL / 10, name     # a 10x margin below the GPU test's
    assert rel_err(packed, ref.input[0].reshape(spec.channels, npix)) < TOL / 10


# ---- run.sh and the benchmark ------------------------------------------------------------------
def test_memcheck_selection_covers_every_kernel():
    script = (ROOT / "tests" / "gpu" / "run.sh").read_text()
    expr = re.search(r'-k "([^"]+)"', script).group(1)
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "--collect-only", "-q",
                           "-m", "gpu", "-p", "no:cacheprovider", "-o", "addopts=", "-k", expr],
                          cwd=ROOT, capture_output=True, text=True)
    ids = sorted(line.split("::")[1] for line in proc.stdout.splitlines() if "::" in line)
    assert ids == [
        "test_backend_fused_chain_matches_numpy_backend[7-13-25-float32]",   # chain_f32_*
        "test_backend_fused_chain_matches_numpy_backend[7-13-25-uint16]",    # chain_u16_*
        "test_cuda_quality_matches_numpy[snapshot25-7-13-25bands-r2]",   # quality_pixel, bilateral
        "test_per_op_kernels_match_reference[7-13-25]",        # flatfield .. pack (f32, f16)
        "test_post_kernels_match_reference[float16-7-13]",     # argmax_f16, overlay
        "test_post_kernels_match_reference[float32-7-13]",     # argmax_f32, overlay
    ], proc.stdout + proc.stderr


def test_benchmark_plain_chain_is_the_same_math():
    sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
    import bench_kernels as bk

    s = make_scene(8, 9, 100, seed=1)
    packed, sto2_index, nir, twi, flags = bk.plain_chain(np, bk._plain_inputs(s))
    ref = NumpyBackend(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                       baseline=s.unmixer.baseline,
                       calibration=s.calibration).run(s.raw, exposure_us=1000.0)
    assert packed.dtype == np.float16 and packed.shape == (102, 8, 9)
    np.testing.assert_array_equal(flags, ref.flags)
    assert bk._compare(packed, s) < 1e-3           # float16 rounding of the same float32 math
    assert bk._compare(packed * np.float16(1.01), s) > 1e-3   # the comparison is not vacuous
    for name, got in (("sto2_index", sto2_index), ("nir", nir), ("twi", twi)):
        assert rel_err(np.where(flags != 0, np.nan, got), ref.maps[name]) < TOL, name


def test_require_gpu_stops_instead_of_skipping():
    spec = importlib.util.spec_from_file_location("hsi_gpu_conftest",
                                                  ROOT / "tests" / "gpu" / "conftest.py")
    gpu_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_conftest)
    if gpu_conftest.gpu_problem() is None:
        pytest.skip("a GPU is usable here: the real GPU tests would run")
    env = {**os.environ, "HSI_REQUIRE_GPU": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q",
                           "-p", "no:cacheprovider", "-o", "addopts="],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "HSI_REQUIRE_GPU=1 but PyCUDA does not import" in proc.stdout + proc.stderr
