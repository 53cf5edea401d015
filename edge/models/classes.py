"""Class lists and colours of the htc segmentation models (FACTS.md, "htc models").

Sources
-------
- Class ids and names: htc (IMSY-DKFZ/htc, MIT licence) as summarised in FACTS.md: 19 organ
  classes of the semantic pig models, 12 classes of the xeno-learning models.
- Colours: htc's paper palette (``label_colors_paper`` in ``htc/settings_seg.py``, which is
  matplotlib's ``tab20`` palette assigned per organ), sRGB 0-255.  Classes missing from that
  palette keep a colour of the same family.  Colours are display-only; nothing is computed
  from them.
"""

from __future__ import annotations

__all__ = ["HTC_19_CLASSES", "XENO_12_CLASSES", "HTC_COLORS", "htc_class_list"]

#: htc paper palette, hex sRGB, by class name.
HTC_COLORS: dict[str, str] = {
    "background": "#EEEEEE",
    "heart": "#1f77b4",
    "lung": "#aec7e8",
    "stomach": "#98df8a",
    "small_bowel": "#2ca02c",
    "colon": "#ffbb78",
    "liver": "#ff7f0e",
    "gallbladder": "#ff9896",
    "pancreas": "#f7b6d2",
    "spleen": "#d62728",
    "kidney": "#dbdb8d",
    "kidney_with_Gerotas_fascia": "#9edae5",
    "bladder": "#9467bd",
    "fat_subcutaneous": "#e377c2",
    "skin": "#c49c94",
    "muscle": "#bcbd22",
    "omentum": "#c5b0d5",
    "peritoneum": "#8c564b",
    "major_vein": "#17becf",
}

#: The 19 classes of htc's semantic organ models, in id order.
HTC_19_CLASSES: tuple[str, ...] = (
    "background", "heart", "lung", "liver", "colon", "small_bowel", "stomach", "spleen",
    "gallbladder", "bladder", "omentum", "peritoneum", "skin", "fat_subcutaneous", "pancreas",
    "muscle", "kidney", "major_vein", "kidney_with_Gerotas_fascia",
)

#: The 12 classes of the xeno-learning models, in id order.
XENO_12_CLASSES: tuple[str, ...] = (
    "background", "stomach", "small_bowel", "colon", "liver", "pancreas", "kidney", "spleen",
    "omentum", "lung", "skin", "peritoneum",
)


def _rgb(hex_color: str) -> list[int]:
    h = hex_color.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def htc_class_list(classes: int) -> list[dict]:
    """Card entries ``{id, name, color}`` for an htc model with 19 or 12 classes.

    Raises
    ------
    ValueError
        ``classes`` is not 19 or 12.
    """
    if classes == 19:
        names = HTC_19_CLASSES
    elif classes == 12:
        names = XENO_12_CLASSES
    else:
        raise ValueError(f"classes: htc models have 19 (organs) or 12 (xeno-learning) "
                         f"classes, got {classes}")
    return [{"id": i, "name": n, "color": _rgb(HTC_COLORS[n])} for i, n in enumerate(names)]
