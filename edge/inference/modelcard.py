"""Model cards: what a segmentation model expects and produces (DESIGN.md, "Models").

A card is a YAML file next to the ONNX file::

    format: hsi-edge-model-card/1
    name: demo-unet
    onnx: demo.onnx                  # path relative to the card, inside its folder
    sha256: 3f5c...                  # checked at load (.onnx bytes plus external-data
                                     # files: onnx_hash); a card without one loads with a
                                     # warning ("hsi-edge model card-hash CARD --write")
    onnx_fp16: demo.fp16.onnx        # optional: the fp16 model ('hsi-edge model convert-fp16'),
                                     # built by strongly typed TensorRT (11.x) for fp16
    onnx_fp16_sha256: 9a0b...        # its hash, checked at load like sha256 ('card-hash --write')
    input:
      name: input
      layout: NCHW
      dtype: float32                 # or float16
      height: 480
      width: 640
      spectra:                       # L1-normalised reflectance channels (optional)
        wavelengths_nm: {start: 500, stop: 1000, count: 100}   # or an explicit list
      maps: [sto2, thi]              # per-pixel maps appended after the spectra
    output:
      name: logits
      kind: logits                   # or probabilities
      classes:
        - {id: 0, name: background, color: [0, 0, 0]}
        - {id: 1, name: liver, color: [180, 60, 60]}
    provenance: {training_data: "...", seed: 0, metrics: {...}}

The pipeline builds its pack stage from the card: channel ``c`` of the input is the L1
spectrum at the camera band closest to ``wavelengths_nm[c]`` (which must lie within
``band_tolerance_nm``), then the maps in order.

``onnx:`` is confined like ONNX external data (:func:`edge.inference.onnx_hash.confined_path`):
absolute paths, ``..`` and symbolic links leading out of the card's folder are refused, so a
card cannot make the loader open (or report on) any other file.  Class colours are RGB
integers 0-255.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.core.chain import MAP_NAMES, PackSpec
from edge.core.config import from_mapping, load_yaml, setting
from edge.core.fileio import sha256_file
from edge.errors import ConfigError, EngineError

__all__ = ["ModelCard", "InputSpec", "OutputSpec", "ClassSpec", "load_model_card",
           "MAP_FEATURES", "sha256_file"]

log = logging.getLogger(__name__)

#: Per-pixel maps a model may ask for (produced by every backend).
MAP_FEATURES = MAP_NAMES
CARD_FORMAT = "hsi-edge-model-card/1"


@dataclass(frozen=True)
class WavelengthGrid:
    start: float = setting(range=(200.0, 2500.0))
    stop: float = setting(range=(200.0, 2500.0))
    count: int = setting(range=(1, 4096))


@dataclass(frozen=True)
class SpectraSpec:
    wavelengths_nm: WavelengthGrid | tuple[float, ...]
    band_tolerance_nm: float = setting(3.0, range=(0.0, 50.0))

    def grid(self) -> np.ndarray:
        w = self.wavelengths_nm
        if isinstance(w, WavelengthGrid):
            return np.linspace(w.start, w.stop, w.count)
        return np.asarray(w, dtype=np.float64)


@dataclass(frozen=True)
class InputSpec:
    name: str
    height: int = setting(range=(1, 16384))
    width: int = setting(range=(1, 16384))
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32", "float16"] = "float32"
    spectra: SpectraSpec | None = None
    maps: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        n = 0 if self.spectra is None else len(self.spectra.grid())
        return n + len(self.maps)


@dataclass(frozen=True)
class ClassSpec:
    id: int = setting(range=(0, 255))
    name: str = ""
    color: tuple[int, int, int] = setting((0, 0, 0), range=(0, 255))


@dataclass(frozen=True)
class OutputSpec:
    name: str
    classes: tuple[ClassSpec, ...]
    kind: Literal["logits", "probabilities"] = "logits"


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; ``path`` is the card file, ``onnx_path`` the resolved model."""

    format: str
    name: str
    onnx: str
    input: InputSpec
    output: OutputSpec
    sha256: str | None = None
    onnx_fp16: str | None = None
    onnx_fp16_sha256: str | None = None
    description: str = ""
    provenance: dict[str, Any] | None = None
    path: str = ""

    @property
    def onnx_path(self) -> Path:
        return (Path(self.path).parent / self.onnx).resolve()

    @property
    def onnx_fp16_path(self) -> Path | None:
        """The card's fp16 model (``onnx_fp16``), or None when it declares none."""
        return (Path(self.path).parent / self.onnx_fp16).resolve() if self.onnx_fp16 else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.output.classes)

    @property
    def colors(self) -> np.ndarray:
        """Class colours, ndarray of shape (classes, 3), uint8, indexed by class id."""
        return np.array([c.color for c in self.output.classes], dtype=np.uint8)

    def pack_spec(self, camera_wavelengths_nm: np.ndarray) -> PackSpec:
        """Map the card's input channels onto a camera's bands.

        Raises
        ------
        EngineError
            If a wavelength the model needs has no camera band within the tolerance.
        """
        bands: list[int] = []
        spectra = self.input.spectra
        if spectra is not None:
            cam = np.asarray(camera_wavelengths_nm, dtype=np.float64)
            for want in spectra.grid():
                i = int(np.argmin(np.abs(cam - want)))
                if abs(cam[i] - want) > spectra.band_tolerance_nm:
                    raise EngineError(
                        f"model {self.name!r}: input channel at {want:.1f} nm has no camera band "
                        f"within {spectra.band_tolerance_nm:g} nm (camera covers "
                        f"{cam[0]:.1f}-{cam[-1]:.1f} nm in {cam.size} bands, nearest "
                        f"{cam[i]:.1f} nm); the model does not fit this camera")
                bands.append(i)
        return PackSpec(spectra_bands=tuple(bands), maps=self.input.maps,
                        dtype=self.input.dtype)


