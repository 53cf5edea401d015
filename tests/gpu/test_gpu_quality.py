"""The CUDA backend's StO2 quality step on a real GPU against the NumPy reference (marker
``gpu``; issue 14): quality_pixel and the tiled bilateral_f32 with the backend's own launches,
outputs poisoned before each run, then the host finish.

Same scenes and tolerances as the host emulation (tests/cuda/quality_cases.py: flags and NaN
patterns exact, maps within relative 1e-5 -- sigma 5e-5 -- where the estimate is well
conditioned). nvcc contracts products and sums into FMAs (the emulation does not), a
difference within those tolerances.  The ``7-13-25`` case is the one run.sh runs under
compute-sanitizer memcheck.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.numpy_backend import NumpyBackend
from edge.core.chain import PackSpec
from edge.core.tensor import DeviceTensor
from edge.processing.plan import ChainPlan
from edge.processing.quality import QualityRules

from gpu_poison import poison_backend_outputs
from quality_cases import EXPOSURE, compare, scene

pytestmark = pytest.mark.gpu


def _poison_quality(cuda, be) -> None:
    """NaN / 0xAB into the quality step's buffers (per-pixel planes, ok plane, the spatial
    step's and the finish's outputs)."""
    q = be._quality
    with be._active():
        for d, h, value in ((q._d_q, q._h_q, np.nan), (q._d_ext_out, q._h_ext, np.nan),
                            (q._d_fout, q._h_fout, np.nan), (q._d_out, q._h_out, np.nan),
                            (q._d_ok, q._h_ok, 0xAB)):
            if h is None:
                continue
            h.fill(value)
            if not be.mapped_host_memory:
                cuda.memcpy_htod(d if hasattr(d, "free") else int(d), h)


def _plan(p, ff, noise, radius, spatial="bilateral"):
    pack = PackSpec(spectra_bands=(0, 2, 4), maps=("sto2", "thb", "sto2_index"))
    return ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm, pack=pack,
                           quality=QualityRules(noise, spatial=spatial, spatial_radius=radius))


@pytest.mark.parametrize("preset,rows,cols,radius,spatial", [
    pytest.param("snapshot25", 7, 13, 2, "bilateral", id="snapshot25-7-13-25bands-r2"),
    pytest.param("tivita", 37, 53, 3, "bilateral", id="tivita-37x53-r3"),
    pytest.param("snapshot16", 37, 53, 1, "bilateral", id="snapshot16-37x53-r1"),
    pytest.param("snapshot25", 29, 41, 5, "bilateral", id="snapshot25-29x41-r5"),
    pytest.param("snapshot25", 29, 41, 8, "none", id="snapshot25-29x41-no-spatial"),
    pytest.param("tivita", 480, 640, 3, "bilateral", id="tivita-480x640-r3"),
])
def test_cuda_quality_matches_numpy(gpu, preset, rows, cols, radius, spatial):
    from edge.backends.cuda import CudaBackend

    cuda, _, _, prebuilt = gpu
    p, ff, noise, raw = scene(preset, rows, cols, seed=rows + cols + radius)
    plan = _plan(p, ff, noise, radius, spatial)
    ref = NumpyBackend(plan).run(raw, exposure_us=EXPOSURE)
    with CudaBackend(plan, prebuilt_dir=prebuilt, return_reflectance=True) as be:
        be.input_buffer(raw.shape, raw.dtype)
        poison_backend_outputs(cuda, be)
        _poison_quality(cuda, be)
        got = be.run(raw, exposure_us=EXPOSURE)
        again = be.run(raw, exposure_us=EXPOSURE)          # buffers reused: same result
    compare(ref, got.maps, got.flags, got.input)
    np.testing.assert_array_equal(again.flags, got.flags)
    for name, v in got.maps.items():
        np.testing.assert_array_equal(again.maps[name], v, err_msg=name)
    assert "quality" in got.timings_ms


def test_device_output_carries_the_final_maps(gpu):
    """With device output the packed input's map channels on the device are the final
    (filtered, masked) maps, as in the host copy."""
    from edge.backends.cuda import CudaBackend

    cuda, _, _, prebuilt = gpu
    p, ff, noise, raw = scene("snapshot25", 23, 31, seed=3)
    plan = _plan(p, ff, noise, 3)
    with CudaBackend(plan, prebuilt_dir=prebuilt) as be:
        host = be.run(raw, exposure_us=EXPOSURE)
    with CudaBackend(plan, prebuilt_dir=prebuilt, device_output=True) as be:
        got = be.run(raw, exposure_us=EXPOSURE)
        t = got.input
        assert isinstance(t, DeviceTensor)
        out = np.full(t.shape, np.nan, t.dtype)
        with be._active():
            cuda.memcpy_dtoh(out, t.ptr)
    np.testing.assert_array_equal(out, host.input)


def test_host_finish_with_the_temporal_step(gpu):
    """A plan with the temporal step finishes on the host (finish_quality, spatial step on the
    GPU): three frames equal the NumPy backend's."""
    from edge.backends.cuda import CudaBackend
    from edge.processing.temporal import TemporalParams

    _, _, _, prebuilt = gpu
    p, ff, noise, _ = scene("snapshot25", 17, 19, seed=8)
    plan = ChainPlan.build(p.wavelength_array(), flatfield=ff, fwhm_nm=p.fwhm_nm,
                           quality=QualityRules(noise, spatial="bilateral",
                                                temporal=TemporalParams("recursive", 4, 4.0)))
    ref = NumpyBackend(plan)
    with CudaBackend(plan, prebuilt_dir=prebuilt) as be:
        assert not be._quality.on_device
        for k in range(3):
            _, _, _, raw = scene("snapshot25", 17, 19, seed=20 + k)
            compare(ref.run(raw, exposure_us=EXPOSURE), *_maps_flags(be, raw))


def _maps_flags(be, raw):
    got = be.run(raw, exposure_us=EXPOSURE)
    return got.maps, got.flags, None
