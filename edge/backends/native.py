"""The native backend: the fused per-pixel chain compiled for the CPU it runs on.

``cuda_kernels/cpu_chain.cpp`` runs calibrate -> absorbance -> unmixing -> StO2 -> indices ->
pack in one pass over memory, vectorised across each pixel's bands and split over the cores,
with the per-pixel rules shared with the CUDA kernels (``pixel_math.cuh``) and the parameter
block of the CUDA backend (:func:`edge.backends.cuda_params.chain_params`).  It exists because
NumPy cannot reach the memory floor on a CPU: its float32 log alone costs about three floors on
an AVX2 machine, and every NumPy step writes its intermediate to memory (README, Performance).

Results match :class:`~edge.backends.numpy_backend.NumpyBackend` to float32 rounding (the
flat-field reflectance bit for bit; maps within the tolerances of ``tests/native``): the log is
a vectorised fdlibm/FreeBSD logf (within 1 ulp of glibc's), and the unmixing sums run in
another order than OpenBLAS's sgemm.

A snapshot camera's band registration (:mod:`edge.processing.register`, issue 14) runs
compiled too for uint16 counts (``hsi_cpu_register``, ``cuda_kernels/cpu_register.h``: the
NumPy reference's arithmetic, bit for bit but for a flagged pixel's fill in the last bit);
float32 reflectance frames are registered by the NumPy reference.

With quality rules in the plan (issue 14) a second native pass and the NumPy reference's
frame-wide step add ``sto2_sigma``, ``sto2_all`` and the validity bits
(:mod:`edge.backends.native_quality`).

Needs a C++ compiler at first use (built once per compiler and CPU, cached:
:mod:`edge.backends.native_build`); without one, :class:`~edge.errors.BackendUnavailable`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from edge.backends.base import Backend, resolve_plan
from edge.backends.cuda_params import chain_params
from edge.backends.native_build import load_library
from edge.core.chain import MAP_NAMES, ChainResult
from edge.errors import ConfigError, DataFormatError, HsiEdgeError
from edge.processing.plan import ChainPlan

__all__ = ["NativeBackend", "native_available", "default_threads", "MAP_NAMES"]

log = logging.getLogger(__name__)
_OUT_KIND = {None: 0, "float32": 1, "float16": 2}
#: hsi_cpu_register's error codes.
_REG_ERRORS = {1: "rows, cols or bands < 1", 2: "a NULL input or output",
               3: "out of memory for its row buffers"}
#: Output sets kept for reuse.
_POOL_SIZE = 3


def _max_refs(arrays: tuple) -> int:
    """Largest reference count among ``arrays`` (None entries skipped)."""
    top = 0
    for a in arrays:
        if a is not None:
            top = max(top, sys.getrefcount(a))
    return top


#: What _max_refs reports for a set only the pool holds (measured, not assumed: the count of
#: the loop variable and of getrefcount's argument differs between CPython versions).
_POOL_REFS = _max_refs([(np.empty(1), None)][0])


def default_threads() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not Linux
        return max(1, os.cpu_count() or 1)


def native_available() -> str | None:
    """None when the native backend can be built and loaded here, otherwise the reason."""
    try:
        load_library()
    except HsiEdgeError as exc:
        return str(exc)
    return None


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class NativeBackend(Backend):
    """Fused per-pixel chain on the CPU (see module docstring).

    Parameters
    ----------
    plan : ChainPlan or array_like (bands,)
        The configuration to run, or the wavelengths (nm) to build it from with ``**config``
        (:meth:`ChainPlan.build`), as :class:`~edge.backends.numpy_backend.NumpyBackend`.
    threads : int or None
        Worker threads (OpenMP); None: every CPU this process may use.
    cache_dir : path or None
        Build cache (default :func:`edge.backends.native_build.default_cache_dir`).

    Raises
    ------
    BackendUnavailable
        No C++ compiler, or the build failed (the message names the compiler and the error).
    ConfigError
        A configuration beyond the shared kernels' limits (bands, components, table), or
        ``eps`` below the smallest normal float32.
    """

    name = "native"
    compiled_checks = True

    def __init__(self, plan: ChainPlan | Sequence[float] | np.ndarray, *,
                 threads: int | None = None, cache_dir=None, **config: Any):
        eps = config.get("eps", 1e-4) if not isinstance(plan, ChainPlan) else plan.eps
        if not (np.isfinite(eps) and eps >= np.finfo(np.float32).tiny):
            raise ConfigError(f"eps: the native backend needs a reflectance floor >= "
                              f"{np.finfo(np.float32).tiny:.3g} (smallest normal float32), "
                              f"got {eps!r}")
        if threads is not None and (not isinstance(threads, (int, np.integer))
                                    or isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"threads: expected an integer >= 1 or None, got {threads!r}")
        self._lib, self.openmp = load_library(cache_dir)
        self.plan = p = resolve_plan(plan, config, backend=self.name)
        if p.pack is not None and p.pack.dtype == "float16" and not self._lib.hsi_cpu_has_f16():
            raise ConfigError("pack.dtype: float16 needs a compiler with _Float16 (GCC >= 12, "
                              "clang >= 15); got float16 with an older one: use float32")
        ff = p.flatfield
        # Contiguous float32 / uint8 views of the references, made once (copies only if the
        # flat field holds other layouts): nothing of this size is touched per frame.
        self._refs = (None, None, None) if ff is None else (
            np.ascontiguousarray(ff.dark, np.float32),
            np.ascontiguousarray(ff.scale, np.float32),
            np.ascontiguousarray(ff.static_flags, np.uint8))
        reg = p.registration
        # The registration's taps as the compiled pass reads them: (bands, 5) float32.
        self._reg_taps = None if reg is None else (np.ascontiguousarray(reg.ky, np.float32),
                                                   np.ascontiguousarray(reg.kx, np.float32))
        # Integer counts: raw >= s exactly when raw >= ceil(s), and the reference writes
        # ceil(s); the ceiling is exact in float32 where it matters (<= 65536).
        self._reg_saturation = float(np.ceil(p.saturation)) if np.isfinite(p.saturation) \
            else float("inf")
        self.params = chain_params(p.wavelengths, p.unmixer, p.calibration, p.index_params,
                                   p.pack, saturation=p.saturation)
        self._quality = None
        if p.quality is not None:
            from edge.backends.native_quality import NativeQuality
            self._quality = NativeQuality(p, self._lib)
        self.threads = int(threads) if threads is not None else default_threads()
        self._pool: list[list] = []       # [(maps, flags, refl, packed), busy]
        self._pool_lock = threading.Lock()
        if not self.openmp and self.threads > 1:
            log.warning("native backend: built without OpenMP, running on one thread")
            self.threads = 1

    def copy(self, src: np.ndarray, dst: np.ndarray) -> None:
        """``dst[...] = src`` with the backend's threads (for a copy bandwidth measured the way
        the chain runs: ``hsi-edge bench``)."""
        if src.nbytes != dst.nbytes or not (src.flags.c_contiguous and dst.flags.c_contiguous):
            raise DataFormatError("copy: src and dst must be C-contiguous with equal byte sizes")
        self._lib.hsi_cpu_copy(src.ctypes.data, dst.ctypes.data, src.nbytes, self.threads)

    def _outputs(self, shape: tuple[int, int, int]) -> list:
        """A pool entry ``[(maps, flags, reflectance, packed), busy]`` for one run.

        A set from an earlier run is reused only when nothing outside this pool still refers
        to any of its arrays (CPython reference counts: the caller has dropped that
        ChainResult and every view of it), so a result the caller keeps is never
        overwritten. Reuse saves the page faults of ~160 MB of fresh memory per 480x640x100
        frame (the kernel zeroes every new page: ~20 % of the chain's time). An entry is
        marked busy from here until ``run`` has built its ChainResult, so a concurrent run
        cannot take it in between.
        """
        with self._pool_lock:
            for entry in self._pool:
                arrays, busy = entry
                if not busy and arrays[2].shape == shape and _max_refs(arrays) <= _POOL_REFS:
                    entry[1] = True         # until run() has handed it to its ChainResult
                    return entry
            rows, cols, _ = shape
            spec = self.pack
            arrays = (np.empty((len(MAP_NAMES), rows, cols), np.float32),
                      np.empty((rows, cols), np.uint8), np.empty(shape, np.float32),
                      None if spec is None else np.empty((1, spec.channels, rows, cols),
                                                         spec.dtype))
            self._pool = [e for e in self._pool if e[0][2].shape == shape][-(_POOL_SIZE - 1):]
            entry = [arrays, True]
            self._pool.append(entry)
            return entry

    def close(self) -> None:
        self._pool = []

    def reset_stream(self) -> None:
        """Forget the temporal step's state (a new stream), where the plan has one."""
        if self._quality is not None:
            self._quality.reset_stream()

    def run_reference(self, raw: np.ndarray, *, exposure_us: float) -> ChainResult:
        """The NumPy reference chain on the same plan (for checks)."""
        from edge.backends.numpy_backend import NumpyBackend

        return NumpyBackend(self.plan).run_reference(raw, exposure_us=exposure_us)

    def register(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` (rows, cols, bands) uint16 registered by the compiled pass, as
        :meth:`ChainPlan.register` (the plan's registration, its flat field's dark, static
        flags and saturation); a new uint16 array.

        Raises
        ------
        DataFormatError
            No registration or flat field in the plan, or ``raw`` not uint16 counts of the
            flat field's shape (one line, naming what was expected).
        """
        p = self.plan
        if self._reg_taps is None or p.flatfield is None:
            raise DataFormatError("raw: the native registration needs a plan with a "
                                  "registration and a flat field")
        raw = np.ascontiguousarray(raw)
        if raw.dtype != np.uint16 or raw.shape != p.flatfield.shape:
            raise DataFormatError(f"raw: expected uint16 counts of shape {p.flatfield.shape} "
                                  f"for the native registration, got {raw.dtype} {raw.shape}")
        rows, cols, bands = raw.shape
        dark, _, sflags = self._refs
        ky, kx = self._reg_taps
        out = np.empty_like(raw)
        rc = self._lib.hsi_cpu_register(raw.ctypes.data, dark.ctypes.data, sflags.ctypes.data,
                                        rows, cols, bands, ky.ctypes.data, kx.ctypes.data,
                                        ctypes.c_float(self._reg_saturation),
                                        out.ctypes.data, self.threads)
        if rc != 0:
            raise DataFormatError(f"native registration: failed on a {raw.shape} frame (code "
                                  f"{rc}: {_REG_ERRORS.get(rc, 'unknown')})")
        return out

    def register_counts(self, raw: np.ndarray) -> np.ndarray:
        """:meth:`Backend.register_counts` by the compiled pass (:meth:`register`)."""
        return self.register(raw)

    def run(self, raw: np.ndarray, *, exposure_us: float) -> ChainResult:
        raw, reg_ms = self.checked_frame(raw)
        f32 = raw.dtype == np.float32
        factor = self.plan.exposure_factor(raw, exposure_us)
        raw = np.ascontiguousarray(raw)
        entry = self._outputs(raw.shape)
        try:
            res = self._run(raw, f32, factor, entry[0], exposure_us)
            if reg_ms is not None:
                res.timings_ms["register"] = reg_ms
            return res
        finally:
            with self._pool_lock:
                entry[1] = False

    def _run(self, raw, f32: bool, factor: float, arrays: tuple,
             exposure_us: float = 0.0) -> ChainResult:
        maps, flags, refl, packed = arrays
        spec = self.pack
        npix = raw.shape[0] * raw.shape[1]
        dark, scale, sflags = (None, None, None) if f32 else self._refs
        t0 = time.monotonic_ns()
        rc = self._lib.hsi_cpu_chain(
            self.params.ctypes.data, raw.ctypes.data, 1 if f32 else 0, _ptr(dark), _ptr(scale),
            _ptr(sflags), npix, ctypes.c_float(factor), maps.ctypes.data, flags.ctypes.data,
            _ptr(packed), _OUT_KIND[None if spec is None else spec.dtype], refl.ctypes.data,
            self.threads)
        elapsed = (time.monotonic_ns() - t0) / 1e6
        if rc != 0:
            raise DataFormatError(f"native chain: rejected its inputs (code {rc}: "
                                  f"{'parameter block out of range' if rc == 1 else 'input/output kinds'})")
        timings = {"chain": elapsed}
        out_maps = dict(zip(MAP_NAMES, maps))
        if self._quality is not None:
            t1 = time.monotonic_ns()
            out_maps = self._quality.apply(raw, f32, maps, flags, refl, packed, self.threads,
                                           stream_key=exposure_us)
            timings["quality"] = (time.monotonic_ns() - t1) / 1e6
        return ChainResult(maps=out_maps, flags=flags, input=packed, reflectance=refl,
                           timings_ms=timings)
