"""Kernel loading, launch configuration and one wrapper per kernel (PyCUDA).

This is the only place that decides grids, blocks and shared memory (DESIGN.md house style
4).  :func:`tile_launch` and :func:`stride_launch` are plain functions, tested on machines
without a GPU; :func:`load_module` and :class:`CudaOps` need PyCUDA and a current context
(the backend pushes the primary context around every call).

Tiled kernels (flatfield, unmix, indices, pack, chain) stage ``block`` consecutive pixels of
a band-interleaved cube in shared memory as rows of ``stride = bands | 1`` floats (odd, so a
warp reading one band of 32 rows hits 32 banks) plus one flag word per pixel.  The block is
the largest multiple of 32 (at most 256) whose tile fits the 48 KiB every CUDA device gives a
block without opting in, so no ``cuFuncSetAttribute`` is needed on any arch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cuda_kernels import KERNEL_DIR, MODULES, runtime_source, select_binary
from edge.backends.cuda_params import MAX_BANDS, MAX_CLASSES
from edge.errors import BackendUnavailable, ConfigError

__all__ = ["Launch", "tile_launch", "tile_occupancy", "stride_launch", "load_module", "CudaOps",
           "STATIC_SHARED_LIMIT", "params_bytes", "poison_byte", "pack_rgb"]

log = logging.getLogger(__name__)

STATIC_SHARED_LIMIT = 48 * 1024   #: bytes of shared memory a block gets without opting in
_MAX_BLOCK = 256
_STRIDE_BLOCK = 256


@dataclass(frozen=True)
class Launch:
    """Grid, block and dynamic shared memory of one launch (plus the tile row stride)."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    stride: int = 0


