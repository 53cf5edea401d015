"""``hsi-edge model ACTION``: offline model tooling.

Actions (one ``_register_<action>(sub)`` function each, listed in :data:`ACTIONS`; add new ones
such as ``export-htc`` the same way):

- ``convert-fp16 IN.onnx --out OUT.onnx [--keep-fp32 NODE ...]``: fp32 -> fp16 ONNX for
  strongly typed TensorRT builds (TensorRT 11 has no FP16 builder flag); named sensitive nodes
  stay fp32; graph inputs/outputs stay fp32 so the model card still fits.  Needs the
  ``hsi-edge[fp16]`` extra.
- ``card-hash CARD [--write]``: the sha256 of the card's model (``.onnx`` plus external-data
  files) and of its ``onnx_fp16`` model; ``--write`` adds ``sha256`` / ``onnx_fp16_sha256`` to
  a card that lacks them, so a damaged or replaced model file is caught at load.  A card whose
  hash differs from the file is refused, never rewritten.
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
    from pathlib import Path

    from edge.core.fileio import atomic_write_bytes
    from edge.errors import EngineError
    from edge.inference.modelcard import load_model_card
    from edge.inference.onnx_hash import onnx_content_sha256

    card = load_model_card(args.card, verify_hash=False)
    models = [("sha256", card.sha256, card.onnx_path, "onnx")]
    if card.onnx_fp16 is not None:
        models.append(("onnx_fp16_sha256", card.onnx_fp16_sha256, card.onnx_fp16_path,
                       "onnx_fp16"))
    missing = []
    for key, want, model, anchor in models:
        digest = onnx_content_sha256(model)
        print(f"{key} {digest} {model}")
        if not want:
            missing.append((key, digest, anchor))
        elif want.lower() != digest:
            raise EngineError(f"{args.card}: {key}: the card says {want[:12]}..., the model "
                              f"file is {digest[:12]}...; the file changed since the card was "
                              f"written: check it, then correct the card by hand")
        else:
            print(f"{args.card}: {key} matches")
    if not missing:
        return 0
    if not args.write:
        print(f"{args.card}: no {' or '.join(k for k, _, _ in missing)} in the card; add it "
              f"with --write")
        return 0
    path = Path(args.card)
    text = path.read_text(encoding="utf-8")
    for key, digest, anchor in missing:
        text = _put_top_level(path, text, key, digest, anchor)
    atomic_write_bytes(path, text.encode("utf-8"))
    written = load_model_card(path)          # the card still parses and verifies
    for key, digest, _ in missing:
        if getattr(written, key) != digest:
            raise EngineError(f"{path}: could not add {key} (the card's layout is unusual); "
                              f"add '{key}: {digest}' by hand")
        print(f"wrote {key} to {path}")
    return 0


def _put_top_level(path, text: str, key: str, value: str, anchor: str) -> str:
    """``text`` with a top-level ``key: value``: an empty/null ``key:`` line is replaced, else
    the line goes after the top-level ``anchor:`` key (the card's comments and layout are
    kept)."""
    import re

    from edge.errors import EngineError

    lines = text.splitlines(keepends=True)
    top = [i for i, ln in enumerate(lines) if re.match(rf"{key}\s*:", ln)]
    new = f"{key}: {value}\n"
    if top:
        lines[top[0]] = new
    else:
        at = next((i for i, ln in enumerate(lines) if re.match(rf"{anchor}\s*:", ln)), None)
        if at is None:
            raise EngineError(f"{path}: no top-level '{anchor}:' line to add {key} after (the "
                              f"card's layout is unusual); add '{key}: {value}' by hand")
        if not lines[at].endswith("\n"):
            lines[at] += "\n"
        lines.insert(at + 1, new)
    return "".join(lines)


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
