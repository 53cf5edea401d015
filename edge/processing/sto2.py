"""Calibrated StO2: a monotone curve raw -> true fitted on simulated spectra.

Plain linear unmixing (:class:`edge.processing.unmixing.Unmixer`) of diffusion-model spectra
gives a raw StO2 ``c_HbO2 / (c_HbO2 + c_Hb)`` that is strongly correlated with the true StO2
but biased by 15-29 points on the 100-band grid (FACTS.md, "Tissue optics").  We simulate
spectra with the physics forward model (``edge.physics.tissue_reflectance``: Jacques 2013
absorption mix, power-law scattering, Farrell 1992 diffuse reflectance, band-integrated with
the camera's Gaussian FWHM) over the physiological ranges of :class:`SimulationRanges`,
unmix them, fit true-vs-raw with isotonic regression (pool-adjacent-violators, Ayer et al.
1955 / Barlow et al. 1972; SciPy's implementation) and turn the step function into a smooth monotone table of 256
knots on a uniform ``sto2_raw`` grid (moving average of the interpolated step function, which
keeps monotonicity), clipped to [0, 1].

Applying the table is a linear interpolation on the uniform grid, clamped at the ends -- the
exact arithmetic of :meth:`Sto2Calibration.apply` is what the GPU kernel implements with
``table_y`` in constant memory.  The accuracy holds inside the model only (FACTS.md).

Tables for the camera presets ship as CSV in ``edge/processing/data/`` (regenerate with
``tools/fit_sto2_calibration.py``); any other grid is fitted on demand and cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.core.frame import validate_wavelengths
from edge.errors import CalibrationError
from edge.processing.unmixing import Unmixer, recommended_basis, recommended_components

__all__ = ["SimulationRanges", "Sto2Calibration", "simulate_spectra", "isotonic_regression",
           "estimate_sto2", "evaluate_sto2", "CALIBRATION_VERSION", "table_from_pairs",
           "MAX_THB_ROWS", "table_2d_from_pairs"]

log = logging.getLogger(__name__)

#: Bumped whenever the fitting procedure changes (tables carry it in their header).
CALIBRATION_VERSION = 1
KNOTS = 256
#: Most rows of a table's THb axis (``HSI_MAX_TABLE_ROWS`` of the kernels).
MAX_THB_ROWS = 16
_SMOOTH = 9            # moving-average width (knots) applied to the isotonic step function
_CHUNK = 2000          # spectra per forward-model call (bounds memory on fine grids)


@dataclass(frozen=True)
class SimulationRanges:
    """Uniform sampling ranges of the forward-model parameters (FACTS.md, Jacques 2013).

    Scattering: a' = 18.9 ± 10.2 cm⁻¹, b = 1.286 ± 0.521 (soft tissue mean ± SD).
    """

    sto2: tuple[float, float] = (0.0, 1.0)
    blood_volume: tuple[float, float] = (0.005, 0.065)
    water: tuple[float, float] = (0.5, 0.8)
    fat: tuple[float, float] = (0.0, 0.3)
    melanin: tuple[float, float] = (0.0, 0.0)
    scatter_a: tuple[float, float] = (18.9 - 10.2, 18.9 + 10.2)
    scatter_b: tuple[float, float] = (1.286 - 0.521, 1.286 + 0.521)


def simulate_spectra(wavelengths_nm, n: int, seed: int, *,
                     ranges: SimulationRanges = SimulationRanges(),
                     fwhm_nm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` tissue parameter sets uniformly in ``ranges`` and simulate their spectra.

    Returns
    -------
    reflectance : ndarray (n, bands), float32
    sto2 : ndarray (n,), float64 -- ground truth
    """
    from edge import physics

    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    rng = np.random.default_rng(seed)
    params = {f.name: rng.uniform(*getattr(ranges, f.name), size=int(n))
              for f in dataclasses.fields(ranges)}
    out = np.empty((int(n), wl.size), dtype=np.float32)
    for s in range(0, int(n), _CHUNK):
        sl = slice(s, min(s + _CHUNK, int(n)))
        out[sl] = physics.tissue_reflectance(wl, fwhm_nm=fwhm_nm,
                                             **{k: v[sl] for k, v in params.items()})
    return out, params["sto2"]


