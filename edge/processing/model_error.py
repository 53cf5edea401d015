"""The model-error term of the StO2 standard error (issue 14).

Against the simulator's truth the StO2 error is dominated by the model -- the calibration
curve against the renderer, tissue texture, a snapshot camera's mosaic misregistration at
organ borders -- not by sensor noise, so a noise-only ``sto2_sigma`` covered 10-55 % of valid
pixels (README, "Science and accuracy").  ``finish_quality``
(:mod:`edge.processing.quality`) adds in quadrature::

    sigma**2 = sigma_noise**2 + a**2 + (b_sigma * c)**2

and flags a pixel whose ``b * c`` exceeds ``max_sigma`` (two tissues in one pixel), with ``c`` the local contrast of the spectral guide (:func:`guide_contrast`) and ``a``,
``b``, ``b_sigma`` fitted per preset against the simulator's truth by ``tools/fit_sto2_model_error.py``
and stored in the StO2 table's ``model_error`` header line (:func:`model_error`).
"""

from __future__ import annotations

import functools
import json

import numpy as np

from edge.errors import ConfigError

__all__ = ["guide_contrast", "model_error"]


def guide_contrast(guide: np.ndarray) -> np.ndarray:
    """Local contrast of the spectral guide: ``sqrt(max_j mean_k (g_ik - g_jk)**2)`` over the
    8 neighbours ``j`` of each pixel (absorbance; 0 at pixels without a finite neighbour).

    Large at organ borders, where a snapshot camera's bands see different tissue (mosaic
    misregistration) and the spatial step mixes across the edge: the model-error term of
    sigma grows with it (:func:`model_error`).

    Parameters
    ----------
    guide : ndarray (rows, cols, G), float32

    Returns
    -------
    ndarray (rows, cols), float32
    """
    g = np.asarray(guide, dtype=np.float32)
    rows, cols, _ = g.shape
    gp = np.pad(g, ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    best = np.zeros((rows, cols), np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            d = gp[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols] - g
            with np.errstate(invalid="ignore"):
                d2 = np.mean(d * d, axis=-1)
            np.fmax(best, d2, out=best)
    return np.sqrt(np.where(np.isfinite(best), best, np.float32(0))).astype(np.float32)


def model_error(calibration, temporal: bool = False
                ) -> tuple[float, float, float] | None:
    """The table's fitted model-error terms ``(a, b, b_sigma)``: ``sigma_model**2 = a**2 +
    (b_sigma c)**2`` with ``c`` the guide contrast (:func:`guide_contrast`), and the edge rule
    flags pixels with ``b c > max_sigma``; from its ``model_error`` header line
    (``tools/fit_sto2_model_error.py``; ``b_sigma`` is ``b`` where the line has none;
    ``a_temporal``/``b_temporal``/``b_sigma_temporal`` with the temporal step, which leaves
    less noise, when the line has them); None when the table has none."""
    text = getattr(calibration, "meta", {}).get("model_error")
    if not text:
        return None
    plain, with_temporal = _parse_model_error(text)
    return with_temporal if temporal and with_temporal is not None else plain


@functools.lru_cache(maxsize=32)
def _parse_model_error(text: str):
    """``((a, b, b_sigma), (a_temporal, b_temporal, b_sigma_temporal) or None)`` of a header
    line, parsed once per text (finish_quality asks every frame)."""
    try:
        d = json.loads(text)
        plain = float(d["a"]), float(d["b"]), float(d.get("b_sigma", d["b"]))
        with_temporal = ((float(d["a_temporal"]), float(d["b_temporal"]),
                          float(d.get("b_sigma_temporal", d["b_temporal"])))
                         if "a_temporal" in d else None)
        if not all(np.isfinite(v) and v >= 0 for v in plain + (with_temporal or ())):
            raise ValueError("negative or non-finite term")
        return plain, with_temporal
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"StO2 table: bad model_error header {text[:60]!r} (expected JSON "
                          f"with numbers >= 0 'a' and 'b', optionally 'b_sigma')") from exc
