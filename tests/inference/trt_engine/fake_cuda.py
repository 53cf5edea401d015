"""A hand-written stand-in for ``pycuda.driver``, for CPU tests of the TensorRT build/load logic.

It models only what :mod:`edge.inference.tensorrt_build` and
:mod:`edge.inference.tensorrt_runtime` call around TensorRT (device identity for the cache
key, the primary context's push/pop/detach, a stream, page-locked and device buffers, the
asynchronous copies), and records context operations and copies in ``events``.  It runs no
kernel and copies no memory: it is not a GPU, and nothing tested with it says a GPU path ran
(tests/gpu and tests/tensorrt_real do).
"""

from __future__ import annotations

import types

import numpy as np


def make_fake_cuda(name: str = "Orin", cc=(8, 7), sm_count: int = 8,
                   total_memory: int = 16 << 30, clock_khz: int = 918_000):
    cuda = types.ModuleType("pycuda.driver")
    cuda.events = []
    cuda.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="sm", CLOCK_RATE="clock")
    attrs = {"sm": sm_count, "clock": clock_khz}

    class Context:
        def __init__(self):
            self.pushed = 0

        def push(self):
            self.pushed += 1
            cuda.events.append("push")

        def pop(self):
            self.pushed -= 1
            cuda.events.append("pop")

        def detach(self):
            cuda.events.append("detach")

        @staticmethod
        def synchronize():
            cuda.events.append("sync")

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
            cuda.events.append("retain")
            cuda.last_context = Context()
            return cuda.last_context

    class Allocation:
        _next = 0x7F00_0000_0000

        def __init__(self, nbytes):
            Allocation._next += max(256, nbytes + 255) // 256 * 256
            self.ptr, self.freed = Allocation._next, False

        def __int__(self):
            return self.ptr

        def free(self):
            self.freed = True

    class Stream:
        handle = 0x5150

        def synchronize(self):
            pass

    def memcpy_htod_async(dst, src, stream=None):
        cuda.events.append(("htod", int(dst), getattr(stream, "handle", None)))

    def memcpy_dtoh_async(dst, src, stream=None):
        cuda.events.append(("dtoh", int(src), getattr(stream, "handle", None)))

    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    cuda.Context, cuda.Device, cuda.Stream = Context, Device, Stream
    cuda.mem_alloc = Allocation
    cuda.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
    cuda.init = lambda: None
    return cuda
