"""Xeno-learning augmentation: learned perfused → malperfused spectral changes.

The idea of the DKFZ xeno-learning work (FACTS.md, "htc models" and "The science behind the
product"): per organ, learn an affine map ``x·W + b`` from physiological (perfused) to
malperfused L1-normalised spectra on a species where both states were recorded, and during
training apply it to perfused tissue, labelled malperfused, then re-normalise (L1).  The
network then sees malperfusion as a *change* of an organ's spectrum, which transfers between
species better than the absolute spectra of the few malperfused examples.

Here the maps are fitted on pixel pairs: the same simulated view rendered without and with
the malperfused patch (:class:`drivers.sim.scene.SurgicalScene` ``malperfused_patch=False``: the
"before clamping" recording), same seed, frame and sensor noise, so pixel ``(r, c)`` of the
two renders is the same tissue.  The fit is ridge-regularised least squares (solved with
``lstsq`` on an augmented system, never an explicit inverse) shrinking ``W`` towards the
identity ("no change") rather than towards zero, with an unpenalised offset ``b``.

The transfer study (:mod:`.transfer`) uses it two ways: on the source species' own crops
(``l1+xeno``), and -- the paper's setting -- on crops of the *target* species' perfused scenes
only (``l1+xeno-target``: maps fitted on the source, applied to target tissue, so the network
gets synthetic target-species malperfusion; restricted with ``demo.fit(augment_samples=...)``).

Feature vectors may carry extra channels after the spectra (physiology maps such as ``sto2``
and ``thb``); they go through the same affine map (so the maps stay consistent with the
changed spectra) and only the first ``spectral_channels`` are re-L1-normalised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["AffineMap", "fit_affine", "l1_normalise", "pair_features", "XenoAugment"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AffineMap:
    """``y ≈ x·W + b`` for feature rows ``x``.

    Attributes
    ----------
    W : ndarray of shape (channels, channels), float64
    b : ndarray of shape (channels,), float64
    pairs : int
        Number of pixel pairs it was fitted on.
    """

    W: np.ndarray
    b: np.ndarray
    pairs: int = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to rows ``x`` of shape (N, channels) (float64 result)."""
        return np.asarray(x, dtype=np.float64) @ self.W + self.b


def l1_normalise(x: np.ndarray, channels: int) -> np.ndarray:
    """Re-normalise the first ``channels`` columns of rows ``x`` (N, C) to unit L1 norm in
    place (0/0 -> 0, as htc does; FACTS.md "htc models"); returns ``x``."""
    norm = np.abs(x[:, :channels]).sum(axis=1, keepdims=True)
    np.divide(x[:, :channels], norm, out=x[:, :channels], where=norm > 0)
    x[:, :channels][norm[:, 0] == 0] = 0.0
    return x


