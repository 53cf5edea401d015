"""ONNX Runtime runtime and model cards against real ONNX graphs built in the tests."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from edge.errors import ConfigError, EngineError
from edge.inference import load_model_card, open_runtime
from onnx_models import write_pixel_classifier

WL = np.linspace(500, 1000, 6)


def test_runtime_matches_numpy_reference(tmp_path):
    card_path, w, b = write_pixel_classifier(tmp_path, wavelengths=WL, maps=("sto2",))
    card = load_model_card(card_path)
    x = np.random.default_rng(1).random((1, 7, 8, 12), dtype=np.float32)
    with open_runtime("onnxruntime", card) as rt:
        y = rt.run(x)
    ref = np.einsum("kc,nchw->nkhw", w, x) + b[None, :, None, None]
    assert y.shape == (1, 3, 8, 12) and y.dtype == np.float32
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-6


def test_float16_model_runs(tmp_path):
    card_path, w, b = write_pixel_classifier(tmp_path, maps=("sto2", "thi"), dtype="float16")
    card = load_model_card(card_path)
    x = np.random.default_rng(2).random((1, 2, 8, 12)).astype(np.float16)
    with open_runtime("onnxruntime", card) as rt:
        y = rt.run(x)
    ref = np.einsum("kc,nchw->nkhw", w, x.astype(np.float32)) + b[None, :, None, None]
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 3e-3  # float16 arithmetic


def test_describes_inputs_and_outputs(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",))[0])
    with open_runtime("onnxruntime", card) as rt:
        (i,), (o,) = rt.inputs(), rt.outputs()
    assert (i.name, i.shape, i.dtype) == ("input", (1, 1, 8, 12), "float32")
    assert (o.name, o.shape) == ("logits", (1, 3, 8, 12))


def test_card_channel_mismatch_fails_at_load(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",), model_channels=4)[0])
    with pytest.raises(EngineError, match=r"axis C is 4 in the model but the card says 1"):
        open_runtime("onnxruntime", card).load()


def test_card_wrong_input_name(tmp_path):
    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",))
    data = yaml.safe_load(path.read_text())
    data["input"]["name"] = "x"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EngineError, match=r"names input 'x' but the model's inputs are \['input'\]"):
        open_runtime("onnxruntime", load_model_card(path)).load()


def test_card_class_count_mismatch(tmp_path):
    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",), classes=3)
    data = yaml.safe_load(path.read_text())
    data["output"]["classes"] = data["output"]["classes"][:2]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EngineError, match=r"the card lists 2 classes"):
        open_runtime("onnxruntime", load_model_card(path)).load()


def test_corrupt_onnx_fails_at_load(tmp_path):
    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",))
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:40])  # truncated
    with pytest.raises(EngineError, match=r"model.onnx: ONNX Runtime cannot load the model"):
        open_runtime("onnxruntime", load_model_card(path)).load()


def test_sha256_mismatch(tmp_path):
    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",),
                                        card_overrides={"sha256": "0" * 64})
    with pytest.raises(EngineError, match=r"does not match the model card"):
        load_model_card(path)


def test_sha256_covers_external_weight_files(tmp_path):
    """A card's sha256 is the model's content (.onnx plus external-data files): weights
    replaced in the external file, with the .onnx bytes unchanged, fail at load."""
    import onnx

    from edge.inference.onnx_hash import onnx_content_sha256

    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",))
    onnx_file = tmp_path / "model.onnx"
    onnx.save_model(onnx.load(str(onnx_file)), str(onnx_file), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    card = yaml.safe_load(path.read_text())
    card["sha256"] = onnx_content_sha256(onnx_file)
    path.write_text(yaml.safe_dump(card))
    load_model_card(path)                                   # matches as written
    onnx_bytes = onnx_file.read_bytes()
    weights = tmp_path / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0x01                                         # one flipped bit in a weight
    weights.write_bytes(bytes(data))
    assert onnx_file.read_bytes() == onnx_bytes
    with pytest.raises(EngineError, match=r"model.onnx: sha256 [0-9a-f]{12}\.\.\. does not "
                                          r"match the model card"):
        load_model_card(path)


def test_missing_onnx_file(tmp_path):
    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",))
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(EngineError, match=r"model file .*model.onnx not found"):
        load_model_card(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["input"].update(maps=["oxygen"]), r"input.maps: unknown feature 'oxygen'"),
    (lambda d: d["output"]["classes"][1].update(id=5), r"ids must be 0..2 without gaps"),
    (lambda d: d.update(format="other/2"), r"format: expected 'hsi-edge-model-card/1'"),
    (lambda d: d["input"].update(dtype="int8"), r"input.dtype: expected one of 'float32', 'float16'"),
    (lambda d: d.update(colour=1), r"colour: unknown key"),
    (lambda d: d["input"].update(maps=[]), r"needs at least one channel"),
])
def test_card_validation_errors(tmp_path, edit, message):
    path, _, _ = write_pixel_classifier(tmp_path, maps=("sto2",))
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_model_card(path)


def test_pack_spec_maps_camera_bands(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, wavelengths=[550.0, 700.0],
                                                  maps=("sto2",))[0])
    cam = np.linspace(500, 1000, 100)
    spec = card.pack_spec(cam)
    assert spec.spectra_bands == (int(np.argmin(abs(cam - 550))), int(np.argmin(abs(cam - 700))))
    assert spec.maps == ("sto2",) and spec.channels == 3


def test_pack_spec_rejects_camera_without_needed_bands(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, wavelengths=[550.0, 900.0])[0])
    with pytest.raises(EngineError, match=r"900.0 nm has no camera band within 3 nm \(camera covers 450.0-600.0 nm"):
        card.pack_spec(np.linspace(450, 600, 151))


def test_run_rejects_wrong_input_shape(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",))[0])
    with open_runtime("onnxruntime", card) as rt:
        with pytest.raises(EngineError, match=r"expected shape \(1, 1, 8, 12\)"):
            rt.run(np.zeros((1, 1, 4, 4), np.float32))


def test_unknown_runtime_name(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, maps=("sto2",))[0])
    with pytest.raises(EngineError, match=r"runtime: expected one of auto, onnxruntime, tensorrt"):
        open_runtime("openvino", card)
