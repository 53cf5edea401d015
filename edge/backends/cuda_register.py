"""The band registration of a snapshot camera's uint16 counts on the GPU (issue 14).

:class:`CudaRegistration` runs ``cuda_kernels/register.cu`` (arithmetic: ``register_math.cuh``;
NumPy reference :meth:`edge.processing.register.BandRegistration.apply`) on the backend's
stream, from the uploaded raw frame into a device buffer of the same shape and dtype that the
chain and the quality kernels then read instead of the raw counts.  Its launch configuration
and arguments live only here; the helpers below are also what the host emulation
(``tests/cuda/test_cuda_register_emulation.py``) passes to the kernels' own source.

Importing this module needs no PyCUDA.
"""

from __future__ import annotations

import math

import numpy as np

from edge.backends.cuda_ops import Launch, _p
from edge.processing.register import TAPS, BandRegistration

__all__ = ["CudaRegistration", "tap_mask", "saturated_count", "register_launch",
           "REGISTER_BLOCK"]

#: Threads per block of both kernels (one thread per pixel / per element: no shared memory).
REGISTER_BLOCK = 256


def tap_mask(k: np.ndarray) -> int:
    """Bit ``t`` set when tap offset ``t - TAPS`` of ``k`` (bands, 2·TAPS + 1) is nonzero for
    some band: the reference's tap set (``_filter`` skips a tap whose whole column is 0)."""
    k = np.asarray(k, dtype=np.float32)
    return sum(1 << t for t in range(2 * TAPS + 1) if np.any(k[:, t] != 0))


def saturated_count(saturation: float) -> int:
    """The count of a pixel whose window holds a saturated pixel: the reference's
    ``ceil(min(saturation, 65535))`` as uint16 (0 below 0)."""
    return int(max(0.0, math.ceil(min(float(saturation), 65535.0))))


def register_launch(n: int) -> Launch:
    """Launch over ``n`` threads (pixels or elements) of ``REGISTER_BLOCK`` each."""
    return Launch((max(1, -(-n // REGISTER_BLOCK)), 1, 1), (REGISTER_BLOCK, 1, 1), 0)


class CudaRegistration:
    """Registers uploaded uint16 frames on the GPU (see the module docstring).

    Parameters
    ----------
    backend : CudaBackend
        Its PyCUDA driver, stream and context (current whenever a method is called).
    module
        The loaded ``register`` kernel module.
    registration : BandRegistration
        The plan's registration (its ky, kx taps are uploaded once, as float32).
    saturation : float
        The flat field's saturation level (counts; +inf: none).
    """

    def __init__(self, backend, module, registration: BandRegistration,
                 saturation: float) -> None:
        cuda = backend._cuda
        self._cuda, self._mod, self._stream = cuda, module, backend.stream
        self.ymask, self.xmask = tap_mask(registration.ky), tap_mask(registration.kx)
        self.saturation = float(saturation)
        self.use_sat = math.isfinite(self.saturation)
        self.sat_out = saturated_count(self.saturation) if self.use_sat else 0
        self._d_ky = cuda.to_device(np.ascontiguousarray(registration.ky, dtype=np.float32))
        self._d_kx = cuda.to_device(np.ascontiguousarray(registration.kx, dtype=np.float32))
        self._shape: tuple | None = None
        self.d_reg = self._d_sat = None

    def ensure(self, rows: int, cols: int, bands: int) -> None:
        """Device buffers for a (rows, cols, bands) frame, reused while the shape stays."""
        if self._shape == (rows, cols, bands):
            return
        self._free_frame()
        self.d_reg = self._cuda.mem_alloc(max(rows * cols * bands * 2, 1))
        if self.use_sat:
            self._d_sat = self._cuda.mem_alloc(max(rows * cols, 1))
        self._shape = (rows, cols, bands)

    def launch(self, d_raw, d_dark, d_static, rows: int, cols: int, bands: int):
        """Queue the registration of the uploaded frame ``d_raw`` on the stream; returns the
        device buffer (rows, cols, bands) uint16 of the registered counts (:attr:`d_reg`).

        ``d_dark`` (npix, bands) float32 and ``d_static`` (npix) uint8: the flat field's
        references on the device (None: none)."""
        self.ensure(rows, cols, bands)
        npix = rows * cols
        s = self._stream
        if self.use_sat:
            ln = register_launch(npix)
            self._mod.get_function("register_sat_pixel")(
                _p(d_raw), np.int64(npix), np.int32(bands), np.float32(self.saturation),
                _p(self._d_sat), grid=ln.grid, block=ln.block, stream=s)
        ln = register_launch(npix * bands)
        self._mod.get_function("register_u16")(
            _p(d_raw), _p(d_dark), _p(d_static), _p(self._d_sat if self.use_sat else None),
            np.int32(rows), np.int32(cols), np.int32(bands), _p(self._d_ky), _p(self._d_kx),
            np.uint32(self.ymask), np.uint32(self.xmask), np.uint16(self.sat_out),
            _p(self.d_reg), grid=ln.grid, block=ln.block, stream=s)
        return self.d_reg

    def download(self, d_reg, shape) -> np.ndarray:
        """``d_reg`` (a :meth:`launch` result) copied to a new host array after the stream's
        work (checks: :meth:`CudaBackend.register`)."""
        h = self._cuda.pagelocked_empty(shape, np.uint16)
        self._cuda.memcpy_dtoh_async(h, d_reg, self._stream)
        self._stream.synchronize()
        return np.array(h)

    def _free_frame(self) -> None:
        for name in ("d_reg", "_d_sat"):
            buf = getattr(self, name, None)
            if hasattr(buf, "free"):
                buf.free()
            setattr(self, name, None)
        self._shape = None

    def free(self) -> None:
        """Drop every buffer (the backend's context is current)."""
        self._free_frame()
        for name in ("_d_ky", "_d_kx"):
            buf = getattr(self, name, None)
            if hasattr(buf, "free"):
                buf.free()
            setattr(self, name, None)
