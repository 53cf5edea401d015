"""The StO2 quality step of the CUDA backend (issue 14; :mod:`edge.processing.quality`).

After the fused chain (``chain.cu``, which then always writes the reflectance to the device),
two kernels of ``cuda_kernels/quality.cu`` run on the GPU:

- ``quality_pixel``: per pixel, from the chain's reflectance and flags and the raw counts,
  raw StO2, its delta-method variance (through the mosaic's crosstalk correction when the
  noise model has one), the darkest band, the spatial step's guide (band-group means of A)
  and the StO2 index's ``A''`` terms -- the formulas of ``quality_math.cuh``, which the
  native pass (``cpu_quality.h``) computes too;
- ``bilateral_f32``: the joint-bilateral spatial step as 2-D tiles with a halo of
  ``radius`` pixels in shared memory (:func:`bilateral_launches`), called through
  :func:`~edge.processing.quality.finish_quality`'s ``spatial_filter`` hook.

The frame-wide rest -- the validity bits, the calibration curve, its slope and sigma,
``FLAG_UNCERTAIN``, the NaN masks (and the motion-gated temporal step where the plan has one)
-- is :func:`~edge.processing.quality.finish_quality` itself, run on the host on maps
downloaded from the device (:func:`finish_frame`), so the CUDA backend's maps are the
reference's by construction, and any step the reference adds there (the temporal blend
before the calibration curve) is run here too.  cuda_kernels/MEMORY.md counts the bytes.

:func:`pixel_launch`, :func:`bilateral_launches`, :func:`spatial_weights` and
:func:`finish_frame` need no PyCUDA (tests/cuda run them with the kernels emulated on the
CPU); :class:`CudaQuality` does, and is made only by :class:`~edge.backends.cuda.CudaBackend`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from edge.backends.cuda_ops import STATIC_SHARED_LIMIT, Launch, _p
from edge.backends.cuda_params import MAX_BANDS
from edge.core.chain import FLAG_SPECULAR, FLAG_STO2_ONLY, MAP_NAMES
from edge.errors import ConfigError
from edge.processing.quality import finish_quality, pixel_flags

__all__ = ["pixel_launch", "bilateral_launches", "BilateralLaunch", "spatial_weights",
           "range_factor", "filter_mask", "quality_terms", "finish_frame", "CudaQuality",
           "BIL_TERMS_PER_LAUNCH"]

log = logging.getLogger(__name__)

#: HSI_BIL_TC of quality_tail.cuh: index terms one bilateral launch averages.
BIL_TERMS_PER_LAUNCH = 6
#: Thread blocks tried for the spatial step, largest first: the first whose tile (with its
#: halo) fits the 48 KiB a block gets without opting in.
_BIL_BLOCKS = ((16, 16), (16, 8), (8, 8), (8, 4), (4, 4))


def pixel_launch(npix: int, bands: int, counts: bool) -> Launch:
    """Launch of ``quality_pixel``: ``block`` consecutive pixels staged as rows of
    ``stride = bands | 1`` floats (reflectance, and I - D with ``counts``) in shared memory.

    The block is the largest multiple of 32 (at most 256, at least 16) whose tile fits
    :data:`STATIC_SHARED_LIMIT`.
    """
    if not 1 <= bands <= MAX_BANDS:
        raise ConfigError(f"bands: the CUDA kernels support 1-{MAX_BANDS} bands, got {bands}")
    if npix < 1:
        raise ConfigError(f"npix: expected at least one pixel, got {npix}")
    stride = bands | 1
    per_pixel = 4 * stride * (2 if counts else 1)
    block = min(256, STATIC_SHARED_LIMIT // per_pixel // 32 * 32)
    if block < 32:
        block = 16            # 256 bands with counts: 16 x 257 x 8 B = 32.9 KiB
    return Launch((-(-npix // block), 1, 1), (block, 1, 1), block * per_pixel, stride)


@dataclass(frozen=True)
class BilateralLaunch:
    """One launch of ``bilateral_f32``: its grid, block, shared bytes and term planes."""

    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int
    t0: int
    tc: int


def bilateral_launches(rows: int, cols: int, radius: int, groups: int,
                       terms: int) -> list[BilateralLaunch]:
    """Launches of the spatial step over a (rows, cols) frame: the first also writes the
    value and variance, each averages up to :data:`BIL_TERMS_PER_LAUNCH` index terms.

    Shared memory per block: ``4 (bx + 2r)(by + 2r)(3 + G + tc)`` bytes (value, variance,
    ok, the guide's G planes and tc term planes, halo included).

    Raises
    ------
    ConfigError
        If ``radius`` is outside 1..16 or the guide alone does not fit a 4x4 block's tile.
    """
    if not 1 <= radius <= 16:
        raise ConfigError(f"quality.spatial_radius: the CUDA spatial step supports 1-16, got "
                          f"{radius}")
    tc = min(terms, BIL_TERMS_PER_LAUNCH)
    for bx, by in _BIL_BLOCKS:
        tile = (bx + 2 * radius) * (by + 2 * radius)
        if 4 * tile * (3 + groups + tc) <= STATIC_SHARED_LIMIT:
            break
    else:
        raise ConfigError(f"spatial step: a guide of {groups} groups with radius {radius} "
                          f"does not fit {STATIC_SHARED_LIMIT} bytes of shared memory")
    grid = (-(-cols // bx), -(-rows // by), 1)
    out, t0 = [], 0
    while True:
        n = min(tc, terms - t0)
        out.append(BilateralLaunch(grid, (bx, by, 1), 4 * tile * (3 + groups + n), t0, n))
        t0 += n
        if t0 >= terms:
            return out


def spatial_weights(params) -> np.ndarray:
    """The (2r + 1)**2 spatial weights, float32 of bilateral_filter's own ``exp``."""
    r = params.radius
    return np.array([np.float32(np.exp(-(dy * dy + dx * dx) / (2.0 * params.sigma_s ** 2)))
                     for dy in range(-r, r + 1) for dx in range(-r, r + 1)], np.float32)


def range_factor(params, groups: int) -> np.float32:
    """``1 / (2 h**2 G)`` as bilateral_filter rounds it."""
    return np.float32(1.0 / (2.0 * params.h ** 2 * groups))


def filter_mask(values: np.ndarray, variance: np.ndarray | None,
                valid: np.ndarray) -> np.ndarray:
    """Pixels that enter the spatial step (bilateral_filter's ``ok``), as uint8."""
    ok = valid & np.isfinite(values)
    if variance is not None:
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(variance) & (variance > 0)
    return np.ascontiguousarray(ok, np.uint8)


def quality_terms(plan) -> tuple[np.ndarray, int, int]:
    """``(ext, G, n)``: the (G + n, bands) float32 rows of the guide's band-group means and
    the StO2 index's ``A''`` terms (none without a spatial or temporal step)."""
    q = plan.quality
    rows, n_guide, n_terms = [], 0, 0
    if getattr(q, "needs_guide", q.spatial != "none"):
        rows.append(plan.guide_terms.T)
        n_guide = plan.guide_terms.shape[1]
        cols = plan.index_minima_cols
        if cols is not None:
            rows.append(plan.index_terms[:, cols].T)
            n_terms = int(cols.size)
    ext = np.concatenate(rows, axis=0) if rows else np.zeros((0, plan.bands))
    return np.ascontiguousarray(ext, np.float32), n_guide, n_terms


def finish_frame(plan, maps_arr: np.ndarray, flags: np.ndarray, s_raw: np.ndarray,
                 var: np.ndarray | None, darkest: np.ndarray, guide: np.ndarray | None,
                 terms: np.ndarray | None, spatial_filter, packed: np.ndarray | None = None,
                 **temporal) -> dict:
    """The host part of the quality step on the device's per-pixel results.

    Parameters
    ----------
    maps_arr : ndarray (6, rows, cols), float32 -- the chain's maps (copied)
    flags : ndarray (rows, cols), uint8 -- the chain's flags; the validity bits are added
    s_raw, darkest : ndarray (rows, cols), float32; var : the same or None
    guide, terms : ndarray (rows, cols, G / n), float32, or None
    spatial_filter : callable with bilateral_filter's arguments and results (the GPU's)
    packed : ndarray (1, channels, rows, cols) or None -- its map channels are rewritten
    temporal : ``temporal``/``stream_key`` for finish_quality (only where the plan has one)

    Returns
    -------
    dict of the maps (``MAP_NAMES`` + ``sto2_sigma``, ``sto2_all``), (rows, cols) float32.
    """
    maps = {n: np.array(maps_arr[i], np.float32) for i, n in enumerate(MAP_NAMES)}
    pixel_flags(plan, flags, maps["thb"], darkest)
    spec = (flags & FLAG_SPECULAR) != 0
    if spec.any():
        for v in maps.values():
            v[spec] = np.nan
    s_raw = np.array(s_raw, np.float32)
    s_raw[(flags & ~FLAG_STO2_ONLY) != 0] = np.nan
    finish_quality(plan, s_raw, var, flags, maps, guide, terms, spatial_filter, **temporal)
    if packed is not None and plan.pack is not None:
        nb_spec = len(plan.pack.spectra_bands)
        for j, name in enumerate(plan.pack.maps):
            v = maps[name]
            packed[0, nb_spec + j] = np.where(np.isfinite(v), v, np.float32(0))
    return maps


class CudaQuality:
    """The quality rules of ``backend.plan`` on the backend's device, stream and buffers."""

    def __init__(self, backend, module) -> None:
        cuda = backend._cuda
        self.be, self.plan, self._mod = backend, backend.plan, module
        q = self.plan.quality
        self.ext, self.n_guide, self.n_terms = quality_terms(self.plan)
        self.m = self.ext.shape[0]
        noise = q.noise
        self.noise = noise
        corr = None if noise is None else noise.correction()
        self._d_ext = cuda.to_device(self.ext) if self.m else None
        self._d_ct = self._d_c_t = None
        if corr is not None:
            self._d_c_t, self._d_ct = (cuda.to_device(a) for a in corr)
        self.spatial = q.spatial != "none"
        self._d_ks = cuda.to_device(spatial_weights(self.plan.bilateral)) if self.spatial \
            else None
        self._temporal = None
        tp = getattr(q, "temporal", None)
        if tp is not None and tp.enabled:
            from edge.processing.temporal import TemporalFilter
            self._temporal = TemporalFilter(tp)
        self._shape = None

    def reset_stream(self) -> None:
        """Forget the temporal step's state (a new stream)."""
        if self._temporal is not None:
            self._temporal.reset()

    def ensure(self, rows: int, cols: int) -> None:
        """Buffers for a (rows, cols) frame (reused while the shape stays)."""
        if self._shape == (rows, cols):
            return
        be, f32 = self.be, np.float32
        self._h_q, self._d_q = be._pair((3, rows, cols), f32)      # s_raw, var, darkest
        self._h_ext = self._d_ext_out = None
        if self.m:
            self._h_ext, self._d_ext_out = be._pair((self.m, rows, cols), f32)
        if self.spatial:
            self._h_fin, self._d_fin = be._pair((2, rows, cols), f32)        # s, var
            self._h_ok, self._d_ok = be._pair((rows, cols), np.uint8)
            self._h_fout, self._d_fout = be._pair((2 + self.n_terms, rows, cols), f32)
        self._shape = (rows, cols)

    def launch_pixel(self, d_refl, d_flags, d_raw, d_dark, npix: int, bands: int,
                     counts: bool) -> None:
        """Queue ``quality_pixel`` and the download of its results on the stream."""
        be, cuda = self.be, self.be._cuda
        counts = counts and self.noise is not None
        ln = pixel_launch(npix, bands, counts)
        plane = npix * 4
        d_q = int(self._d_q)
        self._counts = counts
        k = self.noise.counts_per_electron if counts else 0.0
        r2 = self.noise.read_noise_counts ** 2 if counts else 0.0
        self._mod.get_function("quality_pixel")(
            _p(d_refl), _p(d_flags), _p(d_raw if counts else None),
            _p(d_dark if counts else None), np.int64(npix), np.int32(ln.stride),
            _p(self._d_ext), np.int32(self.m), np.float32(k), np.float32(r2),
            _p(self._d_ct if counts else None), _p(self._d_c_t if counts else None),
            _p(d_q), _p(d_q + plane if counts else None), _p(d_q + 2 * plane),
            _p(self._d_ext_out), grid=ln.grid, block=ln.block, shared=ln.shared,
            stream=be.stream)
        if not be.mapped_host_memory:
            cuda.memcpy_dtoh_async(self._h_q, self._d_q, be.stream)
            if self.m:
                cuda.memcpy_dtoh_async(self._h_ext, self._d_ext_out, be.stream)

    def _filter(self, guide_host):
        """bilateral_filter by ``bilateral_f32`` on the device's guide and terms."""
        be, cuda, s = self.be, self.be._cuda, self.be.stream
        rows, cols = self._shape
        plane = rows * cols * 4
        G, n = self.n_guide, self.n_terms
        fn = self._mod.get_function("bilateral_f32")
        mapped = be.mapped_host_memory

        def run(values, variance, guide, valid, params, terms=None):
            if guide is not guide_host:      # not the device's guide: upload what was given
                self._h_ext[:G] = np.moveaxis(guide, -1, 0)
                if not mapped:
                    cuda.memcpy_htod_async(self._d_ext_out, self._h_ext, s)
            self._h_fin[0] = values
            if variance is not None:
                self._h_fin[1] = variance
            self._h_ok[...] = filter_mask(values, variance, valid)
            if not mapped:
                cuda.memcpy_htod_async(self._d_fin, self._h_fin, s)
                cuda.memcpy_htod_async(self._d_ok, self._h_ok, s)
            d_fin, d_out = int(self._d_fin), int(self._d_fout)
            d_terms = None if terms is None else int(self._d_ext_out) + G * plane
            for i, ln in enumerate(bilateral_launches(rows, cols, params.radius, G,
                                                      0 if terms is None else n)):
                first = i == 0
                fn(_p(d_fin), _p(d_fin + plane if variance is not None else None),
                   _p(self._d_ok), _p(self._d_ext_out), _p(d_terms), np.int32(rows),
                   np.int32(cols), np.int32(G), np.int32(ln.t0), np.int32(ln.tc),
                   np.int32(params.radius), range_factor(params, G), _p(self._d_ks),
                   _p(d_out if first else None),
                   _p(d_out + plane if first and variance is not None else None),
                   _p(d_out + 2 * plane), grid=ln.grid, block=ln.block, shared=ln.shared,
                   stream=s)
            if not mapped:
                cuda.memcpy_dtoh_async(self._h_fout, self._d_fout, s)
            s.synchronize()
            out = self._h_fout
            t = None if terms is None else np.moveaxis(out[2:], 0, -1).copy()
            return out[0].copy(), (out[1].copy() if variance is not None else None), t

        return run

    def finish(self, maps_arr, flags, packed, stream_key) -> tuple[dict, float]:
        """The host part (:func:`finish_frame`) after the stream has synchronised; returns
        the maps and its time (ms).  ``packed``: the host network input, or None."""
        t0 = time.monotonic_ns()
        h = self._h_q
        guide = terms = None
        if self.m:
            guide = np.moveaxis(self._h_ext[:self.n_guide], 0, -1).copy()
            if self.n_terms:
                terms = np.moveaxis(self._h_ext[self.n_guide:], 0, -1).copy()
        spatial = None
        if self.spatial and not self.plan.bilateral.inverse_variance:
            spatial = self._filter(guide)
        temporal = {} if self._temporal is None else \
            {"temporal": self._temporal, "stream_key": stream_key}
        maps = finish_frame(self.plan, maps_arr, flags, h[0], h[1] if self._counts else None,
                            h[2].copy(), guide, terms, spatial, packed, **temporal)
        return maps, (time.monotonic_ns() - t0) / 1e6

    def upload_map_channels(self, maps: dict, d_input, dtype, rows: int, cols: int) -> None:
        """Rewrite the map channels of a device-resident network input from ``maps``."""
        spec = self.plan.pack
        if spec is None or not spec.maps or d_input is None:
            return
        cuda, nb_spec = self.be._cuda, len(spec.spectra_bands)
        planes = np.stack([np.where(np.isfinite(maps[n]), maps[n], np.float32(0))
                           for n in spec.maps]).astype(dtype)
        off = nb_spec * rows * cols * np.dtype(dtype).itemsize
        cuda.memcpy_htod(int(d_input) + off, np.ascontiguousarray(planes))

    def free(self) -> None:
        """Drop every buffer (the backend's context is current)."""
        for name in ("_d_ext", "_d_ct", "_d_c_t", "_d_ks", "_d_q", "_d_ext_out", "_d_fin",
                     "_d_ok", "_d_fout"):
            buf = getattr(self, name, None)
            if hasattr(buf, "free"):
                buf.free()
            setattr(self, name, None)
        self._shape = None
