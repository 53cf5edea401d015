"""Model cards: the ``onnx:`` path stays in the card's folder, no file contents in errors,
colours are RGB bytes, a card without sha256 says so, ``model card-hash`` writes it
(issue 15 items 3, 16, 19).  Real ONNX files and real symbolic links."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.errors import ConfigError, EngineError
from edge.inference import load_model_card

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_models import write_pixel_classifier  # noqa: E402


def _card(tmp_path, **over) -> Path:
    path, _, _ = write_pixel_classifier(tmp_path / "model", maps=("sto2",))
    card = yaml.safe_load(path.read_text())
    card.update(over)
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


@pytest.mark.parametrize("onnx", ["../outside.onnx", "sub/../../outside.onnx",
                                  "/tmp/outside.onnx", "C:\\\\models\\\\x.onnx"])
def test_onnx_path_outside_the_card_folder_is_refused(tmp_path, onnx):
    (tmp_path / "outside.onnx").write_bytes((tmp_path / "x").as_posix().encode())
    path = _card(tmp_path, onnx=onnx)
    with pytest.raises(ConfigError, match=r"card\.yaml: onnx: .* is not allowed: expected a "
                                          r"path relative to the card's folder .* without "
                                          r"'\.\.'"):
        load_model_card(path)


def test_onnx_symlink_out_of_the_card_folder_is_refused(tmp_path):
    path = _card(tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    os.replace(path.parent / "model.onnx", outside)
    (path.parent / "model.onnx").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"card\.yaml: onnx: 'model\.onnx' resolves to .*"
                                          r"elsewhere\.onnx', outside the card's folder"):
        load_model_card(path)
    # a link that stays inside the folder is fine
    os.replace(outside, path.parent / "real.onnx")
    (path.parent / "model.onnx").unlink()
    (path.parent / "model.onnx").symlink_to("real.onnx")
    assert load_model_card(path).onnx_path == (path.parent / "real.onnx").resolve()


def test_a_card_path_at_another_file_does_not_echo_it(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nsecret-line\n")
    with pytest.raises(ConfigError) as info:
        load_model_card(secret)
    assert "root:x" not in str(info.value) and "secret-line" not in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nonnx: [unclosed SECRET-TOKEN\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+, column \d+"
                       ) as info:
        load_model_card(bad)
    assert "SECRET-TOKEN" not in str(info.value)


@pytest.mark.parametrize("color, index", [([300, 0, 0], 0), ([0, -1, 0], 1), ([0, 0, 256], 2)])
def test_class_colour_outside_0_255_is_refused(tmp_path, color, index):
    path, _, _ = write_pixel_classifier(tmp_path / "model", maps=("sto2",))
    card = yaml.safe_load(path.read_text())
    card["output"]["classes"][1]["color"] = color
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    with pytest.raises(ConfigError, match=rf"output\.classes\[1\]\.color\[{index}\]: expected "
                                          rf"an integer in \[0, 255\], got {color[index]}"):
        load_model_card(path)


def test_duplicate_and_deep_keys_in_a_card(tmp_path):
    path = _card(tmp_path)
    path.write_text(path.read_text() + "name: again\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'name'"):
        load_model_card(path)
    path.write_text("provenance: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=r"nested deeper than 64 levels"):
        load_model_card(path)


def test_card_without_sha256_warns_and_card_hash_writes_it(tmp_path, caplog, capsys):
    from edge.cli import main
    from edge.inference.onnx_hash import onnx_content_sha256

    path = _card(tmp_path)
    assert "sha256" not in path.read_text()
    with caplog.at_level(logging.WARNING, logger="edge.inference.modelcard"):
        load_model_card(path)
    assert "the card has no sha256, so a damaged or replaced model.onnx cannot be detected" \
        in caplog.text and "hsi-edge model card-hash" in caplog.text
    assert main(["model", "card-hash", str(path), "--write"]) == 0
    digest = onnx_content_sha256(path.parent / "model.onnx")
    assert f"wrote sha256 to {path}" in capsys.readouterr().out
    assert load_model_card(path).sha256 == digest
    # now a flipped bit in the model is caught at load
    onnx = path.parent / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-5] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"does not match the model card"):
        load_model_card(path)
    # card-hash never rewrites a sha256 that no longer matches
    assert main(["model", "card-hash", str(path), "--write"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file changed since the card was written" in err[0]


def test_the_fp16_model_is_hashed_and_checked_too(tmp_path, caplog, capsys):
    """The card's onnx_fp16 model was loaded without any hash check: a replaced fp16 file
    would have been built into the TensorRT engine unnoticed."""
    import shutil

    from edge.cli import main
    from edge.inference.onnx_hash import onnx_content_sha256

    path = _card(tmp_path)
    fp16 = path.parent / "model.fp16.onnx"
    shutil.copy(path.parent / "model.onnx", fp16)     # stands in for a converted model
    path.write_text(path.read_text() + "onnx_fp16: model.fp16.onnx\n")
    with caplog.at_level(logging.WARNING, logger="edge.inference.modelcard"):
        load_model_card(path)
    assert "the card has no onnx_fp16_sha256, so a damaged or replaced model.fp16.onnx " \
           "cannot be detected" in caplog.text
    assert main(["model", "card-hash", str(path), "--write"]) == 0
    out = capsys.readouterr().out
    assert f"wrote sha256 to {path}" in out and f"wrote onnx_fp16_sha256 to {path}" in out
    card = load_model_card(path)
    assert card.onnx_fp16_sha256 == onnx_content_sha256(fp16)
    assert card.sha256 == onnx_content_sha256(path.parent / "model.onnx")
    data = bytearray(fp16.read_bytes())
    data[-5] ^= 0x01
    fp16.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"model\.fp16\.onnx: sha256 [0-9a-f]{12}\.\.\. does "
                                          r"not match the model card's onnx_fp16_sha256"):
        load_model_card(path)
    assert main(["model", "card-hash", str(path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnx_fp16_sha256: the card says" in err[0]
    # a hash for a model the card does not declare is a mistake in the card
    path.write_text(path.read_text().replace("onnx_fp16: model.fp16.onnx\n", ""))
    with pytest.raises(ConfigError, match=r"onnx_fp16_sha256: given, but the card declares no "
                                          r"onnx_fp16"):
        load_model_card(path)


def test_png_colours_of_a_valid_card_are_uint8(tmp_path):
    card = load_model_card(_card(tmp_path))
    assert card.colors.dtype == np.uint8 and card.colors.shape == (3, 3)


def test_an_upper_case_sha256_is_the_same_digest(tmp_path):
    """Issue 15 item 20: an upper-case sha256 in a card was reported as a corrupt model."""
    import re
    import shutil

    from edge.inference import load_model_card
    from edge.models import demo_card_path

    card = demo_card_path("tivita")
    for f in card.parent.glob(card.stem + ".*"):
        shutil.copy(f, tmp_path / f.name)
    p = tmp_path / card.name
    text = p.read_text()
    upper = re.sub(r"(sha256: *)([0-9a-f]{64})", lambda m: m.group(1) + m.group(2).upper(), text)
    assert upper != text
    p.write_text(upper)
    assert load_model_card(p).sha256.lower() == load_model_card(card).sha256