def isotonic_regression(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Non-decreasing least-squares fit to ``y`` (already ordered by x).

    SciPy's pool-adjacent-violators (``scipy.optimize.isotonic_regression``, SciPy >= 1.12).
    It replaced a Python PAVA loop: on the shipped tables' fits (20,000 spectra per preset)
    the two differ by at most 4.4e-16 with the same blocks, and the refitted tables are
    identical to the shipped ones.

    Parameters
    ----------
    y : ndarray (n,), float
    w : ndarray (n,), float > 0, optional -- weights

    Returns
    -------
    ndarray (n,), float64, non-decreasing, minimising ``sum w (y - fit)^2``.
    """
    from scipy.optimize import isotonic_regression as _pava   # SciPy is imported on use

    y = np.asarray(y, dtype=np.float64)
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != y.shape or not np.all(np.isfinite(w) & (w > 0)):
            raise CalibrationError(f"w: expected {y.size} finite weights > 0, got shape "
                                   f"{w.shape}")
    return np.asarray(_pava(y, weights=w, increasing=True).x, dtype=np.float64)


def _components(wl: np.ndarray, chromophores, baseline) -> tuple[tuple, tuple]:
    """Resolve None to :func:`~edge.processing.unmixing.recommended_components` for the grid."""
    rec_c, rec_b = recommended_components(wl)
    return (tuple(rec_c if chromophores is None else chromophores),
            tuple(rec_b if baseline is None else baseline))


def _key(wl: np.ndarray, fwhm_nm, chromophores, baseline, eps: float,
         basis: str = "extinction") -> str:
    spec = {"wl": [round(float(v), 6) for v in wl],
            "fwhm_nm": None if fwhm_nm is None else round(float(fwhm_nm), 6),
            "chromophores": list(chromophores), "baseline": list(baseline),
            "eps": float(eps), "version": CALIBRATION_VERSION}
    if basis != "extinction":       # keys of tables made before the basis kinds stay valid
        spec["basis"] = basis
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def table_from_pairs(raw: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotone calibration table from (raw StO2, true StO2) pairs.

    Isotonic regression of truth on raw; :data:`KNOTS` knots over the central 99.8 % of raw
    values (outside, the table clamps); the step function interpolated through its block
    centres (mean raw of each block); a ``_SMOOTH``-knot moving average; clipped to [0, 1].

    Parameters
    ----------
    raw, truth : ndarray (n,)
        Finite raw StO2 estimates and the true StO2 of the same spectra.

    Returns
    -------
    (x, y) : two ndarrays (KNOTS,), float64
        Knot positions (raw StO2) and calibrated StO2, non-decreasing.
    """
    raw = np.asarray(raw, dtype=np.float64)
    order = np.argsort(raw, kind="stable")
    raw, fitted = raw[order], isotonic_regression(np.asarray(truth)[order])
    lo, hi = np.quantile(raw, [0.001, 0.999])
    x = np.linspace(lo, hi, KNOTS)
    change = np.flatnonzero(np.diff(fitted) > 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [raw.size]])
    cx = np.array([raw[s:e].mean() for s, e in zip(starts, ends)])
    y = np.interp(x, cx, fitted[starts])
    pad = _SMOOTH // 2
    y = np.convolve(np.pad(y, pad, mode="edge"), np.ones(_SMOOTH) / _SMOOTH, mode="valid")
    y = np.maximum.accumulate(np.clip(y, 0.0, 1.0))   # guard rounding; already monotone
    return x, y


