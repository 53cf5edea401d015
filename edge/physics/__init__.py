"""Tissue optics: chromophore tables, reflectance forward models, band integration, RGB previews.

Public API (FACTS.md "Tissue optics" holds the formulas and data sources):

- :func:`chromophore_spectra`, :func:`molar_extinction`, :func:`baseline_terms`,
  :data:`CHROMOPHORES`, :data:`BASELINE_TERMS` -- the shared absorbance basis.
- :func:`tissue_reflectance` (Jacques 2013 µa mix + power-law µs′ + Farrell 1992 diffuse
  reflectance), :func:`tissue_absorption`, :func:`reduced_scattering`,
  :func:`farrell_reflectance`.
- :func:`beer_lambert_reflectance` -- exactly invertible test spectra.
- :func:`band_weights`, :func:`band_integrate` -- Gaussian camera bands.
- :func:`cube_to_rgb` -- true-colour (CIE 1931 / D65 / sRGB) or pseudo-colour previews.

Nothing here touches hardware or imports anything beyond NumPy.
"""

from __future__ import annotations

from edge.physics.colour import cube_to_rgb, rgb_matrix
from edge.physics.reflectance import (
    FWHM_TO_SIGMA,
    band_integrate,
    band_weights,
    beer_lambert_reflectance,
    farrell_reflectance,
    internal_reflection_A,
    reduced_scattering,
    tissue_absorption,
    tissue_reflectance,
)
from edge.physics.spectra import (
    BASELINE_TERMS,
    CHROMOPHORES,
    baseline_terms,
    chromophore_range,
    chromophore_spectra,
    load_table,
    molar_extinction,
)

__all__ = [
    "BASELINE_TERMS",
    "CHROMOPHORES",
    "FWHM_TO_SIGMA",
    "band_integrate",
    "band_weights",
    "baseline_terms",
    "beer_lambert_reflectance",
    "chromophore_range",
    "chromophore_spectra",
    "cube_to_rgb",
    "farrell_reflectance",
    "internal_reflection_A",
    "load_table",
    "molar_extinction",
    "reduced_scattering",
    "rgb_matrix",
    "tissue_absorption",
    "tissue_reflectance",
]
