"""The StO2 quality step of the CUDA backend (issue 14; :mod:`edge.processing.quality`).

After the fused chain (``chain.cu``, which then always writes the reflectance to the device),
the kernels of ``cuda_kernels/quality.cu`` run on the same stream:

- ``quality_pixel``: per pixel, from the chain's reflectance, flags and THb and the raw
  counts: raw StO2, its delta-method variance (through the mosaic's crosstalk correction when
  the noise model has one), the spatial step's guide (band-group means of A) and the StO2
  index's ``A''`` terms, and the specular / low-blood bits (``quality_math.cuh``; the native
  pass ``cpu_quality.h`` computes the same formulas);
- ``bilateral_f32``: the joint-bilateral spatial step as 2-D tiles with a halo of
  ``radius`` pixels in shared memory (:func:`bilateral_launches`);
- ``quality_finish_*``: the rest of :func:`~edge.processing.quality.finish_quality` per pixel
  (the calibration curve, its slope and sigma, ``FLAG_UNCERTAIN``, the masks, the network
  input's map channels), so only the final maps and flags leave the device.

Two parts of ``finish_quality`` are frame-wide host code that the kernels do not have: the
motion-gated temporal step (a per-stream state blended between the spatial step and the
calibration curve) and a fitted guide-contrast model error.  A plan with either
(:func:`host_finish_reason`) gets the device's per-pixel results and runs ``finish_quality``
itself on the host (:func:`finish_frame`) with the spatial step still on the GPU (its
``spatial_filter`` hook); that path costs a download of the per-pixel planes and about 75 ms
of NumPy per 480x640 frame on a 2-core x86 (cuda_kernels/MEMORY.md).

:func:`pixel_launch`, :func:`bilateral_launches`, :func:`finish_frame` and the small helpers
need no PyCUDA (tests/cuda run them with the kernels emulated on the CPU); :class:`CudaQuality`
does, and is made only by :class:`~edge.backends.cuda.CudaBackend`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from edge.backends.cuda_ops import _p
from edge.backends.cuda_quality_launch import (BIL_TERMS_PER_LAUNCH, BilateralLaunch,
                                               bilateral_launches, finish_launch, pixel_launch,
                                               quality_bytes, range_factor, spatial_weights)
from edge.core.chain import FLAG_SPECULAR, MAP_NAMES
from edge.processing.quality import finish_quality, model_error, row_slopes

__all__ = ["pixel_launch", "bilateral_launches", "BilateralLaunch", "spatial_weights",
           "range_factor", "filter_mask", "quality_terms", "finish_frame", "CudaQuality",
           "BIL_TERMS_PER_LAUNCH", "quality_bytes", "host_finish_reason", "knot_slopes",
           "rule_limits", "finish_launch"]

log = logging.getLogger(__name__)

def host_finish_reason(plan) -> str | None:
    """Why ``plan``'s finish must run on the host (None: the GPU finish kernel has it all)."""
    q = plan.quality
    if q.temporal.enabled:
        return "the temporal step"
    if q.spatial != "none" and plan.registration_gain != 1.0:
        return "the band registration's correlated noise in the spatial step"
    if q.spatial != "none" and plan.bilateral.inverse_variance:
        return "inverse-variance weights in the spatial step"
    if q.model_sigma is None:
        fitted = model_error(plan.calibration)
        if fitted is not None and fitted[1] > 0:
            return "the fitted guide-contrast model error"
    return None


def knot_slopes(calibration) -> np.ndarray:
    """The kernels' ``slopes`` table: :func:`~edge.processing.quality.row_slopes`, the slope of
    every knot interval of every row, (n_rows, n_table - 1) float32 C-contiguous (one row for
    a one-dimensional table); ``q_slope`` blends two rows by the pixel's THb as
    ``calibration_slope`` does."""
    return np.ascontiguousarray(row_slopes(calibration), np.float32)