def load_model_card(path: str | os.PathLike, *, verify_hash: bool = True) -> ModelCard:
    """Load and validate a model card (and check the ONNX file exists and matches its hash).

    Raises
    ------
    ConfigError
        Bad YAML, unknown keys, wrong types, unknown map features, duplicate class ids.
    EngineError
        The ONNX file is missing or its sha256 differs from the card's.
    """
    p = Path(path)
    data = load_yaml(p, what="model card")
    if isinstance(data, dict):
        data = dict(data)
        data.pop("path", None)
    card = from_mapping(ModelCard, data, source=str(p))
    card = ModelCard(**{**card.__dict__, "path": str(p.resolve())})
    if card.format != CARD_FORMAT:
        raise ConfigError(f"{p}: format: expected {CARD_FORMAT!r}, got {card.format!r}")
    bad = [m for m in card.input.maps if m not in MAP_FEATURES]
    if bad:
        raise ConfigError(f"{p}: input.maps: unknown feature {bad[0]!r}; allowed: "
                          f"{', '.join(MAP_FEATURES)}")
    if card.input.channels == 0:
        raise ConfigError(f"{p}: input: the model needs at least one channel "
                          f"(input.spectra and/or input.maps)")
    ids = [c.id for c in card.output.classes]
    if sorted(ids) != list(range(len(ids))):
        raise ConfigError(f"{p}: output.classes: ids must be 0..{len(ids) - 1} without gaps "
                          f"or repeats, got {ids}")
    if card.input.spectra is not None:
        grid = card.input.spectra.grid()
        if grid.size > 1 and not np.all(np.diff(grid) > 0):
            raise ConfigError(f"{p}: input.spectra.wavelengths_nm: must be strictly ascending")
    from edge.inference.onnx_hash import confined_path

    onnx, problem = confined_path(p, card.onnx, "the card's folder")
    if onnx is None:
        raise ConfigError(f"{p}: onnx: {card.onnx!r} {problem}")
    if not card.onnx_path.is_file():
        raise EngineError(f"{p}: onnx: model file {card.onnx_path} not found")
    if card.onnx_fp16 is not None:
        fp16, problem = confined_path(p, card.onnx_fp16, "the card's folder")
        if fp16 is None:
            raise ConfigError(f"{p}: onnx_fp16: {card.onnx_fp16!r} {problem}")
        if not card.onnx_fp16_path.is_file():
            raise EngineError(f"{p}: onnx_fp16: model file {card.onnx_fp16_path} not found")
    models = [("sha256", card.sha256, card.onnx_path, card.onnx)]
    if card.onnx_fp16 is not None:
        models.append(("onnx_fp16_sha256", card.onnx_fp16_sha256, card.onnx_fp16_path,
                       card.onnx_fp16))
    elif card.onnx_fp16_sha256 is not None:
        raise ConfigError(f"{p}: onnx_fp16_sha256: given, but the card declares no onnx_fp16")
    for key, want, model, name in models:
        if not want:
            log.warning("%s: the card has no %s, so a damaged or replaced %s cannot be "
                        "detected; add it with 'hsi-edge model card-hash %s --write'", p, key,
                        name, p)
        elif verify_hash:
            # The model's content: the .onnx bytes plus any external-data weight files (equal
            # to the file's sha256 for a self-contained model), so replaced weights are caught.
            from edge.inference.onnx_hash import onnx_content_sha256

            got = onnx_content_sha256(model)
            if got != want.lower():
                raise EngineError(f"{model}: sha256 {got[:12]}... does not match the model card's "
                                  f"{key} ({want[:12]}...); the file is corrupt or replaced")
    return card
