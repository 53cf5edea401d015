"""Fixtures for the CPU-only CUDA checks: the host shim library (scenes: hsi_cuda_scenes.py).

The shim (``host_shim.cpp``) compiles ``cuda_kernels/pixel_math.cuh`` for the CPU with g++
(the CUDA qualifiers are defined away), so these tests run in every CI run.
"""

from __future__ import annotations

import ctypes
import sys

import pytest

from fake_pycuda import add_fake_device, make_fake_pycuda
from host_shim_build import build_host_emulation, build_host_shim


@pytest.fixture(scope="session")
def shim(tmp_path_factory) -> ctypes.CDLL:
    """The host shim, built once per session with g++ (skipped if there is no g++)."""
    # -ffp-contract=off: no FMA contraction, so the shim rounds like NumPy does.
    return build_host_shim(tmp_path_factory.mktemp("shim") / "libhsi_shim.so",
                           ["-ffp-contract=off"])


@pytest.fixture(scope="session")
def emu(tmp_path_factory) -> ctypes.CDLL:
    """The host emulation of chain.cu (staging + tail, block by block), built once."""
    return build_host_emulation(tmp_path_factory.mktemp("emu") / "libhsi_emu.so")

@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Install a fake pycuda with one device; nvcc for the run-time compile under
    $CUDA_HOME (a stub: the fake SourceModule never runs it)."""
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").write_text("#!/bin/sh\n")
    monkeypatch.setenv("CUDA_HOME", str(home))

    def install(integrated=False):
        pkg = make_fake_pycuda()
        drv = add_fake_device(pkg, integrated=integrated)
        for name, mod in (("pycuda", pkg), ("pycuda.driver", drv),
                          ("pycuda.compiler", pkg.compiler)):
            monkeypatch.setitem(sys.modules, name, mod)
        return drv
    return install
