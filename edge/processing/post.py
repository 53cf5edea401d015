"""Post stage: softmax/argmax of the logits, class overlay, colour maps with a colour bar.

Colour maps are generated procedurally here (no data file): anchor colours are converted to
CIELAB (D65, sRGB primaries, IEC 61966-2-1 transfer curve), interpolated linearly in Lab --
so equal steps in value give roughly equal perceived colour steps between anchors -- and
converted back to 8-bit sRGB.  ``"sto2"`` runs dark blue -> blue -> cyan -> yellow -> red
(low saturation blue, high saturation red, the convention of clinical StO2 displays);
``"gray"`` is a linear grey ramp.  NaN is drawn in a grey that appears in neither table
(``NAN_COLOR`` for ``"sto2"``, magenta ``(255, 0, 255)`` for ``"gray"``).
"""

from __future__ import annotations

import functools

import numpy as np

from edge.errors import DataFormatError

__all__ = ["softmax", "argmax", "overlay", "colormap", "colorbar", "colormap_table",
           "mark_invalid", "invalid_legend", "INVALID_STYLES", "NAN_COLOR", "CMAPS"]

#: RGB of NaN pixels in the "sto2" map (a neutral grey; the sto2 table has no neutral colour).
NAN_COLOR = (128, 128, 128)
#: Hatch colours of invalid pixels in the class overlay.
HATCH_COLORS = ((70, 70, 70), (150, 150, 150))

#: How the StO2 image draws a pixel without a valid StO2, by reason (first match wins):
#: (label, flag bits, (colour A, colour B), stripe direction: 0 solid, +1 "\\", -1 "/").
#: "no estimate" is everything the chain could not unmix (calibration flags, no haemoglobin:
#: drapes, instruments); the StO2 validity bits of issue 14 (edge.core.chain) are hatched.
INVALID_STYLES = (
    ("specular", 128, ((255, 255, 255), (255, 255, 255)), 0),
    ("low blood", 32, ((70, 70, 70), (150, 150, 150)), 1),
    ("uncertain", 64, ((90, 90, 90), (200, 200, 200)), -1),
    ("no estimate", 0x1F, (NAN_COLOR, NAN_COLOR), 0),
)

