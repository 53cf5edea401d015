"""Sinks: what lands on disk, every N-th frame, atomically."""

import numpy as np
import pytest
from PIL import Image

from edge.core.frame import Frame, FrameMeta
from edge.pipeline.sinks import NpzSink, NullSink, PngSink

WL = np.linspace(500, 1000, 10)
COLORS = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30]], np.uint8)


def _frame(fid):
    f = Frame(np.zeros((6, 8, 10), np.uint16), WL, FrameMeta(frame_id=fid))
    f.products["reflectance"] = np.full((6, 8, 10), 0.5, np.float32)
    f.products["sto2"] = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    f.products["sto2"][0, 0] = np.nan
    f.products["flags"] = np.zeros((6, 8), np.uint8)
    classes = np.ones((6, 8), np.uint8)
    classes[0, :] = 255  # withheld
    f.products["classes"] = classes
    return f


def test_png_sink_every_n_with_legend(tmp_path):
    sink = PngSink(tmp_path, every=2, colors=COLORS, class_names=("bg", "liver", "fat"),
                   alpha=1.0)
    for i in range(3):
        sink.write(_frame(i))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "overlay_000000.png", "overlay_000002.png", "sto2_000000.png", "sto2_000002.png"]
    with Image.open(tmp_path / "overlay_000000.png") as im:
        img = np.asarray(im)
    assert img.shape == (6, 8 + 130, 3)
    assert tuple(img[3, 3]) == (200, 30, 30)          # alpha 1: the class colour exactly
    assert tuple(img[0, 0]) != (200, 30, 30)          # withheld pixels are hatched


def test_npz_sink_writes_maps(tmp_path):
    sink = NpzSink(tmp_path, every=1)
    sink.write(_frame(7))
    with np.load(tmp_path / "maps_000007.npz") as z:
        assert int(z["frame_id"]) == 7
        np.testing.assert_array_equal(z["classes"][0], 255)
        assert np.isnan(z["sto2"][0, 0]) and z["sto2"][5, 7] == 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"every: expected an integer >= 1, got 0"):
        NpzSink(tmp_path, every=0)
    null = NullSink()
    null.write(_frame(0))
    assert null.count == 1


def test_png_sto2_draws_pixels_without_sto2_by_reason(tmp_path):
    """Grey: no estimate; hatched: low blood / uncertain; white: specular; the strip below
    the map names the reasons present with their share of the frame."""
    f = _frame(0)
    flags = f.products["flags"]
    flags[0, 0], flags[1, 0], flags[1, 1], flags[1, 2] = 16, 32, 64, 128
    f.products["sto2"][flags != 0] = np.nan
    sink = PngSink(tmp_path, every=1, colors=COLORS, class_names=("bg", "liver", "fat"),
                   alpha=1.0, max_sigma=0.05)
    sink.write(f)
    with Image.open(tmp_path / "sto2_000000.png") as im:
        img = np.asarray(im)
    assert img.shape == (6 + 4 + 14 * 4, 8 + 70, 3)          # four legend lines below
    assert tuple(img[0, 0]) == (128, 128, 128)               # no estimate
    assert tuple(img[1, 0]) == (70, 70, 70)                  # low blood, hatched
    assert tuple(img[1, 1]) == (90, 90, 90)                  # uncertain, hatched the other way
    assert tuple(img[1, 2]) == (255, 255, 255)               # specular
    assert tuple(img[3, 3]) not in {(128, 128, 128), (255, 255, 255)}
    with Image.open(tmp_path / "overlay_000000.png") as im:
        ov = np.asarray(im)
    assert tuple(ov[1, 2]) == (255, 255, 255)                # the highlight, white
    assert tuple(ov[1, 0]) == (200, 30, 30)                  # low blood keeps its class
    # the legend's 5th entry (after 3 classes and "withheld") is the white specular swatch,
    # outlined in black; without a highlight there is no 5th entry
    for spec, outline in ((True, (0, 0, 0)), (False, (255, 255, 255))):
        legend = np.asarray(sink._with_legend(Image.new("RGB", (10, 100)), specular=spec))
        y = 4 + 4 * 14
        assert tuple(legend[y + 5, 10 + 9]) == (255, 255, 255)
        assert tuple(legend[y, 10 + 9]) == outline


def test_npz_sink_writes_sigma(tmp_path):
    f = _frame(3)
    f.products["sto2_sigma"] = np.full((6, 8), 0.02, np.float32)
    NpzSink(tmp_path, every=1).write(f)
    with np.load(tmp_path / "maps_000003.npz") as z:
        np.testing.assert_array_equal(z["sto2_sigma"], np.float32(0.02))
