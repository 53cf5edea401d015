"""Pipeline stages: small objects with one method, ``process(frame) -> frame``.

Stages own no threads; the :class:`~edge.pipeline.runner.Pipeline` times them and moves
frames.  A stage may report finer timings (e.g. the backend's calibrate/unmix/indices/pack
steps): it returns them from :meth:`Stage.sub_timings_ms` after each call, and the pipeline
records them beside the stage's own time (nothing is stored in the frame).
"""

from __future__ import annotations

import logging

import numpy as np

from edge.backends.base import Backend
from edge.core.chain import FLAG_MAPS_ONLY
from edge.core.frame import Frame
from edge.inference.base import Runtime

__all__ = ["Stage", "ChainStage", "InferStage", "PostStage"]

log = logging.getLogger(__name__)


class Stage:
    """Base class: ``name`` is used in timing tables and metrics."""

    name = "stage"

    def process(self, frame: Frame) -> Frame:  # pragma: no cover - interface
        raise NotImplementedError

    def sub_timings_ms(self) -> dict[str, float]:
        """Finer timings of the last call (name -> ms); empty if the stage has none."""
        return {}

    def close(self) -> None:
        pass


class ChainStage(Stage):
    """The per-pixel chain on a backend: calibrate -> unmix -> indices -> pack.

    Adds ``products``: every map of the backend (``sto2``, ``thb``, ...), ``flags`` (uint8
    pixel flags) and ``input`` (packed network input) when a pack spec is set; ``reflectance``
    when the backend returns it.
    """

    name = "chain"

    def __init__(self, backend: Backend):
        self.backend = backend
        self._last: dict[str, float] = {}

    def process(self, frame: Frame) -> Frame:
        result = self.backend.run(frame.cube, exposure_us=frame.meta.exposure_us)
        frame.products.update(result.maps)
        frame.products["flags"] = result.flags
        if result.input is not None:
            frame.products["input"] = result.input
        if result.reflectance is not None:
            frame.products["reflectance"] = result.reflectance
        self._last = dict(result.timings_ms)
        return frame

    def sub_timings_ms(self) -> dict[str, float]:
        return self._last

    def close(self) -> None:
        self.backend.close()


class InferStage(Stage):
    """Runs the segmentation model on ``products["input"]``; adds ``products["scores"]``.

    The input is what the chain produced: a host array, or a
    :class:`~edge.core.tensor.DeviceTensor` when the backend was asked for device output (only
    for a runtime that accepts it); the runtime checks either against its card.

    Non-finite model outputs do not crash the run: the frame gets the flag
    ``"nan_in_output"`` and its segmentation is withheld (the overlay shows no classes).
    """

    name = "infer"

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def process(self, frame: Frame) -> Frame:
        scores = self.runtime.run(frame.products["input"])
        if not np.all(np.isfinite(scores)):
            frame.flags.add("nan_in_output")
            log.warning("frame %d: model output contains NaN/inf; segmentation withheld",
                        frame.meta.frame_id)
        frame.products["scores"] = scores
        return frame

    def close(self) -> None:
        self.runtime.close()


class PostStage(Stage):
    """Class map from scores; products ``classes`` (uint8, 255 = withheld/invalid).

    The class is withheld where the input itself is unusable (saturated, non-finite, bad
    pixel, under-exposed white).  Pixels flagged only ``unmix_invalid`` (no haemoglobin
    signal, e.g. drapes and instruments) keep the model's class: the model was trained on the
    same zeroed input there and labels them background; so do the StO2 validity bits
    (``low_blood``, ``uncertain``, ``specular``: ``FLAG_MAPS_ONLY``), whose spectra are usable.
    """

    name = "post"

    #: Class id written where there is no valid prediction.
    NO_CLASS = 255

    def process(self, frame: Frame) -> Frame:
        scores = frame.products.get("scores")
        flags = frame.products.get("flags")
        if scores is None:
            return frame
        if "nan_in_output" in frame.flags:
            classes = np.full(scores.shape[2:], self.NO_CLASS, np.uint8)
        else:
            classes = np.argmax(scores[0], axis=0).astype(np.uint8)
        if flags is not None:
            classes[(flags & ~FLAG_MAPS_ONLY) != 0] = self.NO_CLASS
        frame.products["classes"] = classes
        return frame