def rule_limits(plan) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """``(spec_level, thb_min, max_sigma, model2)`` as the kernels take them: a rule that is
    off is +inf / -inf / +inf; ``model2 = float32(model_sigma**2)`` as finish_quality."""
    q, inf = plan.quality, np.float32(np.inf)
    spec = inf if q.specular_min_reflectance is None else np.float32(q.specular_min_reflectance)
    thb = -inf if plan.thb_min is None else np.float32(plan.thb_min)
    top = inf if q.max_sigma is None else np.float32(q.max_sigma)
    return spec, thb, top, np.float32((plan.model_sigma or 0.0) ** 2)


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
    if q.needs_guide:
        rows.append(plan.guide_terms.T)
        n_guide = plan.guide_terms.shape[1]
        cols = plan.index_minima_cols
        if cols is not None:
            rows.append(plan.index_terms[:, cols].T)
            n_terms = int(cols.size)
    ext = np.concatenate(rows, axis=0) if rows else np.zeros((0, plan.bands))
    return np.ascontiguousarray(ext, np.float32), n_guide, n_terms


def finish_frame(plan, maps_arr: np.ndarray, flags: np.ndarray, s_raw: np.ndarray,
                 var: np.ndarray | None, guide: np.ndarray | None, terms: np.ndarray | None,
                 spatial_filter, packed: np.ndarray | None = None, **temporal) -> dict:
    """The host finish (:func:`host_finish_reason`) on the device's per-pixel results.

    Parameters
    ----------
    maps_arr : ndarray (6, rows, cols), float32 -- the chain's maps (copied)
    flags : ndarray (rows, cols), uint8 -- with quality_pixel's specular and low-blood bits;
        ``FLAG_UNCERTAIN`` is added
    s_raw : ndarray (rows, cols), float32 -- quality_pixel's (NaN where flagged)
    var : the same or None
    guide, terms : ndarray (rows, cols, G / n), float32, or None
    spatial_filter : callable with bilateral_filter's arguments and results (the GPU's)
    packed : ndarray (1, channels, rows, cols) or None -- its map channels are rewritten
    temporal : ``temporal``/``stream_key`` for finish_quality (only where the plan has one)

    Returns
    -------
    dict of the maps (``MAP_NAMES`` + ``sto2_sigma``, ``sto2_all``), (rows, cols) float32.
    """
    maps = {n: np.array(maps_arr[i], np.float32) for i, n in enumerate(MAP_NAMES)}
    spec = (flags & FLAG_SPECULAR) != 0
    if spec.any():
        for v in maps.values():
            v[spec] = np.nan
    finish_quality(plan, np.array(s_raw, np.float32), var, flags, maps, guide, terms,
                   spatial_filter, **temporal)
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
        self.noise = q.noise
        corr = None if q.noise is None else q.noise.correction()
        self._d_ext = cuda.to_device(self.ext) if self.m else None
        self._d_ct = self._d_c_t = None
        if corr is not None:
            self._d_c_t, self._d_ct = (cuda.to_device(a) for a in corr)
        self.spatial = q.spatial != "none"
        self._d_ks = cuda.to_device(spatial_weights(self.plan.bilateral)) if self.spatial \
            else None
        self._d_slopes = cuda.to_device(knot_slopes(self.plan.calibration))
        self.limits = rule_limits(self.plan)
        self.host_reason = host_finish_reason(self.plan)
        #: The whole finish runs on the device (else finish_quality on the host).
        self.on_device = self.host_reason is None
        if not self.on_device:
            log.info("cuda quality step: the finish runs on the host (%s)", self.host_reason)
        self._temporal = None
        if q.temporal.enabled:
            from edge.processing.temporal import TemporalFilter
            self._temporal = TemporalFilter(q.temporal)
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
        self._h_q, self._d_q = be._pair((2, rows, cols), f32)           # s_raw, var
        self._h_ok, self._d_ok = be._pair((rows, cols), np.uint8)
        self._h_out, self._d_out = be._pair((2, rows, cols), f32)       # sigma, sto2_all
        self._h_ext = self._d_ext_out = self._h_fout = self._d_fout = None
        if self.m:
            self._h_ext, self._d_ext_out = be._pair((self.m, rows, cols), f32)
        if self.spatial:
            self._h_fin, self._d_fin = be._pair((2, rows, cols), f32)   # host path: s, var
            self._h_fout, self._d_fout = be._pair((2 + self.n_terms, rows, cols), f32)
        self._shape = (rows, cols)

    def launch(self, d_refl, d_flags, d_maps, d_raw, d_dark, d_input, npix: int,
               bands: int, counts: bool, packed_dtype) -> None:
        """Queue the quality kernels after the chain, and the downloads the finish needs."""
        be, cuda, st = self.be, self.be._cuda, self.be.stream
        counts = counts and self.noise is not None
        self._counts = counts
        ln = pixel_launch(npix, bands, counts)
        plane = npix * 4
        d_q = int(self._d_q)
        k = self.noise.counts_per_electron if counts else 0.0
        r2 = self.noise.read_noise_counts ** 2 if counts else 0.0
        spec, thb_min, max_sigma, model2 = self.limits
        self._mod.get_function("quality_pixel")(
            _p(d_refl), _p(d_flags), _p(d_maps), _p(d_raw if counts else None),
            _p(d_dark if counts else None), np.int64(npix), np.int32(ln.stride),
            _p(self._d_ext), np.int32(self.m), np.float32(k), np.float32(r2),
            _p(self._d_ct if counts else None), _p(self._d_c_t if counts else None), spec,
            thb_min, _p(d_q), _p(d_q + plane if counts else None), _p(self._d_ext_out),
            _p(self._d_ok), grid=ln.grid, block=ln.block, shared=ln.shared, stream=st)
        mapped = be.mapped_host_memory
        if not self.on_device:
            if not mapped:
                cuda.memcpy_dtoh_async(self._h_q, self._d_q, st)
                if self.m:
                    cuda.memcpy_dtoh_async(self._h_ext, self._d_ext_out, st)
            return
        rows, cols = self._shape
        d_out = d_sf = d_vf = d_tf = d_traw = None
        if self.spatial:
            d_out = int(self._d_fout)
            d_sf, d_tf = d_out, (d_out + 2 * plane if self.n_terms else None)
            if self.n_terms:        # a low-blood pixel's own index terms (not averaged)
                d_traw = int(self._d_ext_out) + self.n_guide * plane
            d_vf = d_out + plane if counts else None
            self._bilateral(d_q, d_q + plane if counts else None, self._d_ok, rows, cols,
                            self.n_terms, d_out, counts)
        fl = finish_launch(npix)
        kernel = "quality_finish_f16" if np.dtype(packed_dtype) == np.float16 \
            else "quality_finish_f32"
        d_o = int(self._d_out)
        n1 = self.plan.index_layout["r1"].stop - self.plan.index_layout["r1"].start
        self._mod.get_function(kernel)(
            _p(d_q), _p(d_q + plane if counts else None), _p(d_sf), _p(d_vf), _p(d_tf),
            _p(d_traw), _p(self._d_ok), np.int32(self.n_terms), np.int32(n1), _p(self._d_slopes),
            max_sigma, model2, np.int64(npix), _p(d_flags), _p(d_maps), _p(d_o),
            _p(d_o + plane), _p(d_input), grid=fl.grid, block=fl.block, stream=st)
        if not mapped:
            cuda.memcpy_dtoh_async(self._h_out, self._d_out, st)

    def _bilateral(self, d_s, d_var, d_ok, rows, cols, n_terms, d_out, with_var) -> None:
        """Queue the spatial step's launches (value and variance by the first)."""
        params, G = self.plan.bilateral, self.n_guide
        plane = rows * cols * 4
        d_terms = None if not n_terms else int(self._d_ext_out) + G * plane
        fn = self._mod.get_function("bilateral_f32")
        for i, ln in enumerate(bilateral_launches(rows, cols, params.radius, G, n_terms)):
            first = i == 0
            fn(_p(d_s), _p(d_var), _p(d_ok), _p(self._d_ext_out), _p(d_terms),
               np.int32(rows), np.int32(cols), np.int32(G), np.int32(ln.t0), np.int32(ln.tc),
               np.int32(params.radius), range_factor(params, G), _p(self._d_ks),
               _p(d_out if first else None), _p(d_out + plane if first and with_var else None),
               _p(d_out + 2 * plane), grid=ln.grid, block=ln.block, shared=ln.shared,
               stream=self.be.stream)

    def _filter(self, guide_host):
        """bilateral_filter by ``bilateral_f32`` on the device's guide and terms (host
        finish's ``spatial_filter``)."""
        be, cuda, st = self.be, self.be._cuda, self.be.stream
        rows, cols = self._shape
        plane = rows * cols * 4
        G = self.n_guide
        mapped = be.mapped_host_memory

        def run(values, variance, guide, valid, params, terms=None):
            if guide is not guide_host:      # not the device's guide: upload what was given
                self._h_ext[:G] = np.moveaxis(guide, -1, 0)
                if not mapped:
                    cuda.memcpy_htod_async(self._d_ext_out, self._h_ext, st)
            self._h_fin[0] = values
            if variance is not None:
                self._h_fin[1] = variance
            self._h_ok[...] = filter_mask(values, variance, valid)
            if not mapped:
                cuda.memcpy_htod_async(self._d_fin, self._h_fin, st)
                cuda.memcpy_htod_async(self._d_ok, self._h_ok, st)
            d_fin = int(self._d_fin)
            self._bilateral(d_fin, d_fin + plane if variance is not None else None, self._d_ok,
                            rows, cols, 0 if terms is None else self.n_terms,
                            int(self._d_fout), variance is not None)
            if not mapped:
                cuda.memcpy_dtoh_async(self._h_fout, self._d_fout, st)
            st.synchronize()
            out = self._h_fout
            t = None if terms is None else np.moveaxis(out[2:], 0, -1).copy()
            return out[0].copy(), (out[1].copy() if variance is not None else None), t

        return run

    def finish(self, maps_arr, flags, packed, stream_key) -> tuple[dict, float]:
        """The maps after the stream has synchronised, and the host time (ms) it took.

        ``maps_arr``/``flags``: the downloaded maps and flags (final on the device path;
        ``flags`` is updated in place on the host path); ``packed``: the host network input
        (final on the device path, its map channels rewritten on the host path) or None."""
        t0 = time.monotonic_ns()
        if self.on_device:
            maps = {n: maps_arr[i].copy() for i, n in enumerate(MAP_NAMES)}
            maps["sto2_sigma"] = self._h_out[0].copy()
            maps["sto2_all"] = self._h_out[1].copy()
            return maps, (time.monotonic_ns() - t0) / 1e6
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
        maps = finish_frame(self.plan, maps_arr, flags, self._h_q[0],
                            self._h_q[1] if self._counts else None, guide, terms, spatial,
                            packed, **temporal)
        return maps, (time.monotonic_ns() - t0) / 1e6

    def upload_map_channels(self, maps: dict, d_input, dtype, rows: int, cols: int) -> None:
        """Rewrite the map channels of a device-resident network input from ``maps`` (host
        finish only: the device finish writes them itself)."""
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
        for name in ("_d_ext", "_d_ct", "_d_c_t", "_d_ks", "_d_slopes", "_d_q", "_d_ok",
                     "_d_out", "_d_ext_out", "_d_fin", "_d_fout"):
            buf = getattr(self, name, None)
            if hasattr(buf, "free"):
                buf.free()
            setattr(self, name, None)
        self._shape = None
