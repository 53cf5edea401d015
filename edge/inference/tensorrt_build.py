"""TensorRT engine building: network from ONNX, builder configuration per version, profiles,
timing cache and the engine-cache key (the logger and the build progress bars are in
:mod:`edge.inference.tensorrt_logging`).  Used by
:class:`edge.inference.tensorrt_runtime.TensorRTRuntime` and ``hsi-edge engine build``.

TensorRT and PyCUDA are imported only inside functions (:func:`import_tensorrt`), so importing
this module needs neither.  Versions (FACTS.md, "GPU, Jetson and TensorRT"): on **10.x**
(JetPack 6 ships 10.3) ``precision="fp16"`` sets ``BuilderFlag.FP16`` on the fp32 ONNX, or
``strongly_typed=True`` builds the ONNX graph's own precision; on **11.x** the FP16/INT8
builder flags are gone and every network is strongly typed, so ``fp16`` needs an fp16 ONNX
(``hsi-edge model convert-fp16``).  Code that only 10.x has lives in functions named ``*_v10``
and is called only under ``major < TRT11``.

Every TensorRT name used here is checked against ``tensorrt-stubs`` in
``tests/inference/trt_engine/test_trt_api_names.py`` (annotations like ``"trt.ICudaEngine"`` on
parameters feed that check's type inference).
"""

from __future__ import annotations

import logging
import re
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuda_kernels.driver import explain_pycuda_import_error, primary_context
from edge.errors import BackendUnavailable, ConfigError, EngineError
from edge.inference.engine_cache import EngineCache, EngineKey
from edge.inference.modelcard import ModelCard
from edge.inference.onnx_hash import onnx_content_sha256
from edge.inference.tensorrt_timing import TimingStore, merge_timing_cache
from edge.inference.tensorrt_logging import (  # noqa: F401 (re-exported)
    _logger, _make_progress, progress_wanted)

if TYPE_CHECKING:  # names for annotations only; at run time TensorRT is imported lazily
    import tensorrt as trt  # noqa: F401

__all__ = ["import_tensorrt", "trt_major", "engine_key", "build_engine",
           "build_serialized_engine", "profile_shapes", "gpu_identity", "gpu_sm_count",
           "gpu_properties",
           "build_settings", "resolve_precision", "PRECISIONS", "TRT11", "TRT_FLOOR",
           "OPT_LEVEL"]

log = logging.getLogger(__name__)

TRT11 = 11  #: first major version without weak typing (FP16 builder flag removed)
#: Oldest TensorRT supported: the 10.x API (explicit batch by default, IProgressMonitor) as
#: JetPack 6.1 ships it.
TRT_FLOOR = (10, 3)
OPT_LEVEL = 3  #: builder optimization level (TensorRT's documented default), set explicitly
_INSTALL_HINT = ("pip install 'hsi-edge[tensorrt]' (tensorrt>=10.3) on a desktop GPU; on "
                 "Jetson it comes with JetPack (apt install python3-libnvinfer, or use the "
                 "system Python)")


