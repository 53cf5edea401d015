"""The shared report plot helpers (edge.core.plots)."""

from __future__ import annotations

import base64

import pytest

from edge.core.plots import img_tag, png_base64, pyplot_or_none, require_pyplot


def test_figures_become_png_data_and_are_closed():
    plt = require_pyplot("test")
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    data = base64.b64decode(png_base64(fig, dpi=40))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    fig, _ = plt.subplots(figsize=(1, 1))
    tag = img_tag(fig, 'a "quoted" <alt>')
    assert tag.startswith('<img alt="a &quot;quoted&quot; &lt;alt&gt;" src="data:image/png;base64,')


def test_pyplot_uses_the_agg_backend():
    plt = pyplot_or_none()
    if plt is None:
        pytest.skip("matplotlib is not installed (report extra)")
    import matplotlib
    assert matplotlib.get_backend().lower() == "agg"
