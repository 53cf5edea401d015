"""GPU fixtures: the primary context, kernels built ahead of time for this device, scenes.

Everything here needs PyCUDA and an NVIDIA GPU; tests are marked ``gpu`` and skipped
elsewhere (tests/conftest.py says why).  Scenes and comparators are shared with the CPU
checks (tests/cuda/hsi_cuda_scenes.py).

Environment (set by tests/gpu/run.sh):

``HSI_REQUIRE_GPU=1``
    A missing PyCUDA/GPU stops the session with the reason (exit code 4) instead of skipping
    every test, so a GPU run can never report "passed" having run nothing.
``HSI_GPU_PREBUILT=DIR``
    Kernels already built for this device by run.sh (``cuda_kernels.build``); used when its
    manifest is current for the device arch, otherwise the session builds its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The scene builder lives with the CPU checks; make it importable from here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cuda"))


def gpu_problem() -> str | None:
    """Why no GPU test can run here (None: PyCUDA imports and finds a device)."""
    try:
        import pycuda.driver as cuda
    except Exception as exc:     # ImportError, or a missing libcuda / dependency inside it
        return f"PyCUDA does not import: {exc!r}"
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            return "the CUDA driver finds no GPU"
    except Exception as exc:
        return f"the CUDA driver is not usable: {exc!r}"
    return None


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HSI_REQUIRE_GPU") != "1":
        return
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    problem = gpu_problem()
    if problem:
        pytest.exit(f"HSI_REQUIRE_GPU=1 but {problem}", returncode=4)


def prebuilt_for(arch: str, tmp_path_factory) -> Path:
    """A kernel build directory current for ``arch``: run.sh's, else a fresh build."""
    from cuda_kernels import manifest_problems
    from cuda_kernels.build import build

    given = os.environ.get("HSI_GPU_PREBUILT")
    if given and not manifest_problems(given, arch):
        return Path(given)
    out = tmp_path_factory.mktemp("prebuilt")
    build([arch], out)
    return out


@pytest.fixture(scope="session")
def gpu(tmp_path_factory):
    """(pycuda.driver, device, arch, prebuilt dir) with the primary context pushed."""
    from cuda_kernels import arch_of
    from edge.backends.cuda import import_pycuda

    cuda = import_pycuda()
    dev = cuda.Device(0)
    arch = arch_of(dev.compute_capability())
    # Build before pushing the context: PyCUDA aborts the interpreter at exit when its context
    # stack is not empty, so a failed nvcc run must not leave a pushed context behind.
    prebuilt = prebuilt_for(arch, tmp_path_factory)
    from cuda_kernels.driver import primary_context
    ctx = primary_context(cuda, 0)   # the one the backend and TensorRT share; never detached
    ctx.push()
    try:
        yield cuda, dev, arch, prebuilt
    finally:
        cuda.Context.pop()