def table_2d_from_pairs(raw: np.ndarray, thb: np.ndarray, truth: np.ndarray,
                        rows: int = MAX_THB_ROWS
                        ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A table with a THb axis from (raw StO2, THb, true StO2) triples.

    The raw -> true curve depends on the blood volume: a pathlength basis linearised at the
    reference tissue reads low-blood, fat-rich tissue 4-9 points off (issue 14, fat at 0.5-0.8 %
    blood), which one curve over the whole prior cannot follow.  Rows are spaced uniformly in
    ``sqrt(THb)`` between the 0.5 % and 99.5 % quantiles of the triples (the axis is sqrt so
    every backend computes the position exactly: IEEE ``sqrt`` is correctly rounded, ``log``
    is not); row ``j`` is :func:`table_from_pairs` of the triples within 1.5 row steps of its
    THb, resampled onto one knot grid (the central 99.8 % of all raw values).

    Parameters
    ----------
    raw, thb, truth : ndarray (n,)
        Finite raw StO2, THb > 0 and true StO2 of the same spectra.
    rows : int, 2..MAX_THB_ROWS

    Returns
    -------
    (x, y, thb_axis) : ndarray (KNOTS,), ndarray (rows, KNOTS), (sqrt_thb_first, step)
    """
    raw = np.asarray(raw, dtype=np.float64)
    q = np.sqrt(np.asarray(thb, dtype=np.float64))
    truth = np.asarray(truth, dtype=np.float64)
    if not 2 <= int(rows) <= MAX_THB_ROWS:
        raise CalibrationError(f"rows: expected 2..{MAX_THB_ROWS}, got {rows!r}")
    rows = int(rows)
    q0, q1 = np.quantile(q, [0.005, 0.995])
    dq = float(np.float32((q1 - q0) / (rows - 1)))
    q0 = float(np.float32(q0))
    lo, hi = np.quantile(raw, [0.001, 0.999])
    x = np.linspace(lo, hi, KNOTS)
    y = np.empty((rows, KNOTS))
    for j in range(rows):
        half = 1.5 * dq
        near = np.abs(q - (q0 + j * dq)) < half
        while near.sum() < 400 and half < (q1 - q0) * 4:   # thin ends: widen the window
            half *= 1.5
            near = np.abs(q - (q0 + j * dq)) < half
        if near.sum() < 100:
            raise CalibrationError(f"StO2 calibration: only {int(near.sum())} spectra near "
                                   f"THb row {j}; simulate more")
        xj, yj = table_from_pairs(raw[near], truth[near])
        y[j] = np.interp(x, xj, yj)
    return x, y, (q0, dq)


class Sto2Calibration:
    """A monotone lookup table raw StO2 -> calibrated StO2.

    Attributes
    ----------
    table_x : ndarray (256,), float32 -- uniform grid of raw StO2 values
    table_y : ndarray (256,), float32 -- calibrated StO2 in [0, 1], non-decreasing
    meta : dict of str -- provenance (script, seed, ranges, version, grid, key)
    """

    _cache: dict[str, "Sto2Calibration"] = {}

    def __init__(self, table_x: np.ndarray, table_y: np.ndarray, meta: dict | None = None,
                 thb_axis: tuple[float, float] | None = None):
        x = np.asarray(table_x, dtype=np.float32)
        y = np.asarray(table_y, dtype=np.float32)
        if x.ndim != 1 or x.size < 2 or y.ndim not in (1, 2) or y.shape[-1] != x.size:
            raise CalibrationError(f"table_x/table_y: expected table_x (K,) with K >= 2 and "
                                   f"table_y (K,) or (rows, K), got shapes {x.shape} and "
                                   f"{y.shape}")
        dx = np.diff(x.astype(np.float64))
        if not (np.all(dx > 0) and np.allclose(dx, dx[0], rtol=1e-3)):
            raise CalibrationError("table_x: must be uniformly spaced and ascending")
        if not np.all(np.isfinite(y)) or np.any(np.diff(y, axis=-1) < 0) or y.min() < 0 \
                or y.max() > 1:
            raise CalibrationError("table_y: every row must be non-decreasing and within "
                                   "[0, 1]")
        rows = 1 if y.ndim == 1 else y.shape[0]
        if y.ndim == 2 and not 2 <= rows <= MAX_THB_ROWS:
            raise CalibrationError(f"table_y: a two-dimensional table needs 2..{MAX_THB_ROWS} "
                                   f"rows (THb axis), got {rows}")
        if (thb_axis is None) != (y.ndim == 1):
            raise CalibrationError("thb_axis: expected (sqrt_thb_first, sqrt_thb_step) exactly "
                                   "when table_y has rows (a two-dimensional table)")
        if thb_axis is not None:
            q0, dq = (float(np.float32(v)) for v in thb_axis)
            if not (np.isfinite(q0) and np.isfinite(dq) and q0 >= 0 and dq > 0):
                raise CalibrationError(f"thb_axis: expected a first value >= 0 and a step > 0 "
                                       f"(sqrt of THb), got {thb_axis!r}")
            self._thb_axis = (q0, dq)
        else:
            self._thb_axis = (0.0, 1.0)
        self.table_x, self.table_y = x, y
        self.meta = dict(meta or {})

    @property
    def n_rows(self) -> int:
        """Rows of the table's THb axis (1: a one-dimensional table, THb not used)."""
        return 1 if self.table_y.ndim == 1 else int(self.table_y.shape[0])

    @property
    def n_knots(self) -> int:
        """Knots of the raw StO2 axis."""
        return int(self.table_x.size)

    @property
    def table_grid(self) -> np.ndarray:
        """The table as (n_rows, n_knots) float32 (a view; one row for a 1-D table)."""
        return self.table_y.reshape(self.n_rows, self.n_knots)

    @property
    def thb_x0(self) -> float:
        """sqrt(THb) of row 0 (float32 value; 0.0 for a one-dimensional table)."""
        return self._thb_axis[0]

    @property
    def thb_dx(self) -> float:
        """Step of sqrt(THb) between rows (float32 value; 1.0 for a one-dimensional table)."""
        return self._thb_axis[1]

    def replace(self, *, table_y: np.ndarray | None = None,
                meta: dict | None = None) -> "Sto2Calibration":
        """A copy with another ``table_y`` (same shape) and/or ``meta``; knots and THb axis
        kept."""
        y = self.table_y if table_y is None else np.asarray(table_y)
        if y.shape != self.table_y.shape:
            raise CalibrationError(f"table_y: expected shape {self.table_y.shape}, got "
                                   f"{y.shape}")
        return Sto2Calibration(self.table_x, y, self.meta if meta is None else meta,
                               thb_axis=self._thb_axis if self.n_rows > 1 else None)

    def thb_position(self, thb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row index ``j`` (intp) and weight ``g`` (float32) of each THb on the table's axis:
        ``q = sqrt(max(thb, 0)); u = clip((q - q0) / dq, 0, R-1); j = min(floor(u), R-2);
        g = u - j`` in float32 (non-finite THb gives row 0, weight 0: the caller NaNs it).
        Only for two-dimensional tables."""
        th = np.asarray(thb, dtype=np.float32)
        ok = np.isfinite(th)
        q = np.sqrt(np.where(ok & (th > 0), th, np.float32(0)))
        u = (q - np.float32(self.thb_x0)) / np.float32(self.thb_dx)
        u = np.clip(u, np.float32(0), np.float32(self.n_rows - 1))
        j = np.minimum(np.floor(u).astype(np.intp), self.n_rows - 2)
        g = np.where(ok, u - j.astype(np.float32), np.float32(0)).astype(np.float32)
        return j, g

    @property
    def noise_scale(self) -> float | None:
        """The sensor noise the table was fitted at, times one frame's (0: noise-free): its
        ``noise_scale`` header (``tools/fit_sto2_calibration.py --noise-scale``); None when
        the table has none (an on-demand fit: noise-free)."""
        v = self._header_number("noise_scale", 0.0, 1e3)
        return None if v is None else float(v)

    @property
    def spatial_radius(self) -> int | None:
        """The spatial step's window half-width chosen with this table (``spatial_radius``
        header, 1-8 pixels; ``processing.spatial_radius: null`` takes it); None when the
        table has none."""
        v = self._header_number("spatial_radius", 1, 8)
        if v is not None and v != int(v):
            raise CalibrationError(f"StO2 table: spatial_radius header must be an integer in "
                                   f"[1, 8], got {self.meta['spatial_radius']!r}")
        return None if v is None else int(v)

    @property
    def spatial_h(self) -> float | None:
        """The spatial step's range kernel ``h`` (absorbance) chosen with this table
        (``spatial_h`` header, 0.005-1; ``processing.spatial_h: null`` takes it); None when
        the table has none (the chain then uses 0.08)."""
        return self._header_number("spatial_h", 0.005, 1.0)

    def _header_number(self, key: str, lo: float, hi: float) -> float | None:
        text = self.meta.get(key)
        if text is None:
            return None
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not (np.isfinite(v) and lo <= v <= hi):
            raise CalibrationError(f"StO2 table: {key} header must be a number in [{lo:g}, "
                                   f"{hi:g}], got {text!r}")
        return v

    @property
    def x0(self) -> float:
        return float(self.table_x[0])

    @property
    def dx(self) -> float:
        """Knot spacing (float32 arithmetic of the kernel: ``(x1 - x0) / (n - 1)``)."""
        return float(np.float32((self.table_x[-1] - self.table_x[0]) / (self.table_x.size - 1)))

    def apply(self, sto2_raw: np.ndarray, thb: np.ndarray | None = None) -> np.ndarray:
        """Calibrate raw StO2 by linear interpolation in the table (clamped at the ends).

        In float32, every step rounded: ``t = clip((x - x0) / dx, 0, K-1); i = min(floor(t),
        K-2); f = t - i; row(j) = Y[j, i] + f * (Y[j, i+1] - Y[j, i])``.  A one-dimensional
        table returns ``row(0)``; a two-dimensional one interpolates between rows on its THb
        axis (:meth:`thb_position`): ``row(j) + g * (row(j+1) - row(j))``.  The C++/CUDA twin
        is ``sto2_calibrate`` in ``cuda_kernels/pixel_math.cuh``.

        Parameters
        ----------
        sto2_raw : ndarray (...,), float
        thb : ndarray (...,), float, optional
            The pixels' THb (the unmixing's ``c_HbO2 + c_Hb``, the ``thb`` map); required by a
            two-dimensional table, ignored by a one-dimensional one.

        Returns
        -------
        ndarray (...,), float32 in [0, 1]; NaN where ``sto2_raw`` (or, for a 2-D table,
        ``thb``) is not finite.
        """
        x = np.asarray(sto2_raw, dtype=np.float32)
        n, grid = self.n_knots, self.table_grid
        finite = np.isfinite(x)
        t = (np.where(finite, x, np.float32(self.x0)) - np.float32(self.x0)) / np.float32(self.dx)
        t = np.clip(t, np.float32(0), np.float32(n - 1))
        i = np.minimum(np.floor(t).astype(np.intp), n - 2)
        f = t - i.astype(np.float32)

        def row(j):
            y0, y1 = grid[j, i], grid[j, i + 1]
            return y0 + f * (y1 - y0)

        if self.n_rows == 1:
            y = row(0)
        else:
            if thb is None:
                raise CalibrationError("thb: this StO2 table has a THb axis "
                                       f"({self.n_rows} rows); pass the pixels' THb")
            th = np.asarray(thb, dtype=np.float32)
            if th.shape != x.shape:
                th = np.broadcast_to(th, x.shape)
            j, g = self.thb_position(th)
            a = row(j)
            y = a + g * (row(j + 1) - a)
            finite = finite & np.isfinite(th)
        return np.where(finite, y, np.float32(np.nan)).astype(np.float32)

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(cls, wavelengths_nm, *, fwhm_nm: float | None = None,
            chromophores: Sequence[str] | None = None,
            baseline: Sequence[str] | None = None, eps: float = 1e-4,
            n: int = 4000, seed: int = 0,
            ranges: SimulationRanges = SimulationRanges(),
            basis: str | None = None) -> "Sto2Calibration":
        """Fit a table on ``n`` simulated spectra (see module docstring).

        ``chromophores``/``baseline`` None: :func:`recommended_components` of the grid;
        ``basis`` None: :func:`~edge.processing.unmixing.recommended_basis`.
        """
        wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
        chromophores, baseline = _components(wl, chromophores, baseline)
        unmixer = Unmixer(wl, chromophores, baseline, fwhm_nm=fwhm_nm, eps=eps, basis=basis)
        refl, truth = simulate_spectra(wl, n, seed, ranges=ranges, fwhm_nm=fwhm_nm)
        raw = unmixer.maps(refl)["sto2_raw"].astype(np.float64)
        ok = np.isfinite(raw)
        if ok.sum() < 100:
            raise CalibrationError(f"StO2 calibration: only {int(ok.sum())} of {n} simulated "
                                   "spectra unmix to a positive haemoglobin total; the grid "
                                   "cannot resolve HbO2/Hb")
        x, y = table_from_pairs(raw[ok], truth[ok])
        meta = {"version": str(CALIBRATION_VERSION), "n_spectra": str(n), "seed": str(seed),
                "fwhm_nm": str(fwhm_nm), "chromophores": " ".join(unmixer.chromophores),
                "baseline": " ".join(unmixer.baseline), "eps": repr(float(eps)),
                "ranges": json.dumps(dataclasses.asdict(ranges)),
                "bands": str(wl.size), "range_nm": f"{wl[0]:g}-{wl[-1]:g}",
                "basis": unmixer.basis_kind,
                "key": _key(wl, fwhm_nm, unmixer.chromophores, unmixer.baseline, eps,
                            unmixer.basis_kind)}
        return cls(x, y, meta)

    # ---- files -------------------------------------------------------------------------
    def to_csv(self, path: str | Path, header: Sequence[str] = ()) -> None:
        """Write ``sto2_raw,sto2`` rows after ``#`` comment lines (header, then ``meta``).

        A two-dimensional table writes a ``thb_axis: sqrt <q0> <dq>`` line (its THb axis in
        sqrt(THb)) and one column per row: ``sto2_raw,sto2[0],...,sto2[R-1]``."""
        lines = [f"# {h}" for h in header]
        lines += [f"# {k}: {v}" for k, v in self.meta.items() if k != "thb_axis"]
        grid = self.table_grid
        if self.n_rows > 1:
            lines.append(f"# thb_axis: sqrt {self.thb_x0:.9g} {self.thb_dx:.9g}")
            lines.append("sto2_raw," + ",".join(f"sto2[{j}]" for j in range(self.n_rows)))
        else:
            lines.append("sto2_raw,sto2")
        lines += [f"{x:.9g}," + ",".join(f"{v:.9g}" for v in grid[:, i])
                  for i, x in enumerate(self.table_x)]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def from_csv_text(cls, text: str, source: str = "<text>") -> "Sto2Calibration":
        meta, rows = {}, []
        for ln in text.splitlines():
            if ln.startswith("#"):
                k, sep, v = ln[1:].partition(":")
                if sep and k.strip().isidentifier():   # "key: value" provenance lines
                    meta[k.strip()] = v.strip()
            elif ln.strip() and not ln.startswith("sto2_raw"):
                try:
                    rows.append([float(v) for v in ln.split(",")])
                except ValueError as exc:
                    raise CalibrationError(f"{source}: bad table row {ln!r}") from exc
        text = meta.pop("thb_axis", None)
        axis = None
        if text is not None:
            parts = text.split()
            try:
                if len(parts) != 3 or parts[0] != "sqrt":
                    raise ValueError(text)
                axis = (float(parts[1]), float(parts[2]))
            except ValueError:
                raise CalibrationError(f"{source}: thb_axis header: expected 'sqrt <first> "
                                       f"<step>', got {text!r}") from None
        widths = {len(r) for r in rows}
        if len(widths) != 1 or widths != ({2} if axis is None else widths) or min(widths) < 2:
            raise CalibrationError(f"{source}: expected rows 'sto2_raw,sto2' (or, with a "
                                   "thb_axis header, 'sto2_raw,sto2[0],...' of equal length)")
        arr = np.asarray(rows)
        if axis is None:
            return cls(arr[:, 0], arr[:, 1], meta)
        return cls(arr[:, 0], arr[:, 1:].T, meta, thb_axis=axis)

    @classmethod
    def from_csv(cls, path: str | Path) -> "Sto2Calibration":
        return cls.from_csv_text(Path(path).read_text(encoding="utf-8"), str(path))

    # ---- choosing a table (processing.sto2_table) ---------------------------------------
    #: Where the table came from, for provenance (:meth:`describe`): ``shipped <file>``, the
    #: CSV path :meth:`select` read, or "" (fitted on demand, or built in code).
    source: str = ""
    #: Shipped variant tables by grid key, then by variant name (filled on first use).
    _variants: dict[str, dict[str, "Sto2Calibration"]] | None = None

    @property
    def variant(self) -> str | None:
        """The header's ``variant`` (``human``: fitted on the prior with pigment); None for a
        preset's base table."""
        return self.meta.get("variant") or None

    def describe(self) -> str:
        """One line naming the table for provenance (metrics.json ``sto2_table``):
        ``<shipped file, path or 'fitted for this grid'>[, variant <name>]``."""
        text = self.source or f"fitted for this grid (key {self.meta.get('key', '?')})"
        return text + (f", variant {self.variant}" if self.variant else "")

    @classmethod
    def shipped(cls) -> dict[str, "Sto2Calibration"]:
        """The tables in ``edge/processing/data/sto2_*.csv``, by file stem without ``sto2_``
        (base tables and variants such as ``snapshot25_human``)."""
        out = {}
        for f in resources.files("edge.processing").joinpath("data").iterdir():
            if f.name.startswith("sto2_") and f.name.endswith(".csv"):
                cal = cls.from_csv_text(f.read_text("utf-8"), f.name)
                cal.source = f"shipped {f.name}"
                out[f.name[5:-4]] = cal
        return out

    @classmethod
    def _grid_key(cls, wavelengths_nm, fwhm_nm, chromophores, baseline, eps, basis
                  ) -> tuple[np.ndarray, tuple, tuple, str, str]:
        """``(wl, chromophores, baseline, basis, key)`` with None resolved as the unmixer does."""
        wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
        chromophores, baseline = _components(wl, chromophores, baseline)
        basis = recommended_basis(wl) if basis is None else basis
        return wl, chromophores, baseline, basis, _key(wl, fwhm_nm, chromophores, baseline,
                                                       eps, basis)

    @classmethod
    def for_grid(cls, wavelengths_nm, *, fwhm_nm: float | None = None,
                 chromophores: Sequence[str] | None = None,
                 baseline: Sequence[str] | None = None,
                 eps: float = 1e-4, basis: str | None = None) -> "Sto2Calibration":
        """The base table for this grid and unmixer: shipped if one matches, else fitted and
        cached.  Variants (a ``variant`` header) share their base table's key and are never
        picked here (:meth:`select` names them).

        On-demand fits use 4000 spectra (seed 0, default ranges), about a second, and log a
        warning because the table is not one that was reviewed and shipped.
        """
        wl, chromophores, baseline, basis, key = cls._grid_key(
            wavelengths_nm, fwhm_nm, chromophores, baseline, eps, basis)
        if key not in cls._cache:
            for cal in cls.shipped().values():
                if cal.variant is None:
                    cls._cache.setdefault(cal.meta.get("key", ""), cal)
        if key not in cls._cache:
            log.warning("no shipped StO2 calibration for this grid (%d bands, %g-%g nm, "
                        "fwhm %s nm, key %s); fitting one on simulated spectra",
                        wl.size, wl[0], wl[-1], fwhm_nm, key)
            cls._cache[key] = cls.fit(wl, fwhm_nm=fwhm_nm, chromophores=chromophores,
                                      baseline=baseline, eps=eps, basis=basis)
        return cls._cache[key]

    @classmethod
    def select(cls, wavelengths_nm, *, fwhm_nm: float | None = None,
               chromophores: Sequence[str] | None = None,
               baseline: Sequence[str] | None = None, eps: float = 1e-4,
               basis: str | None = None, table: str | Path | None = None
               ) -> "Sto2Calibration":
        """The table ``processing.sto2_table`` chooses for this grid and unmixer.

        Parameters
        ----------
        wavelengths_nm : array_like (bands,)
        fwhm_nm, chromophores, baseline, eps, basis
            The unmixer, as :meth:`for_grid`.
        table : str, path or None
            None: :meth:`for_grid` (the grid's base table).  A name without ``.csv`` (e.g.
            ``human``): the shipped table whose ``key`` header is this grid's and whose
            ``variant`` header is the name.  A path ending in ``.csv`` (relative: to the
            working directory): a table written by ``tools/fit_sto2_calibration.py`` or
            :meth:`to_csv`, whose ``key`` header must be this grid's.

        Raises
        ------
        CalibrationError
            One line naming ``processing.sto2_table``: an unknown variant (with the ones
            shipped for this grid), a missing, unreadable or corrupt file, or a table fitted
            for another grid or unmixer.
        """
        if table is None:
            return cls.for_grid(wavelengths_nm, fwhm_nm=fwhm_nm, chromophores=chromophores,
                                baseline=baseline, eps=eps, basis=basis)
        wl, chromophores, baseline, basis, key = cls._grid_key(
            wavelengths_nm, fwhm_nm, chromophores, baseline, eps, basis)
        grid = (f"{wl.size} bands, {wl[0]:g}-{wl[-1]:g} nm, fwhm "
                f"{'none' if fwhm_nm is None else f'{float(fwhm_nm):g}'} nm, "
                f"{' '.join(chromophores)} + {' '.join(baseline)} ({basis})")
        text = str(table)
        if not text.lower().endswith(".csv"):
            if cls._variants is None:
                found: dict[str, dict[str, Sto2Calibration]] = {}
                for cal in cls.shipped().values():
                    if cal.variant is not None:
                        found.setdefault(cal.meta.get("key", ""), {})[cal.variant] = cal
                cls._variants = found
            mine = cls._variants.get(key, {})
            if text not in mine:
                raise CalibrationError(
                    f"processing.sto2_table: no shipped table {text!r} for this grid "
                    f"({wl.size} bands, {wl[0]:g}-{wl[-1]:g} nm); shipped: "
                    f"{', '.join(sorted(mine)) or 'none'} (or null: the base table, or a "
                    f"path to a .csv table)")
            return mine[text]
        path = Path(text)
        try:
            cal = cls.from_csv(path)
        except FileNotFoundError:
            raise CalibrationError(f"processing.sto2_table: {path}: table file not "
                                   f"found") from None
        except UnicodeDecodeError:
            raise CalibrationError(f"processing.sto2_table: {path}: cannot read the table: "
                                   f"not UTF-8 text") from None
        except OSError as exc:
            raise CalibrationError(f"processing.sto2_table: {path}: cannot read the table: "
                                   f"{exc.strerror or exc}") from None
        except CalibrationError as exc:
            msg = str(exc)
            msg = msg if msg.startswith(str(path)) else f"{path}: {msg}"
            raise CalibrationError(f"processing.sto2_table: {msg}") from None
        theirs = cal.meta.get("key")
        if theirs != key:
            m = cal.meta
            header = (f"{m.get('bands', '?')} bands, {m.get('range_nm', '?')} nm, fwhm "
                      f"{m.get('fwhm_nm', '?')} nm, {m.get('chromophores', '?')} + "
                      f"{m.get('baseline', '?')} ({m.get('basis', 'extinction')})")
            why = ("its header has no 'key:' line (write tables with "
                   "tools/fit_sto2_calibration.py or Sto2Calibration.to_csv)" if theirs is None
                   else f"it was fitted for another grid or unmixer: its header {header}, "
                        f"this camera {grid}")
            raise CalibrationError(f"processing.sto2_table: {path}: {why}")
        cal.source = str(path.resolve())
        return cal

