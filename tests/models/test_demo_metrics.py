"""Metrics of the demo model (IoU, malperfusion sensitivity/specificity), checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge.models.train.demo import FEATURES, demo_card, evaluate


def test_evaluate_against_hand_counts():
    # 3 classes: 0 background, 1 tissue, 2 malperfused (the last class).
    truth = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 1, 2, 2, 2, 2, 1])
    m = evaluate(pred, truth, 3)
    # class 0: tp 1, union 2; class 1: tp 3, pred 5 (idx1,2,3,4,9), true 4 -> union 6;
    # class 2: tp 3, pred 4 (5,6,7,8), true 4 -> union 5.
    np.testing.assert_allclose(m["iou"], [1 / 2, 3 / 6, 3 / 5])
    assert m["pixel_accuracy"] == pytest.approx(7 / 10)
    # tissue pixels (truth != 0): 8; positives 4 of which 3 hit; negatives 4 of which 3 clean
    assert m["malperfusion_sensitivity"] == pytest.approx(3 / 4)
    assert m["malperfusion_specificity"] == pytest.approx(3 / 4)
    assert m["confusion"].sum() == 10


def test_absent_class_has_nan_iou():
    m = evaluate(np.array([0, 0]), np.array([0, 0]), 3)
    assert m["iou"][0] == 1.0 and np.isnan(m["iou"][1]) and np.isnan(m["iou"][2])


def test_demo_card_features_and_refusal():
    card = demo_card("snapshot25", name="x", onnx="x.onnx", rows=217, cols=409)
    assert len(card["input"]["spectra"]["wavelengths_nm"]) == len(FEATURES["snapshot25"]["bands"])
    assert card["input"]["maps"] == ["sto2", "thb"]
    assert card["output"]["classes"][6]["name"] == "malperfused"
    with pytest.raises(ValueError, match="preset: the demo model is trained for .* got 'snapshot16'"):
        demo_card("snapshot16", name="x", onnx="x.onnx", rows=1, cols=1)
