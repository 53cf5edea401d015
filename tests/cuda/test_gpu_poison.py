"""The GPU tests' output poisoning (tests/gpu/gpu_poison.py) on both kinds of CUDA memory, on
the CPU (issue 20, item 5): on a Jetson the backend's buffers are mapped host memory, whose
device pointers ``memcpy_htod`` must not be given as ``np.uintp`` (Boost.Python refuses it,
reproduced in research/cuda_review.md item 3), and need no copy at all.  ``pycuda`` is
fake_pycuda with add_fake_device; no kernel runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.backends.base import PackSpec
from hsi_cuda_scenes import make_scene

ROOT = Path(__file__).resolve().parents[2]




def _backend():
    from edge.backends.cuda import CudaBackend
    s = make_scene(5, 7, 16, seed=3)
    spec = PackSpec(spectra_bands=tuple(range(0, 16, 2)), maps=("sto2",), dtype="float32")
    return CudaBackend(s.wl, flatfield=s.flatfield, chromophores=s.unmixer.chromophores,
                       baseline=s.unmixer.baseline, calibration=s.calibration, pack=spec,
                       prebuilt_dir=None, return_reflectance=True), s


@pytest.mark.parametrize("integrated", [False, True])
def test_gpu_test_poisoning_works_on_both_kinds_of_memory(fake, integrated):
    spec = importlib.util.spec_from_file_location("gpu_poison", ROOT / "tests" / "gpu" /
                                                  "gpu_poison.py")
    gpu_poison = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_poison)
    drv = fake(integrated)
    be, s = _backend()
    try:
        be.input_buffer(s.raw.shape, s.raw.dtype)
        before = len(drv.copies)
        gpu_poison.poison_backend_outputs(drv, be)
        assert np.isnan(be._h_maps).all() and (be._h_flags == 0xAB).all()
        assert len(drv.copies) - before == (0 if integrated else 4)
    finally:
        be.close()
