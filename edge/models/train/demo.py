"""Train, evaluate and export the demo segmentation model (``hsi-edge train-demo``).

Reproducible from a seed: scenes, sensor noise, crops and weight initialisation are all
seeded.  Train scenes use seeds ``seed*1000 + i``; test scenes ``10**6 + seed*1000 + i`` (a
different seed range, so the test layouts, textures and sensor noise are unseen).

Features per preset (chosen through the model card, :data:`FEATURES`):

- ``tivita``: every 4th band of the 100-band grid (25 L1-normalised bands, 500-985 nm) plus
  the ``sto2`` and ``thb`` maps.  ``thi`` is not used: on the simulated tissue the
  TIVITA-style THI approximation (FACTS.md, constants unverified) saturates at 1 for every
  organ, so it carries no information.
- ``snapshot25``: all 25 bands (665-960 nm) plus ``sto2`` and ``thb`` (the THI and StO2-index
  windows lie outside this range).

Metrics (on the test scenes, all pixels): per-class IoU; malperfusion sensitivity and
specificity per pixel on tissue (truth class != background): positive = class
``malperfused``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

__all__ = ["TrainConfig", "FEATURES", "DEMO_COLORS", "demo_card", "train_demo", "evaluate"]

log = logging.getLogger(__name__)

#: Display colours of the simulator classes (sRGB), malperfused in a warning magenta.
DEMO_COLORS = {"background": [0, 0, 0], "liver": [150, 60, 40], "bowel": [240, 170, 140],
               "stomach": [230, 120, 150], "fat": [250, 230, 120], "muscle": [200, 40, 40],
               "malperfused": [170, 0, 255]}

#: Input features per camera preset: band indices of the preset grid, and maps.
FEATURES = {
    "tivita": {"bands": tuple(range(0, 100, 4)), "maps": ("sto2", "thb")},
    "snapshot25": {"bands": tuple(range(25)), "maps": ("sto2", "thb")},
}


@dataclass
class TrainConfig:
    """Training settings (defaults: the shipped demo models)."""

    preset: str = "tivita"
    seed: int = 0
    epochs: int = 12
    steps_per_epoch: int = 40
    batch: int = 8
    crop: int = 96
    lr: float = 3e-3
    train_scenes: int = 12
    test_scenes: int = 4
    frames_per_scene: int = 2
    rows: int | None = None
    cols: int | None = None
    width: int = 16

    @classmethod
    def tiny(cls, preset: str = "tivita", seed: int = 0) -> "TrainConfig":
        """One optimiser step on one small scene (smoke test)."""
        return cls(preset=preset, seed=seed, epochs=1, steps_per_epoch=1, batch=2, crop=32,
                   train_scenes=1, test_scenes=1, frames_per_scene=1, rows=48, cols=64)


def demo_card(preset: str, *, name: str, onnx: str, rows: int, cols: int,
              provenance: dict | None = None, sha256: str | None = None) -> dict:
    """The card mapping (format ``hsi-edge-model-card/1``) of a demo model."""
    from drivers.sim import SCENE_CLASSES, get_preset
    from edge.inference.modelcard import CARD_FORMAT

    if preset not in FEATURES:
        raise ValueError(f"preset: the demo model is trained for {', '.join(FEATURES)}, "
                         f"got {preset!r}")
    wl = get_preset(preset).wavelength_array()
    feat = FEATURES[preset]
    card = {
        "format": CARD_FORMAT, "name": name,
        "description": (f"hsi-edge demo segmentation model for the {preset} preset, trained "
                        f"on simulated scenes (organ-like classes + malperfused tissue)"),
        "onnx": onnx,
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32",
                  "height": int(rows), "width": int(cols),
                  "spectra": {"wavelengths_nm": [round(float(wl[i]), 3) for i in feat["bands"]]},
                  "maps": list(feat["maps"])},
        "output": {"name": "logits", "kind": "logits",
                   "classes": [{"id": i, "name": n, "color": DEMO_COLORS[n]}
                               for i, n in enumerate(SCENE_CLASSES)]},
    }
    if sha256:
        card["sha256"] = sha256
    if provenance is not None:
        card["provenance"] = provenance
    return card


def _card_object(card: dict):
    from edge.core.config import from_mapping
    from edge.inference.modelcard import ModelCard
    return from_mapping(ModelCard, card, source="demo card")


def evaluate(pred: np.ndarray, truth: np.ndarray, classes: int) -> dict:
    """Per-class IoU, pixel accuracy and malperfusion sensitivity/specificity.

    Parameters
    ----------
    pred, truth : ndarray of int, same shape
        Predicted and true class ids (class ``classes - 1`` is ``malperfused``).
    """
    cm = np.bincount(truth.ravel().astype(np.int64) * classes + pred.ravel(),
                     minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    tissue = truth != 0
    pos = truth[tissue] == classes - 1
    hit = pred[tissue] == classes - 1
    sens = float((pos & hit).sum() / max(pos.sum(), 1))
    spec = float((~pos & ~hit).sum() / max((~pos).sum(), 1))
    return {"iou": iou, "pixel_accuracy": float(tp.sum() / cm.sum()),
            "malperfusion_sensitivity": sens, "malperfusion_specificity": spec,
            "confusion": cm}


def _stats(samples) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std over valid (unflagged) training pixels."""
    vals = np.concatenate([s.x[:, s.flags == 0] for s in samples], axis=1)
    return vals.mean(axis=1), vals.std(axis=1) + 1e-6


