"""Offline fp32 -> fp16 ONNX conversion (``hsi-edge model convert-fp16``).

Why offline: TensorRT 11 removed the FP16/INT8 builder flags; precision lives in the ONNX graph
and builds are strongly typed (FACTS.md, "GPU, Jetson and TensorRT").  The converted model is
also what a strongly typed TensorRT 10.x build uses.

The conversion is ``onnxconverter_common.float16.convert_float_to_float16``: float
initializers and tensors become float16, with Cast nodes around blocked nodes.  Named
sensitive nodes (``keep_fp32``, e.g. a final classifier or a normalisation) and the
converter's default op block list (Resize, TopK, Range, ...) stay float32.  ``keep_io_types``
(default) keeps the graph's inputs and outputs float32, so the same model card and packed
input work for both models.

Needs the optional extra ``hsi-edge[fp16]`` (``onnx`` + ``onnxconverter-common``); only this
module imports them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edge.errors import BackendUnavailable, ConfigError, EngineError

__all__ = ["convert_fp16", "Fp16Report", "METADATA_KEY", "graph_precision"]

log = logging.getLogger(__name__)

#: onnxconverter-common's clamping bounds (``convert_float_to_float16`` defaults, 1.14-1.16).
FP16_MAX, FP16_MIN_POSITIVE = 1e4, 1e-7
#: ``metadata_props`` key the converter stamps into its output (source hash, kept nodes).
METADATA_KEY = "hsi_edge.fp16"


@dataclass(frozen=True)
class Fp16Report:
    """What the conversion did.

    Attributes
    ----------
    source, output : Path
    fp16_initializers, fp32_initializers : int
        Count of float16 / float32 initializers in the converted graph.
    kept_nodes : tuple of str
        Nodes the caller asked to keep in float32.
    source_bytes, output_bytes : int
    clamped_values : int
        Initializer values the converter clamped to float16's range (``|x| > 1e4`` to
        ``±1e4``, ``0 < |x| < 1e-7`` to ``±1e-7``; onnxconverter-common's defaults), which it
        reports only as a Python warning.
    """

    source: Path
    output: Path
    fp16_initializers: int
    fp32_initializers: int
    kept_nodes: tuple[str, ...]
    source_bytes: int
    output_bytes: int
    clamped_values: int = 0


def _import_tools():
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError as exc:
        raise BackendUnavailable(
            f"convert-fp16 needs the ONNX tooling ({exc.name or exc} is missing): "
            f"pip install 'hsi-edge[fp16]' (onnx, onnxconverter-common)") from None
    return onnx, float16


def convert_fp16(source: str | Path, output: str | Path, *, keep_fp32: Sequence[str] = (),
                 keep_fp32_ops: Sequence[str] | None = None, keep_io_types: bool = True
                 ) -> Fp16Report:
    """Convert an fp32 ONNX model to fp16, keeping named nodes in fp32.

    Parameters
    ----------
    source, output : path
        Input fp32 model and where to write the fp16 model (written atomically).
    keep_fp32 : sequence of str
        Node names kept in float32 (must exist in the graph).
    keep_fp32_ops : sequence of str, optional
        Op types kept in float32; default: the converter's list (Resize, TopK, Range, ...).
    keep_io_types : bool
        Keep graph inputs/outputs float32 (default), so the model card is unchanged.

    Raises
    ------
    BackendUnavailable
        ``onnx`` / ``onnxconverter-common`` not installed.
    EngineError
        Unreadable model, already fp16, or the converted model fails the ONNX checker.
    ConfigError
        A ``keep_fp32`` name that is not a node of the graph.
    """
    from edge.inference.engine_cache import write_atomic  # same package; stdlib-only module

    onnx, float16 = _import_tools()
    source, output = Path(source), Path(output)
    if source.resolve() == output.resolve():
        raise ConfigError(f"--out: must differ from the input model {source} (the fp32 "
                          f"original is the reference for the parity check)")
    if not output.parent.is_dir():  # never create folders the user did not ask for
        raise ConfigError(f"--out: folder {str(output.parent)!r} does not exist (create it "
                          f"first)")
    try:
        blob = source.read_bytes()
        model = onnx.load_from_string(blob)
    except Exception as exc:  # OSError, protobuf DecodeError, ...
        raise EngineError(f"{source}: cannot read ONNX model: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    names = [n.name for n in model.graph.node]
    unknown = [k for k in keep_fp32 if k not in names]
    if unknown:
        shown = ", ".join(repr(n) for n in names[:12] if n) + (" ..." if len(names) > 12 else "")
        raise ConfigError(f"--keep-fp32: no node named {unknown[0]!r} in {source.name}; "
                          f"node names are: {shown or '(the graph has no named nodes)'}")
    try:
        converted = float16.convert_float_to_float16(
            model, keep_io_types=keep_io_types, node_block_list=list(keep_fp32),
            op_block_list=None if keep_fp32_ops is None else list(keep_fp32_ops))
    except ValueError as exc:
        raise EngineError(f"{source}: {str(exc).splitlines()[0]}") from None
    if keep_io_types:
        _restore_output_types(onnx, model, converted)
    stamp = {"source_sha256": hashlib.sha256(blob).hexdigest(), "keep_fp32": list(keep_fp32),
             "keep_io_types": keep_io_types}
    entry = converted.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(stamp, sort_keys=True)
    try:
        onnx.checker.check_model(converted)
    except Exception as exc:  # onnx.checker.ValidationError
        raise EngineError(f"{source}: the fp16 model fails the ONNX checker: "
                          f"{str(exc).splitlines()[0]}") from None
    out_blob = converted.SerializeToString()
    try:
        write_atomic(output, [out_blob])
    except OSError as exc:  # name the output, not the temporary file beside it
        raise EngineError(f"--out: cannot write {output}: {exc.strerror or exc}") from None
    tensor = onnx.TensorProto
    init = list(converted.graph.initializer)
    report = Fp16Report(
        source=source, output=output,
        fp16_initializers=sum(t.data_type == tensor.FLOAT16 for t in init),
        fp32_initializers=sum(t.data_type == tensor.FLOAT for t in init),
        kept_nodes=tuple(keep_fp32), source_bytes=len(blob), output_bytes=len(out_blob),
        clamped_values=_clamped_values(onnx, model, converted))
    if report.clamped_values:
        log.warning("fp16: %d initializer value(s) of %s were outside float16's range and were "
                    "clamped (|x| > %g to +-%g, 0 < |x| < %g to +-%g); check the parity gate "
                    "('hsi-edge engine check') or keep those nodes fp32 (--keep-fp32)",
                    report.clamped_values, source.name, FP16_MAX, FP16_MAX, FP16_MIN_POSITIVE,
                    FP16_MIN_POSITIVE)
    log.info("fp16: %s -> %s (%d fp16 / %d fp32 initializers, %.1f -> %.1f MB)", source.name,
             output.name, report.fp16_initializers, report.fp32_initializers,
             report.source_bytes / 1e6, report.output_bytes / 1e6)
    return report


def _clamped_values(onnx, source, converted) -> int:
    """How many values of the initializers converted to float16 lie outside the converter's
    bounds (so were clamped).  Initializers whose data is external are not counted."""
    from onnx import numpy_helper

    tp = onnx.TensorProto
    to_half = {t.name for t in converted.graph.initializer if t.data_type == tp.FLOAT16}
    count = 0
    for t in source.graph.initializer:
        if t.name not in to_half or t.data_type != tp.FLOAT:
            continue
        try:
            a = abs(numpy_helper.to_array(t).astype("float64"))
        except Exception:  # external data not loaded here
            continue
        count += int(((a > FP16_MAX) | ((a > 0) & (a < FP16_MIN_POSITIVE))).sum())
    return count


def _restore_output_types(onnx, source, converted) -> None:
    """Make graph outputs float32 again where the converter left them float16.

    onnxconverter-common 1.16 with ``keep_io_types=True`` declares an output float16 (and
    casts to it) when the node producing it is in the block list, e.g. a kept-fp32 final
    classifier.  That trailing ``Cast(to=FLOAT16)`` is turned into ``Cast(to=FLOAT)``, so the
    fp32 result is not rounded and the model card's output stays valid.
    """
    tp = onnx.TensorProto
    want = {o.name: o.type.tensor_type.elem_type for o in source.graph.output}
    producers = {out: node for node in converted.graph.node for out in node.output}
    for out in converted.graph.output:
        tt = out.type.tensor_type
        if want.get(out.name) != tp.FLOAT or tt.elem_type != tp.FLOAT16:
            continue
        node = producers.get(out.name)
        if node is None or node.op_type != "Cast":
            raise EngineError(f"fp16: the converter made output {out.name!r} float16 although "
                              f"keep_io_types was requested; use --fp16-io and a float16 card")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = tp.FLOAT
        tt.elem_type = tp.FLOAT


def graph_precision(path: str | Path) -> str:
    """``"fp16"`` if the ONNX model computes in float16 (any float16 initializer, graph
    input/output or value_info), else ``"fp32"``: what a strongly typed TensorRT build of it
    would run.  External data is not read (only the graph).

    Raises
    ------
    BackendUnavailable
        ``onnx`` not installed.
    EngineError
        Unreadable model.
    """
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("reading an ONNX graph's precision needs onnx: pip install "
                                 "'hsi-edge[tensorrt]'") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # OSError, protobuf DecodeError, ...
        raise EngineError(f"{path}: cannot read ONNX model: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    f16, g = onnx.TensorProto.FLOAT16, model.graph
    if any(t.data_type == f16 for t in g.initializer):
        return "fp16"
    tensors = list(g.input) + list(g.output) + list(g.value_info)
    return "fp16" if any(v.type.tensor_type.elem_type == f16 for v in tensors) else "fp32"
