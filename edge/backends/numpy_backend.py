"""The NumPy backend: the reference per-pixel chain, blocked and fused for speed.

``run`` processes the frame in blocks of rows small enough to stay in cache, doing every step
per block with preallocated buffers:

1. calibrate   ``(raw - dark) * scale`` with the FlatField's float32 arrays, written in place
               into the reflectance output (the arithmetic of ``FlatField.apply``, so results
               are bit-identical to it);
2. unmix       ``log(max(R, eps))`` in place, then ONE matmul with ``M = -[P.T | L]`` where P
               is the unmixing pseudo-inverse and L the linear part of the TIVITA-style indices
               (window means and Savitzky-Golay 2nd derivatives,
               :func:`edge.processing.indices.index_linear_terms`) -- all are linear in A;
3. maps        thb, raw and calibrated StO2, and the index ratios from the matmul columns;
4. pack        L1-normalised selected bands written transposed into the NCHW input.

With quality rules in the plan (issue 14, :mod:`edge.processing.quality`) each block also
gets the delta-method variance of raw StO2 (one (bands, 3) matmul on ``var(A)``), the
specular and low-blood bits, and -- for the spatial step -- the band-group guide (extra
columns of the fused matmul) and the StO2 index's ``A''`` terms; after the blocks,
:func:`~edge.processing.quality.finish_quality` runs the frame-wide part (the 7x7 spatial
step needs every block's neighbours), adds ``sto2_sigma``/``sto2_all`` and
``FLAG_UNCERTAIN``, and the map channels of the network input are written then.

:meth:`NumpyBackend.run_reference` does the same by calling the public functions one by one
on the whole frame (slow, obviously right); tests check both agree.

The configuration -- and the frame check and exposure factor every backend applies -- is a
:class:`~edge.processing.plan.ChainPlan`; this backend is only the reference arithmetic over
it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from edge.backends.base import Backend, resolve_plan
from edge.core.chain import (FLAG_MAPS_ONLY, FLAG_SATURATED, FLAG_SPECULAR, FLAG_STO2_ONLY,
                             FLAG_UNMIX_INVALID, MAP_NAMES, QUALITY_MAP_NAMES, ChainResult)
from edge.errors import DataFormatError
from edge.processing.indices import indices_from_terms, tivita_indices
from edge.processing.pack import pack_input
from edge.processing.plan import ChainPlan, pass_through
from edge.processing.quality import (absorbance_variance, finish_quality, pixel_flags,
                                     sto2_raw_variance, sto2_raw_variance_mixed)

__all__ = ["NumpyBackend", "MAP_NAMES"]

log = logging.getLogger(__name__)
#: float32 reflectance per block: ~4 MiB. Smaller blocks make OpenBLAS sgemm calls
#: overhead-bound (4 rows of 640x100: 25x slower per element on a 2-core EPYC); 4 MiB stays
#: well inside L3.
_BLOCK_BYTES = 4 << 20


def _as_slice(sel: np.ndarray | None) -> slice | None:
    """``sel`` as an equivalent slice when its indices are evenly spaced and ascending."""
    if sel is None or sel.size == 0:
        return None
    if sel.size == 1:
        return slice(int(sel[0]), int(sel[0]) + 1)
    step = int(sel[1] - sel[0])
    if step > 0 and np.all(np.diff(sel) == step):
        return slice(int(sel[0]), int(sel[-1]) + 1, step)
    return None


class NumpyBackend(Backend):
    """Reference backend (see module docstring): the plan's chain in NumPy.

    Parameters
    ----------
    plan : ChainPlan or array_like (bands,)
        The configuration to run, or the wavelengths (nm) to build it from with ``**config``
        (:meth:`ChainPlan.build`: ``flatfield``, ``chromophores``, ``baseline``, ``fwhm_nm``,
        ``eps``, ``index_params``, ``pack``, ``calibration``).
    block_rows : int or None
        Rows per block; None: about 4 MiB of float32 reflectance per block.
    """

    name = "numpy"

    def __init__(self, plan: ChainPlan | Sequence[float] | np.ndarray, *,
                 block_rows: int | None = None, **config: Any):
        self.plan = resolve_plan(plan, config, backend=self.name)
        if block_rows is not None and int(block_rows) < 1:
            raise DataFormatError(f"block_rows: expected an integer >= 1 or None, "
                                  f"got {block_rows!r}")
        self.block_rows = block_rows
        p = self.plan
        self._k = len(p.unmixer.components)
        self._layout = p.index_layout
        # Fused matrix on log(R): A = -log(R), so both parts get a minus sign.
        cols = [p.unmixer.pinv.T.astype(np.float64), p.index_terms]
        # The spectral guide of the spatial and temporal steps (issue 14).
        self._spatial = p.quality is not None and p.quality.needs_guide
        # Per-stream temporal state, one for run() and one for run_reference() so that a
        # check calling both on one backend does not feed each frame twice.
        self._temporal = self._temporal_ref = None
        if p.quality is not None and p.quality.temporal.enabled:
            from edge.processing.temporal import TemporalFilter
            self._temporal = TemporalFilter(p.quality.temporal)
            self._temporal_ref = TemporalFilter(p.quality.temporal)
        if self._spatial:
            cols.append(p.guide_terms)        # the spatial step's guide, also linear in A
        self._mat = np.ascontiguousarray(-np.concatenate(cols, axis=1), dtype=np.float32)
        wl = p.wavelengths
        self._grid_key = ("grid", wl.size, round(float(wl[0]), 3), round(float(wl[-1]), 3))

    def reset_stream(self) -> None:
        """Forget the temporal step's state (a new stream: its next frame starts afresh)."""
        for state in (self._temporal, self._temporal_ref):
            if state is not None:
                state.reset()

    # ---- straightforward reference --------------------------------------------------------
    def run_reference(self, raw: np.ndarray, *, exposure_us: float) -> ChainResult:
        """The chain by calling the public functions one by one on the whole frame."""
        raw = self.plan.register(self.plan.check_raw(raw))
        refl, flags = self.plan.calibrate(raw, exposure_us)
        um = self.unmixer.maps(refl)
        maps = {"sto2": self.calibration.apply(um["sto2_raw"], um["thb"]), "thb": um["thb"]}
        maps.update(tivita_indices(refl, self.wavelengths, self.index_params))
        flags = flags | np.where((flags == 0) & ~np.isfinite(um["thb"]), FLAG_UNMIX_INVALID,
                                 np.uint8(0)).astype(np.uint8)
        q = self.plan.quality
        if q is not None:
            with np.errstate(invalid="ignore"):
                pixel_flags(self.plan, flags, um["thb"], np.min(refl, axis=-1))
        for m in maps.values():
            m[(flags & ~FLAG_STO2_ONLY) != 0] = np.nan
        names = MAP_NAMES
        if q is not None:
            self._reference_quality(raw, refl, flags, um, maps, exposure_us)
            names = MAP_NAMES + QUALITY_MAP_NAMES
        packed = None
        if self.pack is not None:
            packed = pack_input(refl, [maps[n] for n in self.pack.maps], self.pack)
            # The network sees "no signal" where the reflectance is unusable; pixels flagged
            # only FLAG_MAPS_ONLY bits (no haemoglobin: drape, instruments; low blood,
            # uncertain, specular) keep their spectra so the network can classify them
            # (their maps are NaN and pack as 0).
            packed[0, :, (flags & ~FLAG_MAPS_ONLY) != 0] = 0
        return ChainResult(maps={n: maps[n] for n in names}, flags=flags, input=packed,
                           reflectance=refl)

    def _reference_quality(self, raw, refl, flags, um, maps, exposure_us) -> None:
        """The quality step on the whole frame with the public functions (run_reference)."""
        p = self.plan
        ff, var = p.flatfield, None
        s_raw = np.where((flags & ~FLAG_STO2_ONLY) == 0, um["sto2_raw"], np.float32(np.nan))
        if p.quality.noise is not None and ff is not None and np.asarray(raw).dtype != np.float32:
            c = p.unmixer.unmix(refl)
            rows, cols, bands = refl.shape
            c_o = c[..., p.unmixer.i_hbo2].reshape(-1)
            c_d = c[..., p.unmixer.i_hb].reshape(-1)
            if p.quality.noise.correction() is None:
                v = absorbance_variance(raw, ff.dark, p.quality.noise)
                var = sto2_raw_variance(c_o, c_d, v.reshape(-1, bands) @ p.sigma_weights)
            else:
                signal = np.subtract(raw, ff.dark, dtype=np.float32).reshape(-1, bands)
                var = sto2_raw_variance_mixed(c_o, c_d, signal, p.unmixer.pinv,
                                              p.unmixer.i_hbo2, p.unmixer.i_hb, p.quality.noise)
            var = var.reshape(rows, cols)
        guide = terms = None
        if self._spatial:
            a = np.where(np.isfinite(refl), -np.log(np.maximum(refl, np.float32(p.eps))), 0)
            guide = (a.astype(np.float64) @ p.guide_terms).astype(np.float32)
            sel = p.index_minima_cols
            if sel is not None:
                terms = (a.astype(np.float64) @ p.index_terms[:, sel]).astype(np.float32)
        finish_quality(p, s_raw, var, flags, maps, guide, terms, temporal=self._temporal_ref,
                       stream_key=exposure_us)

    # ---- fused, blocked path ----------------------------------------------------------------
    def run(self, raw: np.ndarray, *, exposure_us: float) -> ChainResult:
        raw, reg_ms = self.checked_frame(raw)
        rows, cols, bands = raw.shape
        factor = np.float32(self.plan.exposure_factor(raw, exposure_us))
        step = self.block_rows or max(1, _BLOCK_BYTES // max(1, cols * bands * 4))
        k, lay, mat = self._k, self._layout, self._mat
        eps = np.float32(self.unmixer.eps)
        refl = np.empty((rows, cols, bands), np.float32)
        flags = np.empty((rows, cols), np.uint8)
        maps = {n: np.empty((rows, cols), np.float32) for n in MAP_NAMES}
        spec = self.pack
        packed = None if spec is None else np.empty((1, spec.channels, rows, cols), spec.dtype)
        sel = None if spec is None or not spec.spectra_bands else np.asarray(spec.spectra_bands)
        # Evenly spaced bands (e.g. every 4th) are a strided view: no gather copy per block.
        sel_view = _as_slice(sel)
        npix_max = step * cols
        a_buf = np.empty((npix_max, bands), np.float32)
        y_buf = np.empty((npix_max, mat.shape[1]), np.float32)
        l1_buf = None if sel is None else np.empty((npix_max, sel.size), np.float32)
        t = dict.fromkeys(("calibrate", "unmix", "indices", "pack"), 0)
        i_o, i_d = self.unmixer.i_hbo2, self.unmixer.i_hb
        q = self.plan.quality
        if q is not None:
            t["quality"] = 0
            ff = self.flatfield
            noisy = q.noise is not None and ff is not None and raw.dtype != np.float32
            s_raw = np.empty((rows, cols), np.float32)
            var = np.empty((rows, cols), np.float32) if noisy else None
            m_idx = self.plan.index_terms.shape[1]
            sel_r = self.plan.index_minima_cols
            guide = terms_r = None
            if self._spatial:
                guide = np.empty((rows, cols, mat.shape[1] - k - m_idx), np.float32)
                if sel_r is not None:
                    sel_r = sel_r + k
                    terms_r = np.empty((rows, cols, sel_r.size), np.float32)
        for r0 in range(0, rows, step):
            r1 = min(r0 + step, rows)
            n = (r1 - r0) * cols
            t0 = time.monotonic_ns()
            rb = refl[r0:r1]
            if self.flatfield is None or raw.dtype == np.float32:
                rb[...], fb = pass_through(raw[r0:r1])
            else:
                # Exactly FlatField.apply's arithmetic (R = (I - D) * scale, flagged -> NaN),
                # written into the output in place; tests check bit-identity with apply().
                ff = self.flatfield
                np.subtract(raw[r0:r1], ff.dark[r0:r1], out=rb, dtype=np.float32)
                np.multiply(rb, ff.scale[r0:r1], out=rb)
                if factor != 1:
                    np.multiply(rb, factor, out=rb)
                fb = ff.static_flags[r0:r1].copy()
                fb[raw[r0:r1].max(axis=2) >= ff.saturation] |= FLAG_SATURATED
                flagged = fb != 0
                if flagged.any():
                    rb[flagged] = np.nan
            r2 = rb.reshape(n, bands)
            t1 = time.monotonic_ns()
            a = a_buf[:n]
            np.maximum(r2, eps, out=a)
            np.log(a, out=a)
            y = np.matmul(a, mat, out=y_buf[:n])
            t2 = time.monotonic_ns()
            bad = fb.reshape(n) != 0
            thb = y[:, i_o] + y[:, i_d]
            # Out of the unmixing domain: no haemoglobin, or a band at the absorbance floor
            # (R <= eps, unmixing.floored; NaN pixels are already in `bad`).
            with np.errstate(invalid="ignore"):
                darkest = r2.min(axis=1)
                at_floor = darkest <= eps
            invalid = ~bad & (~(thb > 0) | at_floor)
            fb.reshape(n)[invalid] |= FLAG_UNMIX_INVALID
            bad |= invalid
            with np.errstate(divide="ignore", invalid="ignore"):
                sto2_raw = y[:, i_o] / thb
            if q is not None:
                fbn = fb.reshape(n)
                pixel_flags(self.plan, fbn, thb, darkest)
                bad |= (fbn & FLAG_SPECULAR) != 0
                s_raw[r0:r1] = np.where(bad, np.float32(np.nan), sto2_raw).reshape(r1 - r0, cols)
                if noisy:
                    raw_b = raw[r0:r1].reshape(n, bands)
                    dark_b = ff.dark[r0:r1].reshape(n, bands)
                    if q.noise.correction() is None:
                        v = absorbance_variance(raw_b, dark_b, q.noise)
                        vs = sto2_raw_variance(y[:, i_o], y[:, i_d], v @ self.plan.sigma_weights)
                    else:
                        vs = sto2_raw_variance_mixed(
                            y[:, i_o], y[:, i_d], np.subtract(raw_b, dark_b, dtype=np.float32),
                            self.unmixer.pinv, i_o, i_d, q.noise)
                    var[r0:r1] = vs.reshape(r1 - r0, cols)
                if guide is not None:
                    guide[r0:r1] = y[:, k + m_idx:].reshape(r1 - r0, cols, -1)
                    if terms_r is not None:
                        terms_r[r0:r1] = y[:, sel_r].reshape(r1 - r0, cols, -1)
            res = {"sto2": self.calibration.apply(sto2_raw, thb), "thb": thb}
            res.update(indices_from_terms(y[:, k:k + self.plan.index_terms.shape[1]], lay,
                                          self.index_params, self._grid_key))
            for name in MAP_NAMES:
                v = res[name]
                v[bad] = np.nan
                maps[name][r0:r1] = v.reshape(r1 - r0, cols)
            flags[r0:r1] = fb
            t3 = time.monotonic_ns()
            if spec is not None:
                nb = 0 if sel is None else sel.size
                if nb:
                    src = r2[:, sel_view] if sel_view is not None else r2[:, sel]
                    l1 = l1_buf[:n]
                    np.abs(src, out=l1)
                    norm = l1.sum(axis=1)
                    pos = norm > 0
                    inv = np.zeros_like(norm)
                    np.divide(1.0, norm, out=inv, where=pos)
                    np.multiply(src, inv[:, None], out=l1)
                    # Pixels with unusable reflectance (calibration flags) and 0/0 -> 0.
                    # FLAG_MAPS_ONLY pixels (drape, instruments: no haemoglobin; low blood,
                    # uncertain, specular) keep their spectra: the network must see them to
                    # classify them (edge.core.chain).
                    l1[(fb.reshape(n) & ~FLAG_MAPS_ONLY) != 0] = 0.0
                    l1[~pos] = 0.0
                    packed[0, :nb, r0:r1, :] = l1.reshape(r1 - r0, cols, nb).transpose(2, 0, 1)
                if q is None:
                    self._pack_maps(packed, maps, slice(r0, r1))
            t4 = time.monotonic_ns()
            for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                t[key] += dt
        if q is not None:
            t0 = time.monotonic_ns()
            finish_quality(self.plan, s_raw, var, flags, maps, guide, terms_r,
                           temporal=self._temporal, stream_key=exposure_us)
            if spec is not None:
                self._pack_maps(packed, maps, slice(0, rows))
            t["quality"] += time.monotonic_ns() - t0
        timings = {key: v / 1e6 for key, v in t.items()}
        if reg_ms is not None:
            timings["register"] = reg_ms
        return ChainResult(maps=maps, flags=flags, input=packed, reflectance=refl,
                           timings_ms=timings)

    def _pack_maps(self, packed: np.ndarray, maps: dict, rows: slice) -> None:
        """The map channels of the network input (NaN -> 0) for a range of rows."""
        nb = len(self.pack.spectra_bands)
        for j, name in enumerate(self.pack.maps):
            v = maps[name][rows]
            packed[0, nb + j, rows] = np.where(np.isfinite(v), v, np.float32(0))
