"""Species transfer study (issue 7, as in the DKFZ xeno-learning work; FACTS.md).

Train the demo network on simulated scenes of one species' tissue optics
(:data:`drivers.scene.SPECIES`), test it on the same species (reference) and on another one,
for input variants that differ in what the network sees:

========================== ===========================================================
``l1``                     L1-normalised spectra only (what htc models take)
``l1+xeno``                ``l1`` + xeno augmentation
``l1+phys``                L1 spectra + physiology maps ``sto2``, ``thb``
``l1+phys+xeno``           ``l1+phys`` + xeno augmentation (:mod:`.xeno`)
========================== ===========================================================

Data path: exactly that of inference -- :func:`edge.models.train.dataset.render_samples`
(simulated raw frames → flat-field → :class:`~edge.backends.numpy_backend.NumpyBackend`
with the demo card's :class:`~edge.backends.base.PackSpec`); the spectra-only variants use
the first channels of the same packed input (the L1 channels do not depend on the maps).

Xeno maps are fitted on the *training* species only: its training scenes are rendered a
second time without the malperfused patch (same seeds, so the same pixels, texture and
sensor noise) and, per organ class, a ridge affine map perfused → malperfused features is
fitted on the patch pixels (:func:`edge.models.train.xeno.fit_affine`).

Seeds: the scenes are fixed by ``data_seed`` (train scenes ``data_seed*1000 + i``, test
scenes ``10**6 + data_seed*1000 + i``); the same test seeds are rendered with both species,
so source and target test sets share layouts and differ only in optics.  Each variant is
trained once per seed in ``seeds`` (weights, crop order, augmentation draws).  Metrics as in
:func:`edge.models.train.demo.evaluate` (mIoU over the 7 classes; malperfusion sensitivity
and specificity per tissue pixel).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from edge.models.train.dataset import FrameSample
from edge.models.train.xeno import AffineMap, XenoAugment, fit_affine, pair_features

__all__ = ["VARIANTS", "TransferConfig", "run_transfer", "fit_xeno_maps", "train_variant",
           "results_markdown"]

log = logging.getLogger(__name__)

#: Variant name -> (use physiology maps, use xeno augmentation).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "l1": (False, False), "l1+xeno": (False, True),
    "l1+phys": (True, False), "l1+phys+xeno": (True, True),
}


@dataclass
class TransferConfig:
    """Settings of the study (defaults: the run reported in ``edge/models/demo/TRANSFER.md``)."""

    preset: str = "snapshot25"
    rows: int = 96
    cols: int = 128
    source: str = "pig"
    targets: tuple[str, ...] = ("human", "rat")
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    variants: tuple[str, ...] = tuple(VARIANTS)
    train_scenes: int = 12
    test_scenes: int = 6
    frames_per_scene: int = 2
    epochs: int = 8
    steps_per_epoch: int = 40
    batch: int = 8
    crop: int = 64
    lr: float = 3e-3
    width: int = 16
    xeno_probability: float = 0.5
    ridge: float = 1e-2

    @classmethod
    def tiny(cls) -> "TransferConfig":
        """A few optimiser steps on tiny scenes (smoke test, seconds)."""
        return cls(rows=40, cols=48, seeds=(0,), train_scenes=2, test_scenes=1,
                   frames_per_scene=1, epochs=1, steps_per_epoch=3, batch=2, crop=32)

    def check(self) -> None:
        """Raise :class:`~edge.errors.ConfigError` for an unusable setting."""
        from drivers.scene import get_species
        from edge.errors import ConfigError

        get_species(self.source)
        if not self.targets:
            raise ConfigError("targets: expected at least one test species, got none")
        for t in self.targets:
            get_species(t)
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ConfigError(f"variants: expected one or more of {', '.join(VARIANTS)}, "
                              f"got {', '.join(bad) or 'none'}")
        if not self.seeds:
            raise ConfigError("seeds: expected at least one training seed, got none")
        for name in ("train_scenes", "test_scenes", "frames_per_scene", "epochs",
                     "steps_per_epoch", "batch", "crop", "rows", "cols", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {v!r}")


def _render(cfg: TransferConfig, species: str, seeds, pack, *, patch: bool = True,
            progress: bool = False) -> list[FrameSample]:
    from drivers.simulated import SimulatedCamera
    from edge.models.train.dataset import render_samples

    factory = functools.partial(SimulatedCamera, scene_options={
        "species": species, "malperfused_patch": patch})
    return render_samples(cfg.preset, seeds, pack, frames_per_scene=cfg.frames_per_scene,
                          rows=cfg.rows, cols=cfg.cols, camera_factory=factory,
                          progress=progress)


def _spectra_only(samples: list[FrameSample], n: int) -> list[FrameSample]:
    return [FrameSample(x=s.x[:n], y=s.y, flags=s.flags) for s in samples]


def fit_xeno_maps(perfused, malperfused, *, malperfused_class: int,
                  ridge: float) -> dict[int, AffineMap]:
    """Per organ class, the ridge affine map perfused → malperfused features (see module)."""
    pairs = pair_features(perfused, malperfused, malperfused_class=malperfused_class)
    maps = {cid: fit_affine(x, y, ridge=ridge) for cid, (x, y) in pairs.items()}
    log.info("xeno maps for classes %s (%s pairs)", sorted(maps),
             [m.pairs for m in maps.values()])
    return maps


def train_variant(train: list[FrameSample], cfg: TransferConfig, seed: int, *, classes: int,
                  augment: XenoAugment | None = None):
    """Train a :class:`~edge.models.train.network.DemoSegNet` with :func:`demo.fit
    <edge.models.train.demo.fit>` (its own random stream per seed), plus an optional
    augmentation applied to each crop; returns the model in eval mode."""
    from edge.models.train.demo import fit

    model, _ = fit(train, cfg, in_channels=train[0].x.shape[0], classes=classes, seed=seed,
                   rng_salt=0x7AF5, augment=augment)
    return model


def _metrics(model, test: list[FrameSample], classes: int) -> dict:
    from edge.models.train.demo import evaluate, predict

    m = evaluate(np.stack(predict(model, test)), np.stack([s.y for s in test]), classes)
    return {"mean_iou": float(np.nanmean(m["iou"])),
            "malperfusion_iou": float(m["iou"][classes - 1]),
            "sensitivity": m["malperfusion_sensitivity"],
            "specificity": m["malperfusion_specificity"]}


def run_transfer(cfg: TransferConfig, *, progress: bool = False) -> dict:
    """Render, train every variant for every seed, evaluate on source and target species.

    Returns
    -------
    dict
        ``config``, ``runs`` (one entry per variant × seed × test species; the source species
        first), ``summary`` (variant -> test species -> metric -> (mean, std) over seeds),
        ``xeno_pairs``
        (class -> pairs), ``seconds`` (render, train, total).
    """
    from drivers.presets import get_preset
    from drivers.scene import SCENE_CLASSES
    from edge.models.train.demo import _card_object, demo_card

    cfg.check()
    t0 = time.monotonic()
    classes = len(SCENE_CLASSES)
    mal = classes - 1
    preset = get_preset(cfg.preset, rows=cfg.rows, cols=cfg.cols)
    card = _card_object(demo_card(cfg.preset, name="transfer", onnx="transfer.onnx",
                                  rows=preset.rows, cols=preset.cols))
    pack = card.pack_spec(preset.wavelength_array())
    n_spec = len(pack.spectra_bands)
    train_seeds = [cfg.data_seed * 1000 + i for i in range(cfg.train_scenes)]
    test_seeds = [10 ** 6 + cfg.data_seed * 1000 + i for i in range(cfg.test_scenes)]
    train = _render(cfg, cfg.source, train_seeds, pack, progress=progress)
    tests = {sp: _render(cfg, sp, test_seeds, pack, progress=progress)
             for sp in dict.fromkeys((cfg.source,) + tuple(cfg.targets))}
    maps: dict[int, dict[int, AffineMap]] = {}  # input channels -> class -> map
    if any(VARIANTS[v][1] for v in cfg.variants):
        before = _render(cfg, cfg.source, train_seeds, pack, patch=False, progress=progress)
        for n in {n_spec + (len(pack.maps) if VARIANTS[v][0] else 0)
                  for v in cfg.variants if VARIANTS[v][1]}:
            maps[n] = fit_xeno_maps(_spectra_only(before, n), _spectra_only(train, n),
                                    malperfused_class=mal, ridge=cfg.ridge)
            if not maps[n]:
                from edge.errors import ConfigError
                raise ConfigError("xeno: no organ class has enough patch pixels to fit a map;"
                                  " use more or larger training scenes")
    t_render = time.monotonic() - t0

    runs = []
    jobs = [(v, s) for v in cfg.variants for s in cfg.seeds]
    it = jobs
    if progress:
        from tqdm import tqdm
        it = tqdm(jobs, desc="train", unit="model")
    for variant, seed in it:
        phys, xeno = VARIANTS[variant]
        n = n_spec + (len(pack.maps) if phys else 0)
        aug = None
        if xeno:
            aug = XenoAugment(maps[n], spectral_channels=n_spec, malperfused_class=mal,
                              probability=cfg.xeno_probability)
        t1 = time.monotonic()
        model = train_variant(_spectra_only(train, n), cfg, seed, classes=classes, augment=aug)
        for sp, data in tests.items():
            runs.append({"variant": variant, "seed": seed, "test": sp,
                         **_metrics(model, _spectra_only(data, n), classes),
                         "train_seconds": round(time.monotonic() - t1, 1)})
        log.info("%s seed %d: %s", variant, seed, runs[-1])
    summary: dict = {}
    for r in runs:
        d = summary.setdefault(r["variant"], {}).setdefault(r["test"], {})
        for k in ("mean_iou", "malperfusion_iou", "sensitivity", "specificity"):
            d.setdefault(k, []).append(r[k])
    for v in summary.values():
        for d in v.values():
            for k, vals in d.items():
                d[k] = (float(np.mean(vals)), float(np.std(vals)))
    total = time.monotonic() - t0
    return {"config": asdict(cfg), "runs": runs, "summary": summary,
            "xeno_pairs": {SCENE_CLASSES[c]: m.pairs
                           for c, m in (next(iter(maps.values())) if maps else {}).items()},
            "seconds": {"render": round(t_render, 1), "train_eval": round(total - t_render, 1),
                        "total": round(total, 1)}}


def results_markdown(res: dict) -> str:
    """The results table (mean ± std over seeds) as Markdown."""
    cfg = res["config"]
    lines = ["| variant | test species | mIoU | malperfusion IoU | sensitivity | specificity |",
             "|---|---|---|---|---|---|"]
    for variant, tests in res["summary"].items():
        for sp, d in tests.items():
            cells = " | ".join(f"{d[k][0]:.3f} ± {d[k][1]:.3f}" for k in
                               ("mean_iou", "malperfusion_iou", "sensitivity", "specificity"))
            lines.append(f"| {variant} | {cfg['source']}→{sp} | {cells} |")
    return "\n".join(lines) + "\n"
