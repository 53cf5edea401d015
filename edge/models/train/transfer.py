"""Species transfer study (issue 7, as in the DKFZ xeno-learning work; FACTS.md).

Train the demo network on simulated scenes of one species' tissue optics
(:data:`drivers.sim.scene.SPECIES`), test it on the same species (reference) and on another one,
for input variants that differ in what the network sees:

=========================== ==========================================================
``l1``                      L1-normalised spectra only (what htc models take)
``l1+xeno``                 ``l1`` + xeno augmentation of the source species' crops
``l1+phys``                 L1 spectra + physiology maps ``sto2``, ``thb``
``l1+phys+xeno``            ``l1+phys`` + xeno augmentation (:mod:`.xeno`)
``l1+target-perfused``      ``l1``, training set + the *target* species' perfused scenes
                            (organ labels, no malperfusion) -- the control
``l1+xeno-target``          ``l1+target-perfused`` + xeno augmentation of the target
                            species' perfused crops only (the paper's setting)
``l1+phys+target-perfused`` as ``l1+target-perfused`` with the physiology maps
``l1+phys+xeno-target``     as ``l1+xeno-target`` with the physiology maps
=========================== ==========================================================

The last four are the xeno-learning setting of the DKFZ paper: labelled source-species data
(organs + malperfusion) plus target-species data of perfused tissue only (in humans
malperfusion recordings are scarce); the perfused → malperfused change learned on the source
species is applied to the target's perfused images, giving synthetic target-species
malperfusion.  They are trained once per target species (and seed in ``target_seeds``) and
tested on that target only.  The control without augmentation separates the effect of the
augmentation from that of simply seeing target-species optics.

Data path: exactly that of inference -- :func:`edge.models.train.dataset.render_samples`
(simulated raw frames → flat-field → :class:`~edge.backends.numpy_backend.NumpyBackend`
with the demo card's :class:`~edge.backends.base.PackSpec`); the spectra-only variants use
the first channels of the same packed input (the L1 channels do not depend on the maps).

Xeno maps are fitted on the *training* species only: its training scenes are rendered a
second time without the malperfused patch (same seeds, so the same pixels, texture and
sensor noise) and, per organ class, a ridge affine map perfused → malperfused features is
fitted on the patch pixels (:func:`edge.models.train.xeno.fit_affine`).

Seeds (:func:`scene_seeds`): the scenes are fixed by ``data_seed`` (source train scenes
``data_seed*1000 + i``, test scenes ``10**6 + data_seed*1000 + i``, target-species perfused
train scenes ``2*10**6 + data_seed*1000 + i``: disjoint from both, so no test layout, texture
or sensor noise is seen in training); the same test seeds are rendered with every species,
so source and target test sets share layouts and differ only in optics.  Each variant is
trained once per seed in ``seeds`` (weights, crop order, augmentation draws; the
``*-target*`` variants once per target species and seed in ``target_seeds``).  Metrics as in
:func:`edge.models.train.demo.evaluate` (mIoU over the 7 classes; malperfusion sensitivity
and specificity per tissue pixel).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from edge.models.train.dataset import FrameSample
from edge.models.train.xeno import AffineMap, XenoAugment, fit_affine, pair_features

__all__ = ["Variant", "VARIANTS", "TransferConfig", "scene_seeds", "run_transfer",
           "fit_xeno_maps", "train_variant", "results_markdown"]

log = logging.getLogger(__name__)

class Variant(NamedTuple):
    """What one variant's network sees."""

    phys: bool             #: physiology maps (sto2, thb) after the L1 spectra
    xeno: bool             #: xeno augmentation (source crops; target crops if target_perfused)
    target_perfused: bool  #: + the target species' perfused scenes (one model per target)


