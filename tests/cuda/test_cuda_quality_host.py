"""The CUDA backend's quality step, host side, on the CPU (fake_pycuda, no kernel runs):
which kernels are launched in which order with which buffers, the copies, the network
input's map channels for device output, and that close() frees it all.  The results of the
kernels are checked by test_cuda_quality_emulation.py (emulated) and tests/gpu (real)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends.base import PackSpec
from edge.backends.cuda_quality import bilateral_launches, pixel_launch
from edge.core.chain import QUALITY_MAP_NAMES
from edge.processing.plan import ChainPlan
from edge.processing.quality import NoiseModel, QualityRules

from hsi_cuda_scenes import make_scene


def _backend(spatial="bilateral", **kw):
    from edge.backends.cuda import CudaBackend
    s = make_scene(5, 7, 100, seed=3)
    spec = PackSpec(spectra_bands=(0, 4, 8), maps=("sto2", "thb"), dtype="float32")
    plan = ChainPlan.build(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                           baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec,
                           quality=QualityRules(NoiseModel(0.1, 2.0), spatial=spatial))
    return CudaBackend(plan, prebuilt_dir=None, **kw), s


@pytest.mark.parametrize("integrated", [False, True])
def test_quality_kernels_follow_the_chain(fake, integrated):
    drv = fake(integrated)
    be, s = _backend()
    try:
        res = be.run(s.raw, exposure_us=1000.0)
        names = [k for k, _, _ in drv.launches]
        plan = be.plan
        n_terms = plan.index_minima_cols.size
        assert n_terms > 6, "the 100-band grid needs several bilateral launches"
        launches = bilateral_launches(5, 7, plan.bilateral.radius, plan.guide_terms.shape[1],
                                      n_terms)
        assert names == (["chain_u16_f32", "quality_pixel"] + ["bilateral_f32"] * len(launches)
                         + ["quality_finish_f32"])
        chain, pixel, finish = drv.launches[0], drv.launches[1], drv.launches[-1]
        assert chain[1][10] == int(be._d_refl) != 0         # the chain writes the reflectance
        args, kw = pixel[1], pixel[2]
        assert args[0] == int(be._d_refl) and args[1] == int(be._d_flags)
        assert args[2] == int(be._d_maps) and args[3] == int(be._d_raw)   # counts: variance
        assert args[9] == pytest.approx(0.1) and args[10] == pytest.approx(4.0)   # K, r^2
        assert args[13] == pytest.approx(0.6) and args[14] == pytest.approx(plan.thb_min)
        ln = pixel_launch(35, 100, True)
        assert kw["block"] == ln.block and kw["shared"] == ln.shared
        ok = args[18]
        for i, (_, a, k) in enumerate(drv.launches[2:-1]):
            assert a[2] == ok, "the spatial step reads quality_pixel's ok plane"
            assert (a[13] != 0) == (i == 0), "value/variance written by the first launch only"
            assert (a[8], a[9]) == (launches[i].t0, launches[i].tc)
            assert k["block"] == launches[i].block and k["shared"] == launches[i].shared
        fa = finish[1]
        assert fa[2] == drv.launches[2][1][13] and fa[6] == ok and fa[7] == n_terms
        # a low-blood pixel's index from its own terms: quality_pixel's ext planes after the
        # guide's
        G = plan.guide_terms.shape[1]
        assert fa[5] == args[17] + G * 35 * 4 != 0
        assert fa[13:15] == [int(be._d_flags), int(be._d_maps)] and fa[17] == int(be._d_input)
        assert set(QUALITY_MAP_NAMES) <= set(res.maps) and "quality" in res.timings_ms
        if integrated:
            assert not [c for c in drv.copies if c[0] != "htod"]   # mapped: no async copies
        else:   # only the frame goes up: no host finish uploading to the spatial step
            assert [c[1] for c in drv.copies if c[0] == "htod_async"] == [int(be._d_raw)]
    finally:
        be.close()
    assert drv.driver_stack == [] and drv.pycuda_stack == []
    assert be._quality._d_q is None


def test_device_output_gets_the_final_map_channels(fake):
    """Device output: the finish kernel writes the packed input's map channels on the device
    (no spatial step: no guide, no bilateral launch)."""
    drv = fake(False)
    be, s = _backend(spatial="none", device_output=True)
    try:
        res = be.run(s.raw, exposure_us=1000.0)
        assert [k for k, _, _ in drv.launches] == ["chain_u16_f32", "quality_pixel",
                                                   "quality_finish_f32"]
        assert drv.launches[1][1][7] == 0 and drv.launches[1][1][8] == 0   # no guide, m = 0
        assert drv.launches[2][1][17] == int(be._d_input)
        assert drv.launches[2][1][5] == 0               # no spatial step: no index terms
        assert res.input.ptr == int(be._d_input)
    finally:
        be.close()


def test_host_finish_for_the_temporal_step(fake):
    """A plan with the temporal step: the per-pixel planes come back, finish_quality runs on
    the host, the spatial step still on the GPU (uploaded values, its launches), and device
    output gets the final map channels by one upload at their offset."""
    from edge.processing.temporal import TemporalParams

    drv = fake(False)
    from edge.backends.cuda import CudaBackend
    s = make_scene(5, 7, 25, seed=4)
    spec = PackSpec(spectra_bands=(0, 4, 8), maps=("sto2", "thb"), dtype="float32")
    plan = ChainPlan.build(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                           baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec,
                           quality=QualityRules(NoiseModel(0.1, 2.0), spatial="bilateral",
                                                temporal=TemporalParams("recursive")))
    be = CudaBackend(plan, prebuilt_dir=None, device_output=True)
    try:
        assert not be._quality.on_device
        res = be.run(s.raw, exposure_us=1000.0)
        names = [k for k, _, _ in drv.launches]
        assert names[:2] == ["chain_u16_f32", "quality_pixel"]
        assert "quality_finish_f32" not in names and "bilateral_f32" in names
        assert [c for c in drv.copies if c[0] == "htod_async"], "values uploaded to the step"
        off = 3 * 35 * 4                                # after the 3 spectra channels
        ups = [c for c in drv.copies if c[0] == "htod" and c[1] == int(be._d_input) + off]
        assert ups and ups[-1][2] == 2 * 35 * 4
        assert set(QUALITY_MAP_NAMES) <= set(res.maps)
    finally:
        be.close()


def test_float32_input_launches_no_variance(fake):
    drv = fake(False)
    be, s = _backend(spatial="none")
    try:
        cube = np.nan_to_num(s.reflectance, nan=0.5, posinf=0.5).astype(np.float32)
        res = be.run(cube, exposure_us=1000.0)
        args = drv.launches[1][1]
        assert args[3] == 0 and args[4] == 0 and args[16] == 0    # no raw, dark, var
        assert drv.launches[2][1][1] == 0                 # the finish: no var, so sigma NaN
        assert "sto2_sigma" in res.maps
    finally:
        be.close()


def test_memory_md_states_the_byte_count():
    """cuda_kernels/MEMORY.md's quality table is quality_bytes' count."""
    from cuda_kernels import KERNEL_DIR
    from edge.backends.cuda_quality import quality_bytes
    from edge.core.chain import chain_bytes

    q = quality_bytes(100, 5, 12, reflectance_asked=False)
    assert (q["reflectance"], q["quality_pixel"], q["bilateral"], q["finish"]) == \
        (400, 1083, 162, 131)
    assert q["device"] == 1776 and quality_bytes(100, 5, 12)["device"] == 1376
    pack = PackSpec(spectra_bands=tuple(range(100)), maps=("sto2", "thi"), dtype="float32")
    chain = chain_bytes((480, 640, 100), pack=pack, reflectance=False)
    total = chain + 480 * 640 * q["device"]
    floor = chain_bytes((480, 640, 100), pack=pack, reflectance=False, maps=8) \
        + 480 * 640 * (2 * 4 * (2 + 5 + 12) + 2)
    text = (KERNEL_DIR / "MEMORY.md").read_text()
    for figure in (f"{chain / 1e6:.1f} MB", f"{total / 1e6:.1f} MB", f"{floor / 1e6:.1f} MB",
                   f"{total / 204.8e6:.2f} ms", f"{floor / 204.8e6:.2f} ms"):
        assert figure in text, figure