def import_tensorrt():
    """Import and return the ``tensorrt`` module, or raise BackendUnavailable saying how."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"the tensorrt runtime needs the 'tensorrt' Python package "
                                 f"({exc}); {_INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        # A directory named tensorrt/ on sys.path (stub-only install, a test folder) imports
        # as an empty namespace package; that is not TensorRT.
        where = list(getattr(trt, "__path__", [])) or getattr(trt, "__file__", "?")
        raise BackendUnavailable(f"the tensorrt runtime needs the 'tensorrt' Python package; "
                                 f"'import tensorrt' found {where}, which is not TensorRT "
                                 f"(stubs or a stray folder?); {_INSTALL_HINT}")
    version = str(getattr(trt, "__version__", "?"))
    if _major_minor(version) < TRT_FLOOR:
        # 8.6: create_network(0) is an implicit-batch network the ONNX parser rejects ("cannot
        # parse the ONNX model"), and trt.IProgressMonitor does not exist (tensorrt_review.md).
        raise BackendUnavailable(
            f"the tensorrt runtime needs TensorRT >= {TRT_FLOOR[0]}.{TRT_FLOOR[1]}, found "
            f"{version} (JetPack 6.1+ ships 10.3); {_INSTALL_HINT}")
    _init_plugins(trt)
    return trt


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


_PLUGINS_READY: "weakref.WeakSet[Any]" = weakref.WeakSet()  # tensorrt modules initialised


def _init_plugins(trt) -> None:
    """Register TensorRT's standard plugins once per process (per ``tensorrt`` module).

    The ONNX parser registers them only inside its own import, so an engine with plugin
    layers builds but does not deserialize in a fresh process that loads it from the cache;
    Polygraphy and NVIDIA's samples call ``init_libnvinfer_plugins`` before parsing and
    before deserializing (tensorrt_review.md, item 3).
    """
    if trt in _PLUGINS_READY:
        return
    if not trt.init_libnvinfer_plugins(_logger(trt), ""):
        log.warning("TensorRT: init_libnvinfer_plugins failed; engines with plugin layers "
                    "will not load")
    _PLUGINS_READY.add(trt)


def _import_cuda():
    """``pycuda.driver``, initialised; :class:`BackendUnavailable` saying why not (missing
    PyCUDA, a driver too old for its build, or a driver that cannot start: no GPU, a driver/
    library mismatch) instead of a raw ImportError or pycuda error."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(explain_pycuda_import_error(exc, "the tensorrt runtime")
                                 ) from None
    try:
        cuda.init()
    except Exception as exc:  # pycuda's LogicError/RuntimeError types
        raise BackendUnavailable(f"the tensorrt runtime: the CUDA driver is not usable "
                                 f"({exc}); needs an NVIDIA GPU with its driver") from None
    return cuda


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string (``"10.3.0.30"`` -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise EngineError(f"tensorrt.__version__: cannot parse {version!r}") from None


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """``(name, "major.minor")`` of a CUDA device, from the driver (PyCUDA)."""
    cuda = _import_cuda()
    if device >= cuda.Device.count():
        raise BackendUnavailable(f"device: CUDA device {device} does not exist "
                                 f"({cuda.Device.count()} found)")
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}"


def gpu_sm_count(device: int = 0) -> int:
    """Multiprocessor count of a CUDA device: every Jetson Orin reports the name "Orin" and
    sm_87, but an engine tuned on a 16-SM AGX Orin is not the right plan for an 8-SM Orin Nano
    (TensorRT warns that plans are not portable across device models)."""
    cuda = _import_cuda()
    return int(cuda.Device(device).get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))


def gpu_properties(device: int = 0) -> dict[str, int]:
    """The device properties a plan is tuned for, beyond name and compute capability: SM
    count, total memory (MiB) and peak clock (kHz).  Orin NX 16 GB, Orin NX 8 GB and Orin
    Nano 8 GB are all "Orin", sm_87 with 8 SMs; memory tells the NX modules apart and the
    clock (765 vs 625 MHz) the 8 GB NX from the Nano (tensorrt_review.md item 5).  They go
    into the key as ``gpu_*`` build settings, which also scope the timing cache."""
    cuda = _import_cuda()
    dev = cuda.Device(device)
    attr = cuda.device_attribute
    return {"gpu_sm_count": int(dev.get_attribute(attr.MULTIPROCESSOR_COUNT)),
            "gpu_total_memory_mib": int(dev.total_memory()) >> 20,
            "gpu_clock_khz": int(dev.get_attribute(attr.CLOCK_RATE))}


def build_settings(precision: str, *, workspace_mib: int, sm_count: int = 0,
                   gpu: dict[str, int] | None = None) -> dict[str, Any]:
    """What :func:`build_serialized_engine` sets on the builder, for the cache key, plus the
    device properties the plan is tuned for (``gpu``: :func:`gpu_properties`; ``sm_count``
    alone where only that is known).

    TF32 is off for fp32 engines (TensorRT enables it by default on Ampere and newer, which
    rounds fp32 matmul/conv inputs to a 10-bit significand; "fp32" then would not be fp32 and
    the fp32 parity tolerance would fail), on (TensorRT's default) for fp16 builds.
    """
    return {"optimization_level": OPT_LEVEL, "hardware_compatibility": "none",
            "tf32": precision != "fp32", "workspace_mib": int(workspace_mib),
            "gpu_sm_count": int(sm_count), **(gpu or {})}


