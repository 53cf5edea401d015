"""Plots for the self-contained HTML reports (field calibration, latency, corpus comparison).

Every report embeds its figures as base64 PNG data URIs, so the file opens anywhere without a
network or other files.  matplotlib is an optional extra (``report``) and runs on the Agg
backend (no display on a unit); it is imported only when a report is made.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from edge.errors import BackendUnavailable

__all__ = ["pyplot_or_none", "require_pyplot", "png_base64", "img_tag"]


def pyplot_or_none() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def require_pyplot(what: str, extra: str = "report") -> Any:
    """``matplotlib.pyplot`` (Agg), or :class:`BackendUnavailable` naming ``what`` needs it
    and the extra that installs it."""
    plt = pyplot_or_none()
    if plt is None:
        raise BackendUnavailable(f"{what}: matplotlib is not installed (report plots); "
                                 f"pip install 'hsi-edge[{extra}]'")
    return plt


def png_base64(fig: Any, *, dpi: int = 80, tight: bool = True) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(fig: Any, alt: str, *, dpi: int = 80) -> str:
    """An ``<img>`` element holding the figure as a PNG data URI (the figure is closed)."""
    return (f'<img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{png_base64(fig, dpi=dpi)}">')
