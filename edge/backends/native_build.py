"""Build and load the native CPU chain (``cuda_kernels/cpu_chain.cpp``) with the host's C++
compiler, the way PyCUDA builds kernels with nvcc: compiled once, cached, loaded with ctypes.

The shared library is tuned for the machine it is built on (``-march=native`` /
``-mcpu=native``), so the cache key covers everything that makes a build valid here: the
source bytes, the compiler's identity (``--version``), the flags, the machine architecture and
the CPU (model name and feature flags from ``/proc/cpuinfo``).  A cache shared between hosts
therefore never hands one CPU another CPU's instructions.  Builds are written to a temporary
file and renamed into place, so a crash never leaves a truncated library.

The library is dlopen'ed into the process, so the cache follows the rules of
:mod:`edge.core.private_cache`: the folder is created ``0o700`` and refused (one line) unless
it is owned by this user and not writable by group/others; a build record
``<library>.record`` beside each library holds the full build key (sources, compiler, flags,
CPU), the library's sha256 and an HMAC of both under a per-user secret, and a library is loaded
only if all three match -- a damaged file, a file from an interrupted build, or one placed
there by anyone else (with any checksum) is deleted and rebuilt, never mapped.  Checking and
building hold an exclusive lock on ``.lock`` in the folder, so concurrent processes build once
and never delete each other's library.

Cache folder: ``$HSI_EDGE_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/hsi-edge/native``
(``~/.cache``).  Compiler: ``$CXX``, else the first of ``g++``, ``c++``, ``clang++`` on PATH.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from edge.core import private_cache
from edge.core.fileio import atomic_write_bytes, sha256_file
from edge.errors import BackendUnavailable

__all__ = ["SOURCES", "find_compiler", "default_cache_dir", "build_flags", "library_path",
           "load_library"]

log = logging.getLogger(__name__)

KERNELS = Path(__file__).resolve().parents[2] / "cuda_kernels"
#: Files whose bytes make up the build (the .cpp and the headers it includes).
SOURCES = ("cpu_chain.cpp", "cpu_quality.h", "cpu_register.h", "quality_math.cuh",
           "pixel_math.cuh", "common.cuh")
_BASE_FLAGS = ("-O3", "-g", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off",
               "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wno-unknown-pragmas")
_P = ctypes.c_void_p
_SIGNATURES = {
    "hsi_cpu_params_size": ([], ctypes.c_longlong),
    "hsi_cpu_has_f16": ([], ctypes.c_int),
    "hsi_cpu_log": ([_P, ctypes.c_longlong, _P], None),
    "hsi_cpu_copy": ([_P, _P, ctypes.c_longlong, ctypes.c_int], None),
    "hsi_cpu_chain": ([_P, _P, ctypes.c_int, _P, _P, _P, ctypes.c_longlong, ctypes.c_float,
                       _P, _P, _P, ctypes.c_int, _P, ctypes.c_int], ctypes.c_int),
    "hsi_cpu_quality": ([_P, _P, _P, _P, ctypes.c_longlong, ctypes.c_int, ctypes.c_float, _P,
                         _P, _P, ctypes.c_int, ctypes.c_float, ctypes.c_float, _P, _P, _P, _P,
                         _P, _P, ctypes.c_int], ctypes.c_int),
    "hsi_cpu_bilateral": ([_P, _P, _P, _P, _P, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_float, _P, _P,
                           _P, ctypes.c_int], ctypes.c_int),
    "hsi_cpu_register": ([_P, _P, _P, ctypes.c_int, ctypes.c_int, ctypes.c_int, _P, _P,
                          ctypes.c_float, _P, ctypes.c_int], ctypes.c_int),
}


def find_compiler() -> str:
    """Path of the C++ compiler: ``$CXX`` or the first of g++, c++, clang++ on PATH.

    Raises
    ------
    BackendUnavailable
        If none is found (the message says what was looked for).
    """
    env = os.environ.get("CXX")
    if env:
        path = shutil.which(env)
        if path is None:
            raise BackendUnavailable(f"native backend: CXX={env!r} is not an executable on "
                                     f"PATH; set CXX to a C++ compiler or unset it")
        return path
    for name in ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    raise BackendUnavailable("native backend: no C++ compiler found (looked for $CXX, g++, "
                             "c++, clang++); install one (Debian/Ubuntu: apt install g++) or "
                             "use --backend numpy")


def default_cache_dir() -> Path:
    """``$HSI_EDGE_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/hsi-edge/native`` (``~/.cache``)."""
    env = os.environ.get("HSI_EDGE_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hsi-edge" / "native"


def build_flags(openmp: bool = True) -> list[str]:
    """Compiler flags: the base set, the native CPU target and OpenMP (or OpenMP SIMD only)."""
    machine = platform.machine().lower()
    target = ["-mcpu=native"] if machine in ("aarch64", "arm64") else ["-march=native"]
    return [*_BASE_FLAGS, *target, "-fopenmp" if openmp else "-fopenmp-simd"]


def _cpu_signature() -> str:
    """Model name and feature flags of the first CPU (what ``-march=native`` depends on)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor()
    keep = []
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("model name", "flags", "features", "cpu part", "cpu implementer") \
                and key not in {k for k, _ in keep}:
            keep.append((key, line.split(":", 1)[-1].strip()))
    return "\n".join(f"{k}={v}" for k, v in keep)


