"""``hsi-edge model ACTION``: offline model tooling.

Actions (one ``_register_<action>(sub)`` function each, listed in :data:`ACTIONS`; add new ones
such as ``export-htc`` the same way):

- ``convert-fp16 IN.onnx --out OUT.onnx [--keep-fp32 NODE ...]``: fp32 -> fp16 ONNX for
  strongly typed TensorRT builds (TensorRT 11 has no FP16 builder flag); named sensitive nodes
  stay fp32; graph inputs/outputs stay fp32 so the model card still fits.  Needs the
  ``hsi-edge[fp16]`` extra.
- ``card-hash CARD [--write]``: the sha256 of the card's model (``.onnx`` plus external-data
  files); ``--write`` adds it to a card that has none, so a damaged or replaced model file is
  caught at load.  A card whose sha256 differs from the file is refused, never rewritten.
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


def _register_card_hash(sub: Any) -> None:
    p = sub.add_parser("card-hash", help="print (or write into the card) the model's sha256",
                       description="Print the sha256 of a model card's ONNX model (external "
                                   "data files included); --write adds it to a card without "
                                   "one.")
    p.add_argument("card", metavar="CARD", help="model card (YAML)")
    p.add_argument("--write", action="store_true",
                   help="add 'sha256:' to the card if it has none")
    p.set_defaults(model_action=_card_hash)


def _card_hash(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from edge.core.fileio import atomic_write_bytes
    from edge.errors import EngineError
    from edge.inference.modelcard import load_model_card
    from edge.inference.onnx_hash import onnx_content_sha256

    card = load_model_card(args.card, verify_hash=False)
    digest = onnx_content_sha256(card.onnx_path)
    print(f"sha256 {digest} {card.onnx_path}")
    if card.sha256:
        if card.sha256.lower() != digest:
            raise EngineError(f"{args.card}: sha256: the card says {card.sha256[:12]}..., the "
                              f"model file is {digest[:12]}...; the file changed since the card "
                              f"was written: check it, then correct the card by hand")
        print(f"{args.card}: sha256 matches")
        return 0
    if not args.write:
        print(f"{args.card}: no sha256 in the card; add it with --write")
        return 0
    path = Path(args.card)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # A top-level 'sha256:' with an empty/null value is replaced; else the line goes after
    # the top-level 'onnx:' key (the comment and layout of the card are kept).
    top = [i for i, ln in enumerate(lines) if re.match(r"sha256\s*:", ln)]
    new = f"sha256: {digest}\n"
    if top:
        lines[top[0]] = new
    else:
        at = next((i for i, ln in enumerate(lines) if re.match(r"onnx\s*:", ln)), None)
        if at is None:
            raise EngineError(f"{path}: no top-level 'onnx:' line to add sha256 after (the "
                              f"card's layout is unusual); add 'sha256: {digest}' by hand")
        lines.insert(at + 1, new)
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))
    if load_model_card(path).sha256 != digest:        # the card still parses and verifies
        raise EngineError(f"{path}: could not add sha256 (the card's layout is unusual); add "
                          f"'sha256: {digest}' by hand")
    print(f"wrote sha256 to {path}")
    return 0


#: Registration functions of the ``model`` actions, in help order.
def _register_export_htc(sub) -> None:
    # torch is imported only when the command runs (extra "train")
    from edge.models.htc_export import register_export_htc
    register_export_htc(sub)


ACTIONS: tuple[Callable[[Any], None], ...] = (_register_convert_fp16, _register_card_hash,
                                              _register_export_htc)


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
