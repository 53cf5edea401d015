"""Core types shared by every layer: frames, configuration loading, wavelength grids."""

from edge.core.frame import Frame, FrameMeta, validate_wavelengths  # noqa: F401
