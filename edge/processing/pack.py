"""Pack stage: L1-normalised spectra + selected maps -> the network input (NCHW).

This is the one place where the band-last cube layout ``(rows, cols, bands)`` becomes the
network layout ``(1, channels, rows, cols)`` (DESIGN.md, "Data conventions").  htc models take
the L1-normalised reflectance ``x / sum(|x|)`` per pixel with 0/0 -> 0 and no standardisation
(FACTS.md, "htc models").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edge.core.chain import PackSpec
from edge.errors import DataFormatError

__all__ = ["l1_normalize", "pack_input"]


def l1_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """L1-normalise along ``axis``: ``x / sum(|x|)``.

    Parameters
    ----------
    x : ndarray, float
        Spectra, e.g. shape (rows, cols, bands).
    axis : int
        Axis to normalise over (the band axis).

    Returns
    -------
    ndarray, same shape as ``x``, float32
        Normalised spectra.  A spectrum whose L1 norm is 0 gives 0 (htc's 0/0 -> 0); a spectrum
        with any NaN/inf gives 0 everywhere along ``axis`` -- the caller flags that pixel
        (the network then sees "no signal", never a NaN).
    """
    x = np.asarray(x, dtype=np.float32)
    finite = np.all(np.isfinite(x), axis=axis, keepdims=True)
    clean = np.where(finite, x, np.float32(0))
    norm = np.sum(np.abs(clean), axis=axis, keepdims=True, dtype=np.float32)
    # Divide only where the norm is positive; everything else stays 0 (0/0 -> 0).
    out = np.zeros_like(clean)
    np.divide(clean, norm, out=out, where=np.broadcast_to(norm > 0, clean.shape))
    return out


def pack_input(spectra: np.ndarray | None, maps: Sequence[np.ndarray],
               spec: PackSpec) -> np.ndarray:
    """Build the network input from reflectance spectra and per-pixel maps.

    Channel order: the L1-normalised bands ``spec.spectra_bands`` (normalised over exactly
    those bands, so a model that takes all bands gets htc's input), then ``maps`` in the order
    of ``spec.maps``.  Non-finite values become 0.

    Parameters
    ----------
    spectra : ndarray of shape (rows, cols, bands), float, or None
        Reflectance (None only if ``spec.spectra_bands`` is empty).
    maps : sequence of ndarray of shape (rows, cols)
        One map per name in ``spec.maps``, same order.
    spec : PackSpec
        Channel selection and dtype from the model card.

    Returns
    -------
    ndarray of shape (1, spec.channels, rows, cols), ``spec.dtype``
    """
    if not isinstance(spec, PackSpec):
        raise DataFormatError(f"spec: expected an edge.core.chain.PackSpec, got {spec!r}")
    if spec.dtype not in ("float32", "float16"):
        raise DataFormatError(f"spec.dtype: expected 'float32' or 'float16', got {spec.dtype!r}")
    maps = list(maps)
    if len(maps) != len(spec.maps):
        raise DataFormatError(f"maps: spec.maps names {len(spec.maps)} maps {spec.maps}, "
                              f"got {len(maps)} arrays")
    shape: tuple[int, int] | None = None
    if spec.spectra_bands:
        if spectra is None:
            raise DataFormatError(f"spectra: spec.spectra_bands selects {len(spec.spectra_bands)} "
                                  "bands but spectra is None")
        spectra = np.asarray(spectra)
        if spectra.ndim != 3:
            raise DataFormatError(f"spectra: expected shape (rows, cols, bands), "
                                  f"got {spectra.shape}")
        bands = np.asarray(spec.spectra_bands, dtype=np.int64)
        if bands.min() < 0 or bands.max() >= spectra.shape[2]:
            raise DataFormatError(f"spec.spectra_bands: indices must be in [0, "
                                  f"{spectra.shape[2] - 1}], got {spec.spectra_bands}")
        shape = spectra.shape[:2]
    for name, m in zip(spec.maps, maps):
        if np.ndim(m) != 2 or (shape is not None and np.shape(m) != shape):
            raise DataFormatError(f"maps[{name!r}]: expected shape "
                                  f"{shape if shape else '(rows, cols)'}, got {np.shape(m)}")
        shape = np.shape(m) if shape is None else shape
    if shape is None:
        raise DataFormatError("spec: selects no channels (no spectra_bands and no maps)")

    out = np.empty((1, spec.channels) + tuple(shape), dtype=np.dtype(spec.dtype))
    nb = len(spec.spectra_bands)
    if nb:
        l1 = l1_normalize(spectra[:, :, bands], axis=-1)
        out[0, :nb] = np.moveaxis(l1, -1, 0)   # (rows, cols, nb) -> (nb, rows, cols)
    for j, m in enumerate(maps):
        m = np.asarray(m, dtype=np.float32)
        out[0, nb + j] = np.where(np.isfinite(m), m, np.float32(0))
    return out
