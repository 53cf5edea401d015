"""Build the host shim of ``cuda_kernels/pixel_math.cuh`` (``tests/cuda/host_shim.cpp``) and the
host emulation of the tiled chain kernel (``tests/cuda/host_emulation.cpp``) with g++ and load
them with ctypes.  One place for the compiler line and the C signatures, used by
the CPU CUDA checks (``tests/cuda``, no FMA contraction: rounds like NumPy) and by the GPU-run
preparation checks (``tests/gpu``, FMA contraction on: rounds like nvcc's default).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "cuda_kernels"
SHIM_SRC = ROOT / "tests" / "cuda" / "host_shim.cpp"

_P = ctypes.c_void_p
_LL, _I, _F, _U = ctypes.c_longlong, ctypes.c_int, ctypes.c_float, ctypes.c_uint
SIGNATURES = {
    "shim_params_layout": [_P],
    "shim_flatfield": [_P, _P, _P, _P, _LL, _I, _F, _F, _P, _P],
    "shim_absorbance": [_P, _LL, _F, _P],
    "shim_unmix": [_P, _P, _LL, _P, _P, _P],
    "shim_sto2": [_P, _P, _P, _LL, _P],
    "shim_q_slope": [_P, _P, _P, _P, _LL, _P],
    "shim_indices": [_P, _P, _LL, _P],
    "shim_pack": [_P, _P, _P, _P, _LL, _P],
    "shim_chain": [_P, _P, _P, _P, _P, _LL, _F, _P, _P, _P, _P],
    "shim_argmax": [_P, _LL, _I, _P],
    "shim_overlay": [_P, _P, _P, _P, _LL, _LL, _F, _F, _U, _U, _P],
}


EMU_SRC = ROOT / "tests" / "cuda" / "host_emulation.cpp"
EMU_SIGNATURES = {
    "emu_chain": [_P, _P, _I, _P, _P, _P, _LL, _I, _I, _F, _P, _P, _P, _P],
}


def build_library(src: Path, out: Path, fp_flags: list[str], signatures: dict,
                  what: str) -> ctypes.CDLL:
    """Compile ``src`` (with ``cuda_kernels`` on the include path) to ``out`` and load it.

    Skips the test when there is no C++ compiler; fails with the compiler's message when the
    source does not compile.
    """
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip(f"needs a C++ compiler (g++) to build the {what}")
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", *fp_flags,
           "-Wall", "-Wno-unknown-pragmas", "-Werror", "-I", str(KERNELS), str(src),
           "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{what} failed to compile:\n{proc.stderr}"
    lib = ctypes.CDLL(str(out))
    for name, args in signatures.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = None
    return lib


def build_host_shim(out: Path, fp_flags: list[str], what: str = "host shim") -> ctypes.CDLL:
    """The host shim of ``pixel_math.cuh`` (``tests/cuda/host_shim.cpp``), built and loaded."""
    return build_library(SHIM_SRC, out, fp_flags, SIGNATURES, what)


def build_host_emulation(out: Path) -> ctypes.CDLL:
    """The host emulation of the tiled chain kernel (``tests/cuda/host_emulation.cpp``)."""
    return build_library(EMU_SRC, out, ["-ffp-contract=off"], EMU_SIGNATURES,
                         "host emulation of chain.cu")
