"""Segmentation models shipped with hsi-edge, and tools to make them.

- ``edge/models/demo/``: the demo models (ONNX + model card) trained on simulated scenes,
  one per camera preset (:func:`demo_card_path`); regenerate with ``hsi-edge train-demo``.
- :mod:`edge.models.htc_export`: export htc ``Unet("efficientnet-b5")`` checkpoints
  (``hsi-edge model export-htc``).
- :mod:`edge.models.train`: training code (needs the ``train`` extra, PyTorch on the CPU).

Importing this package needs no PyTorch.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import ConfigError

__all__ = ["DEMO_DIR", "DEMO_MODELS", "demo_card_path"]

DEMO_DIR = Path(__file__).resolve().parent / "demo"
#: Camera preset -> card file name of its demo model.
DEMO_MODELS = {"tivita": "demo-tivita.yaml", "snapshot25": "demo-snapshot25.yaml"}


def demo_card_path(preset: str = "tivita") -> Path:
    """Path of the shipped demo model card for a camera preset.

    Raises
    ------
    ConfigError
        No demo model for this preset (names the presets that have one).
    """
    if preset not in DEMO_MODELS:
        raise ConfigError(f"preset: no demo model for {preset!r}; demo models exist for "
                          f"{', '.join(DEMO_MODELS)}")
    return DEMO_DIR / DEMO_MODELS[preset]