VARIANTS: dict[str, Variant] = {
    "l1": Variant(False, False, False), "l1+xeno": Variant(False, True, False),
    "l1+phys": Variant(True, False, False), "l1+phys+xeno": Variant(True, True, False),
    "l1+target-perfused": Variant(False, False, True),
    "l1+xeno-target": Variant(False, True, True),
    "l1+phys+target-perfused": Variant(True, False, True),
    "l1+phys+xeno-target": Variant(True, True, True),
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
    #: Target-species perfused training scenes (``*-target*`` variants).
    target_scenes: int = 12
    #: Training seeds of the ``*-target*`` variants (None: ``seeds``); fewer keep the study
    #: short (they train one model per target species).
    target_seeds: tuple[int, ...] | None = (0, 1, 2)

    @classmethod
    def tiny(cls) -> "TransferConfig":
        """A few optimiser steps on tiny scenes (smoke test, seconds)."""
        return cls(rows=40, cols=48, seeds=(0,), train_scenes=2, test_scenes=1,
                   frames_per_scene=1, epochs=1, steps_per_epoch=3, batch=2, crop=32,
                   target_scenes=1, target_seeds=None)

    def check(self) -> None:
        """Raise :class:`~edge.errors.ConfigError` for an unusable setting."""
        from drivers.sim import get_species
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
        if self.target_seeds is not None and not self.target_seeds:
            raise ConfigError("target_seeds: expected at least one training seed or None "
                              "(= seeds), got none")
        if all(VARIANTS[v].target_perfused for v in self.variants) and \
                set(self.targets) <= {self.source}:
            raise ConfigError(f"targets: the *-target* variants need a target species other "
                              f"than the source {self.source!r}, got {', '.join(self.targets)}")
        for name in ("train_scenes", "test_scenes", "frames_per_scene", "epochs",
                     "steps_per_epoch", "batch", "crop", "rows", "cols", "width",
                     "target_scenes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {v!r}")
        # Keeps the train / test / target-perfused seed ranges disjoint (scene_seeds).
        for name in ("data_seed", "train_scenes", "test_scenes", "target_scenes"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < 1000:
                raise ConfigError(f"{name}: expected an integer in 0-999, got {v!r}")


def scene_seeds(cfg: TransferConfig) -> dict[str, list[int]]:
    """Scene seeds: ``train`` (source species, labelled), ``test`` (every species, with the
    malperfused patch) and ``target_perfused`` (target species, no patch); pairwise disjoint
    for ``train_scenes``, ``test_scenes``, ``target_scenes`` < 1000."""
    base = cfg.data_seed * 1000
    return {"train": [base + i for i in range(cfg.train_scenes)],
            "test": [10 ** 6 + base + i for i in range(cfg.test_scenes)],
            "target_perfused": [2 * 10 ** 6 + base + i for i in range(cfg.target_scenes)]}


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
                  augment: XenoAugment | None = None, augment_samples=None):
    """Train a :class:`~edge.models.train.network.DemoSegNet` with :func:`demo.fit
    <edge.models.train.demo.fit>` (its own random stream per seed), plus an optional
    augmentation applied to each crop (only to crops of the samples flagged in
    ``augment_samples``, if given); returns the model in eval mode."""
    from edge.models.train.demo import fit

    model, _ = fit(train, cfg, in_channels=train[0].x.shape[0], classes=classes, seed=seed,
                   rng_salt=0x7AF5, augment=augment, augment_samples=augment_samples)
    return model


def _metrics(model, test: list[FrameSample], classes: int) -> dict:
    from edge.models.train.demo import evaluate, predict

    m = evaluate(np.stack(predict(model, test)), np.stack([s.y for s in test]), classes)
    return {"mean_iou": float(np.nanmean(m["iou"])),
            "malperfusion_iou": float(m["iou"][classes - 1]),
            "sensitivity": m["malperfusion_sensitivity"],
            "specificity": m["malperfusion_specificity"]}


def _jobs(cfg: TransferConfig) -> list[tuple[str, str | None, int]]:
    """(variant, target species or None, seed) per model to train; ``None``: the model is
    trained on the source species only and tested on every species."""
    out = []
    for v in cfg.variants:
        if VARIANTS[v].target_perfused:
            seeds = cfg.seeds if cfg.target_seeds is None else cfg.target_seeds
            # The source species as "target" would only repeat its own data: skipped.
            out += [(v, t, s) for t in dict.fromkeys(cfg.targets) if t != cfg.source
                    for s in seeds]
        else:
            out += [(v, None, s) for s in cfg.seeds]
    return out


def run_transfer(cfg: TransferConfig, *, progress: bool = False) -> dict:
    """Render, train every variant for every seed, evaluate on source and target species.

    Returns
    -------
    dict
        ``config``, ``runs`` (one entry per variant × seed × test species, with ``train``
        naming the training data: ``"pig"`` or ``"pig+human-perfused"``), ``summary``
        (variant -> test species -> metric -> (mean, std) over seeds), ``xeno_pairs``
        (class -> pairs), ``scene_seeds`` (:func:`scene_seeds`), ``seconds`` (render,
        train, total).
    """
    from drivers.sim import SCENE_CLASSES, get_preset
    from edge.errors import ConfigError
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
    seeds = scene_seeds(cfg)
    train = _render(cfg, cfg.source, seeds["train"], pack, progress=progress)
    tests = {sp: _render(cfg, sp, seeds["test"], pack, progress=progress)
             for sp in dict.fromkeys((cfg.source,) + tuple(cfg.targets))}
    jobs = _jobs(cfg)
    perfused: dict[str, list[FrameSample]] = {}  # target species -> perfused train frames
    for sp in dict.fromkeys(t for _, t, _ in jobs if t is not None):
        perfused[sp] = _render(cfg, sp, seeds["target_perfused"], pack, patch=False,
                               progress=progress)
        if any(np.any(s.y == mal) for s in perfused[sp]):  # would leak target malperfusion
            raise RuntimeError(f"{sp} perfused training scenes contain malperfused pixels")
    maps: dict[int, dict[int, AffineMap]] = {}  # input channels -> class -> map
    if any(VARIANTS[v].xeno for v in cfg.variants):
        before = _render(cfg, cfg.source, seeds["train"], pack, patch=False, progress=progress)
        for n in {n_spec + (len(pack.maps) if VARIANTS[v].phys else 0)
                  for v in cfg.variants if VARIANTS[v].xeno}:
            maps[n] = fit_xeno_maps(_spectra_only(before, n), _spectra_only(train, n),
                                    malperfused_class=mal, ridge=cfg.ridge)
            if not maps[n]:
                raise ConfigError("xeno: no organ class has enough patch pixels to fit a map;"
                                  " use more or larger training scenes")
    t_render = time.monotonic() - t0

    runs = []
    it = jobs
    if progress:
        from tqdm import tqdm
        it = tqdm(jobs, desc="train", unit="model")
    for variant, target, seed in it:
        var = VARIANTS[variant]
        n = n_spec + (len(pack.maps) if var.phys else 0)
        data, flags, name = train, None, cfg.source
        if target is not None:
            # Source frames first, then the target's perfused frames; xeno (if on) acts on the
            # target frames only: synthetic target-species malperfusion.
            data = train + perfused[target]
            flags = [False] * len(train) + [True] * len(perfused[target])
            name = f"{cfg.source}+{target}-perfused"
        aug = None
        if var.xeno:
            aug = XenoAugment(maps[n], spectral_channels=n_spec, malperfused_class=mal,
                              probability=cfg.xeno_probability)
        t1 = time.monotonic()
        model = train_variant(_spectra_only(data, n), cfg, seed, classes=classes, augment=aug,
                              augment_samples=flags if var.xeno else None)
        for sp, test in tests.items():
            if target is not None and sp != target:
                continue
            runs.append({"variant": variant, "seed": seed, "train": name, "test": sp,
                         **_metrics(model, _spectra_only(test, n), classes),
                         "train_seconds": round(time.monotonic() - t1, 1)})
        log.info("%s seed %d: %s", variant, seed, runs[-1])
    summary: dict = {}
    for r in runs:
        d = summary.setdefault(r["variant"], {}).setdefault(r["test"], {"train": r["train"]})
        for k in ("mean_iou", "malperfusion_iou", "sensitivity", "specificity"):
            d.setdefault(k, []).append(r[k])
    for v in summary.values():
        for d in v.values():
            d["seeds"] = len(d["mean_iou"])
            for k in ("mean_iou", "malperfusion_iou", "sensitivity", "specificity"):
                d[k] = (float(np.mean(d[k])), float(np.std(d[k])))
    total = time.monotonic() - t0
    return {"config": asdict(cfg), "runs": runs, "summary": summary, "scene_seeds": seeds,
            "xeno_pairs": {SCENE_CLASSES[c]: m.pairs
                           for c, m in (next(iter(maps.values())) if maps else {}).items()},
            "seconds": {"render": round(t_render, 1), "train_eval": round(total - t_render, 1),
                        "total": round(total, 1)}}


def results_markdown(res: dict) -> str:
    """The results table (mean ± std over seeds) as Markdown; the *training → test* column
    names the training data (``pig+human-perfused→human`` for the ``*-target*`` variants)."""
    lines = ["| variant | training → test | seeds | mIoU | malperfusion IoU | sensitivity "
             "| specificity |",
             "|---|---|---|---|---|---|---|"]
    for variant, tests in res["summary"].items():
        for sp, d in tests.items():
            cells = " | ".join(f"{d[k][0]:.3f} ± {d[k][1]:.3f}" for k in
                               ("mean_iou", "malperfusion_iou", "sensitivity", "specificity"))
            lines.append(f"| {variant} | {d['train']}→{sp} | {d['seeds']} | {cells} |")
    return "\n".join(lines) + "\n"
