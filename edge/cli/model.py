"""``hsi-edge model ACTION``: offline model tooling.

Actions (one ``_register_<action>(sub)`` function each, listed in :data:`ACTIONS`; add new ones
such as ``export-htc`` the same way):

- ``convert-fp16 IN.onnx --out OUT.onnx [--keep-fp32 NODE ...]``: fp32 -> fp16 ONNX for
  strongly typed TensorRT builds (TensorRT 11 has no FP16 builder flag); named sensitive nodes
  stay fp32; graph inputs/outputs stay fp32 so the model card still fits.  Needs the
  ``hsi-edge[fp16]`` extra.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

__all__ = ["register", "run", "ACTIONS"]


def _register_convert_fp16(sub: Any) -> None:
    p = sub.add_parser("convert-fp16", help="convert an fp32 ONNX model to fp16",
                       description="Convert an fp32 ONNX model to fp16 (onnxconverter-common), "
                                   "keeping named nodes in fp32.")
    p.add_argument("source", metavar="IN.onnx", help="fp32 ONNX model")
    p.add_argument("--out", required=True, metavar="OUT.onnx", help="where to write the model")
    p.add_argument("--keep-fp32", nargs="+", action="extend", default=[], metavar="NODE",
                   help="node names kept in fp32 (e.g. the final classifier)")
    p.add_argument("--keep-fp32-op", nargs="+", action="extend", default=None, metavar="OP",
                   help="op types kept in fp32 (default: the converter's list, e.g. Resize, "
                        "TopK, Range)")
    p.add_argument("--fp16-io", action="store_true",
                   help="make graph inputs/outputs fp16 too (the model card must then say "
                        "dtype: float16)")
    p.set_defaults(model_action=_convert_fp16)


def _convert_fp16(args: argparse.Namespace) -> int:
    from edge.inference.fp16 import convert_fp16

    r = convert_fp16(args.source, args.out, keep_fp32=args.keep_fp32,
                     keep_fp32_ops=args.keep_fp32_op, keep_io_types=not args.fp16_io)
    kept = f", kept fp32: {', '.join(r.kept_nodes)}" if r.kept_nodes else ""
    print(f"wrote {r.output} ({r.output_bytes / 1e6:.2f} MB from {r.source_bytes / 1e6:.2f} MB; "
          f"{r.fp16_initializers} fp16 / {r.fp32_initializers} fp32 initializers{kept})")
    return 0


#: Registration functions of the ``model`` actions, in help order.
def _register_export_htc(sub) -> None:
    # torch is imported only when the command runs (extra "train")
    from edge.models.htc_export import register_export_htc
    register_export_htc(sub)


ACTIONS: tuple[Callable[[Any], None], ...] = (_register_convert_fp16, _register_export_htc)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("model", help="offline model tooling (convert-fp16, ...)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run, model_action=None, _model_parser=p)
    sub = p.add_subparsers(dest="model_command", metavar="ACTION")
    for add in ACTIONS:
        add(sub)


def run(args: argparse.Namespace) -> int:
    if args.model_action is None:
        args._model_parser.print_help(sys.stderr)
        return 2
    return int(args.model_action(args) or 0)
