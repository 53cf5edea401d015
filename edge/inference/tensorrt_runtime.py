"""TensorRT runtime: build (cached) an engine from the card's ONNX and run it on the GPU.

TensorRT and PyCUDA are imported only inside functions, so ``import edge`` works without them;
without TensorRT, :func:`import_tensorrt` raises :class:`BackendUnavailable` naming the package.

Versions (FACTS.md, "GPU, Jetson and TensorRT"):

- **10.x** (JetPack 6 ships 10.3): weakly typed by default; ``precision="fp16"`` sets
  ``BuilderFlag.FP16`` on the fp32 ONNX.  ``strongly_typed=True`` instead builds a strongly
  typed network whose precision is the ONNX graph's own (use ``hsi-edge model convert-fp16``).
- **11.x**: the FP16/INT8 builder flags are gone and every network is strongly typed, so
  ``precision="fp16"`` needs an fp16 ONNX (``onnx_path=`` the converted file, or the card's
  ``onnx_fp16``); the graph's types are checked against the requested precision before
  building.  ``precision="auto"`` (the default) builds fp32 there when the card declares no
  fp16 model, with a warning.  Code that only 10.x
  has lives in functions named ``*_v10`` and is called only under ``major < TRT11``.

Building (versions, profiles, timing cache, cache key) is in
:mod:`edge.inference.tensorrt_build`.  Every TensorRT name used in both modules is checked
against ``tensorrt-stubs`` in ``tests/inference/trt_engine/test_trt_api_names.py``
(annotations like ``"trt.ICudaEngine"`` on parameters feed that check's type inference).

Input: :meth:`TensorRTRuntime.run` takes a host array or, since the runtime
:attr:`~edge.inference.base.Runtime.accepts_device_input`, a
:class:`~edge.core.tensor.DeviceTensor` -- e.g. the packed input the CUDA backend left on the
device (``device_output``); both share the device's primary context.  Either kind is checked
against the card first (shape, dtype: :meth:`Runtime.run`).  A host array is copied through a
page-locked buffer on the runtime's own stream (the parity gate's path); a device tensor is
bound as the engine's input address in place, and the engine runs on the tensor's stream, so
it is ordered after the kernel that wrote it -- no host round trip for the input.

Output: the logits land in a device buffer owned by this runtime
(:attr:`TensorRTRuntime.output_device_ptr`) and are always copied to the host for the host
post stage (:class:`edge.pipeline.stages.PostStage`: argmax and overlay on the CPU).  There
is no GPU post-processing kernel.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.core.tensor import DeviceTensor
from cuda_kernels.driver import primary_context
from edge.errors import ConfigError, EngineError
from edge.inference.base import Runtime, TensorInfo
from edge.inference.engine_cache import EngineCache, EngineKey
from edge.inference.modelcard import ModelCard
from edge.inference.tensorrt_build import (  # noqa: F401  (re-exported)
    OPT_LEVEL, PRECISIONS, TRT11, _import_cuda, _logger, build_engine, build_serialized_engine,
    build_settings, engine_key, gpu_identity, gpu_sm_count, import_tensorrt, profile_shapes,
    trt_major)

if TYPE_CHECKING:  # names for annotations only; at run time TensorRT is imported lazily
    import tensorrt as trt  # noqa: F401

__all__ = ["TensorRTRuntime", "import_tensorrt", "trt_major", "engine_key", "build_engine",
           "build_serialized_engine", "profile_shapes", "gpu_identity", "gpu_sm_count",
           "build_settings", "TRT11", "OPT_LEVEL"]

log = logging.getLogger(__name__)


class _Undeserializable(EngineError):
    """``deserialize_cuda_engine`` returned None for a plan."""


def _dtype_name(trt, dt, tensor: str = "?") -> str:
    try:
        return np.dtype(trt.nptype(dt)).name
    except TypeError:  # BF16, FP8, INT4, ... have no numpy type
        raise EngineError(f"engine tensor {tensor!r} has TensorRT type {dt}, which has no numpy "
                          f"equivalent; keep the model's inputs/outputs float32 or float16 "
                          f"(convert-fp16 keeps them by default)") from None


class TensorRTRuntime(Runtime):
    """Runs the card's model as a cached TensorRT engine.

    Parameters
    ----------
    card : ModelCard
    cache_dir : path, optional
        Engine cache directory (default :func:`edge.inference.engine_cache.default_cache_dir`).
    precision : {"auto", "fp16", "fp32"}
        ``auto``: fp16 where this TensorRT can build it from the card (the FP16 flag on 10.x,
        the card's ``onnx_fp16`` on 11.x), else fp32
        (:func:`~edge.inference.tensorrt_build.resolve_precision`).
    strongly_typed : bool, optional
        Default: weak on 10.x, strong on 11.x (the only option there).
    workspace_mib : int
        Builder workspace limit.
    onnx_path : path, optional
        Build from this ONNX instead of the card's (e.g. the fp16-converted model).
    require_verified : bool
        Refuse an engine that has not passed ``hsi-edge engine check``.
    device : int
        CUDA device ordinal.
    threads : int, optional
        Accepted for interface compatibility with ONNX Runtime; unused.
    progress : bool
        Progress bars while an engine builds (``hsi-edge run --no-progress``: False; never on
        a non-terminal or under systemd).
    """

    name = "tensorrt"
    accepts_device_input = True

    def __init__(self, card: ModelCard, *, cache_dir=None,
                 precision: str = "auto", strongly_typed: bool | None = None,
                 workspace_mib: int = 1024, onnx_path=None, require_verified: bool = False,
                 device: int = 0, threads: int | None = None, progress: bool = True):
        super().__init__(card)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got "
                              f"{precision!r}")
        self.cache = EngineCache(cache_dir)
        self.precision, self.strongly_typed = precision, strongly_typed
        self.workspace_mib, self.onnx_path = workspace_mib, onnx_path
        self.require_verified, self.device = require_verified, device
        self.progress = bool(progress)
        self.key: EngineKey | None = None
        self._trt = self._cuda = self._ctx = self._runtime = None
        self._engine = self._context = self._stream = None
        self._io: dict[str, tuple[tuple[int, ...], str, bool]] = {}
        self._dev: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}

    # -- loading -------------------------------------------------------------------------
    def load(self) -> "TensorRTRuntime":
        """Load (build or reuse the engine, allocate buffers); on any failure release what was
        acquired (primary-context reference, device and pinned buffers) before re-raising,
        since ``with`` does not call ``close()`` when ``__enter__`` raises."""
        try:
            super().load()
        except BaseException:
            self.close()
            raise
        return self

    def _do_load(self) -> None:
        trt = self._trt = import_tensorrt()
        cuda = self._cuda = _import_cuda()
        # Shared with the kernels, retained once per process: pushed and popped, never
        # detached (cuda_kernels.driver.primary_context).
        self._ctx = primary_context(cuda, self.device)
        self._ctx.push()
        try:
            self.key, plan, built = self._build(force=False)
            try:
                self._deserialize(trt, plan)
            except _Undeserializable:
                if built:
                    raise
                # A cached plan this TensorRT cannot load (a plugin library missing when it
                # was built, a driver update): rebuild it once instead of failing every load
                # until a manual 'engine clear' (tensorrt_review.md item 4).
                log.warning("TensorRT %s could not deserialize the cached engine %s; "
                            "discarding it and rebuilding", trt.__version__,
                            self.cache.path_for(self.key).name)
                self.key, plan, built = self._build(force=True)
                self._deserialize(trt, plan)
            verified = self.cache.is_verified(self.key)
            if self.require_verified and not verified:
                raise EngineError(f"engine {self.cache.path_for(self.key).name} has not passed "
                                  f"the parity gate; run 'hsi-edge engine check'")
            if not verified:
                log.warning("engine %s is not verified; run 'hsi-edge engine check'",
                            self.cache.path_for(self.key).name)
            self._allocate(cuda)
        finally:
            self._ctx.pop()

    def _build(self, force: bool):
        return build_engine(self.card, cache=self.cache, precision=self.precision,
                            strongly_typed=self.strongly_typed,
                            workspace_mib=self.workspace_mib, onnx_path=self.onnx_path,
                            device=self.device, progress=self.progress, force=force)

    def _deserialize(self, trt, plan: bytes) -> None:
        # The Runtime must outlive the engine and the engine the context: close() drops them
        # in the reverse order.
        self._runtime = trt.Runtime(_logger(trt))
        engine = self._engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise _Undeserializable(f"TensorRT could not deserialize "
                                    f"{self.cache.path_for(self.key)}, even as just built; "
                                    f"see the TensorRT messages above (a plugin library "
                                    f"missing?), then 'hsi-edge engine clear' and rebuild")
        ctx = self._context = engine.create_execution_context()
        if ctx is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU "
                              "memory?)")
        opt = {name: tuple(o) for name, _, o, _ in profile_shapes(self.card)}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        for name in names:  # inputs first: output shapes follow from the input shapes
            if modes[name] and any(int(d) < 0 for d in engine.get_tensor_shape(name)):
                if name not in opt or not ctx.set_input_shape(name, opt[name]):
                    raise EngineError(f"engine input {name!r}: cannot set shape "
                                      f"{opt.get(name)} (card inputs: {sorted(opt)})")
        for name in names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"engine tensor {name!r} has unresolved shape {shape} "
                                  f"(data-dependent output shapes are not supported)")
            dtype = _dtype_name(trt, engine.get_tensor_dtype(name), name)
            self._io[name] = (shape, dtype, modes[name])

    def _allocate(self, cuda) -> None:
        self._stream = cuda.Stream()
        for name, (shape, dtype, _) in self._io.items():
            self._host[name] = cuda.pagelocked_empty(shape, dtype)
            self._dev[name] = cuda.mem_alloc(self._host[name].nbytes)

    # -- description -----------------------------------------------------------------------
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(n, s, d) for n, (s, d, i) in self._io.items() if i]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(n, s, d) for n, (s, d, i) in self._io.items() if not i]

    @property
    def output_device_ptr(self) -> int:
        """Device pointer of the output (logits) buffer, valid after :meth:`load`."""
        return int(self._dev[self.card.output.name])

    # -- execution -----------------------------------------------------------------------
    def _bind(self, input_ptr: int) -> None:
        ctx: "trt.IExecutionContext" = self._context
        for name, (_, _, is_input) in self._io.items():
            ptr = input_ptr if is_input else int(self._dev[name])
            if not ctx.set_tensor_address(name, ptr):
                raise EngineError(f"TensorRT rejected the address of tensor {name!r}")

    def _finish(self, stream) -> np.ndarray:
        """Copy the logits to the host on ``stream`` and wait for it (context pushed)."""
        out = self.card.output.name
        self._cuda.memcpy_dtoh_async(self._host[out], self._dev[out], stream)
        stream.synchronize()
        return self._host[out].astype(np.float32)  # a copy: the pinned buffer is reused

    def _do_run(self, x: np.ndarray) -> np.ndarray:
        cuda, inp = self._cuda, self.card.input.name
        self._ctx.push()
        try:
            np.copyto(self._host[inp], x)
            cuda.memcpy_htod_async(self._dev[inp], self._host[inp], self._stream)
            self._bind(int(self._dev[inp]))
            ctx: "trt.IExecutionContext" = self._context
            if not ctx.execute_async_v3(self._stream.handle):
                raise EngineError("TensorRT execute_async_v3 failed (see TensorRT messages)")
            return self._finish(self._stream)
        finally:
            self._ctx.pop()

    def _do_run_device(self, x: DeviceTensor) -> np.ndarray:
        """The engine reads ``x`` in place, on ``x.stream`` (ordered after its producer)."""
        self._ctx.push()
        try:
            self._bind(x.ptr)
            ctx: "trt.IExecutionContext" = self._context
            if not ctx.execute_async_v3(x.stream):
                raise EngineError("TensorRT execute_async_v3 failed (see TensorRT messages)")
            # PyCUDA cannot wait on a stream it knows only by handle: wait for the context
            # (the engine's work on x.stream), then copy the logits on our own stream.
            self._cuda.Context.synchronize()
            return self._finish(self._stream)
        finally:
            self._ctx.pop()

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.push()
            try:
                for buf in self._dev.values():
                    buf.free()
                self._dev.clear()
                self._host.clear()
                self._io.clear()
                self._context = self._engine = self._runtime = self._stream = None
            finally:
                self._ctx.pop()
                self._ctx = None   # stays retained for the process (primary_context)
        super().close()
