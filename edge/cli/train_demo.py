"""``hsi-edge train-demo``: regenerate the demo segmentation models from a seed.

Renders simulator scenes, trains the demo network with PyTorch on the CPU, evaluates it on
scenes from a different seed range, and writes ``<name>.onnx`` + ``<name>.yaml`` (model card
with metrics) per preset.  Needs the ``train`` extra (``bash tools/train_venv.sh``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

from edge.errors import BackendUnavailable, ConfigError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "demo"
PRESETS = ("tivita", "snapshot25")


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "train-demo", help="train the demo segmentation model(s) on simulated scenes",
        description="Train the demo model on simulator scenes (PyTorch, CPU) and export ONNX "
                    "+ model card. Needs the 'train' extra: bash tools/train_venv.sh")
    p.add_argument("--seed", type=int, default=0, help="seed of scenes, noise and weights")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help=f"output directory (default: the shipped models, {DEFAULT_OUT})")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 12)")
    p.add_argument("--preset", choices=PRESETS + ("all",), default="all",
                   help="camera preset to train for (default: all)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke test: one optimiser step on one small scene")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for mod in ("torch", "onnx"):
        if importlib.util.find_spec(mod) is None:
            raise BackendUnavailable(f"train-demo needs {mod}; install the training extra: "
                                     f"bash tools/train_venv.sh")
    if args.seed < 0:
        raise ConfigError(f"--seed: expected an integer >= 0, got {args.seed}")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs: expected an integer >= 1, got {args.epochs}")
    from edge.models.train.demo import TrainConfig, train_demo

    presets = PRESETS if args.preset == "all" else (args.preset,)
    report = {}
    for preset in presets:
        cfg = TrainConfig.tiny(preset, args.seed) if args.tiny else TrainConfig(preset=preset,
                                                                                 seed=args.seed)
        if args.epochs is not None:
            cfg.epochs = args.epochs
        res = train_demo(cfg, args.out, progress=not args.tiny)
        report[preset] = {"card": str(res["card"]), **res["metrics"],
                          "latency_ms": round(res["latency_ms"], 1)}
    print(json.dumps(report, indent=2))
    return 0