def estimate_sto2(reflectance: np.ndarray, wavelengths_nm, *, fwhm_nm: float | None = None,
                  chromophores: Sequence[str] | None = None,
                  baseline: Sequence[str] | None = None,
                  basis: str | None = None) -> np.ndarray:
    """Calibrated StO2 from reflectance.

    Parameters
    ----------
    reflectance : ndarray (..., bands), float
    wavelengths_nm : ndarray (bands,)
    fwhm_nm : float, optional -- band FWHM (must match the shipped table to use it)
    chromophores, baseline : sequence of str, optional
        Unmixing components; None: ``recommended_components(wavelengths_nm)``.
    basis : {"extinction", "pathlength"} or None
        Kind of chromophore columns; None: ``recommended_basis(wavelengths_nm)``.

    Returns
    -------
    ndarray (...,), float32 in [0, 1]; NaN where the input is non-finite or thb <= 0.
    """
    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    chromophores, baseline = _components(wl, chromophores, baseline)
    unmixer = Unmixer(wl, chromophores, baseline, fwhm_nm=fwhm_nm, basis=basis)
    cal = Sto2Calibration.for_grid(unmixer.wavelengths, fwhm_nm=fwhm_nm,
                                   chromophores=chromophores, baseline=baseline,
                                   basis=unmixer.basis_kind)
    m = unmixer.maps(reflectance)
    return cal.apply(m["sto2_raw"], m["thb"])


