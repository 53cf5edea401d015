"""The CUDA backend: the fused per-pixel chain (cuda_kernels/chain.cu) run through PyCUDA.

Same contract and results as :class:`edge.backends.numpy_backend.NumpyBackend`: both run one
:class:`~edge.processing.plan.ChainPlan` (its unmixer, StO2 table, index windows and pack spec
are copied into the kernels' constant memory, so both run the same numbers; its frame check
and exposure factor are applied before each launch).

GPU resources (DESIGN.md "CUDA"; FACTS.md "GPU, Jetson and TensorRT"):

- the device's *primary* context (``Device(n).retain_primary_context()``), pushed around
  every call and popped after, never ``pycuda.autoinit`` -- TensorRT shares it;
- one stream (:attr:`CudaBackend.stream_handle` for ``execute_async_v3``);
- page-locked host buffers; on an integrated GPU that can map host memory (Jetson: CPU and
  GPU share DRAM) they are allocated device-mapped and the kernels read and write them
  directly (:attr:`CudaBackend.mapped_host_memory`), elsewhere they are copied asynchronously
  on the stream;
- device buffers allocated once per frame shape and reused; with ``device_output`` the packed
  network input stays on the device and ``ChainResult.input`` is a
  :class:`~edge.core.tensor.DeviceTensor` naming it (and the stream) for a runtime that
  accepts device input; otherwise it is copied to a host array;
- kernels loaded from ``hsi-edge kernels build`` output when its manifest matches the sources
  and the device arch, otherwise compiled at run time with a logged warning.

With quality rules in the plan (issue 14) the chain is followed by the quality kernels
(``cuda_kernels/quality.cu``: per-pixel sigma inputs, the 2-D tiled spatial step) and the
reference's own frame-wide finish on the host (:mod:`edge.backends.cuda_quality`).

A snapshot camera's band registration (:mod:`edge.processing.register`, issue 14) runs on the
device for uint16 counts with a flat field (``cuda_kernels/register.cu``,
:mod:`edge.backends.cuda_register`): the uploaded frame is registered into a device buffer
that the chain and the quality kernels read instead of the raw counts; float32 reflectance
frames are registered by the plan's NumPy reference on the host, before the upload.

Importing this module needs no PyCUDA; constructing a backend does.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cuda_kernels import DEFAULT_PREBUILT_DIR, arch_of
from cuda_kernels.driver import explain_pycuda_import_error, primary_context
from edge.backends.base import Backend, resolve_plan
from edge.backends.cuda_ops import CudaOps, _p, load_module, tile_launch
from edge.backends.cuda_params import chain_params
from edge.backends.cuda_quality import CudaQuality
from edge.backends.cuda_register import CudaRegistration
from edge.core.chain import MAP_NAMES, ChainResult
from edge.core.tensor import DeviceTensor
from edge.errors import BackendUnavailable, DataFormatError
from edge.processing.plan import ChainPlan

__all__ = ["CudaBackend", "import_pycuda", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hsi-edge[cuda]' (needs the CUDA toolkit) and an NVIDIA GPU"


def import_pycuda():
    """``pycuda.driver``, initialised; :class:`BackendUnavailable` naming what is missing."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        # "undefined symbol: cuCtxCreate_v4" is a driver too old for this PyCUDA build, not a
        # missing PyCUDA (cuda_kernels/driver.py)
        raise BackendUnavailable(explain_pycuda_import_error(exc)) from exc
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:   # pycuda raises its own LogicError/RuntimeError types
        raise BackendUnavailable(f"cuda backend: the CUDA driver is not usable ({exc}); "
                                 f"needs an NVIDIA GPU with its driver") from exc
    if count < 1:
        raise BackendUnavailable("cuda backend: no NVIDIA GPU found by the CUDA driver")
    return cuda


