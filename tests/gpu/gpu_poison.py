"""Poison a CUDA backend's output buffers before a launch (the GPU tests' rule: a kernel that
skips an element cannot pass).  Kept apart so the CPU tests check it too
(tests/cuda/test_cuda_backend_host.py)."""

from __future__ import annotations

import numpy as np


def poison_backend_outputs(cuda, be) -> None:
    """NaN into every float output, 0xAB into the flags, on the host and the device.

    With mapped host memory (Jetson) host and device buffers are the same memory, so filling
    the host buffer is the poisoning and there is nothing to copy; elsewhere the host buffer
    is copied to the device allocation (``memcpy_htod`` takes an int or an allocation, never
    ``np.uintp``: Boost.Python refuses it).
    """
    pairs = [(be._d_maps, be._h_maps, np.nan), (be._d_input, be._h_input, np.nan),
             (be._d_refl, be._h_refl, np.nan), (be._d_flags, be._h_flags, 0xAB)]
    with be._active():
        for d, h, value in pairs:
            if h is None:
                continue
            h.fill(value)
            if not be.mapped_host_memory:
                cuda.memcpy_htod(d if hasattr(d, "free") else int(d), h)
