"""What the page shows of a kept frame: overlay and StO2 panels side by side, as one JPEG.

Rendered and encoded once per kept frame, in the hub's encoder thread (never the pipeline's);
the same functions as the PNG sink (:func:`edge.physics.cube_to_rgb`,
:func:`edge.processing.post.overlay` and :func:`~edge.processing.post.colormap`), so the page
and the files agree.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge.serve.live import KeptFrame

__all__ = ["render_panels", "encode_jpeg", "DEFAULT_COLORS"]

#: Class colours when no model card names them (RGB, uint8).
DEFAULT_COLORS = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                           [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127],
                           [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def render_panels(kept: KeptFrame, colors: np.ndarray, alpha: float = 0.4
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The image the page shows: overlay panel and StO2 panel side by side.

    Parameters
    ----------
    kept : KeptFrame
    colors : ndarray of shape (K, 3), uint8
        Class colours; class ids >= K (255 = withheld) are hatched.
    alpha : float
        Opacity of the class colours over the true-colour rendering.

    Returns
    -------
    image : ndarray of shape (rows, cols * n_panels, 3), uint8
    panels : list of dict
        ``{"name", "x0", "width"}`` for each panel, left to right.
    """
    from edge.physics import cube_to_rgb
    from edge.processing.post import colormap, overlay

    rows, cols = kept.shape
    images, panels = [], []
    if kept.reflectance is not None:
        rgb = cube_to_rgb(kept.reflectance, kept.wavelengths)
        name = "rgb"
        if kept.classes is not None:
            invalid = kept.classes >= len(colors)
            rgb = overlay(rgb, np.where(invalid, 0, kept.classes), colors, alpha,
                          invalid=invalid)
            name = "overlay"
        images.append(rgb)
        panels.append(name)
    elif kept.classes is not None:
        invalid = kept.classes >= len(colors)
        grey = np.full((rows, cols, 3), 128, np.uint8)
        images.append(overlay(grey, np.where(invalid, 0, kept.classes), colors, 1.0,
                              invalid=invalid))
        panels.append("classes")
    if kept.sto2 is not None:
        images.append(colormap(kept.sto2, 0.0, 1.0, "sto2"))
        panels.append("sto2")
    if not images:
        images.append(np.full((max(rows, 1), max(cols, 1), 3), 96, np.uint8))
        panels.append("empty")
    return (np.concatenate(images, axis=1),
            [{"name": n, "x0": i * cols, "width": cols} for i, n in enumerate(panels)])


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an (rows, cols, 3) uint8 image (4:4:4, so class edges keep their colour)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()
