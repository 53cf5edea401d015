"""The inference runtime of the main job, loaded, with ``auto``'s fallback to ONNX Runtime.

``auto`` picks TensorRT when it imports and the chain runs on the GPU
(:func:`edge.inference.open_runtime`); whether the engine can then be built is known only at
load (e.g. TensorRT 11 with a card that asks for fp16 it cannot build, an unsupported layer,
no loadable CUDA driver for PyCUDA).  For ``auto`` that is not fatal: the job falls back to
ONNX Runtime and says why in a warning (research/tensorrt_review.md item 1).  A runtime that
was asked for by name still fails with its one-line error.
"""

from __future__ import annotations

import logging
from typing import Any

from edge.errors import BackendUnavailable, EngineError

__all__ = ["load_runtime"]

log = logging.getLogger(__name__)


def load_runtime(name: str, card, *, gpu_chain: bool = False, threads: int | None = None,
                 precision: str = "auto", progress: bool = False, **options: Any):
    """Open and load the runtime ``name`` for ``card``; ``auto`` falls back to ONNX Runtime
    when TensorRT cannot load the model.

    Parameters
    ----------
    name : {"auto", "onnxruntime", "tensorrt"}
    gpu_chain : bool
        The per-pixel chain runs on the GPU (the cuda backend): ``auto`` may pick TensorRT.
    threads : int, optional
        ONNX Runtime intra-op threads.
    precision : {"auto", "fp16", "fp32"}
        TensorRT build precision (``model.precision``).
    progress : bool
        TensorRT build progress bars (``hsi-edge run --no-progress``: False).

    Returns
    -------
    Runtime
        Loaded.
    """
    from edge.inference import open_runtime

    trt_options = dict(precision=precision, progress=progress, **options)
    rt = open_runtime(name, card, gpu_chain=gpu_chain, threads=threads,
                      **(trt_options if name != "onnxruntime" else {}))
    try:
        return rt.load()
    except (EngineError, BackendUnavailable) as exc:
        if name != "auto" or rt.name != "tensorrt":
            raise
        log.warning("runtime auto: TensorRT cannot run model %r here (%s); falling back to "
                    "onnxruntime", card.name, exc)
    return open_runtime("onnxruntime", card, threads=threads).load()
