"""Per-pixel processing stages, NumPy reference implementations.

These functions are THE reference every CUDA kernel is checked against (DESIGN.md, "The frame
path"): flat-field calibration (:mod:`.flatfield`), absorbance and linear unmixing
(:mod:`.unmixing`), calibrated StO2 (:mod:`.sto2`), TIVITA-style indices (:mod:`.indices`),
packing into the network input (:mod:`.pack`) and post-processing (:mod:`.post`).
"""

from __future__ import annotations

from edge.processing.indices import IndexParams, tivita_indices
from edge.processing.pack import l1_normalize, pack_input
from edge.processing.post import argmax, colorbar, colormap, overlay, softmax
from edge.processing.sto2 import (SimulationRanges, Sto2Calibration, estimate_sto2,
                                  evaluate_sto2)
from edge.processing.unmixing import Unmixer, absorbance

__all__ = ["absorbance", "Unmixer", "Sto2Calibration", "SimulationRanges", "estimate_sto2",
           "evaluate_sto2", "IndexParams", "tivita_indices", "l1_normalize", "pack_input",
           "softmax", "argmax", "overlay", "colormap", "colorbar"]

try:  # written by another helper; exported here once it exists
    from edge.processing.flatfield import FlatField  # noqa: F401
except ImportError:  # pragma: no cover - transitional
    pass
else:
    __all__.append("FlatField")
