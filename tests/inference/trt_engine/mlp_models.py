"""A small per-pixel MLP as ONNX (1x1 Conv 'stem' -> Relu 'act' -> 1x1 Conv 'head') + card.

Three named nodes, so fp16 conversion can keep one ('head') in fp32; its output is known in
closed form (``numpy`` reference below).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from onnx_models import CARD_FORMAT


def write_mlp(directory: Path, *, channels=6, hidden=16, classes=4, height=8, width=12,
              seed=0, name="model.onnx"):
    """Write ``name`` and ``card.yaml``; return (card_path, params dict)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    p = {"W1": rng.normal(size=(hidden, channels)).astype(np.float32),
         "B1": (rng.normal(size=hidden) * 0.1).astype(np.float32),
         "W2": (rng.normal(size=(classes, hidden)) / np.sqrt(hidden)).astype(np.float32),
         "B2": (rng.normal(size=classes) * 0.1).astype(np.float32)}
    inits = [numpy_helper.from_array(p["W1"].reshape(hidden, channels, 1, 1), "W1"),
             numpy_helper.from_array(p["B1"], "B1"),
             numpy_helper.from_array(p["W2"].reshape(classes, hidden, 1, 1), "W2"),
             numpy_helper.from_array(p["B2"], "B2")]
    nodes = [helper.make_node("Conv", ["input", "W1", "B1"], ["h"], name="stem",
                              kernel_shape=[1, 1]),
             helper.make_node("Relu", ["h"], ["a"], name="act"),
             helper.make_node("Conv", ["a", "W2", "B2"], ["logits"], name="head",
                              kernel_shape=[1, 1])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "pixel_mlp",
        [helper.make_tensor_value_info("input", f, [1, channels, height, width])],
        [helper.make_tensor_value_info("logits", f, [1, classes, height, width])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, directory / name)
    card = {"format": CARD_FORMAT, "name": "test-mlp", "onnx": name,
            "input": {"name": "input", "height": height, "width": width, "dtype": "float32",
                      "spectra": {"wavelengths_nm": [float(w) for w in
                                                     np.linspace(500, 1000, channels)],
                                  "band_tolerance_nm": 50.0}},
            "output": {"name": "logits", "kind": "logits",
                       "classes": [{"id": i, "name": f"c{i}", "color": [i, i, i]}
                                   for i in range(classes)]}}
    (directory / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return directory / "card.yaml", p


def mlp_reference(p: dict, x: np.ndarray) -> np.ndarray:
    """float64 reference of the MLP on x of shape (1, C, H, W)."""
    h = np.einsum("kc,nchw->nkhw", p["W1"].astype(np.float64), x) + p["B1"][None, :, None, None]
    a = np.maximum(h, 0.0)
    return np.einsum("kc,nchw->nkhw", p["W2"].astype(np.float64), a) + p["B2"][None, :, None,
                                                                                None]