def profile_shapes(card: ModelCard) -> tuple[tuple[str, tuple, tuple, tuple], ...]:
    """Optimization profile from the card: batch 1 at the card's resolution (min=opt=max)."""
    spec = card.input
    shape = (1, spec.channels, spec.height, spec.width)
    return ((spec.name, shape, shape, shape),)


def resolve_typing(major: int, strongly_typed: bool | None) -> str:
    """``"strong"`` or ``"weak"`` for this TensorRT major version and request."""
    if major >= TRT11:
        if strongly_typed is False:
            raise ConfigError(f"strongly_typed: TensorRT {major}.x builds only strongly typed "
                              f"networks, got strongly_typed=False")
        return "strong"
    return "strong" if strongly_typed else "weak"


PRECISIONS = ("auto", "fp16", "fp32")


def resolve_precision(major: int, precision: str, typing: str, card: ModelCard,
                      onnx_path: str | Path | None = None) -> tuple[str, Path]:
    """``(precision, ONNX file)`` of a build, from the request and the TensorRT version.

    - ``fp32``: the card's ONNX (or ``onnx_path``).
    - ``fp16``: weak typing (10.x default) sets the FP16 flag on the card's fp32 ONNX; a
      strongly typed build (always on 11.x) needs an fp16 graph: ``onnx_path`` or the card's
      ``onnx_fp16``, else the card's ONNX and the build refuses it with the convert command.
    - ``auto``: fp16 where this TensorRT can build it from what the card declares -- weak
      typing, or a strong build with an fp16 graph -- else fp32 with a warning (TensorRT 11
      has no FP16 builder flag, tensorrt_review.md item 1), instead of failing at load.

    Raises
    ------
    ConfigError
        An unknown precision.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got "
                          f"{precision!r}")
    if onnx_path:
        src = Path(onnx_path)
    elif precision != "fp32" and typing == "strong" and card.onnx_fp16_path is not None:
        src = card.onnx_fp16_path
    else:
        src = card.onnx_path
    if precision != "auto":
        return precision, src
    if typing == "weak":
        return "fp16", src
    from edge.inference.fp16 import graph_precision

    got = graph_precision(src)
    if got == "fp32":
        log.warning("precision auto: TensorRT %d.x builds strongly typed and %s is an fp32 "
                    "graph (the card declares no onnx_fp16), so the engine is fp32; for fp16 "
                    "run 'hsi-edge model convert-fp16' and add onnx_fp16: to the card", major,
                    src.name)
    return got, src


def engine_key(card: ModelCard, *, onnx_path: Path, trt_version: str, gpu: tuple[str, str],
               precision: str, typing: str, build: dict[str, Any] | None = None) -> EngineKey:
    # The model's content includes its external data files: their weights can change while
    # the .onnx bytes do not (equals sha256_file(onnx_path) for a self-contained model).
    return EngineKey(model=card.name, onnx_sha256=onnx_content_sha256(onnx_path),
                     trt_version=trt_version, gpu_name=gpu[0], compute_capability=gpu[1],
                     precision=precision, typing=typing, shapes=profile_shapes(card),
                     build=build or {})


def _apply_weak_precision_v10(trt, config: "trt.IBuilderConfig", precision: str) -> None:
    """TensorRT 10.x weak typing: let the builder pick fp16 kernels (flag removed in 11)."""
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)


def _graph_precision(trt, network: "trt.INetworkDefinition") -> str:
    """``"fp16"`` if any layer of the parsed network produces float16, else ``"fp32"``."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == trt.DataType.HALF:
                return "fp16"
    return "fp32"


def _parse_onnx(trt, network: "trt.INetworkDefinition", logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise EngineError(f"{onnx_path}: TensorRT cannot parse the ONNX model: "
                          f"{errors[0] if errors else 'unknown error'}"
                          + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))


