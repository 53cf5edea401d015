"""``hsi-edge train-demo --tiny``: one optimiser step on one small simulated scene.

Needs PyTorch (train extra); checks that the exported model loads through the model card and
that two runs with the same seed give the same network (reproducible training).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (train extra: tools/train_venv.sh)")

from edge.cli import main  # noqa: E402
from edge.inference import load_model_card, open_runtime  # noqa: E402


def _run_tiny(out, capsys, seed=3):
    rc = main(["train-demo", "--tiny", "--preset", "snapshot25", "--seed", str(seed),
               "--out", str(out)])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_tiny_training_is_reproducible_and_loads(tmp_path, capsys):
    rep = _run_tiny(tmp_path / "a", capsys)["snapshot25"]
    card = load_model_card(rep["card"])
    assert card.input.channels == 27 and (card.input.height, card.input.width) == (48, 64)
    assert card.provenance["seed"] == 3
    assert 0.0 <= rep["malperfusion_specificity"] <= 1.0
    x = np.random.default_rng(0).random((1, 27, 48, 64), dtype=np.float32)
    with open_runtime("onnxruntime", card) as rt:
        y1 = rt.run(x)
    rep2 = _run_tiny(tmp_path / "b", capsys)["snapshot25"]
    with open_runtime("onnxruntime", load_model_card(rep2["card"])) as rt:
        y2 = rt.run(x)
    assert y1.shape == (1, 7, 48, 64)
    np.testing.assert_allclose(y2, y1, rtol=0, atol=1e-5)


def test_bad_arguments(capsys):
    assert main(["train-demo", "--tiny", "--seed", "-1"]) == 2
    assert "--seed: expected an integer >= 0, got -1" in capsys.readouterr().err
    assert main(["train-demo", "--tiny", "--epochs", "0"]) == 2
    assert "--epochs: expected an integer >= 1, got 0" in capsys.readouterr().err
