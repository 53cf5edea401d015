"""Edge-preserving spatial step for StO2 (issue 14, science.md section 3).

Per-pixel unmixing followed by the calibration curve amplifies sensor noise (about 2.5 / 12 /
15 points per pixel for tivita / snapshot16 / snapshot25).  A box filter on the reflectance
cuts that but blurs organ borders (science.md: 9 points at tivita borders); smoothing the
*estimate* with an edge-aware weight keeps the border error close to the interior's.  This is
a joint-bilateral mean over a (2 r + 1)**2 window (r = 3: 7 x 7)::

    a_ij = exp(-|i - j|**2 / (2 sigma_s**2)) * exp(-mean_k (g_ik - g_jk)**2 / (2 h**2)) * valid_j
    s_i' = sum_j a_ij s_j / sum_j a_ij
    var(s_i') = sum_j a_ij**2 var_j / (sum_j a_ij)**2

with ``s`` the raw StO2 (before the calibration curve, so the curve and its slope apply to the
filtered value exactly as to a single pixel), ``var`` its delta-method variance
(:mod:`edge.processing.quality`; pixel noise is independent), and ``g`` the spectral guide: the
mean absorbance over a few contiguous band groups (:func:`guide_groups`; linear in A, so the
NumPy backend gets it from its fused matmul), which differs between organs and with StO2 but
carries far less noise than one band.  The range kernel ``h`` = 0.08 (absorbance) was chosen
on 64x80 simulated scenes (README, "Science and accuracy"): 0.01-0.02 leaves noise edges in
the snapshot maps, 0.04-0.08 gave the lowest error, an infinite ``h`` (a plain Gaussian)
blurred the borders (snapshot16 border error 12.9 against 10.0 points).  Since the StO2 tables
got a THb axis (Dec 2026) ``h`` is chosen per preset with the window (the table's
``spatial_h`` header, ``processing.spatial_h``): 0.05 for snapshot16 and 0.03 for snapshot25,
whose perfusion steps barely move the band-group means (at 0.08 the step averaged across
the malperfused patch's edge: 5.9 points of border error on snapshot25 seed 1, 2.6 at 0.03).

Inverse-variance weights (``w_ij = a_ij / var_j``, :attr:`BilateralParams.inverse_variance`)
are available but off: the variance depends on the noisy estimate itself, and weighting by
it biased snapshot25 by +8.7 points (-0.3 without).

The TIVITA-style StO2 index gets the same treatment (science.md defect 1): its second
derivative terms are averaged with the weights ``a_ij`` (no variance: they have their own)
before the minimum that biases it under noise.

Pixels outside the window's frame, and invalid ones, get weight 0 (the window shrinks at the
frame border and at flagged pixels; no padding values enter).  Which pixels are valid is the
caller's choice: :func:`~edge.processing.quality.finish_quality` lets in only pixels with no
flag, so a ``low_blood`` one (its noise many times its neighbours', and the weights equal)
neither gives nor gets a value and keeps its own raw estimate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPATIAL_METHODS", "BilateralParams", "guide_groups", "bilateral_filter"]

SPATIAL_METHODS = ("none", "bilateral")


class BilateralParams:
    """Window radius (pixels), spatial sigma (pixels) and range kernel ``h`` (absorbance)."""

    def __init__(self, radius: int = 3, sigma_s: float = 2.0, h: float = 0.08,
                 groups: int = 5, inverse_variance: bool = False):
        self.radius, self.sigma_s, self.h, self.groups = int(radius), float(sigma_s), \
            float(h), int(groups)
        self.inverse_variance = bool(inverse_variance)


def guide_groups(bands: int, groups: int = 5) -> np.ndarray:
    """Columns averaging A over ``min(groups, bands)`` contiguous band groups.

    Returns
    -------
    ndarray of shape (bands, G), float64; each column sums to 1.
    """
    g = max(1, min(int(groups), int(bands)))
    edges = np.linspace(0, bands, g + 1).round().astype(int)
    mat = np.zeros((bands, g))
    for j in range(g):
        mat[edges[j]:edges[j + 1], j] = 1.0 / (edges[j + 1] - edges[j])
    return mat


def bilateral_filter(values: np.ndarray, variance: np.ndarray | None, guide: np.ndarray,
                     valid: np.ndarray, params: BilateralParams = BilateralParams(),
                     terms: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Joint-bilateral mean of ``values`` and its propagated variance (module docstring).

    Parameters
    ----------
    values : ndarray of shape (rows, cols), float32
        Raw StO2 (NaN where invalid).
    variance : ndarray of shape (rows, cols), float32, or None
        Its variance (pixels without a finite one are left out); None: no output variance.
    guide : ndarray of shape (rows, cols, G), float32
    valid : ndarray of shape (rows, cols), bool
        Pixels that may enter a neighbour's mean (and get a filtered value).
    terms : ndarray of shape (rows, cols, m), float32, or None
        Further per-pixel terms averaged with the weights ``a_ij`` (the StO2 index's).

    Returns
    -------
    values' : ndarray (rows, cols), float32 -- NaN where not ``valid``
    variance' : ndarray (rows, cols), float32, or None
    terms' : ndarray (rows, cols, m), float32, or None
    """
    rows, cols = values.shape
    r = params.radius
    ok = valid & np.isfinite(values)
    if variance is not None:
        ok &= np.isfinite(variance) & (variance > 0)
    s = np.where(ok, values, 0).astype(np.float32)
    inv = None
    if variance is not None:
        inv = np.zeros((rows, cols), np.float32)
        if params.inverse_variance:
            np.divide(1.0, variance, out=inv, where=ok)
        else:
            inv[ok] = 1.0
    g = np.where(ok[..., None], guide, 0).astype(np.float32)
    t = None if terms is None else np.where(ok[..., None], terms, 0).astype(np.float32)

    def pad(a: np.ndarray) -> np.ndarray:
        width = ((r, r), (r, r)) + ((0, 0),) * (a.ndim - 2)
        return np.pad(a, width)

    s_p, g_p, ok_p = pad(s), pad(g), pad(ok.astype(np.float32))
    inv_p = None if inv is None else pad(inv)
    var_p = None if variance is None else pad(np.where(ok, variance, 0).astype(np.float32))
    t_p = None if t is None else pad(t)
    acc_w = np.zeros((rows, cols), np.float32)
    acc_ws = np.zeros_like(acc_w)
    acc_w2v = None if inv is None else np.zeros_like(acc_w)
    acc_a = None if t is None else np.zeros_like(acc_w)
    acc_at = None if t is None else np.zeros_like(t)
    inv_2h2 = np.float32(1.0 / (2.0 * params.h ** 2 * g.shape[2]))
    d2 = np.empty((rows, cols), np.float32)
    a = np.empty_like(d2)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ks = np.float32(np.exp(-(dy * dy + dx * dx) / (2.0 * params.sigma_s ** 2)))
            win = (slice(r + dy, r + dy + rows), slice(r + dx, r + dx + cols))
            diff = g_p[win] - g
            np.einsum("ijk,ijk->ij", diff, diff, out=d2)
            np.multiply(d2, -inv_2h2, out=a)
            np.exp(a, out=a)
            a *= ks
            a *= ok_p[win]
            if acc_at is not None:
                acc_a += a
                acc_at += a[..., None] * t_p[win]
            w = a if inv_p is None else a * inv_p[win]
            acc_w += w
            acc_ws += w * s_p[win]
            if acc_w2v is not None:
                acc_w2v += w * w * var_p[win]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, acc_ws / acc_w, np.nan).astype(np.float32)
        var = None if acc_w2v is None else \
            np.where(ok, acc_w2v / (acc_w * acc_w), np.nan).astype(np.float32)
        tt = None if acc_at is None else \
            np.where(ok[..., None], acc_at / acc_a[..., None], np.nan).astype(np.float32)
    return out, var, tt
