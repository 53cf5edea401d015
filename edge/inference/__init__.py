"""Inference runtimes: ONNX Runtime (always) and TensorRT (optional, imported lazily).

A model is an ONNX file plus a model card (YAML, :mod:`edge.inference.modelcard`).  Runtimes
implement :class:`edge.inference.base.Runtime`; :func:`open_runtime` picks one by name.
"""

from edge.inference.base import Runtime, TensorInfo, open_runtime  # noqa: F401
from edge.inference.modelcard import ModelCard, load_model_card  # noqa: F401