class CudaBackend(Backend):
    """Fused per-pixel chain on an NVIDIA GPU (see module docstring).

    Parameters
    ----------
    plan : ChainPlan or array_like (bands,)
        The configuration to run, or the wavelengths (nm) to build it from with ``**config``
        (:meth:`ChainPlan.build`), as :class:`~edge.backends.numpy_backend.NumpyBackend`.
    device : int
        CUDA device ordinal.
    prebuilt_dir : path or None
        AOT build directory (default ``cuda_kernels/prebuilt``); None-existent or stale: the
        kernels are compiled at run time (needs nvcc).
    device_output : bool
        Leave the packed network input on the device: ``ChainResult.input`` is a
        :class:`~edge.core.tensor.DeviceTensor` (valid until the next ``run``) instead of a
        host copy (default False, as the NumPy backend). Ask for it only for a runtime that
        accepts device input.
    return_reflectance : bool
        Also write the reflectance cube and copy it into ``ChainResult.reflectance``.

    Raises
    ------
    BackendUnavailable
        PyCUDA or a GPU is missing.
    """

    name = "cuda"
    compiled_checks = True
    offers_device_output = True

    def __init__(self, plan: ChainPlan | Sequence[float] | np.ndarray, *, device: int = 0,
                 prebuilt_dir: Path | str | None = DEFAULT_PREBUILT_DIR,
                 device_output: bool = False, return_reflectance: bool = False,
                 **config: Any):
        cuda = import_pycuda()
        self.plan = p = resolve_plan(plan, config, backend=self.name)
        self._device_output = bool(device_output)
        self.return_reflectance = bool(return_reflectance)
        self.params = chain_params(p.wavelengths, p.unmixer, p.calibration, p.index_params,
                                   p.pack, saturation=p.saturation)
        self._cuda = cuda
        self._dev = cuda.Device(int(device))
        self.device_name = self._dev.name()
        self.arch = arch_of(self._dev.compute_capability())
        attr = cuda.device_attribute
        # Integrated GPU (Jetson): host buffers mapped into the device's address space, read
        # and written by the kernels in place, no copies (FACTS.md, "GPU, Jetson and TensorRT").
        self.mapped_host_memory = bool(self._dev.get_attribute(attr.INTEGRATED)
                                       and self._dev.get_attribute(attr.CAN_MAP_HOST_MEMORY))
        # Retained once per process and shared with TensorRT; pushed and popped per call,
        # never detached (PyCUDA's detach of a non-current primary context leaves it pushed).
        self._ctx = primary_context(cuda, int(device))
        self._closed = False
        self._shape: tuple | None = None
        try:
            with self._active():
                self.stream = cuda.Stream()
                # Registered on the device: uint16 counts with a flat field (its dark, flags
                # and saturation); float32 frames on the host (checked_frame).
                on_device = p.registration is not None and p.flatfield is not None
                names = ("chain",) + (("quality",) if p.quality is not None else ()) + \
                    (("register",) if on_device else ())
                self.ops = CudaOps({n: load_module(n, self.arch, prebuilt_dir) for n in names},
                                   self.params, self.stream,
                                   self._dev.get_attribute(attr.MULTIPROCESSOR_COUNT))
                self._quality = None if p.quality is None else \
                    CudaQuality(self, self.ops.modules["quality"])
                self._events = [cuda.Event() for _ in range(5)]
                flatfield = p.flatfield
                if flatfield is not None:   # references: uploaded once per configuration
                    # The kernels read float32 dark/scale and uint8 flags, whatever the
                    # FlatField was built from.
                    self._d_dark = cuda.to_device(
                        np.ascontiguousarray(flatfield.dark, dtype=np.float32))
                    self._d_scale = cuda.to_device(
                        np.ascontiguousarray(flatfield.scale, dtype=np.float32))
                    self._d_static = cuda.to_device(
                        np.ascontiguousarray(flatfield.static_flags, dtype=np.uint8))
                self._register = None if not on_device else CudaRegistration(
                    self, self.ops.modules["register"], p.registration, flatfield.saturation)
        except BaseException:
            self.close()        # release what was made and the primary context, then re-raise
            raise
        log.info("cuda backend on %s (%s), mapped host memory %s", self.device_name, self.arch,
                 "on" if self.mapped_host_memory else "off")

    # ---- context and buffers -------------------------------------------------------------
    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Push the primary context for this thread and pop it after (TensorRT shares it)."""
        if self._closed:
            raise BackendUnavailable("cuda backend: used after close()")
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _host(self, shape, dtype):
        """Page-locked host buffer; device-mapped with :attr:`mapped_host_memory`."""
        cuda = self._cuda
        if self.mapped_host_memory:
            return cuda.pagelocked_empty(shape, dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
        return cuda.pagelocked_empty(shape, dtype)

    def _pair(self, shape, dtype):
        """(host buffer, device pointer): the same memory with :attr:`mapped_host_memory`."""
        h = self._host(shape, dtype)
        if self.mapped_host_memory:
            return h, int(h.base.get_device_pointer())   # an int, as memcpy/TensorRT take
        return h, self._cuda.mem_alloc(max(h.nbytes, 1))

    def _ensure_buffers(self, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        key = (shape, dtype)
        if self._shape == key:
            return
        if self._shape is not None:
            log.info("cuda backend: frame shape/dtype changed to %s %s; reallocating", shape,
                     dtype)
        rows, cols, bands = shape
        npix = rows * cols
        self._launch = tile_launch(npix, bands)
        self._h_raw, self._d_raw = self._pair(shape, dtype)
        self._h_maps, self._d_maps = self._pair((len(MAP_NAMES), rows, cols), np.float32)
        self._h_flags, self._d_flags = self._pair((rows, cols), np.uint8)
        self._h_input = self._d_input = None
        if self.pack is not None:
            self._h_input, self._d_input = self._pair((1, self.pack.channels, rows, cols),
                                                      np.dtype(self.pack.dtype))
        self._h_refl = self._d_refl = None
        if self.return_reflectance:
            self._h_refl, self._d_refl = self._pair(shape, np.float32)
        elif self._quality is not None:    # the quality pass reads it: device only
            self._d_refl = self._cuda.mem_alloc(rows * cols * bands * 4)
        if self._quality is not None:
            self._quality.ensure(rows, cols)
        self._ring, self._ring_next = [], 0    # input_buffer()'s ring, for this shape
        self._shape = key

    # ---- device output ----------------------------------------------------------------------
    @property
    def device_output(self) -> bool:
        """``run`` returns the packed input as a DeviceTensor (see the class parameters)."""
        return self._device_output

    @property
    def stream_handle(self) -> int:
        """The CUDA stream handle (``cudaStream_t`` as int) all kernels run on."""
        return int(self.stream.handle)

    @property
    def input_device_ptr(self) -> int | None:
        """Device address of the packed NCHW input (None before the first frame / no pack)."""
        return None if getattr(self, "_d_input", None) is None else int(self._d_input)

    #: Raw-frame buffers :meth:`input_buffer` hands out in turn.  The pipeline holds at most
    #: ``queue_size + 2`` frames (4 with the default queue of 2) between the camera thread
    #: and the chain, so a driver filling them never overwrites a frame still queued.
    INPUT_RING = 4

    def input_buffer(self, shape: tuple[int, int, int], dtype=np.uint16) -> np.ndarray:
        """The next of :attr:`INPUT_RING` page-locked raw-frame buffers, for a driver to fill
        (on any thread) and pass to :meth:`run`: no host copy, and with mapped host memory the
        kernel reads it in place.  Buffers are handed out in turn, so a buffer comes back only
        after ``INPUT_RING - 1`` later calls: a driver may hold at most that many filled frames
        not yet run.  A reallocation (new shape/dtype) starts a new ring.
        """
        with self._active():
            self._ensure_buffers(tuple(shape), np.dtype(dtype))
            if not self._ring:
                self._ring = [self._ring_entry(tuple(shape), np.dtype(dtype))
                              for _ in range(self.INPUT_RING)]
            h, _ = self._ring[self._ring_next]
            self._ring_next = (self._ring_next + 1) % len(self._ring)
        return h

    def _ring_entry(self, shape, dtype):
        h = self._host(shape, dtype)
        return h, (int(h.base.get_device_pointer()) if self.mapped_host_memory else None)

    def _raw_source(self, raw: np.ndarray):
        """(host buffer, device pointer the kernel reads) of a frame: an input_buffer() is
        used where it is, anything else is copied into the backend's own raw buffer."""
        for h, d in self._ring:
            if raw is h:
                return h, (d if d is not None else self._d_raw)
        if raw is not self._h_raw:
            np.copyto(self._h_raw, raw)
        return self._h_raw, self._d_raw

    # ---- per frame ----------------------------------------------------------------------
    def _registers_on_device(self, raw: np.ndarray) -> bool:
        return getattr(self, "_register", None) is not None and raw.dtype == np.uint16

    def register_counts(self, raw: np.ndarray) -> np.ndarray | None:
        """:meth:`Backend.register_counts`: None for uint16 counts, which :meth:`run`
        registers on the device after the upload (``timings_ms["register"]`` is then device
        time); the plan's NumPy reference otherwise."""
        return None if self._registers_on_device(raw) else self.plan.register(raw)

    def register(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` (rows, cols, bands) uint16 registered by the device kernels, as
        :meth:`ChainPlan.register` (checked as by :meth:`run`); a new host array.

        Raises
        ------
        DataFormatError
            No device registration in the plan (it needs a registration and a flat field),
            or ``raw`` not uint16 counts of the flat field's shape.
        """
        if getattr(self, "_register", None) is None:
            raise DataFormatError("raw: the cuda registration needs a plan with a "
                                  "registration and a flat field")
        raw = self.plan.check_frame(raw, compiled=True)
        if raw.dtype != np.uint16:
            raise DataFormatError(f"raw: expected uint16 counts for the cuda registration, "
                                  f"got {raw.dtype}")
        with self._active():
            self._ensure_buffers(raw.shape, raw.dtype)
            h_raw, d_raw = self._raw_source(raw)
            if not self.mapped_host_memory:
                self._cuda.memcpy_htod_async(self._d_raw, h_raw, self.stream)
            return self._register.download(
                self._register.launch(d_raw, self._d_dark, self._d_static, *raw.shape),
                raw.shape)

    def run(self, raw: np.ndarray, *, exposure_us: float) -> ChainResult:
        raw, reg_ms = self.checked_frame(raw)
        on_device = self._registers_on_device(raw)
        calibrated = self.plan.flatfield is not None and raw.dtype != np.float32
        factor = np.float32(self.plan.exposure_factor(raw, exposure_us))
        copy_input = not self._device_output
        cuda, s, ev = self._cuda, self.stream, self._events
        with self._active():
            self._ensure_buffers(raw.shape, raw.dtype)
            h_raw, d_raw = self._raw_source(raw)
            ev[0].record(s)
            if not self.mapped_host_memory:
                cuda.memcpy_htod_async(self._d_raw, h_raw, s)
            ev[1].record(s)
            if on_device:     # the chain and the quality pass read the registered counts
                d_raw = self._register.launch(d_raw, self._d_dark, self._d_static, *raw.shape)
            ev[4].record(s)
            ln = self._launch
            kernel = (f"chain_{'u16' if raw.dtype == np.uint16 else 'f32'}_"
                      f"{'f16' if self.pack is not None and self.pack.dtype == 'float16' else 'f32'}")
            npix = raw.shape[0] * raw.shape[1]
            # _p: every pointer as np.uintp (PyCUDA packs numpy scalars; a plain int, as the
            # mapped buffers' pointers are, is refused as a kernel argument)
            self.ops.fn("chain", kernel)(
                _p(d_raw), _p(self._d_dark if calibrated else None),
                _p(self._d_scale if calibrated else None),
                _p(self._d_static if calibrated else None),
                np.int64(npix), np.int32(ln.stride), factor, _p(self._d_maps),
                _p(self._d_flags), _p(self._d_input), _p(self._d_refl),
                grid=ln.grid, block=ln.block, shared=ln.shared, stream=s)
            if self._quality is not None:
                self._quality.launch(self._d_refl, self._d_flags, self._d_maps, d_raw,
                                     self._d_dark if calibrated else None, self._d_input,
                                     npix, raw.shape[2], calibrated,
                                     self.pack.dtype if self.pack is not None else "float32")
            ev[2].record(s)
            if not self.mapped_host_memory:
                cuda.memcpy_dtoh_async(self._h_maps, self._d_maps, s)
                cuda.memcpy_dtoh_async(self._h_flags, self._d_flags, s)
                if self._d_input is not None and copy_input:
                    cuda.memcpy_dtoh_async(self._h_input, self._d_input, s)
                if self._h_refl is not None:
                    cuda.memcpy_dtoh_async(self._h_refl, self._d_refl, s)
            ev[3].record(s)
            ev[3].synchronize()
            timings = {"upload": ev[1].time_since(ev[0]), "chain": ev[2].time_since(ev[4]),
                       "download": ev[3].time_since(ev[2])}
            if on_device:
                timings["register"] = ev[4].time_since(ev[1])   # device time
            elif reg_ms is not None:
                timings["register"] = reg_ms    # on the host, before the upload
            if self._quality is not None:
                return self._finish_quality(timings, copy_input, float(exposure_us or 0.0))
        # Copies: the page-locked buffers are overwritten by the next frame.
        maps = {n: self._h_maps[i].copy() for i, n in enumerate(MAP_NAMES)}
        packed = None
        if self._h_input is not None:
            packed = self._h_input.copy() if copy_input else DeviceTensor(
                int(self._d_input), self._h_input.shape, self._h_input.dtype,
                self.stream_handle)
        refl = self._h_refl.copy() if self._h_refl is not None else None
        return ChainResult(maps=maps, flags=self._h_flags.copy(), input=packed,
                           reflectance=refl, timings_ms=timings)

    def _finish_quality(self, timings: dict, copy_input: bool, stream_key) -> ChainResult:
        """The quality step's results (context pushed, stream synchronised): the device
        finish's maps, or the host finish (cuda_quality.finish_frame: finish_quality with the
        spatial step on the GPU) and the network input's map channels rewritten from them."""
        flags = self._h_flags.copy()
        packed = None
        if self._h_input is not None:
            # Mapped memory: the device input is this host buffer, rewritten in place.
            packed = self._h_input.copy() if copy_input else \
                (self._h_input if self.mapped_host_memory else None)
        maps, ms = self._quality.finish(self._h_maps, flags, packed, stream_key)
        if self._h_input is not None and not copy_input:
            if not self.mapped_host_memory and not self._quality.on_device:
                rows, cols = flags.shape
                self._quality.upload_map_channels(maps, self._d_input, self._h_input.dtype,
                                                  rows, cols)
            packed = DeviceTensor(int(self._d_input), self._h_input.shape,
                                  self._h_input.dtype, self.stream_handle)
        timings["quality"] = ms
        refl = self._h_refl.copy() if self._h_refl is not None else None
        return ChainResult(maps=maps, flags=flags, input=packed, reflectance=refl,
                           timings_ms=timings)

    def reset_stream(self) -> None:
        """Forget the temporal step's state (a new stream), where the plan has one."""
        if self._quality is not None:
            self._quality.reset_stream()

    def close(self) -> None:
        """Free the GPU resources and release the primary context (idempotent).

        Everything PyCUDA made for this backend (device and page-locked buffers, module,
        stream, events) is dropped while the context is still pushed: PyCUDA frees an object
        in the context it was made in, and one freed after :meth:`detach` only logs
        "dead context" and leaks.
        """
        if self._closed:
            return
        with self._active():
            if getattr(self, "_quality", None) is not None:
                self._quality.free()
            if getattr(self, "_register", None) is not None:
                self._register.free()
            for name in ("_d_raw", "_d_maps", "_d_flags", "_d_input", "_d_refl", "_d_dark",
                         "_d_scale", "_d_static"):
                buf = getattr(self, name, None)
                if hasattr(buf, "free"):
                    buf.free()
                setattr(self, name, None)
            for name in ("_h_raw", "_h_maps", "_h_flags", "_h_input", "_h_refl"):
                setattr(self, name, None)
            self._ring = []
            self.ops, self._events = None, []
            stream, self.stream = getattr(self, "stream", None), None
            if stream is not None:
                stream.synchronize()
                del stream
            self._shape = None
        self._closed = True   # the primary context stays retained (primary_context)
