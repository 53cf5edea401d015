"""RGB previews (edge.physics.cube_to_rgb)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataFormatError
from edge.physics import cube_to_rgb, rgb_matrix, tissue_reflectance

TIVITA = np.linspace(500, 1000, 100)
SNAP16 = np.linspace(460, 600, 16)
SNAP25 = np.linspace(665, 960, 25)


@pytest.mark.parametrize("wl,mode", [(TIVITA, "true_colour"), (SNAP16, "true_colour"),
                                     (SNAP25, "pseudo_colour")])
def test_flat_grey_is_neutral(wl, mode):
    cube = np.full((3, 4, wl.size), 0.5, dtype=np.float32)
    rgb = cube_to_rgb(cube, wl)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert rgb_matrix(wl)[1] == mode
    # sRGB encoding of linear 0.5 is 0.7354 -> 188
    np.testing.assert_array_equal(rgb, 188)


def test_white_and_black():
    assert cube_to_rgb(np.ones((1, 1, 100)), TIVITA).tolist() == [[[255, 255, 255]]]
    assert cube_to_rgb(np.zeros((1, 1, 100)), TIVITA).tolist() == [[[0, 0, 0]]]


def test_srgb_of_known_xyz():
    # A perfect white through the unbalanced chain gives D65 XYZ; our white balance makes it
    # exactly (1,1,1); check the matrix rows sum to 1 per channel.
    m, _ = rgb_matrix(TIVITA)
    np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=1e-12)


def test_tissue_renders_reddish_and_nan_grey():
    r = tissue_reflectance(TIVITA, sto2=0.7, blood_volume=0.03, water=0.7, fat=0.1)
    cube = np.stack([r, r]).reshape(1, 2, 100).astype(np.float32)
    cube[0, 1, 7] = np.nan
    rgb = cube_to_rgb(cube, TIVITA)
    red, green, blue = rgb[0, 0].astype(int)
    assert red > green and red > blue
    assert rgb[0, 1].tolist() == [128, 128, 128]


def test_pseudo_colour_channel_order():
    # Reflectance rising with wavelength -> red channel brightest in the NIR fallback.
    cube = np.linspace(0.1, 0.9, 25)[None, None, :]
    r, g, b = cube_to_rgb(cube, SNAP25)[0, 0].astype(int)
    assert r > g > b


def test_errors():
    with pytest.raises(DataFormatError, match=r"last axis must have one value per wavelength "
                                              r"\(100\), got shape \(2, 2, 16\)"):
        cube_to_rgb(np.ones((2, 2, 16)), TIVITA)
    with pytest.raises(DataFormatError, match=r"gain: expected a finite value > 0, got 0"):
        cube_to_rgb(np.ones((2, 2, 100)), TIVITA, gain=0)
