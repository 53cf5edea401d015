"""A hand-written stand-in for the ``pycuda`` package, for CPU tests of the code around it.

:func:`make_fake_pycuda` models how :func:`edge.backends.cuda_ops.load_module` chooses and
loads kernel binaries: ``pycuda.driver.get_driver_version``, ``module_from_file`` (records the
path; raises ``LogicError`` for files named in ``refuse``), the ``Error``/``LogicError``/
``CompileError`` hierarchy of pycuda 2026.1 (``CompileError(Error)`` with ``stderr``), and
``pycuda.compiler.SourceModule`` (records its ``nvcc=`` and options; raises ``CompileError``
when ``compile_error`` is set).  :func:`add_fake_device` adds the device side that the CUDA
backend, the TensorRT engine builds and the TensorRT runtime call (:func:`make_fake_cuda`:
the ``pycuda.driver`` module alone, for the TensorRT tests).  It loads and runs nothing: no
claim that a GPU path ran (tests/gpu and tests/tensorrt_real do).

Shared by tests/cuda and tests/inference/trt_engine (it sits in tests/, which both import
from, like onnx_models.py).
"""

from __future__ import annotations

import types


def make_fake_pycuda(driver_version: int = 13000, refuse=(), compile_error: str | None = None,
                     init_error: str | None = None):
    pkg = types.ModuleType("pycuda")
    drv = types.ModuleType("pycuda.driver")
    comp = types.ModuleType("pycuda.compiler")
    pkg.driver, pkg.compiler = drv, comp
    drv.loaded, drv.compiled = [], []

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class CompileError(Error):
        def __init__(self, msg, command_line, stdout=None, stderr=None):
            super().__init__(msg)
            self.command_line, self.stdout, self.stderr = command_line, stdout, stderr

    drv.Error, drv.LogicError, drv.CompileError = Error, LogicError, CompileError
    drv.get_driver_version = lambda: driver_version

    def init():
        if init_error is not None:
            raise RuntimeError(init_error)   # pycuda raises its own RuntimeError type here

    drv.init = init

    def module_from_file(path):
        if any(str(path).endswith(r) for r in refuse):
            raise LogicError("cuModuleLoad failed: device kernel image is invalid")
        drv.loaded.append(path)
        return ("module", path)

    drv.module_from_file = module_from_file

    def SourceModule(source, nvcc="nvcc", options=None, keep=False, no_extern_c=False,
                     arch=None, code=None, cache_dir=None, include_dirs=()):
        drv.compiled.append({"nvcc": nvcc, "options": list(options or []),
                             "include_dirs": list(include_dirs), "no_extern_c": no_extern_c})
        if compile_error is not None:
            raise CompileError("nvcc compilation of /tmp/kernel.cu failed", [nvcc],
                               stderr=compile_error)
        return ("source-module", nvcc)

    comp.SourceModule = SourceModule
    return pkg


def add_fake_gpuarray(pkg):
    """``pycuda.gpuarray.empty`` (an address and a size) and ``memcpy_htod``/``memset`` that
    record what was copied, for CudaOps' host-side logic."""
    import numpy as np

    ga = types.ModuleType("pycuda.gpuarray")
    pkg.gpuarray, drv = ga, pkg.driver
    drv.copies = []

    class Array:
        _next = 0x1000

        def __init__(self, shape, dtype, allocator=None):
            self.shape, self.dtype = shape, np.dtype(dtype)
            self.size = int(np.prod(shape))
            self.nbytes = self.size * self.dtype.itemsize
            Array._next += self.nbytes + 256
            self.gpudata = Array._next

    ga.empty = Array
    drv.mem_alloc = lambda n: n
    drv.memcpy_htod = lambda ptr, buf: drv.copies.append((ptr, bytes(memoryview(buf))))
    drv.memset_d8_async = lambda *a: None
    return ga


class FakeModule:
    """A loaded module: ``get_global`` gives a fixed address per symbol, ``get_function`` a
    kernel that records its launches."""

    def __init__(self, launches: list):
        self.launches = launches

    def get_global(self, name):
        return (0xC0DE, 19 * 3)

    def get_function(self, kernel):
        return lambda *args, **kw: self.launches.append((kernel, args, kw))


