"""Post stage: softmax, argmax, overlay, colour map, colour bar."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataFormatError
from edge.processing import argmax, colorbar, colormap, overlay, softmax
from edge.processing.post import NAN_COLOR, colormap_table


def test_softmax_stable_and_normalised():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5, 3, 4)).astype(np.float32) * 10
    x[0, 0, 0, 0] = 1000.0     # would overflow a naive exp
    p = softmax(x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    e = np.exp(x[0, :, 1, 1].astype(np.float64))
    np.testing.assert_allclose(p[0, :, 1, 1], e / e.sum(), rtol=1e-5)
    assert p[0, 0, 0, 0] == pytest.approx(1.0)
    np.testing.assert_array_equal(argmax(p), np.argmax(x, axis=1))


def test_overlay_exact_at_alpha_0_and_1_and_hatch():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cls = rng.integers(0, 3, (6, 8))
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(overlay(rgb, cls, colors, alpha=0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, cls, colors, alpha=1.0), colors[cls])
    half = overlay(rgb, cls, colors, alpha=0.5)
    np.testing.assert_array_equal(half, np.rint(0.5 * rgb + 0.5 * colors[cls]).astype(np.uint8))
    inv = np.zeros((6, 8), bool)
    inv[2:4, 2:6] = True
    out = overlay(rgb, cls, colors, alpha=1.0, invalid=inv)
    vals = {tuple(v) for v in out[inv]}
    assert vals <= {(70, 70, 70), (150, 150, 150)} and len(vals) == 2
    with pytest.raises(DataFormatError, match="classes: ids must be in \\[0, 2\\]"):
        overlay(rgb, cls + 1, colors)
    with pytest.raises(DataFormatError, match="alpha: expected a number in \\[0, 1\\]"):
        overlay(rgb, cls, colors, alpha=1.5)


def test_colormap_ends_nan_and_tables():
    t = colormap_table("sto2")
    assert t.shape == (256, 3) and t.dtype == np.uint8
    assert tuple(NAN_COLOR) not in {tuple(c) for c in t}
    v = np.array([[0.0, 1.0, np.nan, 2.0]])
    out = colormap(v)
    np.testing.assert_array_equal(out[0, 0], t[0])
    np.testing.assert_array_equal(out[0, 1], t[255])
    np.testing.assert_array_equal(out[0, 2], NAN_COLOR)
    np.testing.assert_array_equal(out[0, 3], t[255])     # clipped
    assert t[0, 2] > t[0, 0] and t[255, 0] > t[255, 2]    # blue -> red
    g = colormap_table("gray")
    # interpolated in Lab: neutral, monotone, black to white (perceptually, not linearly, even)
    assert (g[:, 0] == g[:, 1]).all() and (g[:, 1] == g[:, 2]).all()
    assert np.all(np.diff(g[:, 0].astype(int)) >= 0) and g[0, 0] == 0 and g[-1, 0] == 255
    with pytest.raises(DataFormatError, match="cmap: expected one of sto2, gray"):
        colormap(v, cmap="jet")


def test_colorbar_appends_panel():
    img = colormap(np.linspace(0, 1, 120).reshape(10, 12).repeat(10, 0))
    out = colorbar(img, label="StO2")
    assert out.shape == (100, 12 + 70, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :12], img)
    assert (out[:, 12:] != 255).any()
    with pytest.raises(DataFormatError, match="ticks: expected an integer >= 2"):
        colorbar(img, ticks=1)


def test_mark_invalid_and_legend():
    from edge.processing.post import INVALID_STYLES, invalid_legend, mark_invalid

    img = np.zeros((8, 8, 3), np.uint8)
    flags = np.zeros((8, 8), np.uint8)
    flags[0, :4] = 64 | 32                     # first matching style wins: low blood
    flags[5, 5] = 2                            # underexposed: no estimate
    out = mark_invalid(img, flags)
    assert tuple(out[0, 0]) == (70, 70, 70) and tuple(out[0, 4]) == (0, 0, 0)
    assert tuple(out[5, 5]) == NAN_COLOR and not img.any()     # input untouched
    labels = [label for label, swatch in invalid_legend(flags, max_sigma=0.05)]
    assert labels == ["low blood 6%", "no estimate 2%"]
    assert [s[0] for s in INVALID_STYLES] == ["specular", "low blood", "uncertain",
                                              "no estimate"]
    assert invalid_legend(np.full((2, 2), 64, np.uint8), 0.05)[0][0] == \
        "uncertain (sigma > 5 pp) 100%"
    with pytest.raises(DataFormatError, match=r"image/flags: expected uint8 \(rows, cols, 3\) "
                                              r"and flags \(rows, cols\), got uint8 \(8, 8, 3\) "
                                              r"and \(2, 2\)"):
        mark_invalid(img, np.zeros((2, 2), np.uint8))