@functools.lru_cache(maxsize=8)
def _compiler_version(cxx: str) -> str:
    try:
        proc = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"native backend: cannot run {cxx} --version: {exc}") from None
    return proc.stdout.strip()


def library_path(cxx: str, openmp: bool, cache_dir: Path, key: str | None = None) -> Path:
    """Cache path of the build for this source, compiler, flag set and CPU (``key``: its
    :func:`build_key`, when the caller has it already)."""
    return cache_dir / f"cpu_chain-{(key or build_key(cxx, openmp))[:20]}.so"


def build_key(cxx: str, openmp: bool) -> str:
    """Hex sha256 of everything that makes a build valid: source bytes, compiler identity,
    flags, machine and CPU (the library's file name holds its first 20 digits)."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (KERNELS / name).read_bytes() + b"\0")
    for part in (_compiler_version(cxx), " ".join(build_flags(openmp)), platform.machine(),
                 _cpu_signature()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


_RECORD_FORMAT = "hsi-edge-native-build/1"
_SIGN_CONTEXT = "hsi-edge native library"


def _record_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".record")


def _untrusted(lib: Path, key: str, secret: bytes) -> str | None:
    """Why the cached ``lib`` must not be loaded (None: this user built it, intact).

    A damaged shared library must never reach dlopen (a truncated one is mapped anyway and
    crashes the process with SIGBUS on first use), and a library this user did not build must
    never run in-process, whatever checksum comes with it.
    """
    problem = private_cache.file_problem(lib)
    if problem:
        return problem
    try:
        record = json.loads(_record_path(lib).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no build record of this user (a file from an older version or placed there)"
    except (OSError, ValueError):
        return "has an unreadable build record"
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT \
            or record.get("build_key") != key:
        return "has a build record of another build"
    digest = sha256_file(lib)
    if record.get("sha256") != digest:
        return "does not match its build record (damaged or interrupted build)"
    if not private_cache.verify(secret, record.get("hmac"), _SIGN_CONTEXT, key, digest):
        return "was not built by this user (its build record's signature does not match)"
    return None


def _compile(cxx: str, flags: list[str], out: Path, key: str, secret: bytes
             ) -> subprocess.CompletedProcess:
    fd, tmp = tempfile.mkstemp(prefix=out.stem + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *flags, "-I", str(KERNELS), str(KERNELS / "cpu_chain.cpp"), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            digest = sha256_file(tmp)
            os.chmod(tmp, 0o700)
            os.replace(tmp, out)          # atomic: readers see the old file or the whole new one
            record = {"format": _RECORD_FORMAT, "build_key": key, "sha256": digest,
                      "hmac": private_cache.sign(secret, _SIGN_CONTEXT, key, digest),
                      "compiler": cxx, "flags": flags}
            atomic_write_bytes(_record_path(out), json.dumps(record, indent=1).encode())
        return proc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _private_cache(cache_dir: Path) -> bytes:
    """Create/check the cache folder (module docstring); return this user's signing key."""
    hint = "set HSI_EDGE_NATIVE_CACHE to a private folder"
    if not cache_dir.exists():
        try:
            cache_dir.parent.mkdir(parents=True, exist_ok=True)
            cache_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"native backend: cannot create the build cache "
                                     f"{cache_dir} ({exc.strerror}); set HSI_EDGE_NATIVE_CACHE "
                                     f"to a writable folder") from None
    private_cache.ensure_private_dir(cache_dir, what="native backend: build cache",
                                     error=BackendUnavailable, hint=hint)
    return private_cache.user_key(cache_dir, error=BackendUnavailable)