def add_fake_device(pkg, *, integrated: bool = False, name: str = "Fake GPU", cc=(8, 7),
                    sm_count: int = 8, total_memory: int = 16 << 30, clock_khz: int = 918_000):
    """What :class:`edge.backends.cuda.CudaBackend` and the TensorRT build and runtime call
    around their kernels and engines: one device (``integrated`` with mapped host memory: a
    Jetson; else a discrete GPU; name, compute capability, SM count, memory and clock for the
    engine cache key), the primary
    context with PyCUDA's push/pop and the driver's context stack as PyCUDA 2026.1 drives it
    (``detach()`` of a context that is not current pushes it and releases it without a pop,
    src/cpp/cuda.hpp), streams and events, page-locked (optionally device-mapped) host
    buffers, allocations, async copies (recorded), and kernel launches that, like PyCUDA's
    argument packing, take numpy scalars and allocations but refuse plain ints, while
    ``memcpy_htod``, like Boost.Python, takes ints and allocations but refuses ``np.uintp``.
    Nothing is computed: the outputs stay as they were.

    ``drv.events`` logs, in order, ``"retain"``, ``"push"``, ``"pop"``, ``"detach"``,
    ``"sync"`` (context synchronize) and the asynchronous copies as ``("htod"|"dtoh", device
    address, stream handle)``; ``drv.copies`` has every copy with its size.
    """
    import numpy as np

    from edge.backends.cuda_params import CHAIN_PARAMS_DTYPE, MAX_CLASSES

    drv = pkg.driver
    drv.driver_stack, drv.pycuda_stack, drv.retained, drv.launches = [], [], [], []
    drv.copies, drv.events = [], []
    drv.device_attribute = types.SimpleNamespace(
        INTEGRATED="integrated", CAN_MAP_HOST_MEMORY="map", MULTIPROCESSOR_COUNT="sm",
        CLOCK_RATE="clock")
    drv.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=2)
    attrs = {"integrated": int(integrated), "map": int(integrated), "sm": sm_count,
             "clock": clock_khz}
    _addr = [0x7F00_0000_0000]

    def _next(n):
        _addr[0] += max(256, (n + 255) // 256 * 256)
        return _addr[0]

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.ptr, self.nbytes, self.freed = _next(nbytes), nbytes, False

        def __int__(self):
            return self.ptr

        def free(self):
            self.freed = True

    class HostAllocation(bytearray):
        def __init__(self, nbytes, mapped):
            super().__init__(max(nbytes, 1))
            self.mapped, self.dptr = mapped, _next(nbytes)

        def get_device_pointer(self):
            if not self.mapped:
                raise drv.LogicError("cuMemHostGetDevicePointer failed: invalid value")
            return self.dptr

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        alloc = HostAllocation(n, bool(mem_flags & drv.host_alloc_flags.DEVICEMAP))
        return np.ndarray(shape, dtype, buffer=alloc)

    class Context:
        def __init__(self, handle):
            self.handle, self.valid = handle, True

        def push(self):
            drv.events.append("push")
            if drv.pycuda_stack:                  # prepare_context_switch
                drv.driver_stack.pop()
            drv.driver_stack.append(self.handle)
            drv.pycuda_stack.append(self)

        @staticmethod
        def pop():
            if not drv.pycuda_stack:
                raise drv.LogicError("context::pop failed: cannot pop non-current context")
            drv.events.append("pop")
            drv.driver_stack.pop()
            drv.pycuda_stack.pop()
            if drv.pycuda_stack:
                drv.driver_stack.append(drv.pycuda_stack[-1].handle)

        def detach(self):
            drv.events.append("detach")
            current = drv.pycuda_stack[-1] if drv.pycuda_stack else None
            if current is self:
                drv.retained.remove(self.handle)
                drv.pycuda_stack.pop()
            else:                                 # push, release, "pop is implicit" (no pop)
                drv.driver_stack.append(self.handle)
                drv.retained.remove(self.handle)
            self.valid = False

        @staticmethod
        def synchronize():
            drv.events.append("sync")

    class Device:
        @staticmethod
        def count():
            return 1

        def __init__(self, ordinal):
            self.ordinal = ordinal

        def name(self):
            return name

        def compute_capability(self):
            return cc

        def total_memory(self):
            return total_memory

        def get_attribute(self, attr):
            return attrs[attr]

        def retain_primary_context(self):
            drv.events.append("retain")
            drv.retained.append("primary")
            drv.last_context = Context("primary")
            return drv.last_context

    class Stream:
        handle = 0x5150

        def synchronize(self):
            pass

    class Event:
        def record(self, stream=None):
            pass

        def synchronize(self):
            pass

        def time_since(self, other):
            return 0.0

    def _ptr_arg(x, what):
        if isinstance(x, (int, np.integer)) and not isinstance(x, np.uintp):
            return int(x)
        if isinstance(x, DeviceAllocation):
            return int(x)
        raise drv.ArgumentError(f"Python argument types in pycuda._driver.{what} did not match "
                                f"C++ signature: got {type(x).__name__}")

    class ArgumentError(TypeError):
        pass

    drv.ArgumentError = ArgumentError

    def memcpy_htod(dst, src):
        drv.copies.append(("htod", _ptr_arg(dst, "memcpy_htod"), np.asarray(src).nbytes))

    def memcpy_htod_async(dst, src, stream=None):
        ptr = _ptr_arg(dst, "memcpy_htod_async")
        drv.copies.append(("htod_async", ptr, np.asarray(src).nbytes))
        drv.events.append(("htod", ptr, getattr(stream, "handle", None)))

    def memcpy_dtoh_async(dst, src, stream=None):
        ptr = _ptr_arg(src, "memcpy_dtoh_async")
        drv.copies.append(("dtoh_async", ptr, np.asarray(dst).nbytes))
        drv.events.append(("dtoh", ptr, getattr(stream, "handle", None)))

    def to_device(arr):
        a = DeviceAllocation(np.asarray(arr).nbytes)
        drv.copies.append(("htod", int(a), np.asarray(arr).nbytes))
        return a

    sizes = {"c_params": CHAIN_PARAMS_DTYPE.itemsize, "c_colours": MAX_CLASSES * 3}

    class Module:
        def __init__(self, origin):
            self.origin = origin

        def get_global(self, symbol):
            return DeviceAllocation(sizes[symbol]), sizes[symbol]

        def get_function(self, kernel):
            def launch(*args, **kw):
                for i, a in enumerate(args):   # PyCUDA's _build_arg_buf
                    if not isinstance(a, (np.number, DeviceAllocation)):
                        raise TypeError(f"invalid type on parameter #{i} (0-based)")
                drv.launches.append((kernel, [int(a) if isinstance(a, (np.uintp,
                                                                        DeviceAllocation))
                                              else a for a in args], kw))
            return launch

    drv.Context, drv.Device, drv.Stream, drv.Event = Context, Device, Stream, Event
    drv.mem_alloc, drv.pagelocked_empty, drv.to_device = DeviceAllocation, pagelocked_empty, \
        to_device
    drv.memcpy_htod, drv.memcpy_htod_async = memcpy_htod, memcpy_htod_async
    drv.memcpy_dtoh_async, drv.DeviceAllocation = memcpy_dtoh_async, DeviceAllocation
    drv.module_from_file = lambda path: Module(str(path))
    pkg.compiler.SourceModule = lambda source, nvcc="nvcc", **kw: Module(nvcc)
    return drv


def make_fake_cuda(name: str = "Orin", cc=(8, 7), sm_count: int = 8,
                   total_memory: int = 16 << 30, clock_khz: int = 918_000):
    """A fake ``pycuda.driver`` with one discrete device (:func:`add_fake_device`), for the
    TensorRT build/load tests (they hand it to ``_import_cuda``)."""
    return add_fake_device(make_fake_pycuda(), name=name, cc=cc, sm_count=sm_count,
                           total_memory=total_memory, clock_khz=clock_khz)