_ANCHORS = {
    "sto2": ((0, 0, 96), (0, 64, 255), (0, 220, 255), (255, 230, 0), (200, 0, 0)),
    "gray": ((0, 0, 0), (255, 255, 255)),
}
_NAN = {"sto2": NAN_COLOR, "gray": (255, 0, 255)}
CMAPS = tuple(_ANCHORS)


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax (the maximum is subtracted first).

    Parameters
    ----------
    logits : ndarray, e.g. shape (1, K, H, W), float
    axis : int
        Class axis.

    Returns
    -------
    ndarray, same shape, float32; sums to 1 along ``axis``.
    """
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def argmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    """Class index of the highest score along ``axis`` (ties: the lowest index).

    Returns
    -------
    ndarray, ``scores.shape`` without ``axis``, int64. For (1, K, H, W) input: (1, H, W).
    """
    return np.argmax(np.asarray(scores), axis=axis)


def overlay(rgb: np.ndarray, classes: np.ndarray, colors: np.ndarray, alpha: float = 0.4,
            invalid: np.ndarray | None = None) -> np.ndarray:
    """Blend class colours over an RGB image; invalid pixels are drawn hatched grey.

    ``out = round((1 - alpha) * rgb + alpha * colors[classes])``, so ``alpha=0`` returns the
    image and ``alpha=1`` the class colours exactly.

    Parameters
    ----------
    rgb : ndarray of shape (rows, cols, 3), uint8
    classes : ndarray of shape (rows, cols), int, values in [0, K)
    colors : ndarray of shape (K, 3), uint8
    alpha : float in [0, 1]
    invalid : ndarray of shape (rows, cols), bool, optional
        Pixels to hatch (diagonal stripes 4 px wide in two greys, ``HATCH_COLORS``).

    Returns
    -------
    ndarray of shape (rows, cols, 3), uint8
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataFormatError(f"rgb: expected uint8 of shape (rows, cols, 3), got "
                              f"{rgb.dtype} {rgb.shape}")
    classes = np.asarray(classes)
    if classes.shape != rgb.shape[:2] or not np.issubdtype(classes.dtype, np.integer):
        raise DataFormatError(f"classes: expected integers of shape {rgb.shape[:2]}, got "
                              f"{classes.dtype} {classes.shape}")
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3 or colors.shape[0] < 1:
        raise DataFormatError(f"colors: expected shape (K, 3), got {colors.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise DataFormatError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    if classes.size and (classes.min() < 0 or classes.max() >= colors.shape[0]):
        raise DataFormatError(f"classes: ids must be in [0, {colors.shape[0] - 1}] (one colour "
                              f"each), got range [{classes.min()}, {classes.max()}]")
    blended = ((1.0 - alpha) * rgb.astype(np.float32)
               + alpha * colors.astype(np.float32)[classes])
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if invalid is not None:
        invalid = np.asarray(invalid, dtype=bool)
        if invalid.shape != rgb.shape[:2]:
            raise DataFormatError(f"invalid: expected shape {rgb.shape[:2]}, "
                                  f"got {invalid.shape}")
        rr, cc = np.indices(invalid.shape)
        stripe = ((rr + cc) // 4) % 2
        hatch = np.asarray(HATCH_COLORS, dtype=np.uint8)[stripe]
        out[invalid] = hatch[invalid]
    return out


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


_M_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
_WHITE = _M_RGB2XYZ.sum(axis=1)   # D65 white point of sRGB


def _rgb_to_lab(rgb8: np.ndarray) -> np.ndarray:
    xyz = _srgb_to_linear(np.asarray(rgb8, float) / 255.0) @ _M_RGB2XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]),
                     200 * (f[:, 1] - f[:, 2])], axis=1)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[:, 0] + 16) / 116
    f = np.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], axis=1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = xyz @ np.linalg.inv(_M_RGB2XYZ).T   # fixed 3x3 colour matrix, not a data fit
    return np.clip(np.rint(_linear_to_srgb(lin) * 255), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _table(cmap: str) -> np.ndarray:
    lab = _rgb_to_lab(np.asarray(_ANCHORS[cmap]))
    pos = np.linspace(0.0, 1.0, len(lab))
    t = np.linspace(0.0, 1.0, 256)
    interp = np.stack([np.interp(t, pos, lab[:, i]) for i in range(3)], axis=1)
    table = _lab_to_rgb(interp)
    table.setflags(write=False)
    return table


def colormap_table(cmap: str = "sto2") -> np.ndarray:
    """The 256-entry colour table of ``cmap``: ndarray of shape (256, 3), uint8, read-only."""
    if cmap not in _ANCHORS:
        raise DataFormatError(f"cmap: expected one of {', '.join(CMAPS)}, got {cmap!r}")
    return _table(cmap)


def colormap(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0,
             cmap: str = "sto2") -> np.ndarray:
    """Map a float image to RGB through a 256-entry table.

    Parameters
    ----------
    values : ndarray of shape (rows, cols), float
        Values; outside [vmin, vmax] are clipped, NaN/inf drawn in the NaN colour.
    vmin, vmax : float
        Range mapped onto the table (``vmin < vmax``).
    cmap : {"sto2", "gray"}

    Returns
    -------
    ndarray of shape (rows, cols, 3), uint8
    """
    table = colormap_table(cmap)
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmax > vmin):
        raise DataFormatError(f"vmin/vmax: expected finite vmin < vmax, got {vmin!r}, {vmax!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise DataFormatError(f"values: expected shape (rows, cols), got {v.shape}")
    finite = np.isfinite(v)
    t = np.clip((np.where(finite, v, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    idx = np.rint(t * 255).astype(np.intp)
    out = table[idx]
    out[~finite] = _NAN[cmap]
    return out


def colorbar(image: np.ndarray, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "sto2",
             label: str = "", ticks: int = 5, width: int = 70) -> np.ndarray:
    """Append a labelled vertical colour bar to the right of a colour-mapped image.

    The bar runs from ``vmax`` (top) to ``vmin`` (bottom) with ``ticks`` labelled ticks and
    the ``label`` text above it, drawn with Pillow's default font on a white panel.

    Parameters
    ----------
    image : ndarray of shape (rows, cols, 3), uint8
    vmin, vmax : float
        The values at the ends of the bar (those passed to :func:`colormap`).
    cmap : {"sto2", "gray"}
    label : str
    ticks : int >= 2
    width : int
        Panel width in pixels.

    Returns
    -------
    ndarray of shape (rows, cols + width, 3), uint8; the left part is ``image`` unchanged.
    """
    from PIL import Image, ImageDraw  # Pillow is a core dependency; imported here to keep
    # `import edge.processing` light.

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataFormatError(f"image: expected uint8 of shape (rows, cols, 3), got "
                              f"{image.dtype} {image.shape}")
    if int(ticks) < 2:
        raise DataFormatError(f"ticks: expected an integer >= 2, got {ticks!r}")
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmax > vmin):
        raise DataFormatError(f"vmin/vmax: expected finite vmin < vmax, got {vmin!r}, {vmax!r}")
    table = colormap_table(cmap)
    rows = image.shape[0]
    panel = Image.new("RGB", (int(width), rows), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    top, bottom = min(14, rows // 4), max(rows - 6, min(14, rows // 4) + 1)
    bar_x0, bar_x1 = 4, 4 + max(6, int(width) // 4)
    span = max(bottom - top - 1, 1)
    for y in range(top, bottom):
        idx = int(round(255 * (1.0 - (y - top) / span)))
        draw.line([(bar_x0, y), (bar_x1, y)], fill=tuple(int(c) for c in table[idx]))
    draw.rectangle([bar_x0, top, bar_x1, bottom - 1], outline=(0, 0, 0))
    for i in range(int(ticks)):
        frac = i / (int(ticks) - 1)
        y = int(round(top + (1.0 - frac) * span))
        draw.line([(bar_x1, y), (bar_x1 + 3, y)], fill=(0, 0, 0))
        draw.text((bar_x1 + 5, max(y - 5, 0)), f"{vmin + frac * (vmax - vmin):.3g}",
                  fill=(0, 0, 0))
    if label:
        draw.text((2, 1), label, fill=(0, 0, 0))
    return np.concatenate([image, np.asarray(panel, dtype=np.uint8)], axis=1)


def _pattern(shape: tuple[int, int], colors, direction: int) -> np.ndarray:
    rr, cc = np.indices(shape)
    stripe = (((rr + direction * cc) // 4) % 2) if direction else np.zeros(shape, np.intp)
    return np.asarray(colors, dtype=np.uint8)[stripe]


def mark_invalid(image: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Draw pixels with flags in the style of their reason (:data:`INVALID_STYLES`).

    Parameters
    ----------
    image : ndarray of shape (rows, cols, 3), uint8 -- e.g. :func:`colormap` of StO2
    flags : ndarray of shape (rows, cols), uint8 -- the chain's pixel flags

    Returns
    -------
    ndarray of shape (rows, cols, 3), uint8 (a copy).
    """
    image = np.asarray(image)
    flags = np.asarray(flags)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
            or flags.shape != image.shape[:2]:
        raise DataFormatError(f"image/flags: expected uint8 (rows, cols, 3) and flags (rows, "
                              f"cols), got {image.dtype} {image.shape} and {flags.shape}")
    out = image.copy()
    done = np.zeros(flags.shape, bool)
    for _, bits, colors, direction in INVALID_STYLES:
        sel = ((flags & bits) != 0) & ~done
        if sel.any():
            out[sel] = _pattern(flags.shape, colors, direction)[sel]
            done |= sel
    return out


def invalid_legend(flags: np.ndarray, max_sigma: float | None = None
                   ) -> list[tuple[str, np.ndarray]]:
    """Legend entries for the reasons present in ``flags``: (label with the share of
    pixels, 10x10 swatch uint8).  ``max_sigma`` (fraction) is named in "uncertain"."""
    flags = np.asarray(flags)
    done = np.zeros(flags.shape, bool)
    entries = []
    for label, bits, colors, direction in INVALID_STYLES:
        sel = ((flags & bits) != 0) & ~done
        done |= sel
        if not sel.any():
            continue
        if label == "uncertain" and max_sigma is not None:
            label = f"uncertain (sigma > {100 * max_sigma:.3g} pp)"
        entries.append((f"{label} {100 * sel.mean():.0f}%",
                        _pattern((10, 10), colors, direction)))
    return entries
