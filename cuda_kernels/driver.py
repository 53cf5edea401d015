"""What the CUDA driver must be for this build of PyCUDA and of the kernels, and how to say so.

PyCUDA links the driver API by the names in the ``cuda.h`` it was built against, and Python
loads extension modules with RTLD_NOW: a PyCUDA wheel built against CUDA 13 headers needs
``cuCtxCreate_v4`` (first in the 12.5 driver) and ``cuEventElapsedTime_v2`` (CUDA 13, R580),
so on an older driver ``import pycuda.driver`` fails with ``undefined symbol`` -- an old
driver, not a missing PyCUDA (research/cuda_review.md item 1).  Kernels built by nvcc X.Y
carry PTX that only an X.Y-or-newer driver JIT-compiles (nvcc 13: PTX 9.0, R580+).

Used by :func:`edge.backends.cuda.import_pycuda`, the TensorRT runtime's PyCUDA import and the
GPU preflight (tests/gpu/run.sh); it lives beside :func:`cuda_kernels.select_binary` (the
same compatibility rules for the kernels) so both layers above can use it.  Importing it
needs no PyCUDA.
"""

from __future__ import annotations

import re
import threading
import weakref

from cuda_kernels import driver_release

__all__ = ["DRIVER_SYMBOLS", "explain_pycuda_import_error", "release", "driver_problems",
           "PYCUDA_FLOOR", "primary_context"]

#: Driver-API symbols a PyCUDA build may need that old drivers lack, with the first driver
#: that has them (CUDA release, driver branch).
DRIVER_SYMBOLS: dict[str, tuple[str, str]] = {
    "cuCtxCreate_v4": ("12.5", "R555"),
    "cuEventElapsedTime_v2": ("13.0", "R580"),
}
#: First PyCUDA release that builds against CUDA 13 headers (inducer/pycuda#485, fixed by #487
#: in 2025.1.2); the ``cuda`` extra of pyproject.toml asks for it.
PYCUDA_FLOOR = "2025.1.2"

_SYMBOL_RE = re.compile(r"undefined symbol:\s*(\w+)")


def explain_pycuda_import_error(exc: BaseException, who: str = "cuda backend") -> str:
    """One line saying why ``import pycuda.driver`` failed: an old driver or a missing
    package (and what to install or update)."""
    text = str(exc)
    m = _SYMBOL_RE.search(text)
    if m:
        symbol = m.group(1)
        need = DRIVER_SYMBOLS.get(symbol)
        floor = (f"needs a CUDA {need[0]}+ driver ({need[1]}+)" if need else
                 "needs a newer driver")
        return (f"{who}: the NVIDIA driver is too old for this PyCUDA build (undefined symbol "
                f"{symbol}: {floor}; a PyCUDA built against CUDA 13 headers needs R580+/CUDA "
                f"13.0+): update the driver, or rebuild PyCUDA against the unit's own CUDA "
                f"(JetPack 6: CUDA 12.x, CUDA_ROOT=/usr/local/cuda)")
    if "libcuda" in text:
        return (f"{who}: PyCUDA is installed but the NVIDIA driver library is not ({text}); "
                f"needs an NVIDIA GPU with its driver")
    return (f"{who}: PyCUDA is not installed ({text}); pip install 'hsi-edge[cuda]' "
            f"(pycuda>={PYCUDA_FLOOR}, needs the CUDA toolkit) and an NVIDIA GPU")


def release(version) -> tuple[int, int]:
    """CUDA release ``(major, minor)`` of a driver version (``12060``), a PyCUDA
    ``get_version()`` tuple (``(13, 0, 0)``) or an nvcc version string (``"13.0.88"``)."""
    if isinstance(version, (tuple, list)):
        return int(version[0]), int(version[1]) if len(version) > 1 else 0
    return driver_release(version)


def driver_problems(driver, *, pycuda_built=None, nvcc=None) -> list[str]:
    """Why this driver cannot run what was built (empty: it can).

    Parameters
    ----------
    driver : int
        ``pycuda.driver.get_driver_version()``, e.g. ``12060``.
    pycuda_built : tuple, optional
        ``pycuda.driver.get_version()``: the CUDA headers PyCUDA was built against.
    nvcc : str, optional
        The nvcc version the kernels are (to be) built with, e.g. ``"13.0.88"``.
    """
    have = release(driver)
    shown = f"{have[0]}.{have[1]}"
    problems = []
    if pycuda_built is not None and release(pycuda_built) > have:
        b = release(pycuda_built)
        problems.append(f"PyCUDA was built against CUDA {b[0]}.{b[1]} headers but the driver "
                        f"is CUDA {shown}: rebuild it against the unit's CUDA "
                        f"(CUDA_ROOT=... bash ../shared/tools/gpu-wheels.sh) or update the "
                        f"driver")
    if nvcc is not None and release(nvcc) > have:
        n = release(nvcc)
        problems.append(f"nvcc {n[0]}.{n[1]} writes PTX the CUDA {shown} driver cannot load: "
                        f"use the unit's own toolkit (CUDA_HOME) or update the driver")
    return problems


_RETAINED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # cuda module -> {dev: ctx}
_RETAIN_LOCK = threading.Lock()


def primary_context(cuda, device: int):
    """The primary context of ``device``, retained once per process and never released.

    Every user (the CUDA backend, the TensorRT runtime and engine builds) shares it and only
    pushes and pops it around its calls.  Releasing it per user is what leaked: PyCUDA's
    ``detach()`` of a context that is not current pushes it and calls
    ``cuDevicePrimaryCtxRelease`` without a pop ("pop is implicit in detach", false for a
    primary context; PyCUDA 2026.1 src/cpp/cuda.hpp), leaving a stale entry on the thread's
    context stack at every close, and from another thread it does nothing at all
    (research/cuda_review.md item 8).  The driver frees the context at process exit.
    """
    with _RETAIN_LOCK:
        per_module = _RETAINED.setdefault(cuda, {})
        ctx = per_module.get(int(device))
        if ctx is None:
            ctx = per_module[int(device)] = cuda.Device(int(device)).retain_primary_context()
        return ctx
