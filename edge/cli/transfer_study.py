"""``hsi-edge transfer-study``: train on one simulated species, test on others (issue 7).

Trains the demo network for each input variant (L1 spectra; + xeno augmentation; + physiology
maps; + both; and the xeno-learning setting: + the target species' perfused scenes, with and
without xeno augmentation of them) and seed on one species' tissue optics and prints the
results table (Markdown, mean ± std over seeds) on stdout; ``--json`` also writes every run.
Method, seeds and the reported numbers: ``edge/models/demo/TRANSFER.md``.  Needs the
``train`` extra (``bash tools/train_venv.sh``).
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


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return parse


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "transfer-study", help="species transfer study of the demo model (xeno-learning)",
        description="Train the demo model on simulated scenes of one species' tissue optics, "
                    "test on others, for L1 spectra / + physiology maps / + xeno augmentation. "
                    "Needs the 'train' extra: bash tools/train_venv.sh")
    p.add_argument("--source", default="pig", help="training species (default: pig)")
    p.add_argument("--targets", type=_csv(str), default=None,
                   help="test species, comma-separated (default: human,rat)")
    p.add_argument("--seeds", type=_csv(int), default=None,
                   help="training seeds, comma-separated (default: 0,1,2,3,4; --tiny: 0)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the scenes (default 0)")
    p.add_argument("--variants", type=_csv(str), default=None,
                   help="comma-separated subset of l1,l1+xeno,l1+phys,l1+phys+xeno,"
                        "l1+target-perfused,l1+xeno-target,l1+phys+target-perfused,"
                        "l1+phys+xeno-target (default: all)")
    p.add_argument("--target-seeds", type=_csv(int), default=None,
                   help="training seeds of the *-target* variants, comma-separated "
                        "(default: 0,1,2; --tiny: those of --seeds)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default 8)")
    p.add_argument("--json", default=None, help="also write all runs as JSON to this file")
    p.add_argument("--tiny", action="store_true", help="smoke test: tiny scenes, 3 steps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailable("transfer-study needs torch; install the training extra: "
                                 "bash tools/train_venv.sh")
    from edge.models.train.transfer import TransferConfig, results_markdown, run_transfer

    if args.data_seed < 0:
        raise ConfigError(f"--data-seed: expected an integer >= 0, got {args.data_seed}")
    for name in ("seeds", "target_seeds"):
        v = getattr(args, name)
        if v is not None and any(s < 0 for s in v):
            raise ConfigError(f"--{name.replace('_', '-')}: expected integers >= 0, "
                              f"got {list(v)}")
    cfg = TransferConfig.tiny() if args.tiny else TransferConfig()
    cfg.source, cfg.data_seed = args.source, args.data_seed
    for name in ("targets", "seeds", "variants", "target_seeds"):
        if getattr(args, name) is not None:
            setattr(cfg, name, tuple(getattr(args, name)))
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs: expected an integer >= 1, got {args.epochs}")
        cfg.epochs = args.epochs
    res = run_transfer(cfg, progress=not args.tiny)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(results_markdown(res), end="")
    print(f"\n{len(res['runs'])} evaluations, {res['seconds']['total']:.0f} s "
          f"(render {res['seconds']['render']:.0f} s)")
    return 0
