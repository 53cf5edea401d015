"""ONNX Runtime on the CPU: the reference runtime that works everywhere."""

from __future__ import annotations

import logging

import numpy as np

from edge.errors import BackendUnavailable, EngineError
from edge.inference.base import Runtime, TensorInfo
from edge.inference.modelcard import ModelCard

__all__ = ["OnnxRuntimeRuntime", "ORT_TYPES"]

log = logging.getLogger(__name__)

#: ONNX Runtime type strings -> numpy dtype names.
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
             "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(uint8)": "uint8"}


def _info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(arg.name, shape, ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeRuntime(Runtime):
    """Runs the card's ONNX model with ``onnxruntime.InferenceSession`` (CPU provider).

    Parameters
    ----------
    card : ModelCard
    threads : int, optional
        Intra-op threads (default: ONNX Runtime's choice, one per core).
    """

    name = "onnxruntime"

    def __init__(self, card: ModelCard, threads: int | None = None):
        super().__init__(card)
        self.threads = threads
        self._session = None

    def _do_load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # core dependency, but say clearly if it is broken
            raise BackendUnavailable(f"onnxruntime is not importable ({exc}); "
                                     f"pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        path = self.card.onnx_path
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"{path}: ONNX Runtime cannot load the model: {first}") from None
        log.info("onnxruntime %s loaded %s", ort.__version__, path.name)

    def inputs(self) -> list[TensorInfo]:
        return [_info(a) for a in self._session.get_inputs()]

    def outputs(self) -> list[TensorInfo]:
        return [_info(a) for a in self._session.get_outputs()]

    def _do_run(self, x: np.ndarray) -> np.ndarray:
        (y,) = self._session.run([self.card.output.name], {self.card.input.name: x})
        return np.asarray(y, dtype=np.float32)

    def close(self) -> None:
        self._session = None
        super().close()