def fit_affine(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-3) -> AffineMap:
    """Ridge least-squares affine map from rows ``x`` to rows ``y``.

    Minimises ``‖(x − x̄)·W − (y − ȳ)‖² + λ‖W − I‖²`` with ``b = ȳ − x̄·W`` (the offset is not
    penalised) and ``λ = ridge · trace(Xcᵀ Xc) / channels`` (so ``ridge`` is unitless).

    Parameters
    ----------
    x, y : ndarray of shape (N, channels)
        Paired feature rows (source state, target state).
    ridge : float
        Relative regularisation, >= 0.

    Raises
    ------
    ValueError
        For mismatched shapes, fewer than 2 pairs, non-finite values or a negative ridge.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x, y: expected two arrays of the same shape (N, channels), got "
                         f"{x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"x: expected at least 2 pixel pairs, got {x.shape[0]}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x, y: pixel pairs must be finite (drop flagged pixels first)")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge: expected a number >= 0, got {ridge!r}")
    c = x.shape[1]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    lam = ridge * float(np.einsum("ij,ij->", xc, xc)) / c
    if lam > 0:
        # Augmented rows √λ·I on both sides pull W towards the identity.
        eye = np.sqrt(lam) * np.eye(c)
        xc, yc = np.vstack([xc, eye]), np.vstack([yc, eye])
    w, *_ = np.linalg.lstsq(xc, yc, rcond=None)
    return AffineMap(W=w, b=my - mx @ w, pairs=int(x.shape[0]))


def pair_features(perfused: Sequence, malperfused: Sequence, *, malperfused_class: int,
                  min_pairs: int = 50) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per organ class, the feature pairs (perfused row, malperfused row) of the patch pixels.

    Parameters
    ----------
    perfused, malperfused : sequences of FrameSample
        The same frames rendered without and with the malperfused patch (same order).
    malperfused_class : int
        Class id of malperfused tissue.
    min_pairs : int
        Classes with fewer valid pairs are left out.

    Returns
    -------
    dict of class id -> (x, y), each ndarray (N, channels) float32
    """
    if len(perfused) != len(malperfused):
        raise ValueError(f"perfused, malperfused: expected the same number of frames, got "
                         f"{len(perfused)} and {len(malperfused)}")
    xs: dict[int, list[np.ndarray]] = {}
    ys: dict[int, list[np.ndarray]] = {}
    for a, m in zip(perfused, malperfused):
        if a.y.shape != m.y.shape:
            raise ValueError(f"frame sizes differ: {a.y.shape} vs {m.y.shape}")
        sel = (m.y == malperfused_class) & (a.y != malperfused_class) & (a.y != 0)
        sel &= (a.flags == 0) & (m.flags == 0)
        for cid in np.unique(a.y[sel]):
            s = sel & (a.y == cid)
            xs.setdefault(int(cid), []).append(a.x[:, s].T)
            ys.setdefault(int(cid), []).append(m.x[:, s].T)
    out = {}
    for cid in sorted(xs):
        x, y = np.concatenate(xs[cid]), np.concatenate(ys[cid])
        if x.shape[0] >= min_pairs:
            out[cid] = (x, y)
        else:
            log.info("xeno: class %d has only %d pairs (< %d), no map", cid, x.shape[0],
                     min_pairs)
    return out


class XenoAugment:
    """Turn a random perfused region of a training crop into malperfused tissue.

    Parameters
    ----------
    maps : mapping of class id -> AffineMap
        Per-organ perfused → malperfused maps (feature space of the network input).
    spectral_channels : int
        Leading input channels that are L1-normalised spectra (re-normalised after the map).
    malperfused_class : int
        Label given to the transformed pixels.
    probability : float
        Chance per crop of adding one region.
    radius : (lo, hi)
        Radius range of the elliptical region as a fraction of the crop size.
    """

    def __init__(self, maps: Mapping[int, AffineMap], *, spectral_channels: int,
                 malperfused_class: int, probability: float = 0.5,
                 radius: tuple[float, float] = (0.15, 0.4)) -> None:
        if not maps:
            raise ValueError("maps: expected at least one class map, got none")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability: expected 0-1, got {probability!r}")
        self.maps = dict(maps)
        self.spectral_channels = int(spectral_channels)
        self.malperfused_class = int(malperfused_class)
        self.probability = float(probability)
        self.radius = radius

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        """Augment one crop in place: ``x`` (channels, h, w) float32, ``y`` (h, w) int."""
        if rng.random() >= self.probability:
            return
        present = [c for c in self.maps if np.any(y == c)]
        if not present:
            return
        cid = present[int(rng.integers(len(present)))]
        h, w = y.shape
        rr, cc = np.nonzero(y == cid)
        k = int(rng.integers(rr.size))
        ry, rx = rng.uniform(*self.radius, size=2) * (h, w)
        yy, xx = np.ogrid[0:h, 0:w]
        region = (((yy - rr[k]) / ry) ** 2 + ((xx - cc[k]) / rx) ** 2 < 1.0) & (y == cid)
        feats = x[:, region].T
        new = l1_normalise(self.maps[cid](feats), self.spectral_channels)
        x[:, region] = new.T.astype(x.dtype)
        y[region] = self.malperfused_class
