"""Export htc image models (``Unet("efficientnet-b5")`` on L1 spectra) to ONNX + a model card.

htc (IMSY-DKFZ/htc, FACTS.md "htc models") trains ``segmentation_models_pytorch.Unet`` with an
EfficientNet-B5 encoder on L1-normalised 100-band TIVITA spectra, 19 organ classes (12 for the
xeno-learning models).  Its Lightning module holds the network as
``self.model = ModelImage(config)`` with ``ModelImage.architecture = smp.Unet(...)``, so the
checkpoint's ``state_dict`` keys read ``model.architecture.encoder...``; an optional
``model.image_normalization`` (``GroupNorm(1, C, eps=1e-8)``) is used by some configs.
Several checkpoints (one per fold) form an ensemble: softmax per fold, then the mean over
folds, as htc's predictors do.

Everything that needs torch is imported lazily, so ``hsi-edge --help`` works without the
``train`` extra; calling the export without it raises :class:`BackendUnavailable`.

CLI: ``hsi-edge model export-htc CHECKPOINT [CHECKPOINT ...] --classes 19|12 --out DIR``
(:func:`register_export_htc` adds it to a ``model`` subcommand's subparsers).
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import yaml

from edge.errors import BackendUnavailable, ConfigError, EngineError
from edge.inference.onnx_hash import onnx_content_sha256
from edge.models.classes import htc_class_list

__all__ = ["HTC_ENCODER", "build_htc_unet", "load_state_dict", "load_htc_model",
           "make_ensemble", "export_onnx", "main_export", "register_export_htc",
           "run_export_htc"]

log = logging.getLogger(__name__)

HTC_ENCODER = "efficientnet-b5"
#: TIVITA band grid (FACTS.md: ``np.linspace(500, 1000, 100)``).
TIVITA_GRID = {"start": 500.0, "stop": 1000.0, "count": 100}
INSTALL_HINT = "install the training extra: bash tools/train_venv.sh (or pip install '.[train]')"


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(f"PyTorch is not importable ({exc}); {INSTALL_HINT}") from None
    return torch


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:
        raise BackendUnavailable(f"segmentation-models-pytorch is not importable ({exc}); "
                                 f"{INSTALL_HINT}") from None
    return smp


def build_htc_unet(classes: int, in_channels: int = 100):
    """An htc-style ``smp.Unet("efficientnet-b5")`` with random weights (no download).

    Older smp versions wrap efficientnet-pytorch, whose memory-efficient Swish is a custom
    autograd function the ONNX exporter cannot trace; it is switched to the plain
    ``x * sigmoid(x)`` there (same numbers).  smp >= 0.5 uses ``nn.SiLU``, which exports as
    Sigmoid + Mul.
    """
    _torch()
    smp = _smp()
    net = smp.Unet(HTC_ENCODER, encoder_weights=None, in_channels=in_channels, classes=classes)
    if hasattr(net.encoder, "set_swish"):
        net.encoder.set_swish(memory_efficient=False)
    return net


def load_state_dict(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a Lightning checkpoint (``{"state_dict": ...}``) or a plain state dict.

    Parameters
    ----------
    path : path-like
        ``.ckpt``/``.pt``/``.pth`` file written by ``torch.save``.
    trust_pickle : bool
        Lightning checkpoints can hold pickled Python objects (hyper-parameters, configs)
        that ``torch.load(weights_only=True)`` refuses.  Only with ``trust_pickle`` is the
        file unpickled in full -- which can run code from the file, so only for files you trust.
    """
    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint: file {p} not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # UnpicklingError, RuntimeError for non-torch files, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = "" if trust_pickle else (" (if it is a Lightning checkpoint with pickled "
                                        "hyper-parameters that you trust, pass --trust-pickle)")
        raise EngineError(f"checkpoint {p}: cannot be read by torch.load: {first}{hint}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise EngineError(f"checkpoint {p}: expected a Lightning checkpoint with 'state_dict' "
                          f"or a plain state dict of tensors, got {type(obj).__name__}")
    return obj