def _profile_inputs(network: "trt.INetworkDefinition", shapes, onnx_name: str) -> list:
    """Check the parsed network's inputs against the card's profile; return the dynamic ones.

    ``IOptimizationProfile.set_shape`` is required for inputs with dynamic (-1) dimensions and
    allowed for static ones only when min = opt = max = the static shape; a static input that
    disagrees with the card, an input the card does not name, or a missing one is reported
    here by name instead of as the binding's RuntimeError ("Shape provided for min is
    inconsistent ...", TensorRT 10.3 pyCore.cpp) or a failed build.
    """
    have = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        have[t.name] = tuple(int(d) for d in t.shape)
    want = {name: (tuple(lo), tuple(opt), tuple(hi)) for name, lo, opt, hi in shapes}
    if set(have) != set(want):
        raise EngineError(f"{onnx_name}: the model's inputs are {sorted(have)} but the model "
                          f"card describes {sorted(want)}; card and model do not match")
    dynamic = []
    for name, (lo, opt, hi) in want.items():
        real = have[name]
        if len(real) != len(opt):
            raise EngineError(f"{onnx_name}: input {name!r} has shape {real} in the model but "
                              f"the card gives {opt}; card and model do not match")
        for r, a, o, h in zip(real, lo, opt, hi):
            if r >= 0 and not a == o == h == r:
                raise EngineError(f"{onnx_name}: input {name!r} has static shape {real} in the "
                                  f"model but the card gives {opt}; card and model do not match")
        if any(r < 0 for r in real):
            dynamic.append((name, lo, opt, hi))
    return dynamic


def _timing_cache(trt, config: "trt.IBuilderConfig", blob: bytes):
    """Attach the stored timing cache, or a fresh one when it is unreadable or was made on
    another device (``set_timing_cache(..., ignore_mismatch=False)`` returns False)."""
    cache = None
    if blob:
        try:
            cache = config.create_timing_cache(blob)
        except Exception as exc:  # a corrupt blob: RuntimeError/TypeError from the binding
            log.warning("timing cache unreadable (%s); starting an empty one", exc)
        if cache is not None and not config.set_timing_cache(cache, False):
            log.warning("timing cache was made on another device/version; starting an empty one")
            cache = None
    if cache is None:
        cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(cache, False):
            raise EngineError("TensorRT rejected an empty timing cache")
    return cache  # the caller keeps it alive until the build is done (TensorRT docs)


