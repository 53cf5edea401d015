"""The shipped demo models: cards load (hash checked), fit their camera, and segment a
simulated scene from an unseen seed through the real pipeline path (simulated camera ->
flat-field -> NumpyBackend pack -> ONNX Runtime).  No torch needed."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.presets import get_preset
from edge.errors import ConfigError, EngineError
from edge.inference import load_model_card, open_runtime
from edge.models import DEMO_MODELS, demo_card_path
from edge.models.train.dataset import render_samples
from edge.models.train.demo import evaluate


def _card(preset):
    path = demo_card_path(preset)
    if not path.is_file():
        pytest.skip(f"demo model {path.name} not generated (hsi-edge train-demo)")
    return load_model_card(path)


@pytest.mark.parametrize("preset", sorted(DEMO_MODELS))
def test_card_fits_its_preset(preset):
    card = _card(preset)
    p = get_preset(preset)
    assert (card.input.height, card.input.width) == (p.rows, p.cols)
    spec = card.pack_spec(p.wavelength_array())
    assert spec.channels == card.input.channels
    assert card.class_names[-1] == "malperfused"
    assert card.onnx_path.stat().st_size <= 5 * 1024 * 1024   # issue 7: <= 5 MB
    assert card.provenance["metrics"]["mean_iou"] > 0.5


def test_tivita_model_does_not_fit_snapshot_camera():
    card = _card("tivita")
    with pytest.raises(EngineError, match="input channel at 500.0 nm has no camera band"):
        card.pack_spec(get_preset("snapshot25").wavelength_array())


def test_unknown_preset():
    with pytest.raises(ConfigError, match="no demo model for 'snapshot16'"):
        demo_card_path("snapshot16")


def _segment(preset, seed):
    card = _card(preset)
    p = get_preset(preset)
    (s,) = render_samples(preset, [seed], card.pack_spec(p.wavelength_array()),
                          frames_per_scene=1)
    with open_runtime("onnxruntime", card) as rt:
        logits = rt.run(s.x[None])
    assert np.all(np.isfinite(logits))
    return evaluate(logits[0].argmax(0), s.y, len(card.class_names))


def test_snapshot25_segments_an_unseen_scene():
    m = _segment("snapshot25", seed=2_000_017)   # outside train and test seed ranges
    assert m["pixel_accuracy"] > 0.7
    assert m["iou"][0] > 0.9                      # background (drape) is easy
    assert m["malperfusion_specificity"] > 0.9


# renders a full 480x640x100 frame: ~7 s on 2 cores
def test_tivita_segments_an_unseen_scene():
    m = _segment("tivita", seed=2_000_017)
    assert m["pixel_accuracy"] > 0.7
    assert m["malperfusion_specificity"] > 0.9