def _split_htc_keys(state: dict[str, Any], source: str) -> tuple[dict, dict]:
    """Map htc key names onto (Unet state, image-normalisation state)."""
    unet: dict[str, Any] = {}
    norm: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in state.items():
        k = key
        for prefix in ("model.", "module."):   # Lightning module attribute / DataParallel
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        if k.startswith("architecture."):
            unet[k[len("architecture."):]] = value
        elif k.startswith("image_normalization."):
            norm[k[len("image_normalization."):]] = value
        elif k.startswith(("encoder.", "decoder.", "segmentation_head.")):
            unet[k] = value   # a bare smp.Unet state dict
        else:
            ignored.append(key)   # loss weights etc. that Lightning also saves
    if not unet:
        raise EngineError(f"checkpoint {source}: no Unet weights found (expected keys like "
                          f"'model.architecture.encoder...' or 'encoder...', got e.g. "
                          f"{sorted(state)[:3]})")
    if ignored:
        log.info("checkpoint %s: ignoring %d non-network keys, e.g. %s", source, len(ignored),
                 ignored[:3])
    return unet, norm


def load_htc_model(path: str | os.PathLike, classes: int, in_channels: int = 100, *,
                   trust_pickle: bool = False):
    """Build the htc network for one checkpoint and load its weights (eval mode).

    Raises
    ------
    EngineError
        Class or channel count in the checkpoint differ from ``classes``/``in_channels``, or
        weights are missing/unexpected for ``Unet("efficientnet-b5")``.
    """
    torch = _torch()
    unet_state, norm_state = _split_htc_keys(load_state_dict(path, trust_pickle=trust_pickle),
                                             str(path))
    head = unet_state.get("segmentation_head.0.weight")
    if head is not None and head.shape[0] != classes:
        raise EngineError(f"checkpoint {path}: the segmentation head has {head.shape[0]} "
                          f"classes but --classes is {classes}")
    stem = unet_state.get("encoder._conv_stem.weight")
    if stem is not None and stem.shape[1] != in_channels:
        raise EngineError(f"checkpoint {path}: the encoder takes {stem.shape[1]} input "
                          f"channels, expected {in_channels} (L1 spectra of 100 bands)")
    net = build_htc_unet(classes, in_channels)
    missing, unexpected = net.load_state_dict(unet_state, strict=False)
    if missing or unexpected:
        raise EngineError(f"checkpoint {path}: does not fit Unet({HTC_ENCODER!r}): "
                          f"{len(missing)} missing keys (e.g. {missing[:2]}), "
                          f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    layers = []
    if norm_state:
        norm = torch.nn.GroupNorm(1, in_channels, eps=1e-8)
        norm.load_state_dict(norm_state)
        layers.append(norm)
    layers.append(net)
    model = torch.nn.Sequential(*layers)
    return model.eval()


def make_ensemble(models: Sequence[Any], *, softmax: bool):
    """Wrap fold networks: mean over folds of the per-fold softmax (htc's ensembling).

    With one model and ``softmax=False`` the model is returned unchanged (logits).
    """
    torch = _torch()
    if len(models) == 1 and not softmax:
        return models[0]

    class FoldEnsemble(torch.nn.Module):
        def __init__(self, folds):
            super().__init__()
            self.folds = torch.nn.ModuleList(folds)

        def forward(self, x):
            probs = [torch.softmax(m(x), dim=1) for m in self.folds]
            return torch.stack(probs, dim=0).mean(dim=0)

    return FoldEnsemble(list(models)).eval()


def export_onnx(model, path: str | os.PathLike, *, channels: int, height: int, width: int,
                output_name: str, opset: int = 17) -> Path:
    """Export with a static ``(1, channels, height, width)`` float32 input named ``input``."""
    torch = _torch()
    path = Path(path)
    dummy = torch.zeros(1, channels, height, width, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: it needs no onnxscript and writes plain opset-17 ops.
        # Its constant-folding notes about Slice and its deprecation notice are harmless here
        # (torch is pinned in the train extra); keep the console clean.
        for category in (UserWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        torch.onnx.export(model, (dummy,), str(path), input_names=["input"],
                          output_names=[output_name], opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return path


def _card(name: str, onnx_name: str, sha: str, *, classes: int, height: int, width: int,
          kind: str, output_name: str, checkpoints: Sequence[Path]) -> dict:
    from edge.inference.modelcard import CARD_FORMAT

    return {
        "format": CARD_FORMAT,
        "name": name,
        "description": (f"htc-style Unet({HTC_ENCODER}) on L1-normalised 100-band spectra, "
                        f"{classes} classes, ensemble of {len(checkpoints)} fold(s)"),
        "onnx": onnx_name,
        "sha256": sha,
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32",
                  "height": height, "width": width,
                  "spectra": {"wavelengths_nm": dict(TIVITA_GRID)}, "maps": []},
        "output": {"name": output_name, "kind": kind, "classes": htc_class_list(classes)},
        "provenance": {
            "exported_by": "hsi-edge model export-htc",
            "architecture": f"segmentation_models_pytorch.Unet({HTC_ENCODER!r})",
            "preprocessing": "L1 per pixel x/sum|x| (0/0 -> 0), no standardisation (htc)",
            "ensemble": "mean over folds of softmax" if len(checkpoints) > 1 else "single",
            "checkpoints": [{"file": p.name, "sha256": _sha(p)} for p in checkpoints],
        },
    }


def _sha(path: Path) -> str:
    from edge.core.fileio import sha256_file
    return sha256_file(path)


def main_export(checkpoints: Sequence[str | os.PathLike], classes: int,
                out: str | os.PathLike, *, height: int = 480, width: int = 640,
                name: str | None = None, softmax: bool = False, opset: int = 17,
                trust_pickle: bool = False) -> Path:
    """Export one htc checkpoint or a fold ensemble to ``out/<name>.onnx`` + ``<name>.yaml``.

    Parameters
    ----------
    checkpoints : sequence of path-like
        Lightning checkpoints or plain state dicts; more than one gives a fold ensemble.
    classes : {19, 12}
        Organ model (19) or xeno-learning model (12).
    out : path-like
        Output directory (created).
    height, width : int
        Static input size (TIVITA: 480 x 640).
    softmax : bool
        For a single checkpoint, export probabilities instead of logits.  Ensembles always
        output probabilities (output name ``probabilities``).

    Returns
    -------
    Path
        The model card; load it with :func:`edge.inference.load_model_card`.
    """
    if classes not in (19, 12):
        raise ConfigError(f"--classes: htc models have 19 (organs) or 12 (xeno-learning) "
                          f"classes, got {classes}")
    if not checkpoints:
        raise ConfigError("checkpoint: at least one checkpoint is needed")
    if opset < 17:
        raise ConfigError(f"--opset: must be >= 17, got {opset}")
    paths = [Path(c) for c in checkpoints]
    folds = [load_htc_model(p, classes, trust_pickle=trust_pickle) for p in paths]
    probs = softmax or len(folds) > 1
    model = make_ensemble(folds, softmax=probs)
    kind, output_name = ("probabilities", "probabilities") if probs else ("logits", "logits")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = name or f"htc-unet-{classes}cls" + (f"-{len(folds)}folds" if len(folds) > 1 else "")
    onnx_path = export_onnx(model, out / f"{name}.onnx", channels=100, height=height,
                            width=width, output_name=output_name, opset=opset)
    card = _card(name, onnx_path.name, onnx_content_sha256(onnx_path), classes=classes,
                 height=height, width=width, kind=kind, output_name=output_name, checkpoints=paths)
    card_path = out / f"{name}.yaml"
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    log.info("exported %s (%d fold(s), %s) -> %s", name, len(folds), kind, card_path)
    return card_path


def register_export_htc(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add ``export-htc`` to a subparsers object (e.g. the ``hsi-edge model`` subcommand).

    Plug into :mod:`edge.cli.model` by adding this function to its ``ACTIONS`` tuple.
    """
    p = subparsers.add_parser(
        "export-htc", help="export an htc Unet(efficientnet-b5) checkpoint to ONNX + card",
        description="Export htc image-model checkpoints (Lightning .ckpt or plain state dict) "
                    "to ONNX (opset 17, static input) with a model card. Several checkpoints "
                    "form a fold ensemble (mean of softmax). Needs the 'train' extra.")
    p.add_argument("checkpoint", nargs="+", help="checkpoint file(s); several = ensemble")
    p.add_argument("--classes", type=int, required=True, choices=(19, 12),
                   help="19 organ classes or 12 xeno-learning classes")
    p.add_argument("--out", required=True, help="output directory for .onnx and .yaml")
    p.add_argument("--name", default=None, help="model name (default htc-unet-<K>cls)")
    p.add_argument("--height", type=int, default=480, help="input height (default 480)")
    p.add_argument("--width", type=int, default=640, help="input width (default 640)")
    p.add_argument("--softmax", action="store_true",
                   help="single checkpoint: output probabilities instead of logits")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle the checkpoint in full (runs code from the file: trusted "
                        "files only)")
    # ``model_action`` is what ``edge.cli.model.run`` dispatches on; ``func`` lets the parser
    # also be used on its own (tests, other front ends).
    p.set_defaults(func=run_export_htc, model_action=run_export_htc)
    return p


def run_export_htc(args: argparse.Namespace) -> int:
    card = main_export(args.checkpoint, args.classes, args.out, height=args.height,
                       width=args.width, name=args.name, softmax=args.softmax,
                       opset=args.opset, trust_pickle=args.trust_pickle)
    print(card)
    return 0
