"""htc compatibility: export a randomly initialised htc Unet(efficientnet-b5) and compare the
hsi-edge pipeline (pack + ONNX Runtime) with PyTorch and htc's preprocessing.

The exporting tests are marked slow (10-20 s each on 2 cores); the error paths are fast.
Spatial size 64 x 64 instead of 480 x 640 (the CLI default) keeps the EfficientNet-B5 export
within seconds on 2 cores; the graph is the same apart from the static input size.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (train extra: tools/train_venv.sh)")
smp = pytest.importorskip("segmentation_models_pytorch",
                          reason="needs segmentation-models-pytorch (train extra)")

from edge.errors import ConfigError, EngineError  # noqa: E402
from edge.inference import load_model_card, open_runtime  # noqa: E402
from edge.models.htc_export import (build_htc_unet, main_export,  # noqa: E402
                                    register_export_htc)
from edge.processing.pack import pack_input  # noqa: E402

H, W, BANDS = 64, 64, 100
TIVITA_NM = np.linspace(500, 1000, 100)
REL_TOL = 1e-3  # float32, issue 7


def _random_unet(classes: int, seed: int):
    torch.manual_seed(seed)
    net = build_htc_unet(classes)
    # Non-trivial BatchNorm statistics, so eval-mode folding is exercised too.
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1.0 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    return net.eval()


def _save_lightning(net, path):
    """A checkpoint as htc's LightningImage saves it: ``model.architecture.*`` + loss weights."""
    state = {f"model.architecture.{k}": v for k, v in net.state_dict().items()}
    state["ce_loss_weighted.weight"] = torch.ones(19)
    torch.save({"epoch": 3, "global_step": 120, "state_dict": state}, path)


def _cube(seed=0):
    rng = np.random.default_rng(seed)
    cube = rng.uniform(0.05, 0.9, size=(H, W, BANDS)).astype(np.float32)
    cube[0, 0] = 0.0        # 0/0 -> 0 path of the L1 normalisation
    cube[1, 1, :10] = -0.01  # reflectance can be <= 0 (FACTS: TIVITA cubes)
    return cube


def _htc_preprocess(cube):
    """htc's input: L1 per pixel x / sum|x| (0/0 -> 0), NHWC -> NCHW, no standardisation."""
    norm = np.abs(cube).sum(axis=-1, keepdims=True)
    l1 = np.divide(cube, norm, out=np.zeros_like(cube), where=norm > 0)
    return torch.from_numpy(l1).permute(2, 0, 1).unsqueeze(0).contiguous()


def _pipeline(card_path, cube):
    card = load_model_card(card_path)
    x = pack_input(cube, [], card.pack_spec(TIVITA_NM))
    with open_runtime("onnxruntime", card) as rt:
        return card, rt.run(x)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("htc")
    a, b = _random_unet(19, seed=0), _random_unet(19, seed=1)
    _save_lightning(a, d / "fold0.ckpt")
    torch.save(b.state_dict(), d / "fold1.pt")   # plain state dict
    return d, a, b


@pytest.mark.slow  # EfficientNet-B5 export, ~10-20 s on 2 cores
def test_lightning_checkpoint_matches_pytorch(checkpoints, tmp_path):
    d, net, _ = checkpoints
    card_path = main_export([d / "fold0.ckpt"], 19, tmp_path, height=H, width=W)
    cube = _cube()
    card, got = _pipeline(card_path, cube)
    with torch.no_grad():
        ref = net(_htc_preprocess(cube)).numpy()
    assert card.output.kind == "logits" and card.output.name == "logits"
    assert card.class_names[18] == "kidney_with_Gerotas_fascia"
    assert got.shape == ref.shape == (1, 19, H, W)
    assert _rel(got, ref) <= REL_TOL


@pytest.mark.slow  # EfficientNet-B5 export, ~10-20 s on 2 cores
def test_fold_ensemble_is_mean_of_softmax(checkpoints, tmp_path):
    d, a, b = checkpoints
    card_path = main_export([d / "fold0.ckpt", d / "fold1.pt"], 19, tmp_path,
                            height=H, width=W, name="ens")
    cube = _cube(seed=3)
    card, got = _pipeline(card_path, cube)
    x = _htc_preprocess(cube)
    with torch.no_grad():
        ref = ((torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2).numpy()
    assert card.output.kind == "probabilities" and card.output.name == "probabilities"
    assert card.provenance["ensemble"] == "mean over folds of softmax"
    assert _rel(got, ref) <= REL_TOL
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow  # EfficientNet-B5 export, ~10-20 s on 2 cores
def test_cli_parser_and_12_class_card(tmp_path):
    net = _random_unet(12, seed=5)
    ckpt = tmp_path / "xeno.pt"
    torch.save(net.state_dict(), ckpt)
    parser = argparse.ArgumentParser()
    register_export_htc(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["export-htc", str(ckpt), "--classes", "12", "--out",
                              str(tmp_path / "out"), "--height", "32", "--width", "32",
                              "--softmax"])
    assert args.func(args) == 0
    card = load_model_card(tmp_path / "out" / "htc-unet-12cls.yaml")
    assert card.class_names == ("background", "stomach", "small_bowel", "colon", "liver",
                                "pancreas", "kidney", "spleen", "omentum", "lung", "skin",
                                "peritoneum")
    assert card.output.kind == "probabilities"
    assert card.input.channels == 100 and (card.input.height, card.input.width) == (32, 32)


def test_wrong_class_count_is_named(checkpoints, tmp_path):
    d, _, _ = checkpoints
    with pytest.raises(EngineError, match="segmentation head has 19 classes but --classes is 12"):
        main_export([d / "fold0.ckpt"], 12, tmp_path)


def test_bad_classes_argument(checkpoints, tmp_path):
    d, _, _ = checkpoints
    with pytest.raises(ConfigError, match="--classes: htc models have 19 .* got 7"):
        main_export([d / "fold0.ckpt"], 7, tmp_path)


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint: file .*nope.ckpt not found"):
        main_export([tmp_path / "nope.ckpt"], 19, tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(EngineError, match="junk.ckpt: cannot be read by torch.load"):
        main_export([junk], 19, tmp_path)


def test_checkpoint_of_another_architecture(tmp_path):
    ckpt = tmp_path / "other.pt"
    torch.save({"state_dict": {"model.architecture.encoder.conv1.weight": torch.zeros(3)}}, ckpt)
    with pytest.raises(EngineError, match=r"does not fit Unet\('efficientnet-b5'\)"):
        main_export([ckpt], 19, tmp_path)
    torch.save({"state_dict": {"model.something.weight": torch.zeros(3)}}, ckpt)
    with pytest.raises(EngineError, match="no Unet weights found"):
        main_export([ckpt], 19, tmp_path)
