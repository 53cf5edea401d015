"""Calibration: dark/white references, flat-field records (and later wavelength checks, QA).

Imports go one way (DESIGN.md): ``calibration`` may use ``drivers``, ``edge.core`` and
``edge.processing``; the pipeline, CLI and deploy use ``calibration``.
"""

from calibration.records import MASK_NAMES, RECORD_FILE, CalibrationRecord  # noqa: F401
from calibration.references import (  # noqa: F401
    DarkReference, WhiteReference, capture_dark, capture_white,
)
