"""Xeno augmentation (edge.models.train.xeno) and the species transfer study (.transfer)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from drivers.sim.scene import SCENE_CLASSES
from edge.errors import ConfigError
from edge.models.train.dataset import FrameSample
from edge.models.train.xeno import (AffineMap, XenoAugment, fit_affine, l1_normalise,
                                    pair_features)

MAL = SCENE_CLASSES.index("malperfused")


# -- affine fit ----------------------------------------------------------------------------
def test_fit_recovers_known_affine_map():
    rng = np.random.default_rng(11)
    c, n = 12, 4000
    w_true = np.eye(c) + 0.2 * rng.standard_normal((c, c))
    b_true = 0.05 * rng.standard_normal(c)
    x = rng.random((n, c))
    y = x @ w_true + b_true
    m = fit_affine(x, y, ridge=0.0)
    np.testing.assert_allclose(m.W, w_true, rtol=0, atol=1e-10)
    np.testing.assert_allclose(m.b, b_true, rtol=0, atol=1e-10)
    assert m.pairs == n
    # With noise and a small ridge: close, relative error ‖ΔW‖/‖W‖ < 2 %.
    y_noisy = y + 0.01 * rng.standard_normal(y.shape)
    m = fit_affine(x, y_noisy, ridge=1e-4)
    assert np.linalg.norm(m.W - w_true) / np.linalg.norm(w_true) < 0.02
    np.testing.assert_allclose(m(x), y, rtol=0, atol=0.02)


def test_strong_ridge_shrinks_towards_identity_not_zero():
    rng = np.random.default_rng(2)
    x = rng.random((500, 5))
    y = 0.5 * x + 0.3
    m = fit_affine(x, y, ridge=1e6)
    np.testing.assert_allclose(m.W, np.eye(5), rtol=0, atol=1e-4)
    # b keeps the means matched: ȳ = x̄·W + b.
    np.testing.assert_allclose(x.mean(0) @ m.W + m.b, y.mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("x,y,ridge,match", [
    (np.zeros((5, 3)), np.zeros((5, 4)), 0.0, r"x, y: expected two arrays of the same shape "
                                               r"\(N, channels\), got \(5, 3\) and \(5, 4\)"),
    (np.zeros((1, 3)), np.zeros((1, 3)), 0.0, r"x: expected at least 2 pixel pairs, got 1"),
    (np.full((4, 2), np.nan), np.zeros((4, 2)), 0.0, r"pixel pairs must be finite"),
    (np.zeros((4, 2)), np.zeros((4, 2)), -1.0, r"ridge: expected a number >= 0, got -1.0"),
])
def test_fit_affine_errors(x, y, ridge, match):
    with pytest.raises(ValueError, match=match):
        fit_affine(x, y, ridge=ridge)


def test_l1_normalise_spectral_channels_only():
    x = np.array([[1.0, -3.0, 4.0, 7.0], [0.0, 0.0, 0.0, 2.0]])
    l1_normalise(x, 3)
    np.testing.assert_allclose(x, [[0.125, -0.375, 0.5, 7.0], [0.0, 0.0, 0.0, 2.0]])


# -- augmentation --------------------------------------------------------------------------
def test_augment_transforms_one_region_of_one_class():
    rng = np.random.default_rng(5)
    c, h, w = 6, 32, 40
    x = rng.random((c, h, w)).astype(np.float32)
    x[:4] /= x[:4].sum(axis=0, keepdims=True)
    y = np.ones((h, w), dtype=np.int64)
    y[:, 20:] = 2
    w_map = np.eye(c) * 0.5 + 0.02
    amap = AffineMap(W=w_map, b=np.full(c, 0.1))
    aug = XenoAugment({1: amap}, spectral_channels=4, malperfused_class=MAL, probability=1.0)
    x0, y0 = x.copy(), y.copy()
    aug(x, y, np.random.default_rng(0))
    changed = y == MAL
    assert changed.sum() > 10
    assert np.all(y0[changed] == 1)               # only class 1 (the one with a map) changes
    np.testing.assert_array_equal(x[:, ~changed], x0[:, ~changed])
    want = l1_normalise(amap(x0[:, changed].T), 4).T
    np.testing.assert_allclose(x[:, changed], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.abs(x[:4, changed]).sum(axis=0), 1.0, rtol=1e-6)
    # probability 0 never changes anything
    never = XenoAugment({1: amap}, spectral_channels=4, malperfused_class=MAL, probability=0.0)
    x1, y1 = x0.copy(), y0.copy()
    never(x1, y1, np.random.default_rng(0))
    np.testing.assert_array_equal(x1, x0)


def test_augment_errors():
    with pytest.raises(ValueError, match=r"maps: expected at least one class map, got none"):
        XenoAugment({}, spectral_channels=3, malperfused_class=MAL)
    with pytest.raises(ValueError, match=r"probability: expected 0-1, got 1.5"):
        XenoAugment({1: AffineMap(np.eye(2), np.zeros(2))}, spectral_channels=2,
                    malperfused_class=MAL, probability=1.5)


def test_pair_features_uses_patch_pixels_by_organ():
    y_before = np.array([[1, 1, 2], [2, 0, 3]], dtype=np.uint8)
    y_after = np.array([[MAL, 1, MAL], [MAL, 0, 3]], dtype=np.uint8)
    flags = np.zeros((2, 3), dtype=np.uint8)
    flags_after = flags.copy()
    flags_after[1, 0] = 1                           # an invalid pixel is not paired
    xb = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    xa = xb + 100
    pairs = pair_features([FrameSample(xb, y_before, flags)],
                          [FrameSample(xa, y_after, flags_after)], malperfused_class=MAL,
                          min_pairs=1)
    assert sorted(pairs) == [1, 2]
    np.testing.assert_array_equal(pairs[1][0], [[0, 6]])
    np.testing.assert_array_equal(pairs[1][1], [[100, 106]])
    np.testing.assert_array_equal(pairs[2][0], [[2, 8]])
    with pytest.raises(ValueError, match=r"expected the same number of frames, got 1 and 0"):
        pair_features([FrameSample(xb, y_before, flags)], [], malperfused_class=MAL)


@pytest.mark.xfail(strict=True, reason=(
    "known regression, 6 Dec 2026: after the renderer's band integration, the correlated "
    "texture, the per-preset sensor model (snapshot25 noisier, crosstalk correction) and the "
    "noise-fitted StO2 tables (issue 14 part A), fat's per-pixel pairs are noise-bound: the "
    "maps beat 'no change' by 1.27x on spectra, 1.41x on StO2, 2.47x on THb (48x64, seeds "
    "0-3 / 50-51), short of 3x/2x; the transfer study (TRANSFER.md) must be rerun with the "
    "train extra before its figures or these thresholds are trusted again"))
def test_maps_fitted_on_simulated_pig_predict_held_out_malperfusion():
    """On the real data path: the fitted maps explain the perfused→malperfused change of an
    unseen scene much better than 'no change', channel group by channel group: the L1 spectra
    at least 3x smaller relative error, each physiology map at least 2x (measured, 27 Nov
    2026, snapshot25 pathlength basis: fat spectra 5x, thb 9.6x, sto2 2.7x -- fat's StO2 is
    the noisiest: little blood)."""
    from edge.models.train.transfer import TransferConfig, _render, fit_xeno_maps
    from edge.models.train.demo import _card_object, demo_card
    from drivers.sim.presets import get_preset

    cfg = TransferConfig(rows=48, cols=64, frames_per_scene=1)
    p = get_preset(cfg.preset, rows=cfg.rows, cols=cfg.cols)
    pack = _card_object(demo_card(cfg.preset, name="t", onnx="t.onnx", rows=p.rows,
                                  cols=p.cols)).pack_spec(p.wavelength_array())
    fit_seeds, test_seeds = [0, 1, 2, 3], [50, 51]
    maps = fit_xeno_maps(_render(cfg, "pig", fit_seeds, pack, patch=False),
                         _render(cfg, "pig", fit_seeds, pack), malperfused_class=MAL,
                         ridge=cfg.ridge)
    held = pair_features(_render(cfg, "pig", test_seeds, pack, patch=False),
                         _render(cfg, "pig", test_seeds, pack), malperfused_class=MAL,
                         min_pairs=20)
    checked = 0
    n_spec = len(pack.spectra_bands)
    groups = [("spectra", slice(0, n_spec), 3.0)] + [
        (name, slice(n_spec + j, n_spec + j + 1), 2.0) for j, name in enumerate(pack.maps)]
    for cid, (x, y) in held.items():
        if cid not in maps:
            continue
        pred = maps[cid](x)
        for name, sl, factor in groups:
            ref = np.linalg.norm(y[:, sl])
            err_map = np.linalg.norm(pred[:, sl] - y[:, sl]) / ref
            err_none = np.linalg.norm(x[:, sl] - y[:, sl]) / ref
            assert err_map < err_none / factor, (SCENE_CLASSES[cid], name, err_map, err_none)
        checked += 1
    assert checked >= 1


# -- the study -----------------------------------------------------------------------------
def _cli(argv):
    from edge.cli import transfer_study
    ap = argparse.ArgumentParser()
    transfer_study.register(ap.add_subparsers())
    args = ap.parse_args(["transfer-study"] + argv)
    return args.func(args)


@pytest.mark.parametrize("argv,match", [
    (["--source", "cow"], r"species: expected one of pig, human, rat or a Species, got 'cow'"),
    (["--targets", "human,dog"], r"species: expected one of .* got 'dog'"),
    (["--variants", "l1,rgb"], r"variants: expected one or more of l1, l1\+xeno, l1\+phys, "
                               r"l1\+phys\+xeno, l1\+target-perfused, l1\+xeno-target, "
                               r"l1\+phys\+target-perfused, l1\+phys\+xeno-target, got rgb"),
    (["--seeds", "0,-2"], r"--seeds: expected integers >= 0, got \[0, -2\]"),
    (["--target-seeds", "1,-1"], r"--target-seeds: expected integers >= 0, got \[1, -1\]"),
    (["--variants", "l1+xeno-target", "--targets", "pig"],
     r"targets: the \*-target\* variants need a target species other than the source "
     r"'pig', got pig"),
    (["--data-seed", "1000"], r"data_seed: expected an integer in 0-999, got 1000"),
    (["--epochs", "0"], r"--epochs: expected an integer >= 1, got 0"),
    (["--data-seed", "-1"], r"--data-seed: expected an integer >= 0, got -1"),
])
def test_cli_bad_arguments(argv, match):
    pytest.importorskip("torch", reason="needs PyTorch (train extra: tools/train_venv.sh)")
    with pytest.raises(ConfigError, match=match):
        _cli(["--tiny"] + argv)


def test_tiny_study_end_to_end(tmp_path, capsys):
    """All eight variants on tiny scenes: the source-only ones are tested on pig and human,
    the xeno-learning ones (+ human perfused scenes) on human only; ``pig`` as a target is
    skipped for those (it is the source)."""
    pytest.importorskip("torch", reason="needs PyTorch (train extra: tools/train_venv.sh)")
    out = tmp_path / "runs.json"
    assert _cli(["--tiny", "--json", str(out), "--targets", "human,pig"]) == 0
    table = capsys.readouterr().out
    res = json.loads(out.read_text())
    old = ["l1", "l1+xeno", "l1+phys", "l1+phys+xeno"]
    new = ["l1+target-perfused", "l1+xeno-target", "l1+phys+target-perfused",
           "l1+phys+xeno-target"]
    assert list(res["summary"]) == old + new
    assert len(res["runs"]) == 4 * 2 + 4               # 1 seed; {pig, human} resp. {human}
    for r in res["runs"]:
        for k in ("mean_iou", "sensitivity", "specificity"):
            assert 0.0 <= r[k] <= 1.0
        if r["variant"] in new:
            assert (r["train"], r["test"]) == ("pig+human-perfused", "human")
        else:
            assert r["train"] == "pig" and r["test"] in ("pig", "human")
    assert set(res["xeno_pairs"]) <= set(SCENE_CLASSES[1:MAL]) and res["xeno_pairs"]
    for v in old:
        assert f"| {v} | pig→pig | 1 |" in table and f"| {v} | pig→human | 1 |" in table
    for v in new:
        assert f"| {v} | pig+human-perfused→human | 1 |" in table
        assert f"| {v} | pig→pig |" not in table
    seeds = res["scene_seeds"]
    assert not set(seeds["target_perfused"]) & set(seeds["test"])


def test_scene_seed_ranges_are_disjoint():
    from edge.models.train.transfer import TransferConfig, scene_seeds

    for data_seed in (0, 7, 999):
        cfg = TransferConfig(data_seed=data_seed, train_scenes=999, test_scenes=999,
                             target_scenes=999)
        cfg.check()
        s = scene_seeds(cfg)
        groups = [set(s["train"]), set(s["test"]), set(s["target_perfused"])]
        assert [len(g) for g in groups] == [999] * 3
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    cfg = TransferConfig()
    assert scene_seeds(cfg) == {"train": list(range(12)),
                                "test": list(range(10 ** 6, 10 ** 6 + 6)),
                                "target_perfused": list(range(2 * 10 ** 6, 2 * 10 ** 6 + 12))}
    with pytest.raises(ConfigError, match=r"target_scenes: expected an integer in 0-999, "
                                          r"got 1000"):
        TransferConfig(target_scenes=1000).check()
    with pytest.raises(ConfigError, match=r"target_seeds: expected at least one training seed "
                                          r"or None \(= seeds\), got none"):
        TransferConfig(target_seeds=()).check()


# -- the augment_samples hook of demo.fit (xeno on the target species' crops only) --------
def _two_samples():
    rng = np.random.default_rng(3)
    out = []
    for label in (1, 2):
        x = rng.random((3, 20, 24)).astype(np.float32)
        out.append(FrameSample(x, np.full((20, 24), label, np.uint8),
                               np.zeros((20, 24), np.uint8)))
    return out


def _to_malperfused(x, y, rng):
    x += 10.0
    y[:] = MAL


def test_augment_samples_restricts_augmentation_to_flagged_samples():
    from edge.models.train.demo import _batches
    from edge.models.train.transfer import TransferConfig

    samples = _two_samples()
    cfg = TransferConfig(batch=16, crop=8)
    xb, yb = next(_batches(samples, cfg, np.random.default_rng(0), _to_malperfused,
                           [False, True]))
    first = yb[:, 0, 0]
    assert set(first.tolist()) == {1, MAL}             # both samples drawn; 2 became MAL
    assert np.all((yb == first[:, None, None]))
    assert np.all(xb[first == 1] < 1.0) and np.all(xb[first == MAL] >= 10.0)
    # Without the flags every crop is augmented, and the crop draws are the same (the
    # augmentation used no random numbers): existing callers see what they saw before.
    xa, ya = next(_batches(samples, cfg, np.random.default_rng(0), _to_malperfused))
    assert np.all(ya == MAL)
    np.testing.assert_array_equal(xa[first == MAL], xb[first == MAL])
    np.testing.assert_allclose(xa[first == 1] - 10.0, xb[first == 1], rtol=0, atol=1e-5)


def test_fit_rejects_augment_samples_of_the_wrong_length():
    pytest.importorskip("torch", reason="needs PyTorch (train extra: tools/train_venv.sh)")
    from edge.models.train.demo import fit
    from edge.models.train.transfer import TransferConfig

    with pytest.raises(ValueError, match=r"augment_samples: expected one flag per training "
                                         r"sample \(2\), got 1"):
        fit(_two_samples(), TransferConfig.tiny(), in_channels=3, classes=len(SCENE_CLASSES),
            seed=0, augment=_to_malperfused, augment_samples=[True])