def tile_launch(npix: int, bands: int) -> Launch:
    """Launch of a tiled kernel over ``npix`` pixels of ``bands`` bands.

    Raises
    ------
    ConfigError
        If ``bands`` is outside 1..MAX_BANDS or ``npix`` < 1.
    """
    if not 1 <= bands <= MAX_BANDS:
        raise ConfigError(f"bands: the CUDA kernels support 1-{MAX_BANDS} bands, got {bands}")
    if npix < 1:
        raise ConfigError(f"npix: expected at least one pixel, got {npix}")
    stride = bands | 1
    per_pixel = 4 * (stride + 1)
    block = min(_MAX_BLOCK, STATIC_SHARED_LIMIT // per_pixel // 32 * 32)
    block = max(block, 32)     # 32 x 257 x 4 B = 32.9 KiB: always fits
    grid = -(-npix // block)
    return Launch((grid, 1, 1), (block, 1, 1), block * per_pixel, stride)


def tile_occupancy(bands: int, *, shared_per_sm: int, max_threads_per_sm: int,
                   reserved_per_block: int = 1024, max_blocks_per_sm: int = 32) -> float:
    """Fraction of an SM's thread slots a tiled kernel's launch can fill, as limited by its
    shared memory (registers, 32-40 per thread, never limit first at these block sizes).

    H100 (sm_90): ``shared_per_sm=228 * 1024, max_threads_per_sm=2048``; AGX Orin (sm_87):
    ``164 * 1024, 1536`` (CUDA programming guide, compute capabilities table; 1 KiB per block
    is reserved by the system).
    """
    ln = tile_launch(1, bands)
    threads = ln.block[0]
    blocks = min(max_blocks_per_sm, shared_per_sm // (ln.shared + reserved_per_block),
                 max_threads_per_sm // threads)
    return blocks * threads / max_threads_per_sm


def stride_launch(n: int, sm_count: int = 132) -> Launch:
    """Launch of a grid-stride element-wise kernel over ``n`` items (a few waves per SM)."""
    grid = max(1, min(-(-n // _STRIDE_BLOCK), 8 * max(1, sm_count)))
    return Launch((grid, 1, 1), (_STRIDE_BLOCK, 1, 1), 0)


def load_module(name: str, arch: str, prebuilt_dir: Path | str | None):
    """Load one kernel module: a prebuilt cubin/PTX the driver can load, else compile at run
    time (development path), else :class:`BackendUnavailable` with every reason.

    Needs PyCUDA and a current context.  A prebuilt binary is picked by
    :func:`cuda_kernels.select_binary` with the driver's version, so binaries from an nvcc
    newer than the driver are skipped; one the driver still refuses (``cuda.Error`` from
    ``module_from_file``) falls through to the run-time compile, which uses
    :func:`cuda_kernels.build.find_nvcc` (``$CUDA_HOME``/``$CUDA_PATH`` first: JetPack does
    not put nvcc on PATH).  A missing nvcc, a failed compile (e.g. an nvcc too old for the
    GPU) or a module the driver rejects becomes :class:`BackendUnavailable`, so ``backend:
    auto`` can fall back instead of crashing.
    """
    import pycuda.driver as cuda

    try:
        driver = int(cuda.get_driver_version())
    except Exception:  # an unusable driver: let the load below report it
        driver = None
    path, reason = (None, "no prebuilt directory") if prebuilt_dir is None else \
        select_binary(name, prebuilt_dir, arch, driver_version=driver)
    if path is not None:
        try:
            module = cuda.module_from_file(str(path))
        except cuda.Error as exc:
            reason = f"the driver refused {path.name}: {_first_line(exc)}"
            log.warning("kernels %s: %s; trying a run-time compile", name, reason)
        else:
            (log.info if path.suffix == ".cubin" else log.warning)(
                "kernels %s: loading %s (%s)", name, path.name, reason)
            return module
    return _compile_at_run_time(cuda, name, arch, reason)


def _compile_at_run_time(cuda, name: str, arch: str, reason: str):
    from cuda_kernels.build import NVCC_FLAGS, find_nvcc

    what = f"cuda backend: no loadable prebuilt kernels for {name} on {arch} ({reason})"
    try:
        nvcc = find_nvcc()
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"{what}, and no run-time compile: {exc}") from None
    from pycuda.compiler import SourceModule

    log.warning("compiling kernels at run time with %s (development path): %s (%s); run "
                "'hsi-edge kernels build' for prebuilt binaries", nvcc, name, reason)
    try:
        return SourceModule(runtime_source(name), nvcc=nvcc, no_extern_c=True,
                            include_dirs=[str(KERNEL_DIR)],
                            options=[f for f in NVCC_FLAGS if f != "-O3"])
    except Exception as exc:  # CompileError/LogicError (cuda.Error), OSError, pytools ExecError
        raise BackendUnavailable(f"{what}, and the run-time compile with {nvcc} failed: "
                                 f"{_compile_detail(exc)}") from None


def _compile_detail(exc: BaseException) -> str:
    """nvcc's first error line (pycuda's CompileError carries its stderr), else the message."""
    stderr = getattr(exc, "stderr", None) or ""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    errors = [ln.strip() for ln in stderr.splitlines() if "error" in ln or "fatal" in ln]
    return errors[0] if errors else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CudaOps:
    """One method per kernel, on ``pycuda.gpuarray.GPUArray`` inputs (tests, benchmarks).

    Parameters
    ----------
    modules : dict of str to pycuda Module
        Loaded modules by name (see :data:`cuda_kernels.MODULES`).
    params : ndarray, CHAIN_PARAMS_DTYPE
        Uploaded to every module's ``c_params``.
    stream : pycuda.driver.Stream
    sm_count : int
        Multiprocessors of the device (sizes grid-stride launches).
    """

    #: Fill every output with NaN (float) / 0xAB (bytes) before the launch (tests: a kernel
    #: that skips an element cannot pass).
    poison = False
    #: Device allocator of the outputs (``pycuda.tools.DeviceMemoryPool().allocate`` in the
    #: benchmark, so timed launches do not include cuMemAlloc/cuMemFree); None: mem_alloc.
    allocator = None

    def __init__(self, modules: dict, params: np.ndarray, stream, sm_count: int):
        import pycuda.driver as cuda

        self.modules, self.params, self.stream, self.sm_count = modules, params, stream, sm_count
        self.nb = int(params["nb"])
        for name, mod in modules.items():
            if "c_params" in MODULES[name].constants:
                ptr, size = mod.get_global("c_params")
                if size != params.nbytes:
                    raise ConfigError(f"c_params: the loaded {name} module has {size} bytes, "
                                      f"the host layout {params.nbytes}: rebuild the kernels")
                cuda.memcpy_htod(ptr, params_bytes(params))

    def _out(self, shape, dtype):
        import pycuda.driver as cuda
        import pycuda.gpuarray as ga
        out = ga.empty(shape, dtype, allocator=self.allocator or cuda.mem_alloc)
        if self.poison and out.nbytes:
            # A byte memset, not GPUArray.fill: fill compiles an elementwise kernel at run time
            # and PyCUDA has no C type for float16. 0xFF bytes are a NaN in float16 and float32.
            cuda.memset_d8_async(int(out.gpudata), poison_byte(dtype), out.nbytes, self.stream)
        return out

    def fn(self, module: str, kernel: str):
        """The kernel function ``kernel`` of ``module``."""
        return self.modules[module].get_function(kernel)

    def _tile(self, module, kernel, npix, *args):
        ln = tile_launch(npix, self.nb)
        self.fn(module, kernel)(*[_p(a) for a in args[:-1]], np.int64(npix), np.int32(ln.stride),
                                *[_p(a) for a in args[-1]],
                                grid=ln.grid, block=ln.block, shared=ln.shared,
                                stream=self.stream)

    def flatfield(self, raw, dark=None, scale=None, static_flags=None, *, factor=1.0,
                  saturation=np.inf):
        """(npix, nb) raw (uint16 or float32) -> reflectance (npix, nb), flags (npix)."""
        npix = raw.shape[0]
        refl = self._out((npix, self.nb), np.float32)
        flags = self._out(npix, np.uint8)
        kernel = "flatfield_u16" if raw.dtype == np.uint16 else "flatfield_f32"
        ln = tile_launch(npix, self.nb)
        self.fn("flatfield", kernel)(
            _p(raw), _p(dark), _p(scale), _p(static_flags), np.int64(npix), np.int32(self.nb),
            np.int32(ln.stride), np.float32(factor), np.float32(saturation), _p(refl), _p(flags),
            grid=ln.grid, block=ln.block, shared=ln.shared, stream=self.stream)
        return refl, flags

    def absorbance(self, refl, eps: float):
        out = self._out(refl.shape, np.float32)
        ln = stride_launch(refl.size, self.sm_count)
        self.fn("absorbance", "absorbance_f32")(_p(refl), np.int64(refl.size), np.float32(eps),
                                                _p(out),
                                                grid=ln.grid, block=ln.block, stream=self.stream)
        return out

    def unmix(self, refl):
        """(npix, nb) reflectance -> conc (npix, k), thb (npix), sto2_raw (npix)."""
        npix = refl.shape[0]
        conc = self._out((npix, int(self.params["nk"])), np.float32)
        thb, sraw = self._out(npix, np.float32), self._out(npix, np.float32)
        self._tile("unmix", "unmix_f32", npix, refl, (conc, thb, sraw))
        return conc, thb, sraw

    def sto2(self, sto2_raw, thb=None):
        """(n,) raw StO2 and the pixels' THb (n,) (``unmix``'s) -> calibrated StO2 (n,).

        ``thb`` picks the row of a table with a THb axis; a 1-D table ignores it (may be
        None). A 2-D table without ``thb`` is a ConfigError.
        """
        if thb is None and int(self.params["n_rows"]) > 1:
            raise ConfigError(f"thb: the StO2 table has a THb axis "
                              f"({int(self.params['n_rows'])} rows), so sto2() needs the "
                              f"pixels' THb, got None")
        if thb is not None and thb.shape != sto2_raw.shape:
            raise ConfigError(f"thb: expected the shape of sto2_raw {sto2_raw.shape}, got "
                              f"{thb.shape}")
        out = self._out(sto2_raw.shape, np.float32)
        ln = stride_launch(sto2_raw.size, self.sm_count)
        self.fn("sto2", "sto2_calibrate_f32")(_p(sto2_raw), _p(thb), np.int64(sto2_raw.size),
                                              _p(out), grid=ln.grid, block=ln.block,
                                              stream=self.stream)
        return out

    def indices(self, refl):
        """(npix, nb) reflectance -> (4, npix): sto2_index, nir, thi, twi."""
        npix = refl.shape[0]
        out = self._out((4, npix), np.float32)
        self._tile("indices", "indices_f32", npix, refl, (out,))
        return out

    def pack(self, refl, maps, flags=None, dtype="float32"):
        """refl (npix, nb), maps (n_maps, npix) -> packed (channels, npix) of ``dtype``."""
        npix = refl.shape[0]
        out = self._out((int(self.params["n_spec"]) + int(self.params["n_maps"]), npix), dtype)
        kernel = "pack_f16" if np.dtype(dtype) == np.float16 else "pack_f32"
        ln = tile_launch(npix, self.nb)
        self.fn("pack", kernel)(_p(refl), _p(maps), _p(flags), np.int64(npix),
                                np.int32(ln.stride), _p(out), grid=ln.grid, block=ln.block, shared=ln.shared,
                                stream=self.stream)
        return out

    def argmax(self, logits):
        """(K, npix) float32/float16 scores -> labels (npix) uint8."""
        k, npix = logits.shape
        if not 1 <= k <= MAX_CLASSES:
            raise ConfigError(f"classes: the argmax kernel supports 1-{MAX_CLASSES}, got {k}")
        out = self._out(npix, np.uint8)
        kernel = "argmax_f16" if logits.dtype == np.float16 else "argmax_f32"
        ln = stride_launch(npix, self.sm_count)
        self.fn("post", kernel)(_p(logits), np.int64(npix), np.int32(k), _p(out), grid=ln.grid,
                                block=ln.block, stream=self.stream)
        return out

    def set_colours(self, colours: np.ndarray) -> None:
        """Upload the class colours (``c_colours``) for :meth:`overlay`, once per palette.

        A synchronous copy (the legacy stream waits for earlier work): done here, outside
        the per-frame path, so a timed overlay is only its kernel.

        Raises
        ------
        ConfigError
            If ``colours`` is not of shape (K <= MAX_CLASSES, 3).
        """
        import pycuda.driver as cuda
        colours = np.array(colours, dtype=np.uint8, order="C")   # a copy: compared later
        if colours.ndim != 2 or colours.shape[1] != 3 or not 1 <= colours.shape[0] <= MAX_CLASSES:
            raise ConfigError(f"colours: expected shape (K <= {MAX_CLASSES}, 3), got "
                              f"{colours.shape}")
        ptr, _ = self.modules["post"].get_global("c_colours")
        cuda.memcpy_htod(ptr, colours)
        self._colours = colours

    def overlay(self, labels, rgb, colours: np.ndarray | None, alpha: float, cols: int,
                invalid=None, hatch=((70, 70, 70), (150, 150, 150))):
        """labels (npix) uint8, rgb (npix, 3) uint8 -> blended rgb (npix, 3) uint8.

        ``colours`` (K, 3) uint8: uploaded only when it differs from the palette already on
        the device (:meth:`set_colours`); None uses that palette.
        """
        current = getattr(self, "_colours", None)
        if colours is not None and (current is None or not np.array_equal(current, colours)):
            self.set_colours(colours)
        elif current is None:
            raise ConfigError("colours: no class colours uploaded; pass colours= or call "
                              "set_colours() first")
        npix = labels.size
        out = self._out((npix, 3), np.uint8)
        h0, h1 = [pack_rgb(c) for c in hatch]
        ln = stride_launch(npix, self.sm_count)
        self.fn("post", "overlay_u8")(_p(labels), _p(rgb), _p(invalid), np.int64(npix), np.int64(cols),
                                      np.float32(1.0 - alpha), np.float32(alpha), np.uint32(h0),
                                      np.uint32(h1), _p(out), grid=ln.grid, block=ln.block,
                                      stream=self.stream)
        return out


def params_bytes(params: np.ndarray) -> np.ndarray:
    """The parameter block as a flat, contiguous uint8 array (what ``memcpy_htod`` copies).

    A 0-d structured array exports a structured buffer format that not every consumer of the
    buffer protocol accepts; raw bytes are unambiguous.
    """
    return np.frombuffer(np.ascontiguousarray(params).tobytes(), np.uint8)


def poison_byte(dtype) -> int:
    """Byte whose repetition poisons an output of ``dtype``: 0xFF (NaN in float16/32), else 0xAB."""
    return 0xFF if np.dtype(dtype).kind == "f" else 0xAB


def pack_rgb(colour) -> int:
    """``(r, g, b)`` -> ``0xRRGGBB`` as a Python int (no uint8 overflow from NumPy inputs).

    Raises
    ------
    ConfigError
        If ``colour`` is not three values in 0..255.
    """
    vals = [int(v) for v in colour]
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise ConfigError(f"hatch: expected (r, g, b) colours with values 0-255, got "
                          f"{tuple(colour)!r}")
    return (vals[0] << 16) | (vals[1] << 8) | vals[2]


def _p(a):
    """Kernel argument of a device array (GPUArray, allocation or address); None -> NULL.

    Always a ``numpy.uintp`` (packed as a pointer by every PyCUDA version); PyCUDA's own
    handling of pooled allocations and GPUArrays differs between releases.
    """
    if a is None:
        return np.uintp(0)
    return np.uintp(int(getattr(a, "gpudata", a)))