def _build(cxx: str, cache_dir: Path) -> tuple[Path, bool]:
    """Compile (or find) the library; OpenMP first, single-threaded SIMD if that fails."""
    secret = _private_cache(cache_dir)
    with private_cache.locked(cache_dir):
        return _build_locked(cxx, cache_dir, secret)


def _build_locked(cxx: str, cache_dir: Path, secret: bytes) -> tuple[Path, bool]:
    errors = []
    for openmp in (True, False):
        key = build_key(cxx, openmp)       # runs the compiler and reads every source: once
        path = library_path(cxx, openmp, cache_dir, key)
        if path.exists() or path.is_symlink():
            problem = _untrusted(path, key, secret)
            if problem is None:
                return path, openmp
            log.warning("native backend: cached %s %s; deleting it and rebuilding", path.name,
                        problem)
            for p in (path, _record_path(path), path.with_name(path.name + ".sha256")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
        t0 = time.monotonic()
        log.info("native backend: compiling cpu_chain.cpp with %s (once per compiler and CPU)",
                 cxx)
        proc = _compile(cxx, build_flags(openmp), path, key, secret)
        if proc.returncode == 0:
            log.info("native backend: built %s in %.1f s%s", path.name, time.monotonic() - t0,
                     "" if openmp else " (no OpenMP: one thread)")
            return path, openmp
        errors.append(proc.stderr.strip())
        log.debug("native backend: compile with %s failed:\n%s", build_flags(openmp)[-1],
                  proc.stderr)
    first = next((ln for ln in errors[-1].splitlines() if "error" in ln), errors[-1][:300])
    raise BackendUnavailable(f"native backend: {cxx} could not compile cpu_chain.cpp: {first}")


def load_library(cache_dir: Path | None = None) -> tuple[ctypes.CDLL, bool]:
    """Build if needed and load the native chain; returns the library and whether it uses
    OpenMP threads.  ``$CXX`` and ``$HSI_EDGE_NATIVE_CACHE`` are read on every call; a
    library already loaded for the same compiler and folder is returned from memory.

    Raises
    ------
    BackendUnavailable
        No compiler, an unwritable cache folder, one owned by another user or writable by
        group/others (refused: code is loaded from it), a failed compile, or a library whose
        parameter block does not match :data:`edge.backends.cuda_params.CHAIN_PARAMS_DTYPE`.
    """
    return _load(find_compiler(), Path(cache_dir) if cache_dir else default_cache_dir())


@functools.lru_cache(maxsize=8)
def _load(cxx: str, cache_dir: Path) -> tuple[ctypes.CDLL, bool]:
    from edge.backends.cuda_params import CHAIN_PARAMS_DTYPE

    path, openmp = _build(cxx, cache_dir)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise BackendUnavailable(f"native backend: cannot load {path}: {exc}") from None
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    size = lib.hsi_cpu_params_size()
    if size != CHAIN_PARAMS_DTYPE.itemsize:
        raise BackendUnavailable(f"native backend: {path.name} has a {size}-byte parameter "
                                 f"block, edge.backends.cuda_params expects "
                                 f"{CHAIN_PARAMS_DTYPE.itemsize}")
    return lib, openmp


#: Forget the libraries loaded in this process (tests; a rebuilt cache folder).
load_library.cache_clear = _load.cache_clear  # type: ignore[attr-defined]