def _batches(samples, cfg, rng: np.random.Generator, augment=None, augment_samples=None):
    """Endless random crops ``(x, y)``; ``augment(x, y, rng)`` edits each crop in place (only
    crops of samples ``i`` with ``augment_samples[i]`` true, when that is given)."""
    c = cfg.crop
    while True:
        xs, ys = [], []
        for _ in range(cfg.batch):
            i = int(rng.integers(len(samples)))
            s = samples[i]
            h, w = s.y.shape
            ch, cw = min(c, h), min(c, w)
            r0, c0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            x, y = s.x[:, r0:r0 + ch, c0:c0 + cw], s.y[r0:r0 + ch, c0:c0 + cw]
            if augment is not None and (augment_samples is None or augment_samples[i]):
                x, y = x.copy(), y.astype(np.int64)
                augment(x, y, rng)
            xs.append(x)
            ys.append(y)
        yield np.stack(xs), np.stack(ys)


def fit(train, cfg, *, in_channels: int, classes: int, progress: bool = False,
        seed: int | None = None, rng_salt: int = 0xDE30, augment=None,
        augment_samples=None):
    """Train a :class:`DemoSegNet` on rendered samples; returns ``(model in eval mode, loss)``.

    ``cfg`` needs ``seed``, ``width``, ``lr``, ``epochs``, ``steps_per_epoch``, ``batch`` and
    ``crop`` (:class:`TrainConfig`, or the transfer study's config with ``seed=`` given);
    ``augment(x, y, rng)`` edits each training crop in place (xeno augmentation).
    ``augment_samples`` (sequence of bool, one per sample in ``train``), if given, restricts
    ``augment`` to crops of the samples marked true (the transfer study augments only the
    target species' perfused scenes); ``None`` (default) augments every crop, as before.
    """
    import torch

    from edge.models.train.network import DemoSegNet

    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, rng_salt])
    mean, std = _stats(train)
    model = DemoSegNet(in_channels, classes, torch.from_numpy(mean), torch.from_numpy(std),
                       width=cfg.width)
    counts = np.bincount(np.concatenate([s.y.ravel() for s in train]), minlength=classes)
    # Inverse-sqrt frequency weights: the small malperfused class is not drowned out
    # (computed before augmentation).
    weights = 1.0 / np.sqrt(np.maximum(counts, 1) / counts.sum())
    weights = torch.tensor(weights / weights.mean(), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1))
    if augment_samples is not None and len(augment_samples) != len(train):
        raise ValueError(f"augment_samples: expected one flag per training sample "
                         f"({len(train)}), got {len(augment_samples)}")
    batches = _batches(train, cfg, rng, augment, augment_samples)
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="train", unit="step")
    model.train()
    loss_v = float("nan")
    for _ in it:
        xb, yb = next(batches)
        logits = model(torch.from_numpy(xb))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(yb).long(),
                                                 weight=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_v = loss.item()
    log.info("final training loss %.4f after %d steps", loss_v, steps)
    return model.eval(), loss_v


def predict(model, samples) -> list[np.ndarray]:
    import torch
    with torch.no_grad():
        return [model(torch.from_numpy(s.x[None])).argmax(1)[0].numpy() for s in samples]


