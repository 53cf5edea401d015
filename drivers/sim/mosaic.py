"""Filter-mosaic effects of the simulated snapshot cameras (used by
:class:`drivers.sim.sensor.SensorModel`; the model and its **unverified** figures are stated in
:mod:`drivers.sim.presets` and :mod:`drivers.sim.sensor`).

A band ``k`` of an ``n×n`` mosaic sits at ``(k // n, k % n)`` of its super-pixel (row-major in
wavelength order: an assumption, real layouts are scrambled).
"""

from __future__ import annotations

import numpy as np

from edge.errors import ConfigError

__all__ = ["mosaic_crosstalk", "mosaic_offsets", "shift_bilinear"]


def mosaic_crosstalk(bands: int, mosaic: int, neighbour: float, sidelobe: float) -> np.ndarray:
    """Crosstalk matrix of an ``n×n`` filter mosaic (band ``k`` at ``(k // n, k % n)``).

    ``X[b, k]`` is the fraction of band ``k``'s signal that the band-``b`` filter pixel
    records: ``neighbour`` from each of its four mosaic neighbours (the mosaic repeats, so
    the neighbour across a super-pixel border is the band at the opposite side),
    ``sidelobe / (bands − 1)`` from every other band; the diagonal keeps the rest (rows sum
    to 1).

    Returns
    -------
    ndarray of shape (bands, bands), float64

    Raises
    ------
    ConfigError
        For a mosaic with fewer than ``bands`` positions, or fractions whose sum leaves the
        diagonal below 0.5.
    """
    n = int(mosaic)
    if n < 1 or n * n < bands:
        raise ConfigError(f"mosaic: a {n}x{n} mosaic has no room for {bands} bands")
    x = np.zeros((bands, bands))
    for b in range(bands):
        i, j = divmod(b, n)
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            k = ((i + di) % n) * n + (j + dj) % n
            if k < bands and k != b:
                x[b, k] += float(neighbour)
        if bands > 1:
            others = np.arange(bands) != b
            x[b, others] += float(sidelobe) / (bands - 1)
        x[b, b] = 1.0 - x[b].sum()
    if np.any(np.diag(x) < 0.5):
        raise ConfigError(f"crosstalk: neighbour {neighbour!r} x 4 + sidelobe {sidelobe!r} "
                          "leaves a band less than half its own light; expected a sum < 0.5")
    return x


def mosaic_offsets(bands: int, mosaic: int) -> np.ndarray:
    """Sampling offsets (dy, dx) of each band from its super-pixel centre, spectral pixels.

    Returns
    -------
    ndarray of shape (bands, 2), float64, within ±(n−1)/(2n)
    """
    n = int(mosaic)
    k = np.arange(bands)
    return np.stack([(k // n - (n - 1) / 2) / n, (k % n - (n - 1) / 2) / n], axis=1)


def shift_bilinear(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``img`` (rows, cols) sampled at (r + dy, c + dx), |dy|, |dx| < 1, edges replicated."""
    out = img
    if dy:
        nb = (np.concatenate([out[1:], out[-1:]]) if dy > 0
              else np.concatenate([out[:1], out[:-1]]))
        out = out + np.float32(abs(dy)) * (nb - out)
    if dx:
        nb = (np.concatenate([out[:, 1:], out[:, -1:]], axis=1) if dx > 0
              else np.concatenate([out[:, :1], out[:, :-1]], axis=1))
        out = out + np.float32(abs(dx)) * (nb - out)
    return out
