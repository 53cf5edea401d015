"""``onnx_content_sha256``: the engine-cache key covers ONNX external data files.

Models are real ONNX graphs built with ``onnx.helper`` and saved with
``onnx.save_model(..., save_as_external_data=True, location=..., size_threshold=0)``.
"""

from __future__ import annotations

import hashlib
import struct
import sys

import numpy as np
import pytest

from edge.core.fileio import sha256_file
from edge.errors import BackendUnavailable, DataFormatError
from edge.inference import load_model_card
from edge.inference import onnx_hash
from edge.inference.onnx_hash import external_data_locations, onnx_content_sha256
from edge.inference.tensorrt_build import engine_key
from onnx_models import conv1x1_model, write_pixel_classifier

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

W = np.arange(12, dtype=np.float32).reshape(3, 4) / 7.0
B = np.array([0.5, -1.0, 2.0], np.float32)


def _model():
    return conv1x1_model(W, B, height=2, width=3)


def _save_external(path, model=None, **kw):
    kw.setdefault("location", "weights.bin")
    onnx.save_model(model or _model(), str(path), save_as_external_data=True,
                    size_threshold=0, **kw)
    return path


def _reference(model_path, locations):
    """The documented byte layout, computed independently of the module."""
    h = hashlib.sha256(model_path.read_bytes())
    for loc in sorted(locations):
        data = (model_path.parent / loc).read_bytes()
        name = loc.encode()
        h.update(b"\0onnx-external\0" + struct.pack("<Q", len(name)) + name
                 + struct.pack("<Q", len(data)) + data)
    return h.hexdigest()


def _set_location(path, location):
    """Rewrite every external tensor's location of the model at ``path`` (data not moved)."""
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        if uses_external_data(t):
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location
    path.write_bytes(model.SerializeToString())


# -- self-contained models: the key of existing caches is unchanged ----------------------------
def test_no_external_data_equals_plain_file_hash(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_model(), str(path))
    assert b"location" not in path.read_bytes()  # the fast path: no parse
    assert onnx_content_sha256(path) == sha256_file(path)
    assert external_data_locations(path) == []


def test_mentioning_location_without_external_data_still_equals_file_hash(tmp_path):
    """A model whose bytes contain 'location' (here a doc string) is parsed, finds nothing."""
    model = _model()
    model.graph.doc_string = "camera location: OR 3"
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    assert b"location" in path.read_bytes()
    assert onnx_content_sha256(path) == sha256_file(path)


def test_non_onnx_file_without_marker_hashes_like_a_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"changed")
    assert onnx_content_sha256(path) == sha256_file(path)


