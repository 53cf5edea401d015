"""The runtime contract: load an ONNX model described by a card, run it, describe its tensors.

Runtimes are context managers and do nothing expensive until :meth:`Runtime.load` (called by
``__enter__``), following the "loaders do nothing until called" house rule.

Input lives on the host (``numpy.ndarray``) or on the device
(:class:`edge.core.tensor.DeviceTensor`, e.g. the CUDA backend's packed input left where its
kernel wrote it).  A runtime declares
:attr:`Runtime.accepts_device_input`; :meth:`Runtime.run` checks either kind against the card
(shape, dtype) and refuses device input a runtime cannot read, so the composition layer asks a
backend for device output only when the runtime takes it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.core.tensor import DeviceTensor, describe
from edge.errors import BackendUnavailable, EngineError
from edge.inference.modelcard import ModelCard

__all__ = ["Runtime", "TensorInfo", "open_runtime", "RUNTIMES", "check_io_against_card"]

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``None`` or a string for a dynamic dimension) and numpy dtype of a tensor."""

    name: str
    shape: tuple[Any, ...]
    dtype: str


def check_io_against_card(card: ModelCard, inputs: list[TensorInfo],
                          outputs: list[TensorInfo]) -> None:
    """Raise EngineError unless the model's tensors match what the card promises."""
    src = card.onnx_path.name
    by_name = {t.name: t for t in inputs}
    spec = card.input
    if spec.name not in by_name:
        raise EngineError(f"{src}: the model card names input {spec.name!r} but the model's "
                          f"inputs are {sorted(by_name)}")
    t = by_name[spec.name]
    if len(t.shape) != 4:
        raise EngineError(f"{src}: input {t.name!r} must be 4-D NCHW, model has shape {t.shape}")
    want = (None, spec.channels, spec.height, spec.width)
    for axis, (got, exp, label) in enumerate(zip(t.shape, want, "NCHW")):
        if exp is not None and isinstance(got, int) and got != exp:
            raise EngineError(
                f"{src}: input {t.name!r} axis {label} is {got} in the model but the card says "
                f"{exp} (shape {t.shape}); card and model do not match")
    if t.dtype != spec.dtype:
        raise EngineError(f"{src}: input {t.name!r} is {t.dtype} in the model but the card "
                          f"says {spec.dtype}")
    out_names = {o.name: o for o in outputs}
    if card.output.name not in out_names:
        raise EngineError(f"{src}: the model card names output {card.output.name!r} but the "
                          f"model's outputs are {sorted(out_names)}")
    o = out_names[card.output.name]
    k = len(card.output.classes)
    if len(o.shape) != 4 or (isinstance(o.shape[1], int) and o.shape[1] != k):
        raise EngineError(f"{src}: output {o.name!r} has shape {o.shape}; the card lists {k} "
                          f"classes, so expected (N, {k}, H, W)")


class Runtime(ABC):
    """An inference runtime bound to one model card."""

    name = "abstract"
    #: True for a runtime that reads a :class:`DeviceTensor` in place (it implements
    #: :meth:`_do_run_device`); others take host arrays only.
    accepts_device_input: bool = False

    def __init__(self, card: ModelCard):
        self.card = card
        self._loaded = False

    def load(self) -> "Runtime":
        """Load the model (idempotent); validates its tensors against the card."""
        if not self._loaded:
            self._do_load()
            check_io_against_card(self.card, self.inputs(), self.outputs())
            self._loaded = True
        return self

    def run(self, x: np.ndarray | DeviceTensor) -> np.ndarray:
        """Run one input.

        Parameters
        ----------
        x : ndarray or DeviceTensor of shape (1, C, H, W), dtype per card
            Packed network input: a host array, or -- for a runtime that
            :attr:`accepts_device_input` -- a tensor in device memory.

        Returns
        -------
        ndarray of shape (1, classes, H, W), float32
            The card's output tensor (logits or probabilities), on the host.

        Raises
        ------
        EngineError
            ``x`` has another shape or dtype than the card's input, is a DeviceTensor for a
            runtime that takes host arrays only, or is neither kind.
        """
        on_device = isinstance(x, DeviceTensor)
        if not on_device and not isinstance(x, np.ndarray):
            raise EngineError(f"input: expected a numpy array or a DeviceTensor, got "
                              f"{describe(x)}")
        if on_device and not self.accepts_device_input:
            raise EngineError(f"input: runtime {self.name} takes host arrays, got a "
                              f"{describe(x)}; ask the backend for host output")
        if not self._loaded:
            self.load()
        spec = self.card.input
        want = (1, spec.channels, spec.height, spec.width)
        if tuple(x.shape) != want:
            raise EngineError(f"input: expected shape {want} for model {self.card.name!r}, "
                              f"got {tuple(x.shape)}")
        if x.dtype != np.dtype(spec.dtype):
            raise EngineError(f"input: expected dtype {spec.dtype}, got {x.dtype}")
        return self._do_run_device(x) if on_device else self._do_run(x)

    @abstractmethod
    def inputs(self) -> list[TensorInfo]:
        """Model inputs as the runtime sees them."""

    @abstractmethod
    def outputs(self) -> list[TensorInfo]:
        """Model outputs as the runtime sees them."""

    @abstractmethod
    def _do_load(self) -> None: ...

    @abstractmethod
    def _do_run(self, x: np.ndarray) -> np.ndarray: ...

    def _do_run_device(self, x: DeviceTensor) -> np.ndarray:
        """Run a checked device input (runtimes with :attr:`accepts_device_input`)."""
        raise NotImplementedError(f"{type(self).__name__} declares accepts_device_input but "
                                  f"does not implement _do_run_device")

    def close(self) -> None:
        """Release the session/engine (idempotent)."""
        self._loaded = False

    def __enter__(self) -> "Runtime":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()


def tensorrt_usable() -> bool:
    try:
        from edge.inference.tensorrt_build import import_tensorrt
        import_tensorrt()
    except (ImportError, BackendUnavailable):
        return False
    return True


def open_runtime(name: str, card: ModelCard, *, gpu_chain: bool = False,
                 **options: Any) -> Runtime:
    """Create (not yet load) a runtime by name.

    ``auto`` picks TensorRT when the ``tensorrt`` package is usable and the chain runs on the
    GPU (``gpu_chain``: the backend is cuda), otherwise ONNX Runtime, and logs which it picked.
    Other ``options`` go to the runtime's constructor (``threads`` is the one ONNX Runtime
    takes).

    Raises
    ------
    ConfigError-like EngineError
        Unknown runtime name.
    BackendUnavailable
        The requested runtime is not installed.
    """
    if name not in RUNTIMES:
        raise EngineError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {name!r}")
    if name == "auto":
        name = "tensorrt" if gpu_chain and tensorrt_usable() else "onnxruntime"
        log.info("runtime auto: picked %s", name)
    if name == "onnxruntime":
        from edge.inference.onnxruntime_runtime import OnnxRuntimeRuntime
        return OnnxRuntimeRuntime(card, **{k: v for k, v in options.items()
                                           if k in ("threads",)})
    try:
        from edge.inference.tensorrt_runtime import TensorRTRuntime
    except ModuleNotFoundError as exc:  # the module itself is missing in this build
        raise BackendUnavailable(f"tensorrt runtime not available: {exc}") from None
    return TensorRTRuntime(card, **options)
