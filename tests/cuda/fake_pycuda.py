"""A hand-written stand-in for the ``pycuda`` package, for CPU tests of how
:func:`edge.backends.cuda_ops.load_module` chooses and loads kernel binaries.

Models only: ``pycuda.driver.get_driver_version``, ``module_from_file`` (records the path;
raises ``LogicError`` for files named in ``refuse``), the ``Error``/``LogicError``/
``CompileError`` hierarchy of pycuda 2026.1 (``CompileError(Error)`` with ``stderr``), and
``pycuda.compiler.SourceModule`` (records its ``nvcc=`` and options; raises ``CompileError``
when ``compile_error`` is set).  It loads and runs nothing: no claim that a GPU path ran.
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
