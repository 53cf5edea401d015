"""Motion-gated recursive temporal step for StO2 on video (issue 14, science.md section 3).

After the spatial step, a pixel's raw StO2 still carries noise that is independent from one
frame to the next.  Averaging it over frames cuts that noise without blurring organ borders,
as long as the same tissue stays under the pixel: the simulated scene breathes (whole-pixel
shifts, 3 px amplitude, 4 s period, ``drivers/sim/scene.py``), and an instrument or a new organ
may slide in.  So the average is *gated*: it restarts where the spectral guide (the band-group
mean absorbance of :mod:`edge.processing.spatial`) changed by more than its noise allows.

Per pixel, with explicit state arrays (``m`` mean raw StO2, ``V`` its variance, ``n`` the
effective number of frames, ``T`` the StO2 index's ``A''`` terms, ``g0`` the previous frame's
guide), for a new frame's ``x`` (raw StO2 after the spatial step), ``v`` (its propagated
variance), ``t`` (index terms) and guide ``g`` (G groups)::

    d2     = mean_k (g_k - g0_k)**2 / s2_k                     (motion statistic, ~1 if static)
    keep   = ok & (n >= 1) & (d2 <= gate)
    n'     = keep ? min(n + 1, N) : (ok ? 1 : 0)
    a      = 1 / n'
    m'     = keep ? m + a (x - m)         : x
    V'     = keep ? (1 - a)**2 V + a**2 v : v
    T'     = keep ? T + a (t - T)         : t
    g0'    = g;  pixels without an estimate (not ``ok``): n' = 0, output = input, g0' = NaN

``N`` (:attr:`TemporalParams.window`) bounds the effective window: for ``n' < N`` ``m'`` is
the plain mean of the frames since the last reset and ``V'`` exactly its variance
(independent frame noise); at ``N`` it becomes an exponential average with weight ``1/N``
whose variance tends to ``v / (2 N - 1)``.  Equal weights, not inverse-variance ones: the
variance depends on the noisy estimate itself, and weighting by it biased snapshot25 in the
spatial step (README, "Science and accuracy").

``s2_k`` is the noise variance of a frame-to-frame guide difference, estimated per frame and
per group robustly from the frame itself: ``median_i (g_ik - g0_ik)**2 / 0.4549`` over the
pixels with state and an estimate in this frame (for a Gaussian difference of variance s2 the median of its square is
0.4549 s2; moving pixels are a minority, so they do not move the median).  With G groups of
independent noise ``G * d2`` is chi-squared with G degrees of freedom; ``gate`` 4 is about its
99.9 % point for G = 5 (20.5 / 5), so a static pixel restarts about once in 1000 frames.
This is the one frame-wide reduction (G medians); a CUDA port may compute it with a
histogram, the rest is a per-pixel blend.

The state belongs to one stream: :class:`TemporalFilter` restarts every pixel when the frame
shape or the exposure changes, and on :meth:`TemporalFilter.reset` (a new stream).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.errors import ConfigError

__all__ = ["TEMPORAL_METHODS", "TemporalParams", "TemporalFilter", "MEDIAN_CHI2_1"]

log = logging.getLogger(__name__)

TEMPORAL_METHODS = ("none", "recursive")
#: Median of a chi-squared variable with one degree of freedom: median(z**2), z ~ N(0, 1).
MEDIAN_CHI2_1 = 0.45493642
#: Fewest pixels with state for a robust noise scale; below it every pixel restarts.
_MIN_SCALE_PIXELS = 16


@dataclass(frozen=True)
class TemporalParams:
    """Settings of the temporal step (``processing.temporal``).

    Attributes
    ----------
    method : {"none", "recursive"}
    window : int
        Bound ``N`` of the effective number of averaged frames, 2-64.
    gate : float
        Motion statistic (mean over guide groups of the squared guide change over its noise
        variance) above which a pixel restarts, in (0, 100].
    """

    method: str = "none"
    window: int = 8
    gate: float = 4.0

    def __post_init__(self) -> None:
        if self.method not in TEMPORAL_METHODS:
            raise ConfigError(f"processing.temporal.method: expected one of "
                              f"{', '.join(TEMPORAL_METHODS)}, got {self.method!r}")
        w = self.window
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or not 2 <= w <= 64:
            raise ConfigError(f"processing.temporal.window: expected an integer in [2, 64], "
                              f"got {w!r}")
        g = self.gate
        if isinstance(g, bool) or not isinstance(g, (int, float, np.floating)) \
                or not (np.isfinite(g) and 0 < g <= 100):
            raise ConfigError(f"processing.temporal.gate: expected a number in (0, 100], got "
                              f"{g!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"


class TemporalFilter:
    """The per-pixel state of one stream and the gated blend (module docstring).

    Parameters
    ----------
    params : TemporalParams
    """

    def __init__(self, params: TemporalParams) -> None:
        self.params = params
        self._key = None
        self.m = self.var = self.n = self.terms = self.guide = None
        #: Share of pixels with an estimate that restarted in the last frame (motion, no
        #: state), for logs and measurements.
        self.last_reset_fraction = float("nan")
        #: The last frame's per-group noise variance of a guide difference (``s2_k``).
        self.last_scale = None

    def reset(self) -> None:
        """Forget every pixel (a new stream)."""
        self._key = None
        self.m = self.var = self.n = self.terms = self.guide = None

    def _ensure(self, key, shape, m_terms: int, groups: int) -> None:
        if key == self._key and self.m is not None:
            return
        if self._key is not None:
            log.info("temporal step: restarting every pixel (frame shape or exposure changed)")
        rows, cols = shape
        self._key = key
        self.m = np.full(shape, np.nan, np.float32)
        self.var = np.full(shape, np.nan, np.float32)
        self.n = np.zeros(shape, np.float32)
        self.terms = np.full((rows, cols, m_terms), np.nan, np.float32)
        self.guide = np.full((rows, cols, groups), np.nan, np.float32)

    def motion_statistic(self, guide: np.ndarray, has_state: np.ndarray) -> np.ndarray:
        """``d2`` per pixel (module docstring); +inf where the scale cannot be estimated.

        Parameters
        ----------
        guide : ndarray (rows, cols, G), float32
        has_state : ndarray (rows, cols), bool -- pixels whose previous guide is valid
        """
        diff = guide - self.guide
        d2k = diff * diff                                   # (rows, cols, G)
        sel = has_state & np.all(np.isfinite(d2k), axis=-1)
        if sel.sum() < _MIN_SCALE_PIXELS:
            self.last_scale = None
            return np.full(has_state.shape, np.inf, np.float32)
        s2 = np.median(d2k[sel], axis=0) / np.float32(MEDIAN_CHI2_1)
        s2 = np.maximum(s2, np.float32(1e-12)).astype(np.float32)
        self.last_scale = s2
        with np.errstate(invalid="ignore"):
            d2 = (d2k / s2).mean(axis=-1)
        return np.where(np.isfinite(d2), d2, np.float32(np.inf)).astype(np.float32)

    def apply(self, values: np.ndarray, variance: np.ndarray | None, guide: np.ndarray,
              ok: np.ndarray, terms: np.ndarray | None = None, key=None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Blend one frame into the state and return the averaged values.

        Parameters
        ----------
        values : ndarray (rows, cols), float32 -- raw StO2 (after the spatial step)
        variance : ndarray (rows, cols), float32, or None -- its variance
        guide : ndarray (rows, cols, G), float32 -- spectral guide of this frame
        ok : ndarray (rows, cols), bool -- pixels with an estimate this frame
        terms : ndarray (rows, cols, m), float32, or None -- StO2 index terms
        key : hashable -- the stream's identity (shape, exposure); a change restarts all

        Returns
        -------
        values', variance', terms' : the blended arrays (same shapes, float32); pixels not
        ``ok`` keep their input.
        """
        rows, cols = values.shape
        m_terms = 0 if terms is None else terms.shape[2]
        self._ensure((key, (rows, cols), m_terms, guide.shape[2]), (rows, cols), m_terms,
                     guide.shape[2])
        p = self.params
        ok = ok & np.isfinite(values)
        if variance is not None:
            with np.errstate(invalid="ignore"):
                ok &= np.isfinite(variance) & (variance >= 0)
        has_state = self.n >= 1
        # Only pixels with an estimate now and before enter the scale (backends differ in
        # what they leave in the guide of flagged pixels).
        d2 = self.motion_statistic(guide, has_state & ok)
        keep = ok & has_state & (d2 <= np.float32(p.gate))
        n_new = np.where(keep, np.minimum(self.n + 1, np.float32(p.window)),
                         np.where(ok, np.float32(1), np.float32(0))).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(n_new > 0, np.float32(1) / n_new, np.float32(0)).astype(np.float32)
            m_new = np.where(keep, self.m + a * (values - self.m), values).astype(np.float32)
            v_out = None
            if variance is not None:
                b = np.float32(1) - a
                v_new = np.where(keep, b * b * self.var + a * a * variance, variance)
                v_out = np.where(ok, v_new, variance).astype(np.float32)
                self.var = np.where(ok, v_new, np.float32(np.nan)).astype(np.float32)
            t_out = None
            if terms is not None:
                t_new = np.where(keep[..., None],
                                 self.terms + a[..., None] * (terms - self.terms), terms)
                t_out = np.where(ok[..., None], t_new, terms).astype(np.float32)
                self.terms = np.where(ok[..., None], t_new, np.float32(np.nan)).astype(np.float32)
        self.m = np.where(ok, m_new, np.float32(np.nan)).astype(np.float32)
        self.n = n_new
        self.guide = np.where(ok[..., None], guide, np.float32(np.nan)).astype(np.float32)
        n_ok = int(ok.sum())
        self.last_reset_fraction = float((ok & ~keep).sum() / n_ok) if n_ok else float("nan")
        return np.where(ok, m_new, values).astype(np.float32), v_out, t_out
