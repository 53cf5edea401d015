"""The CUDA backend's band registration wiring on the CPU (fake PyCUDA, tests/fake_pycuda.py):
which kernels are launched, on which buffers, and what the chain and the quality pass then
read.  No kernel runs here: the kernels' results are checked by their host emulation
(test_cuda_register_emulation.py) and on a GPU (tests/gpu/test_cuda_kernels_gpu.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.mosaic import mosaic_offsets
from edge.backends.base import PackSpec
from edge.backends.cuda_register import saturated_count, tap_mask
from edge.errors import DataFormatError
from edge.processing.plan import ChainPlan
from edge.processing.quality import NoiseModel, QualityRules
from edge.processing.register import BandRegistration
from hsi_cuda_scenes import make_scene

BANDS = 16


def _backend(register=True, quality=False, flatfield=True):
    from edge.backends.cuda import CudaBackend
    s = make_scene(5, 7, BANDS, seed=3)
    reg = BandRegistration.from_offsets(mosaic_offsets(BANDS, 4), BANDS) if register else None
    spec = PackSpec(spectra_bands=(0, 4, 8), maps=("sto2",), dtype="float32")
    plan = ChainPlan.build(s.wl, flatfield=s.flatfield if flatfield else None,
                           chromophores=s.unmixer.chromophores, baseline=s.unmixer.baseline,
                           calibration=s.calibration, pack=spec, registration=reg,
                           quality=QualityRules(NoiseModel(0.1, 2.0)) if quality else None)
    return CudaBackend(plan, prebuilt_dir=None), s


def _launch(drv, name):
    found = [(args, kw) for k, args, kw in drv.launches if k == name]
    assert len(found) == 1, f"{name} launched {len(found)} times"
    return found[0]


@pytest.mark.parametrize("integrated", [False, True])
def test_counts_are_registered_on_the_device_and_the_chain_reads_them(fake, integrated):
    drv = fake(integrated)
    be, s = _backend()
    try:
        checked, ms = be.checked_frame(s.raw)
        assert ms is None and np.array_equal(checked, s.raw)    # not registered on the host
        drv.launches.clear()
        res = be.run(s.raw, exposure_us=1000.0)
        kernels = [k for k, _, _ in drv.launches]
        reg = be._register
        sat = np.isfinite(s.flatfield.saturation)
        assert kernels[:2 + sat] == (["register_sat_pixel"] if sat else []) + \
            ["register_u16", "chain_u16_f32"]
        args, kw = _launch(drv, "register_u16")
        npix = 5 * 7
        assert args[:3] == [int(be._d_raw), int(be._d_dark), int(be._d_static)]
        assert args[4:7] == [5, 7, BANDS]
        assert args[9:11] == [tap_mask(be.plan.registration.ky),
                              tap_mask(be.plan.registration.kx)]
        assert args[-1] == int(reg.d_reg)
        assert kw["grid"][0] * kw["block"][0] >= npix * BANDS
        if sat:
            sargs, _ = _launch(drv, "register_sat_pixel")
            assert sargs[0] == int(be._d_raw) and sargs[-1] == args[3] != 0
            assert args[11] == saturated_count(s.flatfield.saturation)
        chain, _ = _launch(drv, "chain_u16_f32")
        assert chain[0] == int(reg.d_reg)                    # not the raw counts
        assert "register" in res.timings_ms and "chain" in res.timings_ms
    finally:
        be.close()
    assert be._register is None or be._register.d_reg is None


def test_the_quality_pass_reads_the_registered_counts(fake):
    drv = fake(False)
    be, s = _backend(quality=True)
    try:
        be.run(s.raw, exposure_us=1000.0)
        args, _ = _launch(drv, "quality_pixel")
        assert args[3] == int(be._register.d_reg) and args[4] == int(be._d_dark)
    finally:
        be.close()


def test_reflectance_frames_are_registered_on_the_host(fake):
    drv = fake(False)
    be, s = _backend()
    try:
        refl = np.full(s.raw.shape, 0.5, np.float32)
        refl[2, 3, 4] = 0.9
        checked, ms = be.checked_frame(refl)
        assert ms is not None
        np.testing.assert_array_equal(checked, be.plan.register(refl))
        drv.launches.clear()
        res = be.run(refl, exposure_us=1000.0)
        assert not [k for k, _, _ in drv.launches if k.startswith("register")]
        assert res.timings_ms["register"] >= 0.0
    finally:
        be.close()


def test_without_a_flat_field_or_registration_no_register_module(fake):
    fake(False)
    for kw in ({"register": False}, {"flatfield": False}):
        be, s = _backend(**kw)
        try:
            assert "register" not in be.ops.modules and be._register is None
            with pytest.raises(DataFormatError, match="cuda registration needs a plan with a "
                                                      "registration and a flat field"):
                be.register(s.raw)
        finally:
            be.close()