def _latency_ms(onnx_path: Path, x: np.ndarray, repeats: int = 5) -> float:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def train_demo(cfg: TrainConfig, out_dir: str | Path, *, name: str | None = None,
               progress: bool = False) -> dict:
    """Render data, train, evaluate, export ONNX + card into ``out_dir``; returns a report."""
    import torch

    from drivers.sim import SCENE_CLASSES, get_preset
    from edge.inference.onnx_hash import onnx_content_sha256
    from edge.models.htc_export import export_onnx
    from edge.models.train.dataset import render_samples

    t_start = time.monotonic()
    preset = get_preset(cfg.preset, rows=cfg.rows, cols=cfg.cols)
    name = name or f"demo-{cfg.preset}"
    classes = len(SCENE_CLASSES)
    skeleton = demo_card(cfg.preset, name=name, onnx=f"{name}.onnx", rows=preset.rows,
                         cols=preset.cols)
    card = _card_object(skeleton)
    pack = card.pack_spec(preset.wavelength_array())
    train_seeds = [cfg.seed * 1000 + i for i in range(cfg.train_scenes)]
    test_seeds = [10 ** 6 + cfg.seed * 1000 + i for i in range(cfg.test_scenes)]
    kw = dict(frames_per_scene=cfg.frames_per_scene, rows=cfg.rows, cols=cfg.cols,
              progress=progress)
    train = render_samples(cfg.preset, train_seeds, pack, **kw)
    test = render_samples(cfg.preset, test_seeds, pack, **kw)
    model, loss = fit(train, cfg, in_channels=pack.channels, classes=classes, progress=progress)
    preds = predict(model, test)
    m = evaluate(np.stack(preds), np.stack([s.y for s in test]), classes)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, out / f"{name}.onnx", channels=pack.channels,
                            height=preset.rows, width=preset.cols, output_name="logits")
    x0 = test[0].x[None].astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x0)).numpy()
    import onnxruntime as ort
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x0})[0]
    onnx_rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    latency = _latency_ms(onnx_path, x0)
    metrics = {
        "test_scenes": len(test_seeds), "test_frames": len(test),
        "iou": {SCENE_CLASSES[i]: round(float(v), 4) for i, v in enumerate(m["iou"])},
        "mean_iou": round(float(np.nanmean(m["iou"])), 4),
        "pixel_accuracy": round(m["pixel_accuracy"], 4),
        "malperfusion_sensitivity": round(m["malperfusion_sensitivity"], 4),
        "malperfusion_specificity": round(m["malperfusion_specificity"], 4),
    }
    provenance = {
        "training_data": (f"simulated {cfg.preset} scenes (drivers.simulated.SimulatedCamera "
                          f"-> flat-field -> NumpyBackend pack), {len(train_seeds)} train "
                          f"scenes x {cfg.frames_per_scene} frames (seeds "
                          f"{train_seeds[0]}-{train_seeds[-1]}, scene time 0/20 s)"),
        "test_data": f"{len(test_seeds)} scenes, seeds {test_seeds[0]}-{test_seeds[-1]}",
        "seed": cfg.seed,
        "command": f"hsi-edge train-demo --preset {cfg.preset} --seed {cfg.seed} "
                   f"--epochs {cfg.epochs}",
        "train_config": asdict(cfg),
        "final_train_loss": round(loss, 4),
        "metrics": metrics,
        "onnx_vs_torch_rel_error": float(f"{onnx_rel:.2e}"),
        "onnxruntime_latency_ms": {"value": round(latency, 1),
                                   "machine": "the machine that ran train-demo (CPU, ORT "
                                              "default threads), median of 5"},
        "torch": str(torch.__version__),
    }
    card_dict = demo_card(cfg.preset, name=name, onnx=onnx_path.name, rows=preset.rows,
                          cols=preset.cols, provenance=provenance,
                          sha256=onnx_content_sha256(onnx_path))
    card_path = out / f"{name}.yaml"
    card_path.write_text(yaml.safe_dump(card_dict, sort_keys=False))
    log.info("demo model %s: mIoU %.3f, malperfusion sens %.3f spec %.3f, %.0f s", name,
             metrics["mean_iou"], metrics["malperfusion_sensitivity"],
             metrics["malperfusion_specificity"], time.monotonic() - t_start)
    return {"card": card_path, "onnx": onnx_path, "metrics": metrics,
            "onnx_rel_error": onnx_rel, "latency_ms": latency,
            "seconds": time.monotonic() - t_start}
