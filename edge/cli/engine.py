"""``hsi-edge engine build|info|clear|check``: the TensorRT engine cache and its parity gate.

``info`` and ``clear`` work without TensorRT (they only read the cache directory); ``build``
and ``check`` need TensorRT and a GPU and say so in one line when they are missing.
``check`` exits 1 when the gate fails (and the engine stays unverified).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.errors import ConfigError

__all__ = ["register", "run"]

EXIT_GATE_FAILED = 1


def _cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="engine cache directory (default $HSI_EDGE_ENGINE_CACHE or "
                        "~/.cache/hsi-edge/engines)")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("card", help="model card (YAML)")
    p.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto",
                   help="auto (default): fp16 where this TensorRT can build it from the card "
                        "(FP16 flag on 10.x; the card's onnx_fp16 on 11.x), else fp32")
    p.add_argument("--strongly-typed", action="store_true", default=None,
                   help="strongly typed build (precision from the ONNX graph); always on with "
                        "TensorRT 11")
    p.add_argument("--onnx", metavar="PATH", default=None,
                   help="build from this ONNX instead of the card's (e.g. the output of "
                        "'hsi-edge model convert-fp16')")
    p.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit")
    p.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    p.add_argument("--no-progress", action="store_true",
                   help="no build progress bars (never drawn off a terminal or under systemd)")
    _cache_arg(p)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "engine", help="build, list, clear and check TensorRT engines",
        description="Build, list, clear and check TensorRT engines. 'info' and 'clear' work "
                    "without TensorRT; 'check' runs the parity gate against ONNX Runtime and "
                    "exits 1 when it fails.")
    p.set_defaults(func=run, engine_action=None, _parser=p)
    sub = p.add_subparsers(dest="engine_command", metavar="ACTION")

    b = sub.add_parser("build", help="build (or reuse) the cached engine for a model card")
    _build_args(b)
    b.add_argument("--force", action="store_true", help="rebuild even if a valid engine exists")
    b.set_defaults(engine_action=_build)

    i = sub.add_parser("info", help="list cached engines (works without TensorRT)")
    _cache_arg(i)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(engine_action=_info)

    c = sub.add_parser("clear", help="delete cached engines (works without TensorRT)")
    _cache_arg(c)
    c.add_argument("--model", default=None, help="only this model's engines")
    c.add_argument("--timing", action="store_true", help="also delete the timing caches")
    c.set_defaults(engine_action=_clear)

    k = sub.add_parser("check", help="parity gate: engine vs ONNX Runtime; exit 1 on failure")
    _build_args(k)
    k.add_argument("--inputs", metavar="NPZ", default=None,
                   help="packed inputs recorded by the pipeline (arrays of shape (N, C, H, W))")
    k.add_argument("--random", type=int, default=4, metavar="N",
                   help="without --inputs: N random inputs of the card's shape (default 4)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--atol", type=float, default=None, help="absolute tolerance (all outputs)")
    k.add_argument("--rtol", type=float, default=None, help="relative tolerance (all outputs)")
    k.add_argument("--min-argmax-agreement", type=float, default=0.995,
                   help="fraction of pixels whose class must agree (default 0.995)")
    k.add_argument("--json", action="store_true", help="print the full result as JSON")
    k.set_defaults(engine_action=_check)


def run(args: argparse.Namespace) -> int:
    if args.engine_action is None:
        args._parser.print_help(sys.stderr)
        return 2
    return int(args.engine_action(args) or 0)


def _cache(args):
    from edge.inference.engine_cache import EngineCache
    return EngineCache(args.cache)


def _build(args) -> int:
    from edge.inference.modelcard import load_model_card
    from edge.inference.tensorrt_build import build_engine

    card = load_model_card(args.card)
    cache = _cache(args)
    key, payload, built = build_engine(
        card, cache=cache, precision=args.precision, strongly_typed=args.strongly_typed,
        workspace_mib=args.workspace_mib, onnx_path=args.onnx, device=args.device,
        force=args.force, progress=not args.no_progress)
    state = "built" if built else "cached"
    print(f"{state} {cache.path_for(key)} ({len(payload) / 1e6:.1f} MB, TensorRT "
          f"{key.trt_version}, {key.gpu_name} sm_{key.compute_capability.replace('.', '')}, "
          f"{key.precision}/{key.typing})")
    if not cache.is_verified(key):
        print("not verified yet: run 'hsi-edge engine check' before use", file=sys.stderr)
    return 0


def _info(args) -> int:
    cache = _cache(args)
    entries = cache.entries()
    if args.json:
        print(json.dumps([{"path": str(e.path), "model": e.model, "bytes": e.size,
                           "problem": e.problem, "verified": e.verified, "header": e.header}
                          for e in entries], indent=1))
        return 0
    if not entries:
        print(f"no engines in {cache.root}")
        return 0
    print(f"{len(entries)} engine(s) in {cache.root}")
    for e in entries:
        if e.problem:
            state = f"INVALID ({e.problem}; will be rebuilt)"
        else:
            state = {True: "verified", False: "FAILED parity gate", None: "unverified"}[
                e.verified]
        key = (e.header or {}).get("key", {})
        desc = (f"TensorRT {key.get('trt_version', '?')}, {key.get('gpu_name', '?')} "
                f"cc {key.get('compute_capability', '?')}, {key.get('precision', '?')}/"
                f"{key.get('typing', '?')}") if key else "no readable header"
        built = (e.header or {}).get("build_seconds")
        took = f", built in {built:.1f} s" if isinstance(built, (int, float)) else ""
        print(f"{e.path.name}  {e.model}  {e.size / 1e6:.1f} MB  {desc}{took}  {state}")
    return 0


def _clear(args) -> int:
    cache = _cache(args)
    removed = cache.clear(args.model, timing=args.timing)
    n = sum(p.suffix == ".engine" for p in removed)
    print(f"removed {n} engine(s), {len(removed) - n} other file(s) from {cache.root}")
    return 0


def _check(args) -> int:
    from edge.inference.modelcard import load_model_card
    from edge.inference.onnxruntime_runtime import OnnxRuntimeRuntime
    from edge.inference.parity import (ParityConfig, Tolerance, gate_engine,
                                       load_recorded_inputs, random_inputs)
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card = load_model_card(args.card)
    if args.inputs:
        inputs = load_recorded_inputs(args.inputs, card)
    else:
        if args.random < 1:
            raise ConfigError(f"--random: expected at least 1 input, got {args.random}")
        inputs = random_inputs(card, args.random, args.seed)
    candidate = TensorRTRuntime(card, cache_dir=args.cache, precision=args.precision,
                                strongly_typed=args.strongly_typed,
                                workspace_mib=args.workspace_mib, onnx_path=args.onnx,
                                device=args.device, progress=not args.no_progress)
    with candidate, OnnxRuntimeRuntime(card) as reference:
        # Tolerances of the precision the engine was built with ('auto' resolved at load).
        base = ParityConfig.for_precision(candidate.key.precision).default
        default = Tolerance(base.atol if args.atol is None else args.atol,
                            base.rtol if args.rtol is None else args.rtol)
        config = ParityConfig(default=default, min_argmax_agreement=args.min_argmax_agreement)
        result = gate_engine(candidate.cache, candidate.key, reference, candidate, inputs,
                             output_name=card.output.name, config=config)
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return 0 if result.passed else EXIT_GATE_FAILED
