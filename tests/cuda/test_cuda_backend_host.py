"""The CUDA backend's host side on the CPU: contexts, buffers, pointers (issue 20, items 5 and 8).

``pycuda`` is fake_pycuda with add_fake_device: PyCUDA's context push/pop and the driver's
context stack as PyCUDA 2026.1 drives them, page-locked and device-mapped buffers, and the
argument rules of kernel launches (numpy scalars or allocations) and of ``memcpy_htod``
(ints or allocations, never ``np.uintp``).  No kernel runs: results are not checked here
(tests/gpu does that on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.backends.base import PackSpec
from hsi_cuda_scenes import make_scene

ROOT = Path(__file__).resolve().parents[2]




def _backend(**kw):
    from edge.backends.cuda import CudaBackend
    s = make_scene(5, 7, 16, seed=3)
    spec = PackSpec(spectra_bands=tuple(range(0, 16, 2)), maps=("sto2",), dtype="float32")
    return CudaBackend(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                       baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec,
                       prebuilt_dir=None, return_reflectance=True, **kw), s


# ---- item 8: the primary context ------------------------------------------------------------
@pytest.mark.parametrize("integrated", [False, True])
def test_close_leaves_the_threads_context_stack_as_it_was(fake, integrated):
    drv = fake(integrated)
    for _ in range(2):
        be, s = _backend()
        be.run(s.raw, exposure_us=1000.0)
        be.close()
        be.close()                                  # idempotent
        assert drv.driver_stack == [] and drv.pycuda_stack == []
    assert drv.retained == ["primary"]              # retained once per process, never leaked


# ---- item 5: device pointers of mapped host memory --------------------------------------------
def test_mapped_buffers_have_plain_int_device_pointers_and_launch(fake):
    drv = fake(integrated=True)
    be, s = _backend()
    try:
        be.input_buffer(s.raw.shape, s.raw.dtype)
        for name in ("_d_raw", "_d_maps", "_d_flags", "_d_input", "_d_refl"):
            assert type(getattr(be, name)) is int, name
        be.run(s.raw, exposure_us=1000.0)           # launch args packed as pointers
        (kernel, args, _), = [x for x in drv.launches if x[0].startswith("chain")]
        assert args[0] == be._d_raw and args[7] == be._d_maps
        assert not [c for c in drv.copies if c[0] != "htod"]   # mapped: no async copies
    finally:
        be.close()


# ---- item 8: input buffers a camera thread may fill ------------------------------------------
@pytest.mark.parametrize("integrated", [False, True])
def test_input_buffers_rotate_so_queued_frames_are_not_overwritten(fake, integrated):
    drv = fake(integrated)
    be, s = _backend()
    try:
        bufs = [be.input_buffer(s.raw.shape, s.raw.dtype) for _ in range(be.INPUT_RING)]
        assert len({id(b) for b in bufs}) == be.INPUT_RING          # all distinct
        assert be.input_buffer(s.raw.shape, s.raw.dtype) is bufs[0]  # then the ring repeats
        for b, value in zip(bufs, (1, 2, 3, 4)):
            b.fill(value)                       # a camera thread fills frames ahead
        drv.launches.clear(), drv.copies.clear()
        be.run(bufs[1], exposure_us=1000.0)     # the second queued frame
        assert (bufs[2] == 3).all() and (bufs[1] == 2).all()          # nothing overwritten
        (_, args, _), = drv.launches
        if integrated:      # the kernel reads that buffer in place
            assert args[0] == bufs[1].base.get_device_pointer()
        else:               # uploaded from that buffer, not copied into another first
            (up,) = [c for c in drv.copies if c[0] == "htod_async"]
            assert up[1] == int(be._d_raw) and up[2] == bufs[1].nbytes
    finally:
        be.close()


# ---- item 2: backend auto falls back when the kernels cannot be loaded -----------------------
def test_backend_auto_falls_back_to_numpy_when_no_kernels_load(fake, monkeypatch, tmp_path,
                                                              caplog):
    import logging
    import types

    from edge.errors import BackendUnavailable
    from edge.pipeline.backend_factory import make_backend
    from edge.pipeline.config import AppConfig
    fake()
    monkeypatch.delenv("CUDA_HOME", raising=False)       # no nvcc for a run-time compile
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    # no prebuilt kernels either, even where `hsi-edge kernels build` left some in the tree
    from edge.backends.cuda import CudaBackend
    monkeypatch.setitem(CudaBackend.__init__.__kwdefaults__, "prebuilt_dir",
                        str(tmp_path / "no-prebuilt"))
    s = make_scene(5, 7, 16, seed=3)
    camera = types.SimpleNamespace(wavelengths=s.wl, fwhm_nm=None, sensor_noise=None)
    with caplog.at_level(logging.WARNING):
        be = make_backend("auto", camera, s.flatfield, None, AppConfig())
    assert be.name == "numpy"
    assert "backend auto: cuda is not usable here (cuda backend: no loadable prebuilt kernels " \
           "for chain" in caplog.text
    with pytest.raises(BackendUnavailable, match=r"no run-time compile: nvcc not found"):
        make_backend("cuda", camera, s.flatfield, None, AppConfig())


# ---- issue 14: a StO2 table with a THb axis ---------------------------------------------------
def test_table_with_thb_axis_reaches_the_kernels(fake):
    """The rows and THb axis of a 2-D StO2 table go into the c_params every module gets (row
    stride n_table), the quality finish's slope table is uploaded as (rows, knots - 1), and
    the standalone sto2 op refuses a 2-D table without THb in one line."""
    from edge.backends.cuda import CudaBackend
    from edge.backends.cuda_params import CHAIN_PARAMS_DTYPE
    from edge.errors import ConfigError
    from edge.processing.quality import QualityRules
    from hsi_cuda_scenes import synthetic_calibration_2d

    drv = fake()
    s = make_scene(5, 7, 16, seed=3)
    cal = synthetic_calibration_2d(rows=5)
    be = CudaBackend(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                     baseline=s.unmixer.baseline, calibration=cal, prebuilt_dir=None,
                     quality=QualityRules())
    try:
        p = be.params
        assert (int(p["n_rows"]), int(p["n_table"])) == (5, 256)
        assert (float(p["thb_x0"]), float(p["thb_dx"])) == (cal.thb_x0, cal.thb_dx)
        assert np.array_equal(p["table_y"][:5 * 256], cal.table_grid.ravel())
        assert not p["table_y"][5 * 256:].any()
        size = CHAIN_PARAMS_DTYPE.itemsize
        assert sum(c[2] == size for c in drv.copies if c[0] == "htod") == 2   # chain, quality
        assert be._quality._d_slopes.nbytes == 5 * 255 * 4
        x = np.zeros(4, np.float32)
        with pytest.raises(ConfigError, match=r"thb: the StO2 table has a THb axis \(5 rows\), "
                                              r"so sto2\(\) needs the pixels' THb, got None"):
            be.ops.sto2(x)
        with pytest.raises(ConfigError, match=r"thb: expected the shape of sto2_raw \(4,\), "
                                              r"got \(3,\)"):
            be.ops.sto2(x, np.zeros(3, np.float32))
    finally:
        be.close()
