"""CUDA C sources of the hsi-edge per-pixel chain, and their loader.

One op per ``.cu`` file; the per-pixel arithmetic lives in ``pixel_math.cuh``
(``__host__ __device__``) so the tests can run it on the CPU.  No Python math here: the
parameter block is filled by :mod:`edge.backends.cuda_params`, launches are configured only by
:mod:`edge.backends.cuda`.  Ahead-of-time builds (cubin per arch + PTX + ``manifest.json``)
are made by :func:`cuda_kernels.build.build` (``hsi-edge kernels build``); the backend loads
them when :func:`select_binary` says they match the sources and the device, and otherwise
compiles at run time (development path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError

__all__ = [
    "KERNEL_DIR", "HEADERS", "MODULES", "Module", "DEFAULT_PREBUILT_DIR", "MANIFEST_NAME",
    "source_hashes", "runtime_source", "read_manifest", "manifest_problems", "select_binary",
    "arch_of", "arch_number", "PTX_BASE_ARCH", "driver_release",
]

log = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent
#: Headers every module may include; a change to any of them makes every binary stale.
HEADERS: tuple[str, ...] = ("common.cuh", "pixel_math.cuh", "staging.cuh", "chain_tail.cuh",
                            "quality_math.cuh", "quality_tail.cuh", "register_math.cuh")
#: Where ``hsi-edge kernels build`` writes by default and the backend looks first.
DEFAULT_PREBUILT_DIR = KERNEL_DIR / "prebuilt"
MANIFEST_NAME = "manifest.json"
#: 2: ``ptx`` maps each virtual arch to its file (format 1 had one ``ptx``/``ptx_arch``).
MANIFEST_FORMAT = 2
#: PTX is always built for this arch too (besides the oldest real arch of the build): the
#: oldest CUDA 13 can target (nvcc 13 refuses compute_70), so every card from Turing on --
#: T4, RTX 20/30/40, A10, A100 (sm_80/86), L4, H100, B200 -- has a binary its driver can JIT
#: when no cubin of its own was built.  compute_75 rather than compute_80: it costs one more
#: small text file per module, and it covers Turing too.
PTX_BASE_ARCH = "sm_75"
#: A real arch, optionally arch-specific (``sm_90a``: runs only on compute capability 9.0).
_ARCH_RE = re.compile(r"^(?:sm|compute)_(\d{2,3})([a-z]?)$")


@dataclass(frozen=True)
class Module:
    """One ``.cu`` file (one op) and the ``extern "C"`` kernels it defines."""

    name: str
    source: str
    kernels: tuple[str, ...]
    #: ``__constant__`` symbols the host fills (``c_params``: a ChainParams block).
    constants: tuple[str, ...] = ()


MODULES: dict[str, Module] = {m.name: m for m in (
    Module("flatfield", "flatfield.cu", ("flatfield_u16", "flatfield_f32")),
    Module("absorbance", "absorbance.cu", ("absorbance_f32",)),
    Module("unmix", "unmix.cu", ("unmix_f32",), ("c_params",)),
    Module("sto2", "sto2.cu", ("sto2_calibrate_f32",), ("c_params",)),
    Module("indices", "indices.cu", ("indices_f32",), ("c_params",)),
    Module("pack", "pack.cu", ("pack_f32", "pack_f16"), ("c_params",)),
    Module("post", "post.cu", ("argmax_f32", "argmax_f16", "overlay_u8"), ("c_colours",)),
    Module("chain", "chain.cu", ("chain_u16_f32", "chain_u16_f16", "chain_f32_f32",
                                 "chain_f32_f16"), ("c_params",)),
    Module("quality", "quality.cu", ("quality_pixel", "bilateral_f32", "quality_finish_f32",
                                     "quality_finish_f16"), ("c_params",)),
    Module("register", "register.cu", ("register_sat_pixel", "register_u16")),
)}


def source_hashes(kernel_dir: Path = KERNEL_DIR) -> dict[str, str]:
    """SHA-256 of every ``.cu`` and ``.cuh`` file, keyed by file name (sorted)."""
    files = sorted(list(kernel_dir.glob("*.cu")) + list(kernel_dir.glob("*.cuh")))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def runtime_source(module: str) -> str:
    """Source text for a run-time compile, with ``#line`` so errors name the ``.cu`` file.

    Includes resolve against :data:`KERNEL_DIR` (pass it as an include directory).
    """
    mod = _module(module)
    path = KERNEL_DIR / mod.source
    return f'#line 1 "{path}"\n' + path.read_text()


def arch_of(compute_capability: tuple[int, int]) -> str:
    """``(8, 7)`` -> ``"sm_87"``."""
    major, minor = compute_capability
    return f"sm_{major}{minor}"


def arch_number(arch: str) -> int:
    """``"sm_87"`` -> 87, ``"sm_90a"`` -> 90, ``"compute_75"`` -> 75.

    Raises
    ------
    ConfigError
        If ``arch`` is not of that form.
    """
    m = _ARCH_RE.match(arch)
    if not m:
        raise ConfigError(f"arch: expected a GPU arch like sm_87 or sm_90a, got {arch!r}")
    return int(m.group(1))


def driver_release(version: int | str) -> tuple[int, int]:
    """CUDA release of a driver or toolkit: ``cuda.get_driver_version()`` (``12060``) or an
    nvcc version (``"13.0.88"``) -> ``(12, 6)`` / ``(13, 0)``."""
    if isinstance(version, int) or str(version).isdigit():
        v = int(version)
        return v // 1000, (v % 1000) // 10
    m = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def read_manifest(prebuilt_dir: Path | str) -> dict | None:
    """The manifest of an AOT build directory, or None if there is none or it is unreadable."""
    path = Path(prebuilt_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable kernel manifest %s: %s", path, exc)
        return None


def manifest_problems(prebuilt_dir: Path | str, arch: str | None = None,
                      kernel_dir: Path = KERNEL_DIR) -> list[str]:
    """Why the binaries in ``prebuilt_dir`` cannot be used (empty list: they can).

    Checks the manifest exists and has the current format, that every source hash matches
    the sources in ``kernel_dir`` (a changed, added or removed file makes the build stale),
    that every module is there, and -- when ``arch`` is given -- that a cubin for it exists.
    """
    prebuilt_dir = Path(prebuilt_dir)
    man = read_manifest(prebuilt_dir)
    if man is None:
        return [f"no {MANIFEST_NAME} in {prebuilt_dir}"]
    if man.get("format") != MANIFEST_FORMAT:
        return [f"manifest format {man.get('format')!r}, expected {MANIFEST_FORMAT}"]
    problems = []
    current, built = source_hashes(kernel_dir), man.get("sources", {})
    for name in sorted(set(current) | set(built)):
        if current.get(name) != built.get(name):
            state = ("added" if name not in built else "removed" if name not in current
                     else "changed")
            problems.append(f"{name} {state} since the build (stale manifest)")
    mods = man.get("modules", {})
    for name in MODULES:
        if name not in mods:
            problems.append(f"module {name!r} missing from the manifest")
        elif arch is not None:
            cubin = mods[name].get("cubin", {}).get(arch)
            if cubin is None:
                problems.append(f"module {name!r} has no cubin for {arch} "
                                f"(built for {', '.join(man.get('archs', [])) or 'none'})")
            elif not (prebuilt_dir / cubin).is_file():
                problems.append(f"{cubin} listed in the manifest but missing")
    return problems


def select_binary(module: str, prebuilt_dir: Path | str, arch: str,
                  kernel_dir: Path = KERNEL_DIR, driver_version: int | None = None
                  ) -> tuple[Path | None, str]:
    """Pick the prebuilt file to load for ``module`` on a device of ``arch``.

    Parameters
    ----------
    arch : str
        The device's arch (:func:`arch_of`), e.g. ``"sm_87"``.
    driver_version : int, optional
        ``pycuda.driver.get_driver_version()`` (e.g. ``12060`` for CUDA 12.6).  Given, only
        binaries the driver can load are picked (CUDA compatibility guide): PTX needs a driver
        at least as new as the nvcc that wrote it (nvcc 13 writes PTX ISA 9.0, which drivers
        before R580 reject with CUDA_ERROR_UNSUPPORTED_PTX_VERSION); a cubin needs a driver of
        the same CUDA major or newer (minor-version compatibility).

    Returns
    -------
    (path, reason) : (Path or None, str)
        The cubin for ``arch`` (or its arch-specific ``sm_XYa`` build) when the build is
        current; else the newest PTX whose virtual arch is not newer than the device (the
        driver JIT-compiles it); else ``None`` -- the caller compiles at run time -- with the
        reason.
    """
    _module(module)
    prebuilt_dir = Path(prebuilt_dir)
    problems = manifest_problems(prebuilt_dir, None, kernel_dir)
    if problems:
        return None, "; ".join(problems)
    man = read_manifest(prebuilt_dir)
    built_by = driver_release(man.get("nvcc_version", "0.0"))
    driver = None if driver_version is None else driver_release(driver_version)
    if driver is not None and driver[0] < built_by[0]:
        return None, (f"the kernels were built by nvcc {built_by[0]}.{built_by[1]}, newer than "
                      f"this driver's CUDA {driver[0]}.{driver[1]} (update the driver, or build "
                      f"with the unit's own nvcc)")
    entry = man["modules"][module]
    device = arch_number(arch)
    for name in (arch, arch + "a"):           # sm_90a cubins run on compute capability 9.0 only
        cubin = entry.get("cubin", {}).get(name)
        if cubin and (prebuilt_dir / cubin).is_file():
            return prebuilt_dir / cubin, f"cubin for {name}"
    if driver is not None and driver < built_by:
        return None, (f"no cubin for {arch}, and its PTX (nvcc {built_by[0]}.{built_by[1]}) is "
                      f"newer than this driver's CUDA {driver[0]}.{driver[1]} can JIT")
    usable = [(arch_number(v), f) for v, f in entry.get("ptx", {}).items()
              if arch_number(v) <= device and (prebuilt_dir / f).is_file()]
    if usable:
        num, ptx = max(usable)
        return prebuilt_dir / ptx, f"no cubin for {arch}; PTX compute_{num} (JIT by the driver)"
    return None, f"no cubin for {arch} and no compatible PTX in {prebuilt_dir}"


def _module(name: str) -> Module:
    try:
        return MODULES[name]
    except KeyError:
        raise ConfigError(f"module: expected one of {sorted(MODULES)}, got {name!r}") from None
