"""Band registration of a snapshot mosaic camera's cube (issue 14: StO2 at organ borders).

A snapshot camera with an ``n×n`` filter mosaic delivers one spectral pixel per super-pixel,
but each band's filter sits at its own place in the super-pixel, so band ``k`` samples the
scene at ``(r + dy_k, c + dx_k)``, up to ±(n−1)/(2n) of a spectral pixel from the centre
(:attr:`drivers.camera.Camera.band_offsets`).  In flat tissue that does not matter; at an organ
border neighbouring bands see different tissue, the spectrum is no tissue's, and the unmixing
turns it into StO2 far outside either side (measured on the simulated snapshot16 camera, seed 2:
the error within 2 px of edges 1.36 points above the interior with the shift, 0.39 without).

Registration resamples every band to a common sampling kernel, separably along rows and
columns.  Along one axis, a band sampled at ``+δ`` by bilinear interpolation (the camera model:
``S(r) = (1−|δ|) R(r) + |δ| R(r + sign δ)``) shifted back by the same interpolation,
``(1−|δ|) S(r) + |δ| S(r − sign δ)``, ends with the symmetric kernel ``[w, 1 − 2w, w]``,
``w = |δ|(1−|δ|)``, centred on the pixel -- a different ``w`` per band.  Every band gets
instead the kernel of the farthest band, ``w = max |δ|(1−|δ|)`` (0.24 for a 5×5 mosaic):
its 5-tap registration kernel (offsets −2..2) is the least-squares solution of "camera kernel
then registration kernel = target" (:func:`_axis_kernels`; exact for the farthest and the
centre bands, within 4e-3 of a tap for the others).  Equal kernels make a border pixel's
spectrum a mix of its two tissues in the same proportion in every band (a mixed pixel, as any
camera sees) instead of a spectrum of nowhere; shifting back alone (unequal kernels) left most
of the border error (+1.16 against +0.66 with equal ones, same frames).

The registered counts are ``D + H_k * (I − D)`` rounded to uint16 (``D`` the flat field's dark;
the rounding adds 1/12 count² of quantisation, not in the noise model), so every backend runs
its chain unchanged on them and all give the same result: this module is the reference
(:meth:`edge.processing.plan.ChainPlan.register`, run by every backend's ``checked_frame``);
``cuda_kernels/cpu_register.h`` (native backend) and ``cuda_kernels/register.cu`` (CUDA
backend, on the device) do the same float32 arithmetic for uint16 counts.  The blur lowers each band's noise variance by
``g_k = Σ h_y² · Σ h_x²`` (:attr:`BandRegistration.variance_gain`), which the StO2 noise model
takes (:class:`edge.processing.quality.NoiseModel` ``band_gain``); registered neighbours share
noise, which the spatial step's variance accounts for
(:func:`edge.processing.quality.registration_gain`).

Invalid neighbours do not leak in: pixels with a static flat-field flag (dead, hot) or, in a
float32 reflectance frame, a non-finite band are replaced, for their neighbours' sums, by the
mean of their own valid 3×3 neighbours, and keep their own values; a pixel whose window holds
a saturated pixel is delivered saturated (every band at the saturation level), because its
registered spectrum would hold clipped counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import DataFormatError

__all__ = ["BandRegistration", "TAPS", "check_band_offsets"]

#: Taps of each band's 1-D kernel: offsets −TAPS..TAPS.
TAPS = 2


_ALLOWED = "(dy, dx) per band in spectral pixels, finite, each |value| < 1"


def _show(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_band_offsets(value: Any, source: str, bands: int | None = None) -> np.ndarray:
    """Validate band offsets and return them as a new float64 array.

    Parameters
    ----------
    value : array_like of shape (bands, 2)
        (dy, dx) per band in spectral pixels.
    source : str
        What the value is, for the message (``"band_offsets"``, or the file and key).
    bands : int, optional
        The band count the offsets must match (the cube's last axis); None: any count >= 1.

    Returns
    -------
    ndarray of shape (bands, 2), float64
        A copy, never a view of ``value``.

    Raises
    ------
    DataFormatError
        One line naming ``source``, the bad value or shape, and what is allowed: not numbers,
        a shape other than (bands, 2), NaN/inf, or a component with |value| >= 1.
    """
    want = f"shape ({bands}, 2)" if bands is not None else "shape (bands, 2)"
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):   # ragged nested lists
        raise DataFormatError(f"{source}: expected numbers of {want}, {_ALLOWED}; got "
                              f"{_show(value)}") from None
    if arr.dtype.kind not in "iuf":
        raise DataFormatError(f"{source}: expected numbers of {want}, {_ALLOWED}; got "
                              f"{_show(value)}")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1 or (
            bands is not None and arr.shape[0] != bands):
        raise DataFormatError(f"{source}: expected {want}, {_ALLOWED}; got shape "
                              f"{arr.shape}")
    arr = np.array(arr, dtype=np.float64)
    bad = ~np.isfinite(arr) | (np.abs(arr) >= 1.0)
    if bad.any():
        band, axis = (int(i) for i in np.argwhere(bad)[0])
        raise DataFormatError(
            f"{source}: expected {_ALLOWED}; got {float(arr[band, axis])!r} as "
            f"{'dy' if axis == 0 else 'dx'} of band {band}")
    return arr


def _axis_kernels(delta: np.ndarray) -> np.ndarray:
    """Per band 1-D kernels (bands, 2·TAPS + 1) for sampling offsets ``delta`` (bands,).

    Band ``k``'s camera kernel on the scene is ``c[0] = 1 − |δ|``, ``c[sign δ] = |δ|``; its
    registration kernel ``h`` (``out(r) = Σ_t h[t] S(r + t)``) is the least-squares solution of
    ``h * c = [w, 1 − 2w, w]`` with ``w = max_k |δ_k|(1 − |δ_k|)`` (the farthest band's kernel,
    which shifting back by bilinear interpolation gives exactly), constrained to ``Σ h = 1``:
    a flat region keeps its value in every band.
    """
    d = np.abs(delta)
    w = float((d * (1.0 - d)).max())
    n = 2 * TAPS + 1
    target = np.zeros(n + 2)                 # effective kernel on offsets -TAPS-1..TAPS+1
    target[TAPS:TAPS + 3] = (w, 1.0 - 2.0 * w, w)
    out = np.zeros((delta.size, n))
    for k, (dk, sk) in enumerate(zip(d, np.sign(delta))):
        a = np.zeros((n + 2, n))             # e[u] = sum_t h[t] c[u - t]
        for t in range(n):
            a[t + 1, t] += 1.0 - dk
            if sk:
                a[t + 1 + int(sk), t] += dk
        # Least squares with sum(h) = 1 exactly (KKT): a band's gain off by 0.6 % moved
        # snapshot25's StO2 by 7 points.
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = a.T @ a
        kkt[:n, n] = kkt[n, :n] = 1.0
        out[k] = np.linalg.solve(kkt, np.r_[a.T @ target, 1.0])[:n]
    return out


@dataclass(frozen=True)
class BandRegistration:
    """Resampling of every band to one kernel (module docstring).

    Attributes
    ----------
    offsets : ndarray of shape (bands, 2), float64
        (dy, dx) where each band samples the scene, spectral pixels.
    ky, kx : ndarray of shape (bands, 2·TAPS + 1), float64
        Each band's kernel along rows and along columns (taps at −TAPS..TAPS; sum 1).
    """

    offsets: np.ndarray
    ky: np.ndarray
    kx: np.ndarray

    @classmethod
    def from_offsets(cls, offsets, bands: int) -> "BandRegistration":
        """Check ``offsets`` (:func:`check_band_offsets`) and build the kernels.

        Raises
        ------
        DataFormatError
            Wrong shape or values, naming ``band_offsets`` and what is allowed.
        """
        off = check_band_offsets(offsets, "band_offsets", bands=int(bands))
        return cls(off, _axis_kernels(off[:, 0]), _axis_kernels(off[:, 1]))

    @property
    def bands(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def variance_gain(self) -> np.ndarray:
        """Factor on each band's noise variance, ``Σ h_y² · Σ h_x²`` (bands,), float64 ≤ 1."""
        return (self.ky ** 2).sum(axis=1) * (self.kx ** 2).sum(axis=1)

    # ---- applying ------------------------------------------------------------------------
    def _filter(self, x: np.ndarray, dark: np.ndarray | None = None,
                dtype=np.float32) -> np.ndarray:
        """``x`` (rows, cols, bands) float32 filtered along rows, then columns, edges
        replicated; in blocks of rows that stay in cache (about 512 KiB each).  With
        ``dark`` (broadcastable to ``x``) each block is finished as counts: ``+ dark``,
        rounded, clipped to ``dtype``'s range and stored as ``dtype``."""
        rows, cols, nb = x.shape
        ky = [(t - TAPS, self.ky[:, t].astype(np.float32)) for t in range(2 * TAPS + 1)
              if self.ky[:, t].any()]
        kx = [(t - TAPS, self.kx[:, t].astype(np.float32)) for t in range(2 * TAPS + 1)
              if self.kx[:, t].any()]
        step = max(1, (512 << 10) // max(1, cols * nb * 4))
        out = np.empty(x.shape, dtype)
        top = float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "ui" else None
        obuf = np.empty((step, cols, nb), np.float32)
        ybuf = np.empty((step, cols + 2 * TAPS, nb), np.float32)
        tmp = np.empty((step, cols, nb), np.float32)
        for r0 in range(0, rows, step):
            r1 = min(r0 + step, rows)
            n = r1 - r0
            y = ybuf[:n, TAPS:TAPS + cols]
            y[...] = 0
            for dt, col in ky:
                lo, hi = r0 + dt, r1 + dt
                src = (x[lo:hi] if lo >= 0 and hi <= rows
                       else x[np.clip(np.arange(lo, hi), 0, rows - 1)])
                np.multiply(src, col, out=tmp[:n])
                y += tmp[:n]
            ybuf[:n, :TAPS] = y[:, :1]
            ybuf[:n, TAPS + cols:] = y[:, -1:]
            o = obuf[:n]
            o[...] = 0
            for dt, col in kx:
                np.multiply(ybuf[:n, TAPS + dt:TAPS + dt + cols], col, out=tmp[:n])
                o += tmp[:n]
            if dark is not None:
                o += dark if np.ndim(dark) == 0 else dark[r0:r1]
                np.rint(o, out=o)
                if top is not None:
                    np.clip(o, 0, top, out=o)
            out[r0:r1] = o
        return out

    @staticmethod
    def _fill(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``x`` with each invalid pixel replaced by the mean of its valid 3×3 neighbours
        (0 where it has none), so the filter never reads an invalid value."""
        bad = np.argwhere(~valid)
        if bad.size == 0:
            return x
        x = x.copy()
        rows, cols = valid.shape
        for r, c in bad:
            r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, rows), max(c - 1, 0), min(c + 2, cols)
            ok = valid[r0:r1, c0:c1]
            x[r, c] = x[r0:r1, c0:c1][ok].mean(axis=0) if ok.any() else 0
        return x

    def _smooth(self, x: np.ndarray, valid: np.ndarray | None, **finish) -> np.ndarray:
        """Both axes; with ``valid`` (rows, cols) the invalid pixels are filled from their
        valid neighbours before the filter (:meth:`_fill`) and keep ``x`` (``finish``:
        :meth:`_filter`'s ``dark`` and ``dtype``, a kept pixel's value is then its own raw
        value, which the caller restores)."""
        if valid is None or valid.all():
            return self._filter(x, **finish)
        out = self._filter(self._fill(x, valid), **finish)
        if not finish:
            out[~valid] = x[~valid]
        return out

    def _window(self, mask: np.ndarray) -> np.ndarray:
        """Pixels whose registration window holds a pixel of ``mask`` (rows, cols)."""
        out = mask.copy()
        for axis, k in ((0, self.ky), (1, self.kx)):
            taps = np.flatnonzero(np.any(k != 0, axis=0)) - TAPS
            grown = out.copy()
            for t in taps:
                if t:
                    # out[r] reads in[r + t]: r is hit when r + t is in the mask
                    src = np.roll(out, -t, axis=axis)
                    edge = [slice(None)] * 2
                    edge[axis] = slice(-t, None) if t > 0 else slice(0, -t)
                    src[tuple(edge)] = False
                    grown |= src
            out = grown
        return out

    def apply(self, raw: np.ndarray, dark: np.ndarray | None = None,
              static_flags: np.ndarray | None = None,
              saturation: float = float("inf")) -> np.ndarray:
        """The registered frame.

        Parameters
        ----------
        raw : ndarray of shape (rows, cols, bands), uint16 counts or float32 reflectance
        dark : ndarray of shape (rows, cols, bands), float32, or None
            The flat field's dark (counts); None or a float32 frame: none subtracted.
        static_flags : ndarray of shape (rows, cols), uint8, or None
            The flat field's per-pixel flags (nonzero: left out of the neighbours' sums).
        saturation : float
            Raw counts at/above which a band is saturated.

        Returns
        -------
        ndarray, same shape and dtype as ``raw``
        """
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[2] != self.bands:
            raise DataFormatError(f"raw: expected shape (rows, cols, {self.bands}) for the "
                                  f"registration, got {raw.shape}")
        if raw.dtype == np.float32:
            valid = np.all(np.isfinite(raw), axis=2)
            if valid.all():
                return self._smooth(raw, None)
            out = self._smooth(np.where(valid[:, :, None], raw, np.float32(0)), valid)
            out[~valid] = raw[~valid]        # a non-finite pixel stays as it was (flagged)
            return out
        d = np.float32(0) if dark is None else np.asarray(dark, dtype=np.float32)
        x = np.subtract(raw, d, dtype=np.float32)
        valid = None if static_flags is None else np.asarray(static_flags) == 0
        reg = self._smooth(x, valid, dark=d, dtype=raw.dtype)
        if valid is not None:
            reg[~valid] = raw[~valid]        # a flagged pixel keeps its own counts
        top = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else np.inf
        if np.isfinite(saturation):
            sat = raw.max(axis=2) >= saturation
            if sat.any():
                reg[self._window(sat)] = np.asarray(np.ceil(min(saturation, top)),
                                                    dtype=raw.dtype)
        return reg
