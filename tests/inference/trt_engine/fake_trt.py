"""A hand-written stand-in for the ``tensorrt`` module, for CPU tests of the build/load logic.

It models only what ``edge.inference.tensorrt_build``/``tensorrt_runtime`` rely on, with the semantics the
TensorRT 10.x Python API documents (tensorrt-stubs 10.13 docstrings):

- ``IProgressMonitor`` / ``ILogger`` subclasses must call the base ``__init__`` (pybind11
  trampolines raise ``TypeError: ... __init__() must be called`` otherwise; modelled by a flag
  the builder checks).
- ``IOptimizationProfile.set_shape`` on a static input is allowed only with min=opt=max=the
  static shape, else ``RuntimeError`` (the binding's check, TensorRT 10.3 ``pyCore.cpp``).
- ``init_libnvinfer_plugins(logger, namespace)`` registers the standard plugins (recorded
  in ``events``) and returns True.
- ``IBuilderConfig.create_timing_cache(b"")`` makes an empty cache; ``set_timing_cache``
  and ``ITimingCache.combine`` return False for a cache from another device when
  ``ignore_mismatch`` is False (a serialized cache shows what was combined as ``&<blob>``).
- ``nptype`` raises ``TypeError`` for types without a numpy equivalent (BF16).
- ``major=11`` removes ``BuilderFlag.FP16`` (TensorRT 10->11 migration guide), so a use of it
  on the 11.x path fails with AttributeError as it would there.

It is not TensorRT: numbers, kernels and real build failures stay for tests/tensorrt_real.
"""

from __future__ import annotations

import types

import numpy as np


class _Enum:
    def __init__(self, cls: str, name: str):
        self.cls, self.name = cls, name

    def __repr__(self) -> str:
        return f"{self.cls}.{self.name}"


def _enum(cls: str, *names: str) -> type:
    return type(cls, (), {n: _Enum(cls, n) for n in names})


