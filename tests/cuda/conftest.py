"""Fixtures for the CPU-only CUDA checks: the host shim library (scenes: hsi_cuda_scenes.py).

The shim (``host_shim.cpp``) compiles ``cuda_kernels/pixel_math.cuh`` for the CPU with g++
(the CUDA qualifiers are defined away), so these tests run in every CI run.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "cuda_kernels"
SHIM_SRC = Path(__file__).with_name("host_shim.cpp")

_P = ctypes.c_void_p
_LL, _I, _F, _U = ctypes.c_longlong, ctypes.c_int, ctypes.c_float, ctypes.c_uint
_SIGNATURES = {
    "shim_params_layout": [_P],
    "shim_flatfield": [_P, _P, _P, _P, _LL, _I, _F, _F, _P, _P],
    "shim_absorbance": [_P, _LL, _F, _P],
    "shim_unmix": [_P, _P, _LL, _P, _P, _P],
    "shim_sto2": [_P, _P, _LL, _P],
    "shim_indices": [_P, _P, _LL, _P],
    "shim_pack": [_P, _P, _P, _P, _LL, _P],
    "shim_chain": [_P, _P, _P, _P, _P, _LL, _F, _P, _P, _P, _P],
    "shim_argmax": [_P, _LL, _I, _P],
    "shim_overlay": [_P, _P, _P, _P, _LL, _LL, _F, _F, _U, _U, _P],
}


@pytest.fixture(scope="session")
def shim(tmp_path_factory) -> ctypes.CDLL:
    """The host shim, built once per session with g++ (skipped if there is no g++)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("needs a C++ compiler (g++) to build the host shim of pixel_math.cuh")
    out = tmp_path_factory.mktemp("shim") / "libhsi_shim.so"
    # -ffp-contract=off: no FMA contraction, so the shim rounds like NumPy does.
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off",
           "-Wall", "-Wno-unknown-pragmas", "-Werror", "-I", str(KERNELS), str(SHIM_SRC),
           "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"host shim failed to compile:\n{proc.stderr}"
    lib = ctypes.CDLL(str(out))
    for name, args in _SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = None
    return lib
