"""Launch configuration and byte count of the CUDA quality kernels (cuda_kernels/quality.cu).

Plain functions, tested without a GPU: the only place that decides the quality kernels'
grids, blocks and shared memory (DESIGN.md house style 4), and :func:`quality_bytes`, the
count of cuda_kernels/MEMORY.md.  Used by :mod:`edge.backends.cuda_quality`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.backends.cuda_ops import STATIC_SHARED_LIMIT, Launch
from edge.backends.cuda_params import MAX_BANDS
from edge.errors import ConfigError

__all__ = ["BIL_TERMS_PER_LAUNCH", "pixel_launch", "BilateralLaunch", "bilateral_launches",
           "finish_launch", "quality_bytes", "spatial_weights", "range_factor"]

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


def finish_launch(npix: int) -> Launch:
    """Launch of ``quality_finish_*``: one thread per pixel, 256 per block."""
    return Launch((-(-npix // 256), 1, 1), (256, 1, 1), 0)


def quality_bytes(bands: int, guide: int, terms: int, *, raw_itemsize: int = 2,
                  counts: bool = True, spatial: bool = True, maps: int = 2,
                  pack_itemsize: int = 4, reflectance_asked: bool = True) -> dict[str, int]:
    """Bytes per pixel the CUDA quality step moves as built, device finish (MEMORY.md).

    Every input read once and every output written once per kernel launch; the spatial
    step's halo re-reads are not counted (neighbouring blocks find them in L2).  ``maps``
    packed map channels of ``pack_itemsize`` bytes; ``reflectance_asked``: the caller wants
    the reflectance anyway (the pipeline does, for the overlay), so the chain writing it
    costs the quality step nothing.  ``host``: what leaves the device beyond the chain's own
    downloads (a discrete GPU; with mapped memory the device writes are those).  Not counted:
    the finish's read of a ``low_blood`` pixel's own index terms (``4 * terms`` bytes for
    those pixels only, a few % of a frame: they do not enter the spatial step).
    """
    m = guide + terms if spatial else 0
    v = 4 if counts else 0
    out = {"reflectance": 0 if reflectance_asked else 4 * bands}
    # refl, (raw, dark), flags, thb in; flags, s, (var), ext, ok out
    out["quality_pixel"] = (4 * bands + ((raw_itemsize + 4) * bands if counts else 0) + 1 + 4
                            + 1 + 4 + v + 4 * m + 1)
    out["bilateral"] = 0
    if spatial:
        launches = max(1, -(-terms // BIL_TERMS_PER_LAUNCH))
        out["bilateral"] = launches * (4 + v + 1 + 4 * guide) + 4 * terms + (4 + v + 4 * terms)
    t_f = 4 * terms if spatial else 0
    s_f = (4 + v) if spatial else 0
    # s, (var), s_f, (var_f), t_f, ok, flags, maps in; flags, maps, sigma, sto2_all, pack out
    out["finish"] = (4 + v + s_f + t_f + 1 + 1 + 24) + (1 + 24 + 8 + maps * pack_itemsize)
    out["host"] = 8
    out["device"] = sum(out[k] for k in ("reflectance", "quality_pixel", "bilateral",
                                         "finish"))
    return out


def spatial_weights(params) -> np.ndarray:
    """The (2r + 1)**2 spatial weights, float32 of bilateral_filter's own ``exp``."""
    r = params.radius
    return np.array([np.float32(np.exp(-(dy * dy + dx * dx) / (2.0 * params.sigma_s ** 2)))
                     for dy in range(-r, r + 1) for dx in range(-r, r + 1)], np.float32)


def range_factor(params, groups: int) -> np.float32:
    """``1 / (2 h**2 G)`` as bilateral_filter rounds it."""
    return np.float32(1.0 / (2.0 * params.h ** 2 * groups))