def test_unreadable_model_that_mentions_location(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\xff\xff location \xff")
    with pytest.raises(DataFormatError, match=r"m\.onnx: not a readable ONNX model"):
        onnx_content_sha256(path)


# -- external data --------------------------------------------------------------------------
def test_external_weights_change_the_hash(tmp_path):
    path = _save_external(tmp_path / "m.onnx")
    assert external_data_locations(path) == ["weights.bin"]
    first = onnx_content_sha256(path)
    assert first == _reference(path, ["weights.bin"])
    assert first != sha256_file(path)
    onnx_before = sha256_file(path)
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    w = np.frombuffer(bytes(data[:W.nbytes]), np.float32).copy()
    np.testing.assert_array_equal(w, W.ravel())  # W is stored first, as raw float32
    data[:4] = np.float32(9.0).tobytes()  # same size, other weight
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    assert sha256_file(path) == onnx_before  # the .onnx file did not change ...
    second = onnx_content_sha256(path)
    assert second != first and second == _reference(path, ["weights.bin"])  # ... the key did


def test_several_files_are_hashed_in_sorted_order(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_model(), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert external_data_locations(path) == ["B", "W"]  # one file per tensor, by name
    assert onnx_content_sha256(path) == _reference(path, ["B", "W"])
    (tmp_path / "B").write_bytes(np.array([0.5, -1.0, 2.5], np.float32).tobytes())
    assert onnx_content_sha256(path) == _reference(path, ["B", "W"])


def test_constant_node_attribute_in_external_data(tmp_path):
    """Tensors in node attributes (Constant) are external data too."""
    value = numpy_helper.from_array(np.linspace(0, 1, 16, dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=value),
         helper.make_node("Add", ["x", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "c.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="const.bin",
                    size_threshold=0, convert_attribute=True)
    assert external_data_locations(path) == ["const.bin"]
    assert onnx_content_sha256(path) == _reference(path, ["const.bin"])


def test_marker_split_across_read_chunks(tmp_path, monkeypatch):
    path = _save_external(tmp_path / "m.onnx")
    monkeypatch.setattr(onnx_hash, "_CHUNK", 5)  # 'location' (8 bytes) always straddles
    assert onnx_content_sha256(path) == _reference(path, ["weights.bin"])


# -- refused locations ----------------------------------------------------------------------
def test_missing_external_file(tmp_path):
    path = _save_external(tmp_path / "m.onnx")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(DataFormatError, match=r"m\.onnx: external data file 'weights\.bin' "
                                              r"not found \(looked for .*weights\.bin'\)"):
        onnx_content_sha256(path)


@pytest.mark.parametrize("location", ["../weights.bin", "sub/../../weights.bin",
                                      "..\\weights.bin", "/etc/weights.bin",
                                      "C:\\weights.bin", ""])
def test_location_outside_the_model_folder_is_refused(tmp_path, location):
    (tmp_path / "model").mkdir()
    path = _save_external(tmp_path / "model" / "m.onnx")
    _set_location(path, location)
    with pytest.raises(DataFormatError,
                       match=rf"m\.onnx: external data location '{_re(location)}' is not "
                             r"allowed: expected a path relative to the model's folder .* "
                             r"without '\.\.'"):
        onnx_content_sha256(path)


def _re(text):
    import re
    return re.escape(repr(text)[1:-1])


def test_symlink_out_of_the_model_folder_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    path = _save_external(tmp_path / "model" / "m.onnx")
    (tmp_path / "model" / "weights.bin").rename(tmp_path / "outside.bin")
    try:
        (tmp_path / "model" / "weights.bin").symlink_to(tmp_path / "outside.bin")
    except OSError:  # pragma: no cover - file systems without symbolic links
        pytest.skip("symbolic links not supported here")
    with pytest.raises(DataFormatError, match=r"external data location 'weights\.bin' "
                                              r"resolves to .*outside\.bin', outside the "
                                              r"model's folder"):
        onnx_content_sha256(path)


# -- onnx missing -----------------------------------------------------------------------------
def test_without_onnx(tmp_path, monkeypatch):
    plain = tmp_path / "plain.onnx"
    onnx.save_model(_model(), str(plain))
    (tmp_path / "ext").mkdir()
    ext = _save_external(tmp_path / "ext" / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # 'import onnx' now raises ImportError
    assert onnx_content_sha256(plain) == sha256_file(plain)  # needs no onnx
    with pytest.raises(BackendUnavailable, match=r"external data files needs the 'onnx' "
                                                 r"package \(onnx is missing\): pip install"):
        onnx_content_sha256(ext)


# -- the engine-cache key -------------------------------------------------------------------
def _key(card):
    return engine_key(card, onnx_path=card.onnx_path, trt_version="10.3.0.30",
                      gpu=("Orin", "8.7"), precision="fp16", typing="weak")


def test_engine_key_follows_external_weights(tmp_path):
    card = load_model_card(write_pixel_classifier(tmp_path, wavelengths=[500, 600, 700],
                                                  maps=("sto2",))[0])
    inline = _key(card)
    assert inline.onnx_sha256 == sha256_file(card.onnx_path)  # existing caches stay valid
    model = onnx.load(str(card.onnx_path))
    _save_external(card.onnx_path, model, location="model.weights")
    external = _key(card)
    assert external.onnx_sha256 == _reference(card.onnx_path, ["model.weights"])
    assert external != inline
    blob = bytearray((tmp_path / "model.weights").read_bytes())
    blob[0] ^= 0x01  # one bit of one weight
    (tmp_path / "model.weights").write_bytes(bytes(blob))
    changed = _key(card)
    assert changed != external and changed.digest() != external.digest()
    (tmp_path / "model.weights").unlink()
    with pytest.raises(DataFormatError, match=r"external data file 'model\.weights' not found"):
        _key(card)
