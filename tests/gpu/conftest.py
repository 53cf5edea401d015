"""GPU fixtures: the primary context, kernels built ahead of time for this device, scenes.

Everything here needs PyCUDA and an NVIDIA GPU; tests are marked ``gpu`` and skipped
elsewhere (tests/conftest.py says why).  Scenes and comparators are shared with the CPU
checks (tests/cuda/hsi_cuda_scenes.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The scene builder lives with the CPU checks; make it importable from here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cuda"))


@pytest.fixture(scope="session")
def gpu(tmp_path_factory):
    """(pycuda.driver, device, arch, prebuilt dir) with the primary context pushed."""
    from cuda_kernels import arch_of
    from cuda_kernels.build import build
    from edge.backends.cuda import import_pycuda

    cuda = import_pycuda()
    dev = cuda.Device(0)
    ctx = dev.retain_primary_context()
    ctx.push()
    arch = arch_of(dev.compute_capability())
    out = tmp_path_factory.mktemp("prebuilt")
    build([arch], out)
    yield cuda, dev, arch, out
    cuda.Context.pop()
    ctx.detach()
