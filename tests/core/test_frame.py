"""Frame and FrameMeta validation."""

import numpy as np
import pytest

from edge.core.frame import Frame, FrameMeta, validate_wavelengths
from edge.errors import DataFormatError

WL = np.linspace(500, 1000, 5)


def test_valid_frame_keeps_data_and_converts_wavelengths():
    cube = np.zeros((2, 3, 5), np.uint16)
    f = Frame(cube, WL.astype(np.float32), FrameMeta(frame_id=7, exposure_us=5000))
    assert f.shape == (2, 3, 5) and f.is_raw
    assert f.wavelengths.dtype == np.float64
    np.testing.assert_allclose(f.wavelengths, WL, rtol=1e-6)
    assert f.meta.frame_id == 7


@pytest.mark.parametrize("cube, message", [
    (np.zeros((2, 3), np.uint16), r"cube: expected shape \(rows, cols, bands\), got 2-D"),
    (np.zeros((2, 3, 5), np.float64), r"cube: dtype must be one of uint16, float32; got float64"),
    (np.zeros((0, 3, 5), np.uint16), r"every dimension must be >= 1"),
    (np.zeros((2, 3, 4), np.uint16), r"wavelengths: expected 4 values \(one per band\), got 5"),
    ([[1]], r"cube: expected a numpy array, got list"),
])
def test_frame_rejects_bad_cubes(cube, message):
    with pytest.raises(DataFormatError, match=message):
        Frame(cube, WL)


@pytest.mark.parametrize("wl, message", [
    ([500, 600, 550], r"strictly ascending, got 600 nm followed by 550 nm at index 1"),
    ([500, np.nan, 700], r"must be finite"),
    ([100, 200, 300], r"within 200-2500 nm, got 100-300 nm"),
    ([[500, 600]], r"expected a non-empty 1-D array"),
    (["a", "b"], r"expected numbers in nm"),
])
def test_wavelength_validation(wl, message):
    with pytest.raises(DataFormatError, match=message):
        validate_wavelengths(wl)


@pytest.mark.parametrize("kwargs, message", [
    ({"frame_id": -1}, r"frame_id: expected an integer >= 0, got -1"),
    ({"exposure_us": 0}, r"exposure_us: expected a finite value > 0, got 0"),
    ({"gain": float("nan")}, r"gain: expected a finite value > 0"),
    ({"bit_depth": 20}, r"bit_depth: expected 1-16, got 20"),
])
def test_meta_validation(kwargs, message):
    with pytest.raises(DataFormatError, match=message):
        FrameMeta(**kwargs)


def test_replace_copies_products():
    f = Frame(np.zeros((1, 1, 5), np.float32), WL)
    f.products["a"] = np.ones(1)
    g = f.replace()
    g.products["b"] = np.ones(1)
    g.flags.add("x")
    assert "b" not in f.products and not f.flags
