"""The StO2 quality step of the native backend (issue 14; :mod:`edge.processing.quality`).

After the fused chain, ``hsi_cpu_quality`` (``cuda_kernels/cpu_quality.h``) makes the per-pixel
inputs -- raw StO2, its delta-method variance from the raw counts, the darkest band, the
spatial step's guide and the StO2 index's second-derivative terms -- and the frame-wide part
(validity bits, the spatial step, the motion-gated temporal step with its per-stream state
held here, the calibration curve and sigma) is
:func:`~edge.processing.quality.finish_quality`, the NumPy reference's own code.  The map
channels of the network input are then rewritten from the final maps.
"""

from __future__ import annotations

import numpy as np

from edge.core.chain import FLAG_SPECULAR, FLAG_STO2_ONLY, MAP_NAMES
from edge.errors import DataFormatError
from edge.processing.quality import finish_quality, pixel_flags

__all__ = ["NativeQuality"]


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


def _c32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, np.float32)


class NativeQuality:
    """The quality rules of ``plan`` run with the native library ``lib``."""

    def __init__(self, plan, lib) -> None:
        self.plan, self._lib = plan, lib
        u = plan.unmixer
        self._po = np.ascontiguousarray(u.pinv[u.i_hbo2], np.float32)
        self._pd = np.ascontiguousarray(u.pinv[u.i_hb], np.float32)
        ext = []
        # The guide and index terms feed the spatial and the temporal step.
        self._spatial = plan.quality.needs_guide
        self._temporal = None
        if plan.quality.temporal.enabled:
            from edge.processing.temporal import TemporalFilter
            self._temporal = TemporalFilter(plan.quality.temporal)
        self._n_guide = self._n_terms = 0
        if self._spatial:
            ext.append(plan.guide_terms.T)
            self._n_guide = plan.guide_terms.shape[1]
            cols = plan.index_minima_cols
            if cols is not None:
                ext.append(plan.index_terms[:, cols].T)
                self._n_terms = cols.size
        nb = plan.bands
        self._ext = np.ascontiguousarray(np.concatenate(ext, axis=0) if ext
                                         else np.zeros((0, nb)), np.float32)
        noise = plan.quality.noise
        self._noise = noise
        corr = None if noise is None else noise.correction()
        self._c_t, self._ct = (None, None) if corr is None else corr
        # The dark frame, made contiguous once (not per frame).
        self._dark = (None if plan.flatfield is None
                      else np.ascontiguousarray(plan.flatfield.dark, np.float32))

    def reset_stream(self) -> None:
        """Forget the temporal step's state (a new stream)."""
        if self._temporal is not None:
            self._temporal.reset()

    def _filter(self, threads: int):
        """``bilateral_filter`` (edge.processing.spatial) by ``hsi_cpu_bilateral``; which
        pixels enter is ``valid``, finish_quality's (flag-free pixels only)."""
        lib = self._lib

        def run(values, variance, guide, valid, params, terms=None):
            rows, cols = values.shape
            ok = valid & np.isfinite(values)
            if variance is not None:
                with np.errstate(invalid="ignore"):
                    ok &= np.isfinite(variance) & (variance > 0)
            ok8 = np.ascontiguousarray(ok, np.uint8)
            s, v, g, t = _c32(values), _c32(variance), _c32(guide), _c32(terms)
            m = 0 if t is None else t.shape[2]
            s_out = np.empty((rows, cols), np.float32)
            v_out = None if v is None else np.empty((rows, cols), np.float32)
            t_out = None if t is None else np.empty((rows, cols, m), np.float32)
            rc = lib.hsi_cpu_bilateral(
                s.ctypes.data, _ptr(v), g.ctypes.data, ok8.ctypes.data, _ptr(t), rows, cols,
                g.shape[2], m, params.radius, params.sigma_s, params.h, s_out.ctypes.data,
                _ptr(v_out), _ptr(t_out), threads)
            if rc != 0:
                raise DataFormatError(f"native spatial step: rejected its inputs (code {rc})")
            return s_out, v_out, t_out

        return run

    def apply(self, raw: np.ndarray, f32: bool, maps_arr: np.ndarray, flags: np.ndarray,
              refl: np.ndarray, packed: np.ndarray | None, threads: int,
              stream_key=None) -> dict:
        """Finish one frame: ``flags`` gains the validity bits in place; returns the maps
        (``MAP_NAMES`` + ``sto2_sigma``, ``sto2_all``), the network input's map channels
        rewritten.  ``stream_key`` (the exposure) restarts the temporal state when it
        changes."""
        p = self.plan
        rows, cols, nb = refl.shape
        npix = rows * cols
        m = self._ext.shape[0]
        counts = self._noise is not None and not f32 and p.flatfield is not None
        s_raw = np.empty((rows, cols), np.float32)
        darkest = np.empty((rows, cols), np.float32)
        var = np.empty((rows, cols), np.float32) if counts else None
        ext_out = np.empty((rows, cols, m), np.float32)
        dark = self._dark if counts else None
        k = self._noise.counts_per_electron if counts else 0.0
        r2 = self._noise.read_noise_counts ** 2 if counts else 0.0
        rc = self._lib.hsi_cpu_quality(
            refl.ctypes.data, flags.ctypes.data, _ptr(raw) if counts else None, _ptr(dark),
            npix, nb, p.eps, self._po.ctypes.data, self._pd.ctypes.data, self._ext.ctypes.data,
            m, k, r2, _ptr(self._ct) if counts else None, _ptr(self._c_t) if counts else None,
            s_raw.ctypes.data, _ptr(var), darkest.ctypes.data, ext_out.ctypes.data, threads)
        if rc != 0:
            raise DataFormatError(f"native quality pass: rejected its inputs (code {rc})")
        maps = dict(zip(MAP_NAMES, maps_arr))
        pixel_flags(p, flags, maps["thb"], darkest)
        spec = (flags & FLAG_SPECULAR) != 0
        if spec.any():
            for v in maps.values():
                v[spec] = np.nan
        s_raw[(flags & ~FLAG_STO2_ONLY) != 0] = np.nan
        guide = ext_out[..., :self._n_guide] if self._spatial else None
        terms = ext_out[..., self._n_guide:] if self._n_terms else None
        native_filter = None if p.bilateral.inverse_variance else self._filter(threads)
        finish_quality(p, s_raw, var, flags, maps, guide, terms, native_filter,
                       temporal=self._temporal, stream_key=stream_key)
        spec_pack = p.pack
        if packed is not None and spec_pack.maps:
            nb_spec = len(spec_pack.spectra_bands)
            for j, name in enumerate(spec_pack.maps):
                v = maps[name]
                packed[0, nb_spec + j] = np.where(np.isfinite(v), v, np.float32(0))
        return maps