def make_fake_trt(major: int = 10, *, inputs=None, outputs=None, layer_dtypes=("FLOAT",),
                  parse_errors=(), build_ok: bool = True, version: str | None = None):
    """A fake ``tensorrt`` module.

    Parameters
    ----------
    inputs, outputs : dict name -> (shape, dtype name)
        The parsed network's inputs (shape may hold -1) and the engine's outputs.
    layer_dtypes : sequence of DataType names produced by the network's layers.
    parse_errors : sequence of str
        Non-empty: ``OnnxParser.parse`` fails with these errors.
    build_ok : bool
        False: ``build_serialized_network`` starts a phase, then returns None.
    version : str, optional
        ``__version__`` (default ``"<major>.3.0.30"``).
    """
    inputs = dict(inputs or {"input": ((1, 4, 8, 12), "FLOAT")})
    outputs = dict(outputs or {"logits": ((1, 3, 8, 12), "FLOAT")})
    trt = types.ModuleType("tensorrt")  # a module, as the real one: weak-referenceable
    trt.__version__, trt.events = version or f"{major}.3.0.30", []
    flags = ["TF32"] + (["FP16"] if major < 11 else [])
    trt.BuilderFlag = _enum("BuilderFlag", *flags)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = _enum("MemoryPoolType", "WORKSPACE")
    trt.DataType = _enum("DataType", "FLOAT", "HALF", "BF16")
    trt.TensorIOMode = _enum("TensorIOMode", "INPUT", "OUTPUT")
    trt.Dims = lambda dims: tuple(int(d) for d in dims)
    np_of = {"FLOAT": np.float32, "HALF": np.float16}

    def nptype(dt):
        if dt.name not in np_of:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np_of[dt.name]

    trt.nptype = nptype
    dtype = lambda name: getattr(trt.DataType, name)  # noqa: E731

    class ILogger:
        Severity = _enum("Severity", "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")

        def __init__(self):
            self._base_init = True

    class IProgressMonitor:
        def __init__(self):
            self._base_init = True

    def _require_init(obj, what):
        if not getattr(obj, "_base_init", False):
            raise TypeError(f"{what}.__init__() must be called when overriding __init__")

    trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor

    def init_libnvinfer_plugins(logger, namespace):
        _require_init(logger, "ILogger")
        trt.events.append(("init_plugins", namespace))
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    class Tensor:
        def __init__(self, name, shape, dt):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype(dt)

    class Layer:
        def __init__(self, dt):
            self.num_outputs, self._out = 1, Tensor("t", (1,), dt)

        def get_output(self, i):
            return self._out

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self._inputs = [Tensor(n, s, d) for n, (s, d) in inputs.items()]
            self._layers = [Layer(d) for d in layer_dtypes]
            self.num_inputs, self.num_layers = len(self._inputs), len(self._layers)

        def get_input(self, i):
            return self._inputs[i]

        def get_layer(self, i):
            return self._layers[i]

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            _require_init(logger, "ILogger")
            self.num_errors = 0

        def parse(self, blob, path):
            trt.events.append(("parse", path))
            self.num_errors = len(parse_errors)
            return not parse_errors

        def get_error(self, i):
            return ParserError(parse_errors[i])

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            real = {t.name: t.shape for t in Network(0)._inputs}[name]
            for r, a, o, h in zip(real, lo, opt, hi):
                if r >= 0 and not a == o == h == r:
                    raise RuntimeError("Shape provided for min is inconsistent with other "
                                       "shapes.")
            self.shapes[name] = (lo, opt, hi)

    class TimingCache:
        def __init__(self, blob):
            self.blob, self.combined = bytes(blob), []

        def combine(self, other, ignore_mismatch):
            if other.blob.startswith(b"foreign") and not ignore_mismatch:
                return False
            self.combined.append(other.blob)
            return True

        def serialize(self):
            return memoryview(b"TIMING:" + self.blob.split(b":")[-1] + b"+new"
                              + b"".join(b"&" + c for c in self.combined))

    class Config:
        def __init__(self):
            self.flags = {"TF32"}  # TensorRT enables TF32 by default
            self.pools, self.profiles, self.timing = {}, [], None
            self.builder_optimization_level = 3
            self.progress_monitor = None

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool.name] = size

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob):
            if bytes(blob).startswith(b"corrupt"):
                raise RuntimeError("invalid timing cache")
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.blob.startswith(b"foreign") and not ignore_mismatch:
                return False
            self.timing = cache
            return True

    class Builder:
        def __init__(self, logger):
            _require_init(logger, "ILogger")
            trt.events.append(("logger", logger))

        def create_network(self, flags=0):
            trt.last_network = Network(flags)
            return trt.last_network

        def create_builder_config(self):
            trt.last_config = Config()
            return trt.last_config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            mon = config.progress_monitor
            if mon is not None:
                _require_init(mon, "IProgressMonitor")
                mon.phase_start("Building", None, 3)
                mon.phase_start("Tactics", "Building", 2)
                trt.events.append(("steps", [mon.step_complete("Tactics", i) for i in range(2)]))
                if not build_ok:
                    return None  # phases left open, as after an internal error
                mon.phase_finish("Tactics")
                mon.step_complete("Building", 0)
                mon.phase_finish("Building")
            return memoryview(b"PLAN")

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes = engine, {}

        def set_input_shape(self, name, shape):
            trt.events.append(("set_input_shape", name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            return len(shape) == len(self.engine.io[name][0])

        def set_tensor_address(self, name, ptr):
            trt.events.append(("set_tensor_address", name, int(ptr)))
            return name in self.engine.io

        def execute_async_v3(self, stream_handle):
            trt.events.append(("execute_async_v3", int(stream_handle)))
            return True

        def get_tensor_shape(self, name):
            shape, _, is_input = self.engine.io[name]
            if is_input:
                return self.shapes.get(name, shape)
            batch = next(iter(self.shapes.values()), (shape[0],))[0]
            return (batch,) + tuple(shape[1:]) if shape[0] < 0 else shape

    class Engine:
        def __init__(self):
            self.io = {n: (s, d, True) for n, (s, d) in inputs.items()}
            self.io.update({n: (s, d, False) for n, (s, d) in outputs.items()})
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return list(self.io)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if self.io[name][2] else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.io[name][0]

        def get_tensor_dtype(self, name):
            return dtype(self.io[name][1])

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            _require_init(logger, "ILogger")
            trt.events.append(("logger", logger))

        def deserialize_cuda_engine(self, plan):
            return Engine() if bytes(plan) == b"PLAN" else None

    trt.Runtime = Runtime
    return trt
