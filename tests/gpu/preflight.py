"""Preflight of the GPU check (tests/gpu/run.sh): refuse clearly, before anything runs.

Two steps, each one command (standard library only until PyCUDA is installed):

``python3 tests/gpu/preflight.py wheels DIR``
    Before ``pip install`` of the carried wheels: every wheel's Python tag must match this
    ``python3`` (gpu-wheels.sh builds cp312 wheels), and the GNU libc must be at least the
    newest ``GLIBC_x.y`` its shared objects reference (a PyCUDA wheel built on a newer system
    needs GLIBC_2.34: Ubuntu 22.04 is fine, 20.04 is not).  Exit 1 with one line per problem.

``python3 tests/gpu/preflight.py gpu``
    After the install: every import the run needs (an ``undefined symbol`` from PyCUDA is
    reported as a driver too old for the build, not a missing package), then the driver
    version against the CUDA headers PyCUDA was built with and the nvcc that builds the
    kernels (cuda_kernels/driver.py), then one kernel build for this GPU into
    ``$HSI_GPU_PREBUILT``.  Lines with ``FAILED`` and the ``device:`` line go into run.sh's
    summary.  Exit 1 on any failure.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(?:-\d[^-]*)?-(?P<py>[^-]+)-"
                       r"(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_GLIBC_RE = re.compile(rb"GLIBC_(\d+)\.(\d+)")


def python_tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}"


def glibc_version() -> tuple[int, int] | None:
    lib, ver = platform.libc_ver()
    m = re.match(r"(\d+)\.(\d+)", ver or "")
    return (int(m.group(1)), int(m.group(2))) if lib == "glibc" and m else None


def wheel_glibc(path: Path) -> tuple[int, int] | None:
    """Newest ``GLIBC_x.y`` symbol version the wheel's shared objects reference."""
    need = None
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if ".so" in Path(member).name:
                for m in _GLIBC_RE.finditer(z.read(member)):
                    v = (int(m.group(1)), int(m.group(2)))
                    need = v if need is None or v > need else need
    return need


def wheel_problems(paths, py: str, glibc: tuple[int, int] | None) -> list[str]:
    """Why these wheels cannot be installed for ``py`` (``"cp312"``) on this libc."""
    problems = []
    for path in sorted(Path(p) for p in paths):
        m = _WHEEL_RE.match(path.name)
        if not m:
            problems.append(f"{path.name}: not a wheel file name")
            continue
        tags = m.group("py").split(".")
        if not any(t == py or t.startswith("py") for t in tags):
            problems.append(f"{path.name} is for {m.group('py')}, but python3 here is {py} "
                            f"(Python {sys.version.split()[0]}): run with that Python "
                            f"(PYTHON=python3.12 bash tests/gpu/run.sh) or rebuild .whl/ for "
                            f"this one")
        try:
            need = wheel_glibc(path)
        except (OSError, zipfile.BadZipFile) as exc:
            problems.append(f"{path.name}: unreadable wheel ({exc})")
            continue
        if need is not None and (glibc is None or glibc < need):
            have = "no GNU libc" if glibc is None else f"glibc {glibc[0]}.{glibc[1]}"
            problems.append(f"{path.name} needs glibc >= {need[0]}.{need[1]}, this system has "
                            f"{have} (Ubuntu 22.04 or newer); rebuild the wheel on a system "
                            f"no newer than this one")
    return problems


def gpu_preflight() -> bool:
    """Imports, driver against the builds, one kernel build; print one line per step."""
    ok = True
    for mod in ("numpy", "yaml", "pytest", "pycuda.driver", "edge.backends.cuda", "cupy",
                "torch"):
        try:
            m = importlib.import_module(mod)
            print(f"import {mod}: ok {getattr(m, '__version__', '')}")
        except Exception as exc:
            optional = mod in ("cupy", "torch")
            ok &= optional
            if mod == "pycuda.driver" and isinstance(exc, ImportError):
                from cuda_kernels.driver import explain_pycuda_import_error
                print(f"import {mod}: FAILED: {explain_pycuda_import_error(exc, 'preflight')}")
            else:
                print(f"import {mod}: {'missing (optional baseline)' if optional else 'FAILED'}"
                      f": {exc!r}")
    if not ok:
        return False
    import pycuda.driver as cuda

    from cuda_kernels import arch_of
    from cuda_kernels.build import build, find_nvcc, nvcc_version
    from cuda_kernels.driver import driver_problems, release

    cuda.init()
    dev = cuda.Device(0)
    driver, built = cuda.get_driver_version(), cuda.get_version()
    nvcc = nvcc_version(find_nvcc())
    d, b = release(driver), release(built)
    print(f"device: {dev.name()} cc {dev.compute_capability()} driver {driver} (CUDA "
          f"{d[0]}.{d[1]}); PyCUDA built against CUDA {b[0]}.{b[1]}; nvcc {nvcc}")
    problems = driver_problems(driver, pycuda_built=built, nvcc=nvcc)
    for p in problems:
        print(f"FAILED driver: {p}")
    if problems:
        return False
    build([arch_of(dev.compute_capability())], os.environ["HSI_GPU_PREBUILT"])
    print("kernel build: ok")
    return True


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "wheels":
        wheels = sorted(Path(argv[1]).glob("*.whl"))
        problems = wheel_problems(wheels, python_tag(), glibc_version())
        for p in problems:
            print(f"FAILED wheels: {p}")
        if not problems:
            print(f"wheels: {len(wheels)} wheel(s) fit {python_tag()} and this libc")
        return 1 if problems else 0
    if argv == ["gpu"]:
        return 0 if gpu_preflight() else 1
    print("usage: preflight.py wheels DIR | preflight.py gpu", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