def build_serialized_engine(trt, onnx_path: Path, *, shapes, precision: str, typing: str,
                            workspace_bytes: int, timing_cache: bytes = b"",
                            progress: bool = True, timing_store=None) -> tuple[bytes, bytes]:
    """Build an engine; return ``(serialized engine, serialized timing cache)``.

    Parameters
    ----------
    trt : module
        The imported ``tensorrt`` module.
    shapes : sequence of (name, min, opt, max)
        The card's input shapes; a profile is added for inputs with dynamic dimensions.
    precision : {"fp32", "fp16"}
    typing : {"weak", "strong"}
    workspace_bytes : int
        ``MemoryPoolType.WORKSPACE`` limit.
    timing_cache : bytes
        Earlier timing cache for this TensorRT/GPU (``b""``: start empty).
    timing_store : TimingStore, optional
        Where the timing cache lives: after the build, what is on disk then is combined into
        the build's cache and saved under a lock
        (:func:`edge.inference.tensorrt_timing.merge_timing_cache`).

    The settings made here are the ones :func:`build_settings` puts into the cache key.
    """
    major = trt_major(trt.__version__)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0  # EXPLICIT_BATCH is deprecated and ignored in 10.x (always explicit batch)
    if typing == "strong" and major < TRT11:
        # 11.x networks are always strongly typed (the default of create_network).
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse_onnx(trt, network, logger, onnx_path)
    dynamic = _profile_inputs(network, shapes, onnx_path.name)
    graph = _graph_precision(trt, network)
    if typing == "weak" and graph == "fp16" and precision == "fp32":
        # Weak typing lets the builder run the graph's fp16 layers as they are: the engine
        # would be keyed and gated as fp32 while computing in fp16.
        raise EngineError(
            f"{onnx_path.name}: the ONNX graph is fp16 but precision='fp32' was requested; "
            f"build from the fp32 ONNX, or ask for precision fp16")
    if typing == "strong":
        if graph != precision:
            raise EngineError(
                f"{onnx_path.name}: a strongly typed build takes its precision from the ONNX "
                f"graph, which is {graph}, but precision={precision!r} was requested; "
                + ("convert it with 'hsi-edge model convert-fp16 IN.onnx --out OUT.onnx' and "
                   "build from OUT.onnx" if precision == "fp16" else
                   "build from the fp32 ONNX or ask for precision fp16"))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.builder_optimization_level = OPT_LEVEL
    if precision == "fp32":  # see build_settings: TF32 is on by default
        config.clear_flag(trt.BuilderFlag.TF32)
    if typing == "weak" and major < TRT11:
        _apply_weak_precision_v10(trt, config, precision)
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, lo, opt, hi in dynamic:
            profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(f"{onnx_path.name}: TensorRT rejected the optimization profile "
                              f"{dynamic}")
    cache = _timing_cache(trt, config, timing_cache)
    monitor = _make_progress(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor  # `monitor` keeps it alive for the whole build
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if monitor is not None:
            monitor.close()
    if plan is None:
        raise EngineError(f"{onnx_path.name}: TensorRT {trt.__version__} failed to build the "
                          f"engine (see the TensorRT messages above; try --debug)")
    if timing_store is not None:
        return bytes(plan), merge_timing_cache(config, cache, timing_store)
    return bytes(plan), bytes(cache.serialize())


def build_engine(card: ModelCard, *, cache: EngineCache, precision: str = "auto",
                 strongly_typed: bool | None = None, workspace_mib: int = 1024,
                 onnx_path: str | Path | None = None, device: int = 0, force: bool = False,
                 progress: bool = True) -> tuple[EngineKey, bytes, bool]:
    """Return ``(key, serialized engine, built)``, building (and caching) when needed.

    ``precision`` and ``onnx_path`` are resolved by :func:`resolve_precision`; the key holds
    the resolved precision.  ``progress``: draw the builder's progress bars (only on a terminal and never under
    systemd, :func:`~edge.inference.tensorrt_logging.progress_wanted`).

    The build runs in ``device``'s primary context (pushed here), so TensorRT's CUDA runtime
    calls use the GPU the key names even when the caller (``hsi-edge engine build``) has no
    context of its own.  ``force`` rebuilds this key's engine only.
    """
    trt = import_tensorrt()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got "
                          f"{precision!r}")
    if workspace_mib < 16:
        raise ConfigError(f"workspace_mib: expected at least 16 MiB, got {workspace_mib}")
    if onnx_path and not Path(onnx_path).is_file():
        raise EngineError(f"onnx_path: model file {onnx_path} not found")
    major = trt_major(trt.__version__)
    typing = resolve_typing(major, strongly_typed)
    precision, onnx_file = resolve_precision(major, precision, typing, card, onnx_path)
    key = engine_key(card, onnx_path=onnx_file, trt_version=trt.__version__,
                     gpu=gpu_identity(device), precision=precision, typing=typing,
                     build=build_settings(precision, workspace_mib=workspace_mib,
                                          gpu=gpu_properties(device)))
    if force:
        cache.discard(key)

    def build() -> bytes:
        plan, timing = build_serialized_engine(
            trt, onnx_file, shapes=key.shapes, precision=precision, typing=typing,
            workspace_bytes=workspace_mib << 20, timing_cache=cache.load_timing_cache(key),
            progress=progress_wanted(progress), timing_store=TimingStore(cache, key))
        return plan

    ctx = primary_context(_import_cuda(), device)   # shared, retained once per process
    ctx.push()
    try:
        payload, built = cache.get_or_build(key, build)
    finally:
        ctx.pop()
    return key, payload, built
