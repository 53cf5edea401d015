"""Every CUDA kernel against the NumPy reference on a real GPU (marker ``gpu``).

Fresh random scenes per case, outputs poisoned with NaN / 0xAB before each launch, every
element checked.  Tolerances: ‖out − ref‖/‖ref‖ < 1e-5 on float32 paths (sums over bands add
in another order than NumPy's BLAS); flat field, flags, StO2 table, argmax and overlay
exactly; float16 packing < 1e-3 (one float16 rounding of values within 1e-5).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from edge.backends.base import PackSpec
from edge.backends.cuda_params import MAP_NAMES, chain_params
from edge.backends.numpy_backend import NumpyBackend
from edge.processing import post
from edge.processing.indices import tivita_indices
from edge.processing.pack import pack_input
from edge.processing.unmixing import absorbance

from gpu_poison import poison_backend_outputs
from hsi_cuda_scenes import make_scene, rel_err, synthetic_calibration_2d

pytestmark = pytest.mark.gpu
TOL = 1e-5
SIZES = [(1, 1), (7, 13), (480, 640), (1080, 1920)]
BANDS = [16, 25, 100]
CASES = [(r, c, b) for (r, c) in SIZES for b in BANDS if r * c * b <= 1080 * 1920 * 25]


def ops_for(gpu, scene, pack=None):
    import cuda_kernels
    from edge.backends.cuda_ops import CudaOps, load_module

    cuda, dev, arch, prebuilt = gpu
    mods = {n: load_module(n, arch, prebuilt) for n in cuda_kernels.MODULES}
    p = chain_params(scene.wl, scene.unmixer, scene.calibration, scene.index_params, pack,
                     saturation=scene.flatfield.saturation, zero_flagged=False)
    ops = CudaOps(mods, p, cuda.Stream(),
                  dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))
    ops.poison = True
    return ops


def _flat(a, bands=None):
    a = np.ascontiguousarray(a)
    return a.reshape(-1, bands) if bands else a.reshape(-1)


@pytest.mark.parametrize("rows,cols,bands", CASES)
def test_per_op_kernels_match_reference(gpu, rows, cols, bands):
    import pycuda.gpuarray as ga

    s = make_scene(rows, cols, bands, seed=rows * 7 + cols + bands)
    spec = PackSpec(spectra_bands=tuple(range(0, bands, 2)), maps=("sto2", "thi"))
    ops = ops_for(gpu, s, spec)
    ff = s.flatfield
    npix = rows * cols
    # flat field (uint16), exact
    refl, flags = ops.flatfield(ga.to_gpu(_flat(s.raw, bands)), ga.to_gpu(_flat(ff.dark, bands)),
                                ga.to_gpu(_flat(ff.scale, bands)), ga.to_gpu(_flat(ff.static_flags)),
                                saturation=ff.saturation)
    ref_r, ref_f = ff.apply(s.raw)
    np.testing.assert_array_equal(flags.get(), _flat(ref_f))
    np.testing.assert_array_equal(refl.get(), _flat(ref_r, bands))
    # float32 pass-through, exact
    r2, f2 = ops.flatfield(ga.to_gpu(_flat(s.reflectance, bands)))
    ref_r2, ref_f2 = ff.apply(s.reflectance)
    np.testing.assert_array_equal(f2.get(), _flat(ref_f2))
    np.testing.assert_array_equal(r2.get(), _flat(ref_r2, bands))
    # absorbance
    d_refl = ga.to_gpu(_flat(s.reflectance, bands))
    a = ops.absorbance(d_refl, 1e-4).get()
    ref_a = absorbance(_flat(s.reflectance, bands), 1e-4)
    fin = np.isfinite(ref_a)
    np.testing.assert_array_equal(np.isfinite(a), fin)
    assert rel_err(a[fin], ref_a[fin]) < 1e-6
    # unmixing
    conc, thb, sraw = ops.unmix(d_refl)
    ref_m = s.unmixer.maps(s.reflectance)
    assert rel_err(conc.get(), s.unmixer.unmix(s.reflectance).reshape(npix, -1)) < TOL
    assert rel_err(thb.get(), _flat(ref_m["thb"])) < TOL
    if np.isfinite(ref_m["sto2_raw"]).any():
        assert rel_err(sraw.get(), _flat(ref_m["sto2_raw"])) < TOL
    # calibrated StO2 (exact arithmetic of Sto2Calibration.apply)
    np.testing.assert_array_equal(ops.sto2(sraw).get(), s.calibration.apply(sraw.get()))
    # ... and of a table with a THb axis (issue 14): sqrt and division correctly rounded, no FMA
    s2 = dataclasses.replace(s, calibration=synthetic_calibration_2d())
    ops2 = ops_for(gpu, s2, spec)
    np.testing.assert_array_equal(ops2.sto2(sraw, thb).get(),
                                  s2.calibration.apply(sraw.get(), thb.get()))
    # indices
    idx = ops.indices(d_refl).get()
    ref_i = tivita_indices(s.reflectance, s.wl, s.index_params)
    for j, name in enumerate(("sto2_index", "nir", "thi", "twi")):
        ref = _flat(ref_i[name])
        if np.isfinite(ref).any() and np.abs(ref[np.isfinite(ref)]).sum() > 0:
            assert rel_err(idx[j], ref) < TOL, name
        else:
            np.testing.assert_array_equal(np.isnan(idx[j]), np.isnan(ref))
    # pack (float32 and float16)
    rng = np.random.default_rng(bands)
    maps = rng.uniform(0, 1, (2, npix)).astype(np.float32)
    ref_p = pack_input(s.reflectance, [maps[0].reshape(rows, cols), maps[1].reshape(rows, cols)],
                       spec)[0].reshape(spec.channels, npix)
    assert rel_err(ops.pack(d_refl, ga.to_gpu(maps)).get(), ref_p) < TOL
    p16 = ops.pack(d_refl, ga.to_gpu(maps), dtype="float16").get()
    assert rel_err(p16.astype(np.float32), ref_p) < 1e-3


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 13), (480, 640)])
@pytest.mark.parametrize("logit_dtype", [np.float32, np.float16])
def test_post_kernels_match_reference(gpu, rows, cols, logit_dtype):
    import pycuda.gpuarray as ga

    s = make_scene(1, 1, 25, seed=3)
    ops = ops_for(gpu, s)
    rng = np.random.default_rng(rows + cols)
    npix = rows * cols
    logits = rng.integers(0, 6, (1, 19, rows, cols)).astype(logit_dtype)
    labels = ops.argmax(ga.to_gpu(np.ascontiguousarray(logits[0].reshape(19, npix)))).get()
    ref_l = post.argmax(logits)[0]
    np.testing.assert_array_equal(labels, ref_l.ravel())
    rgb = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (19, 3), dtype=np.uint8)
    invalid = rng.random((rows, cols)) < 0.1
    for alpha in (0.0, 0.4, 1.0):
        out = ops.overlay(ga.to_gpu(labels), ga.to_gpu(rgb.reshape(npix, 3)), colours, alpha,
                          cols, ga.to_gpu(invalid.astype(np.uint8).ravel()),
                          hatch=post.HATCH_COLORS).get()
        np.testing.assert_array_equal(out.reshape(rows, cols, 3),
                                      post.overlay(rgb, ref_l, colours, alpha, invalid))


@functools.lru_cache(maxsize=1)
def cached_scene(rows: int, cols: int, bands: int, seed: int):
    """make_scene, kept for the next test: both sources of a size share one scene (the large
    ones take seconds to build on the host, the GPU run has minutes)."""
    return make_scene(rows, cols, bands, seed=seed)


# "source" varies fastest (the decorator nearest the function sets the slowest parameter), so
# the two sources of one size run back to back and share the cached scene.
@pytest.mark.parametrize("source", ["uint16", "float32"])
@pytest.mark.parametrize("rows,cols,bands", CASES)
def test_backend_fused_chain_matches_numpy_backend(gpu, rows, cols, bands, source):
    from edge.backends.cuda import CudaBackend

    cuda, dev, arch, prebuilt = gpu
    s = cached_scene(rows, cols, bands, rows + cols * 3 + bands)
    for dtype in ("float32", "float16"):
        spec = PackSpec(spectra_bands=tuple(range(bands)), maps=("sto2", "thi"), dtype=dtype)
        kw = dict(flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                  baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec)
        cube = s.raw if source == "uint16" else s.reflectance
        ref = NumpyBackend(s.wl, **kw).run(cube, exposure_us=1000.0)
        with CudaBackend(s.wl, prebuilt_dir=prebuilt, return_reflectance=True, **kw) as be:
            be.input_buffer(cube.shape, cube.dtype)        # allocate, then poison every output
            # (mapped host memory on a Jetson: the fill is the poisoning, nothing to copy)
            poison_backend_outputs(cuda, be)
            got = be.run(cube, exposure_us=1000.0)
            assert be.input_device_ptr and be.stream_handle is not None
        np.testing.assert_array_equal(got.flags, ref.flags)
        np.testing.assert_array_equal(got.reflectance, ref.reflectance)
        for name in MAP_NAMES:
            r = ref.maps[name]
            if np.isfinite(r).any() and np.abs(r[np.isfinite(r)]).sum() > 0:
                assert rel_err(got.maps[name], r) < TOL, name
            else:
                np.testing.assert_array_equal(np.isnan(got.maps[name]), np.isnan(r))
        tol = TOL if dtype == "float32" else 1e-3
        assert got.input.dtype == np.dtype(dtype)
        assert rel_err(got.input.astype(np.float32), ref.input.astype(np.float32)) < tol


def test_backend_device_output_names_the_packed_input_on_the_device(gpu):
    """device_output=True: ChainResult.input is a DeviceTensor (pointer, shape, dtype, the
    backend's stream) whose memory holds exactly what the host-output run copies back."""
    from edge.backends.cuda import CudaBackend
    from edge.core.tensor import DeviceTensor
    from edge.processing.plan import ChainPlan

    cuda, dev, arch, prebuilt = gpu
    s = make_scene(9, 11, 16, seed=5)
    spec = PackSpec(spectra_bands=tuple(range(0, 16, 2)), maps=("sto2",), dtype="float16")
    plan = ChainPlan.build(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                           baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec)
    with CudaBackend(plan, prebuilt_dir=prebuilt) as host_be:
        host = host_be.run(s.raw, exposure_us=1000.0)
    with CudaBackend(plan, prebuilt_dir=prebuilt, device_output=True) as be:
        got = be.run(s.raw, exposure_us=1000.0)
        t = got.input
        assert isinstance(t, DeviceTensor)
        assert t.shape == (1, spec.channels, 9, 11) and t.dtype == np.float16
        assert t.stream == be.stream_handle
        out = np.full(t.shape, np.nan, t.dtype)
        with be._active():
            cuda.memcpy_dtoh(out, t.ptr)
    np.testing.assert_array_equal(out, host.input)
    np.testing.assert_array_equal(got.flags, host.flags)


def test_backend_compiles_at_run_time_without_prebuilt(gpu, tmp_path, caplog):
    from edge.backends.cuda import CudaBackend

    s = make_scene(7, 13, 25, seed=99)
    with caplog.at_level("WARNING"):
        with CudaBackend(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                         baseline=s.unmixer.baseline, calibration=s.calibration,
                         prebuilt_dir=tmp_path) as be:
            got = be.run(s.raw, exposure_us=800.0)
    assert "compiling kernels at run time (development path)" in caplog.text
    ref = NumpyBackend(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                       baseline=s.unmixer.baseline,
                       calibration=s.calibration).run(s.raw, exposure_us=800.0)
    np.testing.assert_array_equal(got.flags, ref.flags)
    assert rel_err(got.maps["thb"], ref.maps["thb"]) < TOL


def _near_flags(static_flags: np.ndarray) -> np.ndarray:
    """Pixels within 2 of a statically flagged one (its 5x5 neighbourhood)."""
    near = np.zeros(static_flags.shape, bool)
    for r, c in np.argwhere(static_flags):
        near[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = True
    return near


@pytest.mark.parametrize("rows,cols,bands,mosaic", [(37, 53, 16, 4), (217, 409, 25, 5),
                                                    (1, 41, 25, 5), (29, 1, 16, 4)])
def test_backend_registers_on_the_device_as_the_reference(gpu, rows, cols, bands, mosaic):
    """register.cu against BandRegistration.apply (register_math.cuh's contract): equal counts
    but within 1 count next to a statically flagged pixel, saturated windows equal; the chain
    then runs on exactly the registered counts the device made."""
    from drivers.sim.mosaic import mosaic_offsets
    from edge.backends.cuda import CudaBackend
    from edge.processing.plan import ChainPlan
    from edge.processing.register import BandRegistration

    cuda, dev, arch, prebuilt = gpu
    s = make_scene(rows, cols, bands, seed=rows + cols + bands)
    reg = BandRegistration.from_offsets(mosaic_offsets(bands, mosaic), bands)
    kw = dict(flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
              baseline=s.unmixer.baseline, calibration=s.calibration,
              pack=PackSpec(spectra_bands=tuple(range(bands)), maps=("sto2",)))
    plan = ChainPlan.build(s.wl, registration=reg, **kw)
    want = plan.register(s.raw)
    with CudaBackend(plan, prebuilt_dir=prebuilt) as be:
        with be._active():
            be._register.ensure(rows, cols, bands)          # poison what the kernel writes
            cuda.memset_d8(be._register.d_reg, 0xAB, rows * cols * bands * 2)
        got = be.register(s.raw)
        res = be.run(s.raw, exposure_us=1000.0)
    near = _near_flags(s.flatfield.static_flags)
    np.testing.assert_array_equal(got[~near], want[~near])
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1
    sat = np.all(want == np.ceil(min(s.flatfield.saturation, 65535)), axis=2)
    np.testing.assert_array_equal(got[sat], want[sat])
    assert res.timings_ms["register"] > 0.0
    with CudaBackend(ChainPlan.build(s.wl, **kw), prebuilt_dir=prebuilt) as plain:
        ref = plain.run(got, exposure_us=1000.0)
    np.testing.assert_array_equal(res.flags, ref.flags)
    for name in MAP_NAMES:
        np.testing.assert_array_equal(res.maps[name], ref.maps[name], err_msg=name)
    np.testing.assert_array_equal(res.input, ref.input)