def evaluate_sto2(wavelengths_nm, calibration: Sto2Calibration | None = None, *,
                  fwhm_nm: float | None = None,
                  chromophores: Sequence[str] | None = None,
                  baseline: Sequence[str] | None = None, n: int = 4000, seed: int = 12345,
                  ranges: SimulationRanges = SimulationRanges(),
                  basis: str | None = None) -> dict[str, float]:
    """Accuracy of calibrated StO2 on fresh simulated spectra (seed differs from the fit's).

    Returns
    -------
    dict with, in percentage points (100 x fraction): ``mae``, ``bias`` (mean of
    estimate - truth), ``p90_abs_err``, ``mae_raw`` and ``bias_raw`` (uncalibrated), and
    ``invalid_fraction`` (NaN estimates, fraction of n).
    """
    wl = validate_wavelengths(wavelengths_nm, name="wavelengths_nm")
    chromophores, baseline = _components(wl, chromophores, baseline)
    unmixer = Unmixer(wl, chromophores, baseline, fwhm_nm=fwhm_nm, basis=basis)
    if calibration is None:
        calibration = Sto2Calibration.for_grid(unmixer.wavelengths, fwhm_nm=fwhm_nm,
                                               chromophores=chromophores, baseline=baseline,
                                               basis=unmixer.basis_kind)
    refl, truth = simulate_spectra(unmixer.wavelengths, n, seed, ranges=ranges, fwhm_nm=fwhm_nm)
    m = unmixer.maps(refl)
    raw = m["sto2_raw"]
    est = calibration.apply(raw, m["thb"]).astype(np.float64)
    ok = np.isfinite(est)
    if not ok.any():
        raise CalibrationError("evaluate_sto2: every simulated spectrum was invalid")
    err = (est[ok] - truth[ok]) * 100.0
    err_raw = (raw[ok].astype(np.float64) - truth[ok]) * 100.0
    return {"mae": float(np.mean(np.abs(err))), "bias": float(np.mean(err)),
            "p90_abs_err": float(np.quantile(np.abs(err), 0.9)),
            "mae_raw": float(np.mean(np.abs(err_raw))), "bias_raw": float(np.mean(err_raw)),
            "invalid_fraction": float(1.0 - ok.mean())}
